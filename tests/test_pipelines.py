"""End-to-end compositions with a tiny random open_clip model and real image files.

1. a plain pipeline whose projector gets text interventions, fitted with no extra arguments;
2. image counterparts routed through the embedder with metadata routing;
3. GridSearchCV with GroupKFold / LeaveOneGroupOut, each image through the image tower once and
   each prompt through the text tower once;
and the zero-shot classifier selected by GridSearchCV.
"""

from __future__ import annotations

import re
from pathlib import Path

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
    cross_val_score,
)
from sklearn.pipeline import Pipeline

from skicm import embedding
from skicm.embedding import CLIPEmbedder
from skicm.interventions import ImageInterventions, TextInterventions
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


def test_plain_pipeline_with_text_interventions(tiny_clip_name, dataset):
    paths, y, _ = dataset
    embedding.clear_model_cache()
    embedder = _embedder(tiny_clip_name)
    text = TextInterventions(clone(embedder), domain_templates=TEMPLATES)
    pipe = Pipeline(
        [
            ("clip", embedder),
            ("icm", InvariantProjector(4, interventions=text)),
            ("clf", LogisticRegression()),
        ]
    ).fit(paths, y)
    projector = pipe.named_steps["icm"]
    assert projector.n_differences_seen_ == 2 * 3  # 2 classes (from y) x 3 template pairs
    Z = embedder.transform(paths)
    expected = InvariantProjector(4, interventions=text).fit(Z, y).components_
    np.testing.assert_allclose(projector.components_, expected, atol=1e-6)
    assert set(pipe.predict(paths)) <= {"circle", "square"}
    # One model in the process for the image step and the text interventions.
    assert len(embedding._MODEL_CACHE) == 1
    assert text.encoder._loaded_model() is embedder._loaded_model()

    factory = make_clip_icm_pipeline(
        embedder, projector=InvariantProjector(4), domain_templates=TEMPLATES
    ).fit(paths, y)
    np.testing.assert_allclose(factory.named_steps["icm"].components_, expected, atol=1e-6)
    np.testing.assert_array_equal(factory.predict(paths), pipe.predict(paths))


def test_image_counterparts_are_routed_through_the_embedder(tiny_clip_name, dataset, counterparts):
    paths, y, _ = dataset
    embedder = _embedder(tiny_clip_name)
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_clip_icm_pipeline(
            embedder,
            projector=InvariantProjector(4),
            domain_templates=None,
            projector_metadata=["X_intervened"],
        )
        assert pipe.transform_input == ["X_intervened"]
        pipe.fit(paths, y, X_intervened=counterparts)
        expected = InvariantProjector(4).fit(
            embedder.transform(paths), X_intervened=embedder.transform(counterparts)
        )
        projector = pipe.named_steps["icm"]
        assert projector.n_differences_seen_ == len(paths)
        np.testing.assert_allclose(projector.components_, expected.components_, atol=1e-6)

        with pytest.raises(ValueError, match=r"X_intervened has shape \(23, 32\)"):
            pipe.fit(paths, y, X_intervened=counterparts[:-1])


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
    try:
        with sklearn.config_context(enable_metadata_routing=True):
            pipe = make_clip_icm_pipeline(
                embedder,
                domain_templates=TEMPLATES,
                projector_metadata=["X_intervened", "groups"],
            )
            grid = {"icm__n_components": [2, 4], "icm__alpha": [0.5, 2.0]}
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
    assert search.best_params_["icm__n_components"] in (2, 4)
    assert len(search.cv_results_["mean_test_score"]) == 4
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.n_splits_ == 3
    fitted = search.best_estimator_.named_steps["icm"]
    # Pairs + environment differences + 2 classes x 3 template pairs.
    assert fitted.n_differences_seen_ > len(paths) + 2 * 3


def test_zero_shot_rank_selected_by_grid_search(tiny_clip_name, dataset):
    paths, y, environments = dataset
    pipe = make_clip_icm_pipeline(
        _embedder(tiny_clip_name), "zero-shot", domain_templates=TEMPLATES
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
    pipe = make_clip_icm_pipeline(embedder, classifier, projector=projector)
    assert pipe.named_steps["clip"] is embedder
    assert pipe.named_steps["clf"] is classifier
    assert pipe.named_steps["icm"] is not projector
    assert projector.interventions is None, "the caller's projector is not modified"
    assert isinstance(pipe.named_steps["icm"].interventions, TextInterventions)


def test_factory_accepts_a_projector_without_interventions(tiny_clip_name, dataset):
    paths, y, _ = dataset
    embedder = _embedder(tiny_clip_name)
    # The default domain_templates cannot apply to PCA: it is used without text interventions.
    pipe = make_clip_icm_pipeline(embedder, projector=PCA(4)).fit(paths, y)
    assert pipe.named_steps["icm"].get_params() == PCA(4).get_params()
    assert pipe.named_steps["icm"].components_.shape == (4, 32)
    assert set(pipe.predict(paths)) <= {"circle", "square"}
    with pytest.raises(ValueError, match="caption_pairs need a projector with an interventions"):
        make_clip_icm_pipeline(embedder, projector=PCA(4), caption_pairs=[("a", "b")])


def test_factory_errors(tiny_clip_name):
    embedder = _embedder(tiny_clip_name)
    with pytest.raises(ValueError, match="needs metadata routing"):
        make_clip_icm_pipeline(embedder, projector_metadata=["X_intervened"])
    with sklearn.config_context(enable_metadata_routing=True):
        with pytest.raises(ValueError, match=r"projector_metadata contains \['weights'\]"):
            make_clip_icm_pipeline(embedder, projector_metadata=["weights"])
    with pytest.raises(ValueError, match='"zero-shot" or None'):
        make_clip_icm_pipeline(embedder, "svm")


@pytest.mark.parametrize("page", ["interventions.md", "zero_shot.md"])
def test_documentation_examples_run(page, tiny_clip_name):
    """The python blocks of the page run in order, in one namespace, offline."""
    text = (Path(__file__).parents[1] / "docs" / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks
    namespace = {}
    with sklearn.config_context():  # restores any set_config the page makes
        for block in blocks:
            exec(compile(block, page, "exec"), namespace)
    assert "search" in namespace and namespace["search"].best_params_
