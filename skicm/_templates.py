"""The check of prompt templates: one ``{}`` where the class name goes."""

from __future__ import annotations


def _check_placeholder_templates(templates, name, *, alternatives=""):
    """Check that every template is a string with exactly one ``{}`` (the class name's place).

    The one check of prompt templates, for the domain prompts of
    :class:`skicm.interventions.TextInterventions`, the zero-shot templates of
    :mod:`skicm.zero_shot` and prompt files (:mod:`skicm.prompts`). This module imports
    nothing of skicm, so each of them can import it.

    Parameters
    ----------
    templates : list
        The templates.
    name : str
        The parameter or option they were given as, for the message.
    alternatives : str, default=""
        What else the parameter accepts, appended to the message (e.g. named sets).

    Raises
    ------
    ValueError
        Naming ``name`` and the templates that do not hold exactly one ``{}``.

    Examples
    --------
    >>> from skicm._templates import _check_placeholder_templates
    >>> _check_placeholder_templates(["a photo of a {}.", "a sketch of a {}."], "templates")
    >>> _check_placeholder_templates(["a photo."], "templates")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: templates must be strings with exactly one '{}' ..., where ['a photo.'] are not.
    """
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
    if bad:
        raise ValueError(
            f"{name} must be strings with exactly one '{{}}' for the class name{alternatives}; "
            f"got {templates!r}, where {bad} are not."
        )
