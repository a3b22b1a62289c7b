"""PRISM-mini: a closed-form projection away from descriptions of spurious attributes."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.utils._param_validation import HasMethods

from skicm.baselines._directions import (
    check_width,
    embed_prompts,
    normalize_rows,
    orthonormal_basis,
    warn_identity,
)
from skicm.baselines._embedding_map import _TextDirectionsMap

__all__ = ["PromptProjection"]


class PromptProjection(_TextDirectionsMap):
    """PRISM-mini: project normalised embeddings away from spurious-attribute descriptions.

    PRISM (Molahasani et al., ICCV 2025) asks a language model which attributes co-occur
    spuriously with the classes ("water", "land" for Waterbirds; "man", "woman" for CelebA)
    and removes them from CLIP's embedding space. Its training-free variant, PRISM-mini,
    embeds the attribute descriptions ``V`` (normalised, one column each), forms

    .. math:: P = I - V (V^\\top V)^{-1} V^\\top

    and classifies the normalised image embeddings after ``P``: ``transform`` maps a row
    ``x`` to ``P x / |x|``, in the dtype of ``x`` (a zero row stays zero).

    **Where it differs from the released code** (``MahdiyarMM/PRISM``, ``utils.py``,
    ``orth_transforamtion_calculation``): the released PRISM-mini hard-codes two attribute
    words per data set and projects the image embeddings only (the class prompts are left
    as they are); here the descriptions are a parameter, and a dict of
    ``{attribute: [descriptions]}`` averages each attribute's normalised description
    embeddings into one direction (as prompt templates are averaged). Used as the
    ``projector`` of :class:`~skicm.ZeroShotClassifier`, the class prompts are projected
    too; since ``P`` is symmetric and idempotent this ranks the classes of an image exactly
    as the released code does (``x^T P t`` over ``|P t|``, scaled per image). Dependent
    descriptions are dropped from the basis (the released code inverts ``V^T V`` and fails).

    Parameters
    ----------
    descriptions : list of str, dict of str to list of str, array-like of shape \
            (n_descriptions, n_features) or None, default=None
        The spurious attributes: descriptions (encoded with ``encoder``), attributes with
        several descriptions each, or precomputed embeddings.
    encoder : object with ``encode_text``, default=None
        Text encoder of the model that embedded ``X``, for descriptions given as text.

    Attributes
    ----------
    projection_ : ndarray of shape (n_features, n_features)
        ``P``.
    spurious_basis_ : ndarray of shape (n_features, n_directions)
        Orthonormal basis of the removed directions.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` has string column names.

    See Also
    --------
    OrthogonalProjection : Orth-Proj, the same projection on unnormalised embeddings, and
        its calibrated variant.

    References
    ----------
    .. [1] M. Molahasani, A. Motamedi, M. Greenspan, I.-M. Kim and A. Etemad, "PRISM:
       Reducing Spurious Implicit Biases in Vision-Language Models with LLM-Guided Embedding
       Projection", ICCV 2025, arXiv:2507.08979.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.baselines import PromptProjection
    >>> water = np.array([[0.0, 1.0]])  # the embedding of the description "water"
    >>> X = np.array([[3.0, 4.0]])
    >>> PromptProjection(water).fit(X).transform(X)  # normalised, then projected
    array([[0.6, 0. ]])
    """

    _parameter_constraints: ClassVar[dict] = {
        "descriptions": ["array-like", dict, None],
        "encoder": [HasMethods(["encode_text"]), None],
    }

    def __init__(self, descriptions=None, *, encoder=None):
        self.descriptions = descriptions
        self.encoder = encoder

    def _form_map(self, n_features, y):
        if self.descriptions is None:
            warn_identity(type(self).__name__, "descriptions")
            directions = np.zeros((0, n_features))
        elif isinstance(self.descriptions, dict):
            if not self.descriptions:
                raise ValueError("descriptions is an empty dict: give at least one attribute.")
            rows = []
            for attribute, texts in self.descriptions.items():
                if isinstance(texts, str):
                    texts = [texts]
                embeddings = embed_prompts(
                    list(texts), self.encoder, f"descriptions[{attribute!r}]"
                )
                rows.append(normalize_rows(embeddings.mean(axis=0, keepdims=True))[0])
            directions = np.asarray(rows)
        else:
            directions = embed_prompts(self.descriptions, self.encoder, "descriptions")
        check_width(directions, n_features, "descriptions")
        basis = orthonormal_basis(directions)
        self.spurious_basis_ = basis
        self.projection_ = np.eye(n_features) - basis @ basis.T

    def _map(self, X):
        return normalize_rows(X) @ self.projection_.T.astype(X.dtype, copy=False)
