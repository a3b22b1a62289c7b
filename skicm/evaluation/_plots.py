"""The per-domain accuracy plot of :class:`EvaluationResults` and of :class:`DomainScores`."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from skicm._matplotlib import pyplot as _pyplot
from skicm.evaluation._domain_scores import _check_same_domains

#: Smallest font size (points) of a bar's value label before the figure is widened instead.
_SMALLEST_LABEL_POINTS = 5.0
#: A figure this plot creates grows to at most this width (inches) to keep its labels apart.
_WIDEST_FIGURE_INCHES = 40.0


def _size_text(sizes):
    return str(sizes[0]) if sizes[0] == sizes[-1] else f"{sizes[0]}-{sizes[-1]}"


def _tick_labels(domains, sizes_by_split):
    """Domain names with their test sizes ("photo\\nn=10"), and "Average" with all of them."""
    labels = []
    for domain in [*domains, None]:
        name = "Average" if domain is None else str(domain)
        parts = []
        for split, sizes in sizes_by_split.items():
            if sizes.get(domain):
                text = _size_text(sizes[domain])
                parts.append(text if split == "all" else f"{text} {split}")
        labels.append(f"{name}\nn={', '.join(parts)}" if parts else name)
    return labels


def _domain_series(results):
    """(x labels, {series name: (values %, errors % or None)}, chance %) of results."""
    if not isinstance(results, Mapping) and hasattr(results, "_rows"):  # EvaluationResults
        rows = results._rows()
        splits = list(dict.fromkeys(split for _, _, split in rows))
        labels = _tick_labels(results.domains, {s: results._test_sizes(s) for s in splits})
        series = {}
        for label, method, split in rows:
            stats = [results.accuracy(method, d, classes=split) for d in [*results.domains, None]]
            series[label] = (
                100 * np.array([m for m, _ in stats]),
                100 * np.array([s for _, s in stats]),
            )
        return labels, series, 100 * results.chance
    first = _check_same_domains(results)
    sizes = {str(d): [int(n)] for d, n in zip(first.domains, first.n_test)}
    sizes[None] = [int(np.sum(first.n_test))]
    labels = _tick_labels(list(map(str, first.domains)), {"all": sizes})
    series = {
        name: (100 * np.array([*scores.scores, scores.mean_score]), None)
        for name, scores in results.items()
    }
    return labels, series, None


def _overlapping(texts, renderer):
    """Whether two of the drawn ``texts`` overlap (their boxes in display pixels)."""
    boxes = [t.get_window_extent(renderer) for t in texts if t.get_visible() and t.get_text()]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def _crowding(ax, texts, renderer, pitch):
    """How many times wider the widest of ``texts`` is than ``pitch`` x-data units, with a
    margin of 15%: the factor by which the axes must grow for them to stand apart."""
    boxes = [t.get_window_extent(renderer) for t in texts if t.get_visible() and t.get_text()]
    if not boxes:
        return 1.0
    x0, x1 = ax.transData.transform([(0, 0), (pitch, 0)])[:, 0]
    return 1.15 * max(box.width for box in boxes) / max(abs(x1 - x0), 1e-9)


def _untangle(ax, value_labels, *, own_figure, bar_width):
    """Lay out the value labels (and domain ticks) until no two overlap.

    Measured on the drawn figure, not guessed from the number of bars: labels first turn
    vertical, then a figure this plot created grows wider, then the labels shrink (down to
    :data:`_SMALLEST_LABEL_POINTS`; on axes too narrow even then, the value labels are left
    out), and domain names that still collide turn vertical. Finally the y axis grows to
    hold the highest label, so no label runs into the title.
    """
    figure = ax.figure
    ticks = ax.get_xticklabels()

    def draw():
        figure.canvas.draw()
        return figure.canvas.get_renderer()

    renderer = draw()
    if _overlapping(value_labels, renderer):
        for text in value_labels:
            text.set_rotation(90)
        renderer = draw()
    while own_figure and (_overlapping(value_labels, renderer) or _overlapping(ticks, renderer)):
        width, height = figure.get_size_inches()
        if width >= _WIDEST_FIGURE_INCHES:
            break
        # Widen the axes by what the widest label needs over the space it has (at least 10%).
        need = max(
            _crowding(ax, value_labels, renderer, bar_width),
            _crowding(ax, ticks, renderer, 1.0),
            1.1,
        )
        axes_inches = ax.get_window_extent(renderer).width / figure.dpi
        figure.set_size_inches(min(width + (need - 1) * axes_inches, _WIDEST_FIGURE_INCHES), height)
        renderer = draw()
    while _overlapping(value_labels, renderer):
        size = value_labels[0].get_fontsize() - 0.5
        if size < _SMALLEST_LABEL_POINTS:
            break
        for text in value_labels:
            text.set_fontsize(size)
        renderer = draw()
    if _overlapping(value_labels, renderer):
        # Too many bars for these axes even in small type: no labels rather than a smudge.
        for text in value_labels:
            text.set_visible(False)
    if _overlapping(ticks, renderer):
        for text in ticks:  # vertical: their boxes are one or two lines wide
            text.set_rotation(90)
        renderer = draw()
    # Room above the highest label: the y axis reaches a little past its top.
    to_data = ax.transData.inverted()
    tops = [
        to_data.transform((0, t.get_window_extent(renderer).y1))[1]
        for t in value_labels
        if t.get_visible()
    ]
    low, high = ax.get_ylim()
    if tops and max(tops) > high:
        ax.set_ylim(low, max(tops) + 0.03 * (max(tops) - low))
        draw()


def plot_domain_scores(results, *, ax=None, title=None, chance=None):
    """Bar chart of held-out-domain accuracies (%), one group of bars per domain and the average.

    Every bar carries its value (whole percent) as a label, and every domain its number of
    test samples (``n=``) under its name: 0% of 10 images is one image short of 10%. A zero
    accuracy is drawn as an outlined bar of height zero, labelled ``0``; a dotted line marks
    chance accuracy. The labels are laid out on the drawn figure so that no two overlap
    (vertical when the bars are narrow, a wider figure when needed).

    Parameters
    ----------
    results : EvaluationResults or mapping of str to DomainScores
        From :func:`skicm.evaluation.evaluate_domain_generalization` (bars are means over
        seeds, error bars their standard deviation; one seed has none) or
        :func:`skicm.evaluation.leave_one_domain_out` per method.
    ax : matplotlib Axes or None, default=None
        Where to draw; None creates a new figure (which grows wider if its labels need it).
    title : str or None, default=None
        Axes title.
    chance : float or None, default=None
        Chance accuracy (a fraction, e.g. 0.5) for the dotted line; None takes
        ``results.chance`` of an :class:`~skicm.evaluation.EvaluationResults` and draws no
        line for a mapping.

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
    ...                       np.array([2, 2]), np.array([10, 4]))
    >>> figure = plot_domain_scores({"model": scores}, chance=0.5)
    >>> [text.get_text() for text in figure.axes[0].texts]
    ['50', '100', '75']
    >>> [text.get_text() for text in figure.axes[0].get_xticklabels()]
    ['a\\nn=10', 'b\\nn=4', 'Average\\nn=14']
    """
    plt = _pyplot()
    labels, series, default_chance = _domain_series(results)
    chance = default_chance if chance is None else 100 * chance
    own_figure = ax is None
    if own_figure:
        width_inches = max(7.0, 1.0 + 0.35 * len(labels) * len(series))
        figure, ax = plt.subplots(figsize=(width_inches, 4.2), layout="constrained")
    else:
        figure = ax.figure
    width = 0.8 / len(series)
    positions = np.arange(len(labels))
    value_labels = []
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
        value_labels += ax.bar_label(
            bars, labels=[f"{v:.0f}" for v in values], padding=2, fontsize="x-small"
        )
    if chance is not None:
        ax.axhline(
            chance, color="0.3", linestyle=":", linewidth=1.2, label=f"chance ({chance:.0f})"
        )
    ax.set_xticks(positions, labels)
    ax.set_xlabel("held-out domain (n = test samples)")
    ax.set_ylabel("accuracy (%) on the held-out domain")
    ax.set_ylim(0, 105)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    if title is not None:
        ax.set_title(title)
    _untangle(ax, value_labels, own_figure=own_figure, bar_width=width)
    return figure
