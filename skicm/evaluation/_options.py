"""Checks of the protocol's options, done before any data is embedded."""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real

import numpy as np

from skicm.evaluation._methods import KIND_NEEDS, _Column, _select_methods
from skicm.evaluation._selection import SCORINGS

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


def _as_tuple(values, name):
    if isinstance(values, (str, Real)):
        values = (values,)
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} must hold at least one value.")
    return values


def _resolve_n_components(values, n_features=None):
    """The grid's ranks: "auto", or integers (fractions of the width resolved).

    Without ``n_features`` (the width is not known before embedding) only the values are
    checked. An integer above the width is an error: the projector cannot have more
    directions than the embedding has features.
    """
    resolved = []
    for value in _as_tuple(values, "n_components"):
        if value == "auto":
            resolved.append("auto")
        elif isinstance(value, Integral) and not isinstance(value, bool) and value >= 1:
            if n_features is not None and value > n_features:
                raise ValueError(
                    f"n_components={value} exceeds the embedding width {n_features}: an invariant "
                    f"subspace of {n_features}-wide embeddings has at most {n_features} "
                    "directions. Ask for fewer, or a fraction of the width (e.g. 0.5)."
                )
            resolved.append(int(value))
        elif isinstance(value, Real) and not isinstance(value, bool) and 0 < value < 1:
            resolved.append(value if n_features is None else max(1, round(value * n_features)))
        else:
            raise ValueError(
                "n_components must hold 'auto', positive integers or fractions in (0, 1) of "
                f"the embedding width, got {value!r}."
            )
    return list(dict.fromkeys(resolved))


def _warn_ranks_above_rows(ranks, n_train, notes):
    """Warn (once per rank) about ranks that the training rows of some fold cannot support."""
    from skicm.exceptions import RankWarning

    for rank in ranks:
        if rank == "auto":
            continue
        short = {domain: n for domain, n in n_train.items() if rank > n}
        if not short:
            continue
        folds = ", ".join(f"{n} holding out {domain!r}" for domain, n in short.items())
        message = (
            f"n_components={rank} exceeds the number of training rows ({folds}): the data "
            f"span at most that many directions, so the projector keeps fewer than {rank} "
            "(the 'n_components (fitted)' column says how many); directions beyond the rows "
            "would be round-off noise."
        )
        warnings.warn(message, RankWarning, stacklevel=5)
        notes.append(message)


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


def _missing(needs, available):
    return [need for need in needs if not available[need]]


def _uses_counterparts(columns, scoring_needs=()):
    """Whether a column or the scoring reads the rows' counterparts: image interventions are
    made (and embedded) only where something uses them."""
    return "counterparts" in scoring_needs or any(
        "counterparts" in column.method.requirements(column.kind)
        or "X_intervened" in column.method.fit_params
        for column in columns
    )


def _resolve_options(
    dataset, *, embedder, methods, interventions, zero_shot, linear_probe, scoring, selection,
    want_image, notes, open_class,
):  # fmt: skip
    """The columns that run (methods x kinds of interventional data) and the scoring.

    Everything is decided from what the data hold and what the encoder can do, before
    anything is embedded.
    """
    if selection not in SELECTION_RULES:
        raise ValueError(f"selection must be one of {list(SELECTION_RULES)}, got {selection!r}.")
    if scoring != "auto" and scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {['auto', *SCORINGS]}, got {scoring!r}.")
    text_tower = _has_text_tower(embedder)
    available = {
        "text tower": text_tower,
        "class names": dataset.class_names is not None,
        "counterparts": dataset.has_counterparts or (dataset.embed and want_image),
        "groups": True,
    }
    reasons = {
        "text tower": (
            f"the encoder {_embedder_name(embedder)!r} has no text tower"
            if embedder is not None
            else "there is no text encoder (raw features)"
        ),
        "class names": "the data name no classes (target_names)",
        "counterparts": "the data have no counterparts (images_intervened / data_intervened) "
        "and no images to intervene on",
    }

    def reason(needs):
        return reasons[_missing(needs, available)[0]]

    if interventions == "auto":
        kinds = [k for k in INTERVENTION_KINDS if not _missing(KIND_NEEDS[k], available)]
        for kind in INTERVENTION_KINDS:
            if kind not in kinds:
                notes.append(f"no '{kind}' interventions: {reason(KIND_NEEDS[kind])}.")
    else:
        kinds = list(dict.fromkeys(_as_tuple(interventions, "interventions")))
        for kind in kinds:
            if kind not in INTERVENTION_KINDS:
                raise ValueError(
                    f"interventions must hold kinds of {list(INTERVENTION_KINDS)} or be "
                    f"'auto', got {kind!r}."
                )
            if _missing(KIND_NEEDS[kind], available):
                raise ValueError(f"interventions={kind!r} cannot run: {reason(KIND_NEEDS[kind])}.")
    zero_shot_needs = ("text tower", "class names")
    if open_class and _missing(zero_shot_needs, available):
        raise ValueError(
            "the open-class protocol classifies new classes by their names: it needs an "
            f"encoder with a text tower and class names ({reason(zero_shot_needs)})."
        )
    selected, asked = _select_methods(methods)
    if asked and (zero_shot != "auto" or linear_probe is not True):
        raise ValueError(
            "give methods= or zero_shot= / linear_probe=, not both (methods= names every column)."
        )
    if not (zero_shot == "auto" or isinstance(zero_shot, bool)):
        raise ValueError(f"zero_shot must be 'auto', True or False, got {zero_shot!r}.")
    if zero_shot is True and _missing(zero_shot_needs, available):
        raise ValueError(f"zero_shot=True cannot run: {reason(zero_shot_needs)}.")
    columns, left_out = [], []
    for method in selected:
        if open_class and not method.zero_shot:
            if asked:
                raise ValueError(
                    f"the open-class protocol names classes no training domain showed: it runs "
                    f"zero-shot methods only, and {method.name!r} is not one."
                )
            continue
        if not asked and ((method.zero_shot and zero_shot is False) or
                          (not method.zero_shot and not linear_probe)):  # fmt: skip
            continue
        missing = _missing(method.requirements(), available)
        if missing:
            if asked:
                raise ValueError(
                    f"method {method.name!r} cannot run: it needs {' and '.join(missing)}, and "
                    f"{reason(missing)}."
                )
            left_out.append(method)
            continue
        if method.per_intervention_kind:
            columns.extend(_Column(method, kind) for kind in kinds)
        else:
            columns.append(_Column(method, None))
    if any(m.zero_shot for m in left_out):
        notes.append(
            "no zero-shot columns: "
            + (
                "zero-shot classification needs a text tower, and "
                f"{reasons['text tower'].removeprefix('the encoder ')}"
                if not text_tower
                else reasons["class names"]
            )
            + "."
        )
    for method in left_out:
        if not method.zero_shot:
            notes.append(f"no '{method.name}' column: {reason(method.requirements())}.")
    if not columns:
        raise ValueError(
            "no method can run on these data with this encoder: "
            + ("; ".join(notes) if notes else f"methods={methods!r} selects none")
            + "."
        )
    if scoring == "auto":
        scoring = "interventional" if available["counterparts"] else "accuracy"
    needs = SCORINGS[scoring].needs
    if _missing(needs, available):
        raise ValueError(
            f"scoring={scoring!r} needs counterparts of the validation rows: {reason(needs)}."
        )
    if selection == "oracle":
        scoring = "accuracy"
    return columns, SCORINGS[scoring]
