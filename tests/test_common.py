"""scikit-learn's estimator checks over every estimator that skicm defines, found automatically."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings

from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

import skicm
from skicm.exceptions import NoInvarianceWarning


def _all_estimators():
    """(estimator class, module) for every public class with ``fit`` defined in skicm."""
    found = {}
    for module_info in pkgutil.walk_packages(skicm.__path__, prefix="skicm."):
        if any(part.startswith("_") for part in module_info.name.split(".")[1:-1]):
            continue
        module = importlib.import_module(module_info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, BaseEstimator)
                and hasattr(cls, "fit")
                and cls.__module__.startswith("skicm.")
                and not name.startswith("_")
            ):
                found[cls] = importlib.import_module(cls.__module__)
    return sorted(found.items(), key=lambda item: item[0].__name__)


def _check_instance(cls, module):
    """The instance to check: one the module configures for offline use, else the default."""
    if hasattr(cls, "_common_check_instance"):
        return cls._common_check_instance()
    factory = getattr(module, "_common_check_instance", None)
    if factory is not None:
        instance = factory()
        if isinstance(instance, cls):
            return instance
    return cls()


ESTIMATORS = _all_estimators()
INSTANCES = [_check_instance(cls, module) for cls, module in ESTIMATORS]
EXPECTED_FAILED = {
    cls: getattr(module, "_EXPECTED_FAILED_CHECKS", {}) for cls, module in ESTIMATORS
}


def test_every_public_estimator_is_checked():
    names = {type(instance).__name__ for instance in INSTANCES}
    assert {"InvariantProjector"} <= names
    assert set(names) >= {name for name in skicm.__all__ if hasattr(getattr(skicm, name), "fit")}


@parametrize_with_checks(
    INSTANCES, expected_failed_checks=lambda estimator: EXPECTED_FAILED[type(estimator)]
)
def test_sklearn_compatible_estimator(estimator, check):
    with warnings.catch_warnings():
        # Generic checks fit on random data with no interventional pairs: the projector
        # rightly says no invariance was learned; that is not what these checks test.
        warnings.simplefilter("ignore", NoInvarianceWarning)
        check(estimator)
