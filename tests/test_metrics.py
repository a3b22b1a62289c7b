"""Group metrics and their scorers: values by hand, WILDS' adjusted average, searches."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    PredefinedSplit,
    StratifiedKFold,
    cross_validate,
)
from sklearn.pipeline import make_pipeline

from skicm.metrics import (
    SCORERS,
    adjusted_average_accuracy,
    get_scorer,
    group_accuracies,
    make_adjusted_average_scorer,
    make_worst_group_scorer,
    worst_group_accuracy,
)

Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 1, 0])
Y_PRED = np.array([0, 1, 0, 1, 1, 0, 1, 0])
GROUPS = np.array(["a", "a", "a", "b", "b", "c", "c", "c"])


def test_group_accuracies_by_hand():
    # a: 2 of 3 right; b: 2 of 2; c: rows (1, 0), (1, 1), (0, 0) -> 2 of 3.
    assert group_accuracies(Y_TRUE, Y_PRED, groups=GROUPS) == {
        "a": pytest.approx(2 / 3),
        "b": 1.0,
        "c": pytest.approx(2 / 3),
    }
    assert worst_group_accuracy(Y_TRUE, Y_PRED, groups=GROUPS) == pytest.approx(2 / 3)
    wrong_in_b = Y_PRED.copy()
    wrong_in_b[3] = 0
    assert worst_group_accuracy(Y_TRUE, wrong_in_b, groups=GROUPS) == 0.5


def test_adjusted_average_is_wilds_training_share_weighting():
    # WILDS' Waterbirds: adj_acc_avg = sum_g acc_g(test) * n_g(train) / n(train).
    train_groups = np.array(["a"] * 6 + ["b"] * 3 + ["c"] * 1)
    expected = (2 / 3) * 0.6 + 1.0 * 0.3 + (2 / 3) * 0.1
    got = adjusted_average_accuracy(Y_TRUE, Y_PRED, groups=GROUPS, group_weights=train_groups)
    assert got == pytest.approx(expected, abs=1e-15)
    as_mapping = {"a": 60, "b": 30, "c": 10}  # normalised here
    assert adjusted_average_accuracy(
        Y_TRUE, Y_PRED, groups=GROUPS, group_weights=as_mapping
    ) == pytest.approx(expected, abs=1e-15)
    # Not the plain mean of group accuracies nor the accuracy of the rows.
    assert expected != pytest.approx(np.mean([2 / 3, 1.0, 2 / 3]))
    assert expected != pytest.approx(np.mean(Y_TRUE == Y_PRED))
    # A group with no training row has zero weight.
    only_ab = adjusted_average_accuracy(
        Y_TRUE, Y_PRED, groups=GROUPS, group_weights={"a": 1, "b": 1}
    )
    assert only_ab == pytest.approx((2 / 3 + 1.0) / 2)


def test_metric_errors_name_the_problem():
    with pytest.raises(ValueError, match="groups is required"):
        worst_group_accuracy(Y_TRUE, Y_PRED, groups=None)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        worst_group_accuracy(Y_TRUE, Y_PRED, groups=GROUPS[:-1])
    with pytest.raises(ValueError, match=r"groups \['d'\] have training weight"):
        adjusted_average_accuracy(Y_TRUE, Y_PRED, groups=GROUPS, group_weights={"a": 1, "d": 1})
    with pytest.raises(ValueError, match="group_weights is required"):
        adjusted_average_accuracy(Y_TRUE, Y_PRED, groups=GROUPS, group_weights=None)
    with pytest.raises(ValueError, match="non-negative"):
        adjusted_average_accuracy(Y_TRUE, Y_PRED, groups=GROUPS, group_weights={"a": -1})


def _spurious_problem(seed=0, n=600):
    """A shape feature (noisy) and a place feature agreeing with y in 95% of the rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    place = np.where(rng.random(n) < 0.95, y, 1 - y)
    X = np.column_stack([y + rng.normal(0, 0.7, n), place + rng.normal(0, 0.05, n)])
    return X, y, 2 * y + place


def test_worst_group_scorer_selects_unlike_accuracy_in_a_search():
    X, y, groups = _spurious_problem()
    # The candidates: a probe that reads the place column, and one that drops it. Accuracy
    # prefers the place (it agrees with y 95% of the time); worst-group accuracy does not
    # (the 5% minority groups are misread).
    model = make_pipeline(
        ColumnTransformer([("shape", "passthrough", [0]), ("place", "passthrough", [1])]),
        LogisticRegression(),
    )
    grid = {"columntransformer__place": ["passthrough", "drop"]}
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(
            model,
            grid,
            scoring={"wg": make_worst_group_scorer(), "acc": "accuracy"},
            refit="wg",
            error_score="raise",
        ).fit(X, y, groups=groups)
    results = search.cv_results_
    assert results["params"][np.argmax(results["mean_test_acc"])] == {
        "columntransformer__place": "passthrough"
    }
    assert search.best_params_ == {"columntransformer__place": "drop"}
    # The wg column is each fold's worst-group accuracy, recomputed here for fold 0.
    train, test = next(StratifiedKFold(5).split(X, y))
    fitted = clone(model).set_params(**results["params"][0]).fit(X[train], y[train])
    fold0 = worst_group_accuracy(y[test], fitted.predict(X[test]), groups=groups[test])
    assert results["split0_test_wg"][0] == pytest.approx(fold0, abs=1e-12)


def test_scorers_with_routing_off_say_how_to_turn_it_on():
    X, y, groups = _spurious_problem()
    search = GridSearchCV(
        LogisticRegression(), {"C": [1.0]}, scoring=make_worst_group_scorer(), error_score="raise"
    )
    with pytest.raises(ValueError, match=r"sklearn.set_config\(enable_metadata_routing=True\)"):
        search.fit(X, y, groups=groups)  # groups reach the splitter only
    with pytest.warns(UserWarning, match="enable_metadata_routing=True"):
        nan_search = GridSearchCV(
            LogisticRegression(), {"C": [1.0]}, scoring=make_worst_group_scorer()
        ).fit(X, y)
    assert np.isnan(nan_search.cv_results_["mean_test_score"][0])
    # Called directly, the scorer works in either mode.
    model = LogisticRegression().fit(X, y)
    direct = make_worst_group_scorer()(model, X, y, groups=groups)
    assert direct == worst_group_accuracy(y, model.predict(X), groups=groups)


def test_adjusted_average_scorer_fixed_or_routed_weights():
    X, y, groups = _spurious_problem()
    train, val = np.arange(400), np.arange(400, 600)
    weights = {g: float(np.mean(groups[train] == g)) for g in np.unique(groups)}
    model = LogisticRegression().fit(X[train], y[train])
    expected = adjusted_average_accuracy(
        y[val], model.predict(X[val]), groups=groups[val], group_weights=groups[train]
    )
    fixed = make_adjusted_average_scorer(groups[train])
    assert fixed(model, X[val], y[val], groups=groups[val]) == pytest.approx(expected, abs=1e-12)
    split = PredefinedSplit(np.r_[np.full(400, -1), np.zeros(200)])
    with sklearn.config_context(enable_metadata_routing=True):
        routed = cross_validate(
            LogisticRegression(),
            X,
            y,
            cv=split,
            scoring=get_scorer("adjusted_average_accuracy"),
            params={"groups": groups, "group_weights": weights},  # weights passed whole
            error_score="raise",
        )
    assert routed["test_score"][0] == pytest.approx(expected, abs=1e-12)


def test_get_scorer_names_and_fallback():
    assert SCORERS == ("adjusted_average_accuracy", "worst_group_accuracy")
    X, y = np.zeros((4, 1)), np.array([0, 0, 1, 1])
    model = DummyClassifier(strategy="constant", constant=0).fit(X, y)
    assert get_scorer("accuracy")(model, X, y) == 0.5
    assert get_scorer("worst_group_accuracy")(model, X, y, groups=[0, 0, 1, 1]) == 0.0
    # Each call gives a new scorer: a request set on one does not leak into another.
    assert get_scorer("worst_group_accuracy") is not get_scorer("worst_group_accuracy")
    with pytest.raises(ValueError, match="groups has 3 entries"):
        get_scorer("worst_group_accuracy")(model, X, y, groups=[0, 0, 1])
