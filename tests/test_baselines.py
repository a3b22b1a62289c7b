"""The baselines against references computed here: closed forms, the released loops, the
concept-erasure package's own eraser, LogisticRegression with explicit sample weights."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import sklearn
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold, PredefinedSplit
from sklearn.pipeline import make_pipeline

from skicm import CLIPEmbedder, InvariantProjector, TextInterventions, ZeroShotClassifier
from skicm.baselines import (
    ConceptErasure,
    GroupBalancedProbe,
    OrthogonalProjection,
    PromptProjection,
    RoboShot,
    WiSEHead,
)
from skicm.baselines._concept_erasure import _leace_fitter
from skicm.exceptions import NoInvarianceWarning
from skicm.metrics import get_scorer

EPS64 = np.finfo(np.float64).eps
D = 16


@pytest.fixture(scope="module")
def embedder(tiny_clip_name):
    return CLIPEmbedder(tiny_clip_name, pretrained=None, device="cpu", progress=False)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, D)), rng.normal(size=(3, D)), rng.normal(size=(4, 2, D))


def _unit(matrix):
    return matrix / np.linalg.norm(matrix, axis=-1, keepdims=True)


def _tolerance(matrix, size):
    """Forward error bound of a solve with ``matrix``: cond * size * eps64, times 10 slack.

    A backward-stable solve (LU, SVD) of a system of condition number ``cond`` in float64
    has a relative forward error of order ``cond * size * eps``; the 10 covers the few extra
    products each side does. The entries compared here are O(1).
    """
    return 10 * np.linalg.cond(matrix) * size * EPS64


# --- Orth-Proj / Orth-Cali ---------------------------------------------------------------


def test_orth_proj_is_the_closed_form(data):
    X, spurious, _ = data
    B = _unit(spurious).T  # d x k, one normalised prompt embedding per column
    gram = B.T @ B
    expected = np.eye(D) - B @ np.linalg.inv(gram) @ B.T
    fitted = OrthogonalProjection(spurious).fit(X)
    tol = _tolerance(gram, D)
    np.testing.assert_allclose(fitted.projection_, expected, rtol=0, atol=tol)
    np.testing.assert_allclose(fitted.transform(X), X @ expected.T, rtol=0, atol=tol * 10)
    # The spurious directions are gone, and the map is a projection.
    assert np.abs(fitted.transform(spurious)).max() < tol * 10
    np.testing.assert_allclose(
        fitted.projection_ @ fitted.projection_, fitted.projection_, atol=tol
    )


def test_orth_cali_is_the_released_closed_form(data):
    X, spurious, pairs = data
    B = _unit(spurious).T
    P0 = np.eye(D) - B @ np.linalg.inv(B.T @ B) @ B.T
    # debias_vl's get_A / get_M, written out: the mean over pairs of the difference outer
    # products of the normalised embeddings.
    M = np.zeros((D, D))
    for z_i, z_j in _unit(pairs):
        M += np.outer(z_i, z_i) + np.outer(z_j, z_j) - np.outer(z_i, z_j) - np.outer(z_j, z_i)
    M /= len(pairs)
    G = 1000.0 * M + np.eye(D)
    expected = P0 @ np.linalg.inv(G)
    fitted = OrthogonalProjection(spurious, calibrated=True, calibration_pairs=pairs).fit(X)
    np.testing.assert_allclose(fitted.projection_, expected, rtol=0, atol=_tolerance(G, D))
    # The calibration pulls each pair together: their images are much closer than before.
    gaps = _unit(pairs)[:, 0] - _unit(pairs)[:, 1]
    before = np.linalg.norm(gaps @ P0.T, axis=1)
    after = np.linalg.norm(gaps @ fitted.projection_.T, axis=1)
    assert np.all(after < 0.1 * before)


def test_orth_proj_from_prompts_and_text_interventions(embedder):
    prompts = ["a photo of water.", "a photo of land.", "a photo of a forest."]
    X = embedder.encode_text(["a photo of a cat.", "a photo of a dog."])
    from_text = OrthogonalProjection(prompts, encoder=embedder).fit(X)
    from_array = OrthogonalProjection(embedder.encode_text(prompts)).fit(X)
    np.testing.assert_allclose(from_text.projection_, from_array.projection_, atol=1e-12)

    interventions = TextInterventions(
        embedder, domain_templates=["a photo of a {}.", "a sketch of a {}."]
    )
    fitted = OrthogonalProjection(interventions=interventions).fit(X, ["cat", "dog"])
    differences = interventions.differences(np.array(["cat", "dog"], dtype=object))
    # float32 text embeddings: the removed differences are zero to float32 round-off of
    # entries of size ~1 summed over D terms.
    residual = differences.astype(np.float64) @ fitted.projection_.T
    assert np.abs(residual).max() < D * np.finfo(np.float32).eps * np.abs(differences).max()
    # Orth-Cali takes the interventions' domain prompt pairs as its calibration pairs. Their
    # differences are the rows already removed, so P0 (lambda M + I)^-1 = P0: G^-1 maps
    # span(B) into itself and is the identity on its complement. The pairs are normalised
    # in float64 and B's rows are float32 differences, so the pairs leave span(B) by float32
    # rounding (eps32 relative); lambda * M turns that into at most ~ lambda * eps32.
    cali = OrthogonalProjection(interventions=interventions, calibrated=True)
    cali.fit(X, ["cat", "dog"])
    lam_eps32 = 1000.0 * np.finfo(np.float32).eps
    np.testing.assert_allclose(cali.projection_, fitted.projection_, rtol=0, atol=lam_eps32)
    # With other spurious prompts, the same pairs do calibrate.
    with_prompts = OrthogonalProjection(
        prompts,
        encoder=embedder,
        calibrated=True,
        calibration_pairs=interventions.domain_prompt_pairs(["cat", "dog"]),
    ).fit(X)
    assert np.abs(with_prompts.projection_ - from_text.projection_).max() > 0.1
    gaps = differences.astype(np.float64)
    assert np.linalg.norm(gaps @ with_prompts.projection_.T) < 0.1 * np.linalg.norm(
        gaps @ from_text.projection_.T
    )


def test_orth_proj_in_zero_shot_ranks_classes_as_the_released_code(embedder):
    rng = np.random.default_rng(1)
    images = embedder.transform(rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8))
    spurious = embedder.encode_text(["water", "land"]).astype(np.float64)
    classes = embedder.encode_text(["a photo of a cat.", "a photo of a dog."]).astype(np.float64)
    zero_shot = ZeroShotClassifier(
        ["cat", "dog"], class_embeddings=classes, projector=OrthogonalProjection(spurious)
    ).fit(images.astype(np.float64))
    # chingyaoc/debias_vl: the class prompts are projected and normalised, images are not.
    B = _unit(spurious).T
    P0 = np.eye(B.shape[0]) - B @ np.linalg.inv(B.T @ B) @ B.T
    released = np.argmax(_unit(images) @ _unit(_unit(classes) @ P0.T).T, axis=1)
    assert zero_shot.predict(images.astype(np.float64)).tolist() == [
        ["cat", "dog"][i] for i in released
    ]


def test_orth_proj_errors_and_identity(embedder, data):
    X, spurious, _ = data
    with pytest.raises(ValueError, match="spurious has 16 features but X has 5"):
        OrthogonalProjection(spurious).fit(X[:, :5])
    with pytest.raises(ValueError, match="calibrated=True needs calibration_pairs"):
        OrthogonalProjection(spurious, calibrated=True).fit(X)
    with pytest.raises(ValueError, match=r"encoder \(for spurious\) is required"):
        OrthogonalProjection(["water"]).fit(X)
    with pytest.raises(ValueError, match=r"shape \(n_pairs, 2, n_features\)"):
        OrthogonalProjection(spurious, calibrated=True, calibration_pairs=np.ones((3, D))).fit(X)
    with pytest.warns(NoInvarianceWarning, match="identity"):
        identity = OrthogonalProjection().fit(X)
    np.testing.assert_array_equal(identity.transform(X), X)


def test_text_baselines_in_a_search_with_the_worst_group_scorer(embedder):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    X = embedder.transform(images).astype(np.float64)
    y, place = np.tile([0, 1], 12), np.repeat([0, 1], 12)
    pipe = make_pipeline(
        OrthogonalProjection(
            ["a photo of water.", "a photo of land."],
            encoder=embedder,
            calibrated=True,
            calibration_pairs=[("a bird on water.", "a bird on land.")],
        ),
        LogisticRegression(),
    )
    grid = {"orthogonalprojection__calibration_strength": [10.0, 1000.0]}
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(
            pipe,
            grid,
            cv=GroupKFold(2),
            scoring=get_scorer("worst_group_accuracy"),
            error_score="raise",
        ).fit(X, y, groups=2 * y + place)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    restored = pickle.loads(pickle.dumps(search.best_estimator_))
    np.testing.assert_array_equal(restored.predict(X), search.predict(X))


# --- PRISM-mini -------------------------------------------------------------------------


def test_prism_mini_is_the_closed_form_on_normalised_embeddings(data):
    X, spurious, _ = data
    V = _unit(spurious).T
    gram = V.T @ V
    P = np.eye(D) - V @ np.linalg.inv(gram) @ V.T
    fitted = PromptProjection(spurious).fit(X)
    tol = 10 * _tolerance(gram, D)
    np.testing.assert_allclose(fitted.transform(X), _unit(X) @ P, rtol=0, atol=tol)
    assert fitted.transform(X.astype(np.float32)).dtype == np.float32


def test_prism_mini_attribute_descriptions_and_dependent_ones(embedder):
    X = embedder.encode_text(["a photo of a bird."]).astype(np.float64)
    water = ["a photo of water.", "a photo of the ocean."]
    land = ["a photo of land."]
    fitted = PromptProjection({"water": water, "land": land}, encoder=embedder).fit(X)
    directions = _unit(embedder.encode_text(water + land).astype(np.float64))
    averaged = np.stack([_unit(directions[:2].mean(0)), directions[2]])
    assert fitted.spurious_basis_.shape == (X.shape[1], 2)
    # Both attribute directions are removed (float32 embeddings: tolerance as above).
    assert np.abs(averaged @ fitted.projection_).max() < X.shape[1] * np.finfo(np.float32).eps
    # A description repeated (dependent columns): the released inverse fails; the basis drops it.
    twice = np.vstack([directions[:1], directions[:1]])
    assert PromptProjection(twice).fit(X).spurious_basis_.shape == (X.shape[1], 1)


# --- RoboShot ---------------------------------------------------------------------------


def _roboshot_released(X, harmful, helpful):
    """SprocketLab/roboshot run.py, written out: QR bases, reject then boost, renormalising."""
    x = _unit(X)
    q_spurious = np.linalg.qr((harmful[:, 0] - harmful[:, 1]).T)[0].T
    for v in q_spurious:
        cos = (x @ v) / np.linalg.norm(v)
        x = _unit(x - cos[:, None] * v[None, :] / np.linalg.norm(v))
    q_true = np.linalg.qr((helpful[:, 0] - helpful[:, 1]).T)[0].T
    for v in q_true:
        cos = (x @ v) / np.linalg.norm(v)
        x = _unit(x + cos[:, None] * v[None, :] / np.linalg.norm(v))
    return x


def test_roboshot_matches_the_released_loop(data):
    X, _, pairs = data
    harmful, helpful = pairs[:3], pairs[3:]
    fitted = RoboShot(harmful, helpful).fit(X)
    expected = _roboshot_released(X, _unit(harmful), _unit(helpful))
    # QR and SVD bases of 3 independent random directions in 16-d: both orthonormal to
    # ~D * eps64; the maps agree to that, times the 3 + 1 sequential steps.
    np.testing.assert_allclose(fitted.transform(X), expected, rtol=0, atol=100 * D * EPS64)
    assert np.allclose(np.linalg.norm(fitted.transform(X), axis=1), 1.0)
    # Harmful directions rejected: nothing of them is left before the boost.
    gaps = _unit(harmful)[:, 0] - _unit(harmful)[:, 1]
    assert np.abs(gaps @ fitted.harmful_basis_ @ fitted.harmful_basis_.T - gaps).max() < 1e-12


def test_roboshot_text_pairs(embedder):
    X = embedder.encode_text(["a photo of a bird.", "a photo of a boat."]).astype(np.float64)
    harmful = [("a bird on water.", "a bird on land.")]
    fitted = RoboShot(harmful, encoder=embedder).fit(X)
    embedded = _unit(embedder.encode_text(list(harmful[0])).astype(np.float64))
    expected = _roboshot_released(X, embedded[None], np.zeros((0, 2, X.shape[1])))
    np.testing.assert_allclose(fitted.transform(X), expected, atol=1e-12)
    with pytest.raises(ValueError, match=r"harmful_pairs must hold \(text, text\) pairs"):
        RoboShot([("only one text",)], encoder=embedder).fit(X)


# --- LEACE --------------------------------------------------------------------------------


def _concept_data(seed=0, n=300):
    rng = np.random.default_rng(seed)
    concept = rng.integers(0, 3, n)
    shift = rng.normal(size=(3, 6)) * 2
    return rng.normal(size=(n, 6)) + shift[concept], concept


def test_leace_matches_the_package_eraser():
    X, concept = _concept_data()
    fitted = ConceptErasure().fit(X, groups=concept)
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(concept)).to(torch.float64)
    eraser = _leace_fitter().fit(torch.from_numpy(X), one_hot).eraser
    expected = eraser(torch.from_numpy(X)).numpy()
    # The same float64 arithmetic, the product only reassociated: round-off of size
    # ~ n_features * eps * |X|.
    np.testing.assert_allclose(
        fitted.transform(X), expected, rtol=0, atol=100 * X.shape[1] * EPS64 * np.abs(X).max()
    )


def test_leace_leaves_no_linear_trace_of_the_concept():
    X, concept = _concept_data()
    erased = ConceptErasure().fit_transform(X, groups=concept)
    one_hot = np.eye(3)[concept]
    cross = (erased - erased.mean(0)).T @ (one_hot - one_hot.mean(0)) / len(X)
    # Zero up to float64 round-off of sums of n products of size |X|.
    assert np.abs(cross).max() < 100 * len(X) * EPS64 * np.abs(X).max()
    before = (X - X.mean(0)).T @ (one_hot - one_hot.mean(0)) / len(X)
    assert np.abs(before).max() > 0.5
    # float32 preserved, the concept taken from y when asked.
    assert ConceptErasure().fit(X, groups=concept).transform(X.astype(np.float32)).dtype == (
        np.float32
    )
    np.testing.assert_allclose(
        ConceptErasure(concept="y").fit(X, concept).transform(X), erased, atol=1e-12
    )


def test_leace_groups_are_routed_like_the_projector():
    X, concept = _concept_data()
    y = (X[:, 0] > 0).astype(int)
    with pytest.raises(ValueError, match=r"set_fit_request\(groups=True\)"):
        ConceptErasure().fit(X, y)
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipeline(ConceptErasure().set_fit_request(groups=True), LogisticRegression())
        search = GridSearchCV(
            pipe, {"logisticregression__C": [1.0]}, cv=GroupKFold(3), error_score="raise"
        ).fit(X, y, groups=concept)
    # Refitted on all rows with all the groups: the same eraser as a direct fit.
    direct = ConceptErasure().fit(X, groups=concept)
    np.testing.assert_allclose(
        search.best_estimator_[0].transform(X), direct.transform(X), atol=1e-12
    )
    restored = pickle.loads(pickle.dumps(direct))
    np.testing.assert_array_equal(restored.transform(X), direct.transform(X))
    with pytest.warns(NoInvarianceWarning, match="one value of the concept"):
        single = ConceptErasure().fit(X, groups=np.zeros(len(X)))
    np.testing.assert_allclose(single.transform(X), X, atol=1e-12)


# --- DFR ----------------------------------------------------------------------------------


def _spurious(seed=0, n=800):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    place = np.where(rng.random(n) < 0.95, y, 1 - y)
    X = np.column_stack([y + rng.normal(0, 0.8, n), 2.0 * place + rng.normal(0, 0.1, n)])
    return X, y, 2 * y + place


def test_dfr_weights_equal_logistic_regression_with_explicit_weights():
    X, y, groups = _spurious()
    counts = {g: np.sum(groups == g) for g in np.unique(groups)}
    weights = np.array([len(y) / (len(counts) * counts[g]) for g in groups])
    # tol 1e-10: both fits stop at a gradient below 1e-10 of the same strongly convex loss
    # (curvature >= 1/C = 1), so their solutions differ by less than ~1e-10 each.
    lr = LogisticRegression(tol=1e-10, max_iter=10_000)
    expected = clone(lr).fit(X, y, sample_weight=weights)
    fitted = GroupBalancedProbe(lr, balance="weights").fit(X, y, groups=groups)
    np.testing.assert_allclose(fitted.coef_, expected.coef_, rtol=0, atol=1e-7)
    np.testing.assert_allclose(fitted.intercept_, expected.intercept_, rtol=0, atol=1e-7)


class _RecordingLogisticRegression(LogisticRegression):
    """LogisticRegression that keeps the labels it was fitted on (to count the groups)."""

    def fit(self, X, y, sample_weight=None):
        self.seen_X_ = np.asarray(X).copy()
        return super().fit(X, y, sample_weight=sample_weight)


def test_dfr_subsamples_balance_groups_and_average():
    X, y, groups = _spurious()
    smallest = np.bincount(groups).min()
    probe = GroupBalancedProbe(_RecordingLogisticRegression(), n_retrains=3, random_state=0)
    fitted = probe.fit(X, y, groups=groups)
    # Balanced data needs no subsampling: one retrain is LogisticRegression on all rows.
    balanced = np.concatenate([np.flatnonzero(groups == g)[:smallest] for g in range(4)])
    on_balanced = GroupBalancedProbe(n_retrains=3, random_state=0).fit(
        X[balanced], y[balanced], groups=groups[balanced]
    )
    reference = LogisticRegression().fit(X[np.sort(balanced)], y[np.sort(balanced)])
    np.testing.assert_allclose(on_balanced.coef_, reference.coef_, atol=1e-12)
    # Every retrain of the unbalanced fit saw `smallest` rows of every group.
    assert fitted.estimator_.seen_X_.shape[0] == 4 * smallest
    assert fitted.group_counts_ == {g: int(np.sum(groups == g)) for g in range(4)}
    # DFR's point: the worst group gains over the plain probe.
    from skicm.metrics import worst_group_accuracy

    X_test, y_test, groups_test = _spurious(seed=1)
    plain = LogisticRegression().fit(X, y).predict(X_test)
    dfr = fitted.predict(X_test)
    assert worst_group_accuracy(y_test, dfr, groups=groups_test) > (
        worst_group_accuracy(y_test, plain, groups=groups_test) + 0.2
    )


def test_dfr_groups_are_routed_in_a_search():
    X, y, groups = _spurious()
    with sklearn.config_context(enable_metadata_routing=True):
        probe = GroupBalancedProbe(random_state=0).set_fit_request(groups=True)
        search = GridSearchCV(
            make_pipeline(probe),
            {"groupbalancedprobe__n_retrains": [2]},
            cv=PredefinedSplit(np.arange(len(y)) % 2),  # groups go to the probe only
            error_score="raise",
        ).fit(X, y, groups=groups)
    direct = GroupBalancedProbe(n_retrains=2, random_state=0).fit(X, y, groups=groups)
    np.testing.assert_array_equal(search.best_estimator_[-1].coef_, direct.coef_)


def test_dfr_errors():
    X, y, groups = _spurious()
    with pytest.raises(ValueError, match=r"needs groups in fit.*set_fit_request\(groups=True\)"):
        GroupBalancedProbe().fit(X, y)
    with pytest.raises(ValueError, match="misses a class"):
        GroupBalancedProbe(random_state=0).fit(X, y, groups=y * 0 + (np.arange(len(y)) < 2))
    with pytest.raises(ValueError, match="groups has 3 entries"):
        GroupBalancedProbe().fit(X, y, groups=groups[:3])


# --- WiSE ---------------------------------------------------------------------------------


def test_wise_interpolates_the_zero_shot_and_probe_logits(embedder):
    rng = np.random.default_rng(2)
    images = embedder.transform(rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8))
    X = images.astype(np.float64)
    y = rng.integers(0, 3, len(X))
    text = embedder.encode_text(["a cat.", "a dog.", "a horse."]).astype(np.float64)
    zero_shot = ZeroShotClassifier(["cat", "dog", "horse"], class_embeddings=text)
    fitted = WiSEHead(zero_shot, alpha=0.3).fit(X, y)
    # Reference: CLIP logits 100 * cos on normalised features, and a probe fitted on them.
    features = _unit(X)
    zero_shot_logits = 100.0 * features @ _unit(text).T
    probe = LogisticRegression().fit(features, y)
    expected = 0.7 * zero_shot_logits + 0.3 * probe.decision_function(features)
    np.testing.assert_allclose(fitted.decision_function(X), expected, rtol=1e-10, atol=1e-9)
    np.testing.assert_array_equal(fitted.predict(X), np.argmax(expected, 1))  # classes 0, 1, 2
    # The ends are zero-shot and the probe.
    only_zero_shot = WiSEHead(zero_shot, alpha=0.0).fit(X, y)
    np.testing.assert_array_equal(only_zero_shot.predict(X), np.argmax(zero_shot_logits, 1))
    only_probe = WiSEHead(zero_shot, alpha=1.0).fit(X, y)
    np.testing.assert_array_equal(only_probe.predict(X), probe.predict(features))


def test_wise_binary_and_class_mismatch():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(40, 4)), np.tile([0, 1], 20)
    text = rng.normal(size=(2, 4))
    fitted = WiSEHead(ZeroShotClassifier(class_embeddings=text), alpha=0.5).fit(X, y)
    probe = LogisticRegression().fit(_unit(X), y)
    zero_shot = 100.0 * _unit(X) @ _unit(text).T
    expected = 0.5 * (zero_shot[:, 1] - zero_shot[:, 0]) + 0.5 * probe.decision_function(_unit(X))
    np.testing.assert_allclose(fitted.decision_function(X), expected, rtol=1e-10, atol=1e-9)
    with pytest.raises(ValueError, match="classes"):
        WiSEHead(ZeroShotClassifier(class_embeddings=rng.normal(size=(3, 4)))).fit(X, y)


def test_wise_routes_fit_metadata_to_the_zero_shot_projector():
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(60, 5)), np.tile([0, 1, 2], 20)
    X_intervened = X + rng.normal(size=(60, 5)) * [5.0, 0, 0, 0, 0]  # the first axis varies
    with sklearn.config_context(enable_metadata_routing=True):
        projector = InvariantProjector(4, alpha=10.0).set_fit_request(X_intervened=True)
        head = WiSEHead(ZeroShotClassifier(class_embeddings="image_means", projector=projector))
        fitted = head.fit(X, y, X_intervened=X_intervened)
    components = fitted.zero_shot_.projector_.components_
    assert np.abs(components[:, 0]).max() < 0.05  # the varying axis was left out
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoInvarianceWarning)
        plain = WiSEHead(
            ZeroShotClassifier(class_embeddings="image_means", projector=InvariantProjector(4))
        )
        plain.fit(X, y, X_intervened=X_intervened)  # routing off: passed straight on
