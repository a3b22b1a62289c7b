"""Warnings and errors raised by skicm."""

__all__ = ["NoInvarianceWarning"]


class NoInvarianceWarning(UserWarning):
    """Fitted without usable interventional data, so no invariance was learned.

    Raised by :class:`skicm.InvariantProjector` when ``fit`` receives no interventional data
    (the projection is then the top second-moment directions, as in uncentred PCA) or when
    every interventional difference is zero.
    """
