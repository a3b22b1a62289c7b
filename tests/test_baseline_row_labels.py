"""The per-row labels of the group-aware baselines (LEACE, DFR): missing, wrong length, column."""

import numpy as np
import pytest
from sklearn.exceptions import DataConversionWarning

from skicm.baselines import ConceptErasure, GroupBalancedProbe

RNG = np.random.default_rng(0)
y = np.tile([0, 1], 20)
place = np.tile([0, 0, 1, 1], 10)
X = np.column_stack([y + RNG.normal(0, 0.5, 40), place + RNG.normal(0, 0.5, 40)])
groups = 2 * y + place


def test_missing_groups_say_how_to_pass_them():
    with pytest.raises(ValueError, match=r'concept="groups"\) needs groups in fit.*set_fit'):
        ConceptErasure().fit(X, y)
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        ConceptErasure(concept="y").fit(X)
    with pytest.raises(ValueError, match=r"GroupBalancedProbe needs groups in fit"):
        GroupBalancedProbe().fit(X, y)


@pytest.mark.parametrize(
    ("estimator", "fit_kwargs", "name"),
    [
        (ConceptErasure(), {"y": y, "groups": groups[:3]}, "groups"),
        (ConceptErasure(concept="y"), {"y": y[:3]}, "y"),
        (GroupBalancedProbe(), {"y": y, "groups": groups[:3]}, "groups"),
    ],
)
def test_labels_of_another_length_are_named(estimator, fit_kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} has 3 entries but X has 40 rows; {name} needs"):
        estimator.fit(X, **fit_kwargs)


def test_a_column_of_groups_is_read_as_a_vector():
    flat = ConceptErasure().fit(X, groups=groups)
    with pytest.warns(DataConversionWarning):
        column = ConceptErasure().fit(X, groups=groups[:, None])
    assert np.array_equal(flat.transform(X), column.transform(X))
    probe = GroupBalancedProbe(random_state=0, n_retrains=2)
    with pytest.warns(DataConversionWarning):
        fitted = probe.fit(X, y, groups=groups[:, None])
    assert fitted.group_counts_ == {0: 10, 1: 10, 2: 10, 3: 10}
