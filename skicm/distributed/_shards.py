"""Parquet shards of embeddings on disk: the manifest, atomic writes, reading back, a store.

Every shard carries the identity of the model that wrote it in its Parquet key/value metadata
(:func:`shard_identity`), and every reader opens shards through :func:`open_shard`, which
checks that identity and the embedding column against the manifest of the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from skicm.store import EmbeddingStore

__all__ = ["ShardStore", "load_embeddings"]

MANIFEST_NAME = "manifest.json"
_SHARD_PATTERN = re.compile(r"^shard-(\d{6,})\.parquet$")
# 1: shards without identity metadata (skicm before shards carried it); 2: every shard carries
# the identity of the model that wrote it in its Parquet key/value metadata.
FORMAT = 2
# What decides whether two runs made the same embeddings; the other manifest fields are
# informative only.
_IDENTITY_FIELDS = ("embedder", "model", "weights", "preprocess", "namespace", "embed_dim")
# Key of the identity in a shard's Parquet key/value (schema) metadata, and what it holds: the
# fields of the manifest that decide what an embedding means, plus the stored dtype.
SHARD_METADATA_KEY = b"skicm"
_SHARD_IDENTITY_FIELDS = ("embedder", "model", "weights", "namespace", "embed_dim", "dtype")
_EMBEDDING_DTYPE = "float32"


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
    """The manifest of ``out`` (None when there is none), checked to be one skicm wrote.

    Raises
    ------
    ValueError
        If the file is not JSON, not an object, or lacks the namespace or the width.
    """
    path = Path(out) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read the manifest {str(path)!r}: {error}") from None
    if not isinstance(manifest, dict):
        raise ValueError(
            f"The manifest {str(path)!r} holds {json.dumps(manifest)[:40]}, not the JSON object "
            "that skicm embed writes: it was overwritten or not written by skicm. Embed into "
            "another folder, or restore the manifest."
        )
    problems = []
    if not isinstance(manifest.get("namespace"), str):
        problems.append(f"'namespace' is {manifest.get('namespace')!r}, not a string")
    width = manifest.get("embed_dim")
    if not (isinstance(width, int) and not isinstance(width, bool) and width >= 1):
        problems.append(f"'embed_dim' is {width!r}, not a positive integer")
    if problems:
        raise ValueError(
            f"The manifest {str(path)!r} is not one skicm embed writes: {'; '.join(problems)}. "
            "Embed into another folder, or restore the manifest."
        )
    return manifest


def require_manifest(out) -> dict:
    """:func:`read_manifest`, with an error when ``out`` has none."""
    manifest = read_manifest(out)
    if manifest is None:
        raise ValueError(f"{str(out)!r} holds no {MANIFEST_NAME}; is it a skicm embed folder?")
    return manifest


def _describe(values: dict) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in values.items())


def check_or_write_manifest(out, manifest: dict, existing: dict | None = None) -> dict:
    """Write ``manifest`` into a fresh ``out``, or check it equals the one already there.

    ``existing`` is the manifest already read from ``out`` (read again when None).

    Raises
    ------
    ValueError
        If ``out`` holds embeddings of another embedder (model, weights, preprocessing, store
        namespace, width) or labels named by other class aliases.
    """
    out = Path(out)
    existing = existing if existing is not None else read_manifest(out)
    if existing is None:
        if shard_paths(out):
            raise ValueError(
                f"{str(out)!r} holds shards but no {MANIFEST_NAME}: it was not written by "
                "skicm embed, or its manifest was removed; use another output folder."
            )
        write_atomically(out / MANIFEST_NAME, json.dumps(manifest, indent=2).encode())
        return manifest
    different = [
        f"{field}: {existing.get(field)!r} in {MANIFEST_NAME}, {manifest.get(field)!r} now"
        for field in _IDENTITY_FIELDS
        if existing.get(field) != manifest.get(field)
    ]
    if different:
        raise ValueError(
            f"{str(out)!r} holds embeddings of another model; refusing to add these to it "
            f"({'; '.join(different)}). Use another --out folder, or the model of the manifest "
            "(the namespace also covers the precision and the image decoder, which depend on "
            "the device: a GPU run in bf16 is not resumed on a CPU)."
        )
    if (existing.get("class_aliases") or {}) != (manifest.get("class_aliases") or {}):
        raise ValueError(
            f"{str(out)!r} holds labels named with class aliases "
            f"{existing.get('class_aliases') or {}}, this run with "
            f"{manifest.get('class_aliases') or {}}; give the same aliases, or another --out."
        )
    return existing


def shard_identity(manifest: dict) -> dict:
    """What a shard of the folder of ``manifest`` carries in its Parquet metadata."""
    return {
        **{field: manifest.get(field) for field in _SHARD_IDENTITY_FIELDS if field != "dtype"},
        "dtype": _EMBEDDING_DTYPE,
    }


def open_shard(path, manifest: dict):
    """Open the finished shard ``path`` and check that it belongs to the folder of ``manifest``.

    Reads the Parquet footer only. Checks the model identity of the shard's key/value metadata
    against the manifest (embedder, model, weights, store namespace, width, dtype) and the type
    of its ``embedding`` column (fixed-size list of ``embed_dim`` float32).

    Returns
    -------
    file : pyarrow.parquet.ParquetFile
    verified : bool
        False for a shard without identity metadata in a folder written before shards carried
        it (manifest format 1): accepted, its width and dtype checked, its model not.

    Raises
    ------
    ValueError
        Naming the shard: unreadable, written by another model, or a column of another type.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
        schema = file.schema_arrow
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"Cannot read the shard {str(path)!r} as Parquet: {error}") from None
    expected = shard_identity(manifest)
    manifest_path = str(Path(path).parent / MANIFEST_NAME)
    raw = (schema.metadata or {}).get(SHARD_METADATA_KEY)
    verified = raw is not None
    if raw is None:
        if manifest.get("format", 1) >= 2:
            raise ValueError(
                f"The shard {str(path)!r} carries no model identity (Parquet metadata key "
                f"{SHARD_METADATA_KEY.decode()!r}), but every shard that skicm embed writes into "
                f"{str(Path(path).parent)!r} carries it: the shard was copied in from elsewhere. "
                "Remove it, or embed its images again."
            )
    else:
        try:
            identity = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            identity = None
        if not isinstance(identity, dict):
            raise ValueError(
                f"The shard {str(path)!r} holds unreadable identity metadata "
                f"({raw[:60]!r}); remove it, or embed its images again."
            )
        shard = {field: identity.get(field) for field in _SHARD_IDENTITY_FIELDS}
        if shard != expected:
            raise ValueError(
                f"The shard {str(path)!r} was written by another model than the one of its "
                f"folder: the shard says {_describe(shard)}; {manifest_path} says "
                f"{_describe(expected)}. Remove it (or move it to the folder of its model)."
            )
    index = schema.get_field_index("embedding")
    wanted = pa.list_(pa.float32(), manifest["embed_dim"])
    if index < 0 or "path" not in schema.names:
        raise ValueError(
            f"The shard {str(path)!r} has no {'embedding' if index < 0 else 'path'!r} column "
            f"(columns: {schema.names}); it was not written by skicm embed."
        )
    if schema.field(index).type != wanted:
        raise ValueError(
            f"The shard {str(path)!r} holds its 'embedding' column as {schema.field(index).type}, "
            f"not {wanted} ({manifest_path} says embed_dim={manifest['embed_dim']}, float32); "
            "it was not written by skicm embed for this folder. Remove it."
        )
    return file, verified


def warn_unverified(out, n_unverified: int) -> None:
    """Warn once per reading that ``n_unverified`` shards of ``out`` could not be verified."""
    if n_unverified:
        warnings.warn(
            f"{n_unverified} shard(s) of {str(out)!r} carry no model identity: the folder was "
            "written by a skicm version before shards carried it. They are read on the word of "
            f"its {MANIFEST_NAME} (their width and dtype are checked, their model cannot be); "
            "embed the collection again into a new folder to have every shard verified.",
            UserWarning,
            stacklevel=3,
        )


def iter_shards(out, manifest: dict, paths=None):
    """Yield ``(path, ParquetFile)`` of the finished shards of ``out``, each checked first.

    ``paths`` restricts the shards (default: all of ``out``). Warns once, after the last, when
    some shards could not be verified (see :func:`open_shard`).
    """
    n_unverified = 0
    for path in shard_paths(out) if paths is None else paths:
        file, verified = open_shard(path, manifest)
        n_unverified += not verified
        try:
            yield path, file
        finally:
            file.close()
    warn_unverified(out, n_unverified)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file; never replaces an existing file.

    The file appears complete or not at all: it is written and flushed to disk under a hidden
    temporary name in the same folder, then hard-linked to its name (which fails if the name
    exists), so a kill at any moment leaves at most a temporary file, which the next run
    removes; a failed write (disk full, file too large) removes it at once.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, path)
    except FileExistsError:
        raise FileExistsError(
            f"{str(path)!r} already exists; shards are never rewritten (is another run writing "
            "to the same folder?)"
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
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


def shard_write_options(column_names) -> dict:
    """Options of ``pyarrow.parquet.write_table`` for a shard with columns ``column_names``.

    The embeddings are stored so that a row can be read where it lies (:class:`ShardStore`
    reads only the rows it is asked for): plain, uncompressed float32 (embeddings barely
    compress: their low bits are noise) in version-2 data pages, which start on a row boundary
    and state their row count and level lengths in their headers. The other columns stay
    compressed, with dictionaries and statistics.
    """
    others = [name for name in column_names if name != "embedding"]
    return {
        "compression": {**dict.fromkeys(others, "snappy"), "embedding": "none"},
        "use_dictionary": others,
        "write_statistics": others,
        "data_page_version": "2.0",
    }


def write_shard(out, index: int, table, identity: dict) -> Path:
    """Write shard ``index`` of ``out`` atomically, with ``identity`` in its Parquet metadata.

    The ``embedding`` column is written in the layout that :class:`ShardStore` reads row by row
    (:func:`shard_write_options`); every Parquet reader reads it as usual.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    metadata = {**(table.schema.metadata or {}), SHARD_METADATA_KEY: json.dumps(identity)}
    sink = pa.BufferOutputStream()
    pq.write_table(
        table.replace_schema_metadata(metadata), sink, **shard_write_options(table.column_names)
    )
    path = Path(out) / shard_name(index)
    write_atomically(path, sink.getvalue().to_pybytes())
    return path


def read_columns(path, file, columns):
    """The ``columns`` of an opened shard that it has (a read error names the shard)."""
    import pyarrow as pa

    present = [name for name in columns if name in file.schema_arrow.names]
    try:
        return file.read(columns=present)
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"Cannot read the shard {str(path)!r}: {error}") from None


def embedded_paths(out, manifest: dict):
    """Every path already in a finished shard of ``out`` (each checked), as Arrow strings."""
    import pyarrow as pa

    chunks = []
    for path, file in iter_shards(out, manifest):
        chunks.extend(read_columns(path, file, ["path"]).column("path").chunks)
    return pa.chunked_array(chunks, type=pa.string())


def embedding_matrix(column) -> np.ndarray:
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
        If ``out`` has no manifest or no shard, or a shard is unreadable or was written by
        another model than the manifest's (the error names the shard).

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
    manifest = require_manifest(out)
    if not shard_paths(out):
        raise ValueError(f"{str(out)!r} holds no finished shard yet.")
    parts = {"path": [], "embedding": []}
    extra = {name: [] for name in columns}
    for path, file in iter_shards(out, manifest):
        table = read_columns(path, file, ["path", "embedding", *columns])
        parts["path"].extend(table.column("path").to_pylist())
        parts["embedding"].append(embedding_matrix(table.column("embedding")))
        for name in columns:
            present = name in table.column_names
            extra[name].append(table.column(name).to_pylist() if present else None)
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


# ---------------------------------------------------------------------------- rows in place
# Parquet page headers are Thrift structs in the compact protocol; reading one needs its
# integers and a way to step over the fields it does not need.
_PLAIN = 0  # Parquet Encoding.PLAIN
_DATA_PAGE_V2 = 3  # Parquet PageType.DATA_PAGE_V2


def _varint(buffer, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _thrift_value(buffer, position: int, kind: int):
    if kind in (1, 2):  # a boolean field carries its value in its type
        return kind == 1, position
    if kind == 3:
        return buffer[position], position + 1
    if kind in (4, 5, 6):  # zigzag varints
        value, position = _varint(buffer, position)
        return (value >> 1) ^ -(value & 1), position
    if kind == 7:
        return None, position + 8
    if kind == 8:
        size, position = _varint(buffer, position)
        return None, position + size
    if kind in (9, 10):
        header = buffer[position]
        position += 1
        size, element = header >> 4, header & 0x0F
        if size == 15:
            size, position = _varint(buffer, position)
        if element in (1, 2):  # booleans: one byte each
            position += size
            if position > len(buffer):
                raise ValueError("a list runs past the end of the file")
            return None, position
        for _ in range(size):
            _, position = _thrift_value(buffer, position, element)
        return None, position
    if kind == 11:
        size, position = _varint(buffer, position)
        if size:
            types = buffer[position]
            position += 1
            for _ in range(size):
                _, position = _thrift_value(buffer, position, types >> 4)
                _, position = _thrift_value(buffer, position, types & 0x0F)
        return None, position
    if kind == 12:
        return _thrift_struct(buffer, position)
    raise ValueError(f"unknown Thrift type {kind}")


def _thrift_struct(buffer, position: int) -> tuple[dict, int]:
    """{field id: value} of the compact-protocol struct at ``position`` (integers and structs
    kept, other values skipped), and the position after it."""
    fields, field = {}, 0
    while True:
        header = buffer[position]
        position += 1
        if header == 0:
            return fields, position
        if header >> 4:
            field += header >> 4
        else:
            raw, position = _varint(buffer, position)
            field = (raw >> 1) ^ -(raw & 1)
        fields[field], position = _thrift_value(buffer, position, header & 0x0F)


def embedding_chunks(metadata, embed_dim: int):
    """Where the ``embedding`` values of each row group lie, from a shard's footer, or None.

    Returns a list of ``(first row, rows, data page offset, bytes)``, one per row group, when
    every row group stores the column uncompressed without a dictionary (the layout
    :func:`write_shard` writes), else None: such a shard is read through pyarrow.
    """
    schema = metadata.schema
    leaf = next(
        (i for i in range(len(schema)) if schema.column(i).path.split(".")[0] == "embedding"),
        None,
    )
    if leaf is None or metadata.num_columns != len(schema):
        return None
    chunks, first = [], 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        column = row_group.column(leaf)
        if column.compression != "UNCOMPRESSED" or column.has_dictionary_page:
            return None
        if column.num_values != row_group.num_rows * embed_dim:
            return None  # a null row (then positions cannot be computed)
        chunks.append((first, row_group.num_rows, column.data_page_offset,
                       column.total_compressed_size))  # fmt: skip
        first += row_group.num_rows
    return chunks


def embedding_pages(buffer, chunks, embed_dim: int):
    """``(first rows, value offsets)`` of every data page of the ``embedding`` column, or None.

    Walks the page headers of each column chunk (``chunks``: :func:`embedding_chunks`) in
    ``buffer`` (the shard's bytes, memory-mapped). A page qualifies when it is a version-2 data
    page of PLAIN values with no null, holding exactly ``rows * embed_dim`` float32 values after
    its levels; then row ``r`` of the page is the ``embed_dim`` float32 at ``offset + 4 *
    embed_dim * (r - first row)``. Any other page (or damaged header) gives None, and the
    shard is read through pyarrow, which reports damage naming the shard.
    """
    firsts, offsets = [], []
    try:
        for first, n_rows, position, size in chunks:
            end, row = position + size, first
            while position < end:
                header, body = _thrift_struct(buffer, position)
                page = header.get(8)
                if header.get(1) != _DATA_PAGE_V2 or not isinstance(page, dict):
                    return None
                values = page.get(1, -1)
                rows = page.get(3, -1)
                levels = page.get(5, 0) + page.get(6, 0)
                if (
                    page.get(2) != 0
                    or page.get(4) != _PLAIN
                    or rows < 0
                    or values != rows * embed_dim
                    or header.get(3, -1) - levels != 4 * values
                ):
                    return None
                firsts.append(row)
                offsets.append(body + levels)
                row += rows
                position = body + header[3]
            if position != end or row != first + n_rows:
                return None
    except (IndexError, ValueError, TypeError, KeyError, RecursionError):
        return None
    return np.asarray(firsts, dtype=np.int64), np.asarray(offsets, dtype=np.int64)


def read_rows_in_place(buffer, pages, rows, embed_dim: int) -> np.ndarray:
    """Rows ``rows`` of the embedding column, read from where they lie (see
    :func:`embedding_pages`); float32 of shape ``(len(rows), embed_dim)``."""
    firsts, offsets = pages
    rows = np.asarray(rows, dtype=np.int64)
    page = np.searchsorted(firsts, rows, side="right") - 1
    starts = offsets[page] + 4 * embed_dim * (rows - firsts[page])
    width = 4 * embed_dim
    data = b"".join(buffer[start : start + width] for start in starts.tolist())
    return np.frombuffer(data, dtype="<f4").reshape(len(rows), embed_dim).astype(np.float32)


def _file_state(stat) -> tuple[int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


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
        Its manifest is read when the store is made; its shards when the store is first asked
        (see Notes).

    Attributes
    ----------
    namespace : str
        The store namespace of the collection's embeddings (from its manifest).

    See Also
    --------
    skicm.distributed.load_embeddings : The same embeddings as arrays.

    Notes
    -----
    Making the store reads the manifest and lists the shards. The first lookup (or
    :meth:`count`) opens every shard once: it checks its footer (model identity, width, dtype:
    a shard of another model is a ``ValueError`` naming the shard) and reads its ``key`` column,
    since any shard may hold an asked key. So no embedding is ever returned before every shard
    of the folder has been checked. Each file's device, inode, size and modification time are
    recorded then, and every later read first checks that the file is still the one checked:
    shards are never rewritten in place, so a replaced file is an error, not a silent read.

    A lookup then reads only the rows asked for: in shards written by this version the
    embeddings lie uncompressed at offsets that the page headers give, and are read from the
    memory-mapped file; other shards are read through pyarrow, one row group at a time.

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
        manifest = require_manifest(out)
        self.out = out
        self.namespace = manifest["namespace"]
        self._manifest = manifest
        self._shards = shard_paths(out)
        self._index = None  # key -> (shard, row), made on first lookup (every shard checked)
        self._states = []  # per shard: the file state when its footer was checked
        self._chunks = []  # per shard: embedding_chunks() of its footer
        self._pages = {}  # shard -> embedding_pages(), read on the shard's first lookup
        self._computed = {}

    @property
    def n_computed(self) -> int:
        """Embeddings put into the store (computed by an embedder) since it was opened."""
        return sum(len(items) for items in self._computed.values())

    def _key_index(self):
        if self._index is None:
            index, states, chunks, n_unverified = {}, [], [], 0
            embed_dim = self._manifest["embed_dim"]
            for number, path in enumerate(self._shards):
                state = _file_state(os.stat(path))
                file, verified = open_shard(path, self._manifest)
                n_unverified += not verified
                with file:
                    keys = read_columns(path, file, ["key"]).column("key").to_pylist()
                    chunks.append(embedding_chunks(file.metadata, embed_dim))
                states.append(state)
                index.update((key, (number, row)) for row, key in enumerate(keys))
            warn_unverified(self.out, n_unverified)
            self._index, self._states, self._chunks = index, states, chunks
        return self._index

    def _changed(self, path) -> ValueError:
        return ValueError(
            f"The shard {str(path)!r} changed since this ShardStore checked it (shards are "
            "never rewritten: another process replaced it). Open a new ShardStore."
        )

    def _read_rows(self, shard: int, rows) -> np.ndarray:
        """Rows ``rows`` of the embeddings of shard number ``shard``, read where they lie."""
        import mmap

        path = self._shards[shard]
        embed_dim = self._manifest["embed_dim"]
        with open(path, "rb") as handle:
            if _file_state(os.fstat(handle.fileno())) != self._states[shard]:
                raise self._changed(path)
            if self._chunks[shard] is not None and self._pages.get(shard, True) is not None:
                with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
                    if shard not in self._pages:
                        self._pages[shard] = embedding_pages(buffer, self._chunks[shard], embed_dim)
                    if self._pages[shard] is not None:
                        return read_rows_in_place(buffer, self._pages[shard], rows, embed_dim)
        return self._read_rows_with_pyarrow(shard, rows)

    def _read_rows_with_pyarrow(self, shard: int, rows) -> np.ndarray:
        """Rows ``rows`` of a shard in another layout: only the row groups that hold them."""
        import pyarrow as pa

        path = self._shards[shard]
        file, _ = open_shard(path, self._manifest)
        with file:
            if _file_state(os.stat(path)) != self._states[shard]:
                raise self._changed(path)
            sizes = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
            ends = np.cumsum(sizes)
            rows = np.asarray(rows, dtype=np.int64)
            groups = np.unique(np.searchsorted(ends, rows, side="right"))
            try:
                table = file.read_row_groups(groups.tolist(), columns=["embedding"])
            except (pa.ArrowException, OSError) as error:
                raise ValueError(f"Cannot read the shard {str(path)!r}: {error}") from None
        starts = np.concatenate([[0], ends])[groups]
        # Position of each asked row within the concatenated row groups read.
        before = np.cumsum(np.concatenate([[0], np.asarray(sizes)[groups][:-1]]))
        which = np.searchsorted(groups, np.searchsorted(ends, rows, side="right"))
        positions = before[which] + rows - starts[which]
        return embedding_matrix(table.column("embedding"))[positions]

    def get_many(self, namespace, keys):
        """Look up embeddings: from the shards (their namespace only), then from memory.

        The first lookup in the collection's namespace checks every shard (see Notes of the
        class); each reads only the rows of the keys found.

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

        Raises
        ------
        ValueError
            Naming the shard: unreadable, written by another model, or replaced since checked.
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
            matrix = self._read_rows(shard, [row for _, row in wanted])
            found.update((key, vector) for (key, _), vector in zip(wanted, matrix))
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
