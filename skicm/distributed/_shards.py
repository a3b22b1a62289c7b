"""Parquet shards of embeddings on disk: the manifest, atomic writes, reading back, a store."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from skicm.store import EmbeddingStore

__all__ = ["ShardStore", "load_embeddings"]

MANIFEST_NAME = "manifest.json"
_SHARD_PATTERN = re.compile(r"^shard-(\d{6,})\.parquet$")
_FORMAT = 1
# What decides whether two runs made the same embeddings; the other manifest fields are
# informative only.
_IDENTITY_FIELDS = ("embedder", "model", "weights", "preprocess", "namespace", "embed_dim")


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.parquet"


def shard_paths(out) -> list[Path]:
    """Finished shards of ``out``, in shard order."""
    out = Path(out)
    found = []
    for entry in out.iterdir() if out.is_dir() else ():
        match = _SHARD_PATTERN.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    return [path for _, path in sorted(found)]


def read_manifest(out) -> dict | None:
    path = Path(out) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read the manifest {str(path)!r}: {error}") from None


def check_or_write_manifest(out, manifest: dict) -> dict:
    """Write ``manifest`` into a fresh ``out``, or check it equals the one already there.

    Raises
    ------
    ValueError
        If ``out`` holds embeddings of another embedder (model, weights, preprocessing).
    """
    out = Path(out)
    existing = read_manifest(out)
    if existing is None:
        if shard_paths(out):
            raise ValueError(
                f"{str(out)!r} holds shards but no {MANIFEST_NAME}: it was not written by "
                "skicm embed, or its manifest was removed; use another output folder."
            )
        write_atomically(out / MANIFEST_NAME, json.dumps(manifest, indent=2).encode())
        return manifest
    different = [
        f"{field}: {existing.get(field)!r} there, {manifest.get(field)!r} now"
        for field in _IDENTITY_FIELDS
        if existing.get(field) != manifest.get(field)
    ]
    if different:
        raise ValueError(
            f"{str(out)!r} holds embeddings of another model; refusing to add these to it "
            f"({'; '.join(different)}). Use another --out folder, or the model of the manifest."
        )
    return existing


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file; never replaces an existing file.

    The file appears complete or not at all: it is written and flushed to disk under a hidden
    temporary name, then hard-linked to its name (which fails if the name exists), so a kill at
    any moment leaves at most a temporary file, which the next run removes.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise FileExistsError(
            f"{str(path)!r} already exists; shards are never rewritten (is another run writing "
            "to the same folder?)"
        ) from None
    finally:
        os.unlink(temporary)
    with contextlib.suppress(OSError):  # make the new name durable too, where the OS allows
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def remove_temporaries(out) -> None:
    for entry in Path(out).glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()


@contextlib.contextmanager
def exclusive_writer(out):
    """Hold an exclusive lock on ``out`` so that two runs never write into it at once."""
    import fcntl

    handle = open(Path(out) / ".lock", "a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"Another skicm embed run is writing to {str(out)!r}; wait for it to finish."
            ) from None
        yield
    finally:
        handle.close()


def shard_table(rows: dict, embed_dim: int):
    """Arrow table of one shard: path, key, embedding (fixed-size float32 list), label, domain."""
    import pyarrow as pa

    embeddings = np.ascontiguousarray(rows["embedding"], dtype=np.float32).reshape(-1)
    columns = {
        "path": pa.array(rows["path"], type=pa.string()),
        "key": pa.array(rows["key"], type=pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings), embed_dim),
    }
    for name in ("label", "domain"):
        if rows.get(name) is not None:
            columns[name] = pa.array(rows[name])
    return pa.table(columns)


def write_shard(out, index: int, table) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    path = Path(out) / shard_name(index)
    write_atomically(path, sink.getvalue().to_pybytes())
    return path


def _read_shard(path, columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"Cannot read the shard {str(path)!r}: {error}") from None


def _present_columns(path, wanted):
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    return [name for name in wanted if name in names]


def embedded_paths(out):
    """Every path already in a finished shard of ``out``, as an Arrow string array."""
    import pyarrow as pa

    chunks = []
    for path in shard_paths(out):
        chunks.extend(_read_shard(path, ["path"]).column("path").chunks)
    return pa.chunked_array(chunks, type=pa.string())


def _embedding_matrix(column) -> np.ndarray:
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = array.type.list_size
    values = array.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(-1, width).astype(np.float32, copy=False)


def load_embeddings(out, *, normalize=True, columns=("label", "domain")):
    """Read the embeddings that :func:`skicm.distributed.embed_collection` wrote to ``out``.

    Parameters
    ----------
    out : str or path-like
        The output folder of ``embed_collection`` / ``skicm embed``.
    normalize : bool, default=True
        Scale every embedding to unit norm, as :class:`skicm.CLIPEmbedder` does by default;
        False returns the raw model outputs stored in the shards.
    columns : sequence of str, default=("label", "domain")
        Optional columns to read besides the paths and embeddings.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``paths`` (ndarray of str), ``embeddings`` (float32, ``(n, embed_dim)``), ``labels`` and
        ``domains`` (ndarrays, or None when the source had none) and ``manifest`` (dict), rows
        in shard order.

    Raises
    ------
    ValueError
        If ``out`` has no manifest or no shard.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skicm.distributed import embed_collection, load_embeddings
    >>> from skicm.model_configs import register_tiny_clip
    >>> folder = Path(tempfile.mkdtemp())
    >>> for i in range(3):
    ...     Image.new("RGB", (16, 16), (80 * i, 0, 0)).save(folder / f"{i}.png")
    >>> out = Path(tempfile.mkdtemp()) / "embeddings"
    >>> _ = embed_collection(folder, out, model_name=register_tiny_clip(), pretrained=None,
    ...                      device="cpu", progress=False)
    >>> data = load_embeddings(out)
    >>> data.embeddings.shape, data.labels
    ((3, 32), None)
    """
    out = Path(out)
    manifest = read_manifest(out)
    if manifest is None:
        raise ValueError(f"{str(out)!r} holds no {MANIFEST_NAME}; is it a skicm embed folder?")
    paths = shard_paths(out)
    if not paths:
        raise ValueError(f"{str(out)!r} holds no finished shard yet.")
    parts = {"path": [], "embedding": []}
    extra = {name: [] for name in columns}
    for path in paths:
        present = _present_columns(path, ["path", "embedding", *columns])
        table = _read_shard(path, present)
        parts["path"].extend(table.column("path").to_pylist())
        parts["embedding"].append(_embedding_matrix(table.column("embedding")))
        for name in columns:
            extra[name].append(table.column(name).to_pylist() if name in present else None)
    embeddings = np.concatenate(parts["embedding"])
    if normalize:
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        embeddings = embeddings / np.maximum(norms, np.finfo(np.float32).tiny)
    values = {}
    for name, chunks in extra.items():
        if any(chunk is None for chunk in chunks):
            values[name] = None
        else:
            values[name] = np.asarray([v for chunk in chunks for v in chunk])
    return Bunch(
        paths=np.asarray(parts["path"]),
        embeddings=embeddings.astype(np.float32, copy=False),
        labels=values.get("label"),
        domains=values.get("domain"),
        manifest=manifest,
    )


class ShardStore(EmbeddingStore):
    """An embedding store that answers from the Parquet shards of an embedded collection.

    Pass it as ``store=`` to :class:`skicm.CLIPEmbedder` with the model of the collection: the
    images embedded in ``out`` are then looked up (by image key: real path, inode, size and
    times, so a file changed since is encoded again), never re-encoded. Embeddings of other
    images that the embedder computes are kept in memory, not written to the shards.

    Parameters
    ----------
    out : str or path-like
        The output folder of :func:`skicm.distributed.embed_collection` / ``skicm embed``.

    Attributes
    ----------
    namespace : str
        The store namespace of the collection's embeddings (from its manifest).

    See Also
    --------
    skicm.distributed.load_embeddings : The same embeddings as arrays.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skicm import CLIPEmbedder
    >>> from skicm.distributed import ShardStore, embed_collection
    >>> from skicm.model_configs import register_tiny_clip
    >>> folder = Path(tempfile.mkdtemp())
    >>> paths = []
    >>> for i in range(3):
    ...     paths.append(str(folder / f"{i}.png"))
    ...     Image.new("RGB", (16, 16), (80 * i, 0, 0)).save(paths[-1])
    >>> out = Path(tempfile.mkdtemp()) / "embeddings"
    >>> _ = embed_collection(folder, out, model_name=register_tiny_clip(), pretrained=None,
    ...                      device="cpu", progress=False)
    >>> store = ShardStore(out)
    >>> embedder = CLIPEmbedder(register_tiny_clip(), pretrained=None, device="cpu", store=store)
    >>> embedder.transform(paths).shape
    (3, 32)
    >>> store.count(), store.n_computed  # all three answered from the shards
    (3, 0)
    """

    def __init__(self, out):
        out = Path(out)
        manifest = read_manifest(out)
        if manifest is None:
            raise ValueError(f"{str(out)!r} holds no {MANIFEST_NAME}; is it a skicm embed folder?")
        self.out = out
        self.namespace = manifest["namespace"]
        self._index = None  # key -> (shard, row), read on first lookup
        self._shards = []
        self._computed = {}

    @property
    def n_computed(self) -> int:
        """Embeddings put into the store (computed by an embedder) since it was opened."""
        return sum(len(items) for items in self._computed.values())

    def _key_index(self):
        if self._index is None:
            index = {}
            self._shards = shard_paths(self.out)
            for number, path in enumerate(self._shards):
                keys = _read_shard(path, ["key"]).column("key").to_pylist()
                index.update((key, (number, row)) for row, key in enumerate(keys))
            self._index = index
        return self._index

    def get_many(self, namespace, keys):
        """Look up embeddings: from the shards (their namespace only), then from memory.

        Parameters
        ----------
        namespace : str
            Store namespace of the asking embedder.
        keys : sequence of str
            Image keys.

        Returns
        -------
        vectors : dict of str to ndarray
            The raw embeddings found, by key.
        """
        found = {}
        computed = self._computed.get(namespace, {})
        found.update((key, computed[key]) for key in keys if key in computed)
        if namespace != self.namespace:
            return found
        index = self._key_index()
        by_shard: dict[int, list[tuple[str, int]]] = {}
        for key in keys:
            if key in index and key not in found:
                shard, row = index[key]
                by_shard.setdefault(shard, []).append((key, row))
        for shard, wanted in by_shard.items():
            matrix = _embedding_matrix(
                _read_shard(self._shards[shard], ["embedding"]).column("embedding")
            )
            found.update((key, matrix[row]) for key, row in wanted)
        return found

    def put_many(self, namespace, items):
        """Keep embeddings computed by an embedder in memory (the shards are never changed).

        Parameters
        ----------
        namespace : str
            Store namespace of the embeddings.
        items : mapping of str to ndarray
            Image key -> embedding.
        """
        self._computed.setdefault(namespace, {}).update(
            (key, np.asarray(value, dtype=np.float32)) for key, value in items.items()
        )

    def count(self, namespace=None):
        """Number of embeddings the store can answer.

        Parameters
        ----------
        namespace : str or None, default=None
            Count this namespace only; None counts all.

        Returns
        -------
        count : int
            Rows of the shards (in their namespace) plus embeddings kept in memory.
        """
        shard_rows = len(self._key_index()) if namespace in (None, self.namespace) else 0
        if namespace is None:
            return shard_rows + self.n_computed
        return shard_rows + len(self._computed.get(namespace, {}))

    def __repr__(self):
        return f"ShardStore({str(self.out)!r})"
