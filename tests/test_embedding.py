"""Tests of skicm.embedding.CLIPEmbedder on a tiny random-weight open_clip model (no downloads)."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.datasets import load_sample_images
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import check_is_fitted

from skicm.embedding import (
    _EXPECTED_FAILED_CHECKS,
    CLIPEmbedder,
    _common_check_instance,
    _load_model,
    clear_model_cache,
    clear_text_cache,
)
from skicm.store import close_stores, default_memory_store

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

REPO_ROOT = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def make_embedder(tiny_clip_name):
    """Embedder on the tiny model; no store unless asked, so tests do not see each other."""

    def make(**params):
        defaults = dict(
            model_name=tiny_clip_name,
            pretrained=None,
            device="cpu",
            batch_size=4,
            num_workers=0,
            store=None,
            progress=False,
        )
        return CLIPEmbedder(**{**defaults, **params})

    return make


@contextlib.contextmanager
def count_vision_images(embedder):
    """Count the images that go through the image tower of ``embedder``'s cached model."""
    model = _load_model(embedder.model_name, embedder.pretrained, embedder.device).model
    seen = []
    handle = model.visual.register_forward_hook(
        lambda module, inputs, output: seen.append(inputs[0].shape[0])
    )
    counter = type("Counter", (), {"total": property(lambda self: sum(seen))})()
    try:
        yield counter
    finally:
        handle.remove()


@pytest.fixture(scope="module")
def photos():
    """The two real photos shipped with scikit-learn, cropped to 500x375 like the benchmark."""
    return [image[:375, :500].copy() for image in load_sample_images().images]


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, photos):
    """Real image files on disk: PNG (lossless, so equal to the arrays) and JPEG."""
    folder = tmp_path_factory.mktemp("images")
    files = {}
    for i, photo in enumerate(photos):
        files[f"png{i}"] = folder / f"photo{i}.png"
        Image.fromarray(photo).save(files[f"png{i}"])
        files[f"jpg{i}"] = folder / f"photo{i}.jpg"
        Image.fromarray(photo).save(files[f"jpg{i}"], quality=90)
    return files


def _noise_images(n, seed=0, shape=(40, 56, 3)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


# --------------------------------------------------------------------------- input kinds
def test_every_input_kind_gives_the_same_embedding(make_embedder, photos, image_files):
    embedder = make_embedder()
    pil = [Image.fromarray(p) for p in photos]
    from_arrays = embedder.transform(photos)
    assert from_arrays.shape == (2, 32)
    assert from_arrays.dtype == np.float32
    variants = {
        "str paths": [str(image_files["png0"]), str(image_files["png1"])],
        "Path objects": [image_files["png0"], image_files["png1"]],
        "PIL images": pil,
        "stacked array": np.stack(photos),
        "tuple": tuple(photos),
        "object array": np.array([str(image_files["png0"]), str(image_files["png1"])]),
        "(n, 1) column": np.array([[str(image_files["png0"])], [str(image_files["png1"])]]),
        "Fortran-ordered arrays": [np.asfortranarray(p) for p in photos],
        "mixed": [image_files["png0"], pil[1]],
    }
    for name, X in variants.items():
        np.testing.assert_allclose(embedder.transform(X), from_arrays, atol=1e-6, err_msg=name)


def test_pandas_inputs_and_pandas_output(make_embedder, image_files):
    pd = pytest.importorskip("pandas")
    paths = [str(image_files["png0"]), str(image_files["png1"])]
    frame = pd.DataFrame({"path": paths}, index=["a", "b"])
    embedder = make_embedder().set_output(transform="pandas")
    out = embedder.fit_transform(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.index) == ["a", "b"]
    assert list(out.columns) == [f"clipembedder{i}" for i in range(32)]
    np.testing.assert_allclose(out.to_numpy(), make_embedder().transform(frame["path"]))
    with pytest.raises(ValueError, match="exactly one column"):
        embedder.transform(frame.assign(other=1))


def test_column_transformer_on_a_column_of_paths(make_embedder, image_files):
    pd = pytest.importorskip("pandas")
    from sklearn.compose import ColumnTransformer

    frame = pd.DataFrame({"path": [str(image_files["png0"])] * 3, "age": [1.0, 2.0, 3.0]})
    columns = ColumnTransformer([("image", make_embedder(), ["path"])], remainder="passthrough")
    out = columns.fit_transform(frame)
    assert out.shape == (3, 33)
    np.testing.assert_array_equal(out[:, -1], [1.0, 2.0, 3.0])
    assert columns.get_feature_names_out()[0] == "image__clipembedder0"


def test_grayscale_rgba_and_16_bit_images_are_converted_to_rgb(make_embedder, tmp_path):
    embedder = make_embedder()
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (30, 50), dtype=np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    reference = embedder.transform([rgb])

    gray16 = gray.astype(np.uint16) << 8 | rng.integers(0, 256, gray.shape, dtype=np.uint16)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")  # a real 16-bit PNG
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    Image.fromarray(gray).save(tmp_path / "gray8.png")
    rgba = np.dstack([rgb, rng.integers(0, 256, gray.shape, dtype=np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    same_pixels = {
        "(H, W)": gray,
        "(H, W, 1)": gray[:, :, None],
        "RGBA array (alpha dropped)": rgba,
        "uint16 array": gray16,
        "16-bit PNG file": tmp_path / "gray16.png",
        "8-bit grayscale PNG file": tmp_path / "gray8.png",
        "RGBA PNG file": tmp_path / "rgba.png",
        "PIL L image": Image.fromarray(gray),
        "PIL palette image": Image.fromarray(gray).convert("P"),
        "PIL I;16 image": Image.fromarray(gray16),
    }
    for name, image in same_pixels.items():
        np.testing.assert_allclose(embedder.transform([image]), reference, atol=1e-6, err_msg=name)
    # A stack of grayscale images, as (N, H, W).
    np.testing.assert_allclose(
        embedder.transform(np.stack([gray, gray])), np.vstack([reference] * 2)
    )


def test_images_of_different_sizes_in_one_batch(make_embedder):
    images = [
        np.full((h, w, 3), v, dtype=np.uint8)
        for h, w, v in [(10, 10, 0), (300, 20, 80), (33, 700, 160)]
    ]
    embedder = make_embedder(batch_size=3)
    Z = embedder.transform(images)
    assert Z.shape == (3, 32)
    for i, image in enumerate(images):
        np.testing.assert_allclose(embedder.transform([image])[0], Z[i], atol=1e-5)


def test_matches_open_clip_reference_encoding(make_embedder, tiny_clip_name, photos):
    """Our batched uint8 pipeline gives what open_clip's own preprocess + encode_image give."""
    loaded = _load_model(tiny_clip_name, None, "cpu")
    model, _, preprocess = open_clip.create_model_and_transforms(tiny_clip_name, pretrained=None)
    model.load_state_dict(loaded.model.state_dict())
    model.eval()
    with torch.no_grad():
        batch = torch.stack([preprocess(Image.fromarray(p)) for p in photos])
        expected = model.encode_image(batch).numpy()
    Z = make_embedder(normalize=False, decoder="pil").transform(photos)
    np.testing.assert_allclose(Z, expected, rtol=1e-4, atol=1e-5)
    Zn = make_embedder(decoder="pil").transform(photos)
    unit = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(Zn, unit, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- output contract
def test_rows_follow_input_order_and_do_not_depend_on_batching(make_embedder):
    images = _noise_images(7)
    Z = make_embedder(batch_size=3).transform(images)
    assert Z.shape == (7, 32) and Z.dtype == np.float32
    np.testing.assert_allclose(make_embedder().transform(images[::-1]), Z[::-1], atol=1e-5)
    np.testing.assert_allclose(
        make_embedder(batch_size=1).transform(images[2:5]), Z[2:5], atol=1e-5
    )
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-5)


def test_deterministic_across_instances_and_model_reloads(make_embedder):
    images = _noise_images(3, seed=5)
    first = make_embedder().transform(images)
    np.testing.assert_array_equal(make_embedder().transform(images), first)
    clear_model_cache()  # random weights are seeded: a fresh load builds the same model
    np.testing.assert_array_equal(make_embedder().transform(images), first)


def test_fit_is_stateless(make_embedder):
    images = _noise_images(3, seed=6)
    embedder = make_embedder()
    before = dict(embedder.__dict__)
    Z = embedder.transform(images)  # works without fit
    check_is_fitted(embedder)
    assert embedder.fit(images) is embedder
    assert embedder.__dict__ == before  # neither fit nor transform adds state
    np.testing.assert_array_equal(embedder.fit_transform(images), Z)
    np.testing.assert_array_equal(embedder.fit(_noise_images(2, seed=9)).transform(images), Z)


def test_feature_names_and_embedding_width(make_embedder):
    embedder = make_embedder()
    assert embedder.embed_dim_ == 32
    names = embedder.get_feature_names_out()
    assert names.shape == (32,) and names[0] == "clipembedder0" and names[-1] == "clipembedder31"


def test_normalize_false_keeps_raw_embeddings(make_embedder):
    images = _noise_images(3, seed=7)
    raw = make_embedder(normalize=False).transform(images)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    unit = make_embedder().transform(images)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5)


def test_encode_text(make_embedder, tiny_clip_name):
    embedder = make_embedder(batch_size=2)
    texts = ["a photo of a dog", "a photo of a cat", "a sketch of a dog"]
    T = embedder.encode_text(texts)
    assert T.shape == (3, 32) and T.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(T, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.encode_text(texts[1]), T[1:2], atol=1e-6)
    loaded = _load_model(tiny_clip_name, None, "cpu")
    with torch.no_grad():
        raw = loaded.model.encode_text(open_clip.get_tokenizer(tiny_clip_name)(texts)).numpy()
    # Batches of 2 (cached) vs. one batch of 3: float noise of ~1e-6 on entries near zero.
    np.testing.assert_allclose(
        make_embedder(normalize=False).encode_text(texts), raw, rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError, match="empty"):
        embedder.encode_text([])
    with pytest.raises(ValueError, match="strings"):
        embedder.encode_text(["ok", 3])


def test_encode_text_encodes_only_texts_not_seen_before(make_embedder, tiny_clip_name):
    clear_text_cache()
    embedder = make_embedder(batch_size=2)
    model = _load_model(tiny_clip_name, None, "cpu").model
    encoded = []
    handle = model.token_embedding.register_forward_hook(
        lambda module, inputs, output: encoded.extend(inputs[0].tolist())
    )
    tokenizer = open_clip.get_tokenizer(tiny_clip_name)
    seen = ["a photo of a dog", "a photo of a cat"]
    unseen = ["a sketch of a dog", "a toy cat", "art of a dog"]
    mixed = [unseen[0], seen[1], unseen[1], seen[0], unseen[0], unseen[2], seen[1]]
    try:
        first = embedder.encode_text(seen)
        encoded.clear()
        T = embedder.encode_text(mixed)
        # Only the unseen texts went through the text tower, each once, in order of first use.
        assert encoded == tokenizer(unseen).tolist()
        encoded.clear()
        np.testing.assert_array_equal(clone(embedder).encode_text(mixed), T)
        assert encoded == []
    finally:
        handle.remove()
        clear_text_cache()
    assert T.shape == (len(mixed), 32) and T.dtype == np.float32
    np.testing.assert_array_equal(T[[1, 3]], first[[1, 0]])
    uncached = make_embedder(batch_size=3).encode_text(mixed)  # cache cleared: all encoded
    np.testing.assert_allclose(T, uncached, rtol=1e-5, atol=1e-6)
    raw = make_embedder(normalize=False).encode_text(mixed)  # raw vectors are cached
    np.testing.assert_allclose(T, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


def test_progress_bar_can_be_switched_off(make_embedder, capsys):
    images = _noise_images(9, seed=8)
    make_embedder(progress=True).transform(images)
    assert "CLIP image embeddings" in capsys.readouterr().err
    make_embedder(progress=False).transform(images)
    assert capsys.readouterr().err == ""


def test_dataloader_workers_give_the_same_result(make_embedder, image_files):
    files = [image_files[k] for k in ("jpg0", "png1", "jpg1", "png0")] * 2
    in_process = make_embedder(num_workers=0, batch_size=2).transform(files)
    with_workers = make_embedder(num_workers=2, batch_size=2).transform(files)
    np.testing.assert_array_equal(with_workers, in_process)


def test_in_process_decoding_threads_give_every_image_once(make_embedder, image_files, tmp_path):
    from skicm.image_loading import ImageDecodingDataset, decode_in_batches

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    files = [str(image_files[name]) for name in ("jpg0", "png1", "jpg1", "png0")] * 2 + [str(bad)]
    transform = _load_model(make_embedder().model_name, None, "cpu").pil_transform
    dataset = ImageDecodingDataset(files, transform, mode="tensor")
    serial = list(decode_in_batches(dataset, batch_size=4, n_threads=1))
    threaded = list(decode_in_batches(dataset, batch_size=4, n_threads=3))
    assert len(serial) == len(threaded) == 3
    for (idx_a, px_a, _, _, err_a), (idx_b, px_b, _, _, err_b) in zip(serial, threaded):
        assert sorted(idx_a) == sorted(idx_b)
        if idx_a:
            order_a, order_b = np.argsort(idx_a), np.argsort(idx_b)
            np.testing.assert_array_equal(px_a.numpy()[order_a], px_b.numpy()[order_b])
        assert [i for i, _ in err_a] == [i for i, _ in err_b]
    assert [i for *_, errors in threaded for i, _ in errors] == [8]
    # On the CPU, "auto" decodes in this process: workers would compete with the forward pass.
    assert make_embedder(num_workers="auto")._n_workers(1000, torch.device("cpu")) == 0
    assert make_embedder(num_workers=2)._n_workers(1000, torch.device("cpu")) == 2


def test_torchvision_decoder_agrees_with_pillow(make_embedder, image_files, tmp_path):
    files = [image_files["jpg0"], image_files["png1"], image_files["jpg1"]]
    # decode="full": the arrays below are full decodes (the tiny model's 32-pixel input lets
    # decode="reduced" decode these 640x427 JPEG files at a quarter of their size).
    pil = make_embedder(decoder="pil", decode="full").transform(files)
    tv = make_embedder(decoder="torchvision", decode="full").transform(files)
    assert np.all(np.sum(tv * pil, axis=1) > 0.995)  # resampling noise only
    # Within one decoder every input kind gives the same embedding.
    arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    np.testing.assert_allclose(
        make_embedder(decoder="torchvision").transform(arrays), tv, atol=1e-6
    )
    np.testing.assert_allclose(make_embedder(decoder="pil").transform(arrays), pil, atol=1e-6)
    # With the reduced decode the JPEG files decode to fewer pixels, the PNG file as before.
    reduced = make_embedder(decoder="torchvision").transform(files)
    np.testing.assert_allclose(reduced[1], tv[1], atol=1e-6)
    assert np.all(np.sum(reduced * tv, axis=1) > 0.99)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(image_files["jpg0"].read_bytes()[:400])
    with pytest.raises(ValueError, match=r"bad\.jpg"):
        make_embedder(decoder="torchvision").transform([image_files["jpg0"], bad])


# --------------------------------------------------------------------------- clone, pickle, cache
def test_clone_and_pickle_hold_parameters_only(make_embedder, photos):
    embedder = make_embedder(store="memory")
    Z = embedder.transform(photos)
    payload = pickle.dumps(embedder)
    assert len(payload) < 2000  # parameters, never weights
    restored = pickle.loads(payload)
    assert restored.get_params() == embedder.get_params()
    np.testing.assert_array_equal(restored.transform(photos), Z)
    cloned = clone(embedder)
    assert cloned.get_params() == embedder.get_params()
    cloned.set_params(batch_size=1, normalize=False)
    assert cloned.batch_size == 1 and embedder.batch_size == 4
    # Clones share the process-level model.
    assert _load_model(cloned.model_name, None, "cpu") is _load_model(
        embedder.model_name, None, "cpu"
    )


def test_grid_search_encodes_each_image_once(make_embedder):
    from sklearn import config_context
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import Pipeline

    from skicm.projection import InvariantProjector

    rng = np.random.default_rng(3)
    distinct = _noise_images(24, seed=11)
    X = distinct + distinct[:6]  # repeated images are encoded once too
    y = np.array([i % 2 for i in range(24)] + [i % 2 for i in range(6)])
    groups = rng.integers(0, 3, len(X))
    default_memory_store().clear()
    embedder = make_embedder(store="memory")
    with config_context(enable_metadata_routing=True):
        pipeline = Pipeline(
            [
                ("embed", embedder),
                ("project", InvariantProjector(n_components=4).set_fit_request(groups=True)),
                ("classify", LogisticRegression()),
            ]
        )
        search = GridSearchCV(
            pipeline,
            {"project__n_components": [4, 8], "classify__C": [0.1, 1.0]},
            cv=GroupKFold(n_splits=3),
        )
        with count_vision_images(embedder) as counted, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            search.fit(X, y, groups=groups)
            search.predict(X)
    # 4 candidates x 3 folds + refit + predict, and still one pass per distinct image.
    assert counted.total == 24
    assert search.best_estimator_.predict(X).shape == (30,)


# --------------------------------------------------------------------------- on-disk store
def test_sqlite_store_is_reused_by_another_embedder(make_embedder, image_files, tmp_path):
    files = [image_files["png0"], image_files["jpg1"]]
    path = tmp_path / "embeddings.sqlite"
    first = make_embedder(store=str(path))
    with count_vision_images(first) as counted:
        Z = first.transform(files)
        assert counted.total == 2
        np.testing.assert_array_equal(make_embedder(store=path).transform(files), Z)
        assert counted.total == 2
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 2
    # A modified file is a different image.
    os.utime(files[0], ns=(1, 1))
    with count_vision_images(first) as counted:
        first.transform(files)
        assert counted.total == 1


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from skicm.embedding import CLIPEmbedder, _load_model
    from skicm.model_configs import register_tiny_clip

    folder, store = sys.argv[1], sys.argv[2]
    files = sorted(Path(folder).glob("*.png"))
    embedder = CLIPEmbedder(register_tiny_clip(), pretrained=None, device="cpu", batch_size=8,
                            num_workers=0, store=store, progress=False)

    def slow_down(module, inputs, output):
        print("batch", flush=True)
        time.sleep(0.3)

    _load_model(embedder.model_name, None, "cpu").model.visual.register_forward_hook(slow_down)
    embedder.transform(files)
    print("finished", flush=True)
    """
)


def test_sqlite_store_survives_a_killed_process(make_embedder, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i, image in enumerate(_noise_images(120, seed=21, shape=(24, 24, 3))):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    store = tmp_path / "store.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(folder), str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        for _ in range(4):
            assert child.stdout.readline().strip() == "batch"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    with sqlite3.connect(store) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = connection.execute("SELECT key, length(vector) FROM embeddings").fetchall()
    # Whole batches only, each vector complete.
    assert 8 <= len(rows) < 120 and len(rows) % 8 == 0
    assert {length for _, length in rows} == {32 * 4}

    files = sorted(folder.glob("*.png"))
    embedder = make_embedder(store=store, batch_size=8)
    with count_vision_images(embedder) as counted:
        Z = embedder.transform(files)
    assert counted.total == 120 - len(rows)  # resumed: only what was missing
    np.testing.assert_allclose(Z, make_embedder().transform(files), atol=1e-6)


# --------------------------------------------------------------------------- bad input
def test_unreadable_files_are_all_reported_and_good_ones_stored(
    make_embedder, image_files, tmp_path
):
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(image_files["jpg0"].read_bytes()[:2000])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(os.urandom(5000))
    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all")
    store = tmp_path / "store.sqlite"
    files = [image_files["png0"], truncated, garbage, image_files["jpg1"], text]
    embedder = make_embedder(store=store, batch_size=2)
    with pytest.raises(ValueError, match="3 image") as raised:
        embedder.transform(files)
    for name in ("truncated.jpg", "garbage.png", "notes.jpg"):
        assert name in str(raised.value)
    assert "photo0.png" not in str(raised.value)
    with sqlite3.connect(store) as connection:
        assert connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 2


def test_missing_and_corrupt_files_are_reported_together_and_good_ones_stored(
    make_embedder, image_files, tmp_path
):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG not a png")
    files = [image_files["png0"], tmp_path / "absent1.jpg", garbage, tmp_path / "absent2.png"]
    store = tmp_path / "store.sqlite"
    embedder = make_embedder(store=store)
    with count_vision_images(embedder) as counted, pytest.raises(FileNotFoundError) as raised:
        embedder.transform([*files, tmp_path])
    assert counted.total == 1  # only the good image, once
    message = str(raised.value)
    assert message.startswith("3 image file(s) not found: ")
    for name in ("absent1.jpg", "absent2.png", "not a regular file", "garbage.png"):
        assert name in message
    assert "1 image(s) could not be decoded" in message and "photo0.png" not in message
    assert _rows(store) == 1
    close_stores()


@pytest.mark.parametrize(
    ("X", "match"),
    [
        ([], "empty"),
        (np.zeros((0, 8, 8, 3), dtype=np.uint8), "empty"),
        (None, "None"),
        ("photo.jpg", "single image"),
        (np.zeros((20, 3)), "2-D numeric array"),
        (np.zeros(5), "1-D numeric array"),
        (np.zeros((8, 8, 3), dtype=np.uint8), "single colour image"),
        ([np.zeros((8, 8, 3))], r"X\[0\].*float64"),
        ([np.zeros((8, 8, 3), dtype=np.uint8), np.zeros((8, 8, 5), dtype=np.uint8)], r"X\[1\]"),
        ([np.zeros((8, 8, 3), dtype=np.uint8), 3, b"a", {"x": 1}], r"3 item.*X\[1\].*X\[3\]"),
        ([np.zeros((0, 8), dtype=np.uint8)], "no pixels"),
    ],
)
def test_inputs_that_are_not_images(make_embedder, X, match, tmp_path):
    if isinstance(X, str):
        X = tmp_path / X
    with pytest.raises(ValueError, match=match):
        make_embedder().transform(X)


def test_single_pil_image_and_sparse_input_are_rejected(make_embedder):
    scipy_sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(ValueError, match="single image"):
        make_embedder().transform(Image.new("RGB", (8, 8)))
    with pytest.raises(TypeError, match="sparse"):
        make_embedder().fit(scipy_sparse.csr_array(np.eye(3)))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"precision": "fp8"}, "precision"),
        ({"num_workers": -1}, "num_workers"),
        ({"decoder": "gpu"}, "decoder"),
        ({"normalize": "yes"}, "normalize"),
    ],
)
def test_invalid_parameters(make_embedder, params, match):
    embedder = make_embedder(**params)
    with pytest.raises(InvalidParameterError, match=match):
        embedder.fit(_noise_images(1))
    with pytest.raises(InvalidParameterError, match=match):
        embedder.transform(_noise_images(1))


def test_unknown_model_and_device(make_embedder):
    with pytest.raises(ValueError, match="no-such-model"):
        make_embedder(model_name="no-such-model").transform(_noise_images(1))
    with pytest.raises(ValueError, match="device="):
        make_embedder(device="abacus").transform(_noise_images(1))


def test_missing_checkpoint_and_unknown_tag(make_embedder, tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        make_embedder(pretrained=str(missing)).transform(_noise_images(1))
    with pytest.raises(ValueError, match="not-a-tag"):
        make_embedder(pretrained="not-a-tag").transform(_noise_images(1))


_OFFLINE_MESSAGE_PARTS = (
    "open_clip_pytorch_model.bin",  # the file to fetch
    "pretrained='/path/to/open_clip_pytorch_model.bin'",  # Python
    "--pretrained /path/to/open_clip_pytorch_model.bin",  # command line
    "local-dir:",
    "open_clip_config.json",
    '"model_cfg"',  # the local-dir: config format
    "HF_HUB_OFFLINE",
)


def _assert_fails_fast_offline(caplog):
    embedder = CLIPEmbedder("ViT-B-32", pretrained="openai", device="cpu")
    with caplog.at_level("WARNING"), pytest.raises(OSError) as raised:
        embedder.transform(_noise_images(1))
    message = str(raised.value)
    for part in _OFFLINE_MESSAGE_PARTS:
        assert part in message, part
    assert "ViT-B-32" in message and "'openai'" in message
    # huggingface_hub's retry loop (a minute of "thrown while requesting" warnings) never ran.
    assert not [r for r in caplog.records if "thrown while requesting" in r.getMessage()]


def test_offline_hub_weights_fail_at_once_with_one_message(monkeypatch, caplog):
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # guarantees no network access
    _assert_fails_fast_offline(caplog)


def test_unreachable_hub_fails_after_one_connection_attempt(monkeypatch, caplog):
    from skicm import embedding

    hub_constants = pytest.importorskip("huggingface_hub.constants")
    # A closed local port: no network access on any machine, the connection is refused.
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(embedding, "_REACHABILITY", {})
    _assert_fails_fast_offline(caplog)


def test_weights_that_cannot_be_downloaded_without_network_here(monkeypatch, caplog):
    """The machine as it is (this test machine has no network): one attempt, then the message."""
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        pass
    else:
        pytest.skip("huggingface.co is reachable: the weights would be downloaded")
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    _assert_fails_fast_offline(caplog)


class _NotATensor:
    """Pickled into a checkpoint: ``torch.load(weights_only=True)`` must refuse it."""


def test_local_checkpoint_is_loaded(make_embedder, tiny_clip_name, photos, tmp_path):
    model, _, _ = open_clip.create_model_and_transforms(tiny_clip_name, pretrained=None)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(123)
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    checkpoint = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    Z = make_embedder(pretrained=str(checkpoint), normalize=False).transform(photos)
    loaded = _load_model(tiny_clip_name, str(checkpoint), "cpu")
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor)
    assert not np.allclose(Z, make_embedder(normalize=False).transform(photos), atol=1e-3)
    assert pickle.loads(pickle.dumps(make_embedder(pretrained=checkpoint))).pretrained == checkpoint

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"state_dict": model.state_dict(), "extra": _NotATensor()}, unsafe)
    with pytest.raises(ValueError, match=r"unsafe\.pt"):
        make_embedder(pretrained=str(unsafe)).transform(photos)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=r"corrupt\.pt"):
        make_embedder(pretrained=str(corrupt)).transform(photos)


def _register_arch(name, tmp_path, vision_layers):
    from skicm.model_configs import TINY_CLIP_CONFIG

    config = json.loads(json.dumps(TINY_CLIP_CONFIG))
    config["vision_cfg"]["layers"] = vision_layers
    path = tmp_path / f"{name}-{vision_layers}" / f"{name}.json"
    path.parent.mkdir()
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)


def test_random_weights_of_another_config_under_the_same_name_are_not_shared(
    make_embedder, tmp_path
):
    name = f"skicm-test-arch-{os.getpid()}"
    store = tmp_path / "store.sqlite"
    images = _noise_images(2)
    _register_arch(name, tmp_path, 2)
    Z2 = make_embedder(model_name=name, store=store).transform(images)
    _register_arch(name, tmp_path, 3)  # same name, another architecture
    Z3 = make_embedder(model_name=name, store=store).transform(images)
    np.testing.assert_allclose(Z3, make_embedder(model_name=name).transform(images), atol=1e-6)
    assert not np.allclose(Z2, Z3, atol=1e-3)
    close_stores()


def test_local_dir_model_with_new_weights_is_not_served_old_embeddings(
    make_embedder, tiny_clip_name, tmp_path
):
    from skicm.model_configs import TINY_CLIP_CONFIG

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": {}})
    )

    def save_weights(seed):
        torch.manual_seed(seed)
        model = open_clip.create_model(tiny_clip_name, pretrained=None)
        torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")

    store, images = tmp_path / "store.sqlite", _noise_images(1)
    name = f"local-dir:{folder}"
    save_weights(1)
    Z1 = make_embedder(model_name=name, store=store).transform(images)
    save_weights(2)  # re-trained in place: same folder, same file name
    Z2 = make_embedder(model_name=name, store=store).transform(images)
    assert not np.allclose(Z1, Z2, atol=1e-3)
    np.testing.assert_allclose(Z2, make_embedder(model_name=name).transform(images), atol=1e-6)
    with pytest.raises(ValueError, match="pretrained="):
        make_embedder(model_name=name, pretrained=tmp_path / "finetuned.pt").transform(images)
    with pytest.raises(ValueError, match="pretrained="):
        make_embedder(model_name="hf-hub:org/repo", pretrained="openai").transform(images)
    close_stores()


# --------------------------------------------------------------------------- sklearn checks
def test_common_checks_pass_except_the_listed_ones():
    """The checks listed in _EXPECTED_FAILED_CHECKS fail, with a ValueError, all others pass."""
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(_common_check_instance(), on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    assert failed == set(_EXPECTED_FAILED_CHECKS)
    assert sum(r["status"] == "passed" for r in results) >= 20
    for r in results:
        if r["status"] == "failed":
            assert isinstance(r["exception"], ValueError), r["check_name"]


# --------------------------------------------------------------------------- CUDA
@needs_cuda
def test_cuda_autocast_returns_float32_close_to_fp32(make_embedder, photos):
    fp32 = make_embedder().transform(photos)
    for precision in ("auto", "bf16", "fp16"):
        Z = make_embedder(device="cuda", precision=precision).transform(photos)
        assert Z.dtype == np.float32
        assert np.all(np.sum(Z * fp32, axis=1) > 0.99), precision


@needs_cuda
def test_cuda_jpeg_decoding_agrees_with_pillow(make_embedder, image_files):
    files = [image_files["jpg0"], image_files["png1"], image_files["jpg1"]] * 3
    pil = make_embedder(decoder="pil", precision="fp32").transform(files)
    gpu = make_embedder(device="cuda", decoder="auto", precision="fp32", num_workers=2)
    assert np.all(np.sum(gpu.transform(files) * pil, axis=1) > 0.995)


# --------------------------------------------------------------------------- weights and identity
def _tiny_checkpoint(tiny_clip_name, path, seed=1, poison=None):
    torch.manual_seed(seed)
    model = open_clip.create_model(tiny_clip_name, pretrained=None)
    state = model.state_dict()
    if poison is not None:
        state[poison] = torch.full_like(state[poison], float("nan"))
    torch.save(state, path)
    return path


def _rows(store_path):
    if not Path(store_path).exists():
        return 0
    with sqlite3.connect(store_path) as connection:
        return connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]


def test_nan_checkpoint_is_an_error_naming_it_and_nothing_is_stored(
    make_embedder, tiny_clip_name, tmp_path
):
    checkpoint = _tiny_checkpoint(
        tiny_clip_name, tmp_path / "nan.pt", poison="visual.transformer.resblocks.0.mlp.c_fc.weight"
    )
    store = tmp_path / "store.sqlite"
    embedder = make_embedder(pretrained=str(checkpoint), store=store)
    with pytest.raises(ValueError, match=r"nan\.pt.*non-finite") as raised:
        embedder.transform(_noise_images(3))
    assert "c_fc.weight" in str(raised.value)
    with pytest.raises(ValueError, match=r"nan\.pt"):
        embedder.encode_text(["a dog"])
    assert _rows(store) == 0
    close_stores()


def test_non_finite_forward_pass_is_never_stored_or_returned(make_embedder, tmp_path):
    """Finite weights whose forward pass overflows: the output check catches it."""
    store = tmp_path / "store.sqlite"
    embedder = make_embedder(store=store, batch_size=2)
    model = _load_model(embedder.model_name, None, "cpu").model
    handle = model.visual.register_forward_hook(lambda module, inputs, output: output * np.inf)
    try:
        with pytest.raises(ValueError, match="non-finite embeddings") as raised:
            embedder.transform(_noise_images(3))
    finally:
        handle.remove()
    assert "skicm-tiny-clip" in str(raised.value)
    assert _rows(store) == 0
    close_stores()


def test_model_messages_suggest_names_and_local_dir(make_embedder, tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'ViT-B-32'") as raised:
        make_embedder(model_name="vit-b-23").transform(_noise_images(1))
    assert "(model_name=)" not in str(raised.value)
    with pytest.raises(ValueError, match="Did you mean 'openai'"):
        CLIPEmbedder("ViT-B-32", pretrained="opneai", device="cpu").store_namespace()
    folder = tmp_path / "downloaded-model"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a folder") as raised:
        make_embedder(pretrained=folder).transform(_noise_images(1))
    assert f"local-dir:{folder}" in str(raised.value)
    assert "open_clip_config.json" in str(raised.value)
    with pytest.raises(FileNotFoundError, match=r"open_clip_config\.json"):
        make_embedder(model_name=f"local-dir:{folder}").transform(_noise_images(1))


def test_batch_size_auto_is_chosen_per_device(make_embedder):
    from skicm._image_embedder_base import AUTO_BATCH_SIZE

    embedder = make_embedder(batch_size="auto")
    assert CLIPEmbedder().batch_size == "auto"
    assert embedder._batch_size(torch.device("cpu")) == AUTO_BATCH_SIZE["cpu"] == 32
    assert embedder._batch_size(torch.device("cuda")) == 256
    images = _noise_images(5, seed=3)
    np.testing.assert_allclose(
        embedder.transform(images), make_embedder().transform(images), atol=1e-6
    )
    with pytest.raises(InvalidParameterError, match="batch_size"):
        make_embedder(batch_size="big").transform(images)


def test_store_instance_is_used_as_given(make_embedder):
    from skicm.store import MemoryStore

    store = MemoryStore()
    embedder = make_embedder(store=store)
    Z = embedder.transform(_noise_images(2))
    assert store.count(embedder.store_namespace()) == 2
    np.testing.assert_array_equal(make_embedder(store=store).transform(_noise_images(2)), Z)
    assert CLIPEmbedder.has_text_tower is True


def test_a_store_holding_every_image_answers_without_building_the_model(
    make_embedder, image_files, tmp_path
):
    from skicm._image_embedder_base import _MODEL_CACHE, MODEL_BUILDS

    files = [image_files["png0"], image_files["jpg1"]]
    store = tmp_path / "store.sqlite"
    Z = make_embedder(store=store).transform(files)
    clear_model_cache()
    builds = sum(MODEL_BUILDS.values())
    fresh = make_embedder(store=store)
    namespace = fresh.store_namespace()  # computed without a model
    np.testing.assert_array_equal(fresh.transform(files), Z)
    assert sum(MODEL_BUILDS.values()) == builds and not _MODEL_CACHE
    # One image the store does not hold: now the model is built, once.
    fresh.transform([image_files["png1"], *files])
    assert sum(MODEL_BUILDS.values()) == builds + 1
    assert fresh.store_namespace() == namespace
    close_stores()


def _register_config(name, tmp_path, **changes):
    from skicm.model_configs import TINY_CLIP_CONFIG

    config = {**json.loads(json.dumps(TINY_CLIP_CONFIG)), **changes}
    path = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}" / f"{name}.json"
    path.parent.mkdir()
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)


def test_same_name_and_checkpoint_under_another_architecture_gets_new_embeddings(
    make_embedder, tiny_clip_name, tmp_path
):
    """quick_gelu changes the architecture, not the weights: one checkpoint fits both."""
    name = f"skicm-test-gelu-{os.getpid()}"
    configs = tmp_path / "configs"
    configs.mkdir()
    checkpoint = _tiny_checkpoint(tiny_clip_name, tmp_path / "tiny.pt")
    store, images = tmp_path / "store.sqlite", _noise_images(2)
    _register_config(name, configs, quick_gelu=False)
    Z_gelu = make_embedder(model_name=name, pretrained=checkpoint, store=store).transform(images)
    T_gelu = make_embedder(model_name=name, pretrained=checkpoint).encode_text(["a dog"])
    _register_config(name, configs, quick_gelu=True)  # re-registered under the same name
    embedder = make_embedder(model_name=name, pretrained=checkpoint, store=store)
    Z_quick = embedder.transform(images)
    assert not np.allclose(Z_gelu, Z_quick, atol=1e-4)
    fresh = make_embedder(model_name=name, pretrained=checkpoint, store=None)
    np.testing.assert_allclose(Z_quick, fresh.transform(images), atol=1e-6)
    assert not np.allclose(T_gelu, embedder.encode_text(["a dog"]), atol=1e-4)
    close_stores()


def test_store_namespace_separates_decoders_and_precisions(make_embedder, image_files, tmp_path):
    files = [image_files["jpg0"], image_files["jpg1"]]
    store = tmp_path / "store.sqlite"
    expected = {}
    for decoder, precision in [("pil", "fp32"), ("torchvision", "fp32"), ("pil", "bf16")]:
        embedder = make_embedder(decoder=decoder, precision=precision)
        expected[decoder, precision] = embedder.transform(files)
    assert not np.allclose(expected["pil", "fp32"], expected["torchvision", "fp32"], atol=1e-5)
    assert not np.allclose(expected["pil", "fp32"], expected["pil", "bf16"], atol=1e-5)
    for (decoder, precision), Z in expected.items():
        through_store = make_embedder(decoder=decoder, precision=precision, store=store)
        np.testing.assert_allclose(through_store.transform(files), Z, atol=1e-6)
    assert _rows(store) == 6
    close_stores()


def test_store_namespace_follows_the_preprocessing(make_embedder, tiny_clip_name, tmp_path):
    """A local-dir model whose config changes only its preprocessing gets new embeddings."""
    from skicm.model_configs import TINY_CLIP_CONFIG

    folder = tmp_path / "model"
    folder.mkdir()
    _tiny_checkpoint(tiny_clip_name, folder / "open_clip_pytorch_model.bin")
    config = folder / "open_clip_config.json"
    name, store, images = f"local-dir:{folder}", tmp_path / "store.sqlite", _noise_images(2)
    config.write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": {}}))
    Z_openai = make_embedder(model_name=name, store=store).transform(images)
    gray = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    config.write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": gray}))
    Z_gray = make_embedder(model_name=name, store=store).transform(images)
    assert not np.allclose(Z_openai, Z_gray, atol=1e-4)
    np.testing.assert_allclose(Z_gray, make_embedder(model_name=name).transform(images), atol=1e-6)
    close_stores()


def test_text_cache_is_keyed_by_the_weights(make_embedder, tiny_clip_name, tmp_path):
    clear_text_cache()
    random_weights = make_embedder().encode_text(["a photo of a dog"])
    checkpoint = _tiny_checkpoint(tiny_clip_name, tmp_path / "tiny.pt", seed=7)
    trained = make_embedder(pretrained=checkpoint).encode_text(["a photo of a dog"])
    assert not np.allclose(random_weights, trained, atol=1e-4)
    clear_text_cache()
    uncached = make_embedder(pretrained=checkpoint).encode_text(["a photo of a dog"])
    np.testing.assert_allclose(uncached, trained, atol=1e-6)


# --------------------------------------------------------------------------- Hugging Face cache
def _fake_hub_cache(root, repo, files):
    """A Hugging Face cache holding ``files`` of ``repo``, laid out as huggingface_hub does."""
    commit = "0" * 40
    folder = root / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    for name, write in files.items():
        write(snapshot / name)
    return snapshot


def test_hf_hub_models_from_the_cache_ask_the_hub_nothing(
    make_embedder, tiny_clip_name, tmp_path, monkeypatch, caplog
):
    from skicm import embedding
    from skicm.model_configs import TINY_CLIP_CONFIG

    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "ENDPOINT", "http://127.0.0.1:9")  # any call would fail
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(embedding, "_HUB_FILES", {})
    config = {"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": {}}
    snapshot = _fake_hub_cache(
        tmp_path / "hub",
        "org/tiny",
        {
            "open_clip_config.json": lambda path: path.write_text(json.dumps(config)),
            "open_clip_pytorch_model.bin": lambda path: _tiny_checkpoint(tiny_clip_name, path),
            "other.bin": lambda path: _tiny_checkpoint(tiny_clip_name, path, seed=3),
        },
    )
    images = _noise_images(2)
    connections = []
    monkeypatch.setattr(embedding, "_unreachable_reason", connections.append)
    with caplog.at_level("WARNING"):
        by_model = make_embedder(model_name="hf-hub:org/tiny")
        Z = by_model.transform(images)
        np.testing.assert_array_equal(by_model.transform(images), Z)
        by_file = make_embedder(pretrained="hf-hub:org/tiny@other.bin")
        Z_other = by_file.transform(images)
        np.testing.assert_array_equal(by_file.transform(images), Z_other)
    assert connections == []  # nothing was looked up on the Hub
    assert not [r for r in caplog.records if "thrown while requesting" in r.getMessage()]
    expected = make_embedder(pretrained=str(snapshot / "other.bin")).transform(images)
    np.testing.assert_allclose(Z_other, expected, atol=1e-6)
    assert not np.allclose(Z, Z_other, atol=1e-4)


# --------------------------------------------------------------------------- process workers
def test_pickle_carries_a_runtime_architecture_to_a_new_process(make_embedder, tmp_path):
    from joblib import Parallel, delayed

    name = f"skicm-test-pickled-{os.getpid()}"
    _register_config(name, tmp_path, embed_dim=24)
    embedder = make_embedder(model_name=name)
    X = _noise_images(2)
    Z = embedder.transform(X)
    assert len(pickle.dumps(embedder)) < 2000  # the config, never the weights
    # loky's workers are fresh interpreters (not forks): the architecture reaches them only
    # through the pickle. The same workers serve the grid search below.
    # (A bound method pickles as its object and name: nothing of this test module travels.)
    for Z_worker in Parallel(n_jobs=2, backend="loky")(
        delayed(embedder.transform)(X) for _ in "ab"
    ):
        np.testing.assert_allclose(Z_worker, Z, atol=1e-6)
    assert Z.shape == (2, 24)


def test_grid_search_with_process_workers_knows_runtime_architectures(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    name = f"skicm-test-workers-{os.getpid()}"
    _register_config(name, tmp_path, embed_dim=16)
    embedder = CLIPEmbedder(name, pretrained=None, device="cpu", progress=False, store=None)
    X = _noise_images(12, seed=4)
    y = np.array([0, 1] * 6)
    search = GridSearchCV(
        make_pipeline(embedder, LogisticRegression()),
        {"logisticregression__C": [0.1, 1.0]},
        cv=2,
        n_jobs=2,
        error_score="raise",
    )
    search.fit(X, y)  # each fit unpickles the embedder in a loky worker process
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_[:-1].transform(X).shape == (12, 16)


def test_the_namespace_device_is_the_device_torch_resolves():
    """The namespace reads the device without importing torch where it can: it must agree."""
    from skicm._image_embedder_base import namespace_device, resolve_device

    assert namespace_device("auto").type == resolve_device("auto").type
    assert namespace_device("cpu").type == "cpu"
