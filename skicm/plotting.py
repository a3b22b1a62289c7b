"""Diagnostic plots: the spectrum of the CLIP-ICM objective and per-domain accuracies.

matplotlib is an optional dependency (``pip install skicm[plot]``); it is imported only when a
plot is drawn. :func:`spectrum_diagnostics` returns the plotted numbers without matplotlib.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import Bunch
from sklearn.utils.validation import check_is_fitted

from skicm._matplotlib import pyplot as _pyplot
from skicm.evaluation import plot_domain_scores
from skicm.projection import count_positive_eigenvalues

__all__ = ["plot_domain_scores", "plot_spectrum", "spectrum_diagnostics"]


def spectrum_diagnostics(projector):
    """Return the numbers behind :func:`plot_spectrum` for a fitted projector.

    Parameters
    ----------
    projector : InvariantProjector
        A fitted :class:`~skicm.InvariantProjector`.

    Returns
    -------
    diagnostics : :class:`~sklearn.utils.Bunch`
        eigenvalues : ndarray of shape (n_features,)
            Spectrum of ``M = Z^T Z / n - alpha * Delta^T Delta / m``, decreasing.
        n_components : int
            The chosen rank (the first ``n_components`` eigenvectors are kept).
        n_positive : int
            Number of positive eigenvalues by the rule of ``n_components="auto"``
            (:func:`skicm.projection.count_positive_eigenvalues`, which ignores round-off).
            Directions past it carry more intervention than signal.
        alpha : float
            The weight of the intervention term.
        signal_variance, intervention_variance, invariance_ratio : ndarray of shape \
(n_components,)
            Per kept direction: second moment of the embeddings, of the interventional
            differences, and their ratio (0 = invariant, about 2 = fully resampled by
            interventions).
        kept_eigenvalue_fraction : float
            Sum of the kept positive eigenvalues over the sum of all positive eigenvalues.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm import InvariantProjector
    >>> from skicm.plotting import spectrum_diagnostics
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> X_intervened = X.copy()
    >>> X_intervened[:, 2] = rng.normal(size=200)  # intervening resamples feature 2
    >>> projector = InvariantProjector(n_components=2).fit(X, X_intervened=X_intervened)
    >>> diagnostics = spectrum_diagnostics(projector)
    >>> diagnostics.n_components, diagnostics.n_positive
    (2, 2)
    >>> np.round(diagnostics.invariance_ratio, 2)
    array([0., 0.])
    """
    check_is_fitted(projector, ["eigenvalues_", "components_"])
    eigenvalues = np.asarray(projector.eigenvalues_, dtype=float)
    # The very rule of n_components="auto" (one implementation, in skicm.projection).
    n_positive = count_positive_eigenvalues(eigenvalues)
    positive = eigenvalues[:n_positive]
    k = int(projector.n_components_)
    kept_positive = np.clip(eigenvalues[:k], 0, None).sum()
    return Bunch(
        eigenvalues=eigenvalues,
        n_components=k,
        n_positive=n_positive,
        alpha=float(projector.alpha),
        signal_variance=np.asarray(projector.signal_variance_, dtype=float),
        intervention_variance=np.asarray(projector.intervention_variance_, dtype=float),
        invariance_ratio=np.asarray(projector.invariance_ratio_, dtype=float),
        kept_eigenvalue_fraction=float(kept_positive / positive.sum()) if positive.size else 0.0,
    )


def _symlog_ticks(ax, values, linear_threshold, max_ticks=7):
    """Major ticks of a symlog axis that never crowd: 0 and decades at least 1/max_ticks apart.

    matplotlib's symlog locator puts a tick at every decade and at +-linthresh beside 0, so on a
    spectrum that spans many decades their labels overlap, worst around 0.
    """
    from matplotlib.ticker import FixedLocator, NullLocator

    low, high = min(float(np.min(values)), 0.0), max(float(np.max(values)), 0.0)
    candidates = []
    first = int(np.floor(np.log10(linear_threshold)))
    for sign, extreme in ((1.0, high), (-1.0, -low)):
        if extreme > 0:
            last = int(np.ceil(np.log10(extreme)))
            candidates += [sign * 10.0**e for e in range(min(first, last), last + 1)]
    transform = ax.yaxis.get_transform()

    def position(value):
        return float(np.ravel(transform.transform(np.array([value], dtype=float)))[0])

    span = max(position(high), position(linear_threshold)) - min(
        position(low), position(-linear_threshold)
    )
    gap = span / max_ticks
    chosen = [0.0]
    for sign in (1.0, -1.0):
        # Outermost decade first, so the labels reach the extreme eigenvalues.
        for value in sorted((c for c in candidates if np.sign(c) == sign), key=abs, reverse=True):
            if all(abs(position(value) - position(kept)) >= gap for kept in chosen):
                chosen.append(value)
    ax.yaxis.set_major_locator(FixedLocator(sorted(chosen)))
    ax.yaxis.set_minor_locator(NullLocator())


def plot_spectrum(projector, *, axes=None, title=None):
    """Plot the spectrum of the CLIP-ICM objective and the invariance of the kept directions.

    Left: the eigenvalues of ``M`` in decreasing order (symmetric-log scale, since they change
    sign; tick labels spaced so they never overlap), kept directions in colour, the chosen
    rank as a dashed line. Right: the invariance ratio of each kept direction (intervention
    over signal second moment; low is invariant). A good rank stops where the eigenvalues
    cross zero or where the ratio climbs.

    Parameters
    ----------
    projector : InvariantProjector
        A fitted :class:`~skicm.InvariantProjector`.
    axes : sequence of two matplotlib Axes or None, default=None
        Where to draw; None creates a new figure.
    title : str or None, default=None
        Figure title.

    Returns
    -------
    figure : matplotlib.figure.Figure
        The figure holding ``axes``; ``figure.savefig(path)`` writes it.

    See Also
    --------
    spectrum_diagnostics : The same numbers, without matplotlib.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skicm.demo import run_colored_digits_demo
    >>> from skicm.plotting import plot_spectrum
    >>> figure = plot_spectrum(run_colored_digits_demo(fast=True).projector)
    >>> len(figure.axes)
    2
    """
    plt = _pyplot()
    diagnostics = spectrum_diagnostics(projector)
    if axes is None:
        figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    else:
        if len(axes) != 2:
            raise ValueError(f"axes must hold two matplotlib Axes, got {len(axes)}.")
        figure = axes[0].figure
    spectrum_ax, ratio_ax = axes
    k = diagnostics.n_components
    eigenvalues = diagnostics.eigenvalues
    index = np.arange(1, len(eigenvalues) + 1)
    kept = index <= k
    spectrum_ax.scatter(index[kept], eigenvalues[kept], s=12, label="kept")
    spectrum_ax.scatter(index[~kept], eigenvalues[~kept], s=12, color="0.6", label="dropped")
    spectrum_ax.axhline(0, color="black", linewidth=0.8)
    spectrum_ax.axvline(k + 0.5, color="C3", linestyle="--", label=f"rank {k}")
    positive = eigenvalues[eigenvalues > 0]
    linear_threshold = float(np.median(np.abs(positive))) if positive.size else 0.0
    if not linear_threshold > 0:
        nonzero = np.abs(eigenvalues[eigenvalues != 0])
        linear_threshold = float(nonzero.min()) if nonzero.size else 1.0
    spectrum_ax.set_yscale("symlog", linthresh=linear_threshold)
    _symlog_ticks(spectrum_ax, eigenvalues, linear_threshold)
    spectrum_ax.set_xlabel("eigenvalue index (decreasing)")
    spectrum_ax.set_ylabel(f"eigenvalue of M (alpha={diagnostics.alpha:g})")
    spectrum_ax.set_title("spectrum of M = signal - alpha * intervention")
    spectrum_ax.legend(loc="best", fontsize="small")

    ratio_ax.bar(np.arange(1, k + 1), diagnostics.invariance_ratio, color="C0")
    ratio_ax.set_xlabel("kept direction")
    ratio_ax.set_ylabel("intervention / signal second moment")
    ratio_ax.set_title("invariance of kept directions (0 = invariant)")
    if title is not None:
        figure.suptitle(title)
    return figure
