"""Every public name of every public skicm module is documented on the API pages (docs/api.rst).

A module is public when no part of its dotted name starts with an underscore; its public names
are its ``__all__``. A name counts as documented when an ``autosummary`` entry of docs/api.rst
resolves (under the ``currentmodule`` in force) to the same object, so documenting
``skicm.InvariantProjector`` covers its re-export ``skicm.projection.InvariantProjector``.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from _public_api import public_modules

API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.rst"


def documented_entries(page=API_PAGE):
    """(fully qualified name, line) of every autosummary entry of the page."""
    entries = []
    module = None
    in_autosummary = False
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        current = re.match(r"\.\.\s+currentmodule::\s+(\S+)", line)
        if current:
            module = current[1]
            in_autosummary = False
            continue
        if re.match(r"\.\.\s+autosummary::", line):
            in_autosummary = True
            continue
        if not in_autosummary:
            continue
        if re.match(r"\S", line):  # a heading or other directive ends the entry list
            in_autosummary = False
            continue
        entry = line.strip()
        if not entry or entry.startswith(":"):
            continue
        entries.append((f"{module}.{entry}" if module else entry, number))
    return entries


def resolve(qualified_name):
    """The object a dotted name refers to: the longest importable module prefix, then attributes."""
    parts = qualified_name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            target = getattr(target, attribute)
        return target
    raise ImportError(qualified_name)


def test_the_page_parser_reads_entries_under_their_current_module(tmp_path):
    page = tmp_path / "api.rst"
    page.write_text(
        ".. currentmodule:: skicm\n\n.. autosummary::\n   :toctree: generated\n\n"
        "   InvariantProjector\n   projection.count_positive_eigenvalues\n\nHeading\n-------\n\n"
        "   NotAnEntry\n"
    )
    assert [name for name, _ in documented_entries(page)] == [
        "skicm.InvariantProjector",
        "skicm.projection.count_positive_eigenvalues",
    ]


def test_every_api_page_entry_resolves():
    missing = []
    for name, line in documented_entries():
        try:
            resolve(name)
        except (ImportError, AttributeError):
            missing.append(f"docs/api.rst:{line}: {name}")
    assert not missing, "entries that name nothing:\n" + "\n".join(missing)


@pytest.mark.parametrize("module_name", public_modules())
def test_every_public_name_is_on_the_api_pages(module_name):
    module = importlib.import_module(module_name)
    public = getattr(module, "__all__", None)
    assert public is not None, f"{module_name} has no __all__: its public names are unknown"
    documented = {id(resolve(name)) for name, _ in documented_entries()}
    undocumented = [
        name
        for name in public
        if not name.startswith("__") and id(getattr(module, name)) not in documented
    ]
    assert not undocumented, f"{module_name}: not on docs/api.rst: {undocumented}"
