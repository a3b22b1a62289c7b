"""What the embedding-map baselines share: width, dtype and feature names of ``transform``, and
the checks of directions from an interventions source."""

import numpy as np
import pytest

from skicm.baselines import ConceptErasure, OrthogonalProjection, PromptProjection, RoboShot
from skicm.exceptions import NoInvarianceWarning

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 5))
LABELS = np.tile([0, 1], 20)


class _FixedDifferences:
    """An interventions source (the parameter takes any object with ``differences``)."""

    def __init__(self, differences):
        self._differences = differences
        self.seen = []

    def differences(self, classes):
        self.seen.append(classes)
        return self._differences


def _fitted_maps(X):
    return {
        "orthogonal": OrthogonalProjection(np.eye(5)[:1]).fit(X),
        "prompt": PromptProjection(np.eye(5)[:1]).fit(X),
        "roboshot": RoboShot(np.stack([np.eye(5)[:1], -np.eye(5)[:1]], axis=1)).fit(X),
        "erasure": ConceptErasure().fit(X, groups=LABELS),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maps_keep_width_dtype_and_name_their_features(dtype):
    for name, fitted in _fitted_maps(X.astype(dtype)).items():
        out = fitted.transform(X.astype(dtype))
        assert out.shape == X.shape and out.dtype == dtype, name
        prefix = type(fitted).__name__.lower()
        assert fitted.get_feature_names_out().tolist() == [f"{prefix}{i}" for i in range(5)]
        frame = fitted.set_output(transform="pandas").transform(X.astype(dtype))
        assert list(frame.columns) == [f"{prefix}{i}" for i in range(5)], name


def test_maps_refuse_embeddings_of_another_width():
    for fitted in _fitted_maps(X).values():
        with pytest.raises(ValueError, match=r"X has 4 features, but \w+ is expecting 5"):
            fitted.transform(X[:, :4])


@pytest.mark.parametrize("estimator", [OrthogonalProjection, RoboShot])
def test_intervention_directions_of_another_width_are_named(estimator):
    source = _FixedDifferences(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"interventions.differences\(y\) has 3 features but X"):
        estimator(interventions=source).fit(X, LABELS)
    # The source was asked for the distinct labels.
    assert source.seen[0].tolist() == [0, 1]


@pytest.mark.parametrize("estimator", [OrthogonalProjection, RoboShot])
def test_intervention_directions_are_removed(estimator):
    direction = np.eye(5)[2:3]
    fitted = estimator(interventions=_FixedDifferences(direction)).fit(X)
    out = fitted.transform(X)
    # The removed axis is exactly zero: P's column 2 is e_2 - e_2 (e_2^T e_2) with e_2 exact.
    assert np.abs(out[:, 2]).max() == 0.0


@pytest.mark.parametrize("estimator", [OrthogonalProjection, PromptProjection, RoboShot])
def test_a_map_without_directions_warns_at_the_callers_line(estimator):
    with pytest.warns(NoInvarianceWarning, match="the map is the identity") as record:
        fitted = estimator().fit(X)
    assert record[0].filename == __file__
    assert np.array_equal(fitted.transform(X), fitted._map(X))
