"""Group metrics of the spurious-correlation benchmarks, and scorers for model selection.

Waterbirds, CelebA and MetaShift report a classifier by its **worst-group accuracy**: the rows
are split into groups (for Waterbirds, a group is a (label, background) pair), accuracy is
computed per group, and the lowest one is the score. WILDS reports Waterbirds' average accuracy
"adjusted": the per-group test accuracies weighted by each group's share of the *training*
data, because Waterbirds' validation and test sets are balanced across backgrounds while its
training set is not (:func:`adjusted_average_accuracy`).

The scorers (:func:`make_worst_group_scorer`, :func:`make_adjusted_average_scorer`, and
:func:`get_scorer` by name) are scikit-learn scorers that request ``groups`` through metadata
routing, for ``scoring=`` of :class:`~sklearn.model_selection.GridSearchCV` and
:func:`~sklearn.model_selection.cross_validate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import numpy as np
import sklearn
from sklearn.metrics import get_scorer as _sklearn_get_scorer
from sklearn.metrics._scorer import _cached_call, _Scorer
from sklearn.utils.metadata_routing import MetadataRequest
from sklearn.utils.validation import check_consistent_length, column_or_1d

__all__ = [
    "SCORERS",
    "adjusted_average_accuracy",
    "get_scorer",
    "group_accuracies",
    "make_adjusted_average_scorer",
    "make_worst_group_scorer",
    "worst_group_accuracy",
]


def _as_key(value):
    return value.item() if isinstance(value, np.generic) else value


def _check_inputs(y_true, y_pred, groups):
    if groups is None:
        raise ValueError("groups is required: the group of each row (e.g. its (label, place)).")
    y_true = column_or_1d(y_true)
    y_pred = column_or_1d(y_pred)
    groups = column_or_1d(groups)
    check_consistent_length(y_true, y_pred, groups)
    if len(y_true) == 0:
        raise ValueError("y_true is empty: group accuracies need at least one row.")
    return y_true, y_pred, groups


def group_accuracies(y_true, y_pred, *, groups):
    """Accuracy of each group.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_pred : array-like of shape (n_samples,)
        Predicted labels.
    groups : array-like of shape (n_samples,)
        Group of each row.

    Returns
    -------
    accuracies : dict
        ``{group: accuracy}`` for every group present, in sorted group order.

    See Also
    --------
    worst_group_accuracy : The lowest of these accuracies.

    Examples
    --------
    >>> from skicm.metrics import group_accuracies
    >>> group_accuracies([0, 0, 1, 1], [0, 1, 1, 1], groups=["a", "a", "b", "b"])
    {'a': 0.5, 'b': 1.0}
    """
    y_true, y_pred, groups = _check_inputs(y_true, y_pred, groups)
    values, index = np.unique(groups, return_inverse=True)
    correct = np.bincount(index, weights=(y_true == y_pred).astype(np.float64))
    counts = np.bincount(index)
    return {_as_key(value): float(c / n) for value, c, n in zip(values, correct, counts)}


def worst_group_accuracy(y_true, y_pred, *, groups):
    """The lowest accuracy over the groups present (Waterbirds' headline metric).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_pred : array-like of shape (n_samples,)
        Predicted labels.
    groups : array-like of shape (n_samples,)
        Group of each row, e.g. ``2 * y + place`` for Waterbirds' four (label, place) groups.

    Returns
    -------
    accuracy : float
        ``min over groups g of accuracy(rows of g)``.

    See Also
    --------
    group_accuracies : Every group's accuracy.
    adjusted_average_accuracy : WILDS' average for Waterbirds.

    Examples
    --------
    >>> from skicm.metrics import worst_group_accuracy
    >>> worst_group_accuracy([0, 0, 1, 1], [0, 1, 1, 1], groups=["a", "a", "b", "b"])
    0.5
    """
    return min(group_accuracies(y_true, y_pred, groups=groups).values())


def _group_weights(group_weights):
    """``{group: weight}`` normalised to sum 1, from a mapping or from training groups."""
    if group_weights is None:
        raise ValueError(
            "group_weights is required: the training share of each group, as a mapping "
            "{group: weight} or as the array of the training rows' groups (counted)."
        )
    if isinstance(group_weights, Mapping):
        weights = {_as_key(key): float(value) for key, value in group_weights.items()}
    else:
        train_groups = column_or_1d(group_weights)
        values, counts = np.unique(train_groups, return_counts=True)
        weights = {_as_key(value): float(count) for value, count in zip(values, counts)}
    if not weights:
        raise ValueError("group_weights is empty: give at least one group.")
    total = sum(weights.values())
    if not all(np.isfinite(w) and w >= 0 for w in weights.values()) or total <= 0:
        raise ValueError(
            f"group_weights must be finite, non-negative and not all zero; got {weights!r}."
        )
    return {key: value / total for key, value in weights.items()}


def adjusted_average_accuracy(y_true, y_pred, *, groups, group_weights):
    """Per-group accuracy weighted by each group's share of the training data (WILDS).

    WILDS' Waterbirds reports ``adj_acc_avg``: the accuracy of each (label, place) group on
    the evaluation split, averaged with weights equal to that group's share of the *training*
    split. Waterbirds' validation and test sets put every bird on each background equally
    often, its training set does not; the adjusted average is the accuracy the classifier
    would have on test data distributed like the training data.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels of the evaluated rows.
    y_pred : array-like of shape (n_samples,)
        Predicted labels.
    groups : array-like of shape (n_samples,)
        Group of each evaluated row.
    group_weights : mapping or array-like of shape (n_train,)
        The training share of each group: ``{group: weight}`` (normalised here), or the
        groups of the training rows, counted. Every group with a positive weight must occur
        in ``groups``; groups absent from the weights count zero (as in WILDS, where a group
        without training rows has zero weight).

    Returns
    -------
    accuracy : float
        ``sum_g w_g * accuracy(rows of g)``.

    See Also
    --------
    worst_group_accuracy : The lowest group accuracy.

    Examples
    --------
    >>> from skicm.metrics import adjusted_average_accuracy
    >>> train_groups = ["a"] * 9 + ["b"]  # group "a" is 90% of the training data
    >>> adjusted_average_accuracy(
    ...     [0, 0, 1, 1], [0, 1, 1, 1], groups=["a", "a", "b", "b"], group_weights=train_groups
    ... )
    0.55
    """
    accuracies = group_accuracies(y_true, y_pred, groups=groups)
    weights = _group_weights(group_weights)
    missing = [g for g, w in weights.items() if w > 0 and g not in accuracies]
    if missing:
        raise ValueError(
            f"groups {sorted(missing, key=str)!r} have training weight but no evaluated row; "
            f"the evaluated groups are {sorted(accuracies, key=str)!r}."
        )
    return float(sum(w * accuracies[g] for g, w in weights.items() if w > 0))


_ROUTING_HINT = (
    "Switch metadata routing on with sklearn.set_config(enable_metadata_routing=True) (or "
    "`with sklearn.config_context(enable_metadata_routing=True):`) and pass groups= to the "
    "fit of GridSearchCV / cross_validate; called directly, pass groups=."
)


class _GroupScorer(_Scorer):
    """A ``make_scorer`` scorer whose score function needs ``groups``, requested by default."""

    def __init__(self, score_func, name, kwargs=None):
        super().__init__(score_func, 1, dict(kwargs or {}), "predict")
        self._name = name

    def __repr__(self):
        return self._name

    # Called directly (scorer(estimator, X, y, groups=...)) it works whatever the routing
    # setting, like skicm.model_selection's scorers; searches pass groups only when routing
    # is on, and then through _score.
    def __call__(self, estimator, X, y_true, **kwargs):
        return self._score(partial(_cached_call, None), estimator, X, y_true, **kwargs)

    def _score(self, method_caller, estimator, X, y_true, **kwargs):
        groups = kwargs.get("groups")
        if groups is None:
            if sklearn.get_config()["enable_metadata_routing"]:
                reason = (
                    "metadata routing is on but no groups reached the scorer: pass groups= "
                    "to the fit of GridSearchCV / cross_validate (one group per row of X)."
                )
            else:
                reason = "it receives groups only through metadata routing, which is off. "
                reason += _ROUTING_HINT
            raise ValueError(f"{self!r} needs groups: {reason}")
        if len(groups) != len(y_true):
            raise ValueError(
                f"groups has {len(groups)} entries but the scored fold has {len(y_true)} rows: "
                "groups needs one group per row."
            )
        return super()._score(method_caller, estimator, X, y_true, **kwargs)

    def _get_metadata_request(self):
        if hasattr(self, "_metadata_request"):  # set_score_request was called
            return super()._get_metadata_request()
        request = MetadataRequest(owner=self)
        request.score.add_request(param="groups", alias=True)
        return request


def make_worst_group_scorer():
    """A scorer of worst-group accuracy that requests ``groups`` as metadata.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, groups=...)`` (greater is better). It requests ``groups``
        under metadata routing by default. Inside a search with routing off it receives no
        groups and raises an error naming
        ``sklearn.set_config(enable_metadata_routing=True)``, which
        :class:`~sklearn.model_selection.GridSearchCV` reports as a "Scoring failed" warning
        and a NaN score, unless ``error_score="raise"``.

    See Also
    --------
    worst_group_accuracy : The metric.
    skicm.model_selection.make_worst_environment_scorer : the same rule for any score.

    Examples
    --------
    >>> import numpy as np
    >>> import sklearn
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import GridSearchCV
    >>> from skicm.metrics import make_worst_group_scorer
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(80, 2)), np.tile([0, 1], 40)
    >>> groups = np.repeat([0, 1], 40)
    >>> with sklearn.config_context(enable_metadata_routing=True):
    ...     search = GridSearchCV(
    ...         LogisticRegression(), {"C": [0.1, 1.0]}, scoring=make_worst_group_scorer()
    ...     ).fit(X, y, groups=groups)
    >>> sorted(search.best_params_)
    ['C']
    """
    return _GroupScorer(worst_group_accuracy, "make_worst_group_scorer()")


def make_adjusted_average_scorer(group_weights=None):
    """A scorer of WILDS' adjusted average accuracy that requests ``groups`` as metadata.

    Parameters
    ----------
    group_weights : mapping, array-like or None, default=None
        Training share of each group (see :func:`adjusted_average_accuracy`), fixed in the
        scorer. ``None`` requests them as metadata too: pass ``group_weights=`` (a mapping,
        not split by the search because it is not one value per row) beside ``groups=`` to
        the search's ``fit``.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, groups=...)`` (greater is better), requesting ``groups``
        (and, without fixed weights, ``group_weights``) under metadata routing.

    See Also
    --------
    adjusted_average_accuracy : The metric.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.dummy import DummyClassifier
    >>> from skicm.metrics import make_adjusted_average_scorer
    >>> X, y = np.zeros((4, 1)), np.array([0, 0, 1, 1])
    >>> model = DummyClassifier(strategy="constant", constant=0).fit(X, y)
    >>> scorer = make_adjusted_average_scorer({"a": 0.9, "b": 0.1})
    >>> round(scorer(model, X, y, groups=["a", "a", "b", "b"]), 2)
    0.9
    """
    if group_weights is None:
        scorer = _GroupScorer(adjusted_average_accuracy, "make_adjusted_average_scorer()")
        # Both requested by default: groups are per row, group_weights are passed whole.
        request = MetadataRequest(owner=scorer)
        request.score.add_request(param="groups", alias=True)
        request.score.add_request(param="group_weights", alias=True)
        scorer._metadata_request = request
        return scorer
    weights = _group_weights(group_weights)
    return _GroupScorer(
        adjusted_average_accuracy,
        "make_adjusted_average_scorer(group_weights=...)",
        {"group_weights": weights},
    )


def _named_scorers():
    return {
        "worst_group_accuracy": make_worst_group_scorer,
        "adjusted_average_accuracy": make_adjusted_average_scorer,
    }


#: Names of the scorers :func:`get_scorer` adds to scikit-learn's.
SCORERS = tuple(sorted(_named_scorers()))


def get_scorer(scoring):
    """A scorer by name: skicm's group scorers, else scikit-learn's.

    Parameters
    ----------
    scoring : str or callable
        ``"worst_group_accuracy"``, ``"adjusted_average_accuracy"`` (group weights then come
        as metadata, see :func:`make_adjusted_average_scorer`), any name of
        :func:`sklearn.metrics.get_scorer`, or a callable (returned as is).

    Returns
    -------
    scorer : callable
        A new scorer object (its metadata requests are its own).

    Examples
    --------
    >>> from skicm.metrics import get_scorer
    >>> get_scorer("worst_group_accuracy")
    make_worst_group_scorer()
    >>> get_scorer("accuracy")
    make_scorer(accuracy_score, response_method='predict')
    """
    if isinstance(scoring, str) and scoring in _named_scorers():
        return _named_scorers()[scoring]()
    return _sklearn_get_scorer(scoring)
