import sys

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from skicm import InvariantProjector
from skicm.demo import run_colored_digits_demo
from skicm.evaluation import DomainScores
from skicm.plotting import plot_domain_scores, plot_spectrum, spectrum_diagnostics

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def projector():
    return run_colored_digits_demo(fast=True).projector


def test_diagnostics_repeat_the_fitted_numbers(projector):
    d = spectrum_diagnostics(projector)
    np.testing.assert_array_equal(d.eigenvalues, projector.eigenvalues_)
    assert d.n_components == projector.n_components_
    np.testing.assert_array_equal(d.invariance_ratio, projector.invariance_ratio_)
    np.testing.assert_array_equal(d.signal_variance, projector.signal_variance_)
    np.testing.assert_array_equal(d.intervention_variance, projector.intervention_variance_)
    assert np.all(np.diff(d.eigenvalues) <= 1e-12)
    # "auto" keeps exactly the positive eigenvalues.
    assert d.n_positive == d.n_components
    assert d.kept_eigenvalue_fraction == pytest.approx(1.0)
    assert d.alpha == 1.0


def test_diagnostics_on_a_known_spectrum():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 4)) * [3.0, 2.0, 1.0, 1.0]
    X_intervened = X.copy()
    X_intervened[:, 3] = rng.normal(size=5000)  # the intervention resamples feature 3 only
    projector = InvariantProjector(n_components=2).fit(X, X_intervened=X_intervened)
    d = spectrum_diagnostics(projector)
    # M = diag(9, 4, 1, 1 - 2) up to sampling noise.
    np.testing.assert_allclose(d.eigenvalues, [9, 4, 1, -1], atol=0.25)
    assert d.n_positive == 3 and d.n_components == 2
    np.testing.assert_allclose(d.invariance_ratio, 0, atol=1e-3)
    assert d.kept_eigenvalue_fraction == pytest.approx(13 / 14, abs=0.02)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_diagnostics_count_positive_eigenvalues_like_auto(dtype):
    """Rank-10 embeddings in 64 dimensions: round-off eigenvalues are not "positive"."""
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(2000, 10)) @ rng.normal(size=(10, 64))).astype(dtype)
    X_intervened = X + (rng.normal(size=(2000, 1)) @ rng.normal(size=(1, 64))).astype(dtype)
    projector = InvariantProjector().fit(X, X_intervened=X_intervened)
    d = spectrum_diagnostics(projector)
    assert d.n_positive == projector.n_components_ == 10  # the rank, not the 54 round-off ones
    assert d.kept_eigenvalue_fraction == pytest.approx(1.0)


def test_diagnostics_need_a_fitted_projector():
    with pytest.raises(NotFittedError):
        spectrum_diagnostics(InvariantProjector())


def test_plot_spectrum_writes_a_png(projector, tmp_path):
    figure = plot_spectrum(projector, title="colored digits")
    spectrum_ax, ratio_ax = figure.axes
    assert spectrum_ax.get_yscale() == "symlog"
    assert len(ratio_ax.patches) == projector.n_components_
    path = tmp_path / "spectrum.png"
    figure.savefig(path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 10_000
    matplotlib.pyplot.close(figure)


def test_plot_spectrum_on_given_axes(projector):
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3)
    assert plot_spectrum(projector, axes=axes[:2]) is figure
    with pytest.raises(ValueError, match="axes"):
        plot_spectrum(projector, axes=axes)
    plt.close(figure)


def test_plot_domain_scores_writes_a_png(tmp_path):
    domains = np.array(["art", "photo", "sketch"])
    results = {
        "CLIP + LR": DomainScores(domains, np.array([0.5, 0.7, 0.4]), np.ones(3), np.ones(3)),
        "CLIP-ICM + LR": DomainScores(domains, np.array([0.6, 0.8, 0.5]), np.ones(3), np.ones(3)),
    }
    figure = plot_domain_scores(results, title="PACS")
    (ax,) = figure.axes
    assert len(ax.patches) == 2 * 4  # three domains and the average, two methods
    assert [t.get_text() for t in ax.get_xticklabels()] == ["art", "photo", "sketch", "Average"]
    assert ax.get_ylabel() == "accuracy on the held-out domain"
    path = tmp_path / "domains.png"
    figure.savefig(path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ValueError, match="results"):
        plot_domain_scores({})
    swapped = DomainScores(domains[::-1], np.array([0.9, 0.1, 0.2]), np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="must hold out the same domains in the same order"):
        plot_domain_scores({**results, "other order": swapped})
    matplotlib.pyplot.close(figure)


def test_domain_bars_carry_value_labels_and_a_chance_line():
    domains = np.array(["a", "b"])
    results = {"m": DomainScores(domains, np.array([0.0, 0.9]), np.ones(2), np.ones(2))}
    figure = plot_domain_scores(results, chance=0.25)
    (ax,) = figure.axes
    assert [text.get_text() for text in ax.texts] == ["0.00", "0.90", "0.45"]
    zero_bar = ax.patches[0]
    assert zero_bar.get_height() == 0
    # A zero accuracy is still drawn: an outlined bar shows as a line at 0, with its label.
    assert zero_bar.get_linewidth() > 0 and zero_bar.get_edgecolor()[3] > 0
    (chance,) = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert chance.get_ydata()[0] == pytest.approx(0.25)
    assert any("chance" in t.get_text() for t in ax.get_legend().get_texts())
    matplotlib.pyplot.close(figure)


def test_evaluation_results_plot_means_stds_and_chance():
    from skicm.evaluation import EvaluationResults

    records = [
        {"method": "probe", "test_domain": d, "seed": s, "accuracy": acc, "classes": "all"}
        for d, s, acc in [("a", 0, 0.5), ("a", 1, 0.7), ("b", 0, 1.0), ("b", 1, 0.8)]
    ]
    results = EvaluationResults(
        records=records, methods=["probe"], domains=["a", "b"], selection="oracle",
        scoring="accuracy", chance=0.5,
    )  # fmt: skip
    figure = results.plot()
    (ax,) = figure.axes
    assert [round(p.get_height(), 6) for p in ax.patches] == [0.6, 0.9, 0.75]
    assert [text.get_text() for text in ax.texts] == ["0.60", "0.90", "0.75"]
    assert "oracle" in ax.get_title()
    (chance,) = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert chance.get_ydata()[0] == pytest.approx(0.5)
    # Standard deviations over seeds as error bars: 0.1 for both domains.
    from matplotlib.container import BarContainer

    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    (errorbar,) = bars.errorbar.lines[2]
    segments = errorbar.get_segments()
    assert [round(seg[1][1] - seg[0][1], 6) for seg in segments] == [0.2, 0.2, 0.0]
    matplotlib.pyplot.close(figure)


def _label_boxes_overlap(ax):
    ax.figure.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.get_yticklabels() if t.get_text()]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_spectrum_tick_labels_never_collide():
    """A spectrum spanning many decades on both sides of zero (a high-dimensional embedding)."""
    rng = np.random.default_rng(0)
    scales = np.logspace(2, -6, 64)
    X = rng.normal(size=(4000, 64)) * np.sqrt(scales)
    X_intervened = X + rng.normal(size=(4000, 64)) * np.sqrt(np.logspace(-7, 2, 64))
    projector = InvariantProjector(n_components=8).fit(X, X_intervened=X_intervened)
    assert projector.eigenvalues_.max() > 10 and projector.eigenvalues_.min() < -10
    figure = plot_spectrum(projector)
    spectrum_ax = figure.axes[0]
    ticks = spectrum_ax.get_yticks()
    assert 0 in ticks and ticks.min() < 0 < ticks.max()
    assert not _label_boxes_overlap(spectrum_ax)
    matplotlib.pyplot.close(figure)


def test_missing_matplotlib_gives_a_clear_error(projector, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_spectrum(projector)
