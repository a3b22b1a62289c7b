"""Sphinx configuration: the Markdown guides (MyST), an API reference from the docstrings and a
gallery of examples (sphinx-gallery) executed during the build."""

import importlib
import inspect
import os
import zlib
from pathlib import Path

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
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
templates_path = ["_templates"]

autosummary_generate = True
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
myst_heading_anchors = 3

html_theme = "pydata_sphinx_theme"
html_title = "skicm"
suppress_warnings = ["ref.ref"]  # inherited scikit-learn docstrings cite its own labels

# --- Gallery -------------------------------------------------------------------------------------
# Every examples/plot_*.py runs during the build (offline, CPU, matplotlib's Agg backend); a
# failing example fails the build. The backreferences feed the "Examples using skicm.X"
# mini-galleries that docs/_templates/autosummary/*.rst put on each API page. To build quickly
# while writing one example: sphinx-build -D sphinx_gallery_conf.filename_pattern=plot_spectrum ...
# (the other examples are then rendered without running), or run the script itself with python.
os.environ.setdefault("MPLBACKEND", "Agg")
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "backreferences_dir": "gen_modules/backreferences",
    "doc_module": ("skicm",),
    "image_scrapers": ("matplotlib",),
    "min_reported_time": 0,
    "remove_config_comments": True,
    "download_all_examples": False,
}

# --- Links to scikit-learn, NumPy and PyTorch (intersphinx) --------------------------------------
# Intersphinx needs each project's objects.inv, normally fetched from its website. Builds here run
# without internet, and an unreachable inventory is a warning (an error under -W). So each project
# lists two inventory locations, tried in order:
#   1. None: the project's own objects.inv online (authoritative, used whenever reachable);
#   2. a local objects.inv written below from the *installed* package: its public names and the
#      URL scheme of its API pages (e.g. sklearn.pipeline.Pipeline ->
#      modules/generated/sklearn.pipeline.Pipeline.html#sklearn.pipeline.Pipeline).
# Sphinx reports the failed first location only as an info message when the second one works, so
# the -W build passes offline, and in both cases the rendered links point at the projects' real
# pages (offline the fallback covers the public API, not the narrative pages). Set
# SKICM_DOCS_OFFLINE=1 to skip the network attempt altogether.
_INVENTORY_DIR = Path(__file__).resolve().parent / "_build" / "intersphinx"
intersphinx_timeout = 5


def _write_inventory(path, project_name, project_version, entries):
    """Write ``entries`` ``(name, role, uri)`` as a Sphinx objects.inv (format version 2)."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project_name}\n"
        f"# Version: {project_version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    lines = "".join(f"{name} py:{role} 1 {uri} -\n" for name, role, uri in sorted(set(entries)))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(header.encode() + zlib.compress(lines.encode()))
    temporary.replace(path)


def _public_names(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name in dir(module) if not name.startswith("_")]
    for name in names:
        try:
            yield name, getattr(module, name)
        except (AttributeError, ImportError):  # e.g. experimental names not switched on
            continue


def _role(obj):
    if inspect.isclass(obj):
        return "class"
    if callable(obj):
        return "function"
    return None


def _sklearn_entries():
    import pkgutil

    import sklearn

    entries, seen = [], set()

    def add(qualified, obj, package):
        # Only names defined inside the package (its private modules included): a module's
        # imports of other modules' names are documented elsewhere.
        role = _role(obj)
        defined_in = getattr(obj, "__module__", None) or ""
        if role is None or qualified in seen or not defined_in.startswith(package):
            return
        seen.add(qualified)
        uri = f"modules/generated/{qualified}.html#$"
        entries.append((qualified, role, uri))
        if role == "class":
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and callable(member):
                    entries.append((f"{qualified}.{attr}", "method", uri))

    for info in pkgutil.iter_modules(sklearn.__path__):
        if info.name.startswith("_") or info.name in {"tests", "externals"}:
            continue
        try:
            module = importlib.import_module(f"sklearn.{info.name}")
        except ImportError:
            continue
        entries.append((module.__name__, "module", f"api/{module.__name__}.html#module-$"))
        for name, obj in _public_names(module):
            add(f"{module.__name__}.{name}", obj, module.__name__)
        # One level down (sklearn.utils.validation, sklearn.metrics.pairwise, ...), for the
        # names not already documented under the parent module. sklearn.experimental's
        # submodules are skipped: importing them switches experimental estimators on.
        if info.name == "experimental":
            continue
        for child_info in pkgutil.iter_modules(getattr(module, "__path__", [])):
            if child_info.name.startswith("_") or child_info.name in {"tests", "externals"}:
                continue
            try:
                child = importlib.import_module(f"{module.__name__}.{child_info.name}")
            except ImportError:
                continue
            for name, obj in _public_names(child):
                if not hasattr(module, name):
                    add(f"{child.__name__}.{name}", obj, child.__name__)
    return entries


def _numpy_entries():
    import numpy

    entries = [("numpy", "module", "reference/index.html#module-$")]
    for module in (numpy, numpy.linalg, numpy.fft):
        for name, obj in _public_names(module):
            role = _role(obj)
            if role is None or name.startswith("_"):
                continue
            qualified = f"{module.__name__}.{name}"
            if inspect.isclass(obj) and issubclass(obj, numpy.generic):
                uri = "reference/arrays.scalars.html#$"  # scalar types share one page
            else:
                uri = f"reference/generated/{qualified}.html#$"
            entries.append((qualified, role, uri))
    entries += [
        ("numpy.random.default_rng", "function", "reference/random/generator.html#$"),
        ("numpy.random.Generator", "class", "reference/random/generator.html#$"),
        ("numpy.random.RandomState", "class", "reference/random/legacy.html#$"),
    ]
    return entries


def _torch_entries():
    import torch
    import torch.nn.functional

    entries = [
        ("torch", "module", "torch.html#module-$"),
        ("torch.Tensor", "class", "tensors.html#$"),
        ("torch.device", "class", "tensor_attributes.html#$"),
        ("torch.dtype", "class", "tensor_attributes.html#$"),
        ("torch.utils.data.DataLoader", "class", "data.html#$"),
        ("torch.utils.data.Dataset", "class", "data.html#$"),
        ("torch.random.fork_rng", "function", "random.html#$"),
        (
            "torch.inference_mode",
            "class",
            "generated/torch.autograd.grad_mode.inference_mode.html#$",
        ),
    ]
    documented = {name for name, _, _ in entries}
    for module in (torch, torch.nn, torch.nn.functional):
        for name, obj in _public_names(module):
            qualified = f"{module.__name__}.{name}"
            role = _role(obj)
            if role is None or qualified in documented or inspect.ismodule(obj):
                continue
            entries.append((qualified, role, f"generated/{qualified}.html#$"))
    return entries


def _local_inventory(package, project_name, entries_function):
    """Path of an objects.inv for the installed ``package``, written once per version."""
    module = importlib.import_module(package)
    path = _INVENTORY_DIR / f"{package}-{module.__version__}-objects.inv"
    if not path.is_file():
        _write_inventory(path, project_name, module.__version__, entries_function())
    return str(path)


def _inventory_locations(package, project_name, entries_function):
    local = _local_inventory(package, project_name, entries_function)
    return (local,) if os.environ.get("SKICM_DOCS_OFFLINE") else (None, local)


intersphinx_mapping = {
    "sklearn": (
        "https://scikit-learn.org/stable/",
        _inventory_locations("sklearn", "scikit-learn", _sklearn_entries),
    ),
    "numpy": (
        "https://numpy.org/doc/stable/",
        _inventory_locations("numpy", "NumPy", _numpy_entries),
    ),
    "torch": (
        "https://docs.pytorch.org/docs/stable/",
        _inventory_locations("torch", "PyTorch", _torch_entries),
    ),
}
