"""numpydoc validation of every public class, function and method of skicm."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest
from _public_api import public_modules

numpydoc_validate = pytest.importorskip("numpydoc.validate")

PUBLIC_MODULES = public_modules()
# Missing docstring, undocumented / unknown parameters, parameter without type or description,
# missing summary, missing Returns.
CHECKS = {"GL08", "PR01", "PR02", "PR03", "PR07", "PR10", "RT01", "SS01"}


def _public_objects():
    """``{qualified name: is a member (method)}`` of everything the public modules export."""
    seen = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            qualname = f"{obj.__module__}.{obj.__qualname__}"
            seen[qualname] = False
            if inspect.isclass(obj):
                for attribute, member in vars(obj).items():
                    if not attribute.startswith("_") and inspect.isfunction(member):
                        seen[_documented_in(obj, attribute)] = True
    return sorted(seen.items())


def _documented_in(cls, attribute):
    """Where the docstring of ``cls.attribute`` is written: an override without a docstring of
    its own inherits its base's (as ``inspect.getdoc`` and Sphinx autodoc read it)."""
    for base in cls.__mro__:
        member = vars(base).get(attribute)
        if member is not None and member.__doc__:
            return f"{base.__module__}.{base.__qualname__}.{attribute}"
    return f"{cls.__module__}.{cls.__qualname__}.{attribute}"


@pytest.mark.parametrize(("qualname", "is_member"), _public_objects())
def test_public_docstring_follows_numpydoc(qualname, is_member):
    result = numpydoc_validate.validate(qualname)
    obj = numpydoc_validate.Validator._load_obj(qualname)
    codes = set(CHECKS)
    if dataclasses.is_dataclass(obj):
        codes.discard("PR01")  # fields are documented as Attributes, not as parameters
    elif not is_member and not (inspect.isclass(obj) and issubclass(obj, Warning)):
        codes.add("EX01")  # public classes and functions show a runnable example
    errors = [(code, message) for code, message in result["errors"] if code in codes]
    assert not errors, f"{qualname}: {errors}"
