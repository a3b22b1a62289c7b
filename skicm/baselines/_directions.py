"""Directions from text or arrays, shared by the projection baselines."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.utils import check_array

from skicm.exceptions import NoInvarianceWarning
from skicm.interventions import _encode_texts

# Rank tolerance of a basis of text directions: the directions are embeddings of networks that
# compute in float32 (or less), so a singular value below k * eps32 * s_max carries no
# direction finer than their rounding, whatever the dtype they are handed over in.
_EPS32 = float(np.finfo(np.float32).eps)


def normalize_rows(matrix):
    """Rows scaled to unit Euclidean norm (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1)


def _is_text_list(value):
    return (
        isinstance(value, list | tuple)
        and len(value) > 0
        and all(isinstance(item, str) for item in value)
    )


def embed_prompts(value, encoder, name, *, normalize=True):
    """``value`` as a float64 array of directions, one per row.

    ``value`` is a list of prompts (encoded by ``encoder``, each embedding normalised, as the
    released baselines do) or an array of embeddings of shape ``(k, n_features)``.
    """
    if _is_text_list(value):
        embeddings = _encode_texts(encoder, value, name=f"encoder (for {name})")
        embeddings = np.asarray(embeddings, dtype=np.float64)
        return normalize_rows(embeddings) if normalize else embeddings
    if isinstance(value, list | tuple) and any(isinstance(item, str) for item in value):
        raise ValueError(f"{name} must be a list of prompts (str) or an array; got {value!r}.")
    embeddings = check_array(value, dtype=np.float64, input_name=name, ensure_min_samples=1)
    return normalize_rows(embeddings) if normalize else embeddings


def embed_pairs(value, encoder, name):
    """Pairs as a float64 array of shape ``(m, 2, n_features)`` (each embedding normalised).

    ``value`` is a sequence of ``(text, text)`` pairs (encoded by ``encoder``) or an array of
    shape ``(m, 2, n_features)`` of embeddings.
    """
    if isinstance(value, list | tuple) and all(isinstance(pair, list | tuple) for pair in value):
        pairs = list(value)
        for pair in pairs:
            if len(pair) != 2 or not all(isinstance(text, str) for text in pair):
                raise ValueError(f"{name} must hold (text, text) pairs; got {pair!r}.")
        if not pairs:
            raise ValueError(f"{name} is empty: give at least one (text, text) pair.")
        texts = [text for pair in pairs for text in pair]
        embeddings = _encode_texts(encoder, texts, name=f"encoder (for {name})")
        embeddings = normalize_rows(np.asarray(embeddings, dtype=np.float64))
        return embeddings.reshape(len(pairs), 2, -1)
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 3 or array.shape[1] != 2 or array.shape[0] == 0:
        raise ValueError(
            f"{name} must be (text, text) pairs or an array of shape (n_pairs, 2, "
            f"n_features); got shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinity.")
    return normalize_rows(array.reshape(-1, array.shape[2])).reshape(array.shape)


def check_width(directions, n_features, name):
    if directions.shape[-1] != n_features:
        raise ValueError(
            f"{name} has {directions.shape[-1]} features but X has {n_features}: the "
            "directions must be embeddings of the same model as X."
        )


def label_values(y):
    """The distinct labels of ``y``, as handed to ``interventions.differences``; None without y."""
    return None if y is None else np.unique(np.asarray(y, dtype=object).ravel())


def intervention_differences(interventions, classes, n_features):
    """``interventions.differences(classes)`` as float64 directions of the width of ``X``.

    Raises a ValueError naming ``interventions.differences(y)`` when they are not a finite
    2-d array or not ``n_features`` wide.
    """
    name = "interventions.differences(y)"
    differences = check_array(interventions.differences(classes), dtype=np.float64, input_name=name)
    check_width(differences, n_features, name)
    return differences


def orthonormal_basis(directions):
    """Orthonormal basis of the span of the rows, shape ``(n_features, rank)``.

    Computed by SVD; singular values below ``max(k, n_features) * eps32 * s_max`` are
    dependent directions and dropped (see ``_EPS32``).
    """
    if directions.shape[0] == 0:
        return np.zeros((directions.shape[1], 0))
    u, s, _ = np.linalg.svd(directions.T, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        return np.zeros((directions.shape[1], 0))
    keep = s > max(directions.shape) * _EPS32 * s[0]
    return u[:, keep]


def warn_identity(estimator_name, what):
    warnings.warn(
        f"{estimator_name} was fitted without {what}: nothing is removed and the map is the "
        "identity.",
        NoInvarianceWarning,
        stacklevel=5,
    )
