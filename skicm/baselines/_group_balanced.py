"""DFR: deep feature reweighting, a last layer retrained on group-balanced data."""

from __future__ import annotations

import copy
from numbers import Integral
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from skicm.baselines._row_labels import row_labels

__all__ = ["GroupBalancedProbe"]


class GroupBalancedProbe(ClassifierMixin, BaseEstimator):
    """DFR: a linear probe retrained on data in which every group counts the same.

    Deep Feature Reweighting (Kirichenko et al., ICLR 2023) keeps a network's features and
    retrains its last layer, a logistic regression, on held-out data balanced across groups
    (for Waterbirds, the four (label, background) pairs), which removes most of the reliance
    on the spurious feature. DFR balances by **subsampling**: each of ``n_retrains`` fits
    sees a random subset with as many rows of every group as the smallest group has, and the
    final coefficients and intercepts are the average over the fits (``balance="subsample"``,
    the default). ``balance="weights"`` instead fits once on all rows with sample weights
    ``n / (n_groups * n_g)`` (each group's weights sum to ``n / n_groups``).

    **Where it differs from the released code** (``PolinaKirichenko/deep_feature_reweighting``,
    ``dfr_evaluate_spurious.py``): the released code standardises the features, uses an L1
    penalty (liblinear) and tunes ``C`` on half of the validation set inside the script; here
    the probe is the ``estimator`` parameter (default ``LogisticRegression()``, L2), scaling
    is a pipeline step, and ``C`` is searched like any other parameter
    (``groupbalancedprobe__estimator__C``). To match the released probe use
    ``estimator=LogisticRegression(l1_ratio=1.0, solver="liblinear")`` behind a
    ``StandardScaler``.

    Parameters
    ----------
    estimator : classifier with ``coef_`` and ``intercept_``, default=None
        The linear probe, cloned for every fit; None means ``LogisticRegression()``.
    balance : {"subsample", "weights"}, default="subsample"
        DFR's group-balanced subsamples, or one fit with group-balancing sample weights.
    groups_from : {"groups", "y"}, default="groups"
        The groups to balance: the ``groups`` passed to :meth:`fit` (an error if missing),
        or the labels ``y`` (class balancing, for data without group labels).
    n_retrains : int, default=10
        Number of subsampled fits averaged with ``balance="subsample"`` (DFR's 10).
    random_state : int, RandomState instance or None, default=None
        Draws the subsamples.

    Attributes
    ----------
    estimator_ : classifier
        The fitted probe (with the averaged ``coef_`` and ``intercept_`` when subsampling).
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
        The probe's (averaged) coefficients.
    intercept_ : ndarray of shape (1,) or (n_classes,)
        The probe's (averaged) intercepts.
    group_counts_ : dict
        Training rows per group.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` has string column names.

    See Also
    --------
    skicm.metrics.worst_group_accuracy : the metric DFR is selected by.

    References
    ----------
    .. [1] P. Kirichenko, P. Izmailov and A. G. Wilson, "Last Layer Re-Training is
       Sufficient for Robustness to Spurious Correlations", ICLR 2023, arXiv:2204.02937.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.baselines import GroupBalancedProbe
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400)
    >>> place = np.where(rng.random(400) < 0.95, y, 1 - y)  # agrees with y 95% of the time
    >>> X = np.column_stack([y + rng.normal(0, 0.8, 400), 3.0 * place])
    >>> groups = 2 * y + place
    >>> probe = GroupBalancedProbe(random_state=0).fit(X, y, groups=groups)
    >>> probe.predict([[1.0, 0.0], [0.0, 3.0]]).tolist()  # follows the shape, not the place
    [1, 0]
    """

    __metadata_request__fit = {"groups": False}

    _parameter_constraints: ClassVar[dict] = {
        "estimator": [HasMethods(["fit", "predict"]), None],
        "balance": [StrOptions({"subsample", "weights"})],
        "groups_from": [StrOptions({"groups", "y"})],
        "n_retrains": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        estimator=None,
        *,
        balance="subsample",
        groups_from="groups",
        n_retrains=10,
        random_state=None,
    ):
        self.estimator = estimator
        self.balance = balance
        self.groups_from = groups_from
        self.n_retrains = n_retrains
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, *, groups=None):
        """Fit the probe on group-balanced data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features (embeddings).
        y : array-like of shape (n_samples,)
            Labels.
        groups : array-like of shape (n_samples,), default=None
            Group of each row, e.g. ``2 * y + place``. Under metadata routing it is not
            requested by default (splitters consume ``groups``); opt in with
            ``set_fit_request(groups=True)``.

        Returns
        -------
        self : GroupBalancedProbe
            The fitted classifier.
        """
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        groups = row_labels(
            y if self.groups_from == "y" else groups,
            X.shape[0],
            "groups",
            missing=(
                "GroupBalancedProbe needs groups in fit (the group of each row, e.g. "
                "(label, place)); with metadata routing on, request them with "
                "set_fit_request(groups=True). For class balancing without groups use "
                'groups_from="y".'
            ),
        )
        values, index, counts = np.unique(groups, return_inverse=True, return_counts=True)
        index = index.ravel()
        base = LogisticRegression() if self.estimator is None else self.estimator
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(
                f"GroupBalancedProbe needs at least 2 classes; y has 1 class: {classes.tolist()!r}."
            )

        if self.balance == "weights":
            weights = len(y) / (len(values) * counts[index])
            estimator = clone(base).fit(X, y, sample_weight=weights)
        else:
            rng = check_random_state(self.random_state)
            smallest = int(counts.min())
            members = [np.flatnonzero(index == g) for g in range(len(values))]
            fits = []
            for _ in range(self.n_retrains):
                rows = np.sort(
                    np.concatenate([rng.choice(m, smallest, replace=False) for m in members])
                )
                if len(np.unique(y[rows])) != len(classes):
                    raise ValueError(
                        f"A group-balanced subsample ({smallest} rows per group, the size of "
                        "the smallest group) misses a class: give groups that split every "
                        "class (e.g. (label, place)), or balance='weights'."
                    )
                fits.append(clone(base).fit(X[rows], y[rows]))
            for fitted in fits:
                if not (hasattr(fitted, "coef_") and hasattr(fitted, "intercept_")):
                    raise ValueError(
                        "balance='subsample' averages coef_ and intercept_ over the fits; "
                        f"{type(fitted).__name__} has none. Use a linear classifier."
                    )
            estimator = copy.deepcopy(fits[0])
            estimator.coef_ = np.mean([f.coef_ for f in fits], axis=0)
            estimator.intercept_ = np.mean([f.intercept_ for f in fits], axis=0)

        self.estimator_ = estimator
        self.classes_ = estimator.classes_
        self.group_counts_ = {
            (v.item() if isinstance(v, np.generic) else v): int(c) for v, c in zip(values, counts)
        }
        return self

    @property
    def coef_(self):
        """The probe's (averaged) coefficients."""
        check_is_fitted(self)
        return self.estimator_.coef_

    @property
    def intercept_(self):
        """The probe's (averaged) intercepts."""
        check_is_fitted(self)
        return self.estimator_.intercept_

    def _validated(self, X):
        check_is_fitted(self)
        return validate_data(self, X, dtype=[np.float64, np.float32], reset=False)

    def decision_function(self, X):
        """Decision scores of the probe.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            The probe's ``decision_function``.
        """
        X = self._validated(X)
        return self.estimator_.decision_function(X)

    def predict(self, X):
        """Predicted labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        X = self._validated(X)
        return self.estimator_.predict(X)

    def predict_proba(self, X):
        """Class probabilities of the probe.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities, columns in the order of ``classes_``.
        """
        X = self._validated(X)
        return self.estimator_.predict_proba(X)


def _common_check_instance():
    """The estimator checks call fit(X, y) without groups: balance the classes."""
    return GroupBalancedProbe(groups_from="y", n_retrains=2, random_state=0)


#: Estimator checks that cannot apply to a group-balanced probe.
_EXPECTED_FAILED_CHECKS: dict[str, str] = {}
