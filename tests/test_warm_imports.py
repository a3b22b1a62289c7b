"""A warm run with an open_clip model imports neither open_clip nor torch.

A CLIPEmbedder's store namespace identifies its model by data of open_clip's files (architecture
configs, the table of pretrained tags, the preprocessing defaults, the version). When open_clip
is not imported, skicm reads those files instead of importing it (and torch with it, 2-4 s):
these tests check that every piece read from the files equals what open_clip gives, that whole
namespaces are the same in a process without open_clip as in one with it, and that `skicm
evaluate` answered from a store filled by a cold run imports neither package.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("open_clip")

import open_clip

from skicm import CLIPEmbedder
from skicm import embedding as embedding_module
from skicm.cli import main
from skicm.model_configs import TINY_CLIP_CONFIG

HEAVY = ("torch", "torchvision", "open_clip")


def _run_python(code: str, *args, env=None) -> dict:
    """Run ``code`` in a new Python process; its last stdout line is JSON, returned."""
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- each file read equals
def test_every_builtin_architecture_read_from_its_file_equals_open_clips():
    # The architectures open_clip ships (other tests of the session register more at run time).
    folder = Path(open_clip.__file__).parent / "model_configs"
    names = sorted(path.stem for path in folder.glob("*.json"))
    assert len(names) > 100 and set(names) <= set(open_clip.list_models())
    for name in names:
        found, config = embedding_module._builtin_model_config(name)
        assert found and config == open_clip.get_model_config(name), name
    assert embedding_module._builtin_model_config("no-such-architecture") == (True, None)


def test_every_pretrained_tag_read_from_its_file_equals_open_clips():
    table = embedding_module._read_pretrained_table()
    assert table is not None
    pairs = open_clip.list_pretrained()
    assert len(pairs) > 50
    for model, tag in pairs:
        for spelling in (tag, tag.upper().replace("_", "-")):  # open_clip cleans the tag
            expected = open_clip.get_pretrained_cfg(model, spelling)
            assert table["get_pretrained_cfg"](model, spelling) == expected, (model, spelling)
    assert table["get_pretrained_cfg"]("ViT-B-32", "no-such-tag") == {}


def test_preprocessing_defaults_and_merge_equal_open_clips():
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    defaults = asdict(PreprocessCfg())
    assert embedding_module._read_preprocess_defaults() == defaults
    # The merge of the model's own preprocessing and each tag's (or none: random weights), as
    # open_clip's factory does; None never overrides, unknown keys are dropped.
    own = {"mean": [0.5, 0.5, 0.5], "size": 99, "unknown_key": 1, "std": None}
    pairs = open_clip.list_pretrained()
    cases = [(model, None) for model in ("ViT-B-32", "RN50")] + pairs[:: max(1, len(pairs) // 40)]
    for model, tag in cases:
        tag_cfg = open_clip.get_pretrained_cfg(model, tag) if tag else {}
        config = open_clip.get_model_config(model) or {}
        expected = merge_preprocess_dict(merge_preprocess_dict(defaults, own), tag_cfg)
        size = config.get("vision_cfg", {}).get("image_size")
        if size is not None:
            expected["size"] = list(size) if isinstance(size, (list, tuple)) else [size, size]
        expected = {k: list(v) if isinstance(v, tuple) else v for k, v in expected.items()}
        assert embedding_module._preprocess_config(config, own, tag_cfg) == expected, model


def test_versions_and_local_dir_checkpoint_read_from_files_equal_the_packages(tmp_path):
    import torch

    assert embedding_module._version_from_file("open_clip") == open_clip.__version__
    assert embedding_module._version_from_file("torch") == str(torch.__version__)
    for names in (
        ["b.bin", "a.pth", "z.safetensors", "model.safetensors", "open_clip_pytorch_model.bin"],
        ["b.bin", "a.pth", "z.safetensors"],
        ["pytorch_model.bin", "model.pth"],
        ["notes.txt"],
    ):
        folder = tmp_path / "-".join(names)
        folder.mkdir()
        for name in names:
            (folder / name).write_bytes(b"")
        expected = open_clip.factory._find_checkpoint_in_dir(folder)
        assert embedding_module._checkpoint_in_dir(folder) == expected, names


# ---------------------------------------------------------------------- whole namespaces
# Prints the namespaces of the embedders described in argv[1] (JSON), then which heavy packages
# the process imported, then the same namespaces once open_clip is imported.
_NAMESPACES = """
import json, sys
from skicm import CLIPEmbedder
from skicm.model_configs import register_model_config, register_tiny_clip
specs = json.loads(sys.argv[1])
register_tiny_clip()
register_model_config("skicm-test-wide", json.loads(sys.argv[2]))
def namespaces():
    return {key: CLIPEmbedder(model, pretrained=pretrained, device="cpu",
                              precision=precision).store_namespace()
            for key, (model, pretrained, precision) in specs.items()}
before = namespaces()
imported = sorted(name for name in ("torch", "torchvision", "open_clip") if name in sys.modules)
import open_clip
registered = open_clip.get_model_config("skicm-test-wide")
print(json.dumps({"before": before, "imported": imported, "after": namespaces(),
                  "registered": registered}))
"""


def test_namespaces_without_open_clip_equal_those_with_it(tmp_path, tiny_clip_name):
    """The tiny registered architecture (random weights, a checkpoint file), another registered
    one, a local-dir: folder, built-in architectures with random weights and a pretrained tag
    whose file is in the Hub cache: each namespace is the same in a process that
    never imported open_clip as in this one (which has), and as after it imports open_clip."""
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model(tiny_clip_name, pretrained=None)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    (local_dir / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": {"mean": [0.5] * 3}})
    )
    torch.save(model.state_dict(), local_dir / "open_clip_pytorch_model.bin")
    # The "openai" weights of ViT-B-32 come from a Hugging Face repository: a Hub cache that
    # holds the file lets the tag resolve offline (no model is built, the file is never read).
    hub = tmp_path / "hub"
    repo = open_clip.get_pretrained_cfg("ViT-B-32", "openai")["hf_hub"].strip("/")
    cached = hub / f"models--{repo.replace('/', '--')}"
    (cached / "refs").mkdir(parents=True)
    (cached / "refs" / "main").write_text("0" * 40)
    (cached / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (cached / "snapshots" / ("0" * 40) / "open_clip_model.safetensors").write_bytes(b"")
    wide = {**TINY_CLIP_CONFIG, "embed_dim": 48}
    open_clip.add_model_config(_config_file(tmp_path, "skicm-test-wide", wide))
    specs = {
        "tiny random": [tiny_clip_name, None, "fp32"],
        "tiny random fp16": [tiny_clip_name, None, "fp16"],
        "tiny random bf16": [tiny_clip_name, None, "bf16"],
        "tiny checkpoint": [tiny_clip_name, str(checkpoint), "fp32"],
        "wide registered": ["skicm-test-wide", None, "fp32"],
        "local-dir": [f"local-dir:{local_dir}", None, "fp32"],
        "ViT-B-32 random": ["ViT-B-32", None, "fp32"],
        "RN50 random": ["RN50", None, "fp32"],
        "ViT-B-32 openai": ["ViT-B-32", "openai", "fp32"],
    }
    env = {**os.environ, "HF_HUB_CACHE": str(hub)}
    report = _run_python(_NAMESPACES, json.dumps(specs), json.dumps(wide), env=env)
    assert report["imported"] == []
    with pytest.MonkeyPatch.context() as patch:
        import huggingface_hub

        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
        patch.setattr(embedding_module, "_HUB_FILES", {})
        here = {
            key: CLIPEmbedder(name, pretrained=pretrained, device="cpu", precision=precision)
            .store_namespace()
            for key, (name, pretrained, precision) in specs.items()
        }  # fmt: skip
    assert report["before"] == here == report["after"]
    assert len(set(here.values())) == len(here)  # each model its own namespace
    assert report["registered"] == wide  # registered before open_clip was imported: known to it


def _config_file(folder: Path, name: str, config: dict) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


# ---------------------------------------------------------------------- a warm skicm evaluate
_WARM_RUN = """
import json, sys
from skicm.cli import main
code = main(sys.argv[1:])
heavy = sorted(name for name in ("torch", "torchvision", "open_clip") if name in sys.modules)
print(json.dumps({"code": code, "imported": heavy}))
"""


def _image_folder(root: Path) -> Path:
    """Real PNG files, root/domain/class/image: the class sets a colour channel, the domain the
    background brightness."""
    rng = np.random.default_rng(0)
    for d, domain in enumerate(("art", "photo", "sketch")):
        for c, name in enumerate(("cat", "dog")):
            folder = root / domain / name
            folder.mkdir(parents=True)
            for k in range(4):
                pixels = np.full((36, 36, 3), 30 + 70 * d) + rng.integers(0, 30, (36, 36, 3))
                pixels[:, :, c] = 220
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{k}.png")
    return root


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_warm_evaluate_with_an_open_clip_model_imports_neither_open_clip_nor_torch(tmp_path):
    """A store filled by a cold run in this process (open_clip imported) answers every image and
    counterpart of the same run in a new process, which imports no open_clip, torch or
    torchvision (the architecture comes from --model-config) and writes the same results."""
    images = _image_folder(tmp_path / "images")
    config = _config_file(tmp_path, "skicm-warm-tiny", TINY_CLIP_CONFIG)
    store = tmp_path / "store.sqlite"
    argv = ["evaluate", str(images), "--model-config", str(config), "--model-name",
            "skicm-warm-tiny", "--pretrained", "none", "--device", "cpu", "--store", str(store),
            "--interventions", "image", "--no-zero-shot", "--n-components", "4", "--alpha", "1",
            "--C", "1", "--no-progress"]  # fmt: skip
    assert main([*argv, "--output", str(tmp_path / "cold")]) == 0
    report = _run_python(_WARM_RUN, *argv, "--output", tmp_path / "warm")
    assert report["code"] == 0
    assert not set(HEAVY) & set(report["imported"]), report
    cold, warm = (_rows(tmp_path / run / "results.csv") for run in ("cold", "warm"))
    assert warm == cold and len(cold) > 0
