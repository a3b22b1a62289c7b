import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skicm.cli import main
from skicm.demo import IRM_PAPER_TEST_ACCURACY, DemoResults, run_colored_digits_demo

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fast_results():
    return run_colored_digits_demo(fast=True)


def test_fast_demo_projector_beats_erm_by_a_wide_margin(fast_results):
    erm = fast_results.accuracy("ERM")
    projector = fast_results.accuracy("CLIP-ICM projector")
    oracle = fast_results.accuracy("grayscale oracle")
    # ERM learns the colour, which disagrees with the label 90% of the time at test time.
    assert erm < 0.3
    assert projector > erm + 0.3
    assert projector > 0.5 and oracle > 0.5
    # ...while in training the colour shortcut makes ERM look better than both.
    assert fast_results.accuracy("ERM", "train") > fast_results.accuracy(
        "CLIP-ICM projector", "train"
    )
    assert fast_results.n_train == 400 and fast_results.n_test == 200


def test_full_demo_matches_the_documented_numbers():
    results = run_colored_digits_demo()
    assert results.n_train == 1198 and results.n_test == 599
    assert results.accuracy("ERM") < 0.2
    assert results.accuracy("CLIP-ICM projector") > 0.6
    # The projector drops (nearly) the whole colour subspace: at most 64 of 128 directions.
    assert 40 <= results.projector.n_components_ <= 64
    assert results.projector.invariance_ratio_.max() < 0.5


def test_results_table_quotes_the_irm_paper(fast_results):
    text = str(fast_results)
    for value in IRM_PAPER_TEST_ACCURACY.values():
        assert f"{value:.2f}" in text
    methods = [row["method"] for row in fast_results.rows]
    assert methods == ["ERM", "CLIP-ICM projector", "IRM", "grayscale oracle", "optimum"]
    assert fast_results.accuracy("IRM") is None
    assert fast_results.accuracy("optimum") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="method"):
        fast_results.accuracy("PCA")


def test_any_environment_can_be_the_test_environment():
    results = run_colored_digits_demo(
        fast=True, color_agreement=(0.1, 0.9, 0.8), test_environment=0
    )
    assert isinstance(results, DemoResults)
    assert results.color_agreement == (0.9, 0.8, 0.1)
    assert results.accuracy("CLIP-ICM projector") > results.accuracy("ERM") + 0.3


def test_fixed_rank_and_alpha_reach_the_projector():
    results = run_colored_digits_demo(fast=True, n_components=10, alpha=2.0)
    assert results.projector.n_components_ == 10 and results.projector.alpha == 2.0
    assert results.rows[1]["n_features"] == 10


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"test_environment": 3}, "test_environment"),
        ({"test_environment": 1.0}, "test_environment"),
        ({"color_agreement": (0.9,)}, "color_agreement"),
    ],
)
def test_invalid_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        run_colored_digits_demo(**kwargs)


def test_cli_demo_prints_the_table_and_saves_the_plot(tmp_path, capsys):
    plot = tmp_path / "spectrum.png"
    assert main(["demo", "--fast", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "CLIP-ICM projector" in out and "grayscale oracle" in out and "features: pixels" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_usage_errors(capsys):
    assert main([]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--n-components", "0"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["demo", "--alpha", "-1"])
    assert "must be" in capsys.readouterr().err


def _run_python(*args):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_python_m_skicm_demo_runs_without_torch():
    done = _run_python("-m", "skicm", "demo", "--fast")
    assert done.returncode == 0, done.stderr
    assert "CLIP-ICM projector" in done.stdout
    check = _run_python(
        "-c",
        "import sys; from skicm.cli import main; main(['demo', '--fast']); "
        "assert 'torch' not in sys.modules, 'the pixel demo imported torch'",
    )
    assert check.returncode == 0, check.stderr


@pytest.fixture(scope="module")
def tiny_config_file(tmp_path_factory):
    import json

    from skicm.model_configs import TINY_CLIP_CONFIG

    path = tmp_path_factory.mktemp("configs") / "skicm-demo-tiny.json"
    path.write_text(json.dumps(TINY_CLIP_CONFIG))
    return path


def test_cli_demo_through_a_clip_model_config(tiny_config_file, capsys):
    argv = ["demo", "--fast", "--model-config", str(tiny_config_file)]
    argv += ["--model-name", "skicm-demo-tiny", "--pretrained", "none", "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "CLIPEmbedder('skicm-demo-tiny', pretrained=None)" in out
    assert "ERM                   32" in out


def test_demo_with_a_local_checkpoint_embedder(tiny_clip_name, tmp_path):
    import open_clip
    import torch

    from skicm.embedding import CLIPEmbedder

    torch.manual_seed(1)
    model = open_clip.create_model(tiny_clip_name, pretrained=None)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    embedder = CLIPEmbedder(
        tiny_clip_name, pretrained=str(checkpoint), device="cpu", progress=False
    )
    results = run_colored_digits_demo(fast=True, embedder=embedder)
    assert results.projector.n_features_in_ == 32
    assert str(checkpoint) in results.features
    assert all(0 <= row["test_accuracy"] <= 1 for row in results.rows[:2])
    assert np.isfinite(results.projector.eigenvalues_).all()
