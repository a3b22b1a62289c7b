"""The result files both protocols write (``save``): which files, and a plot that holds its
legend."""

import matplotlib
import numpy as np
from PIL import Image

from skicm.evaluation import RESULT_COLUMNS, EvaluationResults
from skicm.evaluation._groups import GroupResults

matplotlib.use("Agg")


def test_group_results_png_takes_in_the_legend_beside_the_axes(tmp_path):
    record = {
        "method": "a method with a long name", "seed": 0, "worst_group": 0.5,
        "average": 0.75, "adjusted_average": 0.9, "chosen": "", "n_candidates": 1,
        "group_accuracy": {"a": 0.5, "b": 1.0}, "group_n_test": {"a": 2, "b": 2},
    }  # fmt: skip
    results = GroupResults([record], [record["method"]], ["a", "b"], "worst-group", 0.5)
    paths = results.save(tmp_path, title="t")
    assert [path.name for path in paths] == ["results.csv", "results.md", "results.png"]
    figure = results.plot(title="t")
    figure.canvas.draw()
    legend = figure.axes[0].get_legend().get_window_extent()
    assert legend.x1 > figure.bbox.width  # the legend stands beyond the figure's own width
    # The saved image is cropped to what is drawn, the legend included: wider than the
    # figure itself (at 120 dpi), which is what an uncropped save would give.
    width, _ = Image.open(paths[2]).size
    assert width > figure.get_size_inches()[0] * 120


def test_evaluation_results_png_is_the_figure_as_laid_out(tmp_path):
    records = [
        {**dict.fromkeys(RESULT_COLUMNS), "method": "probe", "test_domain": d, "seed": 0,
         "accuracy": 0.5, "classes": "all", "n_test": 4, "n_candidates": 1}
        for d in ("a", "b")
    ]  # fmt: skip
    results = EvaluationResults(records, ["probe"], ["a", "b"], "oracle", "accuracy", 0.5)
    paths = results.save(tmp_path)
    assert [path.name for path in paths] == ["results.csv", "results.md", "results.png"]
    figure = results.plot()
    width, height = Image.open(paths[2]).size
    assert (width, height) == tuple(np.round(figure.get_size_inches() * 120).astype(int))


def test_the_command_report_prints_writes_and_plots(tmp_path, capsys):
    from skicm.evaluation._results import _report_results

    record = {
        "method": "probe", "seed": 0, "worst_group": 0.5, "average": 0.75,
        "adjusted_average": 0.9, "chosen": "", "n_candidates": 1,
        "group_accuracy": {"a": 0.5, "b": 1.0}, "group_n_test": {"a": 2, "b": 2},
    }  # fmt: skip
    results = GroupResults([record], ["probe"], ["a", "b"], "worst-group", 0.5)
    plot = tmp_path / "alone.png"
    _report_results(results, title="t", output=tmp_path / "out", plot=plot)
    printed = capsys.readouterr().out
    assert printed.startswith(results.to_markdown(title="t"))
    assert f"written: {tmp_path / 'out' / 'results.csv'}" in printed
    assert f"plot saved to {plot}" in printed
    # --plot draws the figure that --output writes as results.png, to the byte.
    assert plot.read_bytes() == (tmp_path / "out" / "results.png").read_bytes()
    _report_results(results, title="t")  # tables only: no file
    assert sorted(path.name for path in tmp_path.iterdir()) == ["alone.png", "out"]
