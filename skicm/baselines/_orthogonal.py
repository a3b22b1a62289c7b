"""Orth-Proj and Orth-Cali: projecting out the embeddings of biased prompts."""

from __future__ import annotations

from numbers import Real
from typing import ClassVar

import numpy as np
from sklearn.utils._param_validation import HasMethods, Interval

from skicm.baselines._directions import (
    check_width,
    embed_pairs,
    embed_prompts,
    intervention_differences,
    label_values,
    orthonormal_basis,
    warn_identity,
)
from skicm.baselines._embedding_map import _TextDirectionsMap

__all__ = ["OrthogonalProjection"]


class OrthogonalProjection(_TextDirectionsMap):
    """Orth-Proj / Orth-Cali: remove the directions of spurious prompts from embeddings.

    Chuang et al., "Debiasing Vision-Language Models via Biased Prompts" (2023), remove a
    spurious attribute from CLIP by projecting onto the orthogonal complement of the
    embeddings ``B`` (one column per prompt) of prompts that describe it ("a photo of a water
    background", "a photo of a forest"):

    .. math:: P_0 = I - B (B^\\top B)^{-1} B^\\top.

    **Orth-Cali** (``calibrated=True``) adds a calibration from pairs of prompts that should
    embed alike (the same class with two values of the spurious attribute):

    .. math:: P = P_0 (\\lambda M + I)^{-1}, \\qquad
              M = \\frac{1}{|S|} \\sum_{(i, j) \\in S} (z_i - z_j)(z_i - z_j)^\\top

    with ``lambda = calibration_strength`` (the authors' default 1000).

    ``transform`` maps each row ``x`` to ``P x``, in the dtype of ``x``. Every prompt
    embedding is normalised first, as in the released code.

    **Where it differs from the released code** (``chingyaoc/debias_vl``,
    ``discriminative/main.py``): the released code applies ``P`` to the *class prompt*
    embeddings of a zero-shot classifier and leaves the image embeddings alone; this
    transformer maps any embedding. For Orth-Proj (``P_0`` symmetric and idempotent) the two
    give the same predictions when used as the ``projector`` of
    :class:`~skicm.ZeroShotClassifier` (which maps images and class prompts alike):
    ``cos(P_0 x, P_0 t) = x^T P_0 t / (|P_0 x| |P_0 t|)`` ranks the classes of ``x`` as
    ``x^T P_0 t / (|x| |P_0 t|)`` does. For Orth-Cali (``P`` not symmetric) they differ.
    The released code takes the basis from a truncated SVD of the prompt embeddings; here
    the basis is the SVD's left singular vectors with dependent directions dropped, the same
    projection when the prompts are independent (then exactly the formula above).

    Parameters
    ----------
    spurious : list of str, array-like of shape (n_prompts, n_features) or None, \
            default=None
        The biased prompts (encoded with ``encoder``) or their embeddings.
    encoder : object with ``encode_text``, default=None
        Text encoder of the model that embedded ``X`` (a :class:`~skicm.CLIPEmbedder`),
        needed when prompts are given as text.
    interventions : object with a ``differences`` method, default=None
        A source of spurious directions such as :class:`~skicm.TextInterventions`: the rows
        of ``interventions.differences(classes)`` are added to ``B``. When it has
        ``domain_prompt_pairs`` (as ``TextInterventions`` does), its pairs (one class, two
        domains) are the calibration pairs if ``calibration_pairs`` is None.
    calibrated : bool, default=False
        Orth-Cali instead of Orth-Proj.
    calibration_pairs : sequence of (str, str), array-like of shape (n_pairs, 2, \
            n_features) or None, default=None
        Pairs of prompts that should embed alike, for ``calibrated=True``.
    calibration_strength : float, default=1000.0
        The ``lambda`` of Orth-Cali.

    Attributes
    ----------
    projection_ : ndarray of shape (n_features, n_features)
        ``P`` (``P_0`` without calibration); ``transform(X) = X @ projection_.T``.
    spurious_basis_ : ndarray of shape (n_features, n_directions)
        Orthonormal basis of the removed directions.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` has string column names.

    See Also
    --------
    PromptProjection : PRISM-mini, the same projection on normalised image embeddings.
    RoboShot : rejects spurious and boosts helpful directions.
    skicm.InvariantProjector : learns the invariant subspace from interventional data.

    References
    ----------
    .. [1] C.-Y. Chuang, V. Jampani, Y. Li, A. Torralba and S. Jegelka, "Debiasing
       Vision-Language Models via Biased Prompts", arXiv:2302.00070, 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.baselines import OrthogonalProjection
    >>> spurious = np.array([[0.0, 0.0, 1.0]])  # the embedding of "a water background"
    >>> X = np.array([[1.0, 2.0, 3.0]])
    >>> OrthogonalProjection(spurious).fit(X).transform(X)
    array([[1., 2., 0.]])
    """

    _parameter_constraints: ClassVar[dict] = {
        "spurious": ["array-like", None],
        "encoder": [HasMethods(["encode_text"]), None],
        "interventions": [HasMethods(["differences"]), None],
        "calibrated": ["boolean"],
        "calibration_pairs": ["array-like", None],
        "calibration_strength": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        spurious=None,
        *,
        encoder=None,
        interventions=None,
        calibrated=False,
        calibration_pairs=None,
        calibration_strength=1000.0,
    ):
        self.spurious = spurious
        self.encoder = encoder
        self.interventions = interventions
        self.calibrated = calibrated
        self.calibration_pairs = calibration_pairs
        self.calibration_strength = calibration_strength

    def _form_map(self, n_features, y):
        classes = label_values(y)
        blocks = []
        if self.spurious is not None:
            blocks.append(embed_prompts(self.spurious, self.encoder, "spurious"))
            check_width(blocks[-1], n_features, "spurious")
        if self.interventions is not None:
            blocks.append(intervention_differences(self.interventions, classes, n_features))
        directions = np.concatenate(blocks) if blocks else np.zeros((0, n_features))
        basis = orthonormal_basis(directions)
        if not blocks:
            warn_identity(type(self).__name__, "spurious prompts or interventions")
        projection = np.eye(n_features) - basis @ basis.T

        if self.calibrated:
            pairs = self._calibration_pairs(classes)
            check_width(pairs, n_features, "calibration_pairs")
            gaps = pairs[:, 0] - pairs[:, 1]
            # The released code averages over the pairs (get_M divides by |S|).
            M = gaps.T @ gaps / len(gaps)
            G = self.calibration_strength * M + np.eye(n_features)
            # P0 G^-1 = (G^-T P0^T)^T; G is symmetric positive definite.
            projection = np.linalg.solve(G, projection.T).T

        self.spurious_basis_ = basis
        self.projection_ = projection

    def _calibration_pairs(self, classes):
        if self.calibration_pairs is not None:
            return embed_pairs(self.calibration_pairs, self.encoder, "calibration_pairs")
        source = self.interventions
        if source is not None and hasattr(source, "domain_prompt_pairs"):
            pairs = source.domain_prompt_pairs(classes)
            if pairs:
                encoder = getattr(source, "encoder", None) or self.encoder
                return embed_pairs(list(pairs), encoder, "interventions.domain_prompt_pairs")
        raise ValueError(
            "calibrated=True needs calibration_pairs (pairs of prompts that should embed "
            "alike) or interventions with domain_prompt_pairs, such as "
            "skicm.TextInterventions with two or more domain_templates."
        )

    def _map(self, X):
        return X @ self.projection_.T.astype(X.dtype, copy=False)
