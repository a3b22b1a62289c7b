"""The public modules of skicm, found from the package (for the API-page and docstring tests)."""

from __future__ import annotations

import pkgutil
import re

import skicm

# Subcommand modules of the command line: documented by the command's --help and the docs pages
# (docs/evaluation.md, docs/distributed.md, docs/demo.md), not by an API reference entry.
COMMAND_MODULES = re.compile(r"^skicm\.cli\.[a-z]")


def public_modules():
    """Every module of skicm with no part of its dotted name starting with an underscore."""
    names = ["skicm"]
    for info in pkgutil.walk_packages(skicm.__path__, prefix="skicm."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        if COMMAND_MODULES.match(info.name):
            continue
        names.append(info.name)
    return sorted(names)
