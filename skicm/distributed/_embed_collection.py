"""``embed_collection``: embed an image collection into resumable Parquet shards, here or on Ray."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.utils import Bunch

from skicm.distributed._collections import collection_table, is_collection
from skicm.distributed._shards import (
    FORMAT,
    check_or_write_manifest,
    embedded_paths,
    exclusive_writer,
    read_manifest,
    remove_temporaries,
    shard_identity,
    shard_paths,
    shard_table,
    write_shard,
)
from skicm.distributed._sources import listing_table
from skicm.store import EmbeddingStore

__all__ = ["embed_collection"]

_ENGINES = ("local", "ray")
_DECODE_PLACES = ("encoder", "tasks")
# Rows per Ray Data block. decode_in="tasks": a decode task handles one block, so a few batches
# per block keep the CPU tasks busy without holding a shard's worth of decoded pixels in the
# object store. decode_in="encoder": an actor handles one block of paths per call, decoding
# between its forward passes; more batches per call spread the per-call cost.
_BATCHES_PER_BLOCK = {"tasks": 2, "encoder": 8}
# CPU encoding actors: one per this many cores (torch's threads use them all).
_CORES_PER_CPU_ACTOR = 8
# Rows per Ray Data execution. Every block of an execution's paths goes into the object store
# when it starts (about 70 bytes per image); longer collections run in several executions, each
# starting its actors anew (seconds, against minutes for 10 M images on a cluster).
_ROWS_PER_EXECUTION = 10_000_000
_DECODED_IMAGE_BYTES = 2**20
_DECODE_WORKER_BYTES = 640 * 2**20
# Encoding actors per GPU (each with its own copy of the model).
_ACTORS_PER_GPU = 4
# Seconds to wait for a TCP connection to a Ray cluster's address before reporting it
# unreachable (a refused connection is reported at once).
_CONNECT_TIMEOUT_S = 10


# ---------------------------------------------------------------------------- the embedder
def _make_embedder(model_name, pretrained, image_model, embedder, device, batch_size):
    if embedder is not None:
        if model_name is not None or image_model is not None:
            raise ValueError("Pass either embedder= or model_name= / image_model=, not both.")
        return clone(embedder)
    if (model_name is None) == (image_model is None):
        raise ValueError(
            "embed_collection needs exactly one of model_name= (an open_clip architecture) and "
            "image_model= (any torch image model)."
        )
    params = {"device": device}
    if batch_size != "auto":
        params["batch_size"] = batch_size
    if image_model is not None:
        import skicm

        return skicm.ImageEmbedder(image_model, **params)
    from skicm.embedding import CLIPEmbedder

    return CLIPEmbedder(model_name=model_name, pretrained=pretrained, **params)


def _set_existing_params(embedder, **params):
    """``set_params`` for the parameters this embedder has (image models may lack some)."""
    known = embedder.get_params(deep=False)
    return embedder.set_params(**{k: v for k, v in params.items() if k in known})


def _store_namespace(embedder) -> str:
    return embedder.store_namespace()


def _weights_identity(embedder) -> str | None:
    pretrained = embedder.get_params(deep=False).get("pretrained")
    if pretrained is None or pretrained == "":
        return None
    pretrained = os.fspath(pretrained)
    if os.path.isfile(pretrained):
        info = os.stat(pretrained)
        return f"file:{os.path.realpath(pretrained)}|{info.st_size}|{info.st_mtime_ns}"
    return pretrained


def _manifest(embedder, namespace: str, class_aliases=None) -> dict:
    import skicm

    params = embedder.get_params(deep=False)
    model = params.get("model_name", params.get("model"))
    return {
        "format": FORMAT,
        "embedder": type(embedder).__name__,
        "model": model if isinstance(model, str) else repr(model),
        "weights": _weights_identity(embedder),
        "namespace": namespace,
        "embed_dim": int(embedder.embed_dim_),
        "preprocess": {key: params[key] for key in ("decoder", "precision") if key in params},
        "embedding": "raw model output (not normalised); load_embeddings normalises by default",
        "skicm_version": skicm.__version__,
        "class_aliases": dict(sorted((class_aliases or {}).items())),
    }


# ---------------------------------------------------------------------------- bad files
def _decode_problems(images, names=None, decoder="tensor") -> dict[str, str]:
    """Why each of ``images`` cannot be decoded, by its name (absent when it can).

    ``names`` name the images in the result (default: the images, file paths); a collection
    item's reason starts with its description (its member and shard, its row and dataset).
    """
    from torchvision.transforms import Compose

    from skicm.image_loading import CollectionImage, ImageDecodingDataset

    names = list(images) if names is None else names
    mode = "pil" if decoder == "pil" else "tensor"
    dataset = ImageDecodingDataset(list(images), Compose([]), mode=mode)
    problems = {}
    for index in range(len(dataset)):
        _, _, _, error = dataset[index]
        if error is not None:
            image = images[index]
            if isinstance(image, CollectionImage):
                error = f"{image.description}: {error}"
            problems[names[index]] = error
    return problems


def _file_keys(paths):
    """Image key of every path, and the reason for every path that is not a readable file."""
    from skicm.image_loading import image_keys

    keys, bad = {}, {}
    for path in paths:
        try:
            keys[path] = image_keys([path])[0]
        except (OSError, ValueError) as error:
            bad[path] = f"{type(error).__name__}: {error}"
    return keys, bad


class _CollectingStore(EmbeddingStore):
    """A store that holds nothing beforehand and collects what the embedder encodes."""

    def __init__(self):
        self.vectors = {}
        self.namespaces = set()

    def get_many(self, namespace, keys):
        return {}

    def put_many(self, namespace, items):
        self.namespaces.add(namespace)
        self.vectors.update(items)

    def count(self, namespace=None):
        return len(self.vectors)


# ---------------------------------------------------------------------------- collections
def _decoding_of(embedder):
    """``(DecodeTarget or None, "tensor" or "pil")``: how ``embedder`` decodes a file.

    Images decoded outside the embedder (decoding tasks) are decoded so, so that their pixels
    equal those of the same files given to ``transform``. The target needs the model's
    preprocessing: the model is built (or fetched from the cache) here.
    """
    decoder = "pil" if embedder.get_params(deep=False).get("decoder") == "pil" else "tensor"
    decode_target = getattr(embedder, "decode_target", None)
    return (decode_target() if decode_target is not None else None), decoder


def _encode_items(embedder, table, namespace, reader):
    """:func:`_encode_local` for the rows of a collection (tar members, dataset rows).

    The embedder is given the rows' :class:`~skicm.image_loading.CollectionImage` items, which
    it reads and decodes as it decodes the same bytes in a file (the pixels of
    ``reader.decoded`` on the CPU; on an accelerator, JPEG there as a file's). The shard's
    ``key`` column holds each item's own store key (no read: the tar's identity when listed
    and the member, or the dataset row and column), the key of the same item from
    :func:`skicm.datasets.load_image_collection`, so that :class:`ShardStore` answers an
    embedder given those items. Returns ``{row id: (key, raw embedding)}`` and why the other
    rows failed.
    """
    from skicm.datasets._collection_reader import collection_items

    ids = table.column("path").to_pylist()
    items = collection_items(table, reader.kind, reader)
    keys = [item.key for item in items]
    encoder, store, failure = _encode_collecting(embedder, items, namespace)
    encoded = {
        row: (key, store.vectors[key]) for row, key in zip(ids, keys) if key in store.vectors
    }
    undecoded = [index for index, row in enumerate(ids) if row not in encoded]
    problems = {}
    if undecoded:
        decoder = encoder.get_params(deep=False).get("decoder")
        problems = _decode_problems(
            [items[i] for i in undecoded], [ids[i] for i in undecoded], decoder
        )
    if failure is not None and len(problems) < len(undecoded):
        raise failure  # not (only) unreadable items: a model or parameter problem
    return encoded, problems


def _encode_collecting(embedder, inputs, namespace):
    """Encode ``inputs`` with a clone of ``embedder`` into a collecting store.

    The embedder encodes every decodable image even when some fail, and puts each batch into
    its store, so the store holds every good raw embedding after a failed call. Returns the
    clone, the store and the ``ValueError`` the call raised (None when all were encoded).
    """
    store = _CollectingStore()
    encoder = _set_existing_params(clone(embedder), store=store, normalize=False, progress=False)
    failure = None
    try:
        encoder.transform(inputs)
    except ValueError as error:
        failure = error
    if store.namespaces - {namespace}:
        raise RuntimeError(
            f"The embedder encoded into namespace {sorted(store.namespaces)} but the manifest "
            f"says {namespace!r}."
        )
    return encoder, store, failure


# ---------------------------------------------------------------------------- local engine
def _encode_local(embedder, paths, namespace):
    """``{path: (image key, raw embedding)}`` of the readable ``paths``, and why the rest failed.

    The embedder encodes every decodable image even when some fail, and puts each batch into
    its store: a collecting store therefore holds every good embedding after a failed call, and
    the paths missing from it are the bad ones.
    """
    keys, bad = _file_keys(paths)
    readable = [path for path in paths if path in keys]
    if not readable:
        return {}, bad
    _, store, failure = _encode_collecting(embedder, readable, namespace)
    encoded = {
        path: (keys[path], store.vectors[keys[path]])
        for path in readable
        if keys[path] in store.vectors
    }
    undecoded = [path for path in readable if path not in encoded]
    problems = _decode_problems(undecoded) if undecoded else {}
    if failure is not None and len(problems) < len(undecoded):
        raise failure  # not (only) undecodable files: a model or parameter problem
    bad.update(problems)
    return encoded, bad


def _run_local(embedder, shards, out, namespace, manifest, bar, reader=None):
    bad = {}
    written = []
    for index, table in shards:
        rows = _python_rows(table)
        if reader is None:
            encoded, shard_bad = _encode_local(embedder, rows["path"], namespace)
        else:
            encoded, shard_bad = _encode_items(embedder, table, namespace, reader)
        bad.update(shard_bad)
        path = _write_rows(out, index, rows, encoded, manifest)
        if path is not None:
            written.append(path)
        bar.update(len(rows["path"]))
    return written, bad


# ---------------------------------------------------------------------------- shard contents
def _write_rows(out, index, rows, encoded, manifest):
    """Write shard ``index`` with the rows of ``rows`` that have an embedding (None if none).

    ``encoded`` maps a path to its image key and embedding, both from the worker that read the
    file: the writer (the driver, on Ray) never opens an image file itself.
    """
    kept_paths = [path for path in rows["path"] if path in encoded]
    if not kept_paths:
        return None
    kept = {
        "path": kept_paths,
        "key": [encoded[p][0] for p in kept_paths],
        "embedding": np.stack([encoded[p][1] for p in kept_paths]),
    }
    kept_set = set(kept_paths)
    for name in ("label", "domain"):
        if rows.get(name) is not None:
            kept[name] = [v for p, v in zip(rows["path"], rows[name]) if p in kept_set]
    table = shard_table(kept, manifest["embed_dim"])
    return write_shard(out, index, table, shard_identity(manifest))


def plan_shards(table, out, shard_size, manifest):
    """The shards still to embed: ``(list of (index, Arrow table of rows), n_skipped)``.

    The rows of ``table`` (from ``listing_table``) whose path no finished shard of ``out`` holds,
    in listing order, grouped into shards numbered after the last finished one. Everything stays
    in Arrow memory (zero-copy slices of one table); a shard's rows become Python objects only
    when it is embedded. Every finished shard is checked against ``manifest`` (the manifest of
    ``out``, None when there is none yet) as it is read.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    existing = shard_paths(out)
    if manifest is None:
        if existing:
            raise ValueError(
                f"{str(out)!r} holds shards but no manifest.json: it was not written by "
                "skicm embed, or its manifest was removed; use another output folder."
            )
        done = pa.chunked_array([], type=pa.string())
    else:
        done = embedded_paths(out, manifest)
    first_index = 1 + max((int(p.stem.split("-")[1]) for p in existing), default=-1)
    if len(done):
        is_done = pc.is_in(table.column("path"), value_set=done.combine_chunks())
        del done
        n_skipped = pc.sum(is_done).as_py() or 0
        todo = table.filter(pc.invert(is_done)) if n_skipped else table
        del is_done
        pa.default_memory_pool().release_unused()
    else:
        n_skipped, todo = 0, table
    shards = [
        (first_index + number, todo.slice(start, shard_size))
        for number, start in enumerate(range(0, todo.num_rows, shard_size))
    ]
    return shards, n_skipped


def _python_rows(rows):
    """A shard's Arrow rows as the lists that the writers take (label/domain None if absent)."""
    names = rows.column_names
    return {
        "path": rows.column("path").to_pylist(),
        "label": rows.column("label").to_pylist() if "label" in names else None,
        "domain": rows.column("domain").to_pylist() if "domain" in names else None,
    }


# ---------------------------------------------------------------------------- entry point
def embed_collection(
    source,
    out,
    *,
    model_name=None,
    pretrained=None,
    image_model=None,
    embedder=None,
    device="auto",
    batch_size="auto",
    engine="local",
    address=None,
    decode_in="encoder",
    shard_size=10_000,
    num_cpus=None,
    class_aliases=None,
    image_key=None,
    label_key=None,
    domain_key=None,
    split=None,
    progress=True,
):
    """Embed every image of a collection into Parquet shards under ``out``; resumable.

    Each shard ``out/shard-NNNNNN.parquet`` holds the columns ``path`` (str), ``key`` (the
    image key of :func:`skicm.image_loading.image_keys`, so that :class:`ShardStore` answers
    embedder look-ups), ``embedding`` (fixed-size list of float32: the raw model output) and,
    when the source knows them, ``label`` and ``domain``; its Parquet key/value metadata (key
    ``skicm``) names the model that wrote it (embedder, model, weights, store namespace,
    width, dtype). ``out/manifest.json`` records the model, weights, preprocessing, store
    namespace, width, class aliases and skicm version; embeddings of another model (or of the
    same model in another precision, which the namespace covers) are refused. Shards are
    written to a temporary file in ``out`` and then linked to their name, and are never
    rewritten: a rerun after a kill (or after images were added to the source) embeds only the
    paths that no finished shard holds, so every path ends up in exactly one shard; it checks
    every finished shard against the manifest first. With ``engine="ray"``, a rerun with
    nothing left to embed does not start Ray. Files that cannot be read or decoded are all
    reported (in a warning and in ``bad_files`` of the result); the others are written.

    Parameters
    ----------
    source : str or path-like
        A DomainBed-layout folder (``root/domain/class/image``), any folder of images, a
        ``.csv`` / ``.parquet`` file with a ``path`` column and optional ``label`` and ``domain``
        columns (see :func:`list_images`), WebDataset tar shards (a ``.tar`` file, a glob or a
        brace pattern such as ``"shards-{000..009}.tar"``), or a Hugging Face dataset (a
        ``save_to_disk`` folder, or ``"hf:NAME"`` / ``"hf:NAME@CONFIG"`` loaded from the local
        cache). The ``path`` column of a collection's shards holds the identifier of each item:
        ``TAR#SAMPLE_KEY`` (absolute tar path, webdataset's sample key) or
        ``hf:FINGERPRINT/SPLIT/ROW``; its ``key`` column the store key of the item (the
        ``key`` of its :class:`~skicm.image_loading.CollectionImage` from
        :func:`skicm.datasets.load_image_collection`: the tar's identity and the member, or
        the row identifier and the image column), so that :class:`ShardStore` answers an
        embedder given those items. Collection items are decoded as the embedder decodes the
        same bytes in a file (EXIF orientation, decompression-bomb limit, reduced-scale JPEG
        decode; see docs/collections.md).
    out : str or path-like
        Output folder (created if needed).
    model_name : str, default=None
        open_clip architecture (a :class:`skicm.CLIPEmbedder`).
    pretrained : str, path-like or None, default=None
        open_clip pretrained tag or checkpoint file of ``model_name``; None for the seeded
        random weights.
    image_model : str or callable, default=None
        Any torch image model (a :class:`skicm.ImageEmbedder`) instead of ``model_name``.
    embedder : estimator, default=None
        An embedder to use as it is configured (its ``store``, ``normalize`` and ``progress``
        are overridden), instead of ``model_name`` / ``image_model``.
    device : str, default="auto"
        Torch device of the encoder. With ``engine="ray"``, ``"auto"`` puts one encoding actor
        on every GPU of the cluster, or encodes on the CPU if the cluster has none.
    batch_size : int or "auto", default="auto"
        Images per forward pass.
    engine : {"local", "ray"}, default="local"
        ``"local"``: in this process, with the embedder's own batching and decoding.
        ``"ray"``: Ray Data hands the files to actors that load the model once each (four
        per GPU, or one per 8 CPU cores) and encode them; see ``decode_in``.
    address : str, default=None
        Ray cluster to attach to (``"auto"`` or ``"ray://head:10001"``); None starts a local
        Ray instance (or uses the one already started in this process). Ray engine only.
    decode_in : {"encoder", "tasks"}, default="encoder"
        Where the Ray engine decodes the files. ``"encoder"``: Ray Data hands blocks of paths
        to the encoding actors, which read and decode them with the embedder's own machinery,
        between forward passes (threads on the CPU; JPEG on the GPU with nvjpeg when the
        actors encode on a GPU), so the embeddings equal ``transform``'s on that device.
        ``"tasks"``: Ray Data CPU tasks decode the files to pixel arrays (on the CPU) and the
        actors resize and encode them; for clusters whose encoding nodes are short of CPU.
        On a CPU-only machine ``"encoder"`` is faster: a decoding process beside the actor
        takes cores from torch's threads (see docs/distributed.md for the measurements).
    shard_size : int, default=10000
        Images per shard: the unit of resumption and of the projector's statistics tasks.
    num_cpus : int, default=None
        CPUs of the local Ray instance started when ``address`` is None (None: all).
    class_aliases : mapping of str to str, str, path-like or None, default=None
        Class name of each class folder named otherwise in a DomainBed-layout ``source``
        (``{"hund": "dog"}``, or a file of ``FOLDER=CLASS`` lines or a JSON object), as in
        :func:`skicm.datasets.load_image_folders`: the ``label`` column holds the class
        names. Recorded in the manifest; a rerun must give the same aliases.
    image_key : str, default=None
        WebDataset: the image member's extension(s), ``;``-separated, the first one a sample
        has (default ``"jpg;jpeg;png;webp"``); Hugging Face: the image column (default
        ``"image"``: an ``Image()`` feature or bytes).
    label_key : str, default=None
        WebDataset: extension of the member holding the label as text (``"cls"``); Hugging
        Face: the label column (a ``ClassLabel`` gives its class names). None: no labels.
    domain_key : str, default=None
        As ``label_key``, for the domain of each item. None: no domains.
    split : str, default=None
        The split of a Hugging Face dataset that has several.
    progress : bool, default=True
        Show a tqdm progress bar over the images still to embed.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``out`` (Path), ``shards`` (list of the shard files written by this call),
        ``n_embedded`` (images written by this call), ``n_skipped`` (images already in earlier
        shards), ``bad_files`` (dict of path to the reason it could not be embedded) and
        ``manifest`` (dict).

    Raises
    ------
    ValueError
        If ``out`` holds embeddings of another model, a finished shard that does not belong
        there (named), or the source or a parameter is invalid (a tar sample without the image
        or label member, a dataset column that does not exist: named).
    FileNotFoundError
        If the source does not exist, or a tar pattern matches no file.
    ConnectionError
        If ``address`` is given and nothing answers there (within 10 seconds).

    See Also
    --------
    load_embeddings : Read the shards back as arrays.
    ShardStore : Let an embedder answer from the shards.

    Examples
    --------
    >>> import tempfile
    >>> import warnings
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skicm.distributed import embed_collection
    >>> from skicm.model_configs import register_tiny_clip
    >>> folder = Path(tempfile.mkdtemp())
    >>> for i in range(5):
    ...     Image.new("RGB", (16, 16), (50 * i, 0, 0)).save(folder / f"{i}.png")
    >>> (folder / "broken.png").write_bytes(b"not an image")
    12
    >>> out = Path(tempfile.mkdtemp()) / "embeddings"
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     result = embed_collection(folder, out, model_name=register_tiny_clip(),
    ...                               pretrained=None, device="cpu", shard_size=2, progress=False)
    >>> print(caught[0].message)  # doctest: +ELLIPSIS
    1 file(s) could not be embedded (the others were written; ...broken.png...
    >>> result.n_embedded, sorted(Path(p).name for p in result.bad_files)
    (5, ['broken.png'])
    >>> with warnings.catch_warnings(record=True):
    ...     again = embed_collection(folder, out, model_name=register_tiny_clip(),
    ...                              pretrained=None, device="cpu", shard_size=2, progress=False)
    >>> again.n_embedded, again.n_skipped  # only the broken file is tried again
    (0, 5)
    """
    from tqdm.auto import tqdm

    if engine not in _ENGINES:
        raise ValueError(f"engine must be one of {_ENGINES}, got {engine!r}.")
    if address is not None and engine != "ray":
        raise ValueError("address= attaches to a Ray cluster; it needs engine='ray'.")
    if decode_in not in _DECODE_PLACES:
        raise ValueError(f"decode_in must be one of {_DECODE_PLACES}, got {decode_in!r}.")
    if decode_in != "encoder" and engine != "ray":
        raise ValueError(
            f"decode_in={decode_in!r} places the decoding on Ray; it needs engine='ray' (the "
            "local engine decodes in this process)."
        )
    if not (isinstance(shard_size, int) and shard_size >= 1):
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}.")
    # A bad source (or class_aliases naming no folder) is reported before the model is built.
    collection = {
        "image_key": image_key,
        "label_key": label_key,
        "domain_key": domain_key,
        "split": split,
    }
    reader = None
    if is_collection(source):
        if class_aliases:
            raise ValueError(
                "class_aliases (--class-alias) names the class folders of a DomainBed-layout "
                f"folder; {str(source)!r} is a collection whose labels come from label_key."
            )
        listing, _, reader = collection_table(
            source, **{k: v for k, v in collection.items() if v is not None}
        )
    else:
        listing, _ = listing_table(source, class_aliases=class_aliases, collection=collection)
    class_aliases = _resolved_aliases(class_aliases)
    embedder = _make_embedder(model_name, pretrained, image_model, embedder, device, batch_size)
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    ray_session = None
    try:
        with exclusive_writer(out):
            remove_temporaries(out)
            existing = read_manifest(out)
            # Every finished shard is checked against the manifest while planning, before any
            # model is loaded or Ray is started.
            shards, n_skipped = plan_shards(listing, out, shard_size, existing)
            del listing  # the shards are slices of what is left to embed
            if engine == "ray" and not shards:
                # Nothing left to embed: Ray is not started (it takes seconds, or fails when
                # the cluster is gone); the manifest is checked here instead.
                manifest = _check_without_ray(out, embedder, existing, class_aliases)
                written, bad = [], {}
            else:
                if engine == "ray":
                    ray_session = _RaySession(address, num_cpus, decode_in, reader)
                    embedder, namespace = ray_session.embedder_and_namespace(embedder)
                else:
                    namespace = _store_namespace(embedder)
                manifest = check_or_write_manifest(
                    out, _manifest(embedder, namespace, class_aliases), existing
                )
                n_todo = sum(rows.num_rows for _, rows in shards)
                bar = tqdm(
                    total=n_todo,
                    unit="img",
                    desc="skicm embed",
                    disable=not progress or not n_todo,
                )
                with bar:
                    if ray_session is None:
                        written, bad = _run_local(
                            embedder, shards, out, namespace, manifest, bar, reader
                        )
                    else:
                        written, bad = ray_session.run(
                            embedder, shards, out, namespace, manifest, bar
                        )
    except BaseException:
        if created:
            _remove_if_unused(out)
        raise
    finally:
        if ray_session is not None:
            ray_session.close()
    n_written = 0
    if written:
        import pyarrow.parquet as pq

        n_written = sum(pq.read_metadata(path).num_rows for path in written)
    if bad:
        warnings.warn(
            f"{len(bad)} file(s) could not be embedded (the others were written; see "
            "bad_files of the result): "
            + "; ".join(f"{path!r}: {reason}" for path, reason in sorted(bad.items())[:20])
            + (f"; and {len(bad) - 20} more" if len(bad) > 20 else ""),
            UserWarning,
            stacklevel=2,
        )
    return Bunch(
        out=out,
        shards=written,
        n_embedded=n_written,
        n_skipped=n_skipped,
        bad_files=dict(sorted(bad.items())),
        manifest=manifest,
    )


def _resolved_aliases(class_aliases) -> dict:
    if class_aliases is None:
        return {}
    from skicm.datasets._image_folders import _resolve_aliases

    return _resolve_aliases(class_aliases)


def _remove_if_unused(out: Path) -> None:
    """Remove the folder a failed call created, unless a shard was written into it."""
    if shard_paths(out):
        return
    for name in (".lock", "manifest.json"):
        (out / name).unlink(missing_ok=True)
    remove_temporaries(out)
    with contextlib.suppress(OSError):  # not empty: something else was put there
        out.rmdir()


def _check_without_ray(out, embedder, existing, class_aliases) -> dict:
    """Check the manifest of ``out`` against ``embedder`` without starting Ray.

    The store namespace of a Ray run depends on the devices of the cluster (precision and
    image decoder): it is computed here for every device the run may use (``"auto"``: CPU or
    GPU). A namespace that cannot be computed on this machine (no CUDA here) is taken from the
    manifest; the other identity fields are compared all the same.
    """
    device = embedder.get_params(deep=False).get("device", "auto")
    candidates, unknown = [], False
    for option in ("cpu", "cuda") if device == "auto" else (device,):
        try:
            on_device = _set_existing_params(clone(embedder), device=option)
            candidates.append(_store_namespace(on_device))
        except ValueError:
            unknown = True
    namespace = existing["namespace"]
    if namespace not in candidates and not unknown:
        namespace = candidates[0]  # the manifest check below names both
    return check_or_write_manifest(out, _manifest(embedder, namespace, class_aliases), existing)


class _DropMessage(logging.Filter):
    """Drop log records whose message starts with ``prefix``."""

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        return not str(record.msg).startswith(self.prefix)


def _execution_groups(shards, max_rows):
    """Consecutive shards in groups of at most ``max_rows`` rows (at least one shard each)."""
    groups, group, rows = [], [], 0
    for shard in shards:
        if group and rows + shard[1].num_rows > max_rows:
            groups.append(group)
            group, rows = [], 0
        group.append(shard)
        rows += shard[1].num_rows
    if group:
        groups.append(group)
    return groups


def _actor_resources(cpus, n_gpus, decode_in):
    """(actors, CPUs per actor, torch threads per actor, GPUs per actor) of a Ray cluster.

    ``n_gpus`` is 0 when the actors encode on CPUs.
    """
    if n_gpus:
        # Up to four actors share a GPU (each with its own copy of the model), so that one's
        # CPU work (reading and keying files, decoding what is not JPEG, resizing, Python)
        # overlaps another's forward pass; never more actors than the CPUs can hold. With
        # decode_in="tasks", half of the CPUs are left to the decoding tasks.
        share = cpus // n_gpus
        if decode_in == "tasks":
            if cpus < 2 * n_gpus:
                raise ValueError(
                    f"decode_in='tasks' needs two CPUs per GPU (one for an encoding actor, one "
                    f"for the decoding tasks); the Ray cluster has {cpus} CPUs and {n_gpus} "
                    "GPUs. Use decode_in='encoder'."
                )
            share //= 2
        per_gpu = max(1, min(_ACTORS_PER_GPU, share))
        actor_cpus = max(1, share // per_gpu)
        return n_gpus * per_gpu, actor_cpus, actor_cpus, 1 / per_gpu
    if decode_in == "tasks":
        if cpus < 2:
            raise ValueError(
                f"decode_in='tasks' needs a CPU for the decoding tasks besides the encoding "
                f"actor's; the Ray cluster has {cpus}. Use decode_in='encoder'."
            )
        # One CPU actor per 8 cores; its torch threads take the cores that decoding leaves.
        n_actors = max(1, cpus // _CORES_PER_CPU_ACTOR)
        threads = max(1, cpus // n_actors - 1) if cpus > 2 else cpus
        return n_actors, 1, threads, 0
    # Each actor decodes between its forward passes with all of its cores, as transform does
    # in one process: a decoding process beside it would take cores from its threads.
    actor_cpus = min(cpus, _CORES_PER_CPU_ACTOR)
    return max(1, cpus // actor_cpus), actor_cpus, actor_cpus, 0


def _check_reachable(address):
    """Fail within seconds, naming ``address``, when no server listens there.

    ``ray.init(address=...)`` retries an unreachable cluster for minutes before it fails; a TCP
    connection to the address says at once whether anything listens there.
    """
    import socket

    target = address[len("ray://") :] if address.startswith("ray://") else address
    if address.startswith("ray://") and ":" not in target.rsplit("]", 1)[-1]:
        target += ":10001"  # the Ray client server's default port
    try:
        # Ray's own reading of an address ("auto", RAY_ADDRESS, "localhost:port").
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # another Ray version: host:port as given, "auto" left to ray.init
        resolved = None if target == "auto" else target
    else:
        try:
            resolved = canonicalize_bootstrap_address(target)
        except (ValueError, ConnectionError) as error:
            raise ConnectionError(
                f"Cannot attach to the Ray cluster at {address!r}: {error}"
            ) from None
    if resolved is None:  # "auto" found no running cluster: ray.init says so at once
        return
    host, _, port = resolved.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), _CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as error:
        where = "" if resolved == target else f"{host}:{port}, "
        raise ConnectionError(
            f"Cannot reach the Ray cluster at {address!r} ({where}{error}). Is Ray "
            "running there (`ray start --head` on that machine), and is the port open from "
            "here? Leave out the address to start a local Ray instance."
        ) from None


class _RaySession:
    """Ray for one ``embed_collection`` call: attach or start, then shut down what was started."""

    def __init__(self, address, num_cpus, decode_in, reader=None):
        import ray

        self.decode_in = decode_in
        self.reader = reader
        self.started = False
        if not ray.is_initialized():
            if address is not None:
                _check_reachable(address)
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
                self.started = True

    def close(self):
        import ray

        if self.started:
            ray.shutdown()

    def embedder_and_namespace(self, embedder):
        """The actors' embedder (device resolved for the cluster) and its store namespace."""
        import ray

        device = embedder.get_params(deep=False).get("device", "auto")
        n_gpus = int(ray.cluster_resources().get("GPU", 0))
        if device == "auto":
            device = "cuda" if n_gpus else "cpu"
            embedder = _set_existing_params(clone(embedder), device=device)
        self.use_gpus = device.startswith("cuda")
        if self.use_gpus and not n_gpus:
            raise ValueError(f"device={device!r} but the Ray cluster has no GPU.")
        self.n_gpus = n_gpus
        if not self.use_gpus:
            return embedder, _store_namespace(embedder)

        # The driver may run on a node without a GPU: ask a GPU worker.
        @ray.remote(num_gpus=1)
        def namespace_on_gpu(embedder):
            return _store_namespace(embedder)

        return embedder, ray.get(namespace_on_gpu.remote(embedder))

    def run(self, embedder, shards, out, namespace, manifest, bar):
        import pyarrow as pa
        import ray

        if not shards:
            return [], {}
        params = embedder.get_params(deep=False)
        batch_size = params.get("batch_size", "auto")
        if batch_size == "auto":
            batch_size = 256 if self.use_gpus else 32
        n_actors, actor_cpus, threads, actor_gpus = _actor_resources(
            int(ray.cluster_resources().get("CPU", 1)),
            self.n_gpus if self.use_gpus else 0,
            self.decode_in,
        )
        rows_per_block = batch_size * _BATCHES_PER_BLOCK[self.decode_in]
        context = ray.data.DataContext.get_current()
        saved_order = context.execution_options.preserve_order
        saved_progress = context.enable_progress_bars
        # In order, so that shards complete one after the other and the driver holds one at a
        # time; our own progress bar replaces Ray's.
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        # Ray Data then logs how to turn its bars back on; ours shows the progress instead.
        quiet = _DropMessage("Progress bars disabled")
        progress_logger = logging.getLogger("ray.data._internal.progress")
        progress_logger.addFilter(quiet)
        encoder_options = {
            "compute": ray.data.ActorPoolStrategy(size=n_actors),
            "num_gpus": actor_gpus,
            "num_cpus": actor_cpus,
        }
        written, bad = [], {}
        try:
            for group in _execution_groups(shards, _ROWS_PER_EXECUTION):
                expected = dict(group)
                blocks = []
                for index, rows in group:
                    table = pa.table(
                        {
                            "path": rows.column("path"),
                            "shard": pa.array(np.full(rows.num_rows, index, dtype=np.int64)),
                            "row": pa.array(np.arange(rows.num_rows, dtype=np.int64)),
                            # Where a collection's reader finds each item.
                            **{
                                name: rows.column(name)
                                for name in rows.column_names
                                if name.startswith("_")
                            },
                        }
                    )
                    blocks.extend(
                        table.slice(start, rows_per_block)
                        for start in range(0, table.num_rows, rows_per_block)
                    )
                dataset = self._dataset(
                    blocks,
                    embedder,
                    namespace,
                    batch_size,
                    rows_per_block,
                    threads,
                    encoder_options,
                )
                group_written, group_bad = self._collect(dataset, expected, out, manifest, bar)
                written.extend(group_written)
                bad.update(group_bad)
            return written, bad
        finally:
            context.execution_options.preserve_order = saved_order
            context.enable_progress_bars = saved_progress
            progress_logger.removeFilter(quiet)

    def _dataset(
        self, blocks, embedder, namespace, batch_size, rows_per_block, threads, encoder_options
    ):
        """The Ray Data pipeline of one execution: blocks of paths to embeddings."""
        import ray

        dataset = ray.data.from_arrow(blocks)
        if self.decode_in == "tasks":
            # The tasks decode as the embedder would (reduced JPEG decode, decoder): what it
            # needs comes from the model's preprocessing, built here once on the CPU.
            decoding = _decoding_of(_set_existing_params(clone(embedder), device="cpu"))
        if self.decode_in == "encoder":
            dataset = dataset.map_batches(
                _PathEncoder,
                fn_constructor_kwargs={
                    "embedder": embedder,
                    "threads": threads,
                    "namespace": namespace,
                    "reader": self.reader,
                },
                batch_size=None,
                batch_format="pyarrow",
                **encoder_options,
            )
        else:
            dataset = dataset.map_batches(
                _decode_batch,
                fn_kwargs={"reader": self.reader, "decoding": decoding},
                batch_size=None,
                batch_format="pyarrow",
                num_cpus=1,
                # A worker with torch and a decoded block: about 0.6 GiB plus 1 MiB per
                # image (a 600x600 RGB photo). Asking for it also keeps Ray Data from fusing
                # the decoding into the encoding actors (operators with other resources are
                # not fused).
                memory=_DECODE_WORKER_BYTES + rows_per_block * _DECODED_IMAGE_BYTES,
            )
            dataset = dataset.map_batches(
                _Encoder,
                fn_constructor_kwargs={"embedder": embedder, "threads": threads},
                batch_size=batch_size,
                batch_format="numpy",
                **encoder_options,
            )
        return dataset

    def _collect(self, dataset, expected, out, manifest, bar):
        # Rows of the shards being filled (the driver writes a shard once all of its rows came).
        arrived = {}
        bad, written = {}, []
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            touched = set()
            for path, shard, error, key, vector in zip(
                batch["path"], batch["shard"], batch["error"], batch["key"], batch["embedding"]
            ):
                path, shard, error = str(path), int(shard), str(error)
                touched.add(shard)
                if error:
                    bad[path] = error
                    arrived.setdefault(shard, {})[path] = None
                else:
                    arrived.setdefault(shard, {})[path] = (str(key), vector)
            bar.update(len(batch["path"]))
            for shard in [s for s in touched if len(arrived[s]) == expected[s].num_rows]:
                encoded = {p: v for p, v in arrived.pop(shard).items() if v is not None}
                rows = _python_rows(expected.pop(shard))
                path = _write_rows(out, shard, rows, encoded, manifest)
                if path is not None:
                    written.append(path)
        if expected:
            raise RuntimeError(
                f"Ray returned incomplete shards {sorted(expected)}; rerun to embed them."
            )
        return written, bad


def _decode_batch(table, reader=None, decoding=(None, "tensor")):
    """Ray Data CPU task: decode the files of a block to uint8 RGB arrays (errors, not raises).

    The decoding is the embedder's own (torchvision's JPEG decoder, Pillow for other formats),
    so the encoding actors see the pixels that ``transform`` would see; resizing is left to the
    actors, which apply the model's own preprocessing.
    """
    paths = table.column("path").to_pylist()
    if reader is not None:
        return _decode_items(table, reader, decoding)
    from torchvision.transforms import Compose

    from skicm.image_loading import ImageDecodingDataset

    keys, unreadable = _file_keys(paths)
    target, decoder = decoding
    dataset = ImageDecodingDataset(
        paths,
        Compose([]),
        mode="pil" if decoder == "pil" else "tensor",
        decode="full" if target is None else "reduced",
        decode_for=target,
    )
    pixels = np.empty(len(paths), dtype=object)
    errors = []
    for index, path in enumerate(paths):
        error = unreadable.get(path)
        if error is None:
            _, chw, _, error = dataset[index]
        if error is None:
            pixels[index] = np.ascontiguousarray(chw.transpose(1, 2, 0))
            errors.append("")
        else:
            pixels[index] = np.zeros((1, 1, 3), dtype=np.uint8)
            errors.append(error)
    return {
        "path": np.asarray(paths, dtype=object),
        "shard": table.column("shard").to_numpy(),
        "row": table.column("row").to_numpy(),
        "key": np.asarray([keys.get(path, "") for path in paths], dtype=object),
        "error": np.asarray(errors, dtype=object),
        "pixels": pixels,
    }


def _decode_items(table, reader, decoding):
    """:func:`_decode_batch` for the rows of a collection, read and decoded by ``reader``.

    Each row's key is its item's store key (as :func:`_encode_items` writes it), not its
    pixels': the shards then answer :func:`skicm.datasets.load_image_collection`'s items.
    """
    from skicm.datasets._collection_reader import collection_items

    paths = table.column("path").to_pylist()
    item_keys = [item.key for item in collection_items(table, reader.kind, reader)]
    target, decoder = decoding
    arrays, bad = reader.decoded(table, target=target, decoder=decoder)
    pixels = np.empty(len(paths), dtype=object)
    keys, errors = [], []
    for index, path in enumerate(paths):
        array = arrays.get(path)
        if array is None:
            pixels[index] = np.zeros((1, 1, 3), dtype=np.uint8)
            keys.append("")
            errors.append(bad.get(path, "not read (no reason reported)"))
        else:
            pixels[index] = array
            keys.append(item_keys[index])
            errors.append("")
    return {
        "path": np.asarray(paths, dtype=object),
        "shard": table.column("shard").to_numpy(),
        "row": table.column("row").to_numpy(),
        "key": np.asarray(keys, dtype=object),
        "error": np.asarray(errors, dtype=object),
        "pixels": pixels,
    }


class _Encoder:
    """Ray Data actor: loads the model once, then encodes batches of decoded images."""

    def __init__(self, embedder, threads):
        # An architecture registered at run time in the driver (--model-config) arrives with
        # the embedder: its pickle carries the config and unpickling registers it.
        self.threads = threads
        self._set_threads()
        self.embedder = _set_existing_params(
            clone(embedder), store=None, normalize=False, progress=False, num_workers=0
        )
        # Load the model now, once per actor, rather than inside the first batch.
        self.embed_dim = self.embedder.transform([np.zeros((8, 8, 3), dtype=np.uint8)]).shape[1]

    def _set_threads(self):
        # Ray sets OMP_NUM_THREADS to the actor's CPUs; the OpenMP thread count is per calling
        # thread, and Ray Data may call the actor from another thread than the constructor's.
        import torch

        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def __call__(self, batch):
        self._set_threads()
        errors = batch["error"]
        good = [i for i, error in enumerate(errors) if not error]
        embeddings = np.zeros((len(errors), self.embed_dim), dtype=np.float32)
        if good:
            pixels = batch["pixels"]
            embeddings[good] = self.embedder.transform([pixels[i] for i in good])
        return {
            "path": batch["path"],
            "shard": batch["shard"],
            "key": batch["key"],
            "error": errors,
            "embedding": embeddings,
        }


class _PathEncoder(_Encoder):
    """Ray Data actor: reads, decodes and encodes a block of image files, as the local engine.

    The embedder's own machinery does the work (``decode_in="encoder"``): on the CPU it decodes
    with one thread per core between forward passes, on a GPU it decodes JPEG on the device.
    """

    def __init__(self, embedder, threads, namespace, reader=None):
        super().__init__(embedder, threads)
        # The manifest's namespace: encoding into another one is an error (_encode_local).
        self.namespace = namespace
        self.reader = reader

    def __call__(self, table):
        self._set_threads()
        paths = table.column("path").to_pylist()
        if self.reader is None:
            encoded, bad = _encode_local(self.embedder, paths, self.namespace)
        else:
            encoded, bad = _encode_items(self.embedder, table, self.namespace, self.reader)
        embeddings = np.zeros((len(paths), self.embed_dim), dtype=np.float32)
        keys = []
        for row, path in enumerate(paths):
            key, vector = encoded.get(path, ("", None))
            keys.append(key)
            if vector is not None:
                embeddings[row] = vector
        missing = "not embedded (no reason reported)"
        return {
            "path": np.asarray(paths, dtype=object),
            "shard": table.column("shard").to_numpy(),
            "key": np.asarray(keys, dtype=object),
            "error": np.asarray(
                ["" if path in encoded else bad.get(path, missing) for path in paths],
                dtype=object,
            ),
            "embedding": embeddings,
        }
