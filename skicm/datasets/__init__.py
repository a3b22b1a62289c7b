"""Data generators and loaders with known answers, for tests, docs and evaluation."""

from skicm.datasets._scm import make_linear_scm

__all__ = ["make_linear_scm"]
