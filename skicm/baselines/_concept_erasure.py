"""LEACE: least-squares concept erasure of a labelled concept (environment, background)."""

from __future__ import annotations

import warnings
from numbers import Real
from typing import ClassVar

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import validate_data

from skicm.baselines._embedding_map import FLOAT_DTYPES, _EmbeddingMap
from skicm.baselines._row_labels import row_labels
from skicm.exceptions import NoInvarianceWarning

__all__ = ["ConceptErasure"]


def _leace_fitter():
    """``concept_erasure.LeaceFitter``, imported without its torch.jit deprecation notice."""
    with warnings.catch_warnings():
        # concept-erasure 0.2 decorates a helper we do not use with torch.jit.script, which
        # recent torch deprecates at import time; the notice is about that package's code.
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        try:
            from concept_erasure import LeaceFitter
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(
                "ConceptErasure needs the concept-erasure package: pip install concept-erasure"
            ) from error
    return LeaceFitter


class ConceptErasure(_EmbeddingMap):
    """LEACE: erase a labelled concept from embeddings so that no linear model can read it.

    Least-squares concept erasure (Belrose et al., NeurIPS 2023) finds the affine map
    ``x -> x - W^+ P W (x - mean)`` of least mean squared change after which the
    cross-covariance of the embeddings with the concept's one-hot code is zero: no linear
    classifier then predicts the concept better than a constant. Here the concept is the
    environment, domain or background of each row, given as ``groups`` (routed like
    :class:`~skicm.InvariantProjector`'s ``groups``), or the target ``y`` itself with
    ``concept="y"``. The eraser is fitted by the ``concept-erasure`` package
    (``LeaceFitter``) in float64, with its defaults (covariance shrinkage, ``svd_tol=0.01``,
    trace constraint). ``transform`` applies the fitted map, in the dtype of ``X``.

    **Where it differs from the released code**: nothing in the arithmetic (the package's own
    fitter is called); the statistics are formed in float64 whatever the dtype of ``X``, and
    the eraser is kept as numpy arrays so that the fitted transformer pickles without torch
    objects.

    Parameters
    ----------
    concept : {"groups", "y"}, default="groups"
        What to erase: the ``groups`` passed to :meth:`fit` (the default; an error if they
        are missing), or the labels ``y``.
    method : {"leace", "orth"}, default="leace"
        LEACE, or the package's simpler orthogonal projection onto the complement of the
        cross-covariance's column space.
    shrinkage : bool, default=True
        Estimate the covariance with the package's optimal linear shrinkage.
    svd_tol : float, default=0.01
        Singular values of the whitened cross-covariance below this are ignored.

    Attributes
    ----------
    proj_left_ : ndarray of shape (n_features, rank)
    proj_right_ : ndarray of shape (rank, n_features)
        The eraser is ``x - ((x - mean_) @ proj_right_.T) @ proj_left_.T``.
    mean_ : ndarray of shape (n_features,)
        Mean of the training embeddings (the eraser keeps it).
    concepts_ : ndarray
        The concept values seen (columns of the one-hot code).
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` has string column names.

    See Also
    --------
    skicm.InvariantProjector : uses ``groups`` to find directions that vary across them.

    References
    ----------
    .. [1] N. Belrose, D. Schneider-Joseph, S. Ravfogel, R. Cotterell, E. Raff and
       S. Biderman, "LEACE: Perfect linear concept erasure in closed form", NeurIPS 2023,
       arXiv:2306.03819.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.baselines import ConceptErasure
    >>> rng = np.random.default_rng(0)
    >>> background = rng.integers(0, 2, 200)
    >>> X = rng.normal(size=(200, 3)) + 2.0 * background[:, None] * [1.0, 0.0, 0.0]
    >>> erased = ConceptErasure().fit_transform(X, groups=background)
    >>> gap = erased[background == 1].mean(0) - erased[background == 0].mean(0)
    >>> bool(np.abs(gap).max() < 1e-9)  # the background no longer moves the mean
    True
    """

    __metadata_request__fit = {"groups": False}

    _parameter_constraints: ClassVar[dict] = {
        "concept": [StrOptions({"groups", "y"})],
        "method": [StrOptions({"leace", "orth"})],
        "shrinkage": ["boolean"],
        "svd_tol": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, concept="groups", *, method="leace", shrinkage=True, svd_tol=0.01):
        self.concept = concept
        self.method = method
        self.shrinkage = shrinkage
        self.svd_tol = svd_tol

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, groups=None):
        """Fit the eraser of the concept.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings.
        y : array-like of shape (n_samples,), default=None
            Labels; the concept with ``concept="y"``, otherwise ignored.
        groups : array-like of shape (n_samples,), default=None
            The concept value of each row (environment, background) with
            ``concept="groups"``. Under metadata routing it is not requested by default
            (splitters consume ``groups``); opt in with ``set_fit_request(groups=True)``.

        Returns
        -------
        self : ConceptErasure
            The fitted transformer.
        """
        import torch

        LeaceFitter = _leace_fitter()
        X = validate_data(self, X, dtype=FLOAT_DTYPES, ensure_min_samples=2)
        if self.concept == "y" and y is None:
            raise ValueError(
                'ConceptErasure(concept="y") requires y to be passed, but the target y is None.'
            )
        labels = row_labels(
            y if self.concept == "y" else groups,
            X.shape[0],
            self.concept,
            missing=(
                f'ConceptErasure(concept="{self.concept}") needs {self.concept} in fit: the '
                "concept value of each row. Under metadata routing, request it with "
                "ConceptErasure().set_fit_request(groups=True) and pass groups= to fit."
            ),
        )
        concepts, index = np.unique(labels, return_inverse=True)
        if len(concepts) < 2:
            warnings.warn(
                f"ConceptErasure got one value of the concept ({concepts.tolist()!r}): there is "
                "nothing to erase and the map is the identity.",
                NoInvarianceWarning,
                stacklevel=3,
            )
        one_hot = np.zeros((X.shape[0], len(concepts)))
        one_hot[np.arange(X.shape[0]), index.ravel()] = 1.0
        fitter = LeaceFitter.fit(
            torch.from_numpy(np.array(X, dtype=np.float64)),  # a writable copy
            torch.from_numpy(one_hot),
            method=self.method,
            shrinkage=self.shrinkage,
            svd_tol=self.svd_tol,
        )
        eraser = fitter.eraser
        self.proj_left_ = eraser.proj_left.numpy()
        self.proj_right_ = eraser.proj_right.numpy()
        self.mean_ = eraser.bias.numpy()
        self.concepts_ = concepts
        return self

    def _map(self, X):
        dtype = X.dtype
        left = self.proj_left_.astype(dtype, copy=False)
        right = self.proj_right_.astype(dtype, copy=False)
        return X - ((X - self.mean_.astype(dtype, copy=False)) @ right.T) @ left.T

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = self.concept == "y"
        return tags


def _common_check_instance():
    """The estimator checks call fit(X, y) without groups: erase the concept given as y."""
    return ConceptErasure(concept="y")


#: Estimator checks that cannot apply to concept erasure.
_EXPECTED_FAILED_CHECKS: dict[str, str] = {}
