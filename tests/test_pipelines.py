"""End-to-end compositions with a tiny random open_clip model and real image files.

1. a plain pipeline whose projector gets text interventions, fitted with no extra arguments;
2. image counterparts: routed through the embedder with metadata routing, or embedded first
   without it; the classic ``icm__X_intervened=images`` gets an error naming the ways;
3. GridSearchCV with GroupKFold / LeaveOneGroupOut in both routing modes, each image through
   the image tower once and each prompt through the text tower once, every score equal to a
   cross-validation by hand;
and the zero-shot classifier selected by GridSearchCV. Each result is compared with the same
computation written out step by step on the embeddings.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
from PIL import Image, ImageDraw
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    LeaveOneGroupOut,
    ParameterGrid,
    cross_val_score,
)
from sklearn.pipeline import Pipeline, make_pipeline

from skicm import embedding
from skicm.embedding import CLIPEmbedder
from skicm.interventions import DEFAULT_DOMAIN_TEMPLATES, ImageInterventions, TextInterventions
from skicm.pipelines import make_clip_icm_pipeline
from skicm.projection import InvariantProjector

TEMPLATES = ["a photo of a {}.", "a sketch of a {}.", "a painting of a {}."]
BACKGROUNDS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """24 PNG files: a circle or a square (the class) on one of three backgrounds (the domain)."""
    folder = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    paths, labels, environments = [], [], []
    for environment, colour in BACKGROUNDS.items():
        for shape in ("circle", "square"):
            for k in range(4):
                image = Image.new("RGB", (32, 32), colour)
                x, y = (int(v) for v in rng.integers(2, 12, size=2))
                box = [x, y, x + 16, y + 16]
                draw = ImageDraw.Draw(image)
                (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=(250, 250, 250))
                path = folder / f"{environment}_{shape}_{k}.png"
                image.save(path)
                paths.append(str(path))
                labels.append(shape)
                environments.append(environment)
    return paths, np.array(labels), np.array(environments)


@pytest.fixture(scope="module")
def counterparts(dataset):
    return ImageInterventions(random_state=0).apply(dataset[0])


def _embedder(name, **params):
    return CLIPEmbedder(name, pretrained=None, device="cpu", progress=False, **params)


def _probe(projector, Z, y):
    """The pipeline's last two steps written out: a linear probe on the projected embeddings."""
    return LogisticRegression(max_iter=1000).fit(projector.transform(Z), y)


def _cross_validate_by_hand(make_projector, grid, cv, Z, y, environments, **fit_arrays):
    """Mean held-out accuracy of every candidate of ``grid``, in GridSearchCV's order."""
    scores = []
    for params in ParameterGrid(grid):
        params = {name.rsplit("__", 1)[-1]: value for name, value in params.items()}
        folds = []
        for train, test in cv.split(Z, y, environments):
            sliced = {name: array[train] for name, array in fit_arrays.items()}
            projector = make_projector(**params).fit(Z[train], y[train], **sliced)
            probe = _probe(projector, Z[train], y[train])
            folds.append(probe.score(projector.transform(Z[test]), y[test]))
        scores.append(np.mean(folds))
    return np.array(scores)


def test_plain_pipeline_with_text_interventions(tiny_clip_name, dataset):
    paths, y, _ = dataset
    embedding.clear_model_cache()
    embedder = _embedder(tiny_clip_name)
    text = TextInterventions(clone(embedder), domain_templates=TEMPLATES)
    pipe = Pipeline(
        [
            ("clip", embedder),
            ("icm", InvariantProjector(4, interventions=text)),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    ).fit(paths, y)
    projector = pipe.named_steps["icm"]
    assert projector.n_differences_seen_ == 2 * 3  # 2 classes (from y) x 3 template pairs
    Z = embedder.transform(paths)
    expected = InvariantProjector(4, interventions=text).fit(Z, y)
    np.testing.assert_allclose(projector.components_, expected.components_, atol=1e-6)
    hand = _probe(expected, Z, y).predict(expected.transform(Z))
    np.testing.assert_array_equal(pipe.predict(paths), hand)
    # One model in the process for the image step and the text interventions.
    assert len(embedding._MODEL_CACHE) == 1
    assert text.encoder._loaded_model() is embedder._loaded_model()

    factory = make_clip_icm_pipeline(
        embedder,
        projector=InvariantProjector(4),
        interventions=["text"],
        domain_templates=TEMPLATES,
    ).fit(paths, y)
    np.testing.assert_allclose(
        factory.named_steps["icm"].components_, expected.components_, atol=1e-6
    )
    np.testing.assert_array_equal(factory.predict(paths), hand)


def test_counterpart_images_the_classic_way_get_an_error_naming_the_ways(tiny_clip_name, dataset):
    """Without routing a step parameter reaches its step untransformed: the projector would get
    images. It says so, and names the ways that embed them first."""
    paths, y, _ = dataset
    images = np.stack([np.asarray(Image.open(path)) for path in paths])
    counterparts = ImageInterventions(random_state=0).apply(images)
    pipe = Pipeline(
        [
            ("clip", _embedder(tiny_clip_name)),
            ("icm", InvariantProjector(4)),
            ("clf", LogisticRegression()),
        ]
    )
    with pytest.raises(ValueError, match="X_intervened") as error:
        pipe.fit(images, y, icm__X_intervened=counterparts)
    assert "transform_input" in str(error.value)
    assert "make_clip_icm_pipeline" in str(error.value)


def test_counterpart_images_the_documented_ways_fit_the_same_projector(
    tiny_clip_name, dataset, counterparts
):
    paths, y, _ = dataset
    embedder = _embedder(tiny_clip_name)
    Z, Z_counterparts = embedder.transform(paths), embedder.transform(counterparts)
    expected = InvariantProjector(4).fit(Z, X_intervened=Z_counterparts)
    hand = _probe(expected, Z, y).predict(expected.transform(Z))

    # Routing off: embed the images and their counterparts first, then the classic form.
    classic = make_pipeline(InvariantProjector(4), LogisticRegression(max_iter=1000))
    classic.fit(Z, y, invariantprojector__X_intervened=Z_counterparts)
    fitted = {"embedded first (routing off)": classic[0]}
    predictions = {"embedded first (routing off)": classic.predict(Z)}
    with sklearn.config_context(enable_metadata_routing=True):
        # Routing on: the pipeline passes the counterparts through the embedder step.
        by_hand = Pipeline(
            [
                ("clip", embedder),
                ("icm", InvariantProjector(4).set_fit_request(X_intervened=True)),
                ("clf", LogisticRegression(max_iter=1000)),
            ],
            transform_input=["X_intervened"],
        ).fit(paths, y, X_intervened=counterparts)
        factory = make_clip_icm_pipeline(
            embedder, projector=InvariantProjector(4), interventions=["X_intervened"]
        )
        assert factory.transform_input == ["X_intervened"]
        factory.fit(paths, y, X_intervened=counterparts)
        for name, pipe in [("transform_input", by_hand), ("make_clip_icm_pipeline", factory)]:
            fitted[name] = pipe.named_steps["icm"]
            predictions[name] = pipe.predict(paths)

        with pytest.raises(ValueError, match=r"X_intervened has shape \(23, 32\)"):
            factory.fit(paths, y, X_intervened=counterparts[:-1])
    for name, projector in fitted.items():
        assert projector.n_differences_seen_ == len(paths), name
        np.testing.assert_allclose(
            projector.components_, expected.components_, atol=1e-6, err_msg=name
        )
        np.testing.assert_array_equal(predictions[name], hand, err_msg=name)


def test_design_card_search_works_in_both_routing_modes(tiny_clip_name, dataset, counterparts):
    """The natural code: groups for the splitter only, counterparts for the projector. Routing
    on, with images; routing off, the classic form on embeddings; both score every candidate as
    a cross-validation by hand does."""
    paths, y, environments = dataset
    embedder = _embedder(tiny_clip_name)
    Z, Z_counterparts = embedder.transform(paths), embedder.transform(counterparts)
    cv = GroupKFold(n_splits=3)
    grid = {"n_components": [2, 8], "alpha": [0.5, 4.0]}
    hand = _cross_validate_by_hand(
        InvariantProjector, grid, cv, Z, y, environments, X_intervened=Z_counterparts
    )
    assert hand.min() < hand.max(), "candidates that score alike would test nothing"

    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline(
            [
                ("clip", embedder),
                ("icm", InvariantProjector().set_fit_request(X_intervened=True)),
                ("clf", LogisticRegression(max_iter=1000)),
            ],
            transform_input=["X_intervened"],
        )
        routed = GridSearchCV(pipe, {f"icm__{k}": v for k, v in grid.items()}, cv=cv)
        routed.fit(paths, y, groups=environments, X_intervened=counterparts)
    classic = GridSearchCV(
        make_pipeline(InvariantProjector(), LogisticRegression(max_iter=1000)),
        {f"invariantprojector__{k}": v for k, v in grid.items()},
        cv=cv,
    ).fit(Z, y, groups=environments, invariantprojector__X_intervened=Z_counterparts)

    best = list(ParameterGrid(grid))[int(np.argmax(hand))]
    for search, prefix in [(routed, "icm__"), (classic, "invariantprojector__")]:
        np.testing.assert_allclose(search.cv_results_["mean_test_score"], hand, atol=1e-12)
        assert search.best_params_ == {prefix + k: v for k, v in best.items()}
    refit = InvariantProjector(**best).fit(Z, X_intervened=Z_counterparts)
    np.testing.assert_allclose(
        routed.best_estimator_.named_steps["icm"].components_, refit.components_, atol=1e-6
    )


@pytest.mark.parametrize("cv", [GroupKFold(n_splits=3), LeaveOneGroupOut()], ids=type)
def test_grid_search_over_environments_encodes_each_image_once(
    tiny_clip_name, dataset, counterparts, cv, tmp_path
):
    paths, y, environments = dataset
    # A fresh on-disk store and an empty text cache, so the counts below start from zero.
    embedder = _embedder(tiny_clip_name, store=str(tmp_path / "embeddings.sqlite"))
    embedding.clear_text_cache()
    model = embedder._loaded_model().model
    through_image_tower, through_text_tower = [], []
    hooks = [
        model.visual.register_forward_hook(
            lambda module, inputs, output: through_image_tower.append(output.shape[0])
        ),
        model.token_embedding.register_forward_hook(
            lambda module, inputs, output: through_text_tower.append(output.shape[0])
        ),
    ]
    grid = {"icm__n_components": [2, 8], "icm__alpha": [0.5, 4.0]}
    try:
        with sklearn.config_context(enable_metadata_routing=True):
            pipe = make_clip_icm_pipeline(
                embedder,
                interventions=["text", "X_intervened", "groups"],
                domain_templates=TEMPLATES,
            )
            search = GridSearchCV(pipe, grid, cv=cv).fit(
                paths, y, groups=environments, X_intervened=counterparts
            )
    finally:
        for hook in hooks:
            hook.remove()
    assert sum(through_image_tower) == 2 * len(paths)  # every image and counterpart, once
    # 4 candidates x 3 folds + the refit fit the text interventions 13 times, from the labels
    # of each fold (both classes in every one): each of the 2 x 3 domain prompts is encoded once.
    assert sum(through_text_tower) == 2 * len(TEMPLATES)
    assert search.n_splits_ == 3

    # Every fold's projector got that fold's counterparts and environments, and its text
    # interventions: the scores are those of a cross-validation by hand.
    Z, Z_counterparts = embedder.transform(paths), embedder.transform(counterparts)
    text = TextInterventions(clone(embedder), domain_templates=TEMPLATES)

    def projector(**params):
        return InvariantProjector(interventions=text, **params)

    arrays = {"X_intervened": Z_counterparts, "groups": environments}
    hand = _cross_validate_by_hand(projector, grid, cv, Z, y, environments, **arrays)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], hand, atol=1e-12)
    best = list(ParameterGrid(grid))[int(np.argmax(hand))]
    assert search.best_params_ == best
    refit = projector(**{k.split("__")[1]: v for k, v in best.items()}).fit(Z, y, **arrays)
    fitted = search.best_estimator_.named_steps["icm"]
    # Pairs + environment differences + 2 classes x 3 template pairs, exactly.
    assert fitted.n_differences_seen_ == refit.n_differences_seen_
    assert refit.n_differences_seen_ > len(paths) + 2 * 3  # the environments contributed
    np.testing.assert_allclose(fitted.components_, refit.components_, atol=1e-6)


def test_zero_shot_rank_selected_by_grid_search(tiny_clip_name, dataset):
    paths, y, environments = dataset
    pipe = make_clip_icm_pipeline(
        _embedder(tiny_clip_name), "zero-shot", interventions="text", domain_templates=TEMPLATES
    )
    assert [name for name, _ in pipe.steps] == ["clip", "zeroshot"]
    ranks = [2, 8]
    grid = {"zeroshot__projector__n_components": ranks}
    cv = GroupKFold(n_splits=3)
    search = GridSearchCV(pipe, grid, cv=cv).fit(paths, y, groups=environments)
    # The scores are those of a cross-validation of each candidate by hand, and the best rank
    # is the one with the best of them.
    manual = [
        cross_val_score(
            clone(pipe).set_params(zeroshot__projector__n_components=rank),
            paths,
            y,
            groups=environments,
            cv=cv,
        ).mean()
        for rank in ranks
    ]
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], manual, atol=1e-12)
    best_rank = ranks[int(np.argmax(manual))]
    assert search.best_params_ == {"zeroshot__projector__n_components": best_rank}
    # The refit estimator is the best candidate fitted on all the data.
    zero_shot = search.best_estimator_.named_steps["zeroshot"]
    assert zero_shot.classes_.tolist() == ["circle", "square"]
    assert zero_shot.projector_.n_components_ == best_rank
    assert zero_shot.class_weights_.shape == (2, best_rank)
    refit = clone(pipe).set_params(zeroshot__projector__n_components=best_rank).fit(paths, y)
    np.testing.assert_array_equal(search.predict(paths), refit.predict(paths))
    assert search.score(paths, y) == refit.score(paths, y)


def test_factory_clones_the_projector_only(tiny_clip_name):
    embedder = _embedder(tiny_clip_name)
    projector = InvariantProjector(4)
    classifier = LogisticRegression()
    pipe = make_clip_icm_pipeline(embedder, classifier, projector=projector, interventions="text")
    assert pipe.named_steps["clip"] is embedder
    assert pipe.named_steps["clf"] is classifier
    assert pipe.named_steps["icm"] is not projector
    assert projector.interventions is None, "the caller's projector is not modified"
    text = pipe.named_steps["icm"].interventions
    assert isinstance(text, TextInterventions)
    assert text.encoder is not embedder and text.encoder.get_params() == embedder.get_params()
    assert text.domain_templates == DEFAULT_DOMAIN_TEMPLATES


def test_factory_adds_text_interventions_only_when_asked(tiny_clip_name, dataset):
    paths, y, _ = dataset
    embedder = _embedder(tiny_clip_name)
    with pytest.raises(TypeError, match="interventions"):
        make_clip_icm_pipeline(embedder)  # no default: the caller says what the projector uses
    plain = make_clip_icm_pipeline(embedder, interventions=())
    assert plain.named_steps["icm"].interventions is None and plain.transform_input is None

    # A projector without an interventions parameter, used without any.
    pipe = make_clip_icm_pipeline(embedder, projector=PCA(4), interventions=()).fit(paths, y)
    assert pipe.named_steps["icm"].get_params() == PCA(4).get_params()
    Z = embedder.transform(paths)
    pca = PCA(4).fit(Z)
    np.testing.assert_allclose(
        np.abs(pipe.named_steps["icm"].components_), np.abs(pca.components_), atol=1e-5
    )
    np.testing.assert_array_equal(pipe.predict(paths), _probe(pca, Z, y).predict(pca.transform(Z)))
    with pytest.raises(ValueError, match=r"interventions=\['text'\] needs a projector with an"):
        make_clip_icm_pipeline(embedder, projector=PCA(4), interventions=["text"])


def test_factory_errors(tiny_clip_name):
    embedder = _embedder(tiny_clip_name)
    with pytest.raises(
        ValueError, match=r"interventions=\['X_intervened'\] .*needs metadata routing"
    ):
        make_clip_icm_pipeline(embedder, interventions=["X_intervened"])
    with pytest.raises(ValueError, match=r"interventions contains \['weights'\]"):
        make_clip_icm_pipeline(embedder, interventions=["text", "weights"])
    with pytest.raises(ValueError, match="add 'text' to interventions"):
        make_clip_icm_pipeline(embedder, interventions=(), caption_pairs=[("a", "b")])
    with pytest.raises(ValueError, match="add 'text' to interventions"):
        make_clip_icm_pipeline(embedder, interventions=(), domain_templates=TEMPLATES)
    text = TextInterventions(embedder, domain_templates=TEMPLATES)
    with pytest.raises(ValueError, match="would replace the projector's own interventions"):
        make_clip_icm_pipeline(
            embedder, projector=InvariantProjector(interventions=text), interventions="text"
        )
    with pytest.raises(ValueError, match='"zero-shot" or None'):
        make_clip_icm_pipeline(embedder, "svm", interventions=())


def test_factory_needs_a_text_tower_only_for_text_and_zero_shot():
    from skicm import ImageEmbedder

    embedder = ImageEmbedder("efficientnet-lite0", device="cpu")  # not built here
    with pytest.raises(
        ValueError, match=r"interventions=\['text'\] need a text tower.*ImageEmbedder"
    ):
        make_clip_icm_pipeline(embedder, interventions=["text"])
    with pytest.raises(ValueError, match='classifier="zero-shot" need a text tower'):
        make_clip_icm_pipeline(embedder, "zero-shot", interventions=())
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_clip_icm_pipeline(embedder, interventions=["X_intervened", "groups"])
    assert pipe.named_steps["clip"] is embedder and pipe.transform_input == ["X_intervened"]
