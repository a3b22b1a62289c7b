"""Zero-shot prompts from JSON files: class -> prompts (CuPL), or a list of templates."""

from __future__ import annotations

import json
import os
from pathlib import Path

from skicm._templates import _check_placeholder_templates

__all__ = ["load_prompts"]


def _is_prompt_file(value):
    """Whether a ``templates`` value names a file (a path, or a string ending in ``.json``)."""
    if isinstance(value, os.PathLike):
        return True
    return isinstance(value, str) and "{}" not in value and value.lower().endswith(".json")


class _ClassPrompts(dict):
    """Class name -> prompts read from a file; ``source`` names the file in later errors."""

    source = "templates"


def _check_class_prompts(prompts, name="templates"):
    """Validate a class -> prompts mapping; return it as ``{str: list of str}``.

    The errors name where the mapping came from: the file it was read from (its ``source``,
    kept in the result), else the parameter ``name``.
    """
    source = getattr(prompts, "source", name)
    if not prompts:
        raise ValueError(f"{source} maps no class to prompts: give at least one class.")
    checked = {}
    for key, values in prompts.items():
        if not isinstance(key, str):
            raise ValueError(f"{source}: class names must be strings, got {key!r}.")
        if isinstance(values, str) or not isinstance(values, list | tuple):
            raise ValueError(
                f"{source}: the prompts of class {key!r} must be a list of strings, got "
                f"{type(values).__name__} {values!r}."
            )
        if not values:
            raise ValueError(
                f"{source}: class {key!r} has an empty list of prompts; give it at least one."
            )
        bad = [value for value in values if not isinstance(value, str) or not value.strip()]
        if bad:
            raise ValueError(
                f"{source}: the prompts of class {key!r} must be non-empty strings; "
                f"{bad[:3]!r} are not."
            )
        checked[key] = list(values)
    checked = _ClassPrompts(checked)
    checked.source = source
    return checked


def load_prompts(path):
    """Read zero-shot prompts from a JSON file.

    Two layouts are read, those of CLIP_benchmark's ``--custom_template_file``:

    - an object mapping each class name to its own full prompts, CuPL's format
      (``{"cat": ["a photo of a cat, a small furry pet.", ...], ...}``): a class is
      represented by the mean of its own prompts' embeddings;
    - a list of templates, each with one ``{c}`` or one ``{}`` for the class name
      (``["a photo of a {c}.", "a sketch of a {c}."]``); ``{c}`` is returned as ``{}``.

    Parameters
    ----------
    path : str or path-like
        The JSON file.

    Returns
    -------
    prompts : dict of str to list of str, or list of str
        Class name -> prompts, or templates with one ``{}``.

    Raises
    ------
    ValueError
        Naming the file, if it cannot be read, is not JSON, or holds neither layout: a class
        without prompts, a prompt that is not a string, a template without exactly one
        placeholder.

    See Also
    --------
    skicm.zero_shot.ZeroShotClassifier : takes such a file (or the dict itself) as
        ``templates``.

    Examples
    --------
    >>> import json, tempfile, os
    >>> from skicm.prompts import load_prompts
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "prompts.json")
    >>> with open(path, "w") as file:
    ...     json.dump({"cat": ["a photo of a cat.", "a cat, a small pet."]}, file)
    >>> load_prompts(path)
    {'cat': ['a photo of a cat.', 'a cat, a small pet.']}
    >>> with open(path, "w") as file:
    ...     json.dump(["a photo of a {c}.", "a sketch of a {c}."], file)
    >>> load_prompts(path)
    ['a photo of a {}.', 'a sketch of a {}.']
    """
    source = f"prompt file {os.fspath(path)!r}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"Cannot read the {source}: {error.strerror or error}.") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"The {source} is not UTF-8 text: {error}.") from error
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"The {source} is not JSON ({error.msg} at line {error.lineno}, column "
            f"{error.colno}); expected an object of class name -> list of prompts, or a list "
            "of templates with {c}."
        ) from error
    if isinstance(content, dict):
        return _check_class_prompts(content, source)
    if isinstance(content, list):
        if not content:
            raise ValueError(f"The {source} holds an empty list of templates.")
        templates = [t.replace("{c}", "{}") if isinstance(t, str) else t for t in content]
        _check_placeholder_templates(templates, f"The templates of the {source}")
        return templates
    raise ValueError(
        f"The {source} holds a JSON {type(content).__name__}; expected an object of class name "
        "-> list of prompts, or a list of templates with {c}."
    )
