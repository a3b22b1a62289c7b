"""Interventional data for CLIP-ICM: image counterparts, text differences, environment labels.

CLIP-ICM estimates the invariant subspace from *interventional pairs*: two inputs that share the
invariant factors (what the object is) and differ in variant ones (style, colour, background,
domain). This module makes such pairs in the two ways of the paper:

- :class:`ImageInterventions` transforms each image (the paper's seven photometric
  transformations, or any callable) into sample-aligned counterparts. Encoded by the same
  :class:`~skicm.CLIPEmbedder`, they become ``X_intervened`` of
  :meth:`skicm.InvariantProjector.fit` (through metadata routing in a pipeline);
- :class:`TextInterventions` makes differences of text embeddings that need no images:
  templated domain prompts for class names, user caption pairs and image-caption pairs. It is
  an ``interventions=`` source of :class:`~skicm.InvariantProjector`: the projector calls its
  :meth:`~TextInterventions.differences` during ``fit``, so a plain pipeline needs no extra
  fit arguments.

Environment labels alone need nothing from this module: pass them as ``groups`` to the
projector (``InvariantProjector().set_fit_request(groups=True)`` in a pipeline), which forms
differences of class-conditional environment means.

Nothing here imports torch, torchvision or open_clip at module import time.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import combinations
from numbers import Integral
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from skicm._templates import _check_placeholder_templates

__all__ = [
    "DEFAULT_DOMAIN_TEMPLATES",
    "PAPER_IMAGE_INTERVENTIONS",
    "ImageInterventions",
    "TextInterventions",
    "clear_text_cache",
    "paper_image_transforms",
]

#: Names of the paper's seven image interventions, in the order of :func:`paper_image_transforms`.
PAPER_IMAGE_INTERVENTIONS = (
    "color_jitter",
    "grayscale",
    "gaussian_blur",
    "invert",
    "posterize",
    "solarize",
    "equalize",
)

#: Domain (style) prompt templates of :class:`TextInterventions`; ``{}`` is the class name.
#: Each describes the same object in another rendering, so the differences between two of them
#: for one class change only the environment.
DEFAULT_DOMAIN_TEMPLATES = (
    "a photo of a {}.",
    "a sketch of a {}.",
    "a painting of a {}.",
    "a cartoon of a {}.",
    "art of a {}.",
    "a black and white photo of a {}.",
    "a blurry photo of a {}.",
    "a toy {}.",
)


class _GaussianBlur:
    """Gaussian blur whose kernel grows with the image (about 10 % of the shorter side, odd)."""

    def __init__(self, sigma=(0.5, 2.0), kernel_fraction=0.1):
        self.sigma = sigma
        self.kernel_fraction = kernel_fraction

    def __call__(self, image):
        from torchvision.transforms import GaussianBlur

        size = max(3, int(self.kernel_fraction * min(image.size)) | 1)
        return GaussianBlur(kernel_size=size, sigma=self.sigma)(image)

    def __repr__(self):
        return f"GaussianBlur(kernel~{self.kernel_fraction:g}*min(H, W), sigma={self.sigma})"


def paper_image_transforms():
    """The paper's seven image interventions as torchvision transforms on PIL images.

    Strengths (each transform always fires, ``p=1``, so that no counterpart equals its image):

    =================  ==========================================================================
    ``color_jitter``   ``ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)``
                       (the SimCLR colour distortion at strength 0.5)
    ``grayscale``      ``Grayscale(num_output_channels=3)``
    ``gaussian_blur``  ``GaussianBlur(sigma=(0.5, 2.0))``, kernel about 10 % of the shorter side
                       (torchvision's default lower bound 0.1 returns about one uint8 image in
                       ten unchanged: no intervention at all)
    ``invert``         ``RandomInvert(p=1.0)``
    ``posterize``      ``RandomPosterize(bits=3, p=1.0)`` (keep 3 bits per channel)
    ``solarize``       ``RandomSolarize(threshold=128, p=1.0)``
    ``equalize``       ``RandomEqualize(p=1.0)``
    =================  ==========================================================================

    None changes the image size; randomness comes from torch's generator, which
    :class:`ImageInterventions` seeds per image.

    Returns
    -------
    transforms : dict of str to callable
        Transform per name of :data:`PAPER_IMAGE_INTERVENTIONS`.

    Examples
    --------
    >>> from skicm.interventions import paper_image_transforms
    >>> sorted(paper_image_transforms())[:3]
    ['color_jitter', 'equalize', 'gaussian_blur']
    """
    from torchvision import transforms as T

    return {
        "color_jitter": T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
        "grayscale": T.Grayscale(num_output_channels=3),
        "gaussian_blur": _GaussianBlur(sigma=(0.5, 2.0)),
        "invert": T.RandomInvert(p=1.0),
        "posterize": T.RandomPosterize(bits=3, p=1.0),
        "solarize": T.RandomSolarize(threshold=128, p=1.0),
        "equalize": T.RandomEqualize(p=1.0),
    }


class ImageInterventions(BaseEstimator):
    """Sample-aligned intervened counterparts of images, for ``X_intervened``.

    Each counterpart is its image after one intervention drawn at random (uniformly) from
    ``transforms``, as in the authors' released code. The counterparts are then encoded by the
    same :class:`~skicm.CLIPEmbedder` as the images (in a pipeline: ``transform_input=
    ["X_intervened"]``, see :doc:`/interventions`), and row ``i`` of the encoded counterparts is
    the interventional partner of row ``i`` of ``X``. ``apply(images, return_transforms=True)``
    also says which intervention made each counterpart.

    Parameters
    ----------
    transforms : "paper", callable or sequence of str or callable, default="paper"
        Interventions to draw from. ``"paper"`` is the seven of :func:`paper_image_transforms`;
        a sequence may mix their names (:data:`PAPER_IMAGE_INTERVENTIONS`) with callables. A
        callable (a torchvision transform or any function) takes and returns an RGB PIL image;
        one that draws from torch's random generator is reproducible under ``random_state``.
    n_per_image : int, default=1
        Counterparts per image. With more than one, :meth:`apply` returns them image by image
        (``n_per_image`` consecutive counterparts per image); ``return_index=True`` gives the
        source image of each, to repeat ``X``, ``y`` and ``groups`` alongside.
    preserve_size : bool, default=True
        Raise if an intervention changes the image size. Counterparts of a different size
        still embed (the embedder resizes), but a crop or rescale is a geometric change of the
        object rather than of its environment, and arrays of counterparts must stack.
    random_state : int, RandomState instance or None, default=None
        Seed of the draws. An integer makes the counterparts reproducible; counterpart ``j``
        of image ``i`` depends only on the seed, ``i`` and ``j``, not on the other images.
        Torch's global random state is left untouched: each draw seeds only the CPU
        generator, inside :func:`torch.random.fork_rng`, and no CUDA generator is seeded.

    See Also
    --------
    TextInterventions : interventional differences from text, without images.
    skicm.InvariantProjector : consumes the counterparts as ``X_intervened``.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.interventions import ImageInterventions
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    >>> counterparts = ImageInterventions(random_state=0).apply(images)
    >>> counterparts.shape, counterparts.dtype
    ((4, 16, 16, 3), dtype('uint8'))
    >>> again = ImageInterventions(random_state=0).apply(images)
    >>> bool((counterparts == again).all())
    True
    >>> pairs, index = ImageInterventions(
    ...     ["grayscale", "invert"], n_per_image=2, random_state=0
    ... ).apply(images, return_index=True)
    >>> pairs.shape, index.tolist()
    ((8, 16, 16, 3), [0, 0, 1, 1, 2, 2, 3, 3])
    """

    _parameter_constraints: ClassVar[dict] = {
        "transforms": [StrOptions({"paper"}), callable, list, tuple],
        "n_per_image": [Interval(Integral, 1, None, closed="left")],
        "preserve_size": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(self, transforms="paper", *, n_per_image=1, preserve_size=True, random_state=None):
        self.transforms = transforms
        self.n_per_image = n_per_image
        self.preserve_size = preserve_size
        self.random_state = random_state

    # torchvision transforms have a static ``get_params`` that is not scikit-learn's, so
    # sklearn's recursive get_params and clone would call it: treat the parameters as plain values.
    def get_params(self, deep=True):
        """Get the parameters (never recursing into the transforms).

        Parameters
        ----------
        deep : bool, default=True
            Ignored: the parameters hold no estimators.

        Returns
        -------
        params : dict
            Parameter names mapped to their values.
        """
        return super().get_params(deep=False)

    def __sklearn_clone__(self):
        return type(self)(**copy.deepcopy(self.get_params()))

    def _resolve_transforms(self):
        if isinstance(self.transforms, str):
            return list(paper_image_transforms().items())
        if callable(self.transforms):
            return [(_callable_name(self.transforms), self.transforms)]
        if len(self.transforms) == 0:
            raise ValueError("transforms is empty; give at least one intervention.")
        paper = None
        resolved = []
        for item in self.transforms:
            if isinstance(item, str):
                if item not in PAPER_IMAGE_INTERVENTIONS:
                    raise ValueError(
                        f"transforms contains the unknown name {item!r}; the known names are "
                        f"{list(PAPER_IMAGE_INTERVENTIONS)}, or pass a callable."
                    )
                paper = paper_image_transforms() if paper is None else paper
                resolved.append((item, paper[item]))
            elif callable(item):
                resolved.append((_callable_name(item), item))
            else:
                raise ValueError(
                    f"transforms contains {item!r}, which is neither an intervention name nor "
                    "a callable."
                )
        # Name each callable so that two different ones never share a name (two lambdas, two
        # ColorJitter of different strengths): the names say which one made a counterpart.
        counts = {}
        for name, function in resolved:
            counts.setdefault(name, set()).add(id(function))
        return [
            (f"{name}[{position}]" if len(counts[name]) > 1 else name, function)
            for position, (name, function) in enumerate(resolved)
        ]

    def _identity(self):
        """What, besides the image, the seed and its index, determines a counterpart.

        A JSON-serialisable description, or None when it cannot be told without running the
        transforms (callables: their code is not identified). Covers the parameters, the
        source of the paper's transforms and of the image decoding (this module and
        :mod:`skicm.image_loading`, by content) and the versions of the packages that
        implement the transforms (torch, torchvision, Pillow), all read without importing
        torch. Two counterparts of the same image, call seed and index whose identities are
        equal are the same pixels; an embedding store may key them by it instead of hashing
        their pixels.
        """
        if isinstance(self.transforms, str):
            names = [self.transforms]
        elif callable(self.transforms) or not all(isinstance(t, str) for t in self.transforms):
            return None
        else:
            names = list(self.transforms)
        import hashlib
        import importlib.metadata

        from skicm import image_loading

        sources = {}
        for module_file in (__file__, image_loading.__file__):
            with open(module_file, "rb") as source:
                sources[os.path.basename(module_file)] = hashlib.sha256(source.read()).hexdigest()
        versions = {}
        for package in ("torch", "torchvision", "pillow"):
            try:
                versions[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                versions[package] = None
        return {
            "transforms": list(names),
            "n_per_image": int(self.n_per_image),
            "preserve_size": bool(self.preserve_size),
            "sources": sources,
            "versions": versions,
        }

    def apply(self, images, *, return_index=False, return_transforms=False):
        """Make the intervened counterparts of ``images``.

        Parameters
        ----------
        images : sequence of images or uint8 array of shape (N, H, W, C)
            The images, in any form :class:`~skicm.CLIPEmbedder` accepts (paths, PIL images,
            arrays (H, W[, C]); grayscale and RGBA are converted to RGB).
        return_index : bool, default=False
            Also return the index of the source image of each counterpart.
        return_transforms : bool, default=False
            Also return the name of the intervention that made each counterpart.

        Returns
        -------
        counterparts : list or ndarray of length ``len(images) * n_per_image``
            A uint8 array (N * n_per_image, H, W, 3) when ``images`` is one array (and the
            counterparts share one size); otherwise a list holding a uint8 (H, W, 3) array
            for each array image and an RGB PIL image for each path or PIL image.
        index : ndarray of shape (len(images) * n_per_image,)
            Source image of each counterpart (``np.repeat(np.arange(N), n_per_image)``); only
            with ``return_index=True``.
        transform_names : ndarray of str of shape (len(images) * n_per_image,)
            The intervention that made each counterpart: its name in
            :data:`PAPER_IMAGE_INTERVENTIONS`, or a callable's ``__name__`` (its class name
            for a transform object such as ``ColorJitter``), followed by ``[k]``, its position
            in ``transforms``, when different callables share that name; only with
            ``return_transforms=True``. Returned after ``index`` when both are asked for.

        Examples
        --------
        >>> import numpy as np
        >>> from skicm.interventions import ImageInterventions
        >>> images = np.full((4, 8, 8, 3), 200, dtype=np.uint8)
        >>> counterparts, names = ImageInterventions(
        ...     ["invert", "grayscale"], random_state=2
        ... ).apply(images, return_transforms=True)
        >>> names.tolist()
        ['invert', 'grayscale', 'invert', 'grayscale']
        >>> [int(image[0, 0, 0]) for image in counterparts]  # 255 - 200 where inverted
        [55, 200, 55, 200]
        """
        self._validate_params()
        import torch

        from skicm.image_loading import as_image_list, describe_image, load_rgb

        stacked = (
            isinstance(images, np.ndarray) and images.ndim in (3, 4) and images.dtype.kind in "ui"
        )
        items = as_image_list(images, type(self).__name__)
        transforms = self._resolve_transforms()
        # One seed per call; every counterpart gets its own stream from (seed, image, copy), so
        # a counterpart does not depend on the other images or on how they are batched.
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

        counterparts, names = [], []
        for i, image in enumerate(items):
            try:
                pil = load_rgb(image)
            except (OSError, ValueError, TypeError, AttributeError) as error:
                raise ValueError(
                    f"images[{i}] = {describe_image(items, i)} is not a readable image: {error}"
                ) from error
            as_array = isinstance(image, np.ndarray)
            for j in range(self.n_per_image):
                rng = np.random.default_rng([seed, i, j])
                name, transform = transforms[int(rng.integers(len(transforms)))]
                # fork_rng(devices=[]) saves and restores the CPU generator only, so seed only
                # that one: torch.manual_seed would also (lazily) re-seed every CUDA device.
                with torch.random.fork_rng(devices=[]):
                    torch.random.default_generator.manual_seed(int(rng.integers(2**62)))
                    result = transform(pil)
                result = self._check_result(result, pil, name, i)
                counterparts.append(np.asarray(result, dtype=np.uint8) if as_array else result)
                names.append(name)

        if stacked and len({counterpart.shape for counterpart in counterparts}) == 1:
            counterparts = np.stack(counterparts)
        extra = []
        if return_index:
            extra.append(np.repeat(np.arange(len(items)), self.n_per_image))
        if return_transforms:
            extra.append(np.asarray(names, dtype=str).reshape(-1))
        return (counterparts, *extra) if extra else counterparts

    def _check_result(self, result, original, name, index):
        from PIL import Image

        if isinstance(result, np.ndarray) and result.dtype == np.uint8 and result.ndim in (2, 3):
            from skicm.image_loading import load_rgb

            result = load_rgb(result)
        if not isinstance(result, Image.Image):
            raise ValueError(
                f"The intervention {name!r} returned a {type(result).__name__} for images"
                f"[{index}]; an intervention must return a PIL image (or a uint8 (H, W, 3) "
                "array). Put tensor conversions after the intervention, not inside it."
            )
        if self.preserve_size and result.size != original.size:
            raise ValueError(
                f"The intervention {name!r} changed the size of images[{index}] from "
                f"{original.size} to {result.size} (width, height); interventions must keep "
                "the image size (set preserve_size=False to allow it)."
            )
        return result.convert("RGB")


def _callable_name(function):
    return getattr(function, "__name__", None) or type(function).__name__


def _class_labels_and_names(class_names, y=None, *, string_labels=True):
    """Class labels and names from ``class_names`` (list or label->name dict) or the labels ``y``.

    The one validation of ``class_names`` shared by :class:`TextInterventions` and
    :class:`~skicm.zero_shot.ZeroShotClassifier`. Explicit names keep their order; names from
    ``y`` are its sorted unique labels, which must be strings when ``string_labels`` is True.

    Returns
    -------
    labels : ndarray or None
        The dict keys, or the unique labels of ``y``; None for a list of names, whose labels
        are up to the caller.
    names : list of str
        One name per class.
    """
    if isinstance(class_names, Mapping):
        labels = np.asarray(list(class_names.keys()))
        names = list(class_names.values())
    elif class_names is not None:
        labels = None
        names = list(class_names)
    elif y is None:
        raise ValueError(
            "class_names is required when fit gets no labels y: pass class_names=[...] or fit "
            "with string labels y."
        )
    else:
        labels = np.unique(y)
        if string_labels and not all(isinstance(label, str) for label in labels):
            raise ValueError(
                "class_names is required when the labels are not strings (got labels such as "
                f"{labels[:3].tolist()!r}); pass class_names=[...] in label order."
            )
        names = [str(label) for label in labels]

    if not names or not all(isinstance(name, str) for name in names):
        raise ValueError(f"class_names must be a non-empty list of strings, got {names!r}.")
    if labels is None and len(set(names)) != len(names):
        counts = Counter(names)
        repeated = sorted(name for name, count in counts.items() if count > 1)
        raise ValueError(
            f"class_names has {len(names) - len(set(names))} repeated name(s): {repeated!r} "
            f"(of {len(names)} names); give each class a name of its own."
        )
    return labels, names


def clear_text_cache():
    """Forget the cached text embeddings of domain and zero-shot prompts.

    The cache lives in :meth:`skicm.CLIPEmbedder.encode_text`; this is
    :func:`skicm.embedding.clear_text_cache`.

    Examples
    --------
    >>> from skicm.interventions import clear_text_cache
    >>> clear_text_cache()  # the next encode_text calls run the text tower again
    """
    from skicm.embedding import clear_text_cache as clear

    clear()


def _encode_texts(encoder, texts, name="encoder"):
    """``encoder.encode_text(texts)`` as a float array, checked.

    A :class:`~skicm.CLIPEmbedder` answers texts it has seen before from its process-level text
    cache, so prompts recomputed in every fit of a grid search are encoded once.
    """
    if encoder is None or not hasattr(encoder, "encode_text"):
        raise ValueError(
            f"{name} is required to encode text: pass a skicm.CLIPEmbedder (or any object "
            "with encode_text(list_of_str) -> array)."
        )
    texts = list(texts)
    embeddings = np.asarray(encoder.encode_text(texts))
    if embeddings.ndim != 2 or embeddings.shape[0] != len(texts):
        raise ValueError(
            f"{name}.encode_text returned shape {embeddings.shape} for {len(texts)} texts; "
            "expected (n_texts, embed_dim)."
        )
    return embeddings


def _pairs(values, name):
    pairs = list(values)
    for pair in pairs:
        if not (isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2):
            raise ValueError(f"{name} must hold (original, edited) pairs; got {pair!r}.")
    return pairs


class TextInterventions(BaseEstimator):
    """Interventional differences from text: domain prompts, caption pairs, image-caption pairs.

    An ``interventions=`` source of :class:`~skicm.InvariantProjector`: the projector calls
    :meth:`differences` with its training labels during ``fit`` and pools the rows with its
    other differences. All differences are computed with ``encoder``, which must be the same
    model as the one that embeds the images (a :class:`~skicm.CLIPEmbedder` with the same
    ``model_name`` and ``pretrained``: the process-level model cache loads it once).

    Three kinds of pairs, pooled when several are given:

    - **domain prompts**: for each class name and each pair of ``domain_templates`` (``"a
      sketch of a {}."``, ``"a painting of a {}."``), the difference of the two text
      embeddings: the class is fixed, only the domain changes. With ``C`` classes and ``T``
      templates that is ``C * T * (T - 1) / 2`` rows;
    - **caption pairs** ``(caption, edited caption)``, where the edit changes only the
      environment (``("a dog on grass", "a dog on snow")``): text minus text;
    - **image-caption pairs** ``(image, edited caption)``, where the caption describes the
      image in another environment: image embedding minus text embedding. These differences
      also carry the image-text modality gap, a nearly constant direction, which the projector
      then treats as variant.

    Parameters
    ----------
    encoder : object with ``encode_text``, default=None
        The text (and, for image-caption pairs, image) encoder, normally a
        :class:`~skicm.CLIPEmbedder`; ``encode_text(list_of_str)`` returns
        ``(n, embed_dim)`` and ``transform(images)`` embeds images.
    class_names : list of str, dict or None, default=None
        Class names for the domain prompts. ``None`` takes the labels passed to
        :meth:`differences` (the projector's unique training labels), which must then be
        strings; a dict maps labels to names.
    domain_templates : sequence of str, path-like or None, default=DEFAULT_DOMAIN_TEMPLATES
        Prompt templates with one ``{}`` for the class name, one per domain or style, or the
        path of a JSON list of them (``{c}`` or ``{}`` for the class name, read with
        :func:`skicm.prompts.load_prompts`). A class -> prompts file (CuPL's format) does not
        apply: its prompts vary the description of a class, not its domain, and raise a
        ``ValueError``. ``None`` (or fewer than two templates) turns the domain prompts off.
    caption_pairs : sequence of (str, str) or None, default=None
        ``(caption, edited caption)`` pairs.
    image_caption_pairs : sequence of (image, str) or None, default=None
        ``(image, edited caption)`` pairs; images in any form ``encoder.transform`` accepts.

    See Also
    --------
    ImageInterventions : counterparts of images, for aligned ``X_intervened``.
    skicm.InvariantProjector : pools these differences through ``interventions=``.

    Examples
    --------
    >>> from skicm.embedding import CLIPEmbedder
    >>> from skicm.interventions import TextInterventions
    >>> from skicm.model_configs import register_tiny_clip
    >>> embedder = CLIPEmbedder(register_tiny_clip(), pretrained=None, device="cpu")
    >>> text = TextInterventions(
    ...     embedder,
    ...     domain_templates=["a photo of a {}.", "a sketch of a {}.", "a painting of a {}."],
    ...     caption_pairs=[("a dog on grass", "a dog on snow")],
    ... )
    >>> text.differences(["cat", "dog"]).shape  # 2 classes * 3 template pairs + 1 caption pair
    (7, 32)
    """

    _parameter_constraints: ClassVar[dict] = {
        "encoder": [HasMethods(["encode_text"]), None],
        "class_names": [list, tuple, dict, np.ndarray, None],
        "domain_templates": [list, tuple, str, os.PathLike, None],
        "caption_pairs": [list, tuple, None],
        "image_caption_pairs": [list, tuple, None],
    }

    def __init__(
        self,
        encoder=None,
        *,
        class_names=None,
        domain_templates=DEFAULT_DOMAIN_TEMPLATES,
        caption_pairs=None,
        image_caption_pairs=None,
    ):
        self.encoder = encoder
        self.class_names = class_names
        self.domain_templates = domain_templates
        self.caption_pairs = caption_pairs
        self.image_caption_pairs = image_caption_pairs

    def _templates(self):
        templates = self.domain_templates
        if isinstance(templates, str | os.PathLike):
            from skicm.prompts import load_prompts

            templates = load_prompts(templates)
            if isinstance(templates, dict):
                raise ValueError(
                    f"domain_templates: the prompt file {os.fspath(self.domain_templates)!r} maps "
                    "classes to prompts, which describe each class, not its domains: their "
                    "differences would mark class information as variant. Give a JSON list of "
                    "domain templates with {c} (one per domain), or use the class -> prompts "
                    "file as the templates of ZeroShotClassifier."
                )
        templates = list(templates or ())
        _check_placeholder_templates(templates, "domain_templates")
        return templates if len(templates) >= 2 else []

    def domain_prompt_pairs(self, y=None):
        """The ``(prompt, prompt)`` pairs of the domain-prompt differences.

        Parameters
        ----------
        y : array-like or None, default=None
            Labels to take class names from when ``class_names`` is None.

        Returns
        -------
        pairs : list of (str, str)
            For each class, every pair of its domain prompts.
        """
        templates = self._templates()
        if not templates:
            return []
        labels = None if y is None else np.asarray(y, dtype=object).ravel()
        _, names = _class_labels_and_names(self.class_names, labels)
        return [
            (first.format(name), second.format(name))
            for name in names
            for first, second in combinations(templates, 2)
        ]

    def differences(self, y=None):
        """Interventional differences, one per row.

        Parameters
        ----------
        y : array-like or None, default=None
            Labels (the projector passes its unique training labels); used for class names
            when ``class_names`` is None.

        Returns
        -------
        differences : ndarray of shape (n_differences, embed_dim)
            Domain-prompt differences, then caption-pair differences, then image-caption
            differences.
        """
        self._validate_params()
        text_pairs = self.domain_prompt_pairs(y)
        text_pairs += _pairs(self.caption_pairs or (), "caption_pairs")
        image_pairs = _pairs(self.image_caption_pairs or (), "image_caption_pairs")
        if not text_pairs and not image_pairs:
            raise ValueError(
                "TextInterventions has nothing to compare: give at least two domain_templates, "
                "caption_pairs or image_caption_pairs."
            )

        texts = [text for pair in text_pairs for text in pair]
        texts += [caption for _, caption in image_pairs]
        if not all(isinstance(text, str) for text in texts):
            raise ValueError("caption_pairs and image_caption_pairs must hold captions as str.")
        # Domain pairs repeat each prompt T - 1 times: encode every distinct text once.
        unique_texts, position = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        embeddings = _encode_texts(self.encoder, unique_texts.tolist())[position.ravel()]
        n_text = 2 * len(text_pairs)
        blocks = []
        if text_pairs:
            blocks.append(embeddings[0:n_text:2] - embeddings[1:n_text:2])
        if image_pairs:
            if not hasattr(self.encoder, "transform"):
                raise ValueError(
                    "image_caption_pairs need an encoder with transform(images) to embed the "
                    "images, such as skicm.CLIPEmbedder."
                )
            images = np.asarray(self.encoder.transform([image for image, _ in image_pairs]))
            if images.shape != (len(image_pairs), embeddings.shape[1]):
                raise ValueError(
                    f"encoder.transform returned shape {images.shape} for "
                    f"{len(image_pairs)} images; expected ({len(image_pairs)}, "
                    f"{embeddings.shape[1]}), the text embedding width."
                )
            blocks.append(images - embeddings[n_text:])
        return np.concatenate(blocks).astype(embeddings.dtype, copy=False)
