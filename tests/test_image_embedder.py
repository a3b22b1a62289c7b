"""Tests of skicm.ImageEmbedder: any torch image model through the shared encoder machinery."""

from __future__ import annotations

import importlib
import pickle
import sqlite3
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.datasets import load_sample_images

from skicm import ImageEmbedder
from skicm._image_embedder_base import _MODEL_CACHE, MODEL_BUILDS
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


def one_inf_feature_model():
    module, preprocess = _tiny()
    return _OneInfFeature(module), preprocess


def exiting_model():
    sys.exit(0)


def failing_model():
    raise KeyError("weights")


def mapping_model():
    module, preprocess = _tiny()
    return _HuggingFaceStyle(module, keys=("last_hidden_state", "pooler_output")), preprocess


def mapping_model_with_image_embeds():
    module, preprocess = _tiny()
    return _HuggingFaceStyle(module, keys=("pooler_output", "image_embeds")), preprocess


def mapping_model_without_pooled_features():
    module, preprocess = _tiny()
    return _HuggingFaceStyle(module, keys=("last_hidden_state", "logits")), preprocess


def _tiny():
    from skicm.model_configs import tiny_image_model

    return tiny_image_model()


class _Times(torch.nn.Module):
    def __init__(self, module, factor):
        super().__init__()
        self.module, self.factor = module, factor

    def forward(self, x):
        return self.module(x) * self.factor


class _OneInfFeature(torch.nn.Module):
    """The tiny model with feature 3 of every embedding infinite, the other 15 finite."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        out = self.module(x).clone()
        out[:, 3] = float("inf")
        return out


class _HuggingFaceStyle(torch.nn.Module):
    """Returns a dict as Hugging Face vision models do; key k holds the features times k's rank.

    ``last_hidden_state`` is (B, 5, d) tokens, every other key (B, d) features scaled by its
    position in ``keys`` plus 2 (so each key's values are told apart).
    """

    def __init__(self, module, keys):
        super().__init__()
        self.module, self.keys = module, keys

    def forward(self, x):
        features = self.module(x)
        return {
            key: features[:, None, :].repeat(1, 5, 1)
            if key == "last_hidden_state"
            else features * (position + 2)
            for position, key in enumerate(self.keys)
        }


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


def _import_fresh(module_file, name, source):
    """Write ``source`` to ``module_file`` and import it anew (no stale bytecode)."""
    module_file.write_text(source)
    importlib.invalidate_caches()
    if name in sys.modules:
        return importlib.reload(sys.modules[name])
    return importlib.import_module(name)


def test_an_edited_function_object_gets_a_new_namespace_and_new_embeddings(tmp_path, monkeypatch):
    """A function given as an object is identified by its file and code, not by its name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.delitem(sys.modules, "edited_encoders", raising=False)
    source = textwrap.dedent(
        """
        from skicm.model_configs import tiny_image_model

        def encoder():
            module, preprocess = tiny_image_model()
            module[0].bias.data.add_({shift})
            return module, preprocess
        """
    )
    module_file = tmp_path / "edited_encoders.py"
    store = tmp_path / "store.sqlite"
    images = _noise(2)
    old = _import_fresh(module_file, "edited_encoders", source.format(shift="0.0")).encoder
    embedder = make(old, store=store)
    Z = embedder.transform(images)
    np.testing.assert_allclose(Z, make(TINY).transform(images), atol=1e-6)
    assert make(old).store_namespace() == embedder.store_namespace()  # stable

    new = _import_fresh(module_file, "edited_encoders", source.format(shift="0.5")).encoder
    assert new is not old and (new.__module__, new.__qualname__) == (
        old.__module__,
        old.__qualname__,
    )
    edited = make(new, store=store)
    assert edited.store_namespace() != embedder.store_namespace()
    # The store serves the edited function its own embeddings, not the old version's.
    Z_edited = edited.transform(images)
    assert np.abs(Z_edited - Z).max() > 0.1
    np.testing.assert_array_equal(Z_edited, make(new).transform(images))  # without a store
    close_stores()


def test_functions_without_a_source_file_are_told_apart_by_their_code():
    def compiled(body):
        namespace = {}
        code = "def encoder():\n    from skicm.model_configs import tiny_image_model\n"
        exec(compile(code + body, "<notebook cell>", "exec"), namespace)
        return namespace["encoder"]

    plain = compiled("    return tiny_image_model()\n")
    scaled = compiled("    m, p = tiny_image_model()\n    return m.half().float(), p\n")
    assert (
        make(plain).store_namespace()
        == make(compiled("    return tiny_image_model()\n")).store_namespace()
    )
    assert make(plain).store_namespace() != make(scaled).store_namespace()


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
    # A missing file and a corrupt file in one call: one error names both.
    with pytest.raises(FileNotFoundError) as raised:
        make(store=store).transform([missing, photo_files[0], bad])
    message = str(raised.value)
    assert "1 image file(s) not found: " in message and "missing.png" in message
    assert "1 image(s) could not be decoded: " in message and "bad.jpg" in message
    assert "photo0.jpg" not in message
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


def test_one_infinite_feature_is_an_error_and_nothing_is_stored(tmp_path):
    """An embedding with a single non-finite feature out of 16 is as unusable as an all-NaN one."""
    store = tmp_path / "store.sqlite"
    with pytest.raises(ValueError, match=r"one_inf_feature_model.*non-finite.*for 3 image"):
        make(one_inf_feature_model, store=store).transform(_noise(3))
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
        (
            mapping_model_without_pooled_features,
            r"mapping_model_without_pooled_features.*keys \['last_hidden_state', 'logits'\]",
        ),
    ],
)
def test_bad_model_specs_say_what_is_expected(model, match):
    with pytest.raises(ValueError, match=match):
        make(model).transform(_noise(1))


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (exiting_model, r"image model '[\w.]+:exiting_model' called sys.exit\(0\)"),
        (failing_model, r"image model '[\w.]+:failing_model' failed: KeyError: 'weights'"),
    ],
)
def test_a_model_function_that_fails_or_exits_is_an_error_naming_it(model, match):
    with pytest.raises(RuntimeError, match=match):
        make(model).transform(_noise(1))


def test_mapping_outputs_give_image_embeds_else_pooler_output():
    images = _noise(2)
    Z = make().transform(images)
    # pooler_output is keys[1]: features * 3; image_embeds is keys[1] of the other: also * 3,
    # while its pooler_output (keys[0]) is features * 2.
    np.testing.assert_allclose(make(mapping_model).transform(images), 3 * Z, rtol=1e-5)
    np.testing.assert_allclose(
        make(mapping_model_with_image_embeds).transform(images), 3 * Z, rtol=1e-5
    )


def test_cli_image_model_that_exits_is_a_non_zero_exit_with_nothing_written(
    tmp_path, monkeypatch, capsys
):
    from skicm.cli import main

    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("exiting_encoders", "exiting_module"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    (tmp_path / "exiting_encoders.py").write_text("import sys\n\ndef encoder():\n    sys.exit(0)\n")
    (tmp_path / "exiting_module.py").write_text("import sys\n\nsys.exit(0)\n")
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(_noise(1)[0]).save(images / "0.png")
    out = tmp_path / "shards"
    argv = ["embed", str(images), "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main([*argv, "--image-model", "exiting_encoders:encoder"]) == 2
    error = capsys.readouterr().err
    assert "image model 'exiting_encoders:encoder' called sys.exit(0)" in error
    assert not out.exists() or not list(out.rglob("*.parquet"))
    # A module that exits as it is imported: caught when the options are checked.
    assert main([*argv, "--image-model", "exiting_module:encoder"]) == 2
    error = capsys.readouterr().err
    assert "importing module 'exiting_module' called sys.exit(0)" in error
    assert not out.exists() or not list(out.rglob("*.parquet"))


def test_process_workers_build_the_same_model():
    """Random weights are seeded: a fresh interpreter (a loky worker, as GridSearchCV(n_jobs=2)
    uses) rebuilds the model from the pickled spec and gives the same embeddings."""
    from joblib import Parallel, delayed

    X = _noise(3, seed=2)
    # A spec string and a function of this module (pickled by reference: the worker imports
    # it). A bound method pickles as its object and name.
    for embedder in (make(), make(mapping_model)):
        reference = embedder.transform(X)
        for Z_worker in Parallel(n_jobs=2, backend="loky")(
            delayed(embedder.transform)(X) for _ in "ab"
        ):
            # float32 (eps 1.2e-7); the worker may run with another number of threads, and a
            # reduction split differently sums in another order: the largest one here has 72
            # terms (second convolution), so a feature moves by at most 72 eps of the sum of
            # its terms' magnitudes (about 1e-5 relative; in practice not at all).
            np.testing.assert_allclose(Z_worker, reference, rtol=1e-5, atol=1e-6)
        assert reference.shape == (3, 16)
