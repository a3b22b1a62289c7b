"""Tests of the ``skicm`` command's shared layer: --version, encoder options, user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import skicm
from skicm.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def _run(*args, **env):
    return subprocess.run(
        [sys.executable, "-m", "skicm", *args],
        cwd=REPO,
        env={**os.environ, "MPLBACKEND": "Agg", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"skicm {skicm.__version__}"


def test_encoder_options_defaults_and_exclusivity(capsys):
    args = build_parser().parse_args(["demo"])
    assert args.batch_size == "auto" and args.model_name is None and args.image_model is None
    args = build_parser().parse_args(["demo", "--batch-size", "16", "--image-model", "x:y"])
    assert args.batch_size == 16 and args.image_model == "x:y"
    for bad in (["--batch-size", "0"], ["--model-name", "a", "--image-model", "b"]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["demo", *bad])
        assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_decode_option_reaches_the_embedder(tiny_clip_name):
    """--decode: reduced by default, full on request, on every command with an encoder."""
    from skicm.cli._common import embedder_from_args

    model = ["--model-name", tiny_clip_name, "--pretrained", "none", "--device", "cpu"]
    for command in (["embed", "SRC", "--out", "OUT"], ["evaluate", "SRC"], ["demo"]):
        default = build_parser().parse_args([*command, *model])
        full = build_parser().parse_args([*command, *model, "--decode", "full"])
        assert embedder_from_args(default).decode == "reduced"
        assert embedder_from_args(full).decode == "full"
    image_model = ["--image-model", "skicm.model_configs:tiny_image_model", "--decode", "full"]
    args = build_parser().parse_args(["evaluate", "SRC", *image_model])
    assert embedder_from_args(args).decode == "full"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "SRC", *model, "--decode", "half"])


def test_embed_and_evaluate_share_one_definition_of_the_collection_options():
    """The same flags, help and defaults (one definition in skicm.cli._common), but for the
    default of --label-key."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices

    def options(name):
        return {
            action.dest: (tuple(action.option_strings), action.help, action.default)
            for action in commands[name]._actions
            if action.dest in ("image_key", "label_key", "domain_key", "split", "decode")
        }

    embed, evaluate = options("embed"), options("evaluate")
    assert len(embed) == 5
    # --label-key: evaluate needs labels, so it reads the collection's convention by default.
    assert embed.pop("label_key")[1].endswith("default: no labels")
    assert evaluate.pop("label_key")[1].endswith("default: cls (WebDataset), label (Hugging Face)")
    assert embed == evaluate
    # --class-names: evaluate's only (embed writes the labels as they are).
    dests = {name: {a.dest for a in commands[name]._actions} for name in ("embed", "evaluate")}
    assert "class_names" in dests["evaluate"] and "class_names" not in dests["embed"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"embed_dim": 32,', "is not valid JSON"),
        ("[1, 2]", "is not an open_clip model config"),
        ('{"embed_dim": 32, "vision_cfg": {}}', "text_cfg"),
    ],
)
def test_model_config_that_is_not_an_open_clip_config_is_rejected(tmp_path, capsys, content, match):
    path = tmp_path / "broken.json"
    path.write_text(content)
    argv = ["demo", "--fast", "--model-config", str(path), "--model-name", "broken"]
    assert main([*argv, "--pretrained", "none", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert match in err and "broken.json" in err
    assert "Traceback" not in err


def test_model_config_registers_the_architecture(tmp_path, capsys):
    from skicm.model_configs import TINY_CLIP_CONFIG

    path = tmp_path / "skicm-cli-tiny.json"
    path.write_text(json.dumps(TINY_CLIP_CONFIG))
    argv = ["demo", "--fast", "--model-config", str(path), "--model-name", "skicm-cli-tiny"]
    assert main([*argv, "--pretrained", "none", "--device", "cpu"]) == 0
    assert "ERM                   32" in capsys.readouterr().out


def test_image_model_option_runs_the_demo(capsys):
    argv = ["demo", "--fast", "--image-model", "skicm.model_configs:tiny_image_model"]
    assert main([*argv, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "features: ImageEmbedder" in out and "ERM                   16" in out


def test_user_errors_are_one_message_before_anything_is_embedded(tmp_path, capsys):
    from skicm._image_embedder_base import MODEL_BUILDS

    builds = sum(MODEL_BUILDS.values())
    cases = {
        "missing.pt": ["--model-name", "ViT-B-32", "--pretrained", str(tmp_path / "missing.pt")],
        "Did you mean 'ViT-B-32'": ["--model-name", "ViT-B-23", "--pretrained", "none"],
        "is a folder": ["--model-name", "ViT-B-32", "--pretrained", str(tmp_path)],
        "device=": ["--model-name", "ViT-B-32", "--pretrained", "none", "--device", "abacus"],
        "cannot import module": ["--image-model", "no_such_module_xyz:f"],
        "an --image-model brings its own weights": [
            "--image-model",
            "efficientnet-lite0",
            "--pretrained",
            "laion2b",
        ],
    }
    for expected, options in cases.items():
        assert main(["demo", "--fast", *options]) == 2, expected
        err = capsys.readouterr().err
        assert expected in err, err
        assert err.startswith("skicm demo: error:") and "Traceback" not in err
    assert sum(MODEL_BUILDS.values()) == builds  # nothing was built, hence nothing embedded


def test_offline_weights_end_in_one_message_and_a_non_zero_exit():
    """The README's recommendation on a machine without internet access: no traceback."""
    done = _run("demo", "--fast", "--model-name", "ViT-B-32", "--device", "cpu", HF_HUB_OFFLINE="1")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("skicm demo: error:")]
    assert len(lines) == 1
    for part in ("open_clip_pytorch_model.bin", "--pretrained", "local-dir:", "HF_HUB_OFFLINE"):
        assert part in lines[0]


def test_os_and_runtime_errors_of_a_subcommand_become_messages(capsys, monkeypatch):
    from skicm.cli import demo

    def fail(error):
        def run(args):
            raise error

        return run

    for error, shown in [
        (OSError("disk full"), "error: disk full"),
        (RuntimeError("CUDA out of memory"), "error: RuntimeError: CUDA out of memory"),
        (PermissionError("read-only"), "error: PermissionError: read-only"),
    ]:
        monkeypatch.setattr(demo, "run", fail(error))
        assert main(["demo", "--fast"]) == 2
        assert shown in capsys.readouterr().err


def test_warnings_are_printed_as_one_skicm_line_without_python_source(tmp_path, capsys):
    from PIL import Image

    from skicm.cli import main

    for domain, classes in {"caltech": ("hund", "auto"), "sun": ("dog", "car")}.items():
        for name in classes:
            folder = tmp_path / domain / name
            folder.mkdir(parents=True)
            Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "0.png")
    status = main(["evaluate", str(tmp_path), "--model-name", "no-such-architecture"])
    err = capsys.readouterr().err
    assert status == 2
    warning_lines = [line for line in err.splitlines() if "warning" in line]
    assert len(warning_lines) == 1
    assert warning_lines[0].startswith("skicm evaluate: warning: ")
    assert "caltech: auto, hund" in warning_lines[0] and "--class-alias" in warning_lines[0]
    assert "UserWarning" not in err and "load_image_folders(" not in err
    assert err.splitlines()[-1].startswith("skicm evaluate: error: ")


def test_class_alias_options_are_read_in_one_place(tmp_path):
    """``--class-alias`` / ``--class-alias-file``: pairs become a dict, a file stays a path for
    load_image_folders to read, both together or a pair without ``=`` name the option."""
    import argparse

    from skicm.cli._common import add_class_alias_options, class_aliases_from_args

    parser = argparse.ArgumentParser()
    add_class_alias_options(parser)
    read = lambda *argv: class_aliases_from_args(parser.parse_args(list(argv)))  # noqa: E731
    assert read("--class-alias", "hund=dog", "--class-alias", "auto=car") == {
        "hund": "dog",
        "auto": "car",
    }
    assert read() == {}
    aliases = tmp_path / "aliases.txt"
    assert read("--class-alias-file", str(aliases)) == str(aliases)
    with pytest.raises(ValueError, match="give --class-alias or --class-alias-file, not both"):
        read("--class-alias-file", str(aliases), "--class-alias", "hund=dog")
    for bad in ("dog", "=dog", "hund="):
        with pytest.raises(ValueError, match=f"--class-alias must look like FOLDER=CLASS.*{bad}"):
            read("--class-alias", bad)
    # skicm evaluate uses these options.
    evaluate = build_parser().parse_args(["evaluate", "root", "--class-alias", "hund=dog"])
    assert class_aliases_from_args(evaluate) == {"hund": "dog"}


def test_prompts_is_the_templates_option_for_a_prompt_file():
    from skicm.cli import build_parser

    args = build_parser().parse_args(["evaluate", "folder", "--prompts", "cupl.json"])
    assert args.templates == "cupl.json"
    assert build_parser().parse_args(["evaluate", "folder"]).templates == "openai-imagenet"
