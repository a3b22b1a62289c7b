"""WiSE-FT's linear variant: interpolate a zero-shot head and a fitted linear probe."""

from __future__ import annotations

from numbers import Real
from typing import ClassVar

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.metadata_routing import (
    MetadataRouter,
    MethodMapping,
    _routing_enabled,
    process_routing,
)
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from skicm.zero_shot import _decision_scores, _head_features

__all__ = ["WiSEHead"]


class WiSEHead(ClassifierMixin, BaseEstimator):
    """WiSE-FT for a linear head: mix the zero-shot head's and a linear probe's weights.

    WiSE-FT (Wortsman et al., CVPR 2022) interpolates the weights of a zero-shot CLIP model
    and of the same model fine-tuned; its linear-classifier variant fine-tunes only the head.
    Here the zero-shot head is a fitted :class:`~skicm.ZeroShotClassifier` (weights
    ``logit_scale * class_weights_`` on normalised image features, no bias) and the
    fine-tuned head a linear probe fitted on the same normalised features; the mixture is

    .. math:: W = (1 - \\alpha) W_{\\text{zero-shot}} + \\alpha W_{\\text{probe}}, \\qquad
              b = \\alpha b_{\\text{probe}}

    so ``alpha=0`` is zero-shot and ``alpha=1`` the probe. Logits are ``f W^T + b`` with ``f``
    the normalised (and, with the zero-shot classifier's ``projector``, projected) features.

    **Where it differs from the released code** (``mlfoundations/wise-ft``): the released
    linear-classifier variant initialises the head from the zero-shot weights and trains it
    end to end with AdamW; here the probe is a scikit-learn classifier fitted from scratch
    (``LogisticRegression`` by default), so its weights have the scale its regularisation
    gives them, not the zero-shot head's. ``alpha`` is a plain parameter, to be searched.

    Parameters
    ----------
    zero_shot : ZeroShotClassifier
        The zero-shot head (unfitted; cloned and fitted on ``X`` and ``y``). Required.
    probe : classifier with ``coef_`` and ``intercept_``, default=None
        The linear probe, cloned and fitted on the normalised features; None means
        ``LogisticRegression()``.
    alpha : float in [0, 1], default=0.5
        Weight of the probe.

    Attributes
    ----------
    zero_shot_ : ZeroShotClassifier
        The fitted zero-shot head.
    probe_ : classifier
        The fitted probe.
    coef_ : ndarray of shape (n_classes, n_features_out)
        The mixed weights ``W``.
    intercept_ : ndarray of shape (n_classes,)
        The mixed bias ``b``.
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` has string column names.

    See Also
    --------
    skicm.ZeroShotClassifier : the zero-shot head.

    References
    ----------
    .. [1] M. Wortsman, G. Ilharco, J. W. Kim, M. Li, S. Kornblith, R. Roelofs, R. Gontijo
       Lopes, H. Hajishirzi, A. Farhadi, H. Namkoong and L. Schmidt, "Robust fine-tuning of
       zero-shot models", CVPR 2022, arXiv:2109.01903.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm import ZeroShotClassifier
    >>> from skicm.baselines import WiSEHead
    >>> text = np.array([[1.0, 0.0], [0.0, 1.0]])  # class prompt embeddings
    >>> X = np.array([[2.0, 0.1], [0.2, 1.0], [1.5, 0.3], [0.1, 2.0]])
    >>> y = np.array([0, 1, 0, 1])
    >>> head = WiSEHead(ZeroShotClassifier(class_embeddings=text), alpha=0.0).fit(X, y)
    >>> head.predict([[3.0, 1.0]]).tolist()  # alpha=0: the zero-shot head alone
    [0]
    """

    _parameter_constraints: ClassVar[dict] = {
        "zero_shot": [HasMethods(["fit", "similarity"])],
        "probe": [HasMethods(["fit", "predict"]), None],
        "alpha": [Interval(Real, 0, 1, closed="both")],
    }

    def __init__(self, zero_shot=None, *, probe=None, alpha=0.5):
        self.zero_shot = zero_shot
        self.probe = probe
        self.alpha = alpha

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, **fit_params):
        """Fit the zero-shot head and the probe, and mix their weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.
        y : array-like of shape (n_samples,)
            Labels; every class of the zero-shot head must occur.
        **fit_params : dict
            Fit metadata for the zero-shot head (its projector's ``X_intervened``,
            ``groups``, ...), routed when metadata routing is on, passed on otherwise.

        Returns
        -------
        self : WiSEHead
            The fitted classifier.
        """
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        if _routing_enabled():
            routed = process_routing(self, "fit", **fit_params).zero_shot.fit
        else:
            routed = fit_params
        zero_shot = clone(self.zero_shot).fit(X, y, **routed)
        features = self._features(zero_shot, X)
        probe = clone(LogisticRegression() if self.probe is None else self.probe)
        probe.fit(features, y)
        if not np.array_equal(np.asarray(zero_shot.classes_), np.asarray(probe.classes_)):
            raise ValueError(
                f"The zero-shot head's classes {np.asarray(zero_shot.classes_).tolist()!r} "
                f"differ from the classes of y {np.asarray(probe.classes_).tolist()!r}: every "
                "class must occur in y, in the zero-shot head's order."
            )
        probe_coef = np.atleast_2d(probe.coef_)
        probe_intercept = np.atleast_1d(probe.intercept_)
        if probe_coef.shape[0] == 1 and len(probe.classes_) == 2:
            # A binary probe scores class 1 against class 0: as two rows, (0, w) and (0, b).
            probe_coef = np.vstack([np.zeros_like(probe_coef), probe_coef])
            probe_intercept = np.concatenate([[0.0], probe_intercept])
        zero_shot_coef = zero_shot.logit_scale * np.asarray(zero_shot.class_weights_)
        self.zero_shot_ = zero_shot
        self.probe_ = probe
        self.classes_ = probe.classes_
        self.coef_ = (1 - self.alpha) * zero_shot_coef + self.alpha * probe_coef
        self.intercept_ = self.alpha * probe_intercept
        return self

    @staticmethod
    def _features(zero_shot, X):
        return _head_features(X, getattr(zero_shot, "projector_", None))

    def _logits(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        features = self._features(self.zero_shot_, X)
        return features @ self.coef_.T.astype(features.dtype) + self.intercept_

    def decision_function(self, X):
        """The mixed logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes) or (n_samples,)
            ``f W^T + b``; for two classes, the score of the second minus the first.
        """
        return _decision_scores(self._logits(X))

    def predict_proba(self, X):
        """Softmax of the mixed logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities, columns in the order of ``classes_``.
        """
        return softmax(self._logits(X).astype(np.float64), axis=1)

    def predict(self, X):
        """The class of largest mixed logit.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def get_metadata_routing(self):
        """Metadata routing: ``fit`` metadata goes to ``zero_shot.fit``.

        Returns
        -------
        routing : MetadataRouter
            The routing of this classifier and its zero-shot head.
        """
        return MetadataRouter(owner=self).add(
            zero_shot=self.zero_shot,
            method_mapping=MethodMapping().add(caller="fit", callee="fit"),
        )


def _common_check_instance():
    """A zero-shot head that needs no text tower: class means of the training images."""
    from skicm.zero_shot import ZeroShotClassifier

    return WiSEHead(ZeroShotClassifier(class_embeddings="image_means"))


#: Estimator checks that cannot apply to the interpolated head.
_EXPECTED_FAILED_CHECKS: dict[str, str] = {}
