"""The evaluated methods (columns of the results) and the projectors they share."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

from skicm.evaluation._options import _TEMPLATE_SETS, _check_templates
from skicm.evaluation._selection import _fit


def make_linear_probe(C=1.0):
    """The linear probe of every evaluation: ``StandardScaler`` then ``LogisticRegression``.

    One definition for the documentation, the Python protocol and ``skicm evaluate``, so their
    numbers agree (an unscaled logistic regression on CLIP embeddings is a different, weaker
    model at the same ``C``).

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength of the logistic regression.

    Returns
    -------
    probe : sklearn.pipeline.Pipeline
        ``make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))``.

    Examples
    --------
    >>> from skicm.evaluation import make_linear_probe
    >>> make_linear_probe(0.1).named_steps["logisticregression"].C
    0.1
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))


def zero_shot_templates(templates="openai-imagenet"):
    """Prompt templates for the zero-shot columns, with one ``{}`` for the class name.

    Parameters
    ----------
    templates : str or sequence of str, default="openai-imagenet"
        ``"openai-imagenet"``: open_clip's 80 ImageNet templates of the CLIP paper;
        ``"simple-imagenet"``: open_clip's 7 selected ones; ``"skicm"``:
        :data:`skicm.zero_shot.DEFAULT_ZERO_SHOT_TEMPLATES`; a single template containing
        ``{}`` or a sequence of them is returned as a list.

    Returns
    -------
    templates : list of str

    Examples
    --------
    >>> from skicm.evaluation import zero_shot_templates
    >>> len(zero_shot_templates()), zero_shot_templates()[0]
    (80, 'a bad photo of a {}.')
    >>> zero_shot_templates("a photo of a {}.")
    ['a photo of a {}.']
    """
    _check_templates(templates)
    if isinstance(templates, str) and templates in _TEMPLATE_SETS:
        if templates == "skicm":
            from skicm.zero_shot import DEFAULT_ZERO_SHOT_TEMPLATES

            return list(DEFAULT_ZERO_SHOT_TEMPLATES)
        from open_clip import zero_shot_metadata

        name = templates.split("-")[0].upper() + "_IMAGENET_TEMPLATES"
        return [template("{}") for template in getattr(zero_shot_metadata, name)]
    return [templates] if isinstance(templates, str) else list(templates)


@dataclass
class _Method:
    name: str
    kind: str | None  # interventional data of the projector, None without projector
    zero_shot: bool
    grid: list  # list of dicts: n_components, alpha (ICM methods), C (probes)
    build: Callable  # (fitted projector or None, C or None) -> unfitted estimator


def _projector(kind, text_encoder, class_names):
    from skicm.interventions import TextInterventions
    from skicm.projection import InvariantProjector

    interventions = None
    if kind == "text":
        interventions = TextInterventions(text_encoder, class_names=list(class_names))
    projector = InvariantProjector(interventions=interventions)
    return projector.set_fit_request(X_intervened=kind == "image", groups=kind == "groups")


def _build_methods(kinds, *, zero_shot, probe, grid, text_encoder, class_names, templates):
    """The evaluated methods, in column order."""
    from sklearn.frozen import FrozenEstimator
    from sklearn.pipeline import Pipeline

    from skicm.zero_shot import ZeroShotClassifier

    projector_grid = [
        {"n_components": n, "alpha": a} for n, a in product(grid["n_components"], grid["alpha"])
    ]

    def zero_shot_classifier(projector, C=None):
        # A fitted projector is used as it is (one fit serves every rank of the grid).
        return ZeroShotClassifier(
            list(class_names), encoder=text_encoder, templates=templates, projector=projector,
            refit_projector=False,
        )  # fmt: skip

    def linear_probe(projector, C):
        probe_steps = make_linear_probe(C).steps
        if projector is None:
            return Pipeline(probe_steps)
        return Pipeline([("invariantprojector", FrozenEstimator(projector)), *probe_steps])

    methods = []
    if zero_shot:
        methods.append(_Method("zero-shot", None, True, [{}], zero_shot_classifier))
        for kind in kinds:
            name = f"zero-shot ICM ({kind})"
            methods.append(_Method(name, kind, True, projector_grid, zero_shot_classifier))
    if probe:
        c_grid = [{"C": c} for c in grid["C"]]
        methods.append(_Method("linear probe", None, False, c_grid, linear_probe))
        for kind in kinds:
            pipeline_grid = [{**p, **c} for p, c in product(projector_grid, c_grid)]
            name = f"linear probe ICM ({kind})"
            methods.append(_Method(name, kind, False, pipeline_grid, linear_probe))
    return methods


class _ProjectorFits:
    """Fitted projectors by (kind, alpha, training rows): one eigendecomposition per alpha.

    The directions of a projector fitted with ``n_components=k`` are the first ``k`` of the
    same projector fitted with every direction (the eigenvectors of one ``M``), so every rank
    of the grid is a truncation of one fit: a grid over ``r`` ranks and ``c`` values of ``C``
    costs one projector fit instead of ``r * c``.
    """

    def __init__(self, features, text_encoder, class_names):
        self.features = features
        self.text_encoder = text_encoder
        self.class_names = class_names
        self._fits = {}

    def get(self, kind, alpha, n_components, rows):
        key = (kind, alpha, rows.shape[0], hashlib.sha1(rows.tobytes()).hexdigest())
        full = self._fits.get(key)
        if full is None:
            projector = _projector(kind, self.text_encoder, self.class_names)
            projector.set_params(n_components=self.features.X.shape[1], alpha=alpha)
            full = self._fits[key] = _fit(projector, self.features, rows, kind)
        return _truncated(full, n_components)


def _truncated(projector, n_components):
    """The projector with its first directions only, as if fitted with ``n_components``."""
    from skicm.projection import count_positive_eigenvalues

    if n_components == "auto":
        k = max(1, count_positive_eigenvalues(projector.eigenvalues_))
    else:
        k = min(int(n_components), projector.components_.shape[0])
    truncated = copy.copy(projector)
    truncated.n_components = n_components
    truncated.n_components_ = k
    for name in ("components_", "signal_variance_", "intervention_variance_", "invariance_ratio_"):
        setattr(truncated, name, getattr(projector, name)[:k])
    return truncated
