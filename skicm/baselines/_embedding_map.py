"""The base of the baselines that map embeddings to embeddings of the same width."""

from __future__ import annotations

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils.validation import check_is_fitted, validate_data

#: The dtypes a map keeps (float32 embeddings stay float32); others are converted to float64.
FLOAT_DTYPES = [np.float64, np.float32]


class _EmbeddingMap(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base of the baselines that map each embedding to one of the same width.

    A subclass validates ``X`` in ``fit`` with ``validate_data(self, X, dtype=FLOAT_DTYPES)``,
    forms its map there, and defines ``_map(X)``: the map applied to embeddings already
    checked against the fit (fitted, same width, float32 or float64). :meth:`transform` does
    the checks and calls it; the output has the input's width and dtype (feature names
    ``<classname>0``, ``<classname>1``, ...), and ``y`` is optional in ``fit``.
    """

    def _map(self, X):
        """The map applied to validated embeddings ``X``, in their dtype."""
        raise NotImplementedError

    @property
    def _n_features_out(self):
        return self.n_features_in_

    def transform(self, X):
        """Map the embeddings (the class description gives the map).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings of the same model, and width, as those seen in ``fit``.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features)
            The mapped embeddings, in the dtype of ``X`` (float32 or float64).
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=FLOAT_DTYPES, reset=False)
        return self._map(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class _TextDirectionsMap(_EmbeddingMap):
    """Base of the maps formed from text directions alone (Orth-Proj, PRISM-mini, RoboShot).

    :meth:`fit` validates ``X``, of which only the width is used, and hands the width and
    ``y`` to the subclass's ``_form_map(n_features, y)``, which encodes the texts and sets
    the fitted attributes.
    """

    def _form_map(self, n_features, y):
        """Encode the texts and set the fitted map for embeddings of width ``n_features``."""
        raise NotImplementedError

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Encode the texts and form the map.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings; only their width is used (the map comes from text).
        y : array-like of shape (n_samples,), default=None
            Labels: their distinct values are passed to the ``interventions`` source (its
            ``differences``, and ``domain_prompt_pairs`` for Orth-Cali) where the estimator
            has one; otherwise ignored.

        Returns
        -------
        self : object
            The fitted transformer.
        """
        X = validate_data(self, X, dtype=FLOAT_DTYPES)
        self._form_map(X.shape[1], y)
        return self
