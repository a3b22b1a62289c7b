"""The per-row labels of the group-aware baselines: ``groups``, or ``y`` standing in for them.

:class:`~skicm.baselines.ConceptErasure` (LEACE) and
:class:`~skicm.baselines.GroupBalancedProbe` (DFR) take ``groups`` in ``fit`` as
:class:`~skicm.InvariantProjector` does: not requested under metadata routing unless the user
opts in with ``set_fit_request(groups=True)`` (the splitters consume ``groups``), and read by
:func:`row_labels`.
"""

from __future__ import annotations

from sklearn.utils.validation import column_or_1d


def row_labels(values, n_samples, name, *, missing):
    """``values`` as a 1-d array of one entry per row of ``X``.

    Parameters
    ----------
    values : array-like of shape (n_samples,) or None
        The labels (``groups``, or ``y`` where it stands in for them).
    n_samples : int
        Rows of ``X``.
    name : str
        The name of ``values`` in the error of a wrong length.
    missing : str
        The error's message when ``values`` is None: what is needed and how to pass it.

    Returns
    -------
    labels : ndarray of shape (n_samples,)
        The labels (a column vector is raveled with a ``DataConversionWarning``).

    Raises
    ------
    ValueError
        When ``values`` is None (``missing``) or has another number of entries than rows.
    """
    if values is None:
        raise ValueError(missing)
    labels = column_or_1d(values, warn=True)
    if labels.shape[0] != n_samples:
        raise ValueError(
            f"{name} has {labels.shape[0]} entries but X has {n_samples} rows; {name} needs "
            "one entry per row of X."
        )
    return labels
