"""The ImageNet robustness protocol: train on ImageNet, score on ImageNet and on its shifts.

Radford et al. (CLIP, 2021) and Taori et al. (2020) measure robustness to natural
distribution shift by training (or prompting) on ImageNet and testing, without any further
training, on ImageNet's own test set (in distribution, ID) and on shifted test sets (out of
distribution, OOD): ImageNet-V2, ImageNet-Sketch, ImageNet-R, ImageNet-A, ObjectNet.
:func:`evaluate_robustness` runs that protocol over every method of the registry: a few-shot
subset of the training collection is drawn per seed, each method's hyperparameters are chosen
on held-out training rows (training-domain selection: no test set takes part in a choice),
the chosen model is scored on the ID test set and on each shift, a shift's predictions
restricted to the shift's classes (the argmax over the training classes mapped to each shift
class: ImageNet-R / A's 200 classes, ObjectNet's 113 through its mapping to ImageNet; a
zero-shot classifier prompts a shift's own class names where they are not the training
classes' names, as CLIP_benchmark does for ObjectNet).
:class:`RobustnessResults` gives the accuracies per shift, the average OOD accuracy, the
effective robustness (Taori et al.: OOD accuracy above a baseline line fitted in logit space)
and the effective-robustness plot (:func:`plot_effective_robustness`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from skicm.evaluation import _baseline_methods  # noqa: F401  (registers the baselines)
from skicm.evaluation._features import FIELDS, _field, _prepare_features, _progress, _read_data
from skicm.evaluation._options import (
    DEFAULT_GRID,
    _positive_values,
    _resolve_n_components,
    _resolve_options,
    _seed_list,
    _uses_counterparts,
)
from skicm.evaluation._protocol import _check_n_jobs, _one_blas_thread, _prompt_names
from skicm.evaluation._results import _csv_value, _ResultFiles
from skicm.evaluation._selection import _chosen_values, _fit_candidate, _Fold, _select_and_fit
from skicm.zero_shot import _check_prompt_classes, _check_templates, zero_shot_templates

__all__ = [
    "ROBUSTNESS_COLUMNS",
    "RobustnessResults",
    "evaluate_robustness",
    "plot_effective_robustness",
]

#: The columns of ``results.csv``: one row per method, seed and test set.
ROBUSTNESS_COLUMNS = (
    "method",
    "seed",
    "test_set",
    "distribution",
    "accuracy",
    "n_test",
    "n_classes",
    "scoring",
    "validation_score",
    "n_candidates",
    "chosen",
    "n_components",
    "n_components_fitted",
    "alpha",
    "C",
    "n_train",
)

#: The columns of ``candidates.csv``: every grid candidate refitted on all training rows and
#: scored on every test set (the points the lines of the plot are fitted through).
CANDIDATE_COLUMNS = ("method", "seed", "candidate", "model", "test_set", "accuracy")

# Accuracies are clipped to [_EDGE, 1 - _EDGE] before the logit: 0 % and 100 % have no logit,
# and a test set of n images cannot tell apart accuracies closer than 1 / n to either end.
_EDGE = 1e-3


def logit(p):
    """``log(p / (1 - p))`` of accuracies clipped to ``[0.001, 0.999]``."""
    p = np.clip(np.asarray(p, dtype=float), _EDGE, 1 - _EDGE)
    return np.log(p) - np.log1p(-p)


def expit(x):
    """The inverse of :func:`logit`."""
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def fit_logit_line(id_accuracy, ood_accuracy):
    """Least-squares line ``logit(ood) = slope * logit(id) + intercept`` through the points.

    Parameters
    ----------
    id_accuracy, ood_accuracy : array-like of shape (n_points,)
        Accuracies in [0, 1] (clipped to [0.001, 0.999] before the logit).

    Returns
    -------
    line : tuple of (float, float) or None
        ``(slope, intercept)``; None with fewer than two distinct ID accuracies (no line).

    Examples
    --------
    >>> from skicm.evaluation._robustness import fit_logit_line
    >>> slope, intercept = fit_logit_line([0.5, 0.7310585786], [0.2689414214, 0.5])
    >>> round(slope, 6), round(intercept, 6)
    (1.0, -1.0)
    """
    x, y = logit(id_accuracy), logit(ood_accuracy)
    if x.size < 2 or np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def _line_at(line, id_accuracy):
    slope, intercept = line
    return float(expit(slope * logit(id_accuracy) + intercept))


# ------------------------------------------------------------------------------ the data
def _rows_of(data):
    target = _field(data, "target")
    if target is None:
        raise ValueError(f"data must hold labels in 'target' (or 'y'); it has {sorted(data)}.")
    return len(target)


def _take(items, rows):
    if isinstance(items, np.ndarray):
        return items[rows]
    try:
        return items[rows]  # lazy collections and arrays index by an array of rows
    except (TypeError, IndexError, KeyError):
        return [items[int(i)] for i in rows]


def _subset(data, rows):
    """``data`` with its per-row fields restricted to ``rows`` (everything else kept)."""
    per_row = {name for names in FIELDS.values() for name in names} - {"target_names"}
    subset = dict(data)
    for name in per_row:
        if name in data and data[name] is not None:
            subset[name] = _take(data[name], rows)
    return Bunch(**subset)


def _with_domains(data, name):
    """``environments`` of one domain (``name``) where the data name none."""
    if _field(data, "environments") is not None:
        return data
    return Bunch(**data, environments=np.full(_rows_of(data), name, dtype=object))


def _few_shot_rows(y, shots, seed):
    """``shots`` rows of every class (all of a class with fewer), drawn with ``seed``."""
    if shots is None:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    # One stable sort groups the rows of every class (ImageNet: 1.28 M rows, 1000 classes),
    # each group in row order.
    order = np.argsort(y, kind="stable")
    _, starts = np.unique(y[order], return_index=True)
    rows = []
    for members in np.split(order, starts[1:]):
        rows.append(rng.choice(members, size=min(shots, members.size), replace=False))
    return np.sort(np.concatenate(rows))


def _check_shots(shots):
    if shots is None:
        return None
    if not isinstance(shots, Integral) or isinstance(shots, bool) or shots < 1:
        raise ValueError(f"shots must be None or a positive integer, got {shots!r}.")
    return int(shots)


def _class_map(name, shift, train_names, n_train_classes, variant_classes):
    """For each class of the shift, the training labels it gathers (None: the same labels).

    In order: the shift's own ``train_classes``; with ``variant_classes``, CLIP_benchmark's
    mapping of the variant ``name`` into ImageNet-1k (the training data must then have
    ImageNet's 1000 classes); the shift's class names looked up among the training class
    names; else the shift's labels are training labels.
    """
    explicit = shift.get("train_classes")
    shift_names = _field(shift, "class_names")
    if explicit is not None:
        mapping = [[c] if isinstance(c, (Integral, str)) else list(c) for c in explicit]
        if shift_names is not None and len(mapping) != len(shift_names):
            raise ValueError(
                f"shift {name!r}: train_classes maps {len(mapping)} classes but the shift names "
                f"{len(shift_names)} (target_names)."
            )
        return mapping
    if variant_classes:
        from skicm.datasets._imagenet_variants import imagenet_variant, variant_name

        if variant_name(name) is None:
            from skicm.datasets._imagenet_variants import IMAGENET_VARIANTS

            raise ValueError(
                f"shift {name!r} is not a variant of the ImageNet robustness collection "
                f"({', '.join(IMAGENET_VARIANTS)}): variant_classes maps the classes of the "
                "variants only. Name the shift after its variant, or map its classes by name."
            )
        if n_train_classes != 1000:
            raise ValueError(
                f"variant_classes maps shift {name!r} into ImageNet-1k's 1000 classes, but the "
                f"training data have {n_train_classes} classes."
            )
        variant = imagenet_variant(name, class_names=False)
        if shift_names is not None and len(shift_names) != len(variant.imagenet_classes):
            raise ValueError(
                f"shift {name!r} names {len(shift_names)} classes (target_names), but the "
                f"variant {variant.name!r} has {len(variant.imagenet_classes)}."
            )
        return variant.imagenet_classes
    if shift_names is not None and train_names is not None:
        # A name that several training classes share (ImageNet's two "sunglasses") gathers
        # them all.
        index = {}
        for i, train_name in enumerate(train_names):
            index.setdefault(str(train_name), []).append(i)
        missing = [str(n) for n in shift_names if str(n) not in index]
        if missing:
            raise ValueError(
                f"shift {name!r} has classes {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                "that are not training class names; give the shift 'train_classes' (the "
                "training labels of each of its classes), or variant_classes=True for the "
                "variants of the ImageNet robustness collection."
            )
        return [index[str(n)] for n in shift_names]
    return None


def _check_shift_labels(name, y, mapping):
    if mapping is None:
        return
    labels = np.unique(y)
    bad = [v for v in labels.tolist() if not (isinstance(v, Integral) and 0 <= v < len(mapping))]
    if bad:
        raise ValueError(
            f"shift {name!r} has labels {bad[:5]} outside its {len(mapping)} classes (labels "
            "must be indices of the shift's classes)."
        )


# ------------------------------------------------------------------------------ predictions
def _class_scores(estimator, X, method):
    """Scores of every class of ``estimator.classes_`` (columns in that order)."""
    if hasattr(estimator, "decision_function"):
        scores = np.asarray(estimator.decision_function(X), dtype=float)
    elif hasattr(estimator, "predict_proba"):
        scores = np.asarray(estimator.predict_proba(X), dtype=float)
    else:
        raise ValueError(
            f"method {method!r} gives no class scores (decision_function or predict_proba): "
            "predictions restricted to a shift's classes need them."
        )
    if scores.ndim == 1:  # two classes: the score of the second minus that of the first
        scores = np.column_stack([-scores, scores])
    return scores


def restricted_predictions(scores, classes, mapping):
    """The shift class of largest score: for each shift class, the best of its training classes.

    Parameters
    ----------
    scores : ndarray of shape (n_samples, n_classes)
        Class scores (logits or probabilities), columns in the order of ``classes``.
    classes : array-like of shape (n_classes,)
        The training labels the columns score (an estimator's ``classes_``).
    mapping : list of list or None
        For each shift class, the training labels it gathers (ImageNet-R: one each; ObjectNet:
        one or several); a shift class none of whose labels is in ``classes`` never wins.
        None: the shift's labels are training labels (no restriction).

    Returns
    -------
    predictions : ndarray of shape (n_samples,)
        Shift labels (indices into ``mapping``), or training labels when ``mapping`` is None.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.evaluation._robustness import restricted_predictions
    >>> scores = np.array([[5.0, 1.0, 3.0, 2.0]])
    >>> restricted_predictions(scores, np.arange(4), [[2], [1, 3]])  # class 0 is not a choice
    array([0])
    """
    classes = np.asarray(classes)
    if mapping is None:
        return classes[np.argmax(scores, axis=1)]
    column = {label: i for i, label in enumerate(classes.tolist())}
    restricted = np.full((scores.shape[0], len(mapping)), -np.inf)
    for j, labels in enumerate(mapping):
        columns = [column[label] for label in labels if label in column]
        if columns:
            restricted[:, j] = scores[:, columns].max(axis=1)
    return np.argmax(restricted, axis=1)


# ------------------------------------------------------------------------------ the protocol
@dataclass
class _TestSet:
    name: str
    distribution: str  # "ID" or "OOD"
    X: np.ndarray
    y: np.ndarray
    mapping: list | None
    n_classes: int
    # The shift's own class names, which zero-shot classifiers prompt (None: the training
    # classes' prompts, restricted by ``mapping``), and their text embeddings once encoded.
    own_names: list | None = None
    own_name_embeddings: np.ndarray | None = field(default=None, repr=False)


def _prompts_class_names(estimator):
    """Whether ``estimator`` is a zero-shot classifier whose classes are prompted names."""
    from skicm.zero_shot import ZeroShotClassifier

    return isinstance(estimator, ZeroShotClassifier) and estimator.class_embeddings is None


def _own_names_head(estimator, test_set):
    """The fitted zero-shot ``estimator`` with the shift's own class names as its classes.

    The same encoder, templates and fitted projector; only the class prompts change, as
    CLIP_benchmark prompts a test set's own names (ObjectNet's 113). The names' text
    embeddings are encoded once per test set and reused by every model scored on it.
    """
    from sklearn.base import clone

    one_row = test_set.X[:1]  # fit reads X for its width only (the projector is fitted)
    if test_set.own_name_embeddings is None:
        plain = clone(estimator).set_params(class_names=test_set.own_names, projector=None)
        test_set.own_name_embeddings = plain.fit(one_row).class_embeddings_
    head = clone(estimator).set_params(
        class_names=test_set.own_names,
        class_embeddings=test_set.own_name_embeddings,
        projector=estimator.projector_,
        refit_projector=False,
    )
    return head.fit(one_row)


def _accuracy(estimator, test_set, method):
    if test_set.own_names is not None and _prompts_class_names(estimator):
        scores = _class_scores(_own_names_head(estimator, test_set), test_set.X, method)
        return float(np.mean(np.argmax(scores, axis=1) == test_set.y))
    scores = _class_scores(estimator, test_set.X, method)
    predicted = restricted_predictions(scores, estimator.classes_, test_set.mapping)
    return float(np.mean(predicted == test_set.y))


def _own_names(name, names, mapping, train_names, templates, notes):
    """The class names a zero-shot classifier prompts on shift ``name`` (None: the training
    classes', restricted by ``mapping``): its own names where they are not the training
    classes' names (ObjectNet's 113), as CLIP_benchmark prompts them."""
    if mapping is None or names is None:
        return None
    prompt_names = _prompt_names([str(n) for n in names])

    def train_name(label):  # a training label's class name as prompted (None: unknown)
        if isinstance(label, str):
            return _prompt_names([label])[0]
        if train_names is not None and 0 <= label < len(train_names):
            return _prompt_names([str(train_names[label])])[0]
        return None

    if all(
        len(classes) == 1 and train_name(classes[0]) == own
        for own, classes in zip(prompt_names, mapping)
    ):
        return None  # each class is the training class of its name: the same prompts
    if isinstance(templates, Mapping):
        missing = [n for n in prompt_names if n not in templates]
        if missing:
            notes.append(
                f"the zero-shot classifiers score the training classes that the classes of "
                f"{name!r} map to: the prompts name no {missing[0]!r}"
                f"{' ...' if len(missing) > 1 else ''}."
            )
            return None
    if len(set(prompt_names)) != len(prompt_names):
        return None  # a repeated name could not be told apart: the mapping decides
    notes.append(
        f"the zero-shot classifiers prompt the {len(prompt_names)} class names of {name!r} "
        "(as CLIP_benchmark's zero-shot classifier of that set); the other methods score the "
        "training classes each of them maps to."
    )
    return prompt_names


def _protocol(train, *, shifts, id_test, embedder, methods, interventions, shots, scoring,
              n_components, alpha, C, seeds, templates, validation_size, intervention_seed,
              variant_classes, baseline, reference_line, id_name, n_jobs, progress):  # fmt: skip
    seeds = _seed_list(seeds)
    alphas = _positive_values(alpha, "alpha", allow_zero=True)
    c_values = _positive_values(C, "C", allow_zero=False)
    _resolve_n_components(n_components)
    n_jobs = _check_n_jobs(n_jobs)
    shots = _check_shots(shots)
    _check_templates(templates)
    if not (isinstance(validation_size, Real) and 0 < validation_size < 1):
        raise ValueError(f"validation_size must be in (0, 1), got {validation_size!r}.")
    reference_line = _check_line(reference_line)
    if not isinstance(shifts, Mapping) or not shifts:
        raise ValueError(
            "shifts must map each shift's name to its data (a Bunch), with at least one shift; "
            f"got {type(shifts).__name__}."
        )
    for data, what in [
        (train, "train"),
        (id_test, "id_test"),
        *((s, f"shift {n!r}") for n, s in shifts.items()),
    ]:
        if not isinstance(data, Mapping):
            raise ValueError(f"{what} must be a Bunch, got {type(data).__name__}.")
    if str(id_name) in shifts:
        raise ValueError(f"the ID test set and a shift are both named {id_name!r}.")
    notes = []
    train = _with_domains(train, id_name)
    full = _read_data(train, embedder)  # checked in full before anything is embedded
    train_names = full.class_names
    n_train_classes = len(train_names) if train_names is not None else len(np.unique(full.y))
    interventions, drop_groups = _usable_kinds(interventions, full.domains, notes)
    want_image = interventions == "auto" or "image" in interventions
    columns, scoring_used = _resolve_options(
        full, embedder=embedder, methods=methods, interventions=interventions,
        zero_shot="auto", linear_probe=True, scoring=scoring, selection="training-domain",
        want_image=want_image, notes=notes, open_class=False,
    )  # fmt: skip
    if drop_groups:
        columns = [column for column in columns if column.kind != "groups"]
        if not columns:
            raise ValueError("no method can run: " + "; ".join(notes))
    want_image = want_image and _uses_counterparts(columns, scoring_used.needs)
    method_names = [column.name for column in columns]
    if isinstance(baseline, str) and baseline not in method_names and reference_line is None:
        notes.append(
            f"no baseline line: the baseline method {baseline!r} did not run (methods: "
            f"{', '.join(method_names)}); effective robustness needs a baseline."
        )
    if any(column.method.zero_shot for column in columns):
        templates = zero_shot_templates(templates)
        _check_prompt_classes(templates, _prompt_names(train_names))
    test_data = {str(id_name): (_with_domains(id_test, str(id_name)), "ID", None)}
    for name, shift in shifts.items():
        mapping = _class_map(str(name), shift, train_names, n_train_classes, variant_classes)
        test_data[str(name)] = (_with_domains(shift, str(name)), "OOD", mapping)
    read = {name: _read_data(data, embedder) for name, (data, _, _) in test_data.items()}
    for name, (_, _, mapping) in test_data.items():
        _check_shift_labels(name, read[name].y, mapping)
    # The test sets are embedded once (the seeds draw training rows only).
    test_sets = []
    zero_shot = any(column.method.zero_shot for column in columns)
    for name, (_, distribution, mapping) in test_data.items():
        features = _prepare_features(
            read[name], embedder, want_image=False, intervention_seed=intervention_seed,
            progress=progress,
        )  # fmt: skip
        n_classes = len(mapping) if mapping is not None else n_train_classes
        own = None
        if zero_shot:
            own = _own_names(name, read[name].class_names, mapping, train_names, templates, notes)
        test_sets.append(
            _TestSet(name, distribution, features.X, read[name].y, mapping, n_classes, own)
        )

    records, candidate_records, grids = [], [], {}
    for seed in seeds:
        rows = _few_shot_rows(full.y, shots, seed)
        dataset = _read_data(_subset(train, rows), embedder)
        features = _prepare_features(
            dataset, embedder, want_image=want_image, intervention_seed=intervention_seed,
            progress=progress,
        )  # fmt: skip
        width = features.X.shape[1]
        for test_set in test_sets:
            if test_set.X.shape[1] != width:
                raise ValueError(
                    f"the test set {test_set.name!r} has {test_set.X.shape[1]} features, the "
                    f"training rows {width}: embed every set with the same encoder."
                )
        axes = {
            "n_components": _resolve_n_components(n_components, width),
            "alpha": alphas,
            "C": c_values,
        }
        names = _distinct_names(_prompt_names(features.class_names), notes)
        fold = _Fold(
            features, text_encoder=embedder, class_names=names, projector_class_names=names,
            templates=templates, n_jobs=n_jobs,
        )  # fmt: skip
        candidates = [column.method.candidates(axes) for column in columns]
        bar = _progress(
            total=sum(map(len, candidates)), desc=f"seed {seed}: grid candidates",
            enabled=progress,
        )  # fmt: skip
        everything = np.arange(len(features.y))
        for column, column_candidates in zip(columns, candidates):
            grids[column.name] = column_candidates
            bar.set_postfix_str(column.name)
            with _one_blas_thread():
                estimator, chosen, validation, projector = _select_and_fit(
                    column, column_candidates, features, everything, everything,
                    selection="training-domain", scoring=scoring_used, seed=seed,
                    validation_size=validation_size, fold=fold, bar=bar,
                )  # fmt: skip
                accuracies = {t.name: _accuracy(estimator, t, column.name) for t in test_sets}
                if len(column_candidates) > 1:
                    # Every candidate refitted on all training rows: the family of models the
                    # lines of the plot are fitted through (no choice is made from them).
                    for candidate in column_candidates:
                        fitted, fitted_projector = _fit_candidate(
                            column, candidate, features, everything, fold
                        )
                        model = _fitted_model(candidate, fitted_projector)
                        for test_set in test_sets:
                            candidate_records.append(
                                {
                                    "method": column.name,
                                    "seed": seed,
                                    "candidate": json.dumps(candidate, sort_keys=True),
                                    "model": model,
                                    "test_set": test_set.name,
                                    "accuracy": _accuracy(fitted, test_set, column.name),
                                }
                            )
            common = {
                "method": column.name,
                "seed": seed,
                "scoring": scoring_used.name if len(column_candidates) > 1 else "",
                "validation_score": validation,
                "n_candidates": len(column_candidates),
                "chosen": json.dumps(chosen, sort_keys=True),
                **_chosen_values(chosen, projector),
                "n_train": len(everything),
            }
            for test_set in test_sets:
                records.append(
                    {
                        **common,
                        "test_set": test_set.name,
                        "distribution": test_set.distribution,
                        "accuracy": accuracies[test_set.name],
                        "n_test": len(test_set.y),
                        "n_classes": test_set.n_classes,
                    }
                )
        bar.close()
    return RobustnessResults(
        records=records,
        candidates=candidate_records,
        methods=method_names,
        id_name=str(id_name),
        shifts=[str(name) for name in shifts],
        scoring=scoring_used.name,
        shots=shots,
        notes=notes,
        grids=grids,
        baseline=baseline,
        reference_line=reference_line,
        chance={t.name: 1.0 / t.n_classes for t in test_sets},
    )


def _fitted_model(candidate, projector):
    """The model a candidate fitted: the candidate with its rank as fitted (a rank above the
    data's is fitted as the data's rank: candidates then fit one and the same model)."""
    if projector is None or "n_components" not in candidate:
        return json.dumps(candidate, sort_keys=True)
    return json.dumps({**candidate, "n_components": int(projector.n_components_)}, sort_keys=True)


def _distinct_names(names, notes):
    """Class names for prompts, a repeated one suffixed ``(2)``, ``(3)``... after its first.

    OpenAI's ImageNet names repeat two ("missile", "sunglasses": two classes each, as in
    CLIP_benchmark), and the zero-shot classifier and text interventions need one name per
    class; CLIP_benchmark prompts both with the same text (equal scores: the first wins).
    """
    if names is None:
        return None
    seen, distinct, renamed = {}, [], []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        if seen[name] == 1:
            distinct.append(name)
        else:
            distinct.append(f"{name} ({seen[name]})")
            renamed.append(distinct[-1])
    if renamed:
        note = (
            f"class names repeated in the training data are prompted as {renamed} (the "
            "zero-shot classifier and text interventions need one name per class)."
        )
        if note not in notes:
            notes.append(note)
    return distinct


def _usable_kinds(interventions, domains, notes):
    """``"groups"`` interventions need two training domains; ImageNet has one.

    Returns the kinds to ask for, and whether ``"groups"`` columns of ``"auto"`` are dropped.
    """
    one_domain = len(np.unique(domains)) < 2
    if interventions == "auto":
        if one_domain:
            notes.append(
                "no 'groups' interventions: the training rows hold one domain (the groups "
                "projector learns from differences between training domains)."
            )
        return "auto", one_domain
    kinds = (interventions,) if isinstance(interventions, str) else tuple(interventions)
    if "groups" in kinds and one_domain:
        raise ValueError(
            "interventions='groups' learns from differences between training domains, and the "
            f"training rows hold one domain ({np.unique(domains)[0]!r}); give the training "
            "data 'environments' (a domain key), or choose 'image' or 'text'."
        )
    return kinds, False


def _check_line(line):
    if line is None:
        return None
    ok = (
        isinstance(line, Sequence)
        and len(line) == 2
        and all(isinstance(v, Real) and math.isfinite(v) for v in line)
    )
    if not ok:
        raise ValueError(
            "reference_line must be (slope, intercept) of logit(OOD accuracy) = slope * "
            f"logit(ID accuracy) + intercept, two finite numbers; got {line!r}."
        )
    return (float(line[0]), float(line[1]))


def evaluate_robustness(
    train,
    shifts,
    *,
    id_test,
    embedder=None,
    methods="auto",
    interventions="auto",
    shots=None,
    scoring="auto",
    n_components=DEFAULT_GRID["n_components"],
    alpha=DEFAULT_GRID["alpha"],
    C=DEFAULT_GRID["C"],
    seeds=1,
    templates="openai-imagenet",
    validation_size=0.2,
    intervention_seed=0,
    variant_classes=False,
    baseline="linear probe",
    reference_line=None,
    id_name="imagenet",
    n_jobs=None,
    progress=True,
):
    """Accuracy on ImageNet and on its shifts of every method trained on ImageNet.

    For each seed, ``shots`` images of every class of ``train`` are drawn (all of them with
    ``shots=None``); every method's grid is searched on them with training-domain validation
    (``validation_size`` of the rows held out, scored by ``scoring``: no test set takes part
    in a choice), the chosen candidate is refitted on all drawn rows and scored on ``id_test``
    and on each shift. A shift's predictions are restricted to its classes: each shift class
    scores the best of the training classes it gathers, and the argmax over the shift's
    classes is the prediction (ImageNet-R / A: their 200 classes of ImageNet's 1000;
    ObjectNet: 113 classes, each one or several ImageNet classes). A zero-shot classifier
    (``zero-shot``, ``zero-shot ICM``) instead prompts the shift's own class names where they
    are not the names of the training classes they map to (ObjectNet's 113, as
    CLIP_benchmark scores it), with the same templates and fitted projector; a note says so.
    Every other grid candidate
    is refitted and scored too: the family of models that the lines of the
    effective-robustness plot are fitted through.

    Parameters
    ----------
    train : Bunch
        The training collection (ImageNet's train split), in :mod:`skicm.datasets`'
        convention: ``target``, ``target_names``, and ``images`` / ``paths`` (embedded by
        ``embedder``) or ``data`` (features); ``environments`` optional (one domain).
    shifts : mapping of str to Bunch
        The shifted test sets by name, each with ``target`` (its own class indices),
        ``target_names``, and images or features. A shift's classes are mapped to the
        training classes by its ``train_classes`` (for each of its classes, the training
        labels it gathers), else by ``variant_classes``, else by class name; a shift without
        class names uses the training labels.
    id_test : Bunch
        The ID test set (ImageNet's validation split), labelled as ``train``.
    embedder : estimator with ``transform`` or None, default=None
        Embeds images (e.g. a :class:`~skicm.CLIPEmbedder`; its ``store`` keeps the
        embeddings); None uses the data's ``data`` as features.
    methods : "auto" or sequence of str or Method, default="auto"
        Registered methods (:func:`~skicm.evaluation.available_methods`) or
        :class:`~skicm.evaluation.Method` objects; ``"auto"``: every default method whose
        needs the data and encoder meet.
    interventions : "auto" or sequence of {"image", "text", "groups"}, default="auto"
        Interventional data of the ICM columns; ``"groups"`` needs training rows of two
        domains or more (``"auto"`` leaves it out otherwise, with a note).
    shots : int or None, default=None
        Images per class drawn from ``train`` for each seed; None uses them all.
    scoring : "auto" or str, default="auto"
        What the validation rows are scored by (:data:`~skicm.evaluation.SCORINGS`).
    n_components, alpha, C : sequence, default=DEFAULT_GRID values
        The grid, as in :func:`~skicm.evaluation.evaluate_domain_generalization`.
    seeds : int or sequence of int, default=1
        Seeds: each draws the few-shot rows and the validation split.
    templates : str or sequence of str, default="openai-imagenet"
        Zero-shot prompt templates: open_clip's 80 ImageNet templates, those
        CLIP_benchmark uses for every variant of the collection.
    validation_size : float, default=0.2
        Share of the training rows held out to choose hyperparameters.
    intervention_seed : int, default=0
        Seed of the image interventions.
    variant_classes : bool, default=False
        Map each shift's classes into ImageNet-1k as CLIP_benchmark defines the variant its
        name names (``imagenet-r``, ``objectnet``, ...; see
        :func:`skicm.datasets.imagenet_variant`); the training data must have 1000 classes.
    baseline : str, default="linear probe"
        The method whose line (through its grid's candidates) effective robustness is
        measured from, unless ``reference_line`` is given.
    reference_line : (float, float) or None, default=None
        ``(slope, intercept)`` of a baseline ``logit(OOD) = slope * logit(ID) + intercept``
        (e.g. Taori et al.'s fit over ImageNet models), used instead of ``baseline``'s line.
    id_name : str, default="imagenet"
        The name of the ID test set in the results.
    n_jobs : int or None, default=None
        Threads fitting the grid's candidates at the same time.
    progress : bool, default=True
        tqdm progress bars.

    Returns
    -------
    results : RobustnessResults

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.utils import Bunch
    >>> from skicm.evaluation._robustness import evaluate_robustness
    >>> rng = np.random.default_rng(0)
    >>> centres = rng.normal(0, 3, (4, 5))
    >>> def sample(n, shift=0.0):
    ...     y = np.arange(n) % 4
    ...     return centres[y] + rng.normal(shift, 1.0, (n, 5)), y
    >>> X, y = sample(80)
    >>> Xi, yi = sample(40)
    >>> Xs, ys = sample(40, shift=1.0)
    >>> names = ["cat", "dog", "bird", "fish"]
    >>> results = evaluate_robustness(
    ...     Bunch(data=X, target=y, target_names=names),
    ...     {"sketch": Bunch(data=Xs[ys < 2], target=ys[ys < 2], target_names=names[:2])},
    ...     id_test=Bunch(data=Xi, target=yi, target_names=names),
    ...     C=[0.01, 1.0], progress=False)
    >>> results.methods, results.shifts
    (['linear probe'], ['sketch'])
    >>> bool(results.accuracy("linear probe", "imagenet")[0] > 0.8)
    True
    """
    from sklearn import config_context

    with config_context(enable_metadata_routing=True):
        return _protocol(
            train, shifts=shifts, id_test=id_test, embedder=embedder, methods=methods,
            interventions=interventions, shots=shots, scoring=scoring,
            n_components=n_components, alpha=alpha, C=C, seeds=seeds, templates=templates,
            validation_size=validation_size, intervention_seed=intervention_seed,
            variant_classes=variant_classes, baseline=baseline, reference_line=reference_line,
            id_name=id_name, n_jobs=n_jobs, progress=progress,
        )  # fmt: skip


# ------------------------------------------------------------------------------ results
@dataclass
class RobustnessResults(_ResultFiles):
    """Results of :func:`evaluate_robustness`.

    Attributes
    ----------
    records : list of dict
        One per method, seed and test set (the columns of :data:`ROBUSTNESS_COLUMNS`).
    candidates : list of dict
        Every grid candidate refitted on all training rows, per seed and test set.
    methods : list of str
    id_name : str
        The ID test set.
    shifts : list of str
        The shifts, in order.
    scoring : str
    shots : int or None
    notes : list of str
    grids : dict of str to list of dict
    baseline : str
        The method whose line is the baseline of effective robustness.
    reference_line : (float, float) or None
        A given baseline line (slope, intercept in logit space), used instead.
    chance : dict of str to float
        Chance accuracy of each test set (one over its number of classes).
    """

    records: list
    candidates: list
    methods: list
    id_name: str
    shifts: list
    scoring: str = "accuracy"
    shots: int | None = None
    notes: list = field(default_factory=list)
    grids: dict = field(default_factory=dict)
    baseline: str = "linear probe"
    reference_line: tuple | None = None
    chance: dict = field(default_factory=dict)

    _png_bbox_inches = "tight"  # the legend may reach beyond the axes

    @property
    def seeds(self):
        """The seeds, in order."""
        return list(dict.fromkeys(record["seed"] for record in self.records))

    def _check(self, method, test_set=None):
        if method not in self.methods:
            raise ValueError(f"method {method!r} is not one of {self.methods}.")
        if test_set is not None and test_set not in (self.id_name, *self.shifts):
            raise ValueError(f"test set {test_set!r} is not one of {[self.id_name, *self.shifts]}.")

    def _per_seed(self, method, test_set):
        return np.array(
            [r["accuracy"] for r in self.records
             if r["method"] == method and r["test_set"] == test_set]
        )  # fmt: skip

    def accuracy(self, method, test_set):
        """Mean and standard deviation over seeds of one test set's accuracy.

        Parameters
        ----------
        method : str
            One of :attr:`methods`.
            One of :attr:`methods`.
        test_set : str
            The ID test set's name or a shift's.

        Returns
        -------
        mean, std : float
        """
        self._check(method, test_set)
        values = self._per_seed(method, test_set)
        return float(values.mean()), float(values.std())

    def ood_accuracy(self, method):
        """Mean and standard deviation over seeds of the average accuracy over the shifts.

        Parameters
        ----------
        method : str
            One of :attr:`methods`.

        Returns
        -------
        mean, std : float
        """
        self._check(method)
        values = np.mean([self._per_seed(method, shift) for shift in self.shifts], axis=0)
        return float(values.mean()), float(values.std())

    def _ood(self, method, shift):
        return self.ood_accuracy(method)[0] if shift is None else self.accuracy(method, shift)[0]

    def points(self, method, shift=None):
        """The (ID, OOD) accuracies of the method's grid candidates, means over seeds.

        Candidates that fitted the same model (an ICM rank above the training data's rank is
        fitted as that rank) are one point.

        Parameters
        ----------
        method : str
            One of :attr:`methods`.
        shift : str or None, default=None
            A shift; None: the average over the shifts.

        Returns
        -------
        id_accuracy, ood_accuracy : ndarray of shape (n_candidates,)
            Empty for a method without a grid.
        """
        self._check(method, shift)
        by_candidate = {}
        for record in self.candidates:
            if record["method"] != method:
                continue
            # Candidates that fitted the same model (ranks above the data's) are one point.
            key = record.get("model") or record["candidate"]
            by_candidate.setdefault(key, {}).setdefault(record["test_set"], []).append(
                record["accuracy"]
            )
        id_values, ood_values = [], []
        for tests in by_candidate.values():
            id_values.append(np.mean(tests[self.id_name]))
            shifts = self.shifts if shift is None else [shift]
            ood_values.append(np.mean([np.mean(tests[s]) for s in shifts]))
        return np.array(id_values), np.array(ood_values)

    def line(self, method, shift=None):
        """The least-squares line in logit space through the method's grid candidates.

        Parameters
        ----------
        method : str
            One of :attr:`methods`.
        shift : str or None, default=None
            A shift; None: the average over the shifts.

        Returns
        -------
        line : (float, float) or None
            ``(slope, intercept)`` of ``logit(OOD) = slope * logit(ID) + intercept``; None
            with fewer than two distinct ID accuracies.
        """
        return fit_logit_line(*self.points(method, shift))

    def baseline_line(self, shift=None):
        """The baseline of effective robustness: ``reference_line``, else the baseline's line.

        Parameters
        ----------
        shift : str or None, default=None
            A shift; None: the average over the shifts.

        Returns
        -------
        line : (float, float) or None
            ``(slope, intercept)`` in logit space: :attr:`reference_line` where given, else
            the :meth:`line` of the :attr:`baseline` method; None where there is none.
        """
        if self.reference_line is not None:
            return tuple(self.reference_line)
        if self.baseline not in self.methods:
            return None
        return self.line(self.baseline, shift)

    def effective_robustness(self, method, shift=None):
        """OOD accuracy minus the baseline line at the method's ID accuracy, in %.

        Taori et al. (2020): ``acc_ood - expit(slope * logit(acc_id) + intercept)``, with the
        mean accuracies over seeds and the line of :meth:`baseline_line`.

        Parameters
        ----------
        method : str
            One of :attr:`methods`.
        shift : str or None, default=None
            A shift; None: the average over the shifts.

        Returns
        -------
        effective_robustness : float
            In percentage points; NaN without a baseline line.
        """
        self._check(method, shift)
        line = self.baseline_line(shift)
        if line is None:
            return float("nan")
        id_accuracy = self.accuracy(method, self.id_name)[0]
        return 100.0 * (self._ood(method, shift) - _line_at(line, id_accuracy))

    # ---------------------------------------------------------------------- outputs
    def to_csv(self, path):
        """Write ``results.csv``: one row per method, seed and test set.

        Parameters
        ----------
        path : str or path-like
            The file to write (overwritten).

        Returns
        -------
        path : pathlib.Path
        """
        return _write_csv(path, ROBUSTNESS_COLUMNS, self.records)

    def candidates_to_csv(self, path):
        """Write ``candidates.csv``: every grid candidate's accuracy on every test set.

        Parameters
        ----------
        path : str or path-like
            The file to write (overwritten).

        Returns
        -------
        path : pathlib.Path
        """
        return _write_csv(path, CANDIDATE_COLUMNS, self.candidates)

    def _baseline_text(self):
        if self.reference_line is not None:
            slope, intercept = self.reference_line
            return f"the given reference line (slope {slope:.4g}, intercept {intercept:.4g})"
        return f"the line through the candidates of {self.baseline!r}"

    def to_markdown(self, *, title=None):
        """The tables: accuracy per test set, average OOD, effective robustness, the lines.

        Parameters
        ----------
        title : str or None, default=None
            A heading put first.

        Returns
        -------
        markdown : str
        """
        spread = self._spread("1 seed ({seeds})")
        n_train = sorted({r["n_train"] for r in self.records})
        drawn = str(n_train[0]) if n_train[0] == n_train[-1] else f"{n_train[0]}-{n_train[-1]}"
        shots = f"{drawn} training images" + (
            "" if self.shots is None else f" (up to {self.shots} per class)"
        )
        lines = [f"## {title}", ""] if title else []
        lines.append(
            f"Test accuracy (%), {spread}; trained on {shots}, hyperparameters chosen on held-"
            f"out training rows by {self.scoring}. ID: {self.id_name}; a shift's predictions are "
            "restricted to its classes. Effective robustness (ER, percentage points): average "
            f"OOD accuracy minus {self._baseline_text()} at the method's ID accuracy, the line "
            "fitted in logit space (Taori et al. 2020)."
        )
        header = [self.id_name + " (ID)", *self.shifts, "avg OOD", "ER"]
        lines.extend(
            ["", "| method | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
        )
        for method in self.methods:
            sets = (self.id_name, *self.shifts)
            cells = [self._mean_std(*self.accuracy(method, t)) for t in sets]
            cells.append(self._mean_std(*self.ood_accuracy(method)))
            cells.append(_signed(self.effective_robustness(method)))
            lines.append("| " + " | ".join([method, *cells]) + " |")
        lines.extend(["", "Effective robustness per shift (percentage points):", ""])
        lines.append("| method | " + " | ".join(self.shifts) + " |")
        lines.append("|---|" + "---:|" * len(self.shifts))
        for method in self.methods:
            cells = [_signed(self.effective_robustness(method, s)) for s in self.shifts]
            lines.append("| " + " | ".join([method, *cells]) + " |")
        lines.extend(
            [
                "",
                "Lines logit(OOD) = slope * logit(ID) + intercept, least squares through the "
                "grid's candidates refitted on all training rows (average OOD):",
                "",
                "| method | candidates | slope | intercept |",
                "|---|---:|---:|---:|",
            ]
        )
        for method in self.methods:
            line = self.line(method)
            n = len(self.points(method)[0])
            slope, intercept = ("-", "-") if line is None else (f"{line[0]:.4g}", f"{line[1]:.4g}")
            lines.append(f"| {method} | {n} | {slope} | {intercept} |")
        lines.extend(["", "Chosen hyperparameters (per seed):", ""])
        lines.extend(["| method | chosen |", "|---|---|"])
        for method in self.methods:
            chosen = [
                r["chosen"] for r in self.records
                if r["method"] == method and r["test_set"] == self.id_name
            ]  # fmt: skip
            lines.append(f"| {method} | {'; '.join(chosen)} |")
        sizes = {r["test_set"]: (r["n_test"], r["n_classes"]) for r in self.records}
        lines.extend(["", "| test set | images | classes | chance (%) |", "|---|---:|---:|---:|"])
        for name in (self.id_name, *self.shifts):
            n_test, n_classes = sizes[name]
            lines.append(f"| {name} | {n_test} | {n_classes} | {100 * self.chance[name]:.1f} |")
        for note in [*self.notes, *self._line_notes()]:
            lines.extend(["", f"Note: {note}"])
        return "\n".join(lines) + "\n"

    def _line_notes(self):
        """Why effective robustness is undefined ('-'), where it is."""
        if self.reference_line is not None:
            return []
        if self.baseline not in self.methods:
            return [
                f"no baseline line: the baseline method {self.baseline!r} was not run "
                f"(methods: {', '.join(self.methods)}); effective robustness is undefined."
            ]
        id_values = self.points(self.baseline)[0]
        if self.line(self.baseline) is not None:
            return []
        if id_values.size == 0:
            why = "it had a single candidate (no grid)"
        else:
            accuracies = ", ".join(f"{100 * v:.1f} %" for v in sorted(set(id_values.tolist())))
            why = f"its {id_values.size} distinct model(s) score {accuracies} on {self.id_name}"
        return [
            f"no baseline line through the candidates of {self.baseline!r}: {why}, and a line "
            "needs two ID accuracies; effective robustness is undefined (give a reference line)."
        ]

    def plot(self, *, shift=None, title=None, ax=None):
        """The effective-robustness plot of these results (:func:`plot_effective_robustness`).

        Parameters
        ----------
        shift : str or None, default=None
            A shift for the y axis; None: the average over the shifts.
        title : str or None, default=None
            Title of the axes.
        ax : matplotlib Axes or None, default=None
            Draw there (else a new figure).

        Returns
        -------
        figure : matplotlib.figure.Figure
        """
        return plot_effective_robustness(
            self, shift=shift, reference_line=self.reference_line, title=title, ax=ax
        )

    def save(self, output_dir, *, title=None):
        """Write ``results.csv``, ``candidates.csv``, ``results.md`` and ``results.png``.

        Parameters
        ----------
        output_dir : str or path-like
            Folder, created if needed.
        title : str or None, default=None
            Heading of ``results.md`` and title of the plot.

        Returns
        -------
        paths : list of pathlib.Path
        """
        csv_path, *others = super().save(output_dir, title=title)
        return [csv_path, self.candidates_to_csv(Path(output_dir) / "candidates.csv"), *others]


def _signed(value):
    return "-" if not math.isfinite(value) else f"{value:+.1f}"


def _write_csv(path, columns, rows):
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(row.get(column)) for column in columns])
    return path


# ------------------------------------------------------------------------------ the plot
_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85,
          0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)  # fmt: skip


def _percent(value, _position=None):
    return f"{100 * value:g}%"


def plot_effective_robustness(results, *, shift=None, reference_line=None, title=None,
                              ax=None):  # fmt: skip
    """OOD accuracy against ID accuracy, both axes logit-scaled (Taori et al. 2020).

    Per method, its chosen model: a large marker at the average OOD accuracy (or ``shift``'s),
    small squares of the same colour at each shift's accuracy, crosses at the grid's
    candidates; a dashed line, straight in
    logit space, fitted by least squares through the method's family of models: the grid's
    candidates refitted on all training rows (the probe's C, ICM's rank and alpha) and, with
    several results (one per encoder), every result's chosen model. Also ``y = x`` (no
    robustness gap) and, when given, ``reference_line`` (e.g. Taori et al.'s fit over ImageNet
    models), both in logit space.

    Parameters
    ----------
    results : RobustnessResults or sequence of RobustnessResults
        One result per encoder (same ID test set and shifts).
    shift : str or None, default=None
        The y axis: a shift's accuracy, or None: the average over the shifts.
    reference_line : (float, float) or None, default=None
        ``(slope, intercept)`` of ``logit(OOD) = slope * logit(ID) + intercept``.
    title : str or None, default=None
        Title of the axes.
    ax : matplotlib Axes or None, default=None
        Draw there (else a new figure).

    Returns
    -------
    figure : matplotlib.figure.Figure
        Its axes hold the lines as ``Line2D`` objects labelled ``"<method> line"``,
        ``"y = x"`` and ``"reference line"``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.utils import Bunch
    >>> from skicm.evaluation import evaluate_robustness, plot_effective_robustness
    >>> rng = np.random.default_rng(0)
    >>> centres = rng.normal(0, 3, (4, 5))
    >>> def sample(n, shift=0.0):
    ...     y = np.arange(n) % 4
    ...     return centres[y] + rng.normal(shift, 1.0, (n, 5)), y
    >>> (X, y), (Xi, yi), (Xs, ys) = sample(80), sample(40), sample(40, shift=1.5)
    >>> names = ["cat", "dog", "bird", "fish"]
    >>> results = evaluate_robustness(
    ...     Bunch(data=X, target=y, target_names=names),
    ...     {"sketch": Bunch(data=Xs, target=ys, target_names=names)},
    ...     id_test=Bunch(data=Xi, target=yi, target_names=names),
    ...     C=[0.001, 0.01, 1.0], progress=False)
    >>> figure = plot_effective_robustness(results, reference_line=(1.0, -0.5))
    >>> ax = figure.axes[0]
    >>> ax.get_xscale(), ax.get_yscale()
    ('logit', 'logit')
    >>> sorted(line.get_label() for line in ax.get_lines() if "line" in line.get_label())
    ['linear probe line', 'reference line']
    """
    from skicm._matplotlib import pyplot

    plt = pyplot()
    if isinstance(results, RobustnessResults):
        results = [results]
    results = list(results)
    if not results:
        raise ValueError("plot_effective_robustness needs at least one RobustnessResults.")
    reference_line = _check_line(reference_line)
    figure = ax.figure if ax is not None else plt.subplots(figsize=(6.4, 5.6))[0]
    ax = ax if ax is not None else figure.axes[0]
    methods = list(dict.fromkeys(m for r in results for m in r.methods))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xs, ys = [], []
    for index, method in enumerate(methods):
        colour = colours[index % len(colours)]
        family_x, family_y = [], []
        for result in results:
            if method not in result.methods:
                continue
            id_accuracy = result.accuracy(method, result.id_name)[0]
            ood = result._ood(method, shift)
            ax.scatter([id_accuracy], [ood], s=60, color=colour, edgecolor="black", zorder=3,
                       label=method if result is results[0] else None)  # fmt: skip
            shifts = result.shifts if shift is None else []
            shift_values = [result.accuracy(method, s)[0] for s in shifts]
            ax.scatter([id_accuracy] * len(shifts), shift_values, s=14, color=colour, alpha=0.6,
                       marker="s", zorder=2)  # fmt: skip
            px, py = result.points(method, shift)
            first = result is results[0] and px.size
            ax.scatter(px, py, s=18, marker="x", color=colour, linewidths=0.8, zorder=2,
                       label=f"{method} candidates" if first else None)  # fmt: skip
            family_x.extend([*px.tolist(), id_accuracy] if len(results) > 1 else px.tolist())
            family_y.extend([*py.tolist(), ood] if len(results) > 1 else py.tolist())
            xs.extend([id_accuracy, *px.tolist()])
            ys.extend([ood, *shift_values, *py.tolist()])
        line = fit_logit_line(family_x, family_y)
        if line is not None:
            _draw_line(ax, line, family_x, colour, f"{method} line", "--")
    low = float(np.clip(min(xs + ys), _EDGE, 1 - _EDGE))
    high = float(np.clip(max(xs + ys), _EDGE, 1 - _EDGE))
    low, high = expit(logit(low) - 0.5), expit(logit(high) + 0.5)
    grid = np.array([low, high])
    ax.plot(grid, grid, color="black", linestyle=":", linewidth=1, label="y = x")
    if reference_line is not None:
        _draw_line(ax, reference_line, [low, high], "gray", "reference line", "-")
    ax.set_xscale("logit")
    ax.set_yscale("logit")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    ticks = _spaced_ticks(low, high)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(FuncFormatter(_percent))
        axis.set_minor_locator(NullLocator())
        axis.set_minor_formatter(NullFormatter())
    id_name = results[0].id_name
    ax.set_xlabel(f"ID accuracy ({id_name}), logit scale")
    ax.set_ylabel(
        ("average OOD accuracy" if shift is None else f"OOD accuracy ({shift})") + ", logit scale"
    )
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(fontsize=7, loc="upper left")
    subtitle = "large markers: " + ("average over the shifts" if shift is None else shift)
    if shift is None:
        subtitle += "; small squares: each shift"
    ax.set_title(f"{title}\n{subtitle}" if title else subtitle, fontsize=9)
    return figure


def _spaced_ticks(low, high, n_max=9):
    """Ticks of :data:`_TICKS` within ``[low, high]``, at least 1/``n_max`` of the axis apart in
    logit space (so that their labels never touch), the middle-most first kept."""
    inside = [t for t in _TICKS if low <= t <= high]
    if not inside:
        return [low, high]
    gap = (logit(high) - logit(low)) / n_max
    kept = []
    for tick in sorted(inside, key=lambda t: abs(logit(t) - (logit(low) + logit(high)) / 2)):
        if all(abs(logit(tick) - logit(other)) >= gap for other in kept):
            kept.append(tick)
    return sorted(kept)


def _draw_line(ax, line, x_values, colour, label, style):
    """The line ``logit(y) = slope * logit(x) + intercept`` over the span of ``x_values``."""
    slope, intercept = line
    lx = logit([min(x_values), max(x_values)])
    edge = float(logit(1 - _EDGE))  # beyond the clipping of logit() the line would bend flat
    x = expit(np.linspace(max(lx[0] - 0.3, -edge), min(lx[1] + 0.3, edge), 50))
    y = expit(slope * logit(x) + intercept)
    ax.plot(x, y, color=colour, linestyle=style, linewidth=1.2, label=label)
