import subprocess
import sys

import numpy as np
import pytest
import sklearn
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, GroupKFold, LeaveOneGroupOut, cross_validate
from sklearn.pipeline import make_pipeline

from skicm import InvariantProjector
from skicm.datasets import load_mnist, make_colored_mnist
from skicm.model_selection import (
    TrainingDomainSplit,
    make_interventional_scorer,
    make_worst_environment_scorer,
)


@pytest.fixture
def routing_on():
    with sklearn.config_context(enable_metadata_routing=True):
        yield


def spurious_problem(n=400, seed=0):
    """A noisy invariant feature and a cleaner spurious one (agrees with y 90%), flipped in
    the counterparts."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    spurious = np.where(rng.random(n) < 0.9, y, 1 - y)
    shape = y + rng.normal(0, 1.0, n)
    X = np.column_stack([shape, 3.0 * spurious])
    X_intervened = np.column_stack([shape, 3.0 * (1 - spurious)])
    environments = rng.integers(0, 2, n)
    return X, X_intervened, y, environments


# ---------------------------------------------------------------- TrainingDomainSplit


def test_holds_out_test_size_of_every_environment_stratified():
    rng = np.random.default_rng(0)
    environments = np.repeat(["a", "b", "c"], [50, 100, 30])
    # class proportions differ between environments: a 50/50, b 80/20, c 1/3 - 2/3
    y = np.concatenate(
        [np.repeat([0, 1], 25), np.repeat([0, 1], [80, 20]), np.repeat([0, 1], [10, 20])]
    )
    order = rng.permutation(len(y))
    y, environments = y[order], environments[order]
    cv = TrainingDomainSplit(test_size=0.2, n_splits=3, random_state=0)
    assert cv.get_n_splits() == 3
    splits = list(cv.split(np.zeros((len(y), 2)), y, groups=environments))
    assert len(splits) == 3
    expected = {("a", 0): 5, ("a", 1): 5, ("b", 0): 16, ("b", 1): 4, ("c", 0): 2, ("c", 1): 4}
    for train, test in splits:
        assert np.intersect1d(train, test).size == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(len(y)))
        counts = {}
        for e, label in zip(environments[test], y[test]):
            counts[(e, label)] = counts.get((e, label), 0) + 1
        assert counts == expected
    # three different validation folds
    assert len({tuple(test) for _, test in splits}) == 3


def test_same_splits_for_the_same_int_seed_and_others_for_another():
    y = np.tile([0, 1], 50)
    groups = np.repeat([0, 1], 50)
    X = np.zeros((100, 1))
    first = [t.tolist() for _, t in TrainingDomainSplit(random_state=3).split(X, y, groups)]
    again = [t.tolist() for _, t in TrainingDomainSplit(random_state=3).split(X, y, groups)]
    other = [t.tolist() for _, t in TrainingDomainSplit(random_state=4).split(X, y, groups)]
    assert first == again
    assert first != other


def test_unstratifiable_environment_is_split_at_random():
    # Environment 1 has one sample of class 1: no stratification there, still 20% held out.
    y = np.array([0, 1] * 5 + [0] * 9 + [1])
    groups = np.repeat([0, 1], 10)
    _, test = next(TrainingDomainSplit(random_state=0).split(np.zeros((20, 1)), y, groups))
    assert np.bincount(groups[test]).tolist() == [2, 2]
    assert sorted(y[test[groups[test] == 0]].tolist()) == [0, 1]


def test_without_y_splits_each_environment_by_count():
    groups = np.repeat(["x", "y"], [7, 13])
    _, test = next(TrainingDomainSplit(test_size=0.3, random_state=0).split(groups, None, groups))
    assert {e: int((groups[test] == e).sum()) for e in ("x", "y")} == {"x": 3, "y": 4}


@pytest.mark.parametrize(
    "params, groups, match",
    [
        ({}, None, "needs groups"),
        ({}, np.array([0, 0, 0, 1]), "Environment 1 has 1 sample"),
        ({"test_size": 0.0}, np.zeros(4), "test_size"),
        ({"test_size": 1.0}, np.zeros(4), "test_size"),
        ({"test_size": 2}, np.zeros(4), "test_size"),
        ({"n_splits": 0}, np.zeros(4), "n_splits"),
        ({"n_splits": 1.5}, np.zeros(4), "n_splits"),
        ({}, np.zeros((4, 1)), "one-dimensional"),
    ],
)
def test_split_errors_name_the_parameter(params, groups, match):
    with pytest.raises(ValueError, match=match):
        next(TrainingDomainSplit(**params).split(np.zeros((4, 1)), None, groups))


def test_repr_and_routing_request():
    cv = TrainingDomainSplit(test_size=0.25, random_state=1)
    assert repr(cv) == "TrainingDomainSplit(n_splits=1, random_state=1, test_size=0.25)"
    assert cv.get_metadata_routing().split.requests == {"groups": True}


@pytest.mark.parametrize("routing", [False, True])
def test_cross_validate_uses_the_splits_in_both_routing_modes(routing):
    X, _, y, environments = spurious_problem()
    seen = []

    class Recorder(LogisticRegression):
        def fit(self, X, y):
            seen.append(len(X))
            return super().fit(X, y)

    cv = TrainingDomainSplit(n_splits=2, random_state=0)
    with sklearn.config_context(enable_metadata_routing=routing):
        if routing:
            result = cross_validate(Recorder(), X, y, cv=cv, params={"groups": environments})
        else:
            result = cross_validate(Recorder(), X, y, cv=cv, groups=environments)
    n_test = sum(int(np.ceil(0.2 * c)) for c in np.bincount(environments))
    assert seen == [len(y) - n_test] * 2
    expected = [
        accuracy_score(y[test], LogisticRegression().fit(X[train], y[train]).predict(X[test]))
        for train, test in cv.split(X, y, environments)
    ]
    np.testing.assert_allclose(result["test_score"], expected)


# ---------------------------------------------------------------- interventional scorer


def test_interventional_scorer_value_is_the_worse_of_the_two():
    X, X_intervened, y, _ = spurious_problem()
    model = LogisticRegression().fit(X, y)  # reads the spurious feature
    original = accuracy_score(y, model.predict(X))
    intervened = accuracy_score(y, model.predict(X_intervened))
    assert original > 0.85 and intervened < 0.3
    scorer = make_interventional_scorer()
    assert scorer(model, X, y, X_intervened=X_intervened) == pytest.approx(intervened)
    mean = make_interventional_scorer(rule="mean")(model, X, y, X_intervened=X_intervened)
    assert mean == pytest.approx((original + intervened) / 2)
    only = make_interventional_scorer(rule="intervened")
    assert only(model, X, y, X_intervened=X_intervened) == pytest.approx(intervened)
    balanced = make_interventional_scorer("balanced_accuracy")
    assert balanced(model, X, y, X_intervened=X_intervened) == pytest.approx(
        min(
            sklearn.metrics.balanced_accuracy_score(y, model.predict(X)),
            sklearn.metrics.balanced_accuracy_score(y, model.predict(X_intervened)),
        )
    )


def test_interventional_selection_removes_the_spurious_feature_routing_on(routing_on):
    X, X_intervened, y, environments = spurious_problem()
    model = make_pipeline(
        InvariantProjector(n_components=1).set_fit_request(X_intervened=True),
        LogisticRegression(),
    )
    grid = {"invariantprojector__alpha": [0.0, 10.0]}
    cv = TrainingDomainSplit(random_state=0)
    plain = GridSearchCV(model, grid, cv=cv, scoring="accuracy")
    plain.fit(X, y, groups=environments, X_intervened=X_intervened)
    interventional = GridSearchCV(model, grid, cv=cv, scoring=make_interventional_scorer())
    interventional.fit(X, y, groups=environments, X_intervened=X_intervened)
    # Plain accuracy prefers the spurious feature; the counterparts expose it.
    assert plain.best_params_ == {"invariantprojector__alpha": 0.0}
    assert interventional.best_params_ == {"invariantprojector__alpha": 10.0}
    # The grid's scores are the scorer's values on the validation fold.
    (train, test) = next(cv.split(X, y, environments))
    for alpha, score in zip([0.0, 10.0], interventional.cv_results_["mean_test_score"]):
        fitted = sklearn.base.clone(model).set_params(invariantprojector__alpha=alpha)
        fitted.fit(X[train], y[train], X_intervened=X_intervened[train])
        expected = min(
            accuracy_score(y[test], fitted.predict(X[test])),
            accuracy_score(y[test], fitted.predict(X_intervened[test])),
        )
        assert score == pytest.approx(expected)


def test_interventional_selection_on_colored_mnist_routing_on(routing_on):
    images, labels = load_mnist()
    data = make_colored_mnist(images[::3], labels[::3], random_state=0)
    train = data.environments != "-90%"
    model = make_pipeline(
        InvariantProjector().set_fit_request(X_intervened=True),
        LogisticRegression(C=0.1, max_iter=300),
    )
    search = GridSearchCV(
        model,
        {"invariantprojector__alpha": [0.03, 3.0]},
        cv=TrainingDomainSplit(random_state=0),
        scoring=make_interventional_scorer(),
    )
    search.fit(
        data.data[train],
        data.target[train],
        groups=data.environments[train],
        X_intervened=data.data_intervened[train],
    )
    assert search.best_params_ == {"invariantprojector__alpha": 3.0}
    predicted = search.best_estimator_.predict(data.data[~train])
    test_accuracy = accuracy_score(data.target[~train], predicted)
    assert test_accuracy > 0.55  # ERM-level colour use would give about 0.1


def test_interventional_scorer_needs_routing():
    X, _, y, _ = spurious_problem()
    model = LogisticRegression().fit(X, y)
    scorer = make_interventional_scorer()
    with pytest.raises(ValueError, match=r"sklearn\.set_config\(enable_metadata_routing=True\)"):
        scorer(model, X, y)
    with pytest.raises(ValueError, match="X_intervened"):
        GridSearchCV(LogisticRegression(), {"C": [1.0]}, scoring=scorer, error_score="raise").fit(
            X, y
        )


def test_interventional_scorer_with_routing_but_no_counterparts(routing_on):
    X, _, y, environments = spurious_problem()
    search = GridSearchCV(
        LogisticRegression(),
        {"C": [1.0]},
        cv=TrainingDomainSplit(),
        scoring=make_interventional_scorer(),
        error_score="raise",
    )
    with pytest.raises(ValueError, match="no X_intervened reached the scorer"):
        search.fit(X, y, groups=environments)


def test_interventional_scorer_requests_and_checks(routing_on):
    scorer = make_interventional_scorer()
    assert scorer.get_metadata_routing().score.requests == {"X_intervened": True}
    scorer.set_score_request(X_intervened="counterparts")
    assert scorer.get_metadata_routing().score.requests == {"X_intervened": "counterparts"}
    X, X_intervened, y, _ = spurious_problem()
    model = LogisticRegression().fit(X, y)
    with pytest.raises(ValueError, match="X_intervened has 10 rows"):
        scorer(model, X, y, X_intervened=X_intervened[:10])
    assert repr(scorer) == "make_interventional_scorer(scoring='accuracy', rule='min')"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rule": "max"}, "rule"),
        ({"scoring": "no_such_metric"}, "no_such_metric"),
        ({"scoring": 3}, "scoring"),
    ],
)
def test_scorer_parameter_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_interventional_scorer(**kwargs)


# ---------------------------------------------------------------- worst-environment scorer


def test_worst_environment_scorer_is_the_lowest_environment_score():
    X, _, y, environments = spurious_problem()
    model = LogisticRegression().fit(X[:, :1], y)
    per_environment = [
        accuracy_score(y[environments == e], model.predict(X[environments == e, :1]))
        for e in (0, 1)
    ]
    scorer = make_worst_environment_scorer()
    assert scorer(model, X[:, :1], y, groups=environments) == pytest.approx(min(per_environment))
    with pytest.raises(ValueError, match=r"enable_metadata_routing=True"):
        scorer(model, X[:, :1], y)
    with pytest.raises(ValueError, match="groups has shape"):
        scorer(model, X[:, :1], y, groups=environments[:5])
    assert repr(scorer) == "make_worst_environment_scorer(scoring='accuracy')"


def test_worst_environment_scorer_in_grid_search_routing_on(routing_on):
    # Environment "b" has the opposite majority class: the majority-class dummy fails there.
    X = np.zeros((40, 1))
    y = np.array([1] * 16 + [0] * 4 + [0] * 16 + [1] * 4)
    groups = np.repeat(["a", "b"], 20)
    search = GridSearchCV(
        DummyClassifier(),
        {"strategy": ["most_frequent", "stratified"]},
        cv=TrainingDomainSplit(random_state=0),
        scoring=make_worst_environment_scorer(),
    ).fit(X[:30], y[:30], groups=groups[:30])
    # environment b in [20, 30) is all 0 and a is 80% 1: the majority (1) scores 0 on b.
    assert search.cv_results_["mean_test_score"][0] == 0.0


def test_leave_one_domain_out_is_sklearns_leave_one_group_out(routing_on):
    X, X_intervened, y, environments = spurious_problem()
    model = make_pipeline(
        InvariantProjector(n_components=1).set_fit_request(X_intervened=True),
        LogisticRegression(),
    )
    search = GridSearchCV(
        model,
        {"invariantprojector__alpha": [0.0, 10.0]},
        cv=LeaveOneGroupOut(),
        scoring=make_interventional_scorer(),
    ).fit(X, y, groups=environments, X_intervened=X_intervened)
    assert search.n_splits_ == 2
    assert search.best_params_ == {"invariantprojector__alpha": 10.0}


def test_group_kfold_search_with_projector_routing_on(routing_on):
    X, X_intervened, y, environments = spurious_problem()
    model = make_pipeline(
        InvariantProjector(n_components=1).set_fit_request(X_intervened=True),
        LogisticRegression(),
    )
    search = GridSearchCV(model, {"invariantprojector__alpha": [0.0, 10.0]}, cv=GroupKFold(2))
    search.fit(X, y, groups=environments, X_intervened=X_intervened)
    assert search.best_estimator_[0].n_differences_seen_ == len(X)


def test_importing_model_selection_imports_nothing_heavy():
    code = (
        "import sys, skicm.model_selection; "
        "print(sorted(m for m in ('torch', 'open_clip', 'ray', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
