"""Checks of the protocol's options, done before any data is embedded."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

#: Kinds of interventional data an invariant projector can learn from, one result column each:
#: ``"image"`` (aligned counterparts: image interventions or a data set's own counterparts),
#: ``"text"`` (domain prompts of the class names, encoded by the text tower), ``"groups"``
#: (class-conditional differences between the training domains).
INTERVENTION_KINDS = ("image", "text", "groups")

#: Model-selection rules: DomainBed's training-domain validation
#: (:class:`skicm.model_selection.TrainingDomainSplit`), leave-one-domain-out over the training
#: domains (:class:`sklearn.model_selection.LeaveOneGroupOut`), and test-domain selection
#: (``"oracle"``: an upper bound, always labelled as such).
SELECTION_RULES = ("training-domain", "leave-one-domain-out", "oracle")

#: Default hyperparameter grid of :func:`evaluate_domain_generalization`. ``n_components`` holds
#: ``"auto"``, integers, or fractions in (0, 1) of the embedding width.
DEFAULT_GRID = {
    "n_components": ("auto", 0.25, 0.5),
    "alpha": (0.1, 1.0, 10.0, 100.0),
    "C": (0.1, 1.0),
}

_SCORINGS = ("auto", "accuracy", "interventional", "worst-environment")


_TEMPLATE_SETS = ("openai-imagenet", "simple-imagenet", "skicm")


def _check_templates(templates):
    """Validate ``templates`` without importing open_clip."""
    if isinstance(templates, str) and "{}" not in templates:
        if templates not in _TEMPLATE_SETS:
            raise ValueError(
                f"templates must be one of {list(_TEMPLATE_SETS)} or templates with one '{{}}' "
                f"for the class name, got {templates!r}."
            )
        return
    values = [templates] if isinstance(templates, str) else list(templates)
    bad = [t for t in values if not isinstance(t, str) or t.count("{}") != 1]
    if not values or bad:
        raise ValueError(
            f"templates must hold strings with exactly one '{{}}' for the class name, got {bad}."
        )


def _as_tuple(values, name):
    if isinstance(values, (str, Real)):
        values = (values,)
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} must hold at least one value.")
    return values


def _resolve_n_components(values, n_features):
    resolved = []
    for value in _as_tuple(values, "n_components"):
        if value == "auto":
            resolved.append("auto")
        elif isinstance(value, Integral) and not isinstance(value, bool) and value >= 1:
            resolved.append(min(int(value), n_features))
        elif isinstance(value, Real) and 0 < value < 1:
            resolved.append(max(1, round(value * n_features)))
        else:
            raise ValueError(
                "n_components must hold 'auto', positive integers or fractions in (0, 1) of "
                f"the embedding width, got {value!r}."
            )
    return list(dict.fromkeys(resolved))


def _positive_values(values, name, *, allow_zero):
    values = _as_tuple(values, name)
    for value in values:
        ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (value == 0 and not allow_zero):
            kind = "non-negative" if allow_zero else "positive"
            raise ValueError(f"{name} must hold {kind} numbers, got {value!r}.")
    return [float(v) for v in dict.fromkeys(values)]


def _seed_list(seeds):
    if isinstance(seeds, Integral) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be a positive number of seeds or a list, got {seeds}.")
        return list(range(int(seeds)))
    seeds = [int(s) for s in _as_tuple(seeds, "seeds")]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must not repeat a seed, got {seeds}.")
    return seeds


def _has_text_tower(embedder):
    if embedder is None:
        return False
    return bool(getattr(embedder, "has_text_tower", hasattr(embedder, "encode_text")))


def _embedder_name(embedder):
    params = embedder.get_params() if hasattr(embedder, "get_params") else {}
    return str(params.get("model", params.get("model_name", type(embedder).__name__)))


def _check_classes(features, held_out):
    """A held-out class that no training domain has makes the probe's accuracy meaningless."""
    for domain in held_out:
        test = features.domains == domain
        train_classes = set(np.unique(features.y[~test]).tolist())
        test_classes = np.unique(features.y[test]).tolist()
        missing = [c for c in test_classes if c not in train_classes]
        if missing:
            names = _label_names(missing, features.class_names)
            training = sorted(set(features.domains[~test].tolist()))
            raise ValueError(
                f"the held-out domain {domain!r} has class{'es' if len(names) > 1 else ''} "
                f"{names} that no training domain ({', '.join(training)}) has: a classifier "
                "trained there can never predict it. If the domains name the same class "
                "differently (VLCS: hund / dog), map the folder names to one class name "
                "(class_aliases= in load_image_folders, --class-alias FOLDER=CLASS or "
                "--class-alias-file in skicm evaluate)."
            )
        if len(train_classes) < 2:
            raise ValueError(
                f"holding out {domain!r} leaves the training domains "
                f"{sorted(set(features.domains[~test].tolist()))} with the single class "
                f"{_label_names(sorted(train_classes), features.class_names)}; a classifier "
                "needs at least two classes."
            )


def _label_names(labels, class_names):
    if class_names is None:
        return [str(label) for label in labels]
    return [
        class_names[label] if isinstance(label, Integral) and 0 <= label < len(class_names)
        else str(label)
        for label in labels
    ]  # fmt: skip


def _resolve_options(
    features, *, embedder, interventions, zero_shot, scoring, selection, notes, open_class
):
    """Which kinds of interventional data and which zero-shot columns can run, and the scorer."""
    if selection not in SELECTION_RULES:
        raise ValueError(f"selection must be one of {list(SELECTION_RULES)}, got {selection!r}.")
    if scoring not in _SCORINGS:
        raise ValueError(f"scoring must be one of {list(_SCORINGS)}, got {scoring!r}.")
    text_tower = _has_text_tower(embedder)
    available = {
        "image": features.X_intervened is not None,
        "text": text_tower and features.class_names is not None,
        "groups": True,
    }
    reasons = {
        "image": "the data have no counterparts (images_intervened / data_intervened) and no "
        "images to intervene on",
        "text": (
            f"the encoder {_embedder_name(embedder)!r} has no text tower"
            if embedder is not None and not text_tower
            else "there is no text encoder (raw features)"
            if embedder is None
            else "the data name no classes (target_names)"
        ),
    }
    if interventions == "auto":
        kinds = [kind for kind in INTERVENTION_KINDS if available[kind]]
        for kind in INTERVENTION_KINDS:
            if not available[kind]:
                notes.append(f"no '{kind}' interventions: {reasons[kind]}.")
    else:
        kinds = list(dict.fromkeys(_as_tuple(interventions, "interventions")))
        for kind in kinds:
            if kind not in INTERVENTION_KINDS:
                raise ValueError(
                    f"interventions must hold kinds of {list(INTERVENTION_KINDS)} or be "
                    f"'auto', got {kind!r}."
                )
            if not available[kind]:
                raise ValueError(f"interventions={kind!r} cannot run: {reasons[kind]}.")
    zero_shot_possible = text_tower and features.class_names is not None
    if open_class and not zero_shot_possible:
        raise ValueError(
            "the open-class protocol classifies new classes by their names: it needs an "
            f"encoder with a text tower and class names ({reasons['text']})."
        )
    if zero_shot == "auto":
        zero_shot = zero_shot_possible
        if not zero_shot_possible:
            notes.append(
                "no zero-shot columns: "
                + (
                    "zero-shot classification needs a text tower, and "
                    f"{reasons['text'].removeprefix('the encoder ')}"
                    if not text_tower
                    else "the data name no classes (target_names)"
                )
                + "."
            )
    elif zero_shot and not zero_shot_possible:
        raise ValueError(f"zero_shot=True cannot run: {reasons['text']}.")
    if scoring == "auto":
        scoring = "interventional" if features.X_intervened is not None else "accuracy"
    elif scoring == "interventional" and features.X_intervened is None:
        raise ValueError(
            f"scoring='interventional' needs counterparts of the validation rows: "
            f"{reasons['image']}."
        )
    if selection == "oracle":
        scoring = "accuracy"
    return kinds, bool(zero_shot), scoring
