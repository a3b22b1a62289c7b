"""matplotlib, imported only when a plot is drawn (it is an optional dependency)."""

from __future__ import annotations


def pyplot():
    """Return ``matplotlib.pyplot``, or raise an ImportError saying how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "skicm's plots need matplotlib: pip install matplotlib (or skicm[plot])."
        ) from error
    return plt
