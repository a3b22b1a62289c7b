"""One call to build the CLIP-ICM pipeline: embedder, invariant projector, classifier."""

from __future__ import annotations

from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils.metadata_routing import _routing_enabled

from skicm.interventions import DEFAULT_DOMAIN_TEMPLATES, TextInterventions
from skicm.zero_shot import DEFAULT_ZERO_SHOT_TEMPLATES, ZeroShotClassifier

__all__ = ["make_clip_icm_pipeline"]

_PROJECTOR_METADATA = ("X_intervened", "deltas", "groups")


def make_clip_icm_pipeline(
    embedder,
    classifier=None,
    *,
    projector=None,
    class_names=None,
    domain_templates=DEFAULT_DOMAIN_TEMPLATES,
    caption_pairs=None,
    projector_metadata=(),
    zero_shot_templates=DEFAULT_ZERO_SHOT_TEMPLATES,
):
    """Build ``Pipeline([("clip", embedder), ("icm", projector), ("clf", classifier)])``.

    The one embedder specification is wired into every place that needs the model: the image
    step, the :class:`~skicm.interventions.TextInterventions` of the projector and, for
    zero-shot, the class prompts. Those are clones of ``embedder`` (same ``model_name``,
    ``pretrained`` and ``device``), and CLIPEmbedder's process-level model cache loads the model
    once for all of them. Because the text encoder is a copy, a grid over ``clip__model_name``
    would change the image model only: search models with one pipeline per model.

    **What is copied and what is not.** ``projector`` is cloned (so that giving it text
    interventions does not modify the caller's object, and a fitted projector arrives unfitted),
    and the text encoders are clones of ``embedder``. ``embedder`` itself and ``classifier``
    become pipeline steps as given: fitting the pipeline fits (mutates) those very objects, as
    :func:`~sklearn.pipeline.make_pipeline` does; pass ``clone(...)`` to keep the originals
    untouched. The zero-shot classifier is built here, so it is always a new object.

    Parameters
    ----------
    embedder : CLIPEmbedder
        The image (and text) encoder; the ``clip`` step, used as given.
    classifier : estimator, "zero-shot" or None, default=None
        Last step, used as given (not cloned). ``None`` is ``LogisticRegression(max_iter=1000)``
        (the linear probe).
        ``"zero-shot"`` gives the two steps ``("clip", embedder)`` and ``("zeroshot",
        ZeroShotClassifier(..., projector=projector))``: the projector is nested in the
        zero-shot classifier, which projects both image and class embeddings with it (search
        its rank as ``zeroshot__projector__n_components``).
    projector : InvariantProjector, transformer or None, default=None
        The projector, cloned; ``None`` is ``InvariantProjector()``. If it has an
        ``interventions`` parameter that is unset and ``domain_templates`` or ``caption_pairs``
        are given, the clone gets ``TextInterventions(clone(embedder), ...)``. A projector
        without that parameter (any transformer, e.g. ``PCA``) is used without text
        interventions: ``domain_templates`` is then ignored, and ``caption_pairs`` raise.
    class_names : list of str, dict or None, default=None
        Class names for the text interventions and the zero-shot prompts; ``None`` takes them
        from string labels ``y`` at fit time.
    domain_templates : sequence of str or None, default=DEFAULT_DOMAIN_TEMPLATES
        Domain prompt templates of the text interventions; ``None`` turns them off.
    caption_pairs : sequence of (str, str) or None, default=None
        ``(caption, edited caption)`` pairs for the text interventions.
    projector_metadata : sequence of {"X_intervened", "deltas", "groups"}, default=()
        Fit metadata the projector requests through metadata routing (needs
        ``sklearn.set_config(enable_metadata_routing=True)``). ``"X_intervened"`` also puts it
        in the pipeline's ``transform_input``, so counterpart images (from
        :class:`~skicm.interventions.ImageInterventions`) are embedded by the ``clip`` step
        before they reach the projector.
    zero_shot_templates : sequence of str, default=DEFAULT_ZERO_SHOT_TEMPLATES
        Prompt templates of the zero-shot classifier.

    Returns
    -------
    pipeline : Pipeline
        Unfitted; ``pipeline.fit(images, y, **metadata)``.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.embedding import CLIPEmbedder
    >>> from skicm.model_configs import register_tiny_clip
    >>> from skicm.pipelines import make_clip_icm_pipeline
    >>> embedder = CLIPEmbedder(register_tiny_clip(), pretrained=None, device="cpu")
    >>> images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    >>> y = np.array(["cat", "dog"] * 4)
    >>> pipe = make_clip_icm_pipeline(embedder).fit(images, y)
    >>> [name for name, _ in pipe.steps]
    ['clip', 'icm', 'clf']
    >>> pipe.predict(images).shape
    (8,)
    """
    from sklearn.linear_model import LogisticRegression

    from skicm.projection import InvariantProjector

    metadata = tuple(projector_metadata)
    unknown = sorted(set(metadata) - set(_PROJECTOR_METADATA))
    if unknown:
        raise ValueError(
            f"projector_metadata contains {unknown}; the projector's fit metadata are "
            f"{list(_PROJECTOR_METADATA)}."
        )
    if metadata and not _routing_enabled():
        raise ValueError(
            f"projector_metadata={list(metadata)} needs metadata routing: call "
            "sklearn.set_config(enable_metadata_routing=True) first."
        )

    projector = InvariantProjector() if projector is None else clone(projector)
    params = projector.get_params(deep=False)
    if caption_pairs and "interventions" not in params:
        raise ValueError(
            f"caption_pairs need a projector with an interventions parameter (such as "
            f"skicm.InvariantProjector); {type(projector).__name__} has none."
        )
    if (
        "interventions" in params
        and params["interventions"] is None
        and (domain_templates or caption_pairs)
    ):
        projector.set_params(
            interventions=TextInterventions(
                clone(embedder),
                class_names=class_names,
                domain_templates=domain_templates,
                caption_pairs=caption_pairs,
            )
        )
    if metadata:
        projector.set_fit_request(**dict.fromkeys(metadata, True))
    transform_input = ["X_intervened"] if "X_intervened" in metadata else None

    if isinstance(classifier, str):
        if classifier != "zero-shot":
            raise ValueError(
                f'classifier must be an estimator, "zero-shot" or None; got {classifier!r}.'
            )
        zero_shot = ZeroShotClassifier(
            class_names,
            encoder=clone(embedder),
            templates=zero_shot_templates,
            projector=projector,
        )
        steps = [("clip", embedder), ("zeroshot", zero_shot)]
    else:
        if classifier is None:
            classifier = LogisticRegression(max_iter=1000)
        steps = [("clip", embedder), ("icm", projector), ("clf", classifier)]
    return Pipeline(steps, transform_input=transform_input)
