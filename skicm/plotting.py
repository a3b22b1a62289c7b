"""Diagnostic plots: the spectrum of the CLIP-ICM objective and per-domain accuracies.

matplotlib is an optional dependency (``pip install skicm[plot]``); it is imported only when a
plot is drawn. :func:`spectrum_diagnostics` returns the plotted numbers without matplotlib.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import Bunch
from sklearn.utils.validation import check_is_fitted

from skicm.evaluation import _check_same_domains
from skicm.projection import count_positive_eigenvalues

__all__ = ["plot_domain_scores", "plot_spectrum", "spectrum_diagnostics"]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "skicm's plots need matplotlib: pip install matplotlib (or skicm[plot])."
        ) from error
    return plt


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
            Number of positive eigenvalues: the rank ``n_components="auto"`` picks (up to
            round-off). Directions past it carry more intervention than signal.
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
    # The rule of n_components="auto", in the precision the projector was fitted in.
    n_positive = count_positive_eigenvalues(eigenvalues, projector.components_.dtype)
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


def plot_spectrum(projector, *, axes=None, title=None):
    """Plot the spectrum of the CLIP-ICM objective and the invariance of the kept directions.

    Left: the eigenvalues of ``M`` in decreasing order (symmetric-log scale, since they change
    sign), kept directions in colour, the chosen rank as a dashed line. Right: the invariance
    ratio of each kept direction (intervention over signal second moment; low is invariant).
    A good rank stops where the eigenvalues cross zero or where the ratio climbs.

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
    index = np.arange(1, len(diagnostics.eigenvalues) + 1)
    kept = index <= k
    spectrum_ax.scatter(index[kept], diagnostics.eigenvalues[kept], s=12, label="kept")
    spectrum_ax.scatter(
        index[~kept], diagnostics.eigenvalues[~kept], s=12, color="0.6", label="dropped"
    )
    spectrum_ax.axhline(0, color="black", linewidth=0.8)
    spectrum_ax.axvline(k + 0.5, color="C3", linestyle="--", label=f"rank {k}")
    positive = diagnostics.eigenvalues[diagnostics.eigenvalues > 0]
    linear_threshold = float(np.median(np.abs(positive))) if positive.size else 1.0
    spectrum_ax.set_yscale("symlog", linthresh=linear_threshold or 1.0)
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


def plot_domain_scores(results, *, ax=None, title=None):
    """Bar chart of leave-one-domain-out scores, one group of bars per held-out domain.

    Parameters
    ----------
    results : mapping of str to DomainScores
        Scores per method, from :func:`skicm.evaluation.leave_one_domain_out`.
    ax : matplotlib Axes or None, default=None
        Where to draw; None creates a new figure.
    title : str or None, default=None
        Axes title.

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
    >>> figure = plot_domain_scores({"model": scores})
    >>> len(figure.axes)
    1
    """
    plt = _pyplot()
    first = _check_same_domains(results)
    if ax is None:
        figure, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    else:
        figure = ax.figure
    labels = [*map(str, first.domains), "mean"]
    width = 0.8 / len(results)
    for i, (name, scores) in enumerate(results.items()):
        values = [*scores.scores, scores.mean_score]
        ax.bar(
            np.arange(len(labels)) + (i - (len(results) - 1) / 2) * width, values, width, label=name
        )
    ax.set_xticks(np.arange(len(labels)), labels)
    ax.set_xlabel("held-out domain")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1)
    ax.legend(loc="best", fontsize="small")
    if title is not None:
        ax.set_title(title)
    return figure
