"""CLIP zero-shot classification, optionally in the CLIP-ICM invariant subspace."""

from __future__ import annotations

import copy
import os
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

from skicm.interventions import (
    _check_placeholder_templates,
    _class_labels_and_names,
    _encode_texts,
)
from skicm.prompts import _check_class_prompts, _is_prompt_file, load_prompts

__all__ = [
    "DEFAULT_ZERO_SHOT_TEMPLATES",
    "TEMPLATE_SETS",
    "ZeroShotClassifier",
    "zero_shot_templates",
]

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

#: Named prompt-template sets, accepted wherever ``templates`` are: ``"openai-imagenet"``
#: (open_clip's 80 ImageNet templates of the CLIP paper), ``"simple-imagenet"`` (open_clip's 7
#: selected ones) and ``"skicm"`` (:data:`DEFAULT_ZERO_SHOT_TEMPLATES`).
TEMPLATE_SETS = ("openai-imagenet", "simple-imagenet", "skicm")


def _resolve_templates(templates, name="templates"):
    """``templates`` as templates with one ``{}`` each, or as a class -> prompts dict.

    Accepts a set name of :data:`TEMPLATE_SETS`, one template or several, a dict of class name
    -> prompts, or the path of a JSON file of either (:func:`skicm.prompts.load_prompts`).
    Set names are returned as they are (expanded by :func:`zero_shot_templates`), so that this
    check imports nothing heavy.
    """
    if isinstance(templates, dict):
        return _check_class_prompts(templates, name)
    if _is_prompt_file(templates) or (
        isinstance(templates, str)
        and "{}" not in templates
        and templates not in TEMPLATE_SETS
        and os.path.isfile(templates)
    ):
        return load_prompts(templates)
    if isinstance(templates, str) and "{}" not in templates:
        if templates not in TEMPLATE_SETS:
            raise ValueError(
                f"{name} must be one of the template sets {list(TEMPLATE_SETS)}, templates with "
                f"exactly one '{{}}' for the class name, or a JSON file of prompts; got "
                f"{templates!r}, which is none of these (and no such file)."
            )
        return templates
    values = [templates] if isinstance(templates, str) else list(templates)
    alternatives = f" (or one of the template sets {list(TEMPLATE_SETS)}, or a JSON file)"
    if not values:
        raise ValueError(
            f"{name} must be strings with exactly one '{{}}' for the class name{alternatives}; "
            f"got {templates!r}, which is empty."
        )
    _check_placeholder_templates(values, name, alternatives=alternatives)
    return values


def _check_templates(templates, name="templates"):
    """Validate ``templates`` (a set name, templates, class -> prompts, or a JSON file of them).

    Every template holds exactly one ``{}``, where the class name goes; every class of a
    class -> prompts mapping has a non-empty list of strings. Imports no open_clip.
    """
    _resolve_templates(templates, name)


def zero_shot_templates(templates="openai-imagenet"):
    """Prompt templates for zero-shot classification, with one ``{}`` for the class name.

    Parameters
    ----------
    templates : str, sequence of str, dict or path-like, default="openai-imagenet"
        A name of :data:`TEMPLATE_SETS`: ``"openai-imagenet"``: open_clip's 80 ImageNet
        templates of the CLIP paper; ``"simple-imagenet"``: open_clip's 7 selected ones;
        ``"skicm"``: :data:`DEFAULT_ZERO_SHOT_TEMPLATES`. A single template containing ``{}``
        or a sequence of them is returned as a list. A dict of class name -> prompts (CuPL's
        format) is returned checked, and the path of a JSON file of either layout is read
        with :func:`skicm.prompts.load_prompts`.

    Returns
    -------
    templates : list of str or dict of str to list of str
        Templates with one ``{}``, or class name -> prompts.

    Raises
    ------
    ValueError
        If ``templates`` is neither a set's name, templates with exactly one ``{}`` each, a
        class -> prompts mapping nor a readable JSON file of prompts (naming the file).

    Examples
    --------
    >>> from skicm.zero_shot import zero_shot_templates
    >>> len(zero_shot_templates()), zero_shot_templates()[0]
    (80, 'a bad photo of a {}.')
    >>> zero_shot_templates("a photo of a {}.")
    ['a photo of a {}.']
    """
    templates = _resolve_templates(templates)
    if isinstance(templates, str):  # a set name
        if templates == "skicm":
            return list(DEFAULT_ZERO_SHOT_TEMPLATES)
        from open_clip import zero_shot_metadata

        name = templates.split("-")[0].upper() + "_IMAGENET_TEMPLATES"
        return [template("{}") for template in getattr(zero_shot_metadata, name)]
    return templates


_EPS = 1e-12


def _prompt_key(name):
    return name.replace("_", " ").strip().casefold()


def _class_prompts(prompts, class_names):
    """The prompts of each class of ``class_names`` in a class -> prompts mapping.

    A class is looked up by its exact name, else by its name with underscores as spaces,
    ignoring case (DomainBed's folder ``alarm_clock`` finds CuPL's ``"alarm clock"``).
    """
    source = getattr(prompts, "source", "templates")  # the file it was read from, if any
    loose = {}
    for key in prompts:
        loose.setdefault(_prompt_key(key), []).append(key)
    chosen, missing = [], []
    for name in class_names:
        if name in prompts:
            chosen.append(prompts[name])
            continue
        keys = loose.get(_prompt_key(name), [])
        if len(keys) > 1:
            raise ValueError(
                f"Class {name!r} matches several classes of {source}: {keys!r}; name it "
                "exactly as one of them."
            )
        if keys:
            chosen.append(prompts[keys[0]])
        else:
            missing.append(name)
    if missing:
        raise ValueError(
            f"Classes {missing!r} have no prompts in {source}, which has prompts for "
            f"{sorted(prompts)[:10]!r}{' ...' if len(prompts) > 10 else ''}; add them, or "
            "give class_names that match its keys."
        )
    return chosen


def _check_prompt_classes(templates, class_names):
    """Raise if class -> prompts ``templates`` lack a class of ``class_names``; else nothing.

    For callers that know the class names before anything is embedded (``skicm evaluate``);
    templates with ``{}`` fit every class.
    """
    if isinstance(templates, dict) and class_names is not None:
        _class_prompts(templates, list(class_names))


def _normalize_rows(matrix):
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, _EPS)


def _head_features(X, projector):
    """Image embeddings as a zero-shot head reads them: through ``projector`` (when there is
    one), then scaled to unit norm; the features of :class:`ZeroShotClassifier` and of the
    heads built on it (:class:`~skicm.baselines.WiSEHead`)."""
    if projector is not None:
        X = projector.transform(X)
    return _normalize_rows(np.asarray(X))


def _decision_scores(logits):
    """``decision_function`` from per-class logits: for two classes, the second minus the
    first (scikit-learn's binary convention), else the logits."""
    if logits.shape[1] == 2:
        return logits[:, 1] - logits[:, 0]
    return logits


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

    **One map for both modalities.** The class embeddings go through the very same
    ``projector_.transform`` as the images, so ``class_weights_`` is
    ``normalise(projector_.transform(class_embeddings_))``. For a projector with
    ``center=True`` that map is affine, ``x -> A (x - mean_)`` with ``mean_`` the mean *image*
    embedding, and the class embeddings are centred on that image mean too:
    ``class_weights_ = normalise(A (t_c - mean_))``, not ``normalise(A t_c)``. This is
    deliberate: images and prompts are compared after one and the same map, and subtracting
    the image mean from both removes part of CLIP's modality gap (the nearly constant offset
    between image and text embeddings) instead of leaving it in the class side only. With the
    default ``center=False`` the map is linear and ``class_weights_ = normalise(A t_c)``.

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
    templates : str, sequence of str, dict or path-like, default=DEFAULT_ZERO_SHOT_TEMPLATES
        Prompt templates with one ``{}`` for the class name, or the name of a set of
        :data:`TEMPLATE_SETS` (e.g. ``"openai-imagenet"``, the CLIP paper's 80 templates).
        A dict of class name -> list of full prompts (CuPL's format) gives each class its own
        prompts: its embedding is the normalised mean of its prompts' normalised embeddings.
        A path to a JSON file of either (CLIP_benchmark's ``--custom_template_file``: class
        -> prompts, or a list of templates with ``{c}``) is read in :meth:`fit` with
        :func:`skicm.prompts.load_prompts`. A class missing from the mapping (exact name,
        else the name with underscores as spaces, ignoring case) makes ``fit`` raise.
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
    class_weights_ : ndarray of shape (n_classes, n_features) or (n_classes, n_components)
        The class embeddings as compared with images:
        ``normalise(projector_.transform(class_embeddings_))``, of shape
        ``(n_classes, n_components)``, with a ``projector``; ``class_embeddings_`` itself, of
        shape ``(n_classes, n_features)``, without one.
    projector_ : estimator or None
        The fitted clone (or, with ``refit_projector=False``, copy) of ``projector``; None
        without a projector.
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
        "templates": [str, list, tuple, dict, os.PathLike],
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

        Notes
        -----
        All fitted attributes are assigned together once every step has succeeded: a ``fit``
        that raises leaves the previous fit intact, or, on a first fit, the classifier
        unfitted (:class:`~sklearn.exceptions.NotFittedError`).
        """
        # Everything is computed into locals and assigned at the end: a fit that raises leaves
        # the previous fitted state intact (or, on a first fit, no fitted attribute at all).
        X_given = X
        X = check_array(X, dtype=[np.float64, np.float32], input_name="X", estimator=self)
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
        elif isinstance(self.class_embeddings, str):  # "image_means"
            raise ValueError(
                'class_embeddings="image_means" needs labels y in fit: each class is the mean '
                "of its training image embeddings."
            )
        classes, class_names = self._resolve_classes(y)

        if _routing_enabled():
            routed = process_routing(self, "fit", **fit_params)
        else:
            routed = Bunch(projector=Bunch(fit=fit_params))
            if fit_params and not self._fits_projector():
                if self.projector is None:
                    reason = "without a projector to fit there is nothing to pass them to."
                else:
                    reason = (
                        "with refit_projector=False the projector is used as already fitted, "
                        "so fit metadata cannot reach it; fit the projector with them first, or "
                        "keep refit_projector=True."
                    )
                raise TypeError(
                    f"fit got unexpected keyword arguments {sorted(fit_params)}: {reason}"
                )
        if self.projector is not None and not self.refit_projector:
            self._check_prefitted_projector(X)

        class_embeddings = self._class_text_embeddings(X, y, classes, class_names)
        if class_embeddings.shape[1] != X.shape[1]:
            raise ValueError(
                f"The class text embeddings have {class_embeddings.shape[1]} features but "
                f"X has {X.shape[1]}; X must be image embeddings of the same model."
            )
        if self._fits_projector():
            projector = clone(self.projector).fit(X, y, **routed.projector.fit)
        elif self.projector is not None:
            projector = copy.deepcopy(self.projector)
        else:
            projector = None
        # One map for both modalities: the class embeddings go through the same
        # projector.transform as the images (with center=True, minus the image mean).
        weights = class_embeddings if projector is None else projector.transform(class_embeddings)
        class_weights = _normalize_rows(np.asarray(weights, dtype=X.dtype))

        validate_data(self, X_given, skip_check_array=True)  # n_features_in_, feature_names_in_
        self.classes_ = classes
        self.class_names_ = class_names
        self.class_embeddings_ = class_embeddings
        self.projector_ = projector
        self.class_weights_ = class_weights
        return self

    def _fits_projector(self):
        return self.projector is not None and self.refit_projector

    def _check_prefitted_projector(self, X):
        try:
            check_is_fitted(self.projector)
        except NotFittedError as error:
            raise ValueError(
                "refit_projector=False needs a fitted projector; fit it first or keep "
                "refit_projector=True."
            ) from error
        n_features = getattr(self.projector, "n_features_in_", X.shape[1])
        if n_features != X.shape[1]:
            raise ValueError(
                f"refit_projector=False: the projector was fitted on {n_features} features but X "
                f"has {X.shape[1]}; fit it on embeddings of the same model as X."
            )

    def _resolve_classes(self, y):
        if (
            self.class_names is None
            and y is None
            and self.class_embeddings is not None
            and not isinstance(self.class_embeddings, str)
        ):
            n_classes = len(self.class_embeddings)
            return np.arange(n_classes), [str(i) for i in range(n_classes)]
        # Names from y need not be strings when no prompts are built from them.
        labels, names = _class_labels_and_names(
            self.class_names, y, string_labels=self.class_embeddings is None
        )
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

    def _class_text_embeddings(self, X, y, classes, class_names):
        dtype = X.dtype
        n_classes = len(classes)
        if isinstance(self.class_embeddings, str):  # "image_means", y checked in fit
            images = _normalize_rows(X)
            means = np.zeros((n_classes, X.shape[1]), dtype=dtype)
            for index, label in enumerate(classes):
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
                    f"{n_classes} classes ({classes.tolist()!r}); give one row per class."
                )
            return _normalize_rows(embeddings.astype(dtype, copy=False))
        templates = zero_shot_templates(self.templates)
        if isinstance(templates, dict):
            per_class = _class_prompts(templates, class_names)
        else:
            per_class = [[template.format(name) for template in templates] for name in class_names]
        prompts = [prompt for class_prompts in per_class for prompt in class_prompts]
        embeddings = _encode_texts(self.encoder, prompts).astype(dtype, copy=False)
        embeddings = _normalize_rows(embeddings)
        # Each class: the mean of its own prompts' normalised embeddings (classes of a
        # class -> prompts mapping may have different numbers of prompts), normalised again.
        ends = np.cumsum([len(class_prompts) for class_prompts in per_class])
        means = np.stack([block.mean(axis=0) for block in np.split(embeddings, ends[:-1])])
        return _normalize_rows(means)

    def _image_features(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return _head_features(X, self.projector_)

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
        return _decision_scores(self.logit_scale * self.similarity(X))

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
