"""CLIPEmbedder: open_clip image and text embeddings as a scikit-learn transformer.

The model is loaded lazily into a process-level cache shared by every clone of an embedder, an
embedding store (:mod:`skicm.store`) answers images seen before and a process-level text cache
answers texts seen before, so that a grid search encodes each distinct image and prompt once.
torch and open_clip are imported inside functions: ``import skicm`` stays fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import warnings
from dataclasses import dataclass
from numbers import Integral
from typing import Any, ClassVar

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import Interval, StrOptions

__all__ = ["CLIPEmbedder", "clear_model_cache", "clear_text_cache"]

# Seed of the random weights built for ``pretrained=None``: every process builds the same model,
# so embeddings of random-weight models can be shared through an on-disk store.
_RANDOM_WEIGHTS_SEED = 0
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt")


@dataclass
class _LoadedModel:
    """One model in the process-level cache, with what encoding needs besides the weights."""

    model: Any
    tokenizer: Any
    device: Any
    embed_dim: int
    weights_id: str  # what the weights are, for the store's namespace
    pil_transform: Any  # the factory's preprocessing up to ToTensor (PIL in, PIL out)
    preprocess_repr: str
    mean: Any  # (1, 3, 1, 1) float32 on device
    std: Any


_MODEL_CACHE: dict[tuple, _LoadedModel] = {}
_MODEL_LOCK = threading.Lock()

# Raw text embeddings by (text namespace, text). Text interventions and zero-shot prompts are
# encoded again in every fit of a grid search (each fit gets a clone), and the text tower costs
# seconds per fit for a full-size model on a CPU (3.3 s for 56 prompts with ViT-B-32 on 2 cores),
# while each distinct prompt needs encoding once per process. 128 MiB is ~65k 512-d vectors.
_TEXT_CACHE = None  # a skicm.store.MemoryStore, made on first use
_TEXT_CACHE_MAX_BYTES = 2**27
_TEXT_CACHE_LOCK = threading.Lock()


def clear_model_cache() -> None:
    """Drop every model that :class:`CLIPEmbedder` has loaded in this process (frees memory).

    The next ``transform`` or ``encode_text`` loads its model again.

    Examples
    --------
    >>> from skicm.embedding import clear_model_cache
    >>> clear_model_cache()
    """
    with _MODEL_LOCK:
        _MODEL_CACHE.clear()


def clear_text_cache() -> None:
    """Forget the text embeddings that :meth:`CLIPEmbedder.encode_text` has cached.

    Examples
    --------
    >>> from skicm.embedding import clear_text_cache
    >>> clear_text_cache()  # the next encode_text calls run the text tower again
    """
    _text_cache().clear()


def _text_cache():
    global _TEXT_CACHE
    with _TEXT_CACHE_LOCK:
        if _TEXT_CACHE is None:
            from skicm.store import MemoryStore

            _TEXT_CACHE = MemoryStore(max_bytes=_TEXT_CACHE_MAX_BYTES)
        return _TEXT_CACHE


def _resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"device={device!r} is not a torch device: {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available; use device='cpu'.")
    return resolved


def _file_identity(path: str) -> str:
    from skicm.image_loading import _file_key

    return _file_key(path)


def _optional_file_identity(path) -> str:
    try:
        return _file_identity(path)
    except OSError as error:
        return f"absent:{os.path.realpath(path)}:{type(error).__name__}"


def _schema_weights_id(model_name: str) -> str:
    """Identity of the weights of an ``hf-hub:`` or ``local-dir:`` model.

    For ``local-dir:`` the real path of the folder plus the file identities of its
    ``open_clip_config.json`` and of the checkpoint open_clip picks. For ``hf-hub:`` the repository
    plus the identities of the config and weights files already in the local Hugging Face cache,
    when they are there (nothing is downloaded to find out); a repository updated upstream
    while the cached copy stays is therefore not noticed until the cache is refreshed.
    """
    from pathlib import Path

    import open_clip

    if model_name.startswith("local-dir:"):
        folder = Path(model_name[len("local-dir:") :])
        parts = [f"local-dir:{os.path.realpath(folder)}"]
        parts.append(_optional_file_identity(folder / "open_clip_config.json"))
        checkpoint = None
        if folder.is_dir():
            checkpoint = open_clip.factory._find_checkpoint_in_dir(folder)
        parts.append("no-checkpoint" if checkpoint is None else _optional_file_identity(checkpoint))
        return "schema:" + "|".join(parts)
    repo = model_name[len("hf-hub:") :]
    parts = [f"hf-hub:{repo}"]
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - open_clip needs huggingface_hub for hf-hub:
        return "schema:" + parts[0]
    for filename in (
        "open_clip_config.json",
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.bin",
    ):
        try:
            cached = try_to_load_from_cache(repo, filename)
        except Exception:
            cached = None
        if isinstance(cached, str):
            parts.append(f"{filename}={_optional_file_identity(cached)}")
    return "schema:" + "|".join(parts)


def _random_weights_id(model_name: str) -> str:
    """Identity of seeded random weights: the architecture's config and the library versions."""
    import open_clip
    import torch

    config = open_clip.get_model_config(model_name.replace("/", "-"))
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    return (
        f"random:seed{_RANDOM_WEIGHTS_SEED}:open_clip{open_clip.__version__}"
        f":torch{torch.__version__}:config{digest[:24]}"
    )


def _offline_hint(model_name: str) -> str:
    return (
        " On a machine without internet access, download the checkpoint elsewhere (e.g. "
        "open_clip_pytorch_model.bin from the model's Hugging Face repository) and pass its "
        f"local path: CLIPEmbedder(model_name={model_name!r}, pretrained='/path/to/checkpoint')."
    )


def _resolve_pretrained(model_name: str, pretrained) -> tuple[str | None, str]:
    """Return (what to give open_clip as ``pretrained``, identity of the weights)."""
    import open_clip

    if model_name.startswith(("hf-hub:", "local-dir:")):
        # open_clip takes the weights from the model's own repository or folder.
        if not (pretrained is None or pretrained == ""):
            raise ValueError(
                f"pretrained={pretrained!r} cannot be used with model_name={model_name!r}: "
                "an hf-hub: or local-dir: model takes its weights from its own repository or "
                "folder. Pass pretrained=None (or put the checkpoint into that folder)."
            )
        return None, _schema_weights_id(model_name)
    if pretrained is None or pretrained == "":
        return None, _random_weights_id(model_name)
    pretrained = os.fspath(pretrained)
    if pretrained.startswith("hf-hub:"):
        repo, _, filename = pretrained[len("hf-hub:") :].partition("@")
        try:
            path = open_clip.pretrained.download_pretrained_from_hf(repo, filename=filename or None)
        except Exception as error:
            raise OSError(
                f"Cannot download pretrained weights {pretrained!r} for model {model_name!r}: "
                f"{error}." + _offline_hint(model_name)
            ) from error
        return path, _file_identity(path)
    if open_clip.get_pretrained_cfg(model_name.replace("/", "-"), pretrained):
        return pretrained, f"tag:{pretrained}"
    if os.path.isfile(pretrained):
        return pretrained, _file_identity(pretrained)
    if os.sep in pretrained or pretrained.lower().endswith(_CHECKPOINT_SUFFIXES):
        raise FileNotFoundError(
            f"Checkpoint file {pretrained!r} (pretrained=) for model {model_name!r} does not exist."
        )
    tags = open_clip.list_pretrained_tags_by_model(model_name.replace("/", "-"))
    raise ValueError(
        f"pretrained={pretrained!r} is neither a pretrained tag of model {model_name!r} (known "
        f"tags: {tags or 'none'}) nor an existing checkpoint file."
    )


def _check_model_name(model_name: str) -> None:
    import open_clip

    if model_name.startswith(("hf-hub:", "local-dir:")):
        return
    if open_clip.get_model_config(model_name.replace("/", "-")) is None:
        known = open_clip.list_models()
        raise ValueError(
            f"Unknown open_clip model {model_name!r} (model_name=). Known models: "
            f"{', '.join(known[:12])}, ... ({len(known)} in all, see open_clip.list_models()); "
            "an architecture of your own can be registered with open_clip.add_model_config."
        )


def _split_preprocess(preprocess):
    """Split open_clip's eval transform into its PIL stage and its (mean, std) normalisation.

    The PIL stage (resize, crop, RGB conversion) runs in DataLoader workers and yields uint8;
    conversion to float and normalisation run batched on the device, which moves 4x fewer bytes
    between processes. Falls back to running everything in the workers if the transform does not
    end with ToTensor + Normalize.
    """
    from torchvision import transforms as T

    steps = list(getattr(preprocess, "transforms", []))
    if len(steps) >= 2 and isinstance(steps[-2], T.ToTensor) and isinstance(steps[-1], T.Normalize):
        normalize = steps[-1]
        return T.Compose(steps[:-2]), tuple(normalize.mean), tuple(normalize.std)
    return None, None, None


def _load_model(model_name: str, pretrained, device: str) -> _LoadedModel:
    """Load (or fetch from the process-level cache) a model with its preprocessing."""
    import torch

    resolved_device = _resolve_device(device)
    _check_model_name(model_name)
    checkpoint, weights_id = _resolve_pretrained(model_name, pretrained)
    cache_key = (model_name, weights_id, str(resolved_device))
    with _MODEL_LOCK:
        loaded = _MODEL_CACHE.get(cache_key)
        if loaded is None:
            loaded = _MODEL_CACHE[cache_key] = _build_model(
                model_name, checkpoint, weights_id, resolved_device
            )
    del torch
    return loaded


def _build_model(model_name, checkpoint, weights_id, device) -> _LoadedModel:
    import open_clip
    import torch

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_RANDOM_WEIGHTS_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=checkpoint, device="cpu", weights_only=True
            )
    except RuntimeError as error:
        message = str(error)
        if "download" in message.lower() or "hf hub" in message.lower():
            raise OSError(
                f"Cannot download pretrained weights {checkpoint!r} for model {model_name!r}: "
                f"{message}." + _offline_hint(model_name)
            ) from error
        if checkpoint is not None and os.path.isfile(checkpoint):
            raise ValueError(
                f"Cannot load checkpoint {checkpoint!r} into model {model_name!r}: {message}"
            ) from error
        raise ValueError(f"Cannot create open_clip model {model_name!r}: {message}") from error
    except Exception as error:
        if checkpoint is not None and os.path.isfile(checkpoint):
            raise ValueError(
                f"Cannot load checkpoint {checkpoint!r} into model {model_name!r}: "
                f"{type(error).__name__}: {error}"
            ) from error
        raise
    model = model.to(device).eval().requires_grad_(False)
    pil_transform, mean, std = _split_preprocess(preprocess)
    if pil_transform is None:  # unusual preprocessing: run all of it in the workers
        pil_transform, mean, std = preprocess, None, None
    image_size = model.visual.image_size
    image_size = image_size if isinstance(image_size, tuple) else (image_size, image_size)
    with torch.inference_mode():
        probe = model.encode_image(torch.zeros(1, 3, *image_size, device=device))
    return _LoadedModel(
        model=model,
        tokenizer=open_clip.get_tokenizer(model_name),
        device=device,
        embed_dim=int(probe.shape[-1]),
        weights_id=weights_id,
        pil_transform=pil_transform,
        preprocess_repr=repr(preprocess),
        mean=None if mean is None else torch.tensor(mean, device=device).view(1, 3, 1, 1),
        std=None if std is None else torch.tensor(std, device=device).view(1, 3, 1, 1),
    )


def _autocast_dtype(precision: str, device):
    import torch

    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class CLIPEmbedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Encode images with an open_clip model: a stateless scikit-learn transformer.

    ``transform`` maps images to CLIP image embeddings, in batches on the accelerator, with image
    decoding and preprocessing in DataLoader worker processes that overlap the forward pass (on
    the CPU, where the forward pass occupies every core, in this process between passes).
    Embeddings already computed (by this or any clone, or by another process sharing an on-disk
    store) are looked up instead of recomputed, so a grid search over a pipeline that starts with
    a ``CLIPEmbedder`` passes each distinct image through the image tower once (within one
    process: with process-based ``n_jobs>1`` workers, give ``store`` an SQLite file path).

    Parameters
    ----------
    model_name : str, default="ViT-B-32"
        open_clip architecture (see ``open_clip.list_models()``), including architectures
        registered at run time with ``open_clip.add_model_config``, or an ``"hf-hub:org/repo"``
        or ``"local-dir:/path"`` model identifier.

    pretrained : str, os.PathLike or None, default="openai"
        Weights: an open_clip pretrained tag of ``model_name``, the path of a local checkpoint
        file (loaded with ``torch.load(weights_only=True)``), ``"hf-hub:org/repo"`` (optionally
        ``"hf-hub:org/repo@file.bin"``), or None for random weights (seeded, hence identical in
        every process; for tests and speed measurements). Must be None (or "") when
        ``model_name`` is an ``hf-hub:`` or ``local-dir:`` identifier, which brings its own
        weights.

    device : str, default="auto"
        Torch device; ``"auto"`` picks CUDA when available, else the CPU.

    batch_size : int, default=256
        Images (or texts) per forward pass.

    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Autocast dtype of the forward pass; ``"auto"`` is bf16 on CUDA (fp16 where bf16 is not
        supported) and fp32 on the CPU. Embeddings are returned as float32 in every case.

    num_workers : int or "auto", default="auto"
        DataLoader worker processes that decode and preprocess images while the forward pass
        runs. 0: in this process, one batch at a time between forward passes, split across
        ``torch.get_num_threads()`` threads. ``"auto"`` uses ``min(8, cpu_count - 1)`` workers
        with a CUDA device, and 0 on the CPU (whose cores the forward pass already keeps busy:
        a concurrent worker slows it more than it saves) or when a single batch is encoded.

    decoder : {"auto", "torchvision", "pil"}, default="auto"
        How images are decoded and resized. ``"pil"``: with Pillow, exactly as open_clip's
        preprocessing. ``"torchvision"``: JPEG files are decoded by
        ``torchvision.io.decode_jpeg`` (libjpeg-turbo in the workers on the CPU, nvjpeg on a
        CUDA device, where the resize runs too) and every image is resized by the factory's own
        Resize and CenterCrop applied to a uint8 tensor, about twice as fast as Pillow on the CPU;
        the pixels differ from Pillow's by resampling noise (about one grey level). ``"auto"``
        is ``"torchvision"``. The decoders keep separate entries in the store.

    normalize : bool, default=True
        Scale every embedding (image and text) to unit Euclidean norm, as CLIP's similarity does.

    store : "memory", str, os.PathLike or None, default="memory"
        Where computed embeddings are kept: ``"memory"`` for the process-level cache
        (:func:`skicm.store.default_memory_store`), a file path for a persistent SQLite store
        (:class:`skicm.store.SQLiteStore`; a killed run resumes from it and other processes
        reuse it), None to recompute every time. Text embeddings are cached in memory in every
        case (see :meth:`encode_text`).

    progress : bool, default=True
        Show a tqdm progress bar while encoding more than one batch.

    Attributes
    ----------
    embed_dim_ : int
        Width of the embeddings (loads the model on first access).

    See Also
    --------
    skicm.store.SQLiteStore : The persistent embedding store.
    skicm.InvariantProjector : The projection usually fitted on these embeddings.

    Notes
    -----
    The estimator holds its parameters only: pickles and clones never contain model weights.
    Models live in a process-level cache keyed by architecture, weights and device.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm import CLIPEmbedder
    >>> from skicm.model_configs import register_tiny_clip
    >>> embedder = CLIPEmbedder(model_name=register_tiny_clip(), pretrained=None, device="cpu")
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 48, 64, 3), dtype=np.uint8)
    >>> Z = embedder.fit_transform(images)
    >>> Z.shape, Z.dtype
    ((4, 32), dtype('float32'))
    >>> bool(np.allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-5))
    True
    >>> embedder.encode_text(["a photo of a dog", "a photo of a cat"]).shape
    (2, 32)
    >>> embedder.get_feature_names_out()[:2]
    array(['clipembedder0', 'clipembedder1'], dtype=object)
    """

    _parameter_constraints: ClassVar[dict] = {
        "model_name": [str],
        "pretrained": [str, os.PathLike, None],
        "device": [str],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "precision": [StrOptions({"auto", "fp32", "bf16", "fp16"})],
        "num_workers": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "decoder": [StrOptions({"auto", "pil", "torchvision"})],
        "normalize": ["boolean"],
        # "memory" is also a str: any other string is the path of an SQLite file.
        "store": [str, os.PathLike, None],
        "progress": ["boolean"],
    }

    def __init__(
        self,
        model_name="ViT-B-32",
        pretrained="openai",
        *,
        device="auto",
        batch_size=256,
        precision="auto",
        num_workers="auto",
        decoder="auto",
        normalize=True,
        store="memory",
        progress=True,
    ):
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self.num_workers = num_workers
        self.decoder = decoder
        self.normalize = normalize
        self.store = store
        self.progress = progress

    # ------------------------------------------------------------------ scikit-learn protocol
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Validate the parameters; nothing is learned (the embedder is stateless).

        Parameters
        ----------
        X : ignored
            Images; not looked at, so that fitting costs nothing.
        y : ignored
            Not used, present for API consistency.

        Returns
        -------
        self : CLIPEmbedder
        """
        _reject_sparse(X)
        return self

    def __sklearn_is_fitted__(self):
        # Stateless: usable without fit, like sklearn's HashingVectorizer.
        return True

    def transform(self, X):
        """Embed images.

        Parameters
        ----------
        X : sequence of images, or array of shape (n_samples, H, W, C)
            Image file paths (str or os.PathLike), PIL images or uint8/uint16 arrays of shape
            (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), in any mix and of any sizes; or a uint8
            array (N, H, W, C) or (N, H, W); or a one-column DataFrame or (n, 1) object array of
            such images (as ColumnTransformer passes a column of paths).

        Returns
        -------
        Z : ndarray of shape (n_samples, embed_dim), dtype float32
            Image embeddings, rows in the order of ``X``.

        Raises
        ------
        FileNotFoundError
            Listing every file of ``X`` that does not exist (before anything is encoded).
        ValueError
            Listing every item that is not an image, or every file that cannot be decoded
            (truncated, corrupt, not an image). Decodable images are still encoded and stored,
            so a rerun after fixing the files only encodes those.
        """
        from skicm.image_loading import as_image_list, image_keys

        self._validate_params()
        _reject_sparse(X)
        items = as_image_list(X)
        keys = image_keys(items)
        vectors = self._embed_keys(items, keys)
        Z = np.stack([vectors[key] for key in keys]).astype(np.float32, copy=False)
        return self._normalized(Z)

    def fit_transform(self, X, y=None, **fit_params):
        """Validate the parameters and embed ``X``; the same as ``transform(X)``.

        Parameters
        ----------
        X : sequence of images
            See :meth:`transform`.
        y : ignored
            Not used, present for API consistency.
        **fit_params : dict
            Ignored.

        Returns
        -------
        Z : ndarray of shape (n_samples, embed_dim), dtype float32
        """
        return self.fit(X, y).transform(X)

    def encode_text(self, texts):
        """Embed texts with the text tower of the same model.

        Texts encoded before in this process, by this embedder or any other with the same model,
        weights and precision, are answered from a process-level cache (cleared by
        :func:`clear_text_cache`); only the others go through the text tower.

        Parameters
        ----------
        texts : str or sequence of str
            Texts (prompts); a single string gives one row.

        Returns
        -------
        T : ndarray of shape (n_texts, embed_dim), dtype float32
            Text embeddings, rows in the order of ``texts``, unit-norm when ``normalize=True``
            (as the image embeddings).
        """
        self._validate_params()
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("encode_text needs at least one text; got an empty sequence.")
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if bad:
            raise ValueError(
                f"encode_text takes strings; items {bad[:10]} are "
                f"{sorted({type(texts[i]).__name__ for i in bad})}."
            )
        loaded = self._loaded_model()
        cache = _text_cache()
        namespace = self._text_namespace(loaded)
        vectors = cache.get_many(namespace, texts)
        todo = [text for text in dict.fromkeys(texts) if text not in vectors]
        if todo:
            fresh = dict(zip(todo, self._encode_texts(loaded, todo)))
            cache.put_many(namespace, fresh)
            vectors.update(fresh)
        T = np.stack([vectors[text] for text in texts]).astype(np.float32, copy=False)
        return self._normalized(T)

    @property
    def embed_dim_(self) -> int:
        """Width of the embeddings (from the model config, else from the loaded model)."""
        import open_clip

        config = None
        if not self.model_name.startswith(("hf-hub:", "local-dir:")):
            config = open_clip.get_model_config(self.model_name.replace("/", "-"))
        if config and "embed_dim" in config:
            return int(config["embed_dim"])
        return self._loaded_model().embed_dim

    @property
    def _n_features_out(self):
        return self.embed_dim_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Why these tags. X is a sequence of images, so the honest input kinds are a 1-D
        # sequence (paths are strings), a one-column table of images (what ColumnTransformer
        # passes for a column of paths: (n, 1) object array or DataFrame) and an (N, H, W)
        # stack of grayscale images. A numeric 2-D array (n, d) is NOT accepted: its rows are
        # not images, and reading them as flattened pixels would need a guessed image shape
        # and would silently embed garbage. two_d_array=True keeps sklearn's common checks
        # running (with False they are all skipped): the API checks (cloning, params, fit
        # returns self, tags, pickling-free fit...) pass for real; the checks that transform
        # random numeric matrices fail by design, with a ValueError, and are listed in
        # _EXPECTED_FAILED_CHECKS. fit does not look at X (stateless, like sklearn's
        # FunctionTransformer(validate=False)), hence no_validation=True and requires_fit=False;
        # transform validates every image itself.
        # one_d_array stays False although a 1-D sequence of paths is the usual X: the tag
        # makes the checks slice their matrices to 1-D, which then break inside the checks.
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.no_validation = True
        tags.requires_fit = False
        tags.non_deterministic = False
        tags.transformer_tags.preserves_dtype = []
        return tags

    # ------------------------------------------------------------------ internals
    def _loaded_model(self) -> _LoadedModel:
        return _load_model(self.model_name, self.pretrained, self.device)

    def _autocast(self, loaded):
        import torch

        dtype = _autocast_dtype(self.precision, loaded.device)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=loaded.device.type, dtype=dtype)

    def _decode_mode(self, loaded) -> str:
        """How the workers decode: see :class:`skicm.image_loading.ImageDecodingDataset`."""
        if self.decoder == "pil":
            return "pil"
        return "raw_jpeg" if loaded.device.type == "cuda" else "tensor"

    def _namespace(self, loaded) -> str:
        """Store namespace: everything besides the image that determines an embedding."""
        spec = {
            "model": self.model_name,
            "weights": loaded.weights_id,
            "precision": str(_autocast_dtype(self.precision, loaded.device) or "fp32"),
            "preprocess": loaded.preprocess_repr,
            "decode": self._decode_mode(loaded),
        }
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]
        return f"{self.model_name}:{digest}"

    def _text_namespace(self, loaded) -> str:
        """Text cache namespace: everything besides the text that determines its embedding."""
        tokenizer = loaded.tokenizer
        spec = {
            "model": self.model_name,
            "weights": loaded.weights_id,
            "precision": str(_autocast_dtype(self.precision, loaded.device) or "fp32"),
            "tokenizer": type(tokenizer).__qualname__,
            "tokenizer_name": str(getattr(tokenizer, "tokenizer_name", "")),
            "context_length": getattr(tokenizer, "context_length", None),
        }
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]
        return f"text:{self.model_name}:{digest}"

    def _encode_texts(self, loaded, texts) -> np.ndarray:
        """Raw (unnormalised) embeddings of ``texts`` through the text tower, in batches."""
        import torch

        autocast = self._autocast(loaded)
        parts = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = loaded.tokenizer(texts[start : start + self.batch_size])
                with autocast:
                    out = loaded.model.encode_text(tokens.to(loaded.device))
                parts.append(out.float().cpu().numpy())
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _normalized(self, Z):
        if self.normalize:
            norms = np.linalg.norm(Z, axis=1, keepdims=True)
            Z = Z / np.maximum(norms, np.finfo(np.float32).tiny)
        return Z.astype(np.float32, copy=False)

    def _n_workers(self, n_images: int, device) -> int:
        """DataLoader worker processes; 0 decodes in this process, between forward passes."""
        if self.num_workers != "auto":
            return int(self.num_workers)
        if n_images <= self.batch_size or device.type == "cpu":
            # On the CPU the forward pass keeps every core busy with torch's intra-op (OpenMP)
            # threads, which wait for each other at every parallel region: a worker decoding
            # alongside them preempts one and stalls all, so it costs more forward time than
            # the decoding it hides (ViT-S-32 on 2 cores: 0.78x the bare forward pass with one
            # worker, 0.88x decoding in this process with one thread per core between passes).
            return 0
        return max(1, min(8, (os.cpu_count() or 2) - 1))

    def _embed_keys(self, items, keys) -> dict[str, np.ndarray]:
        """Raw (unnormalised) embedding of every distinct key, from the store or the model."""
        from skicm.store import open_store

        loaded = self._loaded_model()
        store = open_store(self.store)
        namespace = self._namespace(loaded)
        first_index = {}
        for index, key in enumerate(keys):
            first_index.setdefault(key, index)
        vectors = store.get_many(namespace, list(first_index)) if store is not None else {}
        todo = [index for key, index in first_index.items() if key not in vectors]
        if todo:
            vectors.update(self._encode_images(loaded, items, keys, todo, store, namespace))
        return vectors

    def _encode_images(self, loaded, items, keys, todo, store, namespace):
        """Encode ``items[i] for i in todo`` through the image tower, storing batch by batch."""
        import torch
        from tqdm.auto import tqdm

        from skicm.image_loading import (
            ImageDecodingDataset,
            collate_decoded,
            decode_in_batches,
            describe_image,
        )

        todo_items = [items[i] for i in todo]
        todo_keys = [keys[i] for i in todo]
        mode = self._decode_mode(loaded)
        dataset = ImageDecodingDataset(todo_items, loaded.pil_transform, mode=mode)
        num_workers = self._n_workers(len(todo_items), loaded.device)
        if num_workers:
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=self.batch_size,
                shuffle=False,
                num_workers=num_workers,
                collate_fn=collate_decoded,
                pin_memory=loaded.device.type == "cuda",
                prefetch_factor=4,
            )
        else:
            loader = decode_in_batches(dataset, self.batch_size, torch.get_num_threads())
        autocast = self._autocast(loaded)
        encoded: dict[str, np.ndarray] = {}
        errors: list[tuple[int, str]] = []
        bar = tqdm(
            total=len(todo_items),
            unit="img",
            desc="CLIP image embeddings",
            disable=not (self.progress and len(todo_items) > self.batch_size),
        )
        with bar, torch.inference_mode():
            for pixel_idx, pixels, jpeg_idx, jpeg_bytes, batch_errors in loader:
                if jpeg_bytes:
                    decoded_idx, decoded, jpeg_errors = _decode_jpegs_on_device(
                        jpeg_idx, jpeg_bytes, loaded, dataset
                    )
                    batch_errors = batch_errors + jpeg_errors
                    if decoded is not None:
                        pixel_idx = pixel_idx + decoded_idx
                        pixels = (
                            decoded
                            if pixels is None
                            else torch.cat([pixels.to(loaded.device, non_blocking=True), decoded])
                        )
                errors.extend(batch_errors)
                if pixel_idx:
                    batch = self._forward(loaded, pixels, autocast)
                    fresh = {todo_keys[i]: batch[row] for row, i in enumerate(pixel_idx)}
                    if store is not None:
                        store.put_many(namespace, fresh)
                    encoded.update(fresh)
                bar.update(len(pixel_idx) + len(batch_errors))
        if errors:
            errors.sort()
            lines = [f"{describe_image(items, todo[i])}: {reason}" for i, reason in errors]
            raise ValueError(
                f"{len(errors)} image(s) could not be decoded (the other images were encoded"
                f"{' and stored' if store is not None else ''}): " + "; ".join(lines)
            )
        return encoded

    def _forward(self, loaded, pixels, autocast):
        """Normalise a uint8 (or already float) batch on the device and encode it."""
        x = pixels.to(loaded.device, non_blocking=True)
        if loaded.mean is not None:
            x = x.float().div_(255).sub_(loaded.mean).div_(loaded.std)
        with autocast:
            out = loaded.model.encode_image(x)
        return out.float().cpu().numpy()


def _decode_jpegs_on_device(indices, data, loaded, dataset):
    """Decode JPEG bytes with torchvision on the model's device and apply the PIL-stage resize.

    Images are grouped by size so that the factory's resize and crop (torchvision transforms
    that also accept batched tensors) run once per group. An image nvjpeg cannot decode (CMYK,
    some progressive files, corrupt data) falls back to Pillow, which reports the error if it
    fails too.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    device = loaded.device
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs in favour of TorchCodec; they still are
        # the only batched nvjpeg decoder that installs with torchvision alone.
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        try:
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            images = []
            for one in data:
                try:
                    images.append(decode_jpeg(one, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    images.append(None)
    out_idx, out, errors = [], [], []
    groups: dict[tuple, list[int]] = {}
    for position, image in enumerate(images):
        if image is None:
            index, pixels, _, error = _pil_fallback(dataset, indices[position])
            if error is not None:
                errors.append((index, error))
            else:
                out_idx.append(index)
                out.append(torch.from_numpy(pixels).to(device).unsqueeze(0))
            continue
        groups.setdefault(tuple(image.shape), []).append(position)
    for positions in groups.values():
        batch = torch.stack([images[p] for p in positions])
        out.append(dataset.tensor_transform(batch))
        out_idx.extend(indices[p] for p in positions)
    if not out:
        return [], None, errors
    return out_idx, torch.cat(out), errors


def _pil_fallback(dataset, index):
    from skicm.image_loading import ImageDecodingDataset

    return ImageDecodingDataset(dataset.items, dataset.transform, mode="tensor")[index]


def _reject_sparse(X):
    import scipy.sparse

    if scipy.sparse.issparse(X):
        raise TypeError(
            "CLIPEmbedder takes images; a sparse matrix is not supported as X (its rows are not "
            "images)."
        )


def _common_check_instance() -> CLIPEmbedder:
    """A CLIPEmbedder on the tiny random-weight model, for sklearn's common estimator checks."""
    from skicm.model_configs import register_tiny_clip

    return CLIPEmbedder(
        model_name=register_tiny_clip(),
        pretrained=None,
        device="cpu",
        batch_size=8,
        num_workers=0,
        progress=False,
    )


_NOT_IMAGES = (
    "the check transforms random numeric matrices, whose rows are not images; CLIPEmbedder "
    "rejects them with a ValueError by design (see the comment in __sklearn_tags__), and "
    "tests/test_embedding.py checks the same property on real images"
)

#: sklearn common checks that cannot apply to an image transformer, with the reason.
_EXPECTED_FAILED_CHECKS: dict[str, str] = dict.fromkeys(
    [
        "check_fit_score_takes_y",
        "check_estimators_dtypes",
        "check_pipeline_consistency",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_transformer_general",
        "check_transformers_unfitted_stateless",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_dict_unchanged",
        "check_fit_idempotent",
    ],
    _NOT_IMAGES,
)
