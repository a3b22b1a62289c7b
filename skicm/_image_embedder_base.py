"""What every skicm image embedder shares: batching, decoding, the store, progress and errors.

:class:`skicm.CLIPEmbedder` (open_clip) and :class:`skicm.ImageEmbedder` (any torch image model)
differ only in how their model is identified and built; both derive from
:class:`_BaseImageEmbedder`, which turns images into embeddings: the store answers images seen
before (without building the model when it holds them all), the others are decoded in batches
(in DataLoader workers, in this process between forward passes, or on the accelerator),
normalised on the device and encoded; a non-finite embedding is an error, never a result.
Models live in one process-level cache shared by every embedder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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

from skicm.store import EmbeddingStore

# Seed of the random weights built for models without pretrained weights: every process builds
# the same model, so embeddings of random-weight models can be shared through an on-disk store.
RANDOM_WEIGHTS_SEED = 0

#: ``batch_size="auto"`` per device type. On the CPU the forward pass of a batch already keeps
#: every core busy and larger batches only add memory traffic and latency before the first
#: result: 32 images per pass measured 0.93x the bare forward pass of ViT-S-32 from JPEG files
#: where 256 gave 0.77x (benchmarks/bench_embedding_cpu.py). Accelerators want large batches.
AUTO_BATCH_SIZE = {"cpu": 32, "cuda": 256}
AUTO_BATCH_SIZE_OTHER = 64


@dataclass
class LoadedEncoder:
    """One model in the process-level cache, with what encoding needs besides the weights."""

    model: Any
    device: Any
    embed_dim: int
    pil_transform: Any  # the preprocessing up to ToTensor (PIL in, PIL out)
    mean: Any  # (1, 3, 1, 1) float32 on device, or None when pil_transform does everything
    std: Any
    encode_image: Callable  # float (B, 3, S, S) on device -> (B, d) tensor
    description: str  # names the model and its weights in error messages
    weights_id: str = ""
    preprocess_repr: str = ""
    tokenizer: Any = None
    extra: dict = field(default_factory=dict)


_MODEL_CACHE: dict[tuple, LoadedEncoder] = {}
_MODEL_LOCK = threading.Lock()
#: How many times each cache key was built in this process (a store that answers everything
#: builds nothing; tests count on it).
MODEL_BUILDS: Counter = Counter()


def cached_model(cache_key: tuple, build: Callable[[], LoadedEncoder]) -> LoadedEncoder:
    """The model of ``cache_key`` from the process-level cache, built by ``build()`` if absent."""
    with _MODEL_LOCK:
        loaded = _MODEL_CACHE.get(cache_key)
        if loaded is None:
            loaded = _MODEL_CACHE[cache_key] = build()
            MODEL_BUILDS[cache_key] += 1
    return loaded


def clear_cached_models() -> None:
    with _MODEL_LOCK:
        _MODEL_CACHE.clear()


def digest(spec) -> str:
    """Short stable hash of a JSON-serialisable description."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def file_identity(path) -> str:
    from skicm.image_loading import _file_key

    return _file_key(path)


def optional_file_identity(path) -> str:
    try:
        return file_identity(path)
    except OSError as error:
        return f"absent:{os.path.realpath(path)}:{type(error).__name__}"


@dataclass(frozen=True)
class _DeviceType:
    type: str


def _no_gpu_device_nodes() -> bool:
    """True when this Linux machine has no NVIDIA or ROCm device node, so CUDA cannot be there.

    torch.cuda needs ``/dev/nvidia*`` (NVIDIA) or ``/dev/kfd`` (ROCm); without any of them
    ``torch.cuda.is_available()`` is False whatever torch would say, and knowing it costs no
    ``import torch`` (about 3 s).
    """
    import glob
    import sys

    return (
        sys.platform.startswith("linux")
        and not glob.glob("/dev/nvidia*")
        and not os.path.exists("/dev/kfd")
        and not os.path.exists("/proc/driver/nvidia")
    )


def namespace_device(device: str):
    """The device type that decides an embedding's namespace, importing torch only if needed.

    ``"cpu"``, and ``"auto"`` on a machine with no GPU device node, are the CPU without
    importing torch (a warm store then answers without it); anything else is
    :func:`resolve_device`.
    """
    if device == "cpu" or (device == "auto" and _no_gpu_device_nodes()):
        return _DeviceType("cpu")
    return resolve_device(device)


def resolve_device(device: str):
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


def autocast_dtype(precision: str, device):
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    import torch

    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# str() of the torch dtype each explicit precision autocasts to: the namespace's precision
# label, known without importing torch.
_PRECISION_LABELS = {"fp16": "torch.float16", "bf16": "torch.bfloat16"}


def _precision_label(precision: str, device) -> str:
    """``str(autocast_dtype(precision, device) or "fp32")``, importing torch only for "auto"
    on CUDA (where the GPU's bf16 support decides)."""
    if precision in _PRECISION_LABELS:
        return _PRECISION_LABELS[precision]
    return str(autocast_dtype(precision, device) or "fp32")


def split_preprocess(preprocess):
    """Split an eval transform into its PIL stage and its (mean, std) normalisation.

    The PIL stage (resize, crop, RGB conversion) runs where images are decoded and yields uint8;
    conversion to float and normalisation run batched on the device, which moves 4x fewer bytes
    between processes. Returns ``(None, None, None)`` when the transform does not end with
    ToTensor + Normalize.
    """
    from torchvision import transforms as T

    steps = list(getattr(preprocess, "transforms", []))
    if len(steps) >= 2 and isinstance(steps[-2], T.ToTensor) and isinstance(steps[-1], T.Normalize):
        normalize = steps[-1]
        mean = tuple(float(value) for value in normalize.mean)
        std = tuple(float(value) for value in normalize.std)
        return T.Compose(steps[:-2]), mean, std
    return None, None, None


def check_finite_weights(model, description: str) -> None:
    """Raise if a parameter or buffer of ``model`` holds NaN or infinity."""
    import torch

    # Buffers may hold infinities by design (attention masks); parameters may not.
    bad = [
        name
        for name, tensor in model.named_parameters()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    bad += [
        name
        for name, tensor in model.named_buffers()
        if tensor.is_floating_point() and bool(torch.isnan(tensor).any())
    ]
    if bad:
        raise ValueError(
            f"{description} holds non-finite weights (NaN or infinity) in {len(bad)} tensor(s), "
            f"e.g. {', '.join(bad[:3])}: it would give NaN embeddings. Use an intact checkpoint."
        )


def reject_sparse(X, owner: str) -> None:
    import scipy.sparse

    if scipy.sparse.issparse(X):
        raise TypeError(
            f"{owner} takes images; a sparse matrix is not supported as X (its rows are not "
            "images)."
        )


def resolve_store(spec) -> EmbeddingStore | None:
    """The store of an embedder's ``store`` parameter: an instance as it is, else opened."""
    from skicm.store import open_store

    return spec if isinstance(spec, EmbeddingStore) else open_store(spec)


class _BaseImageEmbedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Images to embeddings, in batches, with a store; subclasses say which model.

    A subclass implements ``_loaded_model()`` (build or fetch the model), ``_identity()``
    (``(label, spec)``: everything besides the image, precision, decoder and decode scale that
    determines an embedding, computed WITHOUT building the model) and sets ``has_text_tower``.
    """

    #: Whether ``encode_text`` can embed texts (zero-shot classification, text interventions).
    has_text_tower: ClassVar[bool] = False
    _progress_label: ClassVar[str] = "image embeddings"

    _parameter_constraints: ClassVar[dict] = {
        "device": [str],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "precision": [StrOptions({"auto", "fp32", "bf16", "fp16"})],
        "num_workers": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "decoder": [StrOptions({"auto", "pil", "torchvision"})],
        "decode": [StrOptions({"reduced", "full"})],
        "normalize": ["boolean"],
        # "memory" is also a str: any other string is the path of an SQLite file; any
        # skicm.store.EmbeddingStore instance is used as it is.
        "store": [str, os.PathLike, None, EmbeddingStore],
        "progress": ["boolean"],
    }

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
        self : object
            The embedder itself.
        """
        reject_sparse(X, type(self).__name__)
        return self

    def __sklearn_is_fitted__(self):
        # Stateless: usable without fit, like sklearn's HashingVectorizer.
        return True

    def transform(self, X):
        """Embed images.

        Images that the store already holds are answered from it (when it holds them all, the
        model is not even loaded); the others are encoded in batches and stored batch by batch.

        Parameters
        ----------
        X : sequence of images, or array of shape (n_samples, H, W, C)
            Image file paths (str or os.PathLike), PIL images, uint8/uint16 arrays of shape
            (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), or
            :class:`~skicm.image_loading.CollectionImage` (WebDataset tar members and Hugging
            Face dataset rows, from :func:`skicm.datasets.load_image_collection`), in any mix
            and of any sizes; or a uint8 array (N, H, W, C) or (N, H, W); or a one-column
            DataFrame or (n, 1) object array of such images (as ColumnTransformer passes a
            column of paths).

        Returns
        -------
        Z : ndarray of shape (n_samples, embed_dim), dtype float32
            Image embeddings, rows in the order of ``X``.

        Raises
        ------
        FileNotFoundError
            Listing every file of ``X`` that does not exist, and in the same message every file
            that cannot be decoded. The other images are still encoded and stored, so a rerun
            after fixing the files only encodes those.
        ValueError
            Listing every item that is not an image (before anything is encoded), or every file
            or collection image that cannot be read or decoded (truncated, corrupt, not an
            image; a shard changed since it was listed), named, when no file is missing;
            decodable images are still encoded and stored. Also when the model gives a
            non-finite embedding, even in one feature (nothing of that batch is stored or
            returned).
        """
        from skicm.image_loading import as_image_list, image_keys_and_missing

        self._validate_params()
        owner = type(self).__name__
        reject_sparse(X, owner)
        items = as_image_list(X, owner)
        keys, missing = image_keys_and_missing(items)
        vectors, undecodable, store_used = self._embed_keys(items, keys)
        if missing or undecodable:
            raise _bad_images_error(items, missing, undecodable, store_used)
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
            Image embeddings, rows in the order of ``X``.
        """
        return self.fit(X, y).transform(X)

    def store_namespace(self) -> str:
        """The store namespace of this embedder's image embeddings, without building the model.

        It covers everything besides the image that determines an embedding: the model's
        architecture and weights, its preprocessing, the precision, the decoder and the decode
        scale (``decode="reduced"`` and ``"full"`` never share stored embeddings). Embedders
        that agree on all of them share stored embeddings.

        Returns
        -------
        namespace : str
            ``"<model label>:<hash>"``.
        """
        self._validate_params()
        device = namespace_device(self.device)
        label, spec = self._identity()
        spec = {
            **spec,
            "precision": _precision_label(self.precision, device),
            "decode": self._decode_mode(device),
        }
        if self.decode != "full":
            # Reduced-scale JPEG decoding gives (slightly) different embeddings: a namespace of
            # its own. "full" keeps the namespace of the stores filled before this option.
            spec["decode_scale"] = self.decode
        return f"{label}:{digest(spec)}"

    def decode_target(self):
        """How far this embedder decodes large JPEG files reduced, for images decoded elsewhere.

        Code that decodes images itself and hands the pixels to :meth:`transform` (tar members,
        dataset cells, decoding tasks) passes it to
        :func:`skicm.image_loading.decode_image_data` or
        :class:`skicm.image_loading.ImageDecodingDataset` (``decode_for``), so that its pixels
        equal those of the same files given to :meth:`transform`. Builds (or fetches) the
        model, whose preprocessing decides.

        Returns
        -------
        target : skicm.image_loading.DecodeTarget or None
            None with ``decode="full"``, or when the preprocessing does not start with a resize
            (every file is then decoded in full).
        """
        from skicm.image_loading import DecodeTarget

        self._validate_params()
        if self.decode == "full":
            return None
        return DecodeTarget.from_transform(self._loaded_model().pil_transform)

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
        # EXPECTED_FAILED_CHECKS. fit does not look at X (stateless, like sklearn's
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

    # ------------------------------------------------------------------ for subclasses
    def _loaded_model(self) -> LoadedEncoder:  # pragma: no cover - abstract
        raise NotImplementedError

    def _identity(self) -> tuple[str, dict]:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ internals
    def _batch_size(self, device) -> int:
        if self.batch_size != "auto":
            return int(self.batch_size)
        return AUTO_BATCH_SIZE.get(device.type, AUTO_BATCH_SIZE_OTHER)

    def _autocast(self, device):
        import torch

        dtype = autocast_dtype(self.precision, device)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    def _decode_mode(self, device) -> str:
        """How images are decoded: see :class:`skicm.image_loading.ImageDecodingDataset`."""
        if self.decoder == "pil":
            return "pil"
        return "raw_jpeg" if device.type == "cuda" else "tensor"

    def _normalized(self, Z):
        if self.normalize:
            norms = np.linalg.norm(Z, axis=1, keepdims=True)
            Z = Z / np.maximum(norms, np.finfo(np.float32).tiny)
        return Z.astype(np.float32, copy=False)

    def _n_workers(self, n_images: int, device) -> int:
        """DataLoader worker processes; 0 decodes in this process, between forward passes."""
        if self.num_workers != "auto":
            return int(self.num_workers)
        if n_images <= self._batch_size(device) or device.type == "cpu":
            # On the CPU the forward pass keeps every core busy with torch's intra-op (OpenMP)
            # threads, which wait for each other at every parallel region: a worker decoding
            # alongside them preempts one and stalls all, so it costs more forward time than
            # the decoding it hides (ViT-S-32 on 2 cores: 0.78x the bare forward pass with one
            # worker, 0.88x decoding in this process with one thread per core between passes).
            return 0
        return max(1, min(8, (os.cpu_count() or 2) - 1))

    def _embed_keys(self, items, keys):
        """Raw embedding of every distinct key, from the store or the model.

        Returns ``(vectors, errors, stored)``: ``vectors`` maps each key that could be embedded
        to its raw (unnormalised) embedding; ``errors`` lists ``(index, reason)`` of the items
        that could not be decoded; ``stored`` says whether a store keeps the new embeddings.
        Items whose key is ``""`` (missing files) are skipped.
        """
        store = resolve_store(self.store)
        namespace = self.store_namespace()
        first_index = {}
        for index, key in enumerate(keys):
            if key:
                first_index.setdefault(key, index)
        vectors = store.get_many(namespace, list(first_index)) if store is not None else {}
        todo = [index for key, index in first_index.items() if key not in vectors]
        errors = []
        if todo:
            loaded = self._loaded_model()  # only now: a store holding everything needs no model
            encoded, errors = self._encode_images(loaded, items, keys, todo, store, namespace)
            vectors.update(encoded)
        return vectors, errors, store is not None

    def _encode_images(self, loaded, items, keys, todo, store, namespace):
        """Encode ``items[i] for i in todo`` through the image model, storing batch by batch.

        Returns ``(encoded, errors)``: the embedding of each key encoded, and ``(index into
        items, reason)`` of every image that could not be decoded.
        """
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
        mode = self._decode_mode(loaded.device)
        batch_size = self._batch_size(loaded.device)
        dataset = ImageDecodingDataset(
            todo_items, loaded.pil_transform, mode=mode, decode=self.decode
        )
        num_workers = self._n_workers(len(todo_items), loaded.device)
        if num_workers:
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=False,
                num_workers=num_workers,
                collate_fn=collate_decoded,
                pin_memory=loaded.device.type == "cuda",
                prefetch_factor=4,
            )
        else:
            loader = decode_in_batches(dataset, batch_size, torch.get_num_threads())
        autocast = self._autocast(loaded.device)
        encoded: dict[str, np.ndarray] = {}
        errors: list[tuple[int, str]] = []
        bar = tqdm(
            total=len(todo_items),
            unit="img",
            desc=self._progress_label,
            disable=not (self.progress and len(todo_items) > batch_size),
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
                    _check_finite_embeddings(
                        batch, loaded, [describe_image(items, todo[i]) for i in pixel_idx]
                    )
                    fresh = {todo_keys[i]: batch[row] for row, i in enumerate(pixel_idx)}
                    if store is not None:
                        store.put_many(namespace, fresh)
                    encoded.update(fresh)
                bar.update(len(pixel_idx) + len(batch_errors))
        return encoded, [(todo[i], reason) for i, reason in sorted(errors)]

    def _forward(self, loaded, pixels, autocast):
        """Normalise a uint8 (or already float) batch on the device and encode it."""
        x = pixels.to(loaded.device, non_blocking=True)
        if loaded.mean is not None:
            x = x.float().div_(255).sub_(loaded.mean).div_(loaded.std)
        with autocast:
            out = loaded.encode_image(x)
        return out.float().cpu().numpy()


def _bad_images_error(items, missing, undecodable, stored) -> Exception:
    """One error for the missing files and the images that could not be decoded."""
    from skicm.image_loading import _listing, describe_image, missing_files_message

    kept = f"the other images were encoded{' and stored' if stored else ''}"
    parts = []
    if missing:
        parts.append(missing_files_message(missing))
    if undecodable:
        lines = [f"{describe_image(items, i)}: {reason}" for i, reason in undecodable]
        parts.append(f"{len(undecodable)} image(s) could not be decoded: " + _listing(lines))
    message = ". ".join(parts) + f" ({kept})."
    return FileNotFoundError(message) if missing else ValueError(message)


def _check_finite_embeddings(batch, loaded, names) -> None:
    # A row with a single non-finite feature is as unusable as one without a finite feature.
    finite = np.isfinite(batch).all(axis=1)
    if not finite.all():
        bad = [name for name, ok in zip(names, finite) if not ok]
        raise ValueError(
            f"{loaded.description} gave non-finite embeddings (NaN or infinity) for "
            f"{len(bad)} image(s), e.g. {'; '.join(bad[:3])}; nothing of that batch was stored "
            "or returned. Check the model's weights (or use precision='fp32' if a "
            "half-precision forward pass overflows)."
        )


def _decode_jpegs_on_device(indices, data, loaded, dataset):
    """Decode JPEG bytes with torchvision on the model's device and apply the PIL-stage resize.

    Images are grouped by size so that the resize and crop (torchvision transforms that also
    accept batched tensors) run once per group. An image nvjpeg cannot decode (CMYK, some
    progressive files, corrupt data) falls back to Pillow, which reports the error if it fails
    too.
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

    return ImageDecodingDataset(
        dataset.items, dataset.transform, mode="tensor", decode=dataset.decode
    )[index]


NOT_IMAGES = (
    "the check transforms random numeric matrices, whose rows are not images; the embedder "
    "rejects them with a ValueError by design (see the comment in __sklearn_tags__), and "
    "its tests check the same property on real images"
)

#: sklearn common checks that cannot apply to an image transformer, with the reason.
EXPECTED_FAILED_CHECKS: dict[str, str] = dict.fromkeys(
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
    NOT_IMAGES,
)
