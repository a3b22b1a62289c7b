"""Model selection across environments: a training-domain splitter and scorers.

Domain generalisation selects hyper-parameters without looking at the test domain. DomainBed
(Gulrajani and Lopez-Paz, 2021) names three rules; each is scikit-learn code here:

- *training-domain validation*: hold out part of every training environment
  (:class:`TrainingDomainSplit`);
- *leave-one-domain-out validation*: hold out each training environment in turn. That is
  :class:`sklearn.model_selection.LeaveOneGroupOut` with ``groups`` set to the environments, so
  skicm does not re-implement it;
- *test-domain (oracle) validation*: looks at the test domain, so it is not a splitter; it exists
  only inside the evaluation report, labelled as such.

Scores that a spurious feature cannot fool come from the interventional data:
:func:`make_interventional_scorer` scores the validation rows and their counterparts, and
:func:`make_worst_environment_scorer` reports the worst validation environment.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import sklearn
from sklearn.metrics import get_scorer
from sklearn.model_selection import BaseShuffleSplit, ShuffleSplit, StratifiedShuffleSplit
from sklearn.utils import _safe_indexing, check_random_state, indexable
from sklearn.utils.metadata_routing import MetadataRequest

__all__ = [
    "TrainingDomainSplit",
    "make_interventional_scorer",
    "make_worst_environment_scorer",
]

_ROUTING_HINT = (
    "Switch metadata routing on with sklearn.set_config(enable_metadata_routing=True) (or "
    "`with sklearn.config_context(enable_metadata_routing=True):`) and pass {name}= to the "
    "fit of GridSearchCV / cross_validate."
)


class TrainingDomainSplit(BaseShuffleSplit):
    """Hold out part of every training environment: DomainBed's training-domain validation.

    Each split puts ``test_size`` of the samples of *every* environment (``groups``) in the
    validation fold and the rest in the training fold, so both folds contain all training
    environments in their original proportions. Within an environment the split is stratified
    by class (``y``) where possible: when every class of the environment has at least two
    samples and the validation part has room for one sample per class; otherwise that
    environment is split uniformly at random.

    Use it as ``cv=`` of :class:`~sklearn.model_selection.GridSearchCV` or
    :func:`~sklearn.model_selection.cross_validate` and pass the environment labels as
    ``groups``. It requests ``groups`` under metadata routing, like
    :class:`~sklearn.model_selection.GroupKFold`. For leave-one-domain-out validation use
    :class:`~sklearn.model_selection.LeaveOneGroupOut` with the same ``groups``.

    Parameters
    ----------
    test_size : float, default=0.2
        Fraction of each environment held out for validation, in (0, 1). The count per
        environment is rounded up, as in :class:`~sklearn.model_selection.ShuffleSplit`.
    n_splits : int, default=1
        Number of random splits.
    random_state : int, RandomState instance or None, default=None
        Controls the shuffling. Pass an int for the same splits on every call to
        :meth:`split`.

    See Also
    --------
    sklearn.model_selection.LeaveOneGroupOut : Leave-one-domain-out validation.
    sklearn.model_selection.StratifiedShuffleSplit : The split used within an environment.
    make_interventional_scorer : A selection score that sees spurious features.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.model_selection import TrainingDomainSplit
    >>> y = np.array([0, 1] * 10)
    >>> environments = np.repeat(["a", "b"], 10)
    >>> cv = TrainingDomainSplit(test_size=0.2, random_state=0)
    >>> train, test = next(cv.split(np.zeros((20, 1)), y, groups=environments))
    >>> sorted(zip(environments[test].tolist(), y[test].tolist()))  # (environment, class)
    [('a', 0), ('a', 1), ('b', 0), ('b', 1)]
    """

    # Like GroupKFold: the environments are requested by default under metadata routing.
    __metadata_request__split = {"groups": True}

    def __init__(self, test_size=0.2, n_splits=1, random_state=None):
        super().__init__(n_splits=n_splits, test_size=test_size, random_state=random_state)

    def _check_parameters(self):
        if not isinstance(self.n_splits, Integral) or isinstance(self.n_splits, bool):
            raise ValueError(f"n_splits must be an integer >= 1, got {self.n_splits!r}.")
        if self.n_splits < 1:
            raise ValueError(f"n_splits must be an integer >= 1, got {self.n_splits!r}.")
        test_size = self.test_size
        if not isinstance(test_size, Real) or isinstance(test_size, bool) or not 0 < test_size < 1:
            raise ValueError(
                f"test_size must be a fraction in (0, 1) of each environment, got {test_size!r}."
            )

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits.

        Parameters
        ----------
        X : object
            Ignored, present for API compatibility.
        y : object
            Ignored.
        groups : object
            Ignored.

        Returns
        -------
        n_splits : int
            ``n_splits``.
        """
        self._check_parameters()
        return self.n_splits

    def split(self, X, y=None, groups=None):
        """Generate training and validation indices.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (only its length is used).
        y : array-like of shape (n_samples,), default=None
            Class labels, used to stratify within each environment.
        groups : array-like of shape (n_samples,)
            Environment of each sample. Required.

        Yields
        ------
        train : ndarray
            Training indices of the split.
        test : ndarray
            Validation indices of the split.
        """
        self._check_parameters()
        if groups is None:
            raise ValueError(
                "TrainingDomainSplit needs groups, the environment (domain) of each sample: "
                "split(X, y, groups=environments), or GridSearchCV(...).fit(X, y, "
                "groups=environments)."
            )
        X, y, groups = indexable(X, y, groups)
        groups = np.asarray(groups)
        if groups.ndim != 1:
            raise ValueError(
                f"groups must be one-dimensional (one environment per sample), got shape "
                f"{groups.shape}."
            )
        labels = None if y is None else np.asarray(y)
        if labels is not None and labels.ndim != 1:
            labels = None  # multi-output targets: no stratification
        environments, environment_index = np.unique(groups, return_inverse=True)
        members = [np.flatnonzero(environment_index == e) for e in range(len(environments))]
        test_counts = []
        for environment, rows in zip(environments, members):
            n_test = math.ceil(self.test_size * len(rows))
            if len(rows) - n_test < 1:
                raise ValueError(
                    f"Environment {_as_python(environment)!r} has {len(rows)} sample(s): "
                    f"holding out test_size={self.test_size} of it leaves none for training. "
                    "Each environment needs at least "
                    f"{_minimum_size(self.test_size)} samples; lower test_size or merge small "
                    "environments."
                )
            test_counts.append(n_test)

        rng = check_random_state(self.random_state)
        for _ in range(self.n_splits):
            train, test = [], []
            for rows, n_test in zip(members, test_counts):
                seed = rng.randint(np.iinfo(np.int32).max)
                part_train, part_test = _split_environment(rows, labels, n_test, seed)
                train.append(part_train)
                test.append(part_test)
            yield np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _minimum_size(test_size):
    n = 2
    while n - math.ceil(test_size * n) < 1:
        n += 1
    return n


def _split_environment(rows, labels, n_test, seed):
    """Split one environment's row indices, stratified by label where possible."""
    n_train = len(rows) - n_test
    splitter = ShuffleSplit(n_splits=1, test_size=n_test, random_state=seed)
    target = None
    if labels is not None:
        target = labels[rows]
        _, counts = np.unique(target, return_counts=True)
        if counts.min() >= 2 and min(n_test, n_train) >= len(counts) and len(counts) > 1:
            splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_test, random_state=seed)
    train, test = next(splitter.split(np.zeros((len(rows), 1)), target))
    return rows[train], rows[test]


def _as_python(value):
    return value.item() if isinstance(value, np.generic) else value


def _check_scoring(scoring):
    if isinstance(scoring, str):
        return get_scorer(scoring)
    if callable(scoring):
        return scoring
    raise ValueError(
        "scoring must be a scorer name such as 'accuracy' or a scorer callable "
        f"scorer(estimator, X, y), got {scoring!r}."
    )


class _RoutedScorer:
    """A scorer that requests extra per-sample data through metadata routing."""

    _requested: tuple = ()

    def __init__(self, scoring):
        self.scoring = scoring
        self._scorer = _check_scoring(scoring)
        self._aliases = {name: True for name in self._requested}

    def set_score_request(self, **requests):
        """Change what the scorer requests through metadata routing.

        Parameters
        ----------
        **requests : dict
            ``param=True`` (request it under its own name), a string (an alias), ``False``
            or ``None``, as in scikit-learn's ``set_score_request``.

        Returns
        -------
        self : object
            The scorer.
        """
        self._aliases.update(requests)
        return self

    def get_metadata_routing(self):
        """What the scorer requests under metadata routing.

        Returns
        -------
        routing : sklearn.utils.metadata_routing.MetadataRequest
            The request of the scorer's ``score`` method.
        """
        request = MetadataRequest(owner=self)
        for name, alias in self._aliases.items():
            request.score.add_request(param=name, alias=alias)
        return request

    def _missing(self, name):
        if sklearn.get_config()["enable_metadata_routing"]:
            reason = (
                f"metadata routing is on but no {name} reached the scorer: pass {name}= to "
                "the fit of GridSearchCV / cross_validate (one row per sample of X)."
            )
        else:
            reason = (
                f"it receives {name} only through metadata routing, which is off. "
                + _ROUTING_HINT.format(name=name)
            )
        return ValueError(f"{self!r} needs {name}: {reason}")

    def _inner(self, estimator, X, y, kwargs):
        return float(self._scorer(estimator, X, y, **kwargs))


class _InterventionalScorer(_RoutedScorer):
    _requested = ("X_intervened",)

    def __init__(self, scoring, rule):
        super().__init__(scoring)
        self.rule = rule

    def __repr__(self):
        return f"make_interventional_scorer(scoring={self.scoring!r}, rule={self.rule!r})"

    def __call__(self, estimator, X, y_true, X_intervened=None, **kwargs):
        if X_intervened is None:
            raise self._missing("X_intervened")
        if len(X_intervened) != len(X):
            raise ValueError(
                f"X_intervened has {len(X_intervened)} rows but the validation fold has "
                f"{len(X)}: row i of X_intervened must be the counterpart of row i of X."
            )
        intervened = self._inner(estimator, X_intervened, y_true, kwargs)
        if self.rule == "intervened":
            return intervened
        original = self._inner(estimator, X, y_true, kwargs)
        if self.rule == "mean":
            return (original + intervened) / 2
        return min(original, intervened)


class _WorstEnvironmentScorer(_RoutedScorer):
    _requested = ("groups",)

    def __repr__(self):
        return f"make_worst_environment_scorer(scoring={self.scoring!r})"

    def __call__(self, estimator, X, y_true, groups=None, **kwargs):
        if groups is None:
            raise self._missing("groups")
        groups = np.asarray(groups)
        if groups.shape != (len(X),):
            raise ValueError(
                f"groups has shape {groups.shape} but the validation fold has {len(X)} rows: "
                "groups needs one environment per row."
            )
        y_true = np.asarray(y_true)
        scores = []
        for environment in np.unique(groups):
            rows = np.flatnonzero(groups == environment)
            part = {
                name: _safe_indexing(value, rows) if _is_per_sample(value, len(X)) else value
                for name, value in kwargs.items()
            }
            scores.append(self._inner(estimator, _safe_indexing(X, rows), y_true[rows], part))
        return min(scores)


def _is_per_sample(value, n_samples):
    return hasattr(value, "__len__") and not isinstance(value, str) and len(value) == n_samples


def make_interventional_scorer(scoring="accuracy", *, rule="min"):
    """A selection score that sees spurious features: originals and counterparts, combined.

    Validation accuracy on the training environments cannot see a spurious feature: where
    colour predicts the label in every training environment, a model that reads the colour
    scores *better* there than one that reads the shape, and model selection prefers it. The
    interventional counterparts can see it: a counterpart shares its original's label and
    differs only in the variant factor (the colour swapped, the digit rotated), so a model
    that relies on that factor changes its predictions on the counterparts and loses score on
    them, while a model of the invariant factor scores the same on both.

    This scorer scores the estimator on the validation rows ``X`` and on their counterparts
    ``X_intervened`` (the validation fold of the ``X_intervened`` passed to the search) and
    combines the two scores by ``rule``. The default, the worse of the two, is the worst-case
    score over the two interventional "environments": a model can only score high by being
    right on both, that is by ignoring the variant factor. On DomainBed's ColoredMNIST, plain
    accuracy selects the smallest ``alpha`` (colour kept; about ERM's 10% on the "-90%"
    environment) and this score selects an ``alpha`` that removes the colour (see
    docs/results_mnist.md).

    ``X_intervened`` reaches the scorer through metadata routing only, which must be on
    (``sklearn.set_config(enable_metadata_routing=True)``); the scorer already requests it.
    With routing off the scorer raises an error saying so, which
    :class:`~sklearn.model_selection.GridSearchCV` reports as a "Scoring failed" warning and a
    NaN score, unless ``error_score="raise"``.

    Parameters
    ----------
    scoring : str or callable, default="accuracy"
        The score computed on each of the two sets: a scikit-learn scorer name or a scorer
        callable ``scorer(estimator, X, y)`` (greater is better).
    rule : {"min", "mean", "intervened"}, default="min"
        How the two scores combine: the worse of the two, their mean, or the counterparts'
        score alone.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, X_intervened=...)``, for ``scoring=`` of a search, with
        ``set_score_request(X_intervened=True)`` already set.

    See Also
    --------
    TrainingDomainSplit : Training-domain validation splits.
    make_worst_environment_scorer : The worst environment's score.

    Examples
    --------
    >>> import numpy as np
    >>> import sklearn
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import GridSearchCV
    >>> from sklearn.pipeline import make_pipeline
    >>> from skicm import InvariantProjector
    >>> from skicm.model_selection import TrainingDomainSplit, make_interventional_scorer
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400)
    >>> spurious = np.where(rng.random(400) < 0.9, y, 1 - y)  # agrees with y 90% of the time
    >>> shape = y + rng.normal(0, 1.0, 400)  # the invariant, noisier feature
    >>> X = np.column_stack([shape, 3.0 * spurious])
    >>> X_intervened = np.column_stack([shape, 3.0 * (1 - spurious)])  # spurious flipped
    >>> environments = rng.integers(0, 2, 400)
    >>> with sklearn.config_context(enable_metadata_routing=True):
    ...     model = make_pipeline(
    ...         InvariantProjector(n_components=1).set_fit_request(X_intervened=True),
    ...         LogisticRegression(),
    ...     )
    ...     search = GridSearchCV(
    ...         model,
    ...         {"invariantprojector__alpha": [0.0, 10.0]},
    ...         cv=TrainingDomainSplit(random_state=0),
    ...         scoring=make_interventional_scorer(),
    ...     ).fit(X, y, groups=environments, X_intervened=X_intervened)
    >>> search.best_params_
    {'invariantprojector__alpha': 10.0}
    """
    if rule not in ("min", "mean", "intervened"):
        raise ValueError(f"rule must be one of 'min', 'mean', 'intervened'; got {rule!r}.")
    return _InterventionalScorer(scoring, rule)


def make_worst_environment_scorer(scoring="accuracy"):
    """The lowest per-environment score in the validation fold.

    The selection criterion of Group DRO and of the Waterbirds benchmarks (worst-group
    accuracy): the validation rows are grouped by environment (``groups``), scored per
    environment, and the lowest score is returned, so a model is only as good as its worst
    environment. ``groups`` reaches the scorer through metadata routing, which must be on
    (``sklearn.set_config(enable_metadata_routing=True)``); the scorer already requests it.

    Parameters
    ----------
    scoring : str or callable, default="accuracy"
        The per-environment score: a scikit-learn scorer name or a scorer callable
        ``scorer(estimator, X, y)`` (greater is better).

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, groups=...)``, for ``scoring=`` of a search, with
        ``set_score_request(groups=True)`` already set.

    See Also
    --------
    make_interventional_scorer : Scores the validation rows and their counterparts.
    TrainingDomainSplit : Training-domain validation splits.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.dummy import DummyClassifier
    >>> from skicm.model_selection import make_worst_environment_scorer
    >>> X = np.zeros((6, 1))
    >>> y = np.array([1, 1, 1, 1, 0, 0])
    >>> environments = np.array(["a", "a", "a", "a", "b", "b"])
    >>> model = DummyClassifier(strategy="most_frequent").fit(X, y)
    >>> scorer = make_worst_environment_scorer()
    >>> scorer(model, X, y, groups=environments)  # environment "b" is always wrong
    0.0
    """
    return _WorstEnvironmentScorer(scoring)
