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
from skicm.exceptions import RankWarning
from skicm.projection import count_positive_eigenvalues

TRAIN_ENVIRONMENTS = (0, 1)

# Unit round-offs: every float tolerance below is derived from one of them.
U32 = 2.0**-24
U64 = 2.0**-53


@pytest.fixture(scope="module")
def scm():
    return make_linear_scm(n_samples=6000, random_state=0)


def _split(data):
    train = np.isin(data.environments, TRAIN_ENVIRONMENTS)
    return train, ~train


def _max_sine(components, basis):
    return float(np.sin(scipy.linalg.subspace_angles(components.T, basis.T).max()))


def _objective_scale(projector):
    """``||Z^T Z / n||_2 + alpha ||Delta^T Delta / m||_2`` from a projector's statistics: the
    size of the sums whose round-off perturbs ``M`` (uncentred, the larger of the two)."""
    statistics = projector.statistics_
    differences = statistics.difference_gram
    extra = statistics.environment_differences()
    if len(extra):
        differences = differences + extra.T @ extra
    m = max(projector.n_differences_seen_, 1)
    return np.linalg.norm(
        statistics.gram / statistics.n_samples, 2
    ) + projector.alpha * np.linalg.norm(differences / m, 2)


def _float64_perturbation(projector, n_terms):
    """Worst-case bound on ``||M' - M||_2`` between two float64 evaluations of ``M`` from the
    same data that differ only in the order of their sums (or in how shifts are merged).

    Each entry is a sum of at most ``n_terms`` products, whose summation error is at most
    ``gamma_n ~ n u64`` times the sum of the absolute products (Higham, Accuracy and
    Stability of Numerical Algorithms, 2002, eq. 3.5), and forming ``M`` adds a few u64.
    The matrix of absolute products ``|Z|^T |Z|`` has norm at most ``d ||Z^T Z||_2``
    (``|| |A| ||_2 <= sqrt(rank) ||A||_2``). Factor 2: the two evaluations compared.
    """
    d = projector.n_features_in_
    return 2 * (n_terms + 4) * d * U64 * _objective_scale(projector)


def _float32_perturbation(X, X_intervened, alpha, shift=None, deltas=None):
    """Bound on ``||M32 - M64||_2`` when float32 embeddings replace float64 ones (the
    uncentred objective, alpha times aligned differences).

    The statistics subtract ``shift`` and form ``(X - shift)^T (X - shift)`` and
    ``D^T D`` (``D = X - X_intervened``) in float32 blocks, accumulated in float64.

    - Rounding: ``X`` and ``X_intervened`` are rounded to float32 (``u32`` relative per
      entry) and so is each subtraction, so a product matrix ``A^T A`` moves by at most
      ``2 ||A||_2 ||dA||_F`` with ``||dA||_F <= u32 (||inputs||_F + ||A||_F)``.
    - Accumulation: a float32 sum of ``n`` products errs by at most ``lambda sqrt(n) u32``
      times the sum of absolute products, with probability above ``1 - 2 exp(-lambda^2/2)``
      (Higham and Mary, SIAM J. Sci. Comput. 41(5), 2019); lambda = 6 (failure below
      3e-8 per entry), and the sum of absolute products is ``|A|^T |A|``.

    ``shift=None`` (batches of ``partial_fit``, each with its own shift, a mean of its
    rows) bounds ``|X - shift|`` by ``|X| + max |X|`` column-wise. ``deltas`` are float32
    differences added to ``D``.
    """
    X, X_intervened = np.asarray(X, np.float64), np.asarray(X_intervened, np.float64)
    D = X - X_intervened
    inputs_frobenius = np.linalg.norm(X) + np.linalg.norm(X_intervened)
    if deltas is not None:
        D = np.vstack([D, np.asarray(deltas, np.float64)])
        inputs_frobenius += np.linalg.norm(deltas)
    if shift is None:
        Z = np.abs(X) + np.abs(X).max(axis=0)
    else:
        Z = X - shift
    n = len(X)

    def product_error(A, inputs_frobenius):
        # ||A||_2 from the d x d Gram matrix (no SVD of the tall A); 1.01 covers its round-off.
        norm = 1.01 * np.sqrt(np.linalg.eigvalsh(A.T @ A)[-1])
        rounding = 2 * norm * U32 * (inputs_frobenius + np.linalg.norm(A))
        absolute = _absolute_gram(A)
        accumulation = 6 * np.sqrt(len(A)) * U32 * np.linalg.norm(absolute, 2)
        return (rounding + accumulation) / len(A)

    signal = product_error(Z, np.linalg.norm(X))
    intervention = product_error(D, inputs_frobenius) * len(D) / max(len(D), n)
    return signal + alpha * intervention


def _absolute_gram(A):
    """``|A|^T |A|``, a factor of bounds only, computed in float32 for speed: a float32 sum
    of ``n`` non-negative terms is at least ``1 - n u32`` times the exact sum (Higham,
    eq. 3.5), so dividing by that keeps it an upper bound."""
    absolute = np.abs(np.asarray(A, np.float32))
    return (absolute.T @ absolute).astype(np.float64) / (1 - 2 * len(absolute) * U32)


def _product_tolerance(X):
    """Bound on how far two evaluations of ``X @ A`` (``A`` orthonormal, float64) may differ:
    a dot product of ``d`` terms errs by at most ``gamma_d ||x|| ||a||`` (Higham, eq. 3.5),
    twice for two evaluations, plus ``2 u64`` of ``||x||`` for a stored copy of ``A``."""
    d = np.shape(X)[1]
    return 2 * (d + 2) * U64 * float(np.linalg.norm(X, axis=1).max())


def _float32_gram_bound(X, shift):
    """Entry-wise bound on the error of float32 statistics ``Z^T Z`` (``Z = X - shift``).

    As in ``_float32_perturbation``: rounding ``Z`` to float32 (2 u32 of ``|Z|^T |Z|``),
    float32 sums within blocks of at most 65,536 rows (``6 sqrt(K) u32`` of ``|Z|^T |Z|``,
    Higham and Mary's probabilistic bound with lambda = 6), then float64 additions of the
    blocks and of the shift's terms (``(n + 4) u64`` of ``|X|^T |X|``).
    """
    X = np.asarray(X, np.float64)
    block = min(len(X), 2**16)
    float32_part = (2 + 6 * np.sqrt(block)) * U32 * _absolute_gram(X - shift)
    return float32_part + (len(X) + 4) * U64 * _absolute_gram(X)


def _objective(projector):
    """``M`` of a fitted projector, formed from its statistics (no intervention source)."""
    statistics = projector.statistics_
    if projector.center:
        signal = statistics.covariance()
    else:
        signal = statistics.gram / statistics.n_samples
    differences = statistics.difference_gram.copy()
    extra = statistics.environment_differences()
    if len(extra):
        differences += extra.T @ extra
    return signal - projector.alpha * differences / max(projector.n_differences_seen_, 1)


def _eigenvector_bounds(eigenvalues, n_components, perturbation):
    """Davis-Kahan bound on ``||a_i - a_i'||`` for each of the first eigenvectors.

    ``eigenvalues`` is the spectrum of ``M`` (decreasing) and ``perturbation`` bounds
    ``||M' - M||_2``. Weyl moves every eigenvalue by at most ``perturbation``, so the
    angle of eigenvector ``i`` satisfies ``sin(theta) <= perturbation / (gap_i -
    perturbation)`` with ``gap_i`` its distance to the rest of the spectrum; with the same
    sign convention ``||a - a'|| = 2 sin(theta / 2) <= sqrt(2) sin(theta)``.
    """
    gaps = np.array(
        [np.abs(np.delete(eigenvalues, i) - eigenvalues[i]).min() for i in range(n_components)]
    )
    assert np.all(gaps > 2 * perturbation), "eigenvalues too close for an eigenvector bound"
    return np.sqrt(2) * perturbation / (gaps - perturbation)


def _subspace_bound(eigenvalues, n_components, perturbation):
    """Davis-Kahan bound on the sine of the largest angle between two top-k subspaces."""
    gap = eigenvalues[n_components - 1] - eigenvalues[n_components]
    assert gap > 2 * perturbation, "no spectral gap after the kept directions"
    return perturbation / (gap - perturbation)


def _subspace_sine(components, other):
    """``||P - P'||_2``: the sine of the largest principal angle between two subspaces."""
    projection = components.T.astype(np.float64) @ components.astype(np.float64)
    other_projection = other.T.astype(np.float64) @ other.astype(np.float64)
    return float(np.linalg.norm(projection - other_projection, 2))


def _assert_same_directions(actual, reference, n_terms):
    """Components of ``actual`` equal ``reference``'s within the float64 eigenvector bound."""
    bounds = _eigenvector_bounds(
        reference.eigenvalues_, reference.n_components_, _float64_perturbation(reference, n_terms)
    )
    assert actual.n_components_ == reference.n_components_
    errors = np.linalg.norm(actual.components_ - reference.components_, axis=1)
    assert np.all(errors <= bounds), (errors, bounds)


def _ood_accuracy(features, data):
    train, test = _split(data)
    model = LogisticRegression().fit(features[train], data.y[train])
    return model.score(features[test], data.y[test])


# --------------------------------------------------------------------------- identifiability
# The thresholds of this section are statistical, not round-off: make_linear_scm draws its
# rows from numpy's PCG64 with a fixed seed (the same numbers on every platform), and round-off
# moves the fitted subspace by less than 1e-7 (_float64_perturbation / gap), far inside each
# margin. Measured on the fixed data: subspace sine 0.024 (threshold 0.05), overlap of the
# bottom directions with the invariant basis 0.024 (0.1), invariance ratios 3e-4 (0.01) and
# 1.24 (0.5), accuracy gap to the oracle under 0.01 (0.03); the thresholds would fail for a
# variant-subspace or rank mistake (sine near 1, accuracy gap above 0.2). The same holds for
# the statistical thresholds further down, each with its measured value beside it.


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
    # a^T S a - alpha a^T I a = a^T M a = lambda up to the eigensolver's residual and the
    # round-off of the two quadratic forms: a few d u64 of ||S|| + alpha ||I||, within
    # _float64_perturbation over d terms.
    np.testing.assert_allclose(
        projector.signal_variance_ - 20.0 * projector.intervention_variance_,
        projector.eigenvalues_[:6],
        rtol=0,
        atol=_float64_perturbation(projector, projector.n_features_in_),
    )
    # Four invariant directions, then variant ones that interventions resample.
    assert projector.invariance_ratio_[:4].max() < 0.01
    assert projector.invariance_ratio_[4:].min() > 0.5


def test_components_are_orthonormal_with_deterministic_sign(scm):
    projector = InvariantProjector(n_components=5, alpha=5.0).fit(
        scm.X, X_intervened=scm.X_intervened
    )
    components = projector.components_
    # LAPACK's symmetric eigensolvers return vectors orthonormal to O(d u64) (LAPACK Users'
    # Guide, section 4.7: "p(n) eps", p a modest function of d); 10 d u64 leaves room for p.
    d = components.shape[1]
    np.testing.assert_allclose(components @ components.T, np.eye(5), rtol=0, atol=10 * d * U64)
    largest = components[np.arange(5), np.abs(components).argmax(axis=1)]
    assert np.all(largest > 0)
    again = InvariantProjector(n_components=5, alpha=5.0).fit(
        scm.X[::-1], X_intervened=scm.X_intervened[::-1]
    )
    # The same sums in reverse order: within the float64 eigenvector bound, signs included.
    _assert_same_directions(again, projector, len(scm.X))


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
    # The same M formed two ways (shifted sums vs plain products): Weyl for the spectrum,
    # Davis-Kahan for the vectors (|a . a'| >= 1 - ||a - a'||^2 / 2, off-diagonal <= ||a - a'||).
    perturbation = _float64_perturbation(projector, 340)
    np.testing.assert_allclose(projector.eigenvalues_, eigenvalues[::-1], rtol=0, atol=perturbation)
    top = eigenvectors[:, ::-1][:, :3]
    bound = _eigenvector_bounds(eigenvalues[::-1], 3, perturbation).max()
    np.testing.assert_allclose(np.abs(projector.components_ @ top), np.eye(3), rtol=0, atol=bound)
    np.testing.assert_allclose(
        projector.transform(X), X @ projector.components_.T, rtol=0, atol=_product_tolerance(X)
    )


def test_center_uses_the_covariance_and_subtracts_the_mean(rng):
    X = rng.standard_normal((400, 5)) + 10.0
    projector = InvariantProjector(n_components=2, center=True, alpha=0.0)
    with pytest.warns(NoInvarianceWarning):
        projector.fit(X)
    # Two float64 means of 400 values: each within gamma_n of the sum of |x| (Higham eq. 3.5).
    mean_tolerance = 2 * (len(X) + 4) * U64 * np.abs(X).max()
    np.testing.assert_allclose(projector.mean_, X.mean(axis=0), rtol=0, atol=mean_tolerance)
    Z = projector.transform(X)
    # mean(Z) = (mean(X) - mean_) A plus the round-off of the products and of the mean of Z.
    centred_tolerance = mean_tolerance + 2 * _product_tolerance(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=centred_tolerance)
    np.testing.assert_allclose(
        projector.inverse_transform(Z).mean(axis=0),
        X.mean(axis=0),
        rtol=0,
        atol=mean_tolerance + 4 * centred_tolerance,
    )


def test_inverse_transform_is_the_orthogonal_projection(scm):
    projector = InvariantProjector(n_components=4, alpha=20.0).fit(
        scm.X, X_intervened=scm.X_intervened
    )
    reconstruction = projector.inverse_transform(projector.transform(scm.X))
    # A A^T = I to O(d u64) (orthonormal rows), so A (A^T A x) = A x up to three products.
    np.testing.assert_allclose(
        projector.transform(reconstruction),
        projector.transform(scm.X),
        rtol=0,
        atol=3 * _product_tolerance(scm.X) + 10 * scm.X.shape[1] * U64 * np.abs(scm.X).max(),
    )


# ------------------------------------------------------------------ other interventional data


def test_unaligned_deltas_equal_aligned_counterparts(scm):
    aligned = InvariantProjector(n_components=4, alpha=20.0).fit(
        scm.X, X_intervened=scm.X_intervened
    )
    unaligned = InvariantProjector(n_components=4, alpha=20.0).fit(
        scm.X, deltas=(scm.X - scm.X_intervened)[::-1]
    )
    _assert_same_directions(unaligned, aligned, len(scm.X))  # the same sums, reordered
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
    assert _max_sine(projector.components_, data.invariant_basis) < 0.2  # measured 0.043


def test_environment_differences_are_class_conditional_mean_shifts(rng):
    X = rng.standard_normal((12, 3))
    y = np.array(["a"] * 6 + ["b"] * 6)
    environments = np.array([0, 0, 1, 1, 2, 2] * 2)
    statistics = InterventionStatistics(3)
    statistics.add_environments(X, y, environments)
    differences = statistics.environment_differences()
    means = X.reshape(2, 3, 2, 3).mean(axis=2)
    expected = [means[c, i] - means[c, j] for c in range(2) for i, j in [(0, 1), (0, 2), (1, 2)]]
    # Means of two values and a difference: a few u64 of max |x| each way.
    np.testing.assert_allclose(differences, expected, rtol=0, atol=8 * U64 * np.abs(X).max())


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
    assert _max_sine(projector.components_, scm.invariant_basis) < 0.1  # measured 0.029


def test_interventions_of_the_wrong_width_are_rejected(scm):
    source = _ConstantDifferences(np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"interventions\.differences\(y\) has 5 features"):
        InvariantProjector(interventions=source).fit(scm.X)


def test_no_interventional_data_warns_and_keeps_top_second_moment(rng):
    X = rng.standard_normal((500, 4)) * np.array([4.0, 3.0, 2.0, 1.0])
    with pytest.warns(NoInvarianceWarning, match="no invariance was learned"):
        projector = InvariantProjector(n_components=2).fit(X)
    # Statistical: 500 rows with standard deviations 4, 3, 2, 1 estimate the top axes to
    # about 1 / sqrt(500) times sigma_i sigma_j / (sigma_i^2 - sigma_j^2) <= 0.08 (fixed seed).
    np.testing.assert_allclose(np.abs(projector.components_), np.eye(4)[:2], atol=0.1)
    np.testing.assert_array_equal(projector.intervention_variance_, 0)


def test_identical_pairs_warn_and_work(rng):
    X = rng.standard_normal((50, 4))
    with pytest.warns(NoInvarianceWarning, match="differences are zero"):
        projector = InvariantProjector(n_components=2).fit(X, X_intervened=X.copy())
    # No invariance term: the top two eigenvectors of the second moment X^T X / n.
    eigenvalues, eigenvectors = np.linalg.eigh(X.T @ X / 50)
    perturbation = _float64_perturbation(projector, 50)  # same M, formed another way
    np.testing.assert_allclose(projector.eigenvalues_, eigenvalues[::-1], rtol=0, atol=perturbation)
    bound = _eigenvector_bounds(eigenvalues[::-1], 2, perturbation).max()
    np.testing.assert_allclose(
        np.abs(projector.components_ @ eigenvectors[:, ::-1][:, :2]), np.eye(2), rtol=0, atol=bound
    )
    np.testing.assert_allclose(
        projector.transform(X), X @ projector.components_.T, rtol=0, atol=_product_tolerance(X)
    )


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
    assert stream.components_.dtype == dtype
    # Both are within one perturbation bound of the exact M (float32: the batches' own shifts
    # and block sums, _float32_perturbation; float64: summation order), so of each other
    # within twice that: then Weyl for the spectrum and Davis-Kahan for the vectors.
    if dtype == np.float32:
        perturbation = 2 * _float32_perturbation(X, X_intervened, 20.0, deltas=deltas)
    else:
        perturbation = _float64_perturbation(full, len(X))
    difference = np.linalg.norm(_objective(stream) - _objective(full), 2)
    assert difference <= perturbation
    assert np.abs(stream.eigenvalues_ - full.eigenvalues_).max() <= perturbation
    bounds = _eigenvector_bounds(full.eigenvalues_, 4, perturbation) + 2 * np.finfo(dtype).eps
    errors = np.linalg.norm(stream.components_ - full.components_, axis=1)
    assert np.all(errors <= bounds), (errors, bounds)


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
    # float64 data: the merge re-expresses one half around the other's shift; two float64
    # evaluations of sums of n products each, within 2 gamma_n of the absolute products.
    absolute = np.abs(scm.X).T @ np.abs(scm.X)
    bound = 2 * (len(scm.X) + 4) * U64 * (absolute + np.abs(whole.shift).max() ** 2 * len(scm.X))
    assert np.all(np.abs(merged.gram - whole.gram) <= bound)
    differences = np.abs(scm.X - scm.X_intervened)
    difference_bound = 2 * (len(scm.X) + 4) * U64 * (differences.T @ differences)
    assert np.all(np.abs(merged.difference_gram - whole.difference_gram) <= difference_bound)
    with pytest.raises(ValueError, match="Cannot merge statistics of 3 features"):
        merged.merge(InterventionStatistics(3))


def test_float32_statistics_keep_the_covariance_under_a_large_mean(rng):
    # A large common offset: plain float32 sums of squares cancel catastrophically in
    # Z^T Z / n - m m^T (9% error on this data before the statistics were shifted).
    X = (rng.standard_normal((300_000, 3)) + 100.0).astype(np.float32)
    statistics = InterventionStatistics(3)
    statistics.add_samples(X)
    exact = X.astype(np.float64)
    n = len(X)
    # The claim: float32 round-off is that of the spread (about 1), not of the mean (100).
    # The shift is the mean of the first 65,536 rows: within 0.05 of the mean (12 standard
    # errors), so every bound below uses |X - mean| + 0.05 for |X - shift|.
    spread = np.abs(exact - exact.mean(axis=0)) + 0.05
    block_factor = (2 + 6 * np.sqrt(2**16)) * U32  # see _float32_gram_bound
    gram_bound = block_factor * _absolute_gram(spread) + (n + 4) * U64 * _absolute_gram(exact)
    assert np.all(np.abs(statistics.gram - exact.T @ exact) <= gram_bound)
    # The sums: the same bound with a column of ones for one factor.
    sum_bound = block_factor * spread.sum(0) + (n + 4) * U64 * np.abs(exact).sum(0)
    assert np.all(np.abs(statistics.sum - exact.sum(axis=0)) <= sum_bound)
    # covariance = shifted gram / n - m m^T with m = mean - shift (|m| <= 0.05): the
    # shifted gram's float32 error over n, twice the mean's error times |m|, float64 rounding.
    covariance_bound = (
        block_factor * _absolute_gram(spread) / n
        + 0.05 * np.add.outer(sum_bound, sum_bound) / n
        + 8 * U64 * _absolute_gram(spread) / n
    )
    covariance = np.cov(exact.T, bias=True)
    assert np.all(np.abs(statistics.covariance() - covariance) <= covariance_bound)
    # Unshifted float32 sums lose 9% of the covariance here (any float32 BLAS: the entries
    # of X^T X / n are 1e4 and float32 keeps 7 digits of them), far outside 1%.
    float32_gram = X.T @ X
    assert not np.allclose(float32_gram / len(X) - np.outer(X.mean(0), X.mean(0)),
                           covariance, rtol=1e-2)  # fmt: skip
    with pytest.warns(NoInvarianceWarning):
        projector = InvariantProjector(n_components=3, center=True).fit(X)
    # Weyl: each eigenvalue within ||E||_2 <= ||E||_F of the exact covariance's.
    np.testing.assert_allclose(
        projector.eigenvalues_,
        np.linalg.eigvalsh(covariance)[::-1],
        rtol=0,
        atol=np.linalg.norm(covariance_bound) + 8 * U64 * np.abs(covariance).max(),
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
    # Each part within its float32 bound around its own shift; the merge adds float64
    # re-expression terms (within the (n + 4) u64 |X|^T |X| term).
    gram_bound = _float32_gram_bound(first, a.shift) + _float32_gram_bound(second, b.shift)
    assert np.all(np.abs(merged.gram - both.T @ both) <= gram_bound)
    # The covariance is the gram's error over n against a matrix of order 1e3 (the two
    # clusters' spread), its centring losing at most the shift's digits: bound the error
    # by the gram bound over n, plus u64 times the squared mean times n for the cancellation.
    n = len(both)
    covariance_bound = gram_bound / n + 4 * (n + 4) * U64 * np.abs(both).max() ** 2
    covariance_error = np.abs(merged.covariance() - np.cov(both.T, bias=True))
    assert np.all(covariance_error <= covariance_bound)


def test_multithreaded_statistics_equal_a_single_pass(rng):
    # Three blocks of at most 65,536 rows (4.8 M values, above the 2**22 at which the work is
    # split): cut into one range of blocks per core.
    X = rng.standard_normal((150_000, 32)).astype(np.float32) + 3.0
    X_intervened = X + rng.standard_normal(X.shape).astype(np.float32)
    from skicm.projection import _available_cores, _gram_partials

    assert len(_gram_partials(X[:10], None, np.zeros(32))) == 1
    parts = _gram_partials(X, X_intervened, np.zeros(32))
    assert len(parts) == min(3, _available_cores())
    # Blocks are accumulated in float64: float32 sums across blocks would add about u32 per
    # block, invisible next to the within-block bound below until 10^8 rows, so it is checked
    # here rather than through the values.
    assert all(array.dtype == np.float64 for part in parts for array in part)
    statistics = InterventionStatistics(32)
    statistics.add_samples(X, X_intervened)
    exact, differences = X.astype(np.float64), (X - X_intervened).astype(np.float64)
    gram, difference_gram = exact.T @ exact, differences.T @ differences
    assert np.all(np.abs(statistics.gram - gram) <= _float32_gram_bound(X, statistics.shift))
    # Differences: float32 subtraction (u32 of |D|) then the same block sums, no shift.
    difference_bound = _float32_gram_bound(differences, 0.0) + 2 * U32 * _absolute_gram(differences)
    assert np.all(np.abs(statistics.difference_gram - difference_gram) <= difference_bound)
    again = InterventionStatistics(32)
    again.add_samples(X, X_intervened)
    np.testing.assert_array_equal(again.shifted_gram, statistics.shifted_gram)  # deterministic


# ------------------------------------------------------------------------ scikit-learn


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(scm, dtype):
    X, X_intervened = scm.X.astype(dtype), scm.X_intervened.astype(dtype)
    projector = InvariantProjector(n_components=4, alpha=20.0)
    projector.fit(X, X_intervened=X_intervened)
    assert projector.components_.dtype == projector.mean_.dtype == dtype
    Z = projector.transform(X)
    assert Z.dtype == projector.inverse_transform(Z).dtype == dtype
    reference = InvariantProjector(n_components=4, alpha=20.0)
    reference.fit(scm.X, X_intervened=scm.X_intervened)
    # How far float32 embeddings may move M (a bound from u32 and the data, derived in
    # _float32_perturbation; about 0.05 here against ||M||_2 = 1.7e3); zero-order sums
    # for float64, which repeats the reference computation.
    if dtype == np.float32:
        perturbation = _float32_perturbation(X, X_intervened, 20.0, projector.statistics_.shift)
    else:
        perturbation = _float64_perturbation(reference, len(X))
    # Weyl: no eigenvalue moves by more than ||M32 - M64||_2.
    assert np.abs(projector.eigenvalues_ - reference.eigenvalues_).max() <= perturbation
    # The subspace is well conditioned (gap 45 after the four invariant directions); single
    # eigenvectors much less (gaps 0.67 between them): compare each by its own bound, and
    # the projection itself by the subspace bound, in float64 so that only the fit's error
    # is measured (plus the float32 rounding of the components and of X, 2 u32 each).
    eigenvalues = reference.eigenvalues_
    errors = np.linalg.norm(projector.components_ - reference.components_, axis=1)
    assert np.all(errors <= _eigenvector_bounds(eigenvalues, 4, perturbation) + 2 * U32)
    sine = _subspace_sine(projector.components_, reference.components_)
    sine_bound = _subspace_bound(eigenvalues, 4, perturbation) + 4 * U32
    assert sine <= sine_bound
    # transform then inverse_transform is the orthogonal projection P x; in float32 each
    # of the two products of d terms adds at most gamma_d ~ d u32 of ||x||.
    rows = np.linalg.norm(scm.X, axis=1)
    projected = projector.inverse_transform(Z).astype(np.float64)
    expected = reference.inverse_transform(reference.transform(scm.X))
    d = X.shape[1]
    tolerance = rows * (sine_bound + 2 * (d + 2) * U32)
    assert np.all(np.linalg.norm(projected - expected, axis=1) <= tolerance)


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
    np.testing.assert_allclose(
        out.to_numpy(), scm.X @ projector.components_.T, rtol=0, atol=_product_tolerance(scm.X)
    )


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
    assert scores[1] > scores[2] + 0.05  # measured 0.785 vs 0.668
    projector = search.best_estimator_[0]
    assert projector.n_samples_seen_ == len(X)
    assert projector.invariance_ratio_.max() < 0.05  # measured 3.5e-4


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
    # Accuracies of the same fits on the same rows: equal unless a row lies within round-off
    # (1e-12) of a decision boundary; none does on these fixed data.
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
    _assert_same_directions(pipe["icm"], direct, len(scm.X))


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
    _assert_same_directions(pipe["icm"], expected, len(scm.X))


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
    np.testing.assert_allclose(
        projector.transform(frame), scm.X @ components.T, rtol=0, atol=_product_tolerance(scm.X)
    )


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
    _assert_same_directions(pipe[0], alone, len(scm.X))
    features = alone.transform(scm.X)
    expected = Ridge().fit(features, targets).predict(alone.transform(scm.X[:3]))
    # Same fits; were the components to differ by the eigenvector bound b, the features
    # would move by b ||x|| and Ridge's predictions by cond(F^T F + I) times that, relatively.
    bound = _eigenvector_bounds(
        alone.eigenvalues_, 4, _float64_perturbation(alone, len(scm.X))
    ).max()
    condition = np.linalg.cond(features.T @ features + np.eye(4))
    relative = 4 * condition * (bound * np.linalg.norm(scm.X, axis=1).max() + 1e-13)
    np.testing.assert_allclose(
        pipe.predict(scm.X[:3]), expected, rtol=0, atol=relative * np.abs(expected).max()
    )
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
    _assert_same_directions(stream, full, len(scm.X))


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
    _assert_same_directions(pipe[0], expected, len(scm.X))


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
                ("icm", InvariantProjector(n_components=1).set_fit_request(X_intervened=True)),
            ],
            transform_input=["X_intervened"],
        )
        pipe.fit(images, X_intervened=counterparts)
    X, X_intervened = _flatten_images(images), _flatten_images(counterparts)
    expected = InvariantProjector(n_components=1).fit(X, X_intervened=X_intervened)
    # The counterparts reached the projector embedded: the difference statistics are those
    # of the flattened pairs (float64 sums: 2 gamma_n of the absolute products).
    absolute = np.abs(X - X_intervened)
    bound = 2 * (len(X) + 4) * U64 * (absolute.T @ absolute)
    difference = np.abs(
        pipe["icm"].statistics_.difference_gram - expected.statistics_.difference_gram
    )
    assert np.all(difference <= bound)
    # One direction: M has one positive eigenvalue here, then a block of (near) zeros whose
    # eigenvectors no tolerance can pin down.
    _assert_same_directions(pipe["icm"], expected, len(images))


# ---------------------------------------------------------------- the "auto" rank rule


@pytest.fixture(scope="module")
def colored_mnist():
    from skicm.datasets import load_mnist, make_colored_mnist

    return make_colored_mnist(*load_mnist(), random_state=0)


@pytest.fixture(scope="module")
def colored_mnist_fit(colored_mnist):
    """``fit(alpha, dtype)``: the "auto" projector on the pixels, fitted once per module."""
    fitted = {}

    def fit(alpha, dtype=np.float64):
        if (alpha, dtype) not in fitted:
            fitted[alpha, dtype] = InvariantProjector(alpha=alpha).fit(
                colored_mnist.data.astype(dtype),
                X_intervened=colored_mnist.data_intervened.astype(dtype),
            )
        return fitted[alpha, dtype]

    return fit


@pytest.mark.parametrize("alpha", [0.03, 1.0, 30.0])
def test_auto_rank_is_the_same_for_float32_and_float64_pixels(
    colored_mnist, colored_mnist_fit, alpha
):
    """Real pixels (5,000 MNIST digits, DomainBed's Colored MNIST): the rank of "auto" does not
    depend on the dtype (a dtype-dependent tolerance kept 132 directions from float32 and
    161 from float64 at alpha=1)."""
    single, double = colored_mnist_fit(alpha, np.float32), colored_mnist_fit(alpha)
    from skicm.projection import count_positive_eigenvalues

    # One rule for both dtypes: positive beyond 392 * 2**-23 of the largest |eigenvalue|.
    for fitted in (single, double):
        tolerance = 392 * 2.0**-23 * np.abs(fitted.eigenvalues_).max()
        count = int(np.sum(fitted.eigenvalues_ > tolerance))
        assert fitted.n_components_ == min(count, fitted.data_rank_)
        assert count_positive_eigenvalues(fitted.eigenvalues_) == count
    # How far float32 moved M: measured exactly from the two fits' statistics, and itself
    # within the a-priori float32 bound (u32 and the pixels, _float32_perturbation).
    perturbation = np.linalg.norm(_objective(single) - _objective(double), 2)
    X32 = colored_mnist.data.astype(np.float32)
    bound = _float32_perturbation(
        X32, colored_mnist.data_intervened.astype(np.float32), alpha, single.statistics_.shift
    )
    assert perturbation <= bound
    # Weyl: every eigenvalue within the perturbation; so the two ranks can differ only by
    # eigenvalues that close to the cutoff (whose own move is 392 * 2**-23 * perturbation).
    np.testing.assert_allclose(single.eigenvalues_, double.eigenvalues_, rtol=0, atol=perturbation)
    cutoff = 392 * 2.0**-23 * np.abs(double.eigenvalues_).max()
    window = perturbation * (1 + 392 * 2.0**-23)
    ambiguous = int(np.sum(np.abs(double.eigenvalues_ - cutoff) <= window))
    assert abs(single.n_components_ - double.n_components_) <= ambiguous
    assert 20 < single.n_components_ < 300


def test_auto_rank_values_on_colored_mnist(colored_mnist_fit):
    # float64 copies of the pixels: round-off moves M by at most _float64_perturbation (about
    # 1e-8 here), far less than the distance of any eigenvalue to the cutoff (above 7e-6,
    # checked), so these counts are the same on every machine.
    counts = []
    for alpha in (0.03, 1.0, 30.0):
        fitted = colored_mnist_fit(alpha)
        cutoff = 392 * 2.0**-23 * np.abs(fitted.eigenvalues_).max()
        margin = np.abs(fitted.eigenvalues_ - cutoff).min()
        assert margin > 2 * _float64_perturbation(fitted, fitted.n_samples_seen_)
        counts.append(fitted.n_components_)
    assert counts == [280, 132, 53]


def test_auto_rank_does_not_depend_on_the_scale(colored_mnist):
    X = colored_mnist.data[:2000].astype(np.float64)
    X_intervened = colored_mnist.data_intervened[:2000].astype(np.float64)
    reference = InvariantProjector(alpha=1.0).fit(X, X_intervened=X_intervened)
    for scale in (1e-3, 1e4):
        scaled = InvariantProjector(alpha=1.0).fit(scale * X, X_intervened=scale * X_intervened)
        assert scaled.n_components_ == reference.n_components_
        np.testing.assert_allclose(
            scaled.eigenvalues_,
            scale**2 * reference.eigenvalues_,
            # Scaling rounds every entry (u64) and the sums round again: both within the
            # float64 perturbation bound, scaled like M by scale**2.
            atol=2 * scale**2 * _float64_perturbation(reference, len(X)),
        )


def test_count_positive_eigenvalues_is_the_auto_rule(colored_mnist_fit):
    from skicm.projection import count_positive_eigenvalues

    projector = colored_mnist_fit(1.0)
    assert count_positive_eigenvalues(projector.eigenvalues_) == projector.n_components_
    # The dtype argument of earlier versions is accepted and changes nothing.
    for dtype in (np.float32, np.float64):
        assert count_positive_eigenvalues(projector.eigenvalues_, dtype) == projector.n_components_
    spectrum = np.array([1.0, 5e-4, 1e-5, 0.0, -3.0])
    # tolerance = 5 * 2**-23 * 3 = 1.8e-6: 1e-5 counts, 0 does not.
    assert count_positive_eigenvalues(spectrum) == 3
    assert count_positive_eigenvalues(np.array([])) == 0


# ------------------------------------------------------- fitting from statistics, truncating

_FITTED_ARRAYS = (
    "components_",
    "eigenvalues_",
    "signal_variance_",
    "intervention_variance_",
    "invariance_ratio_",
    "mean_",
)
_FITTED_COUNTS = ("n_components_", "data_rank_", "n_samples_seen_", "n_differences_seen_")


def _assert_same_fit(actual, expected, n_terms):
    """Two projectors reached the same fitted state, within the shared atol of 1e-6.

    The two routes add the same float64 values, at most in another order, so ``M`` differs
    by at most ``_float64_perturbation`` (about 2e-8 on these data) and each eigenvector by
    the Davis-Kahan bound, checked to be below the tolerance first: 1e-6 then holds on any
    machine, and a wrong state (another rank, stale statistics, another alpha) is off by far
    more.
    """
    perturbation = _float64_perturbation(expected, n_terms)
    bounds = _eigenvector_bounds(expected.eigenvalues_, expected.n_components_, perturbation)
    assert bounds.max() < 1e-6 and perturbation < 1e-6
    for name in (*_FITTED_COUNTS, "n_features_in_", "n_components"):
        assert getattr(actual, name) == getattr(expected, name), name
    for name in _FITTED_ARRAYS:
        value, reference = getattr(actual, name), getattr(expected, name)
        assert value.dtype == reference.dtype and value.shape == reference.shape, name
        np.testing.assert_allclose(value, reference, rtol=0, atol=1e-6, err_msg=name)


def _statistics_of(X, y=None, *, X_intervened=None, deltas=None, groups=None):
    statistics = InterventionStatistics(X.shape[1])
    statistics.add_samples(X, X_intervened)
    if deltas is not None:
        statistics.add_differences(deltas)
    if groups is not None:
        statistics.add_environments(X, y, groups)
    if y is not None:
        statistics.add_labels(y)
    return statistics


def test_fit_from_merged_statistics_equals_fit(scm):
    source = _ConstantDifferences(scm.X[:500] - scm.X_intervened[:500])
    y = np.where(scm.y == 1, "dog", "cat")
    deltas = (scm.X - scm.X_intervened)[:300]
    data = {"X_intervened": scm.X_intervened, "groups": scm.environments}
    params = {"n_components": 4, "alpha": 20.0, "interventions": source}
    fitted = InvariantProjector(**params).fit(scm.X, y, deltas=deltas, **data)
    # Two workers' statistics, merged (their shifts differ: the merge re-expresses them).
    halves = np.array_split(np.arange(len(scm.X)), 2)
    parts = [
        _statistics_of(scm.X[rows], y[rows], **{name: a[rows] for name, a in data.items()})
        for rows in halves
    ]
    parts[1].add_differences(deltas)
    merged = parts[0].merge(parts[1])
    assert merged.labels == {"cat", "dog"}
    from_statistics = InvariantProjector(**params).fit_from_statistics(merged)
    assert source.calls[-1] == ["cat", "dog"]  # the labels reached the intervention source
    _assert_same_fit(from_statistics, fitted, len(scm.X))
    assert from_statistics.statistics_ is not merged  # copied
    merged.add_samples(scm.X[:10])
    assert from_statistics.n_samples_seen_ == from_statistics.statistics_.n_samples == 6000


def test_fit_from_statistics_then_partial_fit_equals_fit(scm):
    first, rest = slice(0, 2000), slice(2000, None)
    projector = InvariantProjector(n_components=4, alpha=20.0)
    projector.fit_from_statistics(
        _statistics_of(scm.X[first], X_intervened=scm.X_intervened[first])
    )
    projector.partial_fit(scm.X[rest], X_intervened=scm.X_intervened[rest])
    fitted = InvariantProjector(n_components=4, alpha=20.0)
    fitted.fit(scm.X, X_intervened=scm.X_intervened)
    _assert_same_fit(projector, fitted, len(scm.X))


def test_fit_from_statistics_keeps_the_dtype_and_forgets_column_names(scm):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(scm.X, columns=[f"clip{i}" for i in range(8)])
    projector = InvariantProjector(n_components=3, alpha=20.0)
    projector.fit(frame, X_intervened=scm.X_intervened)
    single = scm.X.astype(np.float32)
    statistics = _statistics_of(single, X_intervened=scm.X_intervened.astype(np.float32))
    assert statistics.dtype == np.float32
    projector.fit_from_statistics(statistics)
    assert projector.components_.dtype == projector.mean_.dtype == np.float32
    assert not hasattr(projector, "feature_names_in_")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "fitted with feature names" warning either
        assert projector.transform(single).dtype == np.float32
    # Statistics with one float64 batch among float32 ones are float64, as fit would be.
    statistics.merge(_statistics_of(scm.X[:10]))
    assert projector.fit_from_statistics(statistics).components_.dtype == np.float64


def _bad_width(statistics):
    statistics.shifted_gram = np.zeros((5, 5))
    return statistics


def _non_finite(statistics):
    statistics.difference_gram[1, 1] = np.inf
    return statistics


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda s: s.gram, TypeError, "statistics must be an InterventionStatistics, got ndarray"),
        (lambda s: InterventionStatistics(4), ValueError, r"no embedding \(n_samples=0\)"),
        (_bad_width, ValueError, r"statistics.shifted_gram has shape \(5, 5\) but .* is 4"),
        (_non_finite, ValueError, "statistics.difference_gram contains NaN or infinity"),
    ],
)
def test_fit_from_statistics_rejects_bad_statistics(rng, make, error, match):
    X = rng.standard_normal((20, 4))
    projector = InvariantProjector(n_components=2).fit(X, X_intervened=X + 1)
    before = pickle.dumps(projector)
    with pytest.raises(error, match=match):
        projector.fit_from_statistics(make(_statistics_of(X, X_intervened=X[::-1])))
    assert pickle.dumps(projector) == before


def test_fit_from_statistics_rejects_a_width_the_parameters_do_not_fit(rng):
    statistics = _statistics_of(rng.standard_normal((20, 4)), X_intervened=np.zeros((20, 4)))
    with pytest.raises(ValueError, match="n_components=5 must be between 1 and n_features=4"):
        InvariantProjector(n_components=5).fit_from_statistics(statistics)
    projector = InvariantProjector(interventions=_ConstantDifferences(np.ones((3, 5))))
    with pytest.raises(ValueError, match=r"interventions\.differences\(y\) has 5 features"):
        projector.fit_from_statistics(statistics)
    assert not hasattr(projector, "n_features_in_")  # a failed first fit leaves no trace


@pytest.fixture(scope="module")
def full_projector(scm):
    """All eight directions of the SCM, fitted with environments and counterparts."""
    projector = InvariantProjector(n_components=8, alpha=20.0)
    return projector.fit(scm.X, scm.y, X_intervened=scm.X_intervened, groups=scm.environments)


@pytest.mark.parametrize("n_components", [1, 3, 4, 8, "auto"])
def test_truncated_equals_a_fresh_fit(scm, full_projector, n_components):
    truncated = full_projector.truncated(n_components)
    fresh = InvariantProjector(n_components=n_components, alpha=20.0)
    fresh.fit(scm.X, scm.y, X_intervened=scm.X_intervened, groups=scm.environments)
    _assert_same_fit(truncated, fresh, len(scm.X))
    assert truncated.get_params() == fresh.get_params()
    bound = _eigenvector_bounds(
        fresh.eigenvalues_, fresh.n_components_, _float64_perturbation(fresh, len(scm.X))
    ).max()
    atol = bound * np.linalg.norm(scm.X, axis=1).max() + _product_tolerance(scm.X)
    np.testing.assert_allclose(truncated.transform(scm.X), fresh.transform(scm.X), atol=atol)
    assert full_projector.n_components_ == 8 and full_projector.n_components == 8


def test_truncated_leaves_the_original_untouched(scm, full_projector):
    with sklearn.config_context(enable_metadata_routing=True):
        original = clone(full_projector).set_fit_request(groups=True)
        original.fit(scm.X, scm.y, X_intervened=scm.X_intervened, groups=scm.environments)
        original.set_output(transform="default")
        before = pickle.dumps(original)
        truncated = original.truncated(3)
        for name in ("components_", "eigenvalues_", "mean_", "signal_variance_"):
            getattr(truncated, name)[0] = 99.0
        truncated.set_output(transform="pandas").set_fit_request(groups=False)
        truncated.partial_fit(scm.X[:100], X_intervened=scm.X_intervened[:100])
        assert truncated.n_samples_seen_ == 6100
        assert pickle.dumps(original) == before
        assert original.get_metadata_routing().fit.requests["groups"] is True


def test_truncated_computes_no_eigendecomposition(full_projector, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("truncated must reuse the fitted eigendecomposition")

    for name in ("eigh", "eigvalsh", "eig", "svd"):
        monkeypatch.setattr(np.linalg, name, forbidden)
    assert full_projector.truncated(2).n_components_ == 2


def test_truncated_cannot_add_directions(scm, full_projector):
    four = full_projector.truncated(4)
    with pytest.raises(ValueError, match=r"needs 5 directions but this projector holds "
                       r"n_components_=4: truncation only lowers the rank"):  # fmt: skip
        four.truncated(5)
    with pytest.raises(ValueError, match="n_components=9 must be between 1 and n_features=8"):
        full_projector.truncated(9)
    with pytest.raises(
        ValueError, match=r"'n_components' parameter of InvariantProjector\.truncated"
    ):
        full_projector.truncated(0)
    with pytest.raises(sklearn.exceptions.NotFittedError):
        InvariantProjector().truncated(2)


# ------------------------------------------------------------- the rank of the training data


def test_an_integer_rank_above_the_rows_warns_and_keeps_the_data_rank(rng):
    X = rng.standard_normal((30, 64))
    X_intervened = X + rng.standard_normal((30, 64))
    with pytest.warns(RankWarning, match=r"n_components=40 exceeds .* \(30 rows: rank 30\): "
                      r"kept n_components_=30"):  # fmt: skip
        projector = InvariantProjector(n_components=40).fit(X, X_intervened=X_intervened)
    assert projector.n_components_ == projector.data_rank_ == 30
    assert projector.transform(X).shape == (30, 30)
    centred = InvariantProjector(n_components=30, center=True)
    with pytest.warns(RankWarning, match=r"\(30 rows, centred: rank 29\)"):
        assert centred.fit(X, X_intervened=X_intervened).n_components_ == 29
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankWarning)
        exact = InvariantProjector(n_components=30).fit(X, X_intervened=X_intervened)
    # The kept directions are those a fit at the data rank finds: nothing is invented.
    np.testing.assert_array_equal(exact.components_, projector.components_)


def test_the_data_rank_is_the_numerical_rank_not_only_the_rows(rng):
    # 200 rows that span only 5 directions of 64.
    X = rng.standard_normal((200, 5)) @ rng.standard_normal((5, 64))
    X_intervened = X + rng.standard_normal((200, 5)) @ rng.standard_normal((5, 64))
    with pytest.warns(RankWarning, match=r"n_components=8 .*\(200 rows: rank 5\)"):
        projector = InvariantProjector(n_components=8).fit(X, X_intervened=X_intervened)
    assert projector.data_rank_ == projector.n_components_ == 5


def test_auto_rank_never_exceeds_the_rows(rng):
    # Counterparts at half scale and alpha just under 4: M = S - alpha I = 1e-12 S cancels
    # almost exactly, so round-off of S and alpha I (about u64 ||S||) dwarfs the "auto"
    # tolerance (64 * 2**-23 * 1e-12 ||S||): without the data-rank cap, noise eigenvalues of
    # the 54 directions outside the 10 rows' span count as positive.
    # (fit_from_statistics: the d x d eigendecomposition; fit solves in the rows' span, where
    # those 54 directions are exact zeros.)
    X = rng.standard_normal((10, 64))
    statistics = InterventionStatistics(64)
    statistics.add_samples(X, 0.5 * X)
    projector = InvariantProjector(alpha=4 * (1 - 1e-12)).fit_from_statistics(statistics)
    in_span = InvariantProjector(alpha=4 * (1 - 1e-12)).fit(X, X_intervened=0.5 * X)
    assert count_positive_eigenvalues(projector.eigenvalues_) > 10  # what the cap prevents
    assert count_positive_eigenvalues(in_span.eigenvalues_) <= 10
    assert in_span.n_components_ == in_span.data_rank_ == 10
    assert projector.data_rank_ == 10
    assert projector.n_components_ == 10
    with pytest.warns(RankWarning, match="n_components=12"):
        assert projector.truncated(12).n_components_ == 10
    assert projector.truncated("auto").n_components_ == 10


def test_a_small_first_batch_is_capped_until_more_rows_arrive(scm):
    projector = InvariantProjector(n_components=6, alpha=20.0)
    with pytest.warns(RankWarning, match="n_components=6 .*4 rows"):
        projector.partial_fit(scm.X[:4], X_intervened=scm.X_intervened[:4])
    assert projector.n_components_ == 4
    projector.partial_fit(scm.X[4:], X_intervened=scm.X_intervened[4:])
    assert projector.n_components_ == 6


def test_a_rank_above_the_rows_from_statistics_warns_too(rng):
    X = rng.standard_normal((5, 16))
    statistics = _statistics_of(X, X_intervened=X[::-1])
    with pytest.warns(RankWarning, match="n_components=7 .*5 rows"):
        projector = InvariantProjector(n_components=7).fit_from_statistics(statistics)
    assert projector.n_components_ == 5


# ------------------------------------------------------------- array parameters name themselves


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("deltas", np.ones(4), r"deltas must be two-dimensional .* shape \(4,\)"),
        ("deltas", np.ones((2, 2, 4)), r"deltas must be two-dimensional .* shape \(2, 2, 4\)"),
        ("deltas", [[1.0, 2.0], [3.0]], "deltas could not be read as an array"),
        ("deltas", [["a"] * 4], "deltas could not be read as an array"),
        ("deltas", np.full((2, 4), np.nan), "Input deltas contains NaN"),
        ("X_intervened", np.ones(4), r"X_intervened must be two-dimensional .* shape \(4,\)"),
        ("X_intervened", [["a"] * 4] * 20, "X_intervened could not be read as an array"),
        ("groups", np.ones((20, 2)), r"groups must be one-dimensional .* shape \(20, 2\)"),
        ("groups", np.full(20, np.nan), "Input groups contains NaN"),
        ("y", np.ones((20, 2)), r"y must be one-dimensional .* shape \(20, 2\)"),
    ],
)
def test_bad_array_parameters_are_named(rng, name, value, match):
    X = rng.standard_normal((20, 4))
    arguments = {"y": np.zeros(20), "groups": np.zeros(20), name: value}
    y = arguments.pop("y")
    with pytest.raises(ValueError, match=match):
        InvariantProjector().fit(X, y, **arguments)
    with pytest.raises(ValueError, match=match):
        InvariantProjector().partial_fit(X, y, **arguments)


def test_statistics_name_the_width_they_expect(rng):
    statistics = InterventionStatistics(8)
    with pytest.raises(ValueError, match=r"X has shape \(5, 10\) .* n_features=8"):
        statistics.add_samples(rng.standard_normal((5, 10)))
    with pytest.raises(ValueError, match=r"differences has shape \(3,\) .* n_features=8"):
        statistics.add_differences(np.ones(3))
    with pytest.raises(ValueError, match=r"X_intervened has shape \(5, 7\) but X has shape"):
        statistics.add_samples(rng.standard_normal((5, 8)), rng.standard_normal((5, 7)))
    with pytest.raises(TypeError, match="Cannot merge dict into InterventionStatistics"):
        statistics.merge({"n_features": 8})
    assert statistics.n_samples == 0 and statistics.shift is None


def test_no_module_outside_projection_writes_the_projector_state():
    """Other modules fit through fit / partial_fit / fit_from_statistics / truncated: none calls
    a private method of InvariantProjector or assigns a fitted attribute of another object."""
    import ast
    from pathlib import Path

    import skicm

    # Its own private methods; scikit-learn's protocol names (shared by every estimator) aside.
    protocol = {"_parameter_constraints", "_n_features_out", "_sklearn_auto_wrap_output_keys"}
    private = {
        name
        for name in vars(InvariantProjector)
        if name.startswith("_") and not name.startswith(("__", "_InvariantProjector__"))
    } - protocol | {"_labels_seen"}
    assert {"_solve", "_update"} <= private
    fitted = {*_FITTED_ARRAYS, *_FITTED_COUNTS, "statistics_"}
    root = Path(skicm.__file__).parent
    offences = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "projection.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute) and node.attr in private:
                offences.append(f"{path.relative_to(root)}:{node.lineno} uses .{node.attr}")
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr in fitted
                    and not (isinstance(target.value, ast.Name) and target.value.id == "self")
                ):
                    offences.append(f"{path.relative_to(root)}:{node.lineno} sets .{target.attr}")
    assert offences == []


@pytest.mark.parametrize("center", [False, True])
def test_fewer_rows_than_features_solve_in_their_span(center, monkeypatch):
    """Rows (samples, counterparts, deltas) fewer than the features: ``fit`` eigendecomposes
    the r x r problem in their span; the fitted state is the full d x d eigendecomposition's
    (``fit_from_statistics`` on the same sums keeps it), within the solvers' round-off."""
    rng = np.random.default_rng(3)
    n, d, alpha = 30, 160, 2.0
    # Columns of decreasing scale: well separated eigenvalues (the gaps below are O(1)).
    X = rng.normal(size=(n, d)) * np.linspace(3.0, 0.5, d)
    X_intervened = X + 0.3 * rng.normal(size=(n, d))
    deltas = 0.5 * rng.normal(size=(5, d))
    statistics = InterventionStatistics(d)
    statistics.add_samples(X, X_intervened)
    statistics.add_differences(deltas)

    sizes = []
    eigh = np.linalg.eigh

    def recording_eigh(matrix, *args, **kwargs):
        sizes.append(matrix.shape[0])
        return eigh(matrix, *args, **kwargs)

    monkeypatch.setattr(np.linalg, "eigh", recording_eigh)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankWarning)
        in_span = InvariantProjector(n_components=d, alpha=alpha, center=center).fit(
            X, X_intervened=X_intervened, deltas=deltas
        )
        assert sizes == [2 * n + 5]  # the span's problem only, no d x d one
        full = InvariantProjector(n_components=d, alpha=alpha, center=center)
        full.fit_from_statistics(statistics)
        assert sizes[1:] == [d]

    # Both solve the same M (the same sums, bit for bit). Its float64 round-off lies partly
    # outside the rows' span, which the span's solver drops: at most the perturbation bound of
    # sums of n terms (_float64_perturbation); each solver adds a backward error of about
    # d u64 ||M|| (the rows' SVD and the symmetric eigensolvers; 10 d covers the constants).
    scale = _objective_scale(full)
    error = _float64_perturbation(full, n_terms=n + 5) + 2 * 10 * d * U64 * scale
    # Weyl: each eigenvalue moves by at most ||E||_2.
    np.testing.assert_allclose(in_span.eigenvalues_, full.eigenvalues_, rtol=0, atol=error)
    assert in_span.data_rank_ == full.data_rank_ == n - int(center)
    assert in_span.n_components_ == full.n_components_ == full.data_rank_
    # Davis-Kahan: the first k eigenvectors span subspaces at angle sin <= ||E|| / gap_k.
    values = full.eigenvalues_
    positive = count_positive_eigenvalues(values)
    assert positive == n - int(center)  # alpha * (differences) does not kill a direction here
    gaps = values[:positive] - values[1 : positive + 1]
    assert gaps.min() > 1e3 * error  # the bounds below are meaningful
    for k in (1, 5, positive):
        sine = _max_sine(in_span.components_[:k], full.components_[:k])
        assert sine <= error / gaps[k - 1]
    # Each direction (angle <= error / its smallest neighbouring gap) moves its variances
    # v^T S v and v^T I v by at most 2 sin ||S|| (resp. ||I||), both below ``scale``.
    own_gap = np.minimum(gaps, np.concatenate([[np.inf], gaps[:-1]]))
    for name in ("signal_variance_", "intervention_variance_"):
        difference = np.abs(getattr(in_span, name)[:positive] - getattr(full, name)[:positive])
        assert np.all(difference <= 2 * scale * error / own_gap)
    # Past the positive eigenvalues come M's null space (outside the span) and its negative
    # directions: any orthonormal basis of them is an eigenbasis; the components stay
    # orthonormal (to the SVD's, the QR's and the solver's 10 d u64).
    gram = in_span.components_ @ in_span.components_.T
    np.testing.assert_allclose(gram, np.eye(in_span.n_components_), rtol=0, atol=10 * d * U64)


def test_directions_past_the_positive_eigenvalues_are_eigenvectors_of_m_too():
    """A large alpha leaves fewer positive eigenvalues than the data's rank: asked for every
    direction, the span's solve adds eigenvectors of eigenvalue 0 (orthogonal to every row)
    and then the negative ones, orthonormal, as the full eigendecomposition would."""
    rng = np.random.default_rng(4)
    n, d, alpha = 20, 120, 50.0
    X = rng.normal(size=(n, d)) * np.linspace(3.0, 0.5, d)
    # The first ten counterparts are zero, the others the rows themselves: the differences
    # are the first ten rows, so M = (sum of the other rows' X_i X_i^T + (1 - alpha) sum of
    # the first ten's) / n has ten positive and ten negative eigenvalues in the rows' span.
    X_intervened = X.copy()
    X_intervened[:10] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankWarning)
        projector = InvariantProjector(n_components=d, alpha=alpha)
        projector.fit(X, X_intervened=X_intervened)
    positive = count_positive_eigenvalues(projector.eigenvalues_)
    assert 0 < positive < projector.n_components_ == projector.data_rank_ == n
    statistics = projector.statistics_
    M = statistics.gram / n - alpha * statistics.difference_gram / n
    # Eigenpair residuals ||M v - (v^T M v) v|| are round-off: 10 d u64 ||M|| (SVD, QR, solver).
    error = 10 * d * U64 * np.linalg.norm(M, 2)
    C = projector.components_
    np.testing.assert_allclose(C @ C.T, np.eye(n), rtol=0, atol=10 * d * U64)
    rayleigh = np.einsum("ij,jk,ik->i", C, M, C)
    residuals = np.linalg.norm(C @ M - rayleigh[:, None] * C, axis=1)
    assert np.all(residuals <= error)
    assert np.all(rayleigh[positive:] <= error)  # zero, then negative
    assert np.all(np.diff(rayleigh) <= error)  # in decreasing order
    # The zero directions are orthogonal to every row the projector was fitted on.
    zero = np.abs(rayleigh) <= error
    assert zero.sum() > 0
    rows = np.vstack([X, X_intervened])
    assert np.abs(rows @ C[zero].T).max() <= 10 * d * U64 * np.abs(rows).max() * np.sqrt(d)
