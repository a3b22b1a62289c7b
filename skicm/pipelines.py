"""One call to build the CLIP-ICM pipeline: embedder, invariant projector, classifier."""

from __future__ import annotations

from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils.metadata_routing import _routing_enabled

from skicm.interventions import DEFAULT_DOMAIN_TEMPLATES, TextInterventions
from skicm.zero_shot import DEFAULT_ZERO_SHOT_TEMPLATES, ZeroShotClassifier

__all__ = ["make_clip_icm_pipeline"]

_ROUTED = ("X_intervened", "deltas", "groups")
_INTERVENTIONS = ("text", *_ROUTED)


def make_clip_icm_pipeline(
    embedder,
    classifier=None,
    *,
    interventions,
    projector=None,
    class_names=None,
    domain_templates=DEFAULT_DOMAIN_TEMPLATES,
    caption_pairs=None,
    zero_shot_templates=DEFAULT_ZERO_SHOT_TEMPLATES,
):
    """Build ``Pipeline([("clip", embedder), ("icm", projector), ("clf", classifier)])``.

    ``interventions`` (required, no default) says where the projector's interventional data
    come from, so nothing is added behind the caller's back: ``"text"`` gives the projector
    :class:`~skicm.interventions.TextInterventions` encoded by the same model, and
    ``"X_intervened"``, ``"deltas"`` and ``"groups"`` are fit metadata the projector requests
    through metadata routing. ``"X_intervened"`` also puts it in the pipeline's
    ``transform_input``, so counterpart *images* (from
    :class:`~skicm.interventions.ImageInterventions`) are embedded by the ``clip`` step before
    they reach the projector: the way to pass image counterparts to a pipeline that starts
    with the embedder (the classic ``icm__X_intervened=images`` would hand raw images to the
    projector).

    The one embedder specification is wired into every place that needs the model: the image
    step, the text interventions and, for zero-shot, the class prompts. Those are clones of
    ``embedder`` (same ``model_name``, ``pretrained`` and ``device``), and CLIPEmbedder's
    process-level model cache loads the model once for all of them. Because the text encoder
    is a copy, a grid over ``clip__model_name`` would change the image model only: search
    models with one pipeline per model.

    **What is copied and what is not.** ``projector`` is cloned (so that giving it text
    interventions does not modify the caller's object, and a fitted projector arrives unfitted),
    and the text encoders are clones of ``embedder``. ``embedder`` itself and ``classifier``
    become pipeline steps as given: fitting the pipeline fits (mutates) those very objects, as
    :func:`~sklearn.pipeline.make_pipeline` does; pass ``clone(...)`` to keep the originals
    untouched. The zero-shot classifier is built here, so it is always a new object.

    Parameters
    ----------
    embedder : CLIPEmbedder or ImageEmbedder
        The image (and text) encoder; the ``clip`` step, used as given. ``"text"``
        interventions and ``"zero-shot"`` need its text tower (``has_text_tower``), which an
        :class:`~skicm.ImageEmbedder` lacks.
    classifier : estimator, "zero-shot" or None, default=None
        Last step, used as given (not cloned). ``None`` is ``LogisticRegression(max_iter=1000)``
        (the linear probe).
        ``"zero-shot"`` gives the two steps ``("clip", embedder)`` and ``("zeroshot",
        ZeroShotClassifier(..., projector=projector))``: the projector is nested in the
        zero-shot classifier, which projects both image and class embeddings with it (search
        its rank as ``zeroshot__projector__n_components``).
    interventions : str or sequence of {"text", "X_intervened", "deltas", "groups"}
        The projector's interventional data; required, ``()`` for none (a projector such as
        ``PCA``).

        - ``"text"``: ``TextInterventions(clone(embedder), class_names=class_names,
          domain_templates=domain_templates, caption_pairs=caption_pairs)`` becomes the
          projector's ``interventions`` (which must then be unset);
        - ``"X_intervened"``, ``"deltas"``, ``"groups"``: requested with
          ``projector.set_fit_request(...)`` and passed to ``fit`` by their plain names,
          which needs ``sklearn.set_config(enable_metadata_routing=True)``. ``groups`` given to
          a ``GridSearchCV`` then reaches both the splitter and the projector.
    projector : InvariantProjector, transformer or None, default=None
        The projector, cloned; ``None`` is ``InvariantProjector()``.
    class_names : list of str, dict or None, default=None
        Class names for the text interventions and the zero-shot prompts; ``None`` takes them
        from string labels ``y`` at fit time.
    domain_templates : sequence of str or None, default=DEFAULT_DOMAIN_TEMPLATES
        Domain prompt templates of the ``"text"`` interventions; ``None`` turns them off.
    caption_pairs : sequence of (str, str) or None, default=None
        ``(caption, edited caption)`` pairs of the ``"text"`` interventions.
    zero_shot_templates : sequence of str, default=DEFAULT_ZERO_SHOT_TEMPLATES
        Prompt templates of the zero-shot classifier.

    Returns
    -------
    pipeline : Pipeline
        Unfitted; ``pipeline.fit(images, y, **metadata)``.

    See Also
    --------
    skicm.interventions.ImageInterventions : counterpart images for ``"X_intervened"``.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.embedding import CLIPEmbedder
    >>> from skicm.model_configs import register_tiny_clip
    >>> from skicm.pipelines import make_clip_icm_pipeline
    >>> embedder = CLIPEmbedder(register_tiny_clip(), pretrained=None, device="cpu")
    >>> images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    >>> y = np.array(["cat", "dog"] * 4)
    >>> pipe = make_clip_icm_pipeline(embedder, interventions=["text"]).fit(images, y)
    >>> [name for name, _ in pipe.steps]
    ['clip', 'icm', 'clf']
    >>> pipe.named_steps["icm"].n_differences_seen_  # 2 classes x 28 domain-prompt pairs
    56
    """
    from sklearn.linear_model import LogisticRegression

    from skicm.projection import InvariantProjector

    kinds = (interventions,) if isinstance(interventions, str) else tuple(interventions)
    unknown = [kind for kind in kinds if kind not in _INTERVENTIONS]
    if unknown:
        raise ValueError(
            f"interventions contains {unknown}; choose from {list(_INTERVENTIONS)} (() for none)."
        )
    routed = [kind for kind in _ROUTED if kind in kinds]
    if routed and not _routing_enabled():
        raise ValueError(
            f"interventions={routed} are fit metadata routed to the projector, which needs "
            "metadata routing: call sklearn.set_config(enable_metadata_routing=True) first "
            "(or, without routing, embed counterparts yourself and fit "
            "Pipeline([icm, clf]) on the embeddings with icm__X_intervened=...)."
        )
    text = "text" in kinds
    needs_text = ["interventions=['text']"] if text else []
    if isinstance(classifier, str) and classifier == "zero-shot":
        needs_text.append('classifier="zero-shot"')
    if needs_text and not getattr(embedder, "has_text_tower", hasattr(embedder, "encode_text")):
        raise ValueError(
            f"{' and '.join(needs_text)} need a text tower, and {type(embedder).__name__} has "
            "none (has_text_tower is False): use a skicm.CLIPEmbedder, or interventions from "
            "images or environments (interventions=['X_intervened'] or ['groups'])."
        )
    custom_templates = domain_templates is not None and (
        tuple(domain_templates) != DEFAULT_DOMAIN_TEMPLATES
    )
    if not text and (caption_pairs or custom_templates):
        raise ValueError(
            "domain_templates and caption_pairs configure the text interventions: add "
            "'text' to interventions to use them."
        )

    projector = InvariantProjector() if projector is None else clone(projector)
    params = projector.get_params(deep=False)
    if text:
        if "interventions" not in params:
            raise ValueError(
                f"interventions=['text'] needs a projector with an interventions parameter "
                f"(such as skicm.InvariantProjector); {type(projector).__name__} has none."
            )
        if params["interventions"] is not None:
            raise ValueError(
                "interventions=['text'] would replace the projector's own interventions="
                f"{params['interventions']!r}: drop one of the two."
            )
        projector.set_params(
            interventions=TextInterventions(
                clone(embedder),
                class_names=class_names,
                domain_templates=domain_templates,
                caption_pairs=caption_pairs,
            )
        )
    if routed:
        projector.set_fit_request(**dict.fromkeys(routed, True))
    transform_input = ["X_intervened"] if "X_intervened" in routed else None

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
