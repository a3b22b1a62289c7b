"""InvariantProjector: identifiability on the SCM, streaming, routing, conventions, bad input."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import scipy.linalg
import sklearn
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold, LeaveOneGroupOut, cross_validate
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from skicm import InterventionStatistics, InvariantProjector, NoInvarianceWarning
from skicm.datasets import make_linear_scm

TRAIN_ENVIRONMENTS = (0, 1)


@pytest.fixture(scope="module")
def scm():
    return make_linear_scm(n_samples=6000, random_state=0)


def _split(data):
    train = np.isin(data.environments, TRAIN_ENVIRONMENTS)
    return train, ~train


def _max_sine(components, basis):
    return float(np.sin(scipy.linalg.subspace_angles(components.T, basis.T).max()))


def _ood_accuracy(features, data):
    train, test = _split(data)
    model = LogisticRegression().fit(features[train], data.y[train])
    return model.score(features[test], data.y[test])


# --------------------------------------------------------------------------- identifiability


def test_recovers_the_invariant_subspace_of_the_scm(scm):
    train, _ = _split(scm)
    projector = InvariantProjector(n_components=4, alpha=20.0)
    projector.fit(scm.X[train], X_intervened=scm.X_intervened[train])
    assert _max_sine(projector.components_, scm.invariant_basis) < 0.05


def test_out_of_distribution_accuracy_matches_the_oracle(scm):
    train, _ = _split(scm)
    projector = InvariantProjector(n_components=4, alpha=20.0)
    projector.fit(scm.X[train], X_intervened=scm.X_intervened[train])
    invariant = _ood_accuracy(projector.transform(scm.X), scm)
    oracle = _ood_accuracy(scm.invariant_factors, scm)
    plain = _ood_accuracy(scm.X, scm)
    assert abs(invariant - oracle) < 0.03
    assert plain < oracle - 0.2


def test_the_released_code_choice_keeps_the_variant_subspace(scm):
    """The smallest-eigenvalue directions (clip_icm.py's choice) are the variant ones."""
    train, _ = _split(scm)
    projector = InvariantProjector(n_components=8, alpha=20.0)
    projector.fit(scm.X[train], X_intervened=scm.X_intervened[train])
    bottom = projector.components_[-4:]
    assert _max_sine(projector.components_[:4], scm.invariant_basis) < 0.05
    # The bottom directions are (nearly) orthogonal to the invariant subspace.
    overlap = np.linalg.norm(bottom @ scm.invariant_basis.T, ord=2)
    assert overlap < 0.1
    assert (
        _ood_accuracy(projector.transform(scm.X)[:, -4:], scm)
        < _ood_accuracy(projector.transform(scm.X)[:, :4], scm) - 0.2
    )


def test_auto_rank_keeps_the_positive_eigenvalues(scm):
    train, _ = _split(scm)
    projector = InvariantProjector(alpha=20.0).fit(
        scm.X[train], X_intervened=scm.X_intervened[train]
    )
    assert projector.n_components_ == int(np.sum(projector.eigenvalues_ > 0)) == 4
    assert np.all(np.diff(projector.eigenvalues_) <= 0)
    assert _max_sine(projector.components_, scm.invariant_basis) < 0.05


def test_diagnostics_describe_each_direction(scm):
    train, _ = _split(scm)
    projector = InvariantProjector(n_components=6, alpha=20.0).fit(
        scm.X[train], X_intervened=scm.X_intervened[train]
    )
    np.testing.assert_allclose(
        projector.signal_variance_ - 20.0 * projector.intervention_variance_,
        projector.eigenvalues_[:6],
        rtol=1e-8,
        atol=1e-10,
    )
    # Four invariant directions, then variant ones that interventions resample.
    assert projector.invariance_ratio_[:4].max() < 0.01
    assert projector.invariance_ratio_[4:].min() > 0.5


def test_components_are_orthonormal_with_deterministic_sign(scm):
    projector = InvariantProjector(n_components=5, alpha=5.0).fit(
        scm.X, X_intervened=scm.X_intervened
    )
    components = projector.components_
    np.testing.assert_allclose(components @ components.T, np.eye(5), atol=1e-10)
    largest = components[np.arange(5), np.abs(components).argmax(axis=1)]
    assert np.all(largest > 0)
    again = InvariantProjector(n_components=5, alpha=5.0).fit(
        scm.X[::-1], X_intervened=scm.X_intervened[::-1]
    )
    np.testing.assert_allclose(again.components_, components, atol=1e-8)


def test_matches_the_closed_form_objective(rng):
    X = rng.standard_normal((300, 6))
    X_intervened = X + 0.5 * rng.standard_normal((300, 6))
    deltas = rng.standard_normal((40, 6))
    alpha = 0.7
    projector = InvariantProjector(n_components=3, alpha=alpha).fit(
        X, X_intervened=X_intervened, deltas=deltas
    )
    differences = np.vstack([X - X_intervened, deltas])
    objective = X.T @ X / 300 - alpha * differences.T @ differences / 340
    eigenvalues, eigenvectors = np.linalg.eigh(objective)
    np.testing.assert_allclose(projector.eigenvalues_, eigenvalues[::-1], atol=1e-10)
    top = eigenvectors[:, ::-1][:, :3]
    np.testing.assert_allclose(np.abs(projector.components_ @ top), np.eye(3), atol=1e-8)
    np.testing.assert_allclose(projector.transform(X), X @ projector.components_.T)


def test_center_uses_the_covariance_and_subtracts_the_mean(rng):
    X = rng.standard_normal((400, 5)) + 10.0
    projector = InvariantProjector(n_components=2, center=True, alpha=0.0)
    with pytest.warns(NoInvarianceWarning):
        projector.fit(X)
    np.testing.assert_allclose(projector.mean_, X.mean(axis=0))
    Z = projector.transform(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(projector.inverse_transform(Z).mean(axis=0), X.mean(axis=0))


def test_inverse_transform_is_the_orthogonal_projection(scm):
    projector = InvariantProjector(n_components=4, alpha=20.0).fit(
        scm.X, X_intervened=scm.X_intervened
    )
    reconstruction = projector.inverse_transform(projector.transform(scm.X))
    np.testing.assert_allclose(projector.transform(reconstruction), projector.transform(scm.X))


# ------------------------------------------------------------------ other interventional data


def test_unaligned_deltas_equal_aligned_counterparts(scm):
    aligned = InvariantProjector(n_components=4, alpha=20.0).fit(
        scm.X, X_intervened=scm.X_intervened
    )
    unaligned = InvariantProjector(n_components=4, alpha=20.0).fit(
        scm.X, deltas=(scm.X - scm.X_intervened)[::-1]
    )
    np.testing.assert_allclose(unaligned.components_, aligned.components_, atol=1e-8)
    assert unaligned.n_differences_seen_ == len(scm.X)


def test_environment_labels_alone_find_the_invariant_subspace():
    data = make_linear_scm(
        n_samples=20000, n_classes=3, environment_agreement=(0.9, 0.6, 0.3, 0.1), random_state=1
    )
    projector = InvariantProjector(n_components=4, alpha=200.0).fit(
        data.X, data.y, groups=data.environments
    )
    # 3 classes x (4 choose 2) environment pairs.
    assert projector.n_differences_seen_ == 18
    assert _max_sine(projector.components_, data.invariant_basis) < 0.2


def test_environment_differences_are_class_conditional_mean_shifts(rng):
    X = rng.standard_normal((12, 3))
    y = np.array(["a"] * 6 + ["b"] * 6)
    environments = np.array([0, 0, 1, 1, 2, 2] * 2)
    statistics = InterventionStatistics(3)
    statistics.add_environments(X, y, environments)
    differences = statistics.environment_differences()
    means = X.reshape(2, 3, 2, 3).mean(axis=2)
    expected = [means[c, i] - means[c, j] for c in range(2) for i, j in [(0, 1), (0, 2), (1, 2)]]
    np.testing.assert_allclose(differences, expected)


class _ConstantDifferences:
    """An intervention source for tests: fixed differences, records the labels it got."""

    def __init__(self, differences):
        self.differences_ = differences
        self.calls = []

    def differences(self, y):
        self.calls.append(None if y is None else list(y))
        return self.differences_


def test_interventions_parameter_is_called_with_the_unique_labels(scm):
    source = _ConstantDifferences(scm.X[:500] - scm.X_intervened[:500])
    projector = InvariantProjector(n_components=4, alpha=20.0, interventions=source)
    projector.fit(scm.X, np.where(scm.y == 1, "dog", "cat"))
    assert source.calls == [["cat", "dog"]]
    assert projector.n_differences_seen_ == 500
    assert _max_sine(projector.components_, scm.invariant_basis) < 0.1


def test_interventions_of_the_wrong_width_are_rejected(scm):
    source = _ConstantDifferences(np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"interventions\.differences\(y\) has 5 features"):
        InvariantProjector(interventions=source).fit(scm.X)


def test_no_interventional_data_warns_and_keeps_top_second_moment(rng):
    X = rng.standard_normal((500, 4)) * np.array([4.0, 3.0, 2.0, 1.0])
    with pytest.warns(NoInvarianceWarning, match="no invariance was learned"):
        projector = InvariantProjector(n_components=2).fit(X)
    np.testing.assert_allclose(np.abs(projector.components_), np.eye(4)[:2], atol=0.1)
    np.testing.assert_array_equal(projector.intervention_variance_, 0)


def test_identical_pairs_warn_and_work(rng):
    X = rng.standard_normal((50, 4))
    with pytest.warns(NoInvarianceWarning, match="differences are zero"):
        projector = InvariantProjector(n_components=2).fit(X, X_intervened=X.copy())
    # No invariance term: the top two eigenvectors of the second moment X^T X / n.
    eigenvalues, eigenvectors = np.linalg.eigh(X.T @ X / 50)
    np.testing.assert_allclose(projector.eigenvalues_, eigenvalues[::-1], atol=1e-12)
    np.testing.assert_allclose(
        np.abs(projector.components_ @ eigenvectors[:, ::-1][:, :2]), np.eye(2), atol=1e-8
    )
    np.testing.assert_allclose(projector.transform(X), X @ projector.components_.T)


# ---------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_partial_fit_equals_fit_on_the_concatenation(scm, dtype):
    X = scm.X.astype(dtype)
    X_intervened = scm.X_intervened.astype(dtype)
    y, groups = scm.y, scm.environments
    deltas = (X - X_intervened)[:300]
    full = InvariantProjector(n_components=4, alpha=20.0).fit(
        X, y, X_intervened=X_intervened, groups=groups, deltas=deltas
    )
    stream = InvariantProjector(n_components=4, alpha=20.0)
    for index, rows in enumerate(np.array_split(np.arange(len(X)), 7)):
        stream.partial_fit(
            X[rows],
            y[rows],
            X_intervened=X_intervened[rows],
            groups=groups[rows],
            deltas=deltas if index == 0 else None,
        )
    assert stream.n_samples_seen_ == full.n_samples_seen_ == len(X)
    assert stream.n_differences_seen_ == full.n_differences_seen_
    np.testing.assert_allclose(stream.statistics_.gram, full.statistics_.gram, rtol=1e-5)
    np.testing.assert_allclose(stream.eigenvalues_, full.eigenvalues_, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stream.components_, full.components_, atol=1e-4)
    assert stream.components_.dtype == dtype


def test_statistics_merge_like_one_pass(scm):
    halves = np.array_split(np.arange(len(scm.X)), 2)
    parts = []
    for rows in halves:
        statistics = InterventionStatistics(scm.X.shape[1])
        statistics.add_samples(scm.X[rows], scm.X_intervened[rows])
        parts.append(statistics)
    whole = InterventionStatistics(scm.X.shape[1])
    whole.add_samples(scm.X, scm.X_intervened)
    merged = parts[0].merge(parts[1])
    np.testing.assert_allclose(merged.gram, whole.gram)
    np.testing.assert_allclose(merged.difference_gram, whole.difference_gram)
    with pytest.raises(ValueError, match="Cannot merge statistics of 3 features"):
        merged.merge(InterventionStatistics(3))


def test_float32_statistics_keep_the_covariance_under_a_large_mean(rng):
    # A large common offset: plain float32 sums of squares cancel catastrophically in
    # Z^T Z / n - m m^T (9% error on this data before the statistics were shifted).
    X = (rng.standard_normal((300_000, 3)) + 100.0).astype(np.float32)
    statistics = InterventionStatistics(3)
    statistics.add_samples(X)
    exact = X.astype(np.float64)
    np.testing.assert_allclose(statistics.gram, exact.T @ exact, rtol=1e-9)
    np.testing.assert_allclose(statistics.sum, exact.sum(axis=0), rtol=1e-9)
    np.testing.assert_allclose(statistics.covariance(), np.cov(exact.T, bias=True), atol=1e-8)
    float32_gram = X.T @ X
    assert not np.allclose(float32_gram / len(X) - np.outer(X.mean(0), X.mean(0)),
                           np.cov(exact.T, bias=True), rtol=1e-2)  # fmt: skip
    with pytest.warns(NoInvarianceWarning):
        projector = InvariantProjector(n_components=3, center=True).fit(X)
    np.testing.assert_allclose(
        projector.eigenvalues_, np.linalg.eigvalsh(np.cov(exact.T, bias=True))[::-1], rtol=1e-6
    )


def test_statistics_merge_across_different_shifts(rng):
    first = (rng.standard_normal((5000, 4)) + 50.0).astype(np.float32)
    second = (rng.standard_normal((7000, 4)) - 30.0).astype(np.float32)
    a, b = InterventionStatistics(4), InterventionStatistics(4)
    a.add_samples(first)
    b.add_samples(second)
    assert not np.allclose(a.shift, b.shift)
    merged = a.merge(b)
    both = np.vstack([first, second]).astype(np.float64)
    np.testing.assert_allclose(merged.gram, both.T @ both, rtol=1e-9)
    np.testing.assert_allclose(merged.covariance(), np.cov(both.T, bias=True), rtol=1e-8)


def test_multithreaded_statistics_equal_a_single_pass(rng):
    # Three blocks of at most 65,536 rows: cut into one range of blocks per core.
    X = rng.standard_normal((150_000, 64)).astype(np.float32) + 3.0
    X_intervened = X + rng.standard_normal(X.shape).astype(np.float32)
    from skicm.projection import _available_cores, _gram_partials

    assert len(_gram_partials(X[:10], None, np.zeros(64))) == 1
    assert len(_gram_partials(X, X_intervened, np.zeros(64))) == min(3, _available_cores())
    statistics = InterventionStatistics(64)
    statistics.add_samples(X, X_intervened)
    exact, differences = X.astype(np.float64), (X - X_intervened).astype(np.float64)
    gram, difference_gram = exact.T @ exact, differences.T @ differences
    np.testing.assert_allclose(statistics.gram, gram, atol=1e-6 * np.abs(gram).max())
    np.testing.assert_allclose(
        statistics.difference_gram, difference_gram, atol=1e-6 * np.abs(difference_gram).max()
    )
    again = InterventionStatistics(64)
    again.add_samples(X, X_intervened)
    np.testing.assert_array_equal(again.shifted_gram, statistics.shifted_gram)  # deterministic


# ------------------------------------------------------------------------ scikit-learn


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(scm, dtype):
    projector = InvariantProjector(n_components=3, alpha=20.0).fit(
        scm.X.astype(dtype), X_intervened=scm.X_intervened.astype(dtype)
    )
    assert projector.components_.dtype == dtype
    Z = projector.transform(scm.X.astype(dtype))
    assert Z.dtype == dtype
    reference = InvariantProjector(n_components=3, alpha=20.0).fit(
        scm.X, X_intervened=scm.X_intervened
    )
    np.testing.assert_allclose(projector.components_, reference.components_, atol=1e-4)
    np.testing.assert_allclose(Z, reference.transform(scm.X), rtol=1e-4, atol=1e-4)


def test_pickle_and_clone_round_trip(scm):
    projector = InvariantProjector(n_components=3, alpha=20.0).fit(
        scm.X, X_intervened=scm.X_intervened
    )
    restored = pickle.loads(pickle.dumps(projector))
    np.testing.assert_array_equal(restored.transform(scm.X), projector.transform(scm.X))
    fresh = clone(projector)
    assert fresh.get_params() == projector.get_params()
    assert not hasattr(fresh, "components_")


def test_pandas_output_has_feature_names(scm):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(scm.X, columns=[f"clip{i}" for i in range(scm.X.shape[1])])
    projector = InvariantProjector(n_components=3, alpha=20.0).set_output(transform="pandas")
    out = projector.fit_transform(frame, X_intervened=scm.X_intervened)
    assert list(out.columns) == [f"invariantprojector{i}" for i in range(3)]
    assert list(projector.feature_names_in_) == list(frame.columns)
    np.testing.assert_allclose(out.to_numpy(), scm.X @ projector.components_.T)


def test_grid_search_over_rank_with_environments_as_groups(scm):
    X, y, groups = scm.X, scm.y, scm.environments
    pipe = make_pipeline(InvariantProjector(alpha=20.0), LogisticRegression())
    search = GridSearchCV(
        pipe, {"invariantprojector__n_components": [2, 4, 8]}, cv=GroupKFold(n_splits=3)
    )
    # Without metadata routing, the sample-aligned X_intervened is sliced per fold.
    search.fit(X, y, groups=groups, invariantprojector__X_intervened=scm.X_intervened)
    # Holding out whole environments rewards the invariant rank: with all 8 directions the
    # classifier uses the colour, whose correlation with the label flips between environments.
    assert search.best_params_["invariantprojector__n_components"] == 4
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] > scores[2] + 0.05
    projector = search.best_estimator_[0]
    assert projector.n_samples_seen_ == len(X)
    assert projector.invariance_ratio_.max() < 0.05


def test_metadata_routing_splits_x_intervened_per_fold(scm):
    train, _ = _split(scm)
    X, y, groups = scm.X[train], scm.y[train], scm.environments[train]
    seen = []

    class RecordingProjector(InvariantProjector):
        def fit(self, X, y=None, *, X_intervened=None, deltas=None, groups=None):
            seen.append((X.copy(), np.asarray(X_intervened).copy()))
            return super().fit(X, y, X_intervened=X_intervened)

    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline(
            [
                (
                    "icm",
                    RecordingProjector(n_components=4, alpha=20.0).set_fit_request(
                        X_intervened=True, groups=False
                    ),
                ),
                ("clf", LogisticRegression()),
            ]
        )
        result = cross_validate(
            pipe,
            X,
            y,
            cv=LeaveOneGroupOut(),
            params={"X_intervened": scm.X_intervened[train], "groups": groups},
        )
    assert len(seen) == 2
    lookup = {row.tobytes(): index for index, row in enumerate(X)}
    for X_fold, X_intervened_fold in seen:
        rows = [lookup[row.tobytes()] for row in X_fold]
        np.testing.assert_array_equal(X_intervened_fold, scm.X_intervened[train][rows])
    # Each fold's score is that of the pipeline fitted on the fold by hand.
    expected = []
    for fold_train, fold_test in LeaveOneGroupOut().split(X, y, groups):
        projector = InvariantProjector(n_components=4, alpha=20.0).fit(
            X[fold_train], X_intervened=scm.X_intervened[train][fold_train]
        )
        model = LogisticRegression().fit(projector.transform(X[fold_train]), y[fold_train])
        expected.append(model.score(projector.transform(X[fold_test]), y[fold_test]))
    np.testing.assert_allclose(result["test_score"], expected)


def test_routing_groups_through_a_pipeline(scm):
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline(
            [
                ("scale", StandardScaler(with_mean=False)),
                (
                    "icm",
                    InvariantProjector(n_components=4, alpha=200.0).set_fit_request(groups=True),
                ),
                ("clf", LogisticRegression()),
            ]
        )
        pipe.fit(scm.X, scm.y, groups=scm.environments)
    assert pipe["icm"].n_differences_seen_ == 2 * 3
    direct = InvariantProjector(n_components=4, alpha=200.0).fit(
        pipe["scale"].transform(scm.X), scm.y, groups=scm.environments
    )
    np.testing.assert_allclose(pipe["icm"].components_, direct.components_, atol=1e-10)


def test_transform_input_routes_counterparts_through_earlier_steps(scm):
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline(
            [
                ("scale", StandardScaler()),
                (
                    "icm",
                    InvariantProjector(n_components=4, alpha=20.0).set_fit_request(
                        X_intervened=True
                    ),
                ),
            ],
            transform_input=["X_intervened"],
        )
        pipe.fit(scm.X, X_intervened=scm.X_intervened)
    scaler = pipe["scale"]
    expected = InvariantProjector(n_components=4, alpha=20.0).fit(
        scaler.transform(scm.X), X_intervened=scaler.transform(scm.X_intervened)
    )
    np.testing.assert_allclose(pipe["icm"].components_, expected.components_, atol=1e-10)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_rejected(rng, bad):
    X = rng.standard_normal((20, 4))
    X[3, 2] = bad
    with pytest.raises(ValueError, match="Input X contains"):
        InvariantProjector().fit(X)
    X_intervened = rng.standard_normal((20, 4))
    X_intervened[0, 0] = bad
    with pytest.raises(ValueError, match="Input X_intervened contains"):
        InvariantProjector().fit(rng.standard_normal((20, 4)), X_intervened=X_intervened)


def test_counterparts_of_another_shape_are_rejected(rng):
    with pytest.raises(ValueError, match=r"X_intervened has shape \(19, 4\) but X has shape"):
        InvariantProjector().fit(
            rng.standard_normal((20, 4)), X_intervened=rng.standard_normal((19, 4))
        )


def test_deltas_of_another_width_are_rejected(rng):
    with pytest.raises(ValueError, match="deltas has 3 features but X has 4"):
        InvariantProjector().fit(rng.standard_normal((20, 4)), deltas=rng.standard_normal((5, 3)))


def test_groups_of_another_length_are_rejected(rng):
    with pytest.raises(ValueError, match="groups has 7 entries but X has 20 rows"):
        InvariantProjector().fit(rng.standard_normal((20, 4)), groups=np.zeros(7))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"alpha": -1.0}, "'alpha' parameter"),
        ({"n_components": 0}, "'n_components' parameter"),
        ({"n_components": "largest"}, "'n_components' parameter"),
        ({"interventions": "text"}, "'interventions' parameter"),
    ],
)
def test_invalid_parameters_are_named(rng, params, match):
    with pytest.raises(ValueError, match=match):
        InvariantProjector(**params).fit(rng.standard_normal((20, 4)))


def test_n_components_above_n_features_is_rejected(rng):
    with pytest.raises(ValueError, match="n_components=5 must be between 1 and n_features=4"):
        InvariantProjector(n_components=5).fit(rng.standard_normal((20, 4)))


def test_transform_of_another_width_is_rejected(rng):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoInvarianceWarning)
        projector = InvariantProjector(n_components=2).fit(rng.standard_normal((20, 4)))
    with pytest.raises(ValueError, match="X has 5 features, but InvariantProjector is expecting 4"):
        projector.transform(rng.standard_normal((3, 5)))
    with pytest.raises(ValueError, match="expects n_components_=2"):
        projector.inverse_transform(rng.standard_normal((3, 4)))


def test_partial_fit_with_another_width_is_rejected(rng):
    projector = InvariantProjector(n_components=2)
    X = rng.standard_normal((20, 4))
    projector.partial_fit(X, X_intervened=X + 1)
    with pytest.raises(ValueError, match="X has 3 features"):
        projector.partial_fit(rng.standard_normal((20, 3)))


def test_a_failed_batch_leaves_the_fitted_projector_unchanged(scm):
    projector = InvariantProjector(n_components=4, alpha=20.0)
    projector.partial_fit(scm.X[:3000], X_intervened=scm.X_intervened[:3000])
    before = pickle.dumps(projector)
    bad = scm.X[3000:4000].copy()
    bad[5, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        projector.partial_fit(bad, X_intervened=scm.X_intervened[3000:4000])
    with pytest.raises(ValueError, match="X_intervened has shape"):
        projector.fit(scm.X, X_intervened=scm.X_intervened[:10])
    assert pickle.dumps(projector) == before

    class FailingSource:
        def differences(self, y):
            raise RuntimeError("text encoder unavailable")

    projector.set_params(interventions=FailingSource())
    with pytest.raises(RuntimeError, match="text encoder unavailable"):
        projector.partial_fit(scm.X[3000:4000], X_intervened=scm.X_intervened[3000:4000])
    assert projector.n_samples_seen_ == projector.statistics_.n_samples == 3000


def test_a_failed_fit_of_another_width_keeps_the_fitted_input_description(scm):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(scm.X, columns=[f"clip{i}" for i in range(scm.X.shape[1])])
    projector = InvariantProjector(n_components=3, alpha=20.0).fit(
        frame, X_intervened=scm.X_intervened
    )
    components = projector.components_.copy()
    narrow = scm.X[:, :5].copy()
    narrow[0, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        projector.fit(narrow)
    with pytest.raises(ValueError, match="n_components=3 must be between 1 and n_features=2"):
        projector.fit(scm.X[:, :2])
    assert projector.n_features_in_ == scm.X.shape[1]
    assert list(projector.feature_names_in_) == list(frame.columns)
    np.testing.assert_array_equal(projector.components_, components)
    np.testing.assert_allclose(projector.transform(frame), scm.X @ components.T)


def test_counterparts_with_other_columns_are_rejected(scm):
    pd = pytest.importorskip("pandas")
    columns = [f"clip{i}" for i in range(scm.X.shape[1])]
    frame = pd.DataFrame(scm.X, columns=columns)
    shuffled = pd.DataFrame(scm.X_intervened, columns=columns)[columns[::-1]]
    with pytest.raises(ValueError, match=r"X_intervened has columns .* same order"):
        InvariantProjector().fit(frame, X_intervened=shuffled)


def test_y_is_ignored_unless_it_is_used(scm):
    from sklearn.linear_model import Ridge

    targets = np.column_stack([scm.y, -scm.y]).astype(float)  # multi-output regression
    pipe = make_pipeline(InvariantProjector(n_components=4, alpha=20.0), Ridge())
    pipe.fit(scm.X, targets, invariantprojector__X_intervened=scm.X_intervened)
    # The projector is the one fitted without y; the regression sees its projection.
    alone = InvariantProjector(n_components=4, alpha=20.0).fit(scm.X, X_intervened=scm.X_intervened)
    np.testing.assert_allclose(pipe[0].components_, alone.components_)
    expected = Ridge().fit(alone.transform(scm.X), targets).predict(alone.transform(scm.X[:3]))
    np.testing.assert_allclose(pipe.predict(scm.X[:3]), expected)
    with pytest.raises(ValueError, match="y must be one-dimensional"):
        InvariantProjector().fit(scm.X, targets, groups=scm.environments)


def test_partial_fit_with_an_intervention_source_equals_fit(scm):
    source = _ConstantDifferences(scm.X[:500] - scm.X_intervened[:500])
    labels = np.where(scm.y == 1, "dog", "cat")
    full = InvariantProjector(n_components=4, alpha=20.0, interventions=source).fit(scm.X, labels)
    stream = InvariantProjector(n_components=4, alpha=20.0, interventions=source)
    order = np.argsort(labels, kind="stable")  # the first batch sees only "cat"
    for rows in np.array_split(order, 3):
        stream.partial_fit(scm.X[rows], labels[rows])
    assert source.calls[-1] == ["cat", "dog"]
    assert stream.n_differences_seen_ == full.n_differences_seen_ == 500
    np.testing.assert_allclose(stream.components_, full.components_, atol=1e-8)


# ------------------------------------------------------------------- groups under routing


def test_groups_are_not_requested_by_default():
    requests = InvariantProjector().get_metadata_routing()
    assert requests.fit.requests["groups"] is False
    assert requests.partial_fit.requests["groups"] is False
    assert requests.fit.requests["X_intervened"] is None  # still an explicit request


@pytest.mark.parametrize("routing", [False, True])
def test_group_kfold_search_leaves_groups_to_the_splitter(scm, routing):
    X, y, groups, X_intervened = scm.X, scm.y, scm.environments, scm.X_intervened
    projector = InvariantProjector(alpha=20.0)
    with sklearn.config_context(enable_metadata_routing=routing):
        if routing:
            projector.set_fit_request(X_intervened=True)
            fit_params = {"X_intervened": X_intervened}
        else:
            fit_params = {"invariantprojector__X_intervened": X_intervened}
        search = GridSearchCV(
            make_pipeline(projector, LogisticRegression()),
            {"invariantprojector__n_components": [4, 8]},
            cv=GroupKFold(n_splits=3),
        )
        search.fit(X, y, groups=groups, **fit_params)
    fitted = search.best_estimator_[0]
    # Only the counterparts reached the projector: no environment-mean differences.
    assert fitted.n_differences_seen_ == len(X)
    assert fitted.statistics_.cell_sums == {}
    assert search.best_params_ == {"invariantprojector__n_components": 4}


@pytest.mark.parametrize("routing", [False, True])
def test_environment_labels_are_an_explicit_opt_in(scm, routing):
    X, y, groups = scm.X, scm.y, scm.environments
    expected = InvariantProjector(n_components=4, alpha=200.0).fit(X, y, groups=groups)
    assert expected.n_differences_seen_ == 2 * 3  # 2 classes x (3 choose 2) environment pairs
    with sklearn.config_context(enable_metadata_routing=routing):
        projector = InvariantProjector(n_components=4, alpha=200.0)
        if routing:
            pipe = make_pipeline(projector.set_fit_request(groups=True), LogisticRegression())
            pipe.fit(X, y, groups=groups)
        else:
            pipe = make_pipeline(projector, LogisticRegression())
            pipe.fit(X, y, invariantprojector__groups=groups)
    assert pipe[0].n_differences_seen_ == 6
    np.testing.assert_allclose(pipe[0].components_, expected.components_, atol=1e-10)


# ------------------------------------------------------------- raw images as counterparts


def _flatten_images(images):
    return np.asarray(images, dtype=np.float64).reshape(len(images), -1) / 255


@pytest.mark.parametrize("kind", ["array", "paths", "pil", "arrays"])
def test_raw_image_counterparts_get_an_error_naming_the_routes(rng, tmp_path, kind):
    from PIL import Image

    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    if kind == "array":
        counterparts, described = images, r"an array of shape \(6, 8, 8, 3\)"
    elif kind == "paths":
        counterparts, described = [str(tmp_path / f"{i}.png") for i in range(6)], "file paths"
    elif kind == "pil":
        counterparts, described = [Image.fromarray(image) for image in images], "PIL images"
    else:
        counterparts, described = list(images), r"arrays of shape \(8, 8, 3\)"
    X = _flatten_images(images)
    with pytest.raises(ValueError, match=f"X_intervened looks like raw images .*{described}"):
        InvariantProjector().fit(X, X_intervened=counterparts)
    # The classic pipeline form hands the images to the projector unembedded.
    pipe = make_pipeline(
        sklearn.preprocessing.FunctionTransformer(_flatten_images), InvariantProjector()
    )
    with pytest.raises(ValueError, match="X_intervened") as error:
        pipe.fit(images, invariantprojector__X_intervened=counterparts)
    message = str(error.value)
    assert 'transform_input=["X_intervened"]' in message
    assert "enable_metadata_routing=True" in message
    assert "make_clip_icm_pipeline" in message


def test_the_route_named_in_the_error_embeds_the_counterparts(rng):
    images = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    counterparts = 255 - images
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline(
            [
                ("embed", sklearn.preprocessing.FunctionTransformer(_flatten_images)),
                ("icm", InvariantProjector(n_components=3).set_fit_request(X_intervened=True)),
            ],
            transform_input=["X_intervened"],
        )
        pipe.fit(images, X_intervened=counterparts)
    expected = InvariantProjector(n_components=3).fit(
        _flatten_images(images), X_intervened=_flatten_images(counterparts)
    )
    np.testing.assert_allclose(pipe["icm"].components_, expected.components_, atol=1e-10)


# ---------------------------------------------------------------- the "auto" rank rule


@pytest.fixture(scope="module")
def colored_mnist():
    from skicm.datasets import load_mnist, make_colored_mnist

    return make_colored_mnist(*load_mnist(), random_state=0)


@pytest.mark.parametrize("alpha", [0.03, 1.0, 30.0])
def test_auto_rank_is_the_same_for_float32_and_float64_pixels(colored_mnist, alpha):
    """Real pixels (5,000 MNIST digits, DomainBed's Colored MNIST): the rank of "auto" does not
    depend on the dtype (a dtype-dependent tolerance kept 132 directions from float32 and
    161 from float64 at alpha=1)."""
    fitted = {}
    for dtype in (np.float32, np.float64):
        fitted[dtype] = InvariantProjector(alpha=alpha).fit(
            colored_mnist.data.astype(dtype),
            X_intervened=colored_mnist.data_intervened.astype(dtype),
        )
    single, double = fitted[np.float32], fitted[np.float64]
    assert single.n_components_ == double.n_components_
    # Well inside the positive block: float32 round-off moves eigenvalues by far less than
    # the tolerance, and the kept directions are the same.
    scale = np.abs(double.eigenvalues_).max()
    np.testing.assert_allclose(single.eigenvalues_, double.eigenvalues_, atol=1e-6 * scale)
    tolerance = 392 * 2.0**-23 * scale
    assert single.n_components_ == int(np.sum(double.eigenvalues_ > tolerance))
    assert 20 < single.n_components_ < 300


def test_auto_rank_values_on_colored_mnist(colored_mnist):
    counts = [
        InvariantProjector(alpha=alpha)
        .fit(colored_mnist.data, X_intervened=colored_mnist.data_intervened)
        .n_components_
        for alpha in (0.03, 1.0, 30.0)
    ]
    assert counts == [280, 132, 53]


@pytest.mark.parametrize("scale", [1e-3, 1e4])
def test_auto_rank_does_not_depend_on_the_scale(colored_mnist, scale):
    X = colored_mnist.data[:2000].astype(np.float64)
    X_intervened = colored_mnist.data_intervened[:2000].astype(np.float64)
    reference = InvariantProjector(alpha=1.0).fit(X, X_intervened=X_intervened)
    scaled = InvariantProjector(alpha=1.0).fit(scale * X, X_intervened=scale * X_intervened)
    assert scaled.n_components_ == reference.n_components_
    np.testing.assert_allclose(
        scaled.eigenvalues_,
        scale**2 * reference.eigenvalues_,
        atol=1e-9 * scale**2 * np.abs(reference.eigenvalues_).max(),
    )


def test_count_positive_eigenvalues_is_the_auto_rule(colored_mnist):
    from skicm.projection import count_positive_eigenvalues

    projector = InvariantProjector(alpha=1.0).fit(
        colored_mnist.data, X_intervened=colored_mnist.data_intervened
    )
    assert count_positive_eigenvalues(projector.eigenvalues_) == projector.n_components_
    # The dtype argument of earlier versions is accepted and changes nothing.
    for dtype in (np.float32, np.float64):
        assert count_positive_eigenvalues(projector.eigenvalues_, dtype) == projector.n_components_
    spectrum = np.array([1.0, 5e-4, 1e-5, 0.0, -3.0])
    # tolerance = 5 * 2**-23 * 3 = 1.8e-6: 1e-5 counts, 0 does not.
    assert count_positive_eigenvalues(spectrum) == 3
    assert count_positive_eigenvalues(np.array([])) == 0
