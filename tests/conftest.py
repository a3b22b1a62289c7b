"""Shared fixtures: a tiny random open_clip model (no downloads) and small real image files."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_clip_name():
    """Name of a tiny open_clip architecture registered at run time (use ``pretrained=None``)."""
    from skicm.model_configs import register_tiny_clip

    return register_tiny_clip()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
