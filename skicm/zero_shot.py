"""CLIP zero-shot classification, optionally in the CLIP-ICM invariant subspace."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from numbers import Real
from typing import ClassVar

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import Bunch
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metadata_routing import (
    MetadataRouter,
    MethodMapping,
    _routing_enabled,
    process_routing,
)
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import (
    check_array,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from skicm.interventions import _encode_texts

__all__ = ["DEFAULT_ZERO_SHOT_TEMPLATES", "ZeroShotClassifier"]

#: Prompt templates of :class:`ZeroShotClassifier`: a few of open_clip's ImageNet templates.
DEFAULT_ZERO_SHOT_TEMPLATES = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a rendering of a {}.",
    "a drawing of a {}.",
    "itap of a {}.",
)

_EPS = 1e-12


def _normalize_rows(matrix):
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, _EPS)


class ZeroShotClassifier(ClassifierMixin, BaseEstimator):
    """CLIP zero-shot classifier from class names and prompt templates, optionally invariant.

    Each class is represented by its prompts (``templates`` filled with the class name),
    encoded by the text tower, normalised, averaged over templates and normalised again
    (template ensembling, as open_clip's zero-shot classifier). An image embedding is
    assigned the class of largest cosine similarity.

    With a ``projector`` (an :class:`~skicm.InvariantProjector`), ``fit`` fits a clone of it on
    the image embeddings ``X`` (or, with ``refit_projector=False``, uses it as fitted) and both
    image and class embeddings are projected before the cosine: the invariant predictor of
    CLIP-ICM, ``argmax_c cos(A f_I(x), A f_T(t_c))``.

    **Why the projector is a parameter, not the previous pipeline step.** Inside a
    :class:`~sklearn.pipeline.Pipeline`, and more so in
    :class:`~sklearn.model_selection.GridSearchCV`, each step is cloned and fitted in turn and
    only the transformed ``X`` flows forward: a last step cannot reach the fitted components of
    an earlier projector step to project its text embeddings. Nesting the projector (like the
    ``estimator`` of :class:`~sklearn.feature_selection.SelectFromModel`) keeps one fitted
    projector for both modalities, survives cloning, and its parameters are searchable as
    ``<step>__projector__n_components``. Fit metadata (``X_intervened``, ``groups``,
    ``deltas``) reaches it through metadata routing (``projector.set_fit_request(...)``), or
    directly as ``fit`` keyword arguments when routing is disabled.

    Parameters
    ----------
    class_names : list of str, dict or None, default=None
        Names put into the templates. A list gives one name per class: the labels are the
        names themselves, or ``0 .. n_classes - 1`` when ``fit`` receives integer labels (the
        ``dataset.classes`` convention). A dict maps labels to names. ``None`` takes the
        unique labels of ``y`` in ``fit``, which must then be strings.
    encoder : object with ``encode_text``, default=None
        Text encoder of the same model that embedded ``X``, normally a
        :class:`~skicm.CLIPEmbedder`. Not used when ``class_embeddings`` is given.
    templates : str or sequence of str, default=DEFAULT_ZERO_SHOT_TEMPLATES
        Prompt templates with one ``{}`` for the class name.
    class_embeddings : array-like of shape (n_classes, n_features), "image_means" or None, \
            default=None
        Precomputed class text embeddings (one row per class, in label order), instead of
        ``encoder`` and ``templates``. ``"image_means"`` uses no text at all: each class is the
        normalised mean of its normalised training image embeddings (the nearest-class-mean
        few-shot baseline, which needs ``y``), compared with images exactly as text
        embeddings are; it also makes the classifier usable on any numeric features.
    projector : estimator with ``fit`` and ``transform``, default=None
        Unfitted invariant projector, cloned and fitted on ``X`` in :meth:`fit`. ``None``
        classifies in the full embedding space (plain CLIP zero-shot).
    refit_projector : bool, default=True
        Fit a clone of ``projector`` on ``X`` in :meth:`fit`. ``False`` uses an already fitted
        projector as it is (a deep copy): zero-shot with a projector fitted elsewhere, e.g.
        on more data. Cloning resets a fitted projector, so inside ``GridSearchCV`` keep the
        default.
    logit_scale : float, default=100.0
        Temperature of :meth:`predict_proba`: probabilities are
        ``softmax(logit_scale * cosine)`` (CLIP's learned scale is 100).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of ``class_names`` (sorted when taken from ``y``).
    class_names_ : list of str
        Name of each class.
    class_embeddings_ : ndarray of shape (n_classes, n_features)
        Normalised, template-averaged class text embeddings in the embedding space.
    class_weights_ : ndarray of shape (n_classes, n_components)
        The class embeddings as compared with images: projected (when ``projector`` is
        given) and normalised.
    projector_ : estimator or None
        The fitted clone (or, with ``refit_projector=False``, copy) of ``projector``.
    n_features_in_ : int
        Width of the image embeddings.

    See Also
    --------
    skicm.InvariantProjector : the invariant subspace.
    skicm.interventions.TextInterventions : text interventions for the projector.

    Examples
    --------
    Precomputed embeddings, hand-checkable:

    >>> import numpy as np
    >>> from skicm.zero_shot import ZeroShotClassifier
    >>> text = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> clf = ZeroShotClassifier(["cat", "dog"], class_embeddings=text).fit(np.zeros((1, 2)))
    >>> clf.predict([[2.0, 0.5], [0.1, 3.0]]).tolist()
    ['cat', 'dog']

    In a pipeline with CLIP and the invariant projector (tiny random model, so the
    predictions are arbitrary):

    >>> from sklearn.pipeline import make_pipeline
    >>> from skicm.embedding import CLIPEmbedder
    >>> from skicm.projection import InvariantProjector
    >>> from skicm.interventions import TextInterventions
    >>> from skicm.model_configs import register_tiny_clip
    >>> embedder = CLIPEmbedder(register_tiny_clip(), pretrained=None, device="cpu")
    >>> projector = InvariantProjector(4, interventions=TextInterventions(embedder))
    >>> images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    >>> y = ["cat", "dog", "cat", "dog", "cat", "dog"]
    >>> pipe = make_pipeline(
    ...     embedder, ZeroShotClassifier(encoder=embedder, projector=projector)
    ... ).fit(images, y)
    >>> pipe.predict_proba(images).shape
    (6, 2)
    """

    _parameter_constraints: ClassVar[dict] = {
        "class_names": [list, tuple, dict, np.ndarray, None],
        "encoder": [HasMethods(["encode_text"]), None],
        "templates": [str, list, tuple],
        "class_embeddings": ["array-like", StrOptions({"image_means"}), None],
        "projector": [HasMethods(["fit", "transform"]), None],
        "refit_projector": ["boolean"],
        "logit_scale": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        class_names=None,
        *,
        encoder=None,
        templates=DEFAULT_ZERO_SHOT_TEMPLATES,
        class_embeddings=None,
        projector=None,
        refit_projector=True,
        logit_scale=100.0,
    ):
        self.class_names = class_names
        self.encoder = encoder
        self.templates = templates
        self.class_embeddings = class_embeddings
        self.projector = projector
        self.refit_projector = refit_projector
        self.logit_scale = logit_scale

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, **fit_params):
        """Encode the class prompts and, with a ``projector``, fit it on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings. Only the projector learns from them; plain zero-shot uses them
            to check the width.
        y : array-like of shape (n_samples,), default=None
            Labels: class names when ``class_names`` is None, and passed to the projector.
            Zero-shot itself does not learn from them.
        **fit_params : dict
            Fit metadata for the projector (``X_intervened``, ``deltas``, ``groups``), routed
            when metadata routing is enabled, passed straight on otherwise.

        Returns
        -------
        self : ZeroShotClassifier
            The fitted classifier.
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        if y is not None:
            y = column_or_1d(y, warn=True)
            if y.shape[0] != X.shape[0]:
                raise ValueError(
                    f"y has {y.shape[0]} labels but X has {X.shape[0]} rows; y must have one "
                    "label per row of X."
                )
            target_type = type_of_target(y, input_name="y")
            if target_type not in ("binary", "multiclass"):
                raise ValueError(f"Unknown label type: {target_type}; y must hold class labels.")
        self.classes_, self.class_names_ = self._resolve_classes(y)

        if _routing_enabled():
            routed = process_routing(self, "fit", **fit_params)
        else:
            routed = Bunch(projector=Bunch(fit=fit_params))
            if fit_params and not self._fits_projector():
                raise TypeError(
                    f"fit got unexpected keyword arguments {sorted(fit_params)}: without a "
                    "projector to fit there is nothing to pass them to."
                )

        self.class_embeddings_ = self._class_text_embeddings(X, y)
        if self.class_embeddings_.shape[1] != X.shape[1]:
            raise ValueError(
                f"The class text embeddings have {self.class_embeddings_.shape[1]} features but "
                f"X has {X.shape[1]}; X must be image embeddings of the same model."
            )
        if self._fits_projector():
            self.projector_ = clone(self.projector).fit(X, y, **routed.projector.fit)
            weights = self.projector_.transform(self.class_embeddings_)
        elif self.projector is not None:
            try:
                check_is_fitted(self.projector)
            except NotFittedError as error:
                raise ValueError(
                    "refit_projector=False needs a fitted projector; fit it first or keep "
                    "refit_projector=True."
                ) from error
            self.projector_ = copy.deepcopy(self.projector)
            weights = self.projector_.transform(self.class_embeddings_)
        else:
            self.projector_ = None
            weights = self.class_embeddings_
        self.class_weights_ = _normalize_rows(np.asarray(weights, dtype=X.dtype))
        return self

    def _fits_projector(self):
        return self.projector is not None and self.refit_projector

    def _resolve_classes(self, y):
        names = self.class_names
        if isinstance(names, Mapping):
            labels = np.asarray(list(names.keys()))
            names = list(names.values())
        elif names is not None:
            names = list(names)
            labels = None
        elif y is not None:
            labels = np.unique(y)
            if self.class_embeddings is None and labels.dtype.kind not in "OUS":
                raise ValueError(
                    "class_names is required when the labels are not strings (got labels "
                    f"such as {labels[:3].tolist()!r}); pass class_names=[...] in label order."
                )
            names = [str(label) for label in labels]
        elif self.class_embeddings is not None and not isinstance(self.class_embeddings, str):
            n_classes = len(self.class_embeddings)
            return np.arange(n_classes), [str(i) for i in range(n_classes)]
        else:
            raise ValueError(
                "class_names is required when fit gets no labels y: pass class_names=[...]."
            )

        if not names or not all(isinstance(name, str) for name in names):
            raise ValueError(f"class_names must be a non-empty list of strings, got {names!r}.")
        if len(set(names)) != len(names) and labels is None:
            raise ValueError(f"class_names has duplicates: {names!r}.")
        if labels is None:
            integer_labels = y is not None and np.asarray(y).dtype.kind in "iu"
            labels = np.arange(len(names)) if integer_labels else np.asarray(names, dtype=object)
        if y is not None:
            unknown = np.setdiff1d(np.unique(y), labels)
            if len(unknown):
                raise ValueError(
                    f"y contains labels {unknown[:5].tolist()!r} that are not classes of "
                    f"class_names ({labels.tolist()!r})."
                )
        return labels, names

    def _class_text_embeddings(self, X, y):
        dtype = X.dtype
        n_classes = len(self.classes_)
        if isinstance(self.class_embeddings, str):  # "image_means"
            if y is None:
                raise ValueError('class_embeddings="image_means" needs labels y in fit.')
            images = _normalize_rows(X)
            means = np.zeros((n_classes, X.shape[1]), dtype=dtype)
            for index, label in enumerate(self.classes_):
                members = y == label
                if not members.any():
                    raise ValueError(
                        f'class_embeddings="image_means" needs training images of every class; '
                        f"class {np.asarray(label).tolist()!r} has none."
                    )
                means[index] = images[members].mean(axis=0)
            return _normalize_rows(means)
        if self.class_embeddings is not None:
            embeddings = check_array(self.class_embeddings, input_name="class_embeddings")
            if embeddings.shape[0] != n_classes:
                raise ValueError(
                    f"class_embeddings has {embeddings.shape[0]} rows but there are "
                    f"{n_classes} classes ({self.classes_.tolist()!r}); give one row per class."
                )
            return _normalize_rows(embeddings.astype(dtype, copy=False))
        templates = [self.templates] if isinstance(self.templates, str) else list(self.templates)
        if not templates or not all(
            isinstance(template, str) and template.count("{}") == 1 for template in templates
        ):
            raise ValueError(
                f"templates must be strings with exactly one '{{}}' for the class name; got "
                f"{self.templates!r}."
            )
        prompts = [template.format(name) for name in self.class_names_ for template in templates]
        embeddings = _encode_texts(self.encoder, prompts).astype(dtype, copy=False)
        embeddings = _normalize_rows(embeddings).reshape(n_classes, len(templates), -1)
        return _normalize_rows(embeddings.mean(axis=1))

    def _image_features(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        if self.projector_ is not None:
            X = self.projector_.transform(X)
        return _normalize_rows(np.asarray(X))

    def similarity(self, X):
        """Cosine similarity of each image embedding with each class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        similarity : ndarray of shape (n_samples, n_classes)
            Cosines in [-1, 1], in the invariant subspace when there is a projector.
        """
        features = self._image_features(X)
        return features @ self.class_weights_.astype(features.dtype, copy=False).T

    def decision_function(self, X):
        """Scaled cosine similarities (logits).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes) or (n_samples,)
            ``logit_scale * cosine``; for two classes, the score of the second class minus that
            of the first.
        """
        scores = self.logit_scale * self.similarity(X)
        if scores.shape[1] == 2:
            return scores[:, 1] - scores[:, 0]
        return scores

    def predict_proba(self, X):
        """Class probabilities ``softmax(logit_scale * cosine)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities, columns in the order of ``classes_``.
        """
        # float64 so that a confident float32 row does not underflow to exact zeros
        return softmax(self.logit_scale * self.similarity(X).astype(np.float64), axis=1)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Log-probabilities, columns in the order of ``classes_``.
        """
        logits = self.logit_scale * self.similarity(X).astype(np.float64)
        return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)

    def predict(self, X):
        """The class of largest cosine similarity.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Image embeddings.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted labels, from ``classes_``.
        """
        best = np.argmax(self.similarity(X), axis=1)
        return self.classes_[best]

    def get_metadata_routing(self):
        """Metadata routing: ``fit`` metadata goes to ``projector.fit``.

        Returns
        -------
        routing : MetadataRouter
            The routing of this classifier and its projector.
        """
        router = MetadataRouter(owner=self).add_self_request(self)
        if self._fits_projector():
            router.add(
                projector=self.projector,
                method_mapping=MethodMapping().add(caller="fit", callee="fit"),
            )
        return router

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        return tags


def _common_check_instance():
    """A configuration that runs offline on plain numeric features, for the estimator checks."""
    return ZeroShotClassifier(class_embeddings="image_means")


#: Estimator checks that cannot apply to a zero-shot classifier.
_EXPECTED_FAILED_CHECKS: dict[str, str] = {}
