"""Warnings and errors raised by skicm."""

__all__ = ["NoInvarianceWarning", "RankWarning"]


class NoInvarianceWarning(UserWarning):
    """Fitted without usable interventional data, so no invariance was learned.

    Raised by :class:`skicm.InvariantProjector` when ``fit`` receives no interventional data
    (the projection is then the top second-moment directions, as in uncentred PCA) or when
    every interventional difference is zero.
    """


class RankWarning(UserWarning):
    """More directions were requested than the training data can support; fewer were kept.

    Raised by :class:`skicm.InvariantProjector` (``fit``, ``partial_fit``,
    ``fit_from_statistics`` and ``truncated``) when an integer ``n_components`` exceeds the
    rank of the training embeddings (at most the number of rows seen, one less with
    ``center=True``). Directions beyond that rank would span round-off noise, different on
    every machine, so the projector keeps ``data_rank_`` directions and says so; the message
    names ``n_components``, the rows and the number of directions kept.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from skicm import InvariantProjector
    >>> from skicm.exceptions import RankWarning
    >>> X = np.random.default_rng(0).standard_normal((3, 8))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     projector = InvariantProjector(n_components=5).fit(X, X_intervened=X[::-1])
    >>> projector.n_components_
    3
    >>> any(issubclass(w.category, RankWarning) for w in caught)
    True
    """
