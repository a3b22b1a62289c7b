"""Data generators and loaders with known answers, for tests, docs and evaluation."""

from skicm.datasets._colored_digits import make_colored_digits
from skicm.datasets._image_folders import load_image_folders
from skicm.datasets._mnist import load_mnist, make_colored_mnist, make_rotated_mnist
from skicm.datasets._scm import make_linear_scm

__all__ = [
    "load_image_folders",
    "load_mnist",
    "make_colored_digits",
    "make_colored_mnist",
    "make_linear_scm",
    "make_rotated_mnist",
]
