"""RoboShot: reject harmful and boost helpful concept directions of embeddings."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.utils._param_validation import HasMethods

from skicm.baselines._directions import (
    check_width,
    embed_pairs,
    intervention_differences,
    label_values,
    normalize_rows,
    orthonormal_basis,
    warn_identity,
)
from skicm.baselines._embedding_map import _TextDirectionsMap

__all__ = ["RoboShot"]


class RoboShot(_TextDirectionsMap):
    """RoboShot: remove harmful and amplify helpful insight directions of embeddings.

    RoboShot (Adila et al., ICLR 2024) turns "insights" into directions of the embedding
    space: each insight is a pair of texts whose difference is a concept (``("a bird on
    water", "a bird on land")`` is the background, harmful; ``("a bird with webbed feet",
    "a bird with claws")`` is a helpful feature). With ``Q_h`` an orthonormal basis of the
    harmful directions and ``Q_b`` one of the helpful directions, an embedding is
    normalised, each harmful component is rejected, each helpful component boosted:

    .. math:: x \\mapsto \\frac{(I + Q_b Q_b^\\top)(I - Q_h Q_h^\\top) x}
                              {\\|(I + Q_b Q_b^\\top)(I - Q_h Q_h^\\top) x\\|}

    which is what the released code's loop (reject one basis vector, renormalise, repeat;
    then boost likewise) computes, in closed form. ``transform`` keeps the dtype of ``x``; a
    row mapped to zero stays zero.

    **Where it differs from the released code** (``SprocketLab/roboshot``, ``run.py``): the
    insights are parameters (the released code reads cached LLM answers per data set); the
    basis is an SVD with dependent directions dropped rather than ``numpy.linalg.qr``, whose
    extra columns for dependent insights are arbitrary directions (identical results for
    independent insights).

    Parameters
    ----------
    harmful_pairs : sequence of (str, str), array-like of shape (n_pairs, 2, n_features) \
            or None, default=None
        Insight pairs whose difference is a spurious concept to reject.
    helpful_pairs : sequence of (str, str), array-like of shape (n_pairs, 2, n_features) \
            or None, default=None
        Insight pairs whose difference is a useful concept to boost.
    encoder : object with ``encode_text``, default=None
        Text encoder of the model that embedded ``X``, for pairs given as text (each text
        embedding is normalised before the difference is taken).
    interventions : object with a ``differences`` method, default=None
        More harmful directions, e.g. :class:`~skicm.TextInterventions` (one class in two
        domains: the domain is harmful).

    Attributes
    ----------
    harmful_basis_ : ndarray of shape (n_features, n_harmful)
        Orthonormal basis of the rejected directions.
    helpful_basis_ : ndarray of shape (n_features, n_helpful)
        Orthonormal basis of the boosted directions.
    transform_matrix_ : ndarray of shape (n_features, n_features)
        ``(I + Q_b Q_b^T)(I - Q_h Q_h^T)``, applied before the final normalisation.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` has string column names.

    See Also
    --------
    OrthogonalProjection : removes the span of biased prompts.

    References
    ----------
    .. [1] D. Adila, C. Shin, L. Cai and F. Sala, "Zero-Shot Robustification of Zero-Shot
       Models", ICLR 2024, arXiv:2309.04344.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.baselines import RoboShot
    >>> harmful = np.array([[[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]])  # the background axis
    >>> helpful = np.array([[[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]])  # the shape axis
    >>> X = np.array([[1.0, 1.0, 5.0]])
    >>> RoboShot(harmful, helpful).fit(X).transform(X).round(3)
    array([[0.894, 0.447, 0.   ]])
    """

    _parameter_constraints: ClassVar[dict] = {
        "harmful_pairs": ["array-like", None],
        "helpful_pairs": ["array-like", None],
        "encoder": [HasMethods(["encode_text"]), None],
        "interventions": [HasMethods(["differences"]), None],
    }

    def __init__(self, harmful_pairs=None, helpful_pairs=None, *, encoder=None, interventions=None):
        self.harmful_pairs = harmful_pairs
        self.helpful_pairs = helpful_pairs
        self.encoder = encoder
        self.interventions = interventions

    def _form_map(self, n_features, y):
        harmful = [self._directions(self.harmful_pairs, "harmful_pairs", n_features)]
        if self.interventions is not None:
            differences = intervention_differences(self.interventions, label_values(y), n_features)
            harmful.append(differences)
        helpful = self._directions(self.helpful_pairs, "helpful_pairs", n_features)
        harmful = np.concatenate(harmful)
        if len(harmful) == 0 and len(helpful) == 0:
            warn_identity(type(self).__name__, "harmful_pairs, helpful_pairs or interventions")
        harmful_basis = orthonormal_basis(harmful)
        helpful_basis = orthonormal_basis(helpful)
        identity = np.eye(n_features)
        self.harmful_basis_ = harmful_basis
        self.helpful_basis_ = helpful_basis
        self.transform_matrix_ = (identity + helpful_basis @ helpful_basis.T) @ (
            identity - harmful_basis @ harmful_basis.T
        )

    def _directions(self, pairs, name, n_features):
        if pairs is None:
            return np.zeros((0, n_features))
        embedded = embed_pairs(pairs, self.encoder, name)
        check_width(embedded, n_features, name)
        return embedded[:, 0] - embedded[:, 1]

    def _map(self, X):
        return normalize_rows(X @ self.transform_matrix_.T.astype(X.dtype, copy=False))
