"""ZeroShotClassifier: hand-computed cosine argmax, invariant subspace, labels, routing, errors."""

from __future__ import annotations

import json
import pickle
import re
from typing import ClassVar

import numpy as np
import pytest
import sklearn
from scipy.special import softmax
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.exceptions import NotFittedError

from skicm.embedding import CLIPEmbedder
from skicm.interventions import TextInterventions
from skicm.projection import InvariantProjector
from skicm.zero_shot import ZeroShotClassifier

NAMES = ["cat", "dog", "horse"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]


@pytest.fixture(scope="module")
def embedder(tiny_clip_name):
    return CLIPEmbedder(tiny_clip_name, pretrained=None, device="cpu", progress=False)


@pytest.fixture(scope="module")
def image_embeddings(embedder):
    images = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    return embedder.transform(images)


def _unit(matrix):
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def _hand_class_embeddings(embedder):
    """open_clip's template ensembling, written out: normalise, average, normalise."""
    rows = []
    for name in NAMES:
        prompts = embedder.encode_text([template.format(name) for template in TEMPLATES])
        rows.append(_unit(prompts).mean(axis=0))
    return _unit(np.array(rows))


def test_matches_hand_computed_cosine_argmax(embedder, image_embeddings):
    clf = ZeroShotClassifier(NAMES, encoder=embedder, templates=TEMPLATES).fit(image_embeddings)
    W = _hand_class_embeddings(embedder)
    cosine = _unit(image_embeddings) @ W.T
    np.testing.assert_allclose(clf.class_embeddings_, W, atol=1e-6)
    np.testing.assert_allclose(clf.similarity(image_embeddings), cosine, atol=1e-5)
    np.testing.assert_array_equal(clf.predict(image_embeddings), np.array(NAMES)[cosine.argmax(1)])
    np.testing.assert_allclose(
        clf.predict_proba(image_embeddings), softmax(100 * cosine, axis=1), atol=1e-4
    )
    np.testing.assert_allclose(
        np.exp(clf.predict_log_proba(image_embeddings)), clf.predict_proba(image_embeddings)
    )
    assert clf.classes_.tolist() == NAMES and clf.class_names_ == NAMES
    y = np.array(NAMES)[cosine.argmax(1)]
    assert clf.score(image_embeddings, y) == 1.0


class _PromptTable:
    """A text encoder given as a table: hand-chosen prompt vectors of unequal norms."""

    table: ClassVar[dict] = {
        "a photo of a cat.": [10.0, 0.0],  # long: it would dominate an unnormalised mean
        "a drawing of a cat.": [0.0, 1.0],
        "a photo of a dog.": [1.0, 0.2],
        "a drawing of a dog.": [2.0, 0.4],
    }

    def encode_text(self, texts):
        return np.array([self.table[text] for text in texts])


def test_templates_are_ensembled_after_normalising_each_prompt(embedder, image_embeddings):
    """Each prompt counts once, whatever its norm: normalise, average, normalise."""
    clf = ZeroShotClassifier(["cat", "dog"], encoder=_PromptTable(), templates=TEMPLATES)
    clf.fit(np.zeros((1, 2)))
    root_half = np.sqrt(0.5)
    np.testing.assert_allclose(
        clf.class_embeddings_, [[root_half, root_half], _unit(np.array([[1.0, 0.2]]))[0]]
    )
    # cos with cat 0.99, with dog 0.75; averaging raw prompts would make cat (0.995, 0.0995)
    # and flip the answer to dog.
    assert clf.predict([[0.6, 0.8]]).tolist() == ["cat"]

    # A real text tower whose raw prompt embeddings have unequal norms (normalize=False).
    raw = clone(embedder).set_params(normalize=False)
    norms = np.linalg.norm(raw.encode_text([t.format(n) for n in NAMES for t in TEMPLATES]), axis=1)
    assert norms.max() / norms.min() > 1.01
    fitted = ZeroShotClassifier(NAMES, encoder=raw, templates=TEMPLATES).fit(image_embeddings)
    np.testing.assert_allclose(fitted.class_embeddings_, _hand_class_embeddings(raw), atol=1e-6)


def test_invariant_subspace_projects_images_and_text(embedder, image_embeddings):
    y = np.array(NAMES * 4)
    projector = InvariantProjector(
        n_components=5, interventions=TextInterventions(embedder, domain_templates=TEMPLATES)
    )
    clf = ZeroShotClassifier(encoder=embedder, templates=TEMPLATES, projector=projector)
    clf.fit(image_embeddings, y)
    assert not hasattr(projector, "components_"), "the parameter is cloned, not fitted"
    A = clone(projector).fit(image_embeddings, y).components_
    np.testing.assert_allclose(clf.projector_.components_, A, atol=1e-6)
    cosine = _unit(image_embeddings @ A.T) @ _unit(_hand_class_embeddings(embedder) @ A.T).T
    np.testing.assert_allclose(clf.similarity(image_embeddings), cosine, atol=1e-5)
    np.testing.assert_array_equal(clf.predict(image_embeddings), np.array(NAMES)[cosine.argmax(1)])
    assert clf.class_weights_.shape == (3, 5)


def test_prefitted_projector_is_used_as_is(embedder, image_embeddings):
    projector = InvariantProjector(
        n_components=4, interventions=TextInterventions(embedder, class_names=NAMES)
    ).fit(image_embeddings)
    clf = ZeroShotClassifier(NAMES, encoder=embedder, projector=projector, refit_projector=False)
    clf.fit(image_embeddings[:2])  # too few rows to refit: the given projector is kept
    np.testing.assert_array_equal(clf.projector_.components_, projector.components_)
    assert clf.projector_ is not projector
    cosine = _unit(image_embeddings @ projector.components_.T) @ clf.class_weights_.T
    np.testing.assert_allclose(clf.similarity(image_embeddings), cosine, atol=1e-5)
    with pytest.raises(ValueError, match="refit_projector=False needs a fitted projector"):
        clone(clf).set_params(projector=InvariantProjector(4)).fit(image_embeddings)


def test_integer_and_mapped_labels(embedder, image_embeddings):
    y = np.arange(12) % 3
    clf = ZeroShotClassifier(NAMES, encoder=embedder, templates=TEMPLATES).fit(image_embeddings, y)
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    by_name = ZeroShotClassifier(NAMES, encoder=embedder, templates=TEMPLATES).fit(image_embeddings)
    np.testing.assert_array_equal(
        np.array(NAMES)[clf.predict(image_embeddings)], by_name.predict(image_embeddings)
    )
    mapping = {10: "cat", 20: "dog", 30: "horse"}
    mapped = ZeroShotClassifier(mapping, encoder=embedder, templates=TEMPLATES).fit(
        image_embeddings
    )
    np.testing.assert_array_equal(
        mapped.predict(image_embeddings), 10 * (clf.predict(image_embeddings) + 1)
    )
    # Open-class: classes that never occur in y are still classes, and are predicted.
    only_cats = np.zeros(12, dtype=int)
    fitted = ZeroShotClassifier(NAMES, encoder=embedder, templates=TEMPLATES).fit(
        image_embeddings, only_cats
    )
    np.testing.assert_array_equal(fitted.classes_, [0, 1, 2])
    assert fitted.predict_proba(image_embeddings).shape == (12, 3)
    # An image embedding equal to a class's text embedding is closest to that class (cosine 1).
    np.testing.assert_array_equal(fitted.predict(fitted.class_embeddings_), [0, 1, 2])


def test_precomputed_embeddings_and_image_means():
    text = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    X = np.array([[3.0, 1.0, 0.0], [0.5, 2.0, 9.0]])
    clf = ZeroShotClassifier(["a", "b"], class_embeddings=text).fit(X)
    np.testing.assert_array_equal(clf.predict(X), ["a", "b"])
    assert clf.decision_function(X).shape == (2,)
    assert clf.decision_function(X)[0] < 0 < clf.decision_function(X)[1]

    y = np.array([0, 0, 1, 1])
    X = np.array([[1.0, 0.1], [2.0, -0.1], [0.1, 1.0], [-0.1, 3.0]])
    means = ZeroShotClassifier(class_embeddings="image_means").fit(X, y)
    hand = _unit(np.array([_unit(X[:2]).mean(axis=0), _unit(X[2:]).mean(axis=0)]))
    np.testing.assert_allclose(means.class_embeddings_, hand)
    np.testing.assert_array_equal(means.predict(X), y)


def test_routes_fit_metadata_to_the_projector(embedder, image_embeddings):
    rng = np.random.default_rng(1)
    X_intervened = image_embeddings + 0.1 * rng.normal(size=image_embeddings.shape)
    X_intervened = X_intervened.astype(np.float32)
    # Without routing, fit keywords go straight to the projector.
    clf = ZeroShotClassifier(NAMES, encoder=embedder, projector=InvariantProjector(3))
    clf.fit(image_embeddings, X_intervened=X_intervened)
    assert clf.projector_.n_differences_seen_ == len(image_embeddings)
    with sklearn.config_context(enable_metadata_routing=True):
        projector = InvariantProjector(3).set_fit_request(X_intervened=True)
        clf = ZeroShotClassifier(NAMES, encoder=embedder, projector=projector)
        clf.fit(image_embeddings, X_intervened=X_intervened)
        assert clf.projector_.n_differences_seen_ == len(image_embeddings)
        # The projector declines groups by default (they are a splitter's), so nothing takes them.
        with pytest.raises(TypeError, match=r"unexpected argument\(s\) \{'groups'\}"):
            clf.fit(image_embeddings, groups=np.zeros(12))
        # Requested, environment labels reach the projector with the labels.
        y, groups = np.array(NAMES * 4), np.arange(12) % 2
        clf.set_params(projector=clone(projector).set_fit_request(groups=True))
        clf.fit(image_embeddings, y, X_intervened=X_intervened, groups=groups)
        direct = InvariantProjector(3).fit(
            image_embeddings, y, X_intervened=X_intervened, groups=groups
        )
        assert clf.projector_.n_differences_seen_ == direct.n_differences_seen_
        assert direct.n_differences_seen_ > len(image_embeddings)
        np.testing.assert_allclose(clf.projector_.components_, direct.components_, atol=1e-6)
    with pytest.raises(TypeError, match="nothing to pass them to"):
        ZeroShotClassifier(NAMES, encoder=embedder).fit(image_embeddings, groups=np.zeros(12))


def test_clone_and_pickle_round_trip(embedder, image_embeddings):
    clf = ZeroShotClassifier(NAMES, encoder=embedder, templates=TEMPLATES).fit(image_embeddings)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict(image_embeddings), clf.predict(image_embeddings))
    assert not hasattr(clone(clf), "classes_")


def test_zero_shot_errors(embedder, image_embeddings):
    with pytest.raises(ValueError, match="class_names is required when fit gets no labels"):
        ZeroShotClassifier(encoder=embedder).fit(image_embeddings)
    with pytest.raises(ValueError, match="class_names is required when the labels are not strings"):
        ZeroShotClassifier(encoder=embedder).fit(image_embeddings, np.arange(12) % 2)
    with pytest.raises(ValueError, match="encoder is required"):
        ZeroShotClassifier(NAMES).fit(image_embeddings)
    with pytest.raises(ValueError, match="templates must be strings with exactly one"):
        ZeroShotClassifier(NAMES, encoder=embedder, templates=["a photo"]).fit(image_embeddings)
    with pytest.raises(ValueError, match=r"y contains labels \['zebra'\]"):
        ZeroShotClassifier(NAMES, encoder=embedder).fit(image_embeddings[:1], ["zebra"])
    with pytest.raises(ValueError, match="class_embeddings has 2 rows but there are 3 classes"):
        ZeroShotClassifier(NAMES, class_embeddings=np.eye(2)).fit(np.eye(2))
    with pytest.raises(ValueError, match="have 2 features but X has 32"):
        ZeroShotClassifier(NAMES[:2], class_embeddings=np.eye(2)).fit(image_embeddings)
    with pytest.raises(ValueError, match="class 2 has none"):
        ZeroShotClassifier({0: "a", 1: "b", 2: "c"}, class_embeddings="image_means").fit(
            np.eye(2), [0, 1]
        )


def test_class_weights_go_through_the_same_map_as_images_with_center():
    """center=True: the class embeddings are centred on the image mean, like the images."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6)) + 3.0  # image embeddings with a large common offset
    X_intervened = X + rng.normal(size=(50, 6)) * [0, 0, 0, 0, 1, 1]
    text = rng.normal(size=(3, 6))  # text embeddings without that offset (modality gap)
    clf = ZeroShotClassifier(
        ["a", "b", "c"], class_embeddings=text, projector=InvariantProjector(3, center=True)
    ).fit(X, X_intervened=X_intervened)
    A, mean = clf.projector_.components_, clf.projector_.mean_
    np.testing.assert_allclose(
        clf.class_weights_, _unit(clf.projector_.transform(clf.class_embeddings_)), atol=1e-12
    )
    np.testing.assert_allclose(clf.class_weights_, _unit((_unit(text) - mean) @ A.T), atol=1e-12)
    assert not np.allclose(clf.class_weights_, _unit(_unit(text) @ A.T))
    np.testing.assert_allclose(
        clf.similarity(X), _unit((X - mean) @ A.T) @ clf.class_weights_.T, atol=1e-12
    )


class _FailingProjector(TransformerMixin, BaseEstimator):
    def fit(self, X, y=None):
        raise RuntimeError("projector fit failed")

    def transform(self, X):
        return X


def _fitted_state(clf):
    return {key: value for key, value in vars(clf).items() if key.endswith("_")}


@pytest.mark.parametrize(
    "change, X, fit_params, error",
    [
        ({"class_names": ["cat", "dog", "horse"]}, None, {}, ValueError),  # 2 rows, 3 classes
        ({"class_names": ["dog", "cat"]}, None, {"groups": [0, 1]}, TypeError),
        ({}, np.eye(3)[:2], {}, ValueError),  # another width than the class embeddings
        ({"projector": _FailingProjector()}, None, {}, RuntimeError),
        ({"projector": InvariantProjector(1), "refit_projector": False}, None, {}, ValueError),
    ],
    ids=["class-rows", "fit-keyword", "width", "projector-fit", "unfitted-projector"],
)
def test_failed_refit_keeps_the_previous_fit(change, X, fit_params, error):
    X_fit = np.array([[1.0, 0.0], [0.0, 1.0]])
    clf = ZeroShotClassifier(["cat", "dog"], class_embeddings=np.eye(2)).fit(X_fit)
    before = _fitted_state(clf)
    clf.set_params(**change)
    with pytest.raises(error):
        clf.fit(X_fit if X is None else X, **fit_params)
    after = _fitted_state(clf)
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key] is value, key
    np.testing.assert_array_equal(clf.predict([[1.0, 0.0], [0.0, 1.0]]), ["cat", "dog"])


@pytest.mark.parametrize(
    "params, fit_params",
    [
        ({"class_embeddings": np.eye(3)}, {}),  # 3 rows for 2 classes
        ({"class_embeddings": np.eye(2, 3)}, {}),  # width 3, X width 2
        ({"class_embeddings": np.eye(2)}, {"X_intervened": np.eye(2)}),  # nothing to take it
        ({"class_embeddings": np.eye(2), "projector": _FailingProjector()}, {}),
    ],
    ids=["class-rows", "width", "fit-keyword", "projector-fit"],
)
def test_failed_first_fit_leaves_the_classifier_unfitted(params, fit_params):
    clf = ZeroShotClassifier(["a", "b"], **params)
    with pytest.raises((ValueError, TypeError, RuntimeError)):
        clf.fit(np.eye(2), **fit_params)
    assert _fitted_state(clf) == {}
    with pytest.raises(NotFittedError):
        clf.predict(np.eye(2))


def test_error_messages_name_the_actual_problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 3))
    fitted = InvariantProjector(2).fit(X, X_intervened=X + rng.normal(size=X.shape))
    prefitted = ZeroShotClassifier(
        ["a", "b"], class_embeddings=np.eye(2, 3), projector=fitted, refit_projector=False
    )
    with pytest.raises(TypeError, match=r"\['X_intervened'\]: with refit_projector=False the"):
        prefitted.fit(X, X_intervened=X)
    with pytest.raises(ValueError, match='class_embeddings="image_means" needs labels y in fit'):
        ZeroShotClassifier(class_embeddings="image_means").fit(X)
    with pytest.raises(ValueError, match='"image_means" needs labels y'):
        ZeroShotClassifier(["a", "b"], class_embeddings="image_means").fit(X)
    narrow = clone(prefitted).set_params(
        projector=InvariantProjector(1).fit(X[:, :2], X_intervened=X[:, :2] + 1.0)
    )
    with pytest.raises(ValueError, match="projector was fitted on 2 features but X has 3"):
        narrow.fit(X)


@pytest.mark.parametrize("name", ["openai-imagenet", "simple-imagenet", "skicm"])
def test_a_named_template_set_is_the_same_as_its_templates(embedder, image_embeddings, name):
    from open_clip import zero_shot_metadata

    from skicm.zero_shot import DEFAULT_ZERO_SHOT_TEMPLATES, zero_shot_templates

    # The sets written out independently of zero_shot_templates (open_clip's own lists).
    written = {
        "openai-imagenet": [t("{}") for t in zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES],
        "simple-imagenet": [t("{}") for t in zero_shot_metadata.SIMPLE_IMAGENET_TEMPLATES],
        "skicm": list(DEFAULT_ZERO_SHOT_TEMPLATES),
    }[name]
    assert zero_shot_templates(name) == written
    by_name = ZeroShotClassifier(NAMES, encoder=embedder, templates=name).fit(image_embeddings)
    listed = ZeroShotClassifier(NAMES, encoder=embedder, templates=written).fit(image_embeddings)
    np.testing.assert_array_equal(by_name.class_embeddings_, listed.class_embeddings_)


def test_unknown_template_set_names_the_sets(embedder, image_embeddings):
    with pytest.raises(ValueError, match=r"one of the template sets \['openai-imagenet'"):
        ZeroShotClassifier(NAMES, encoder=embedder, templates="openai").fit(image_embeddings)


# ------------------------------------------------------------------ prompts from files (CuPL)

# Full prompts per class, CuPL's format; the classes have different numbers of prompts, and
# "big dog" is found for the class name "big_dog" (underscores as spaces, as DomainBed's folders).
CLASS_PROMPTS = {
    "cat": ["a photo of a cat, a small furry pet.", "a cat with pointed ears."],
    "big dog": ["a large dog on a lead.", "a big dog barking.", "a photo of a huge hound."],
    "horse": ["a horse in a field."],
}


def _hand_class_prompt_embeddings(embedder, class_prompts):
    """CuPL's class embedding, written out: each class's own prompts normalised, averaged,
    normalised again, in float64 from the encoder's float32 text embeddings."""
    rows = []
    for prompts in class_prompts:
        unit = _unit(np.asarray(embedder.encode_text(prompts), dtype=np.float64))
        mean = unit.mean(axis=0)
        # The conditioning of the last normalisation is 1 / |mean|; keep it small and known.
        assert np.linalg.norm(mean) > 0.1
        rows.append(mean)
    return _unit(np.array(rows))


def test_class_prompts_file_gives_each_class_the_mean_of_its_own_prompts(
    embedder, image_embeddings, tmp_path
):
    path = tmp_path / "cupl.json"
    path.write_text(json.dumps(CLASS_PROMPTS))
    X = image_embeddings.astype(np.float64)
    names = ["cat", "big_dog", "horse"]
    expected = _hand_class_prompt_embeddings(embedder, list(CLASS_PROMPTS.values()))
    # Both sides start from the same float32 text embeddings and compute in float64: sums of at
    # most 3 unit vectors and two normalisations, amplified at most 1 / |mean| < 10, differ by a
    # few float64 ulps (eps 2.2e-16) times 10; 1e-12 leaves a wide margin.
    for templates in (path, str(path), CLASS_PROMPTS):
        clf = ZeroShotClassifier(names, encoder=embedder, templates=templates).fit(X)
        np.testing.assert_allclose(clf.class_embeddings_, expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose(clf.similarity(X), _unit(X) @ expected.T, rtol=0, atol=1e-12)
    # A clone keeps the path and reads the same prompts again.
    again = clone(clf.set_params(templates=str(path))).fit(X)
    np.testing.assert_array_equal(again.class_embeddings_, clf.class_embeddings_)


def test_template_list_file_with_c_placeholders_equals_the_templates(
    embedder, image_embeddings, tmp_path
):
    from skicm.zero_shot import zero_shot_templates

    path = tmp_path / "templates.json"
    path.write_text(json.dumps([t.replace("{}", "{c}") for t in TEMPLATES]))
    assert zero_shot_templates(path) == TEMPLATES
    assert zero_shot_templates("a photo of a {}.json") == ["a photo of a {}.json"]  # a template
    from_file = ZeroShotClassifier(NAMES, encoder=embedder, templates=str(path))
    listed = ZeroShotClassifier(NAMES, encoder=embedder, templates=TEMPLATES)
    np.testing.assert_array_equal(
        from_file.fit(image_embeddings).class_embeddings_,
        listed.fit(image_embeddings).class_embeddings_,
    )


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("{not json", r"prompt file '.*bad\.json' is not JSON \(Expecting property name"),
        ("3", r"prompt file '.*bad\.json' holds a JSON int; expected an object of class"),
        ("{}", r"prompt file '.*bad\.json' maps no class to prompts"),
        ('{"cat": []}', r"bad\.json': class 'cat' has an empty list of prompts"),
        ('{"cat": "a cat."}', r"bad\.json': the prompts of class 'cat' must be a list of str"),
        ('{"cat": ["a cat.", 7]}', r"bad\.json': the prompts of class 'cat' must be non-empty"),
        ('["a photo of a cat."]', r"templates of the prompt file '.*bad\.json' must be strings"),
        ("[]", r"prompt file '.*bad\.json' holds an empty list of templates"),
    ],
)
def test_bad_prompt_files_name_the_file(embedder, tmp_path, content, error):
    from skicm.zero_shot import _check_templates

    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=error):
        _check_templates(str(path))  # what skicm evaluate runs before any embedding
    clf = ZeroShotClassifier(["cat"], encoder=embedder, templates=path)
    with pytest.raises(ValueError, match=error):
        clf.fit(np.zeros((2, 32)))
    assert not hasattr(clf, "classes_")


def test_classes_missing_from_the_prompt_file_are_named(embedder, tmp_path):
    path = tmp_path / "cupl.json"
    path.write_text(json.dumps(CLASS_PROMPTS))
    clf = ZeroShotClassifier(["cat", "cow", "zebra"], encoder=embedder, templates=path)
    with pytest.raises(
        ValueError,
        match=r"Classes \['cow', 'zebra'\] have no prompts in prompt file '.*cupl\.json', "
        r"which has prompts for \['big dog', 'cat', 'horse'\]",
    ):
        clf.fit(np.zeros((2, 32)))
    with pytest.raises(ValueError, match=r"Classes \['cow'\] have no prompts in templates"):
        ZeroShotClassifier(["cow"], encoder=embedder, templates={"cat": ["a cat."]}).fit(
            np.zeros((2, 32))
        )
    # The same check, before anything is embedded (as skicm evaluate can run it).
    from skicm.prompts import load_prompts
    from skicm.zero_shot import _check_prompt_classes

    with pytest.raises(ValueError, match=r"Classes \['cow'\] have no prompts in prompt file"):
        _check_prompt_classes(load_prompts(path), ["cat", "cow"])
    _check_prompt_classes(load_prompts(path), ["cat", "big dog", "horse"])
    _check_prompt_classes(TEMPLATES, ["cow"])
    ambiguous = {"big dog": ["a big dog."], "Big_Dog": ["a large dog."]}
    with pytest.raises(ValueError, match=r"Class 'big_dog' matches several classes"):
        ZeroShotClassifier(["big_dog"], encoder=embedder, templates=ambiguous).fit(
            np.zeros((2, 32))
        )
    with pytest.raises(ValueError, match=r"Cannot read the prompt file '.*absent\.json'"):
        ZeroShotClassifier(["cat"], encoder=embedder, templates=tmp_path / "absent.json").fit(
            np.zeros((2, 32))
        )


def test_skicm_evaluate_reads_a_prompt_file(tmp_path, tiny_clip_name, capsys):
    from PIL import Image

    from skicm.cli import main

    rng = np.random.default_rng(0)
    for domain in ("art", "photo", "sketch"):
        for name in ("cat", "big_dog"):
            folder = tmp_path / "dg" / domain / name
            folder.mkdir(parents=True)
            for k in range(2):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{k}.png")
    prompts = tmp_path / "cupl.json"
    argv = ["evaluate", str(tmp_path / "dg"), "--model-name", tiny_clip_name, "--pretrained",
            "none", "--device", "cpu", "--n-components", "4", "--alpha", "1", "--C", "1",
            "--seeds", "1", "--methods", "zero-shot", "--templates", str(prompts),
            "--no-progress"]  # fmt: skip

    prompts.write_text(json.dumps({"cat": ["a cat."], "big dog": ["a big dog.", "a hound."]}))
    assert main([*argv, "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "results.csv").exists()
    capsys.readouterr()

    # The prompts reach the classifier: a class missing from the file stops the run, naming
    # the file and the class, and writes no results.
    prompts.write_text(json.dumps({"cat": ["a cat."]}))
    assert main([*argv, "--output", str(tmp_path / "missing")]) == 2
    assert re.search(
        r"Classes \['big dog'\] have no prompts in prompt file '.*cupl\.json'",
        capsys.readouterr().err,
    )
    assert not (tmp_path / "missing").exists()

    prompts.write_text("{not json")
    assert main([*argv, "--output", str(tmp_path / "bad")]) == 2
    assert re.search(r"prompt file '.*cupl\.json' is not JSON", capsys.readouterr().err)
    assert not (tmp_path / "bad").exists()
