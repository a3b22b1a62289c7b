"""The per-domain accuracy plot of :class:`EvaluationResults` and of :class:`DomainScores`."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from skicm._matplotlib import pyplot as _pyplot
from skicm.evaluation._domain_scores import _check_same_domains


def _domain_series(results):
    """(x labels, {series name: (values, errors)}, chance) of per-domain results."""
    if not isinstance(results, Mapping) and hasattr(results, "_rows"):  # EvaluationResults
        labels = [*results.domains, "Average"]
        series = {}
        for label, method, split in results._rows():
            stats = [results.accuracy(method, d, classes=split) for d in [*results.domains, None]]
            series[label] = (np.array([m for m, _ in stats]), np.array([s for _, s in stats]))
        return labels, series, results.chance
    first = _check_same_domains(results)
    labels = [*map(str, first.domains), "Average"]
    series = {
        name: (np.array([*scores.scores, scores.mean_score]), None)
        for name, scores in results.items()
    }
    return labels, series, None


def plot_domain_scores(results, *, ax=None, title=None, chance=None):
    """Bar chart of held-out-domain accuracies, one group of bars per domain plus the average.

    Every bar carries its value as a label (a zero accuracy is drawn as an outlined bar of
    height zero, labelled ``0.00``); a dotted line marks chance accuracy.

    Parameters
    ----------
    results : EvaluationResults or mapping of str to DomainScores
        From :func:`skicm.evaluation.evaluate_domain_generalization` (bars are means over
        seeds, error bars their standard deviation) or
        :func:`skicm.evaluation.leave_one_domain_out` per method.
    ax : matplotlib Axes or None, default=None
        Where to draw; None creates a new figure.
    title : str or None, default=None
        Axes title.
    chance : float or None, default=None
        Chance accuracy for the dotted line; None takes ``results.chance`` of an
        :class:`~skicm.evaluation.EvaluationResults` and draws no line for a mapping.

    Returns
    -------
    figure : matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skicm.evaluation import DomainScores
    >>> from skicm.plotting import plot_domain_scores
    >>> scores = DomainScores(np.array(["a", "b"]), np.array([0.5, 1.0]),
    ...                       np.array([2, 2]), np.array([2, 2]))
    >>> figure = plot_domain_scores({"model": scores}, chance=0.5)
    >>> [text.get_text() for text in figure.axes[0].texts]
    ['0.50', '1.00', '0.75']
    """
    plt = _pyplot()
    labels, series, default_chance = _domain_series(results)
    chance = default_chance if chance is None else chance
    if ax is None:
        width_inches = max(7.0, 1.0 + 0.35 * len(labels) * len(series))
        figure, ax = plt.subplots(figsize=(width_inches, 4.2), layout="constrained")
    else:
        figure = ax.figure
    width = 0.8 / len(series)
    positions = np.arange(len(labels))
    many = len(series) * len(labels) > 16
    for i, (name, (values, errors)) in enumerate(series.items()):
        bars = ax.bar(
            positions + (i - (len(series) - 1) / 2) * width,
            values,
            width,
            yerr=errors if errors is not None and np.any(errors > 0) else None,
            capsize=2,
            label=name,
            color=f"C{i % 10}",
            edgecolor="black",  # a bar of height zero still shows as a line
            linewidth=0.6,
        )
        ax.bar_label(
            bars,
            labels=[f"{v:.2f}" for v in values],
            padding=2,
            fontsize="x-small",
            rotation=90 if many else 0,
        )
    if chance is not None:
        ax.axhline(
            chance, color="0.3", linestyle=":", linewidth=1.2, label=f"chance ({chance:.2f})"
        )
    ax.set_xticks(positions, labels)
    ax.set_xlabel("held-out domain")
    ax.set_ylabel("accuracy on the held-out domain")
    ax.set_ylim(0, 1.15 if many else 1.08)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    if title is not None:
        ax.set_title(title)
    return figure
