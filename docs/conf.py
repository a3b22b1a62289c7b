"""Sphinx configuration: the Markdown guides (MyST) plus an API reference from the docstrings."""

import skicm

project = "skicm"
author = "skicm developers"
release = version = skicm.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

autosummary_generate = True
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
myst_heading_anchors = 3
# Offline builds: cross-references to other projects are written, not resolved.
intersphinx_mapping = {}

html_theme = "pydata_sphinx_theme"
html_title = "skicm"
suppress_warnings = ["ref.ref"]  # inherited scikit-learn docstrings cite its own labels
