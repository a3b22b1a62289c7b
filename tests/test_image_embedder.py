"""Tests of skicm.ImageEmbedder: any torch image model through the shared encoder machinery."""

from __future__ import annotations

import pickle
import sqlite3
import textwrap

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.datasets import load_sample_images

from skicm import ImageEmbedder
from skicm._image_encoder_base import _MODEL_CACHE, MODEL_BUILDS
from skicm.embedding import clear_model_cache
from skicm.store import close_stores

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

TINY = "skicm.model_configs:tiny_image_model"


def make(model=TINY, **params):
    defaults = dict(device="cpu", batch_size=4, num_workers=0, store=None, progress=False)
    return ImageEmbedder(model, **{**defaults, **params})


@pytest.fixture(scope="module")
def photos():
    return [image[:375, :500].copy() for image in load_sample_images().images]


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, photo in enumerate(photos):
        paths.append(folder / f"photo{i}.jpg")
        Image.fromarray(photo).save(paths[-1], quality=90)
    return paths


def _noise(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(n)]


def _reference(module, preprocess, images):
    """The plain loop: PIL preprocessing, one batch, the module's forward pass."""
    batch = torch.stack([preprocess(Image.fromarray(image)) for image in images])
    with torch.no_grad():
        out = module.eval()(batch)
    return (out.mean(dim=(2, 3)) if out.ndim == 4 else out).numpy()


# Model functions at the top level of a module, as ImageEmbedder needs them to pickle.
def torchvision_resnet18():
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    model = torchvision.models.resnet18(weights=None)  # random weights: nothing to download
    model.fc = torch.nn.Identity()  # pooled features, not ImageNet logits
    return model, weights.transforms()


def timm_resnet18():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    return model, timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))


def nan_model():
    module, preprocess = _tiny()
    return _Times(module, float("nan")), preprocess


def no_normalize_model():
    module, _ = _tiny()
    return module, torchvision.transforms.Compose([torchvision.transforms.ToTensor()])


def not_a_pair():
    return _tiny()[0]


def _tiny():
    from skicm.model_configs import tiny_image_model

    return tiny_image_model()


class _Times(torch.nn.Module):
    def __init__(self, module, factor):
        super().__init__()
        self.module, self.factor = module, factor

    def forward(self, x):
        return self.module(x) * self.factor


# --------------------------------------------------------------------------- models
def test_builtin_efficientnet_lite0_matches_its_reference_loop(photos):
    pytest.importorskip("efficientnet_lite_pytorch")
    from skicm.image_embedder import _efficientnet_lite0

    embedder = make("efficientnet-lite0", decoder="pil")
    Z = embedder.transform(photos)
    assert Z.shape == (2, 1280) and Z.dtype == np.float32
    module, preprocess = _efficientnet_lite0()
    np.testing.assert_allclose(Z, _reference(module, preprocess, photos), rtol=1e-4, atol=1e-4)
    # Real ImageNet weights: the package's classifier head reads the two photos apart.
    logits = module.network._fc(torch.from_numpy(Z))
    assert logits.argmax(1)[0] != logits.argmax(1)[1]
    assert embedder.embed_dim_ == 1280 and not embedder.has_text_tower


@pytest.mark.parametrize("factory", [torchvision_resnet18, timm_resnet18])
def test_torchvision_and_timm_models_with_their_preprocessing(factory, photos):
    embedder = make(factory, decoder="pil")
    Z = embedder.transform(photos)
    torch.manual_seed(0)  # the embedder seeds random weights the same way
    module, preprocess = factory()
    np.testing.assert_allclose(Z, _reference(module, preprocess, photos), rtol=1e-3, atol=1e-4)
    assert Z.shape == (2, 512)
    # The default decoder (torchvision's SIMD resize) agrees up to resampling noise.
    fast = make(factory).transform(photos)
    cosine = np.sum(fast * Z, 1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(Z, axis=1)
    assert np.all(cosine > 0.99)


def test_a_local_module_by_spec_and_its_edits_change_the_namespace(tmp_path, monkeypatch, photos):
    module_file = tmp_path / "my_encoders.py"
    source = textwrap.dedent(
        """
        from skicm.model_configs import tiny_image_model

        def encoder():
            module, preprocess = tiny_image_model()
            return module, preprocess
        """
    )
    module_file.write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    embedder = make("my_encoders:encoder")
    Z = embedder.transform(photos)
    np.testing.assert_allclose(Z, make(TINY).transform(photos), atol=1e-6)
    namespace = embedder.store_namespace()
    module_file.write_text(source + "\n# retrained\n")
    assert embedder.store_namespace() != namespace
    assert pickle.loads(pickle.dumps(embedder)).model == "my_encoders:encoder"


def test_every_input_kind_and_batching_give_the_same_embedding(photos, photo_files, tmp_path):
    for i, photo in enumerate(photos):
        Image.fromarray(photo).save(tmp_path / f"{i}.png")
    Z = make(batch_size=1).transform(photos)
    np.testing.assert_allclose(make().transform(np.stack(photos)), Z, atol=1e-6)
    pngs = [tmp_path / "0.png", tmp_path / "1.png"]
    np.testing.assert_allclose(make(batch_size="auto").transform(pngs), Z, atol=1e-6)
    np.testing.assert_allclose(
        make(normalize=True).transform(photos)[0], Z[0] / np.linalg.norm(Z[0]), rtol=1e-5
    )
    assert make().transform(photo_files).shape == (2, 16)


# --------------------------------------------------------------------------- shared machinery
def test_store_answers_without_building_the_model(photo_files, tmp_path):
    store = tmp_path / "store.sqlite"
    Z = make(store=store).transform(photo_files)
    with sqlite3.connect(store) as connection:
        assert connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 2
    clear_model_cache()
    builds = sum(MODEL_BUILDS.values())
    np.testing.assert_array_equal(make(store=store).transform(photo_files), Z)
    assert sum(MODEL_BUILDS.values()) == builds and not _MODEL_CACHE
    # Another model never shares the tiny model's entries.
    assert make(torchvision_resnet18, store=store).store_namespace() != make().store_namespace()
    close_stores()


def test_bad_files_are_all_reported_and_good_ones_stored(photo_files, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    missing = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        make().transform([photo_files[0], missing])
    store = tmp_path / "store.sqlite"
    with pytest.raises(ValueError, match=r"1 image.*bad\.jpg"):
        make(store=store).transform([photo_files[0], bad, photo_files[1]])
    with sqlite3.connect(store) as connection:
        assert connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 2
    close_stores()


def test_non_finite_features_are_an_error_and_not_stored(tmp_path):
    store = tmp_path / "store.sqlite"
    with pytest.raises(ValueError, match=r"nan_model.*non-finite"):
        make(nan_model, store=store).transform(_noise(3))
    assert (
        not store.exists()
        or sqlite3.connect(store).execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 0
    )
    close_stores()


def test_progress_bar(capsys):
    make(progress=True).transform(_noise(9))
    assert "image embeddings" in capsys.readouterr().err


def test_pickle_and_clone_hold_no_weights(photos):
    embedder = make("efficientnet-lite0")
    payload = pickle.dumps(embedder)
    assert len(payload) < 1000
    assert pickle.loads(payload).get_params() == embedder.get_params()
    assert clone(embedder).get_params() == embedder.get_params()
    function = make(torchvision_resnet18)
    assert len(pickle.dumps(function)) < 1000
    assert pickle.loads(pickle.dumps(function)).model is torchvision_resnet18


# --------------------------------------------------------------------------- text and errors
def test_text_features_need_a_text_tower():
    from skicm.interventions import TextInterventions
    from skicm.zero_shot import ZeroShotClassifier

    embedder = make()
    with pytest.raises(ValueError, match=r"no text tower.*CLIPEmbedder"):
        embedder.encode_text(["a dog"])
    X, y = np.eye(4, 16, dtype=np.float32), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="no text tower"):
        ZeroShotClassifier(encoder=embedder, class_names=["cat", "dog"]).fit(X, y)
    with pytest.raises(ValueError, match="no text tower"):
        TextInterventions(embedder, class_names=["cat", "dog"]).differences(y)


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ("efficientnet-lite", "Did you mean 'efficientnet-lite0'"),
        ("no_such_module_xyz:make", "cannot import module 'no_such_module_xyz'"),
        ("skicm.model_configs:no_such_function", "has no function 'no_such_function'"),
        (not_a_pair, r"not \(torch.nn.Module, preprocess\)"),
        (no_normalize_model, "ToTensor.*Normalize"),
    ],
)
def test_bad_model_specs_say_what_is_expected(model, match):
    with pytest.raises(ValueError, match=match):
        make(model).transform(_noise(1))


def test_grid_search_with_process_workers(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    X, y = _noise(12, seed=2), np.array([0, 1] * 6)
    search = GridSearchCV(
        make_pipeline(make(), LogisticRegression()),
        {"logisticregression__C": [0.1, 1.0]},
        cv=2,
        n_jobs=2,
        error_score="raise",
    )
    search.fit(X, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
