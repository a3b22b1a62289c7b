"""The spurious-correlation protocol: train on the train split, select on val, report on test.

Waterbirds, CelebA and MetaShift come with official train / val / test splits and a group for
every image, a (label, spurious attribute) pair. :func:`evaluate_spurious_groups` fits every
method's grid on the training split, chooses each method's hyperparameters on the
**validation** split (by worst-group accuracy, or by the interventional score where the data
have counterparts) and reports the chosen model on the test split: average accuracy,
worst-group accuracy, WILDS' adjusted average (per-group accuracy weighted by the training
shares of the groups), and the accuracy and size of every group, over seeds. The test split
never takes part in a choice. :class:`GroupResults` writes ``results.csv``, ``results.md``
and ``results.png``; :func:`run_groups_command` is ``skicm evaluate SOURCE --protocol
groups``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from skicm.evaluation import _baseline_methods  # noqa: F401  (registers the baselines)
from skicm.evaluation._features import _prepare_features, _progress, _read_data
from skicm.evaluation._methods import _select_methods
from skicm.evaluation._options import (
    DEFAULT_GRID,
    _has_text_tower,
    _missing,
    _positive_values,
    _resolve_n_components,
    _resolve_options,
    _seed_list,
    _uses_counterparts,
)
from skicm.evaluation._plots import _size_text, _untangle
from skicm.evaluation._protocol import _check_n_jobs, _one_blas_thread, _prompt_names
from skicm.evaluation._results import (
    _csv_value,
    _report_results,
    _ResultFiles,
    _use_file_backend,
)
from skicm.evaluation._selection import (
    SCORINGS,
    _chosen_values,
    _fit_candidate,
    _Fold,
    _score,
)
from skicm.metrics import adjusted_average_accuracy, group_accuracies, worst_group_accuracy
from skicm.zero_shot import _check_prompt_classes, _check_templates, zero_shot_templates

#: What the validation split is scored by when choosing hyperparameters: ``"worst-group"``
#: (the lowest group accuracy of the validation rows: the field's rule), ``"interventional"``
#: (the worse of the accuracy on the validation rows and on their counterparts; needs
#: counterparts, not the validation groups), ``"accuracy"`` (the validation accuracy).
GROUP_SCORINGS = ("worst-group", "adjusted-average", "interventional", "accuracy")
SPLITS = ("train", "val", "test")
#: The columns of ``results.csv`` before the per-group ones.
GROUP_RESULT_COLUMNS = (
    "method",
    "seed",
    "worst_group",
    "average",
    "adjusted_average",
    "worst_group_name",
    "scoring",
    "validation_score",
    "n_candidates",
    "chosen",
    "n_components",
    "n_components_fitted",
    "alpha",
    "C",
    "n_train",
    "n_val",
    "n_test",
)


# ------------------------------------------------------------------------------ the data
def _split_column(data):
    split = data.get("split")
    if split is None:
        raise ValueError(
            "the groups protocol needs the official split of each row in data['split'] "
            f"('train', 'val', 'test' or 0 / 1 / 2); the data have {sorted(data)}."
        )
    split = np.asarray(split)
    if split.dtype.kind in "iu":
        if not np.isin(split, [0, 1, 2]).all():
            raise ValueError(f"data['split'] codes must be 0, 1 or 2, got {np.unique(split)}.")
        split = np.asarray(SPLITS)[split]
    split = split.astype(str)
    unknown = sorted(set(split.tolist()) - set(SPLITS))
    if unknown:
        raise ValueError(f"data['split'] must hold {list(SPLITS)}, got also {unknown}.")
    return split


def _with_concept(data):
    """``environments`` from ``place`` / ``place_names`` when the data name only the place."""
    if any(name in data for name in ("environments", "domains", "environment")):
        return data
    if "place" not in data:
        raise ValueError(
            "the groups protocol needs the spurious attribute of each row: data['place'] "
            f"(or data['environments']); the data have {sorted(data)}."
        )
    place = np.asarray(data["place"])
    names = data.get("place_names")
    values = np.asarray(names, dtype=object)[place] if names is not None else place
    return Bunch(**data, environments=values.astype(str))


def _group_column(data, y, concept):
    """The group of each row and the group names: the data's own, else (label, concept)."""
    groups, names = data.get("groups"), data.get("group_names")
    if groups is not None:
        groups = np.asarray(groups)
        if len(groups) != len(y):
            raise ValueError(f"data['groups'] has {len(groups)} rows, the labels {len(y)}.")
        if names is not None and groups.dtype.kind in "iu":
            names = [str(name) for name in names]
            if groups.min() < 0 or groups.max() >= len(names):
                raise ValueError(
                    f"data['groups'] holds codes up to {groups.max()} but data['group_names'] "
                    f"names {len(names)} groups."
                )
            return np.asarray(names, dtype=object)[groups].astype(str)
        return groups.astype(str)
    class_names = data.get("target_names")
    labels = [
        str(class_names[v]) if class_names is not None and isinstance(v, (int, np.integer))
        else str(v)
        for v in y.tolist()
    ]  # fmt: skip
    return np.array([f"y={label}, place={c}" for label, c in zip(labels, concept)])


def _with_pixels(data, embedder):
    """Raw pixels of the listed files as features, when there is no encoder."""
    if embedder is not None or "data" in data or "X" in data or "paths" not in data:
        return data
    return Bunch(**data, data=_read_pixels(data["paths"]))


def _read_pixels(paths):
    """Every image as RGB pixels in [0, 1], flattened; one size for all, else an error."""
    from PIL import Image

    rows, shape = [], None
    for path in paths:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
        if shape is None:
            shape, first = array.shape, path
        elif array.shape != shape:
            raise ValueError(
                f"raw pixels need images of one size: {path} is {array.shape[1]}x"
                f"{array.shape[0]}, {first} is {shape[1]}x{shape[0]}. Give an encoder "
                "(embedder=, or --image-model / --model-name), which resizes."
            )
        rows.append(array.reshape(-1))
    return np.stack(rows)


def _counts(groups):
    values, counts = np.unique(groups, return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts)}


def _check_splits(split, groups, rows):
    for name in SPLITS:
        if not rows[name].size:
            raise ValueError(f"the {name!r} split holds no row; the protocol needs all three.")
    train_groups = set(groups[rows["train"]].tolist())
    test_groups = set(groups[rows["test"]].tolist())
    if train_groups - test_groups:
        raise ValueError(
            f"groups {sorted(train_groups - test_groups)} have training rows but no test row: "
            "the adjusted average weighs every training group's test accuracy."
        )


# ------------------------------------------------------------------------------ methods
def _columns(dataset, *, embedder, methods, interventions, want_image, notes):
    """The columns that run. ``"auto"``: every registered method whose needs are met."""
    if isinstance(methods, str) and methods == "auto":
        from skicm.evaluation._methods import available_methods

        available = {
            "text tower": _has_text_tower(embedder),
            "class names": dataset.class_names is not None,
            "counterparts": dataset.has_counterparts or (dataset.embed and want_image),
            "groups": True,
        }
        selected, left_out = [], {}
        for method in available_methods().values():
            missing = _missing(method.requirements(), available)
            if missing:
                left_out.setdefault(" and ".join(missing), []).append(method.name)
            else:
                selected.append(method)
        for needs, names in left_out.items():
            notes.append(f"not run, as they need {needs}: {', '.join(names)}.")
        methods = selected
    else:
        _select_methods(methods)  # names checked here, with the registry's message
    columns, _ = _resolve_options(
        dataset, embedder=embedder, methods=methods, interventions=interventions,
        zero_shot="auto", linear_probe=True, scoring="accuracy", selection="training-domain",
        want_image=want_image, notes=notes, open_class=False,
    )  # fmt: skip
    return columns


def _validation_score(scoring, estimator, features, rows, groups, train):
    if scoring == "worst-group":
        predicted = estimator.predict(features.X[rows])
        return worst_group_accuracy(features.y[rows], predicted, groups=groups[rows])
    if scoring == "adjusted-average":  # WILDS: groups weighted by their share of the training rows
        predicted = estimator.predict(features.X[rows])
        return adjusted_average_accuracy(
            features.y[rows], predicted, groups=groups[rows], group_weights=groups[train]
        )
    registered = SCORINGS[scoring]
    return _score(registered, registered.make_scorer(), estimator, features, rows)


def _fit_and_score(params, *, column, features, train, val, groups, scoring, fold):
    """Fit one candidate on the training split; its score on the validation split."""
    estimator, projector = _fit_candidate(column, params, features, train, fold)
    score = _validation_score(scoring, estimator, features, val, groups, train)
    return score, estimator, projector


# ------------------------------------------------------------------------------ the protocol
def _protocol(data, *, embedder, methods, interventions, scoring, n_components, alpha, C,
              seeds, templates, intervention_seed, n_jobs, progress):  # fmt: skip
    seeds = _seed_list(seeds)
    alphas = _positive_values(alpha, "alpha", allow_zero=True)
    c_values = _positive_values(C, "C", allow_zero=False)
    _resolve_n_components(n_components)
    n_jobs = _check_n_jobs(n_jobs)
    _check_templates(templates)
    if scoring not in GROUP_SCORINGS:
        raise ValueError(f"scoring must be one of {list(GROUP_SCORINGS)}, got {scoring!r}.")
    want_image = interventions == "auto" or "image" in (
        (interventions,) if isinstance(interventions, str) else tuple(interventions)
    )
    make_data = data if callable(data) else None
    records, notes, grids = [], [], {}
    columns = features = None
    for seed in seeds:
        if columns is None or make_data is not None:
            bunch = make_data(random_state=seed) if make_data else data
            if not isinstance(bunch, Mapping):
                raise ValueError(
                    "data must be a Bunch (e.g. from load_group_metadata or "
                    "make_spurious_digits) or a callable returning one, got "
                    f"{type(bunch).__name__}."
                )
            bunch = _with_pixels(_with_concept(bunch), embedder)
            dataset = _read_data(bunch, embedder)
            split = _split_column(bunch)
            if len(split) != len(dataset.y):
                raise ValueError(
                    f"data['split'] has {len(split)} rows, the labels {len(dataset.y)}."
                )
            groups = _group_column(bunch, dataset.y, dataset.domains)
            rows = {name: np.flatnonzero(split == name) for name in SPLITS}
            _check_splits(split, groups, rows)
            if scoring == "interventional" and not (dataset.has_counterparts or dataset.embed):
                raise ValueError(
                    "scoring='interventional' needs counterparts of the validation rows "
                    "(data['data_intervened'] or images to intervene on)."
                )
            if columns is None:
                columns = _columns(
                    dataset, embedder=embedder, methods=methods, interventions=interventions,
                    want_image=want_image or scoring == "interventional", notes=notes,
                )  # fmt: skip
                if any(column.method.zero_shot for column in columns):
                    templates = zero_shot_templates(templates)
                    # a class missing from a prompt file fails before any embedding
                    _check_prompt_classes(templates, _prompt_names(dataset.class_names))
            counterparts_used = _uses_counterparts(
                columns, ["counterparts"] if scoring == "interventional" else []
            )
            features = _prepare_features(
                dataset, embedder,
                want_image=(want_image or scoring == "interventional") and counterparts_used,
                intervention_seed=intervention_seed, progress=progress,
            )  # fmt: skip
        axes = {
            "n_components": _resolve_n_components(n_components, features.X.shape[1]),
            "alpha": alphas,
            "C": c_values,
        }
        class_names = _prompt_names(features.class_names)
        fold = _Fold(
            features, text_encoder=embedder, class_names=class_names,
            projector_class_names=class_names, templates=templates, n_jobs=n_jobs,
        )  # fmt: skip
        candidates = [column.method.candidates(axes) for column in columns]
        bar = _progress(
            total=sum(map(len, candidates)), desc=f"seed {seed}: grid candidates",
            enabled=progress,
        )  # fmt: skip
        train, val, test = rows["train"], rows["val"], rows["test"]
        for column, column_candidates in zip(columns, candidates):
            grids[column.name] = column_candidates
            bar.set_postfix_str(column.name)

            fit_and_score = partial(
                _fit_and_score, column=column, features=features, train=train, val=val,
                groups=groups, scoring=scoring, fold=fold,
            )  # fmt: skip
            with _one_blas_thread():
                if column.kind is not None:
                    # Every projector the candidates truncate, fitted first (one
                    # eigendecomposition per alpha, never two threads computing the same).
                    alphas = list(dict.fromkeys(c["alpha"] for c in column_candidates))
                    full = partial(fold.projectors.full, column.kind, rows=train)
                    fold.map(lambda alpha, full=full: full(alpha), alphas, None)
                fitted = fold.map(fit_and_score, column_candidates, bar)
                # The first of equal scores: the grid's order breaks ties.
                best = int(np.argmax([score for score, _, _ in fitted]))
                validation, estimator, projector = fitted[best]
                predicted = estimator.predict(features.X[test])
            records.append(
                _record(
                    column.name,
                    seed,
                    scoring,
                    column_candidates,
                    best,
                    validation,
                    projector,
                    features.y[test],
                    predicted,
                    groups,
                    rows,
                )
            )
        bar.close()
    test_groups = sorted(set(groups[rows["test"]].tolist()))
    n_classes = len(features.class_names or np.unique(features.y))
    return GroupResults(
        records=records, methods=[column.name for column in columns], groups=test_groups,
        scoring=scoring, chance=1.0 / n_classes, notes=notes, grids=grids,
    )  # fmt: skip


def _record(method, seed, scoring, candidates, best, validation, projector, y_test, predicted,
            groups, rows):  # fmt: skip
    test_groups = groups[rows["test"]]
    accuracies = group_accuracies(y_test, predicted, groups=test_groups)
    worst = min(accuracies, key=lambda g: (accuracies[g], str(g)))
    chosen = candidates[best]
    return {
        "method": method,
        "seed": seed,
        "worst_group": float(accuracies[worst]),
        "average": float(np.mean(predicted == y_test)),
        "adjusted_average": adjusted_average_accuracy(
            y_test, predicted, groups=test_groups, group_weights=groups[rows["train"]]
        ),
        "worst_group_name": str(worst),
        "scoring": scoring if len(candidates) > 1 else "",
        "validation_score": float(validation) if len(candidates) > 1 else None,
        "n_candidates": len(candidates),
        "chosen": json.dumps(chosen, sort_keys=True),
        **_chosen_values(chosen, projector),
        "n_train": int(rows["train"].size),
        "n_val": int(rows["val"].size),
        "n_test": int(rows["test"].size),
        "group_accuracy": {str(g): float(a) for g, a in accuracies.items()},
        "group_n_test": _counts(test_groups),
        "group_n_train": _counts(groups[rows["train"]]),
        "group_n_val": _counts(groups[rows["val"]]),
    }


def evaluate_spurious_groups(
    data,
    *,
    embedder=None,
    methods="auto",
    interventions="auto",
    scoring="worst-group",
    n_components=DEFAULT_GRID["n_components"],
    alpha=DEFAULT_GRID["alpha"],
    C=DEFAULT_GRID["C"],
    seeds=1,
    templates="openai-imagenet",
    intervention_seed=0,
    n_jobs=None,
    progress=True,
):
    """Worst-group, average and adjusted-average test accuracy of every method (Waterbirds).

    For each seed and method, every candidate of the method's grid is fitted on the rows of
    the ``"train"`` split and scored on the ``"val"`` split by ``scoring``; the best candidate
    (the first of equal scores) is reported on the ``"test"`` split, which takes part in no
    choice. The concept that the methods remove or balance (the ``groups`` given to
    :class:`~skicm.InvariantProjector`, :class:`~skicm.baselines.ConceptErasure` and
    :class:`~skicm.baselines.GroupBalancedProbe`) is the spurious attribute (``place``);
    the groups of the metrics are (label, place).

    Parameters
    ----------
    data : Bunch or callable
        A data set of :mod:`skicm.datasets`' convention with a ``split`` column ("train",
        "val", "test", or 0 / 1 / 2) and the spurious attribute as ``place`` (with
        ``place_names``) or ``environments``; ``groups`` (with ``group_names``) when given,
        else (label, place). The readers of
        :func:`~skicm.datasets._group_metadata.load_group_metadata` (Waterbirds, CelebA,
        MetaShift layouts) and :func:`~skicm.datasets._spurious_digits.make_spurious_digits`
        return such data. Without an ``embedder``, ``data`` (features) is used, or the pixels
        of ``paths`` (all images of one size). A callable ``data(random_state=seed)`` gives
        one data set per seed.
    embedder : estimator with ``transform`` or None, default=None
        Embeds ``paths`` or ``images`` (and ``images_intervened``), e.g. a
        :class:`~skicm.CLIPEmbedder`; its ``store`` keeps the embeddings.
    methods : "auto" or sequence of str or Method, default="auto"
        Registered method names (:func:`~skicm.evaluation.available_methods`, the baselines
        included) or :class:`~skicm.evaluation.Method` objects; ``"auto"``: every registered
        method whose needs the data and encoder meet (the others are listed in ``notes``).
    interventions : "auto" or sequence of {"image", "text", "groups"}, default="auto"
        Kinds of interventional data of the invariant projector, one ICM column each;
        ``"groups"`` learns from the places.
    scoring : str, default="worst-group"
        What the validation split is scored by, one of :data:`GROUP_SCORINGS`:
        ``"worst-group"``, ``"adjusted-average"`` (WILDS: the validation groups weighted by their
        share of the training rows), ``"interventional"`` or ``"accuracy"``.
    n_components, alpha, C : sequence, default=DEFAULT_GRID values
        The grid's ranks, intervention weights and probe regularisations, as in
        :func:`~skicm.evaluation.evaluate_domain_generalization`.
    seeds : int or sequence of int, default=1
        Seeds (an int ``n``: ``0 .. n - 1``); with a callable ``data``, one data set each.
    templates : str or sequence of str, default="openai-imagenet"
        Zero-shot prompt templates.
    intervention_seed : int, default=0
        Seed of the image interventions where the data have no counterparts.
    n_jobs : int or None, default=None
        Threads fitting the grid's candidates at the same time.
    progress : bool, default=True
        tqdm progress bars.

    Returns
    -------
    results : GroupResults
        One record per method and seed.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.utils import Bunch
    >>> from skicm.evaluation._groups import evaluate_spurious_groups
    >>> rng = np.random.default_rng(0)
    >>> y = np.tile([0, 1], 150)
    >>> place = np.where(rng.random(300) < 0.9, y, 1 - y)
    >>> split = np.repeat(["train", "val", "test"], 100)
    >>> place[100:] = np.tile([0, 0, 1, 1], 50)  # val and test balanced
    >>> X = np.column_stack([y + rng.normal(0, 0.7, 300), 2.0 * place, rng.normal(size=300)])
    >>> data = Bunch(data=X, target=y, place=place, place_names=["land", "water"],
    ...              split=split)
    >>> results = evaluate_spurious_groups(
    ...     data, methods=["linear probe", "DFR"], C=[0.1, 1.0], progress=False)
    >>> results.groups
    ['y=0, place=land', 'y=0, place=water', 'y=1, place=land', 'y=1, place=water']
    >>> mean, std = results.score("DFR", "worst_group")
    >>> bool(0 <= mean <= 1)
    True
    """
    from sklearn import config_context

    # Metadata routing carries groups and X_intervened to the methods that ask for them.
    with config_context(enable_metadata_routing=True):
        return _protocol(
            data, embedder=embedder, methods=methods, interventions=interventions,
            scoring=scoring, n_components=n_components, alpha=alpha, C=C, seeds=seeds,
            templates=templates, intervention_seed=intervention_seed, n_jobs=n_jobs,
            progress=progress,
        )  # fmt: skip


# ------------------------------------------------------------------------------ results
_SCORING_LABELS = {
    "worst-group": "worst-group accuracy of the validation split",
    "adjusted-average": "WILDS' adjusted average of the validation split (groups weighted by "
    "their training share)",
    "interventional": "the worse of the validation accuracy and the accuracy on the "
    "validation rows' counterparts",
    "accuracy": "accuracy of the validation split",
}
_METRICS = {
    "worst_group": "worst-group",
    "average": "average",
    "adjusted_average": "adjusted average",
}


@dataclass
class GroupResults(_ResultFiles):
    """Results of :func:`evaluate_spurious_groups`: one record per method and seed.

    Attributes
    ----------
    records : list of dict
        Test ``worst_group``, ``average`` and ``adjusted_average`` accuracy, the chosen
        candidate and its validation score, and per group (``group_accuracy``,
        ``group_n_test``, ``group_n_train``, ``group_n_val``: dicts by group name).
    methods : list of str
        Method names, in column order.
    groups : list of str
        The test split's groups, in order.
    scoring : str
        What the validation split was scored by.
    chance : float
        Accuracy of guessing uniformly among the classes.
    notes : list of str
        What could not run and why.
    grids : dict of str to list of dict
        The candidates of each method.

    Examples
    --------
    >>> from skicm.evaluation._groups import GroupResults
    >>> record = {"method": "probe", "seed": 0, "worst_group": 0.5, "average": 0.75,
    ...           "adjusted_average": 0.9, "group_accuracy": {"a": 0.5, "b": 1.0},
    ...           "group_n_test": {"a": 2, "b": 2}, "group_n_train": {"a": 1, "b": 9}}
    >>> results = GroupResults([record], ["probe"], ["a", "b"], "worst-group", 0.5)
    >>> results.score("probe", "average")
    (0.75, 0.0)
    >>> results.group_score("probe", "a")
    (0.5, 0.0)
    """

    records: list
    methods: list
    groups: list
    scoring: str
    chance: float
    notes: list = field(default_factory=list)
    grids: dict = field(default_factory=dict)
    # The legend stands beside the axes, outside the figure: "tight" takes it in.
    _png_bbox_inches = "tight"

    @property
    def seeds(self):
        """The seeds of the records, sorted."""
        return sorted({record["seed"] for record in self.records})

    def _values(self, method, value):
        if method not in self.methods:
            raise ValueError(f"method {method!r} is not one of {self.methods}.")
        values = np.array([value(r) for r in self.records if r["method"] == method], dtype=float)
        return float(values.mean()), float(values.std())

    def score(self, method, metric="worst_group"):
        """Mean and standard deviation over seeds of one test metric.

        Parameters
        ----------
        method : str
            A name of :attr:`methods`.
        metric : {"worst_group", "average", "adjusted_average"}, default="worst_group"
            The test metric.

        Returns
        -------
        mean, std : float
        """
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {list(_METRICS)}, got {metric!r}.")
        return self._values(method, lambda record: record[metric])

    def group_score(self, method, group):
        """Mean and standard deviation over seeds of one group's test accuracy.

        Parameters
        ----------
        method : str
            A name of :attr:`methods`.
        group : str
            A name of :attr:`groups`.

        Returns
        -------
        mean, std : float
        """
        if group not in self.groups:
            raise ValueError(f"group {group!r} is not one of {self.groups}.")
        return self._values(method, lambda record: record["group_accuracy"][group])

    def _sizes(self, key):
        """{group: sorted distinct counts over seeds} of ``group_n_<key>``."""
        sizes = {}
        for record in self.records:
            for group, n in record.get(f"group_n_{key}", {}).items():
                sizes.setdefault(group, set()).add(int(n))
        return {group: sorted(values) for group, values in sizes.items()}

    def to_csv(self, path):
        """One row per method and seed: the metrics, the choice, and every group's accuracy.

        Per-group columns are ``accuracy[<group>]``, ``n_test[<group>]`` and
        ``n_train[<group>]``.

        Parameters
        ----------
        path : str or path-like
            The CSV file to write.

        Returns
        -------
        path : pathlib.Path
        """
        path = Path(path)
        per_group = [
            f"{kind}[{group}]"
            for group in self.groups
            for kind in ("accuracy", "n_test", "n_train")
        ]
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([*GROUP_RESULT_COLUMNS, *per_group])
            for record in self.records:
                cells = [_csv_value(record.get(key)) for key in GROUP_RESULT_COLUMNS]
                for group in self.groups:
                    cells.extend(
                        [
                            _csv_value(record["group_accuracy"].get(group)),
                            _csv_value(record["group_n_test"].get(group)),
                            _csv_value(record.get("group_n_train", {}).get(group, 0)),
                        ]
                    )
                writer.writerow(cells)
        return path

    def to_markdown(self, *, title=None):
        """The tables: test metrics per method, accuracy per group, group sizes, the grid.

        Parameters
        ----------
        title : str or None, default=None
            A heading put first.

        Returns
        -------
        markdown : str
        """
        spread = self._spread("1 seed ({seeds}), no standard deviation")
        lines = [f"## {title}", ""] if title else []
        lines.append(
            f"Test accuracy (%), {spread}. Every method's hyperparameters were chosen on the "
            f"validation split by {_SCORING_LABELS.get(self.scoring, self.scoring)}; the test "
            "split chose nothing. Adjusted average: the groups' test accuracies weighted by "
            f"their shares of the training split (WILDS). Chance: {100 * self.chance:.1f}."
        )
        lines.extend(
            ["", "| method | worst-group | average | adjusted average |", "|---|---:|---:|---:|"]
        )
        for method in self.methods:
            cells = [self._mean_std(*self.score(method, metric)) for metric in _METRICS]
            lines.append("| " + " | ".join([method, *cells]) + " |")
        lines.extend(["", "Test accuracy (%) per group:", ""])
        lines.append("| method | " + " | ".join(self.groups) + " |")
        lines.append("|---|" + "---:|" * len(self.groups))
        for method in self.methods:
            cells = [self._mean_std(*self.group_score(method, g)) for g in self.groups]
            lines.append("| " + " | ".join([method, *cells]) + " |")
        for key in ("train", "val", "test"):
            sizes = self._sizes(key)
            if sizes:
                cells = [_size_text(sizes.get(g, [0])) for g in self.groups]
                lines.append("| " + " | ".join([f"n_{key}", *cells]) + " |")
        for note in self.notes:
            lines.extend(["", f"Note: {note}"])
        lines.extend(["", "Searched grid (one candidate chosen per method and seed):", ""])
        lines.extend(["| method | candidates | chosen (per seed) |", "|---|---:|---|"])
        for method in self.methods:
            chosen = "; ".join(
                r["chosen"] for r in self.records if r["method"] == method and r["n_candidates"] > 1
            )
            n = len(self.grids.get(method, ())) or max(
                r["n_candidates"] for r in self.records if r["method"] == method
            )
            lines.append(f"| {method} | {n} | {chosen or '-'} |")
        return "\n".join(lines) + "\n"

    def plot(self, *, title=None):
        """Bars of every group's test accuracy, the worst group and the average, per method.

        One bar per method in each cluster, the mean over seeds with the standard deviation
        as an error bar; every bar carries its value; each group is labelled with its number
        of test images. The labels are laid out on the drawn figure so that no two overlap
        (as in :func:`~skicm.evaluation.plot_domain_scores`: vertical, then a wider figure).

        Parameters
        ----------
        title : str or None, default=None
            The title, followed by a line naming the selection.

        Returns
        -------
        figure : matplotlib.figure.Figure
        """
        from skicm._matplotlib import pyplot

        plt = pyplot()
        sizes = self._sizes("test")
        clusters = [*self.groups, "worst-group", "average"]
        labels = [
            f"{group.replace(', ', chr(10))}\nn={_size_text(sizes.get(group, [0]))}"
            for group in self.groups
        ] + ["worst\ngroup", "average"]
        n_methods = len(self.methods)
        width = 0.8 / n_methods
        figure, ax = plt.subplots(figsize=(max(6.0, 0.32 * n_methods * len(clusters) + 2), 4.8))
        value_labels = []
        for index, method in enumerate(self.methods):
            stats = [self.group_score(method, g) for g in self.groups]
            stats += [self.score(method, "worst_group"), self.score(method, "average")]
            means = 100 * np.array([m for m, _ in stats])
            errors = 100 * np.array([s for _, s in stats]) if len(self.seeds) > 1 else None
            x = np.arange(len(clusters)) - 0.4 + width * (index + 0.5)
            bars = ax.bar(x, means, width, yerr=errors, label=method, capsize=2)
            for bar, mean in zip(bars, means):
                value_labels.append(
                    ax.annotate(
                        f"{mean:.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                        fontsize=7, rotation=90 if n_methods > 3 else 0,
                    )
                )  # fmt: skip
        ax.axhline(100 * self.chance, color="gray", linestyle=":", linewidth=1, label="chance")
        ax.set_xticks(np.arange(len(clusters)), labels, fontsize=8)
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 118)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        selection = f"chosen on the validation split by {self.scoring}"
        seeds = self.seeds
        selection += f"; mean ± std over {len(seeds)} seeds" if len(seeds) > 1 else "; 1 seed"
        ax.set_title(f"{title}\n{selection}" if title else selection, fontsize=9)
        _untangle(ax, value_labels, own_figure=True, bar_width=width)
        return figure


# ------------------------------------------------------------------------------ command line
def run_groups_command(args, *, embedder=None):
    """``skicm evaluate SOURCE --protocol groups`` with parsed ``args``; the exit status.

    Reads ``args.source`` with ``args.layout`` (:func:`load_group_metadata`), runs
    :func:`evaluate_spurious_groups`, prints the tables and writes ``args.output`` /
    ``args.plot`` when given.

    Parameters
    ----------
    args : argparse.Namespace
        ``source``, ``layout`` (waterbirds, celeba, folders), ``target_attribute``,
        ``spurious_attribute``, ``image_root``, ``methods``, ``interventions``, ``scoring``
        ("auto" is worst-group), ``n_components``, ``alpha``, ``C``, ``seeds``,
        ``templates``, ``intervention_seed``, ``n_jobs``, ``no_progress``, ``store``,
        ``output``, ``plot``; options of the other protocols that do not apply here
        (``domains``, ``test_domains``, ``class_alias``, ``base_classes``) must be unset.
    embedder : estimator or None, default=None
        The encoder the options asked for; None uses raw pixels.

    Returns
    -------
    status : int
        0.
    """
    from skicm.datasets._group_metadata import LAYOUTS, load_group_metadata

    if args.source is None:
        raise ValueError(
            "--protocol groups needs SOURCE: Waterbirds' metadata.csv, CelebA's "
            "list_attr_celeba.txt, or a folder ROOT/class/context/image (--layout)."
        )
    layout = getattr(args, "layout", None) or "waterbirds"
    if layout not in LAYOUTS:
        raise ValueError(f"--layout must be one of {list(LAYOUTS)}, got {layout!r}.")
    if getattr(args, "dataset", None) not in (None, "folder"):
        raise ValueError(
            f"--dataset {args.dataset} builds a leave-one-domain-out data set; --protocol groups "
            "reads SOURCE with --layout."
        )
    for option in ("domains", "test_domains", "class_alias", "class_alias_file", "base_classes"):
        if getattr(args, option, None):
            raise ValueError(
                f"--{option.replace('_', '-')} applies to the other protocols, not to "
                "--protocol groups (which uses the data's own train / val / test split)."
            )
    scoring = "worst-group" if args.scoring in (None, "auto") else args.scoring
    if scoring not in GROUP_SCORINGS:
        raise ValueError(
            f"--scoring for --protocol groups must be one of {['auto', *GROUP_SCORINGS]}, got "
            f"{args.scoring!r}."
        )
    if getattr(args, "store", None) is not None and embedder is None:
        raise ValueError("--store keeps embeddings: it needs --model-name or --image-model.")
    _use_file_backend(args.output, args.plot)
    if embedder is not None:
        if args.no_progress and "progress" in embedder.get_params():
            embedder.set_params(progress=False)
    data = load_group_metadata(
        args.source, layout=layout,
        target_attribute=getattr(args, "target_attribute", None) or "Blond_Hair",
        spurious_attribute=getattr(args, "spurious_attribute", None) or "Male",
        root=getattr(args, "image_root", None),
    )  # fmt: skip
    counts = {name: int((data.split == name).sum()) for name in SPLITS}
    features = "raw pixels" if embedder is None else type(embedder).__name__
    print(
        f"{len(data.paths)} images ({', '.join(f'{k} {v}' for k, v in counts.items())}), "
        f"classes {', '.join(data.target_names)}, places {len(data.place_names)}; features: "
        f"{features}",
        flush=True,
    )
    results = evaluate_spurious_groups(
        data, embedder=embedder, methods=args.methods or "auto",
        interventions=args.interventions or "auto", scoring=scoring,
        n_components=args.n_components, alpha=args.alpha, C=args.C, seeds=args.seeds,
        templates=args.templates, intervention_seed=args.intervention_seed,
        n_jobs=args.n_jobs, progress=not args.no_progress,
    )  # fmt: skip
    title = f"{Path(args.source).resolve().name}: spurious groups ({layout})"
    _report_results(results, title=title, output=args.output, plot=args.plot)
    return 0
