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
    # Each domain with its test size (the n_test of DomainScores), the average with all of them.
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "art\nn=1", "photo\nn=1", "sketch\nn=1", "Average\nn=3"
    ]  # fmt: skip
    assert ax.get_ylabel() == "accuracy (%) on the held-out domain"
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
    results = {"m": DomainScores(domains, np.array([0.0, 0.9]), np.ones(2), [10, 20])}
    figure = plot_domain_scores(results, chance=0.25)
    (ax,) = figure.axes
    # Whole percent: 0 of the 10 test images of "a" is 0, and "a" says it has 10.
    assert [text.get_text() for text in ax.texts] == ["0", "90", "45"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a\nn=10", "b\nn=20", "Average\nn=30"]
    zero_bar = ax.patches[0]
    assert zero_bar.get_height() == 0
    # A zero accuracy is still drawn: an outlined bar shows as a line at 0, with its label.
    assert zero_bar.get_linewidth() > 0 and zero_bar.get_edgecolor()[3] > 0
    (chance,) = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert chance.get_ydata()[0] == pytest.approx(25)
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
    assert [round(p.get_height(), 6) for p in ax.patches] == [60, 90, 75]
    assert [text.get_text() for text in ax.texts] == ["60", "90", "75"]
    assert "oracle" in ax.get_title() and "mean ± std over 2 seeds" in ax.get_title()
    (chance,) = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert chance.get_ydata()[0] == pytest.approx(50)
    # Standard deviations over seeds as error bars: 0.1 for both domains.
    from matplotlib.container import BarContainer

    (bars,) = [c for c in ax.containers if isinstance(c, BarContainer)]
    (errorbar,) = bars.errorbar.lines[2]
    segments = errorbar.get_segments()
    assert [round(seg[1][1] - seg[0][1], 6) for seg in segments] == [20, 20, 0]
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


def _evaluation_results(n_methods, domains, n_seeds, n_test=10, open_class=False):
    """Results whose neighbouring bars have equal values (labels side by side at one height):
    the first half of the methods scores 0 everywhere, the second half 100%. ``open_class``
    gives each method a base and a new row, with long legend entries (which narrow the axes)."""
    from skicm.evaluation import EvaluationResults

    methods = [f"zero-shot ICM {i} (groups)" for i in range(n_methods)]
    splits = ["base", "new"] if open_class else ["all"]
    records = [
        {"method": method, "test_domain": domain, "seed": seed, "classes": split,
         "accuracy": float(i >= n_methods // 2), "n_test": n_test}
        for i, method in enumerate(methods) for split in splits for domain in domains
        for seed in range(n_seeds)
    ]  # fmt: skip
    return EvaluationResults(
        records, methods, list(domains), selection="training-domain", scoring="accuracy",
        chance=1 / 7, protocol="open-class" if open_class else "leave-one-domain-out",
    )  # fmt: skip


def _assert_no_label_collides(ax):
    """No two value labels overlap, no two domain labels overlap, and no value label leaves
    the axes (where it would run into the title): compared as drawn boxes, in pixels."""
    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    values = [t.get_window_extent(renderer) for t in ax.texts if t.get_visible()]
    ticks = [t.get_window_extent(renderer) for t in ax.get_xticklabels()]
    assert ticks
    for boxes in (values, ticks):
        collisions = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]
        assert not collisions, f"{len(collisions)} overlapping labels, e.g. {collisions[0]}"
    axes_box = ax.get_window_extent(renderer)
    title_box = ax.title.get_window_extent(renderer)
    for box in values:
        assert box.y1 <= axes_box.y1 and not box.overlaps(title_box)


@pytest.mark.parametrize(
    "n_methods, domains, n_seeds, open_class",
    [
        (8, ["art_painting", "cartoon", "photo", "sketch"], 1, False),  # the CLI's columns, PACS
        (3, ["art_painting", "cartoon", "photo", "sketch"], 2, False),
        # Long legend entries narrow the axes: 16 bars side by side used to overlap.
        (2, ["art_painting", "cartoon", "photo"], 1, True),
        (2, ["caltech", "labelme", "sun", "voc", "x", "y"], 2, True),
    ],
)
def test_value_labels_never_collide(n_methods, domains, n_seeds, open_class):
    results = _evaluation_results(n_methods, domains, n_seeds, open_class=open_class)
    figure = results.plot(title="a title")
    (ax,) = figure.axes
    _assert_no_label_collides(ax)
    assert all(t.get_visible() for t in ax.texts)
    # A figure of its own grows instead of shrinking its labels or turning the domain names.
    default_size = matplotlib.font_manager.FontProperties(size="x-small").get_size_in_points()
    assert {t.get_fontsize() for t in ax.texts} == {default_size}
    assert {t.get_rotation() for t in ax.get_xticklabels()} == {0}
    matplotlib.pyplot.close(figure)


@pytest.mark.parametrize(
    "n_methods, domains, labels",
    [
        (6, ["caltech", "labelme", "sun"], "vertical"),
        (6, ["art_painting", "cartoon", "photo", "sketch"], "smaller"),
        (8, ["art_painting", "cartoon", "photo", "sketch"], "left out"),  # 5-pt ones collide
        (1, [f"a long domain name {i}" for i in range(5)], "upright"),
    ],
)
def test_value_labels_never_collide_on_given_axes(n_methods, domains, labels):
    """On axes of one's own the figure keeps its size: labels turn, shrink (not below 5 pt)
    or, where even that cannot keep them apart, are left out; long domain names turn."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    results = _evaluation_results(n_methods, domains, 1)
    assert plot_domain_scores(results, ax=ax, title="VLCS") is figure
    assert list(figure.get_size_inches()) == [6, 4]
    _assert_no_label_collides(ax)
    default_size = matplotlib.font_manager.FontProperties(size="x-small").get_size_in_points()
    sizes = {t.get_fontsize() for t in ax.texts}
    visible = {t.get_visible() for t in ax.texts}
    rotations = {t.get_rotation() for t in ax.texts}
    if labels == "upright":
        assert visible == {True} and rotations == {0} and sizes == {default_size}
        assert {t.get_rotation() for t in ax.get_xticklabels()} == {90}
    elif labels == "vertical":
        assert visible == {True} and rotations == {90} and sizes == {default_size}
    elif labels == "smaller":
        assert visible == {True} and rotations == {90}
        ((size,),) = [sizes]
        assert 5 <= size < default_size
    else:
        assert visible == {False}
    plt.close(figure)


def test_evaluation_plot_shows_test_sizes_and_seeds():
    from skicm.evaluation import EvaluationResults

    # One seed: no error bars, the title says so; every domain has its n_test.
    one = _evaluation_results(2, ["photo", "sketch"], 1)
    for record in one.records:
        record["n_test"] = {"photo": 10, "sketch": 4}[record["test_domain"]]
    figure = one.plot()
    (ax,) = figure.axes
    assert "1 seed (0), no error bars" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "photo\nn=10", "sketch\nn=4", "Average\nn=14"
    ]  # fmt: skip
    assert all(c.errorbar is None for c in ax.containers if hasattr(c, "errorbar"))
    matplotlib.pyplot.close(figure)
    # A test size that changes with the seed (data drawn per seed) shows as its range; the
    # open-class splits each show theirs.
    records = [
        {"method": "zero-shot", "test_domain": "a", "seed": seed, "classes": split,
         "accuracy": 0.5, "n_test": n}
        for seed, split, n in [(0, "base", 6), (0, "new", 4), (1, "base", 8), (1, "new", 4)]
    ]  # fmt: skip
    results = EvaluationResults(records, ["zero-shot"], ["a"], "training-domain", "accuracy", 0.5)
    figure = results.plot()
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert labels == ["a\nn=6-8 base, 4 new", "Average\nn=6-8 base, 4 new"]
    assert "mean ± std over 2 seeds" in figure.axes[0].get_title()
    matplotlib.pyplot.close(figure)


def test_plotting_imports_no_private_name_of_the_evaluation():
    """skicm.plotting uses the evaluation's public names only, and the evaluation package never
    imports skicm.plotting (no import circle between them)."""
    import ast
    from pathlib import Path

    import skicm.evaluation
    import skicm.plotting

    tree = ast.parse(Path(skicm.plotting.__file__).read_text())
    imported = [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("skicm.evaluation")
        for alias in node.names
    ]
    assert imported, "skicm.plotting re-exports plot_domain_scores from skicm.evaluation"
    for module, name in imported:
        assert not any(part.startswith("_") for part in module.split(".")), module
        assert not name.startswith("_"), name
    for path in Path(skicm.evaluation.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(n.startswith("skicm.plotting") for n in names), path.name
