"""Embedding stores: where :class:`skicm.CLIPEmbedder` keeps the embeddings it has computed.

A store maps ``(namespace, key)`` to one float32 vector. The namespace identifies everything that
determines an embedding besides the image (model, weights, precision, preprocessing); the key
identifies the image (a content hash for pixels; for files the real path, inode, size, modification
and change times).
Two implementations share one small interface:

- :class:`MemoryStore`, a process-level LRU cache (the default), so that clones of an embedder made
  by :class:`~sklearn.model_selection.GridSearchCV` reuse each other's work;
- :class:`SQLiteStore`, a file on disk (standard-library :mod:`sqlite3`, WAL journal), so that a
  killed run resumes where it stopped and other processes reuse the embeddings.

Both write a batch in one transaction, so a failure never leaves part of a batch behind, and
both refuse what would give wrong embeddings later: a vector that is not finite (NaN or
infinite), not one-dimensional, or not of the length of the vectors already in its namespace
(``ValueError`` naming the store, the namespace and the keys). A vector of the wrong length read
from a damaged store is reported the same way instead of being returned. A :class:`SQLiteStore`
whose file or folder is not writable is opened read-only: it answers look-ups, and only a write
fails (``PermissionError`` naming the file).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import urllib.parse
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "EmbeddingStore",
    "MemoryStore",
    "SQLiteStore",
    "close_stores",
    "default_memory_store",
    "open_store",
]


class EmbeddingStore:
    """Interface of an embedding store: batched look-up and batched, atomic insertion.

    Subclasses implement :meth:`get_many` and :meth:`put_many`; vectors are finite, float32 and
    one-dimensional, and all vectors of a namespace have the same length.

    See Also
    --------
    MemoryStore : The in-process implementation.
    SQLiteStore : The on-disk implementation.

    Examples
    --------
    >>> from skicm.store import EmbeddingStore, MemoryStore
    >>> isinstance(MemoryStore(), EmbeddingStore)
    True
    """

    def get_many(self, namespace: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Look up stored vectors.

        Parameters
        ----------
        namespace : str
            What determines the embeddings besides the image (model, weights, preprocessing).
        keys : sequence of str
            Image identities.

        Returns
        -------
        vectors : dict of str to ndarray
            The vectors stored under those ``keys`` that are present (others left out).
        """
        raise NotImplementedError

    def put_many(self, namespace: str, items: Mapping[str, np.ndarray]) -> None:
        """Store vectors, all together or, on failure, not at all.

        Parameters
        ----------
        namespace : str
            What determines the embeddings besides the image.
        items : mapping of str to ndarray
            Image identity -> one-dimensional float32 vector.

        Raises
        ------
        ValueError
            If a vector is not finite, not one-dimensional, or not of the length of the other
            vectors of the batch and of ``namespace``; nothing is stored then.
        """
        raise NotImplementedError

    def count(self, namespace: str | None = None) -> int:
        """Number of stored vectors.

        Parameters
        ----------
        namespace : str or None, default=None
            Count this namespace only; None counts all namespaces.

        Returns
        -------
        count : int
            Number of stored vectors.
        """
        raise NotImplementedError

    def _name(self) -> str:
        """How error messages name this store."""
        return f"embedding store {self!r}"

    def _checked(self, namespace, items, stored_length=None) -> list[tuple[str, np.ndarray]]:
        """``items`` as ``(key, float32 vector)`` pairs; ValueError naming the bad keys."""
        pairs = []
        for key, vector in items.items():
            array = np.asarray(vector)
            if array.ndim == 2 and array.shape[0] == 1:
                array = array[0]
            pairs.append((key, np.array(array, dtype=np.float32, copy=True)))
        where = f"{self._name()}, namespace {namespace!r}"
        shapes = [_Described(f"{key!r} {v.shape}") for key, v in pairs if v.ndim != 1]
        if shapes:
            raise ValueError(
                f"Cannot store {len(shapes)} vector(s) in {where}: embeddings must be "
                f"one-dimensional; got shapes {_some(shapes)}."
            )
        bad = [key for key, v in pairs if not np.isfinite(v).all()]
        if bad:
            raise ValueError(
                f"Cannot store {len(bad)} embedding(s) with NaN or infinite values in {where} "
                f"(keys {_some(bad)}); nothing of this batch was stored. Non-finite embeddings "
                "come from a model whose weights or inputs are not finite."
            )
        lengths = {}
        for key, vector in pairs:
            lengths.setdefault(vector.size, []).append(key)
        if stored_length is not None:
            lengths.setdefault(stored_length, [])
        if len(lengths) > 1:
            parts = [f"length {n}: {_some(keys)}" for n, keys in sorted(lengths.items()) if keys]
            known = (
                f"; the namespace already holds vectors of length {stored_length}"
                if stored_length is not None
                else ""
            )
            raise ValueError(
                f"Cannot store vectors of different lengths in {where} ({'; '.join(parts)}"
                f"{known}); nothing of this batch was stored. One namespace holds the embeddings "
                "of one model: a different length means a different model under the same "
                "namespace."
            )
        return pairs

    def _check_read(self, namespace, found, stored_length=None) -> dict[str, np.ndarray]:
        """``found`` unchanged when its vectors have one length; else ValueError naming them."""
        lengths = {}
        for key, vector in found.items():
            lengths.setdefault(vector.size, []).append(key)
        if stored_length is not None:
            lengths.setdefault(stored_length, [])
        if len(lengths) > 1:
            parts = [f"length {n}: {_some(keys)}" for n, keys in sorted(lengths.items()) if keys]
            raise ValueError(
                f"The {self._name()} holds vectors of different lengths in namespace "
                f"{namespace!r} ({'; '.join(parts)}; the namespace's vectors have length "
                f"{stored_length if stored_length is not None else 'unknown'}): the store was "
                "damaged or written by another program. Delete the wrong rows or the store."
            )
        return found


def _some(keys, limit=5) -> str:
    """At most ``limit`` keys (or descriptions) for an error message, then how many more."""
    shown = ", ".join(k if isinstance(k, _Described) else repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


class _Described(str):
    """Text that :func:`_some` shows as it is rather than quoted."""


class MemoryStore(EmbeddingStore):
    """In-process store with least-recently-used eviction beyond ``max_bytes``.

    Parameters
    ----------
    max_bytes : int, default=2**31
        Memory budget for the stored vectors (2 GiB: about a million 512-d embeddings).

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.store import MemoryStore
    >>> store = MemoryStore()
    >>> store.put_many("model-a", {"img-1": np.ones(4, dtype=np.float32)})
    >>> sorted(store.get_many("model-a", ["img-1", "img-2"]))
    ['img-1']
    >>> store.count()
    1
    """

    def __init__(self, max_bytes: int = 2**31):
        self.max_bytes = int(max_bytes)
        self._vectors: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lengths: dict[str, int] = {}  # vector length of each namespace ever written
        self._nbytes = 0
        self._lock = threading.Lock()

    def __repr__(self):
        return f"MemoryStore(max_bytes={self.max_bytes})"

    def _name(self):
        return "in-process embedding store (MemoryStore)"

    def get_many(self, namespace, keys):
        found = {}
        with self._lock:
            for key in keys:
                vector = self._vectors.get((namespace, key))
                if vector is not None:
                    self._vectors.move_to_end((namespace, key))
                    found[key] = vector
        return found

    def put_many(self, namespace, items):
        # Copies are checked before taking the lock, so the insertion itself cannot fail halfway.
        prepared = self._checked(namespace, items, self._lengths.get(namespace))
        if not prepared:
            return
        for _, vector in prepared:
            vector.setflags(write=False)
        with self._lock:
            length = self._lengths.setdefault(namespace, prepared[0][1].size)
            if length != prepared[0][1].size:  # another thread wrote this namespace meanwhile
                self._checked(namespace, dict(prepared), length)
            for key, vector in prepared:
                full_key = (namespace, key)
                old = self._vectors.pop(full_key, None)
                if old is not None:
                    self._nbytes -= old.nbytes
                self._vectors[full_key] = vector
                self._nbytes += vector.nbytes
            while self._nbytes > self.max_bytes and self._vectors:
                _, evicted = self._vectors.popitem(last=False)
                self._nbytes -= evicted.nbytes

    def count(self, namespace=None):
        with self._lock:
            if namespace is None:
                return len(self._vectors)
            return sum(1 for ns, _ in self._vectors if ns == namespace)

    def clear(self) -> None:
        """Forget every stored vector."""
        with self._lock:
            self._vectors.clear()
            self._lengths.clear()
            self._nbytes = 0


_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID
"""

# SQLite allows at least 999 bound parameters per statement; one is the namespace.
_SELECT_CHUNK = 900


class SQLiteStore(EmbeddingStore):
    """Persistent store in one SQLite file, shared by processes and surviving crashes.

    The database runs in write-ahead-log mode, so readers in other processes are never blocked by a
    writer, and every :meth:`put_many` is one transaction: a run killed at any moment leaves the
    rows of the batches it finished and nothing of the batch it was writing. Vectors are stored as
    little-endian float32 blobs.

    A store whose file or folder is not writable (permissions, a read-only file system) is
    opened read-only: look-ups work, so a store that holds every requested embedding is fully
    usable, and :meth:`put_many` raises :class:`PermissionError` naming the file when it has
    something to write. A read-only store whose folder cannot hold SQLite's ``-wal``/``-shm``
    files is read as immutable: rows another process writes meanwhile are not seen.

    Parameters
    ----------
    path : str or os.PathLike
        Database file; created (with its folder) when missing.
    timeout : float, default=60.0
        Seconds to wait for another process's write lock before giving up.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from skicm.store import SQLiteStore
    >>> path = Path(tempfile.mkdtemp()) / "embeddings.sqlite"
    >>> store = SQLiteStore(path)
    >>> store.put_many("model-a", {"img-1": np.arange(3, dtype=np.float32)})
    >>> SQLiteStore(path).get_many("model-a", ["img-1"])["img-1"]
    array([0., 1., 2.], dtype=float32)
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0):
        self.path = Path(path)
        self.timeout = float(timeout)
        self._connection: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._file_id: tuple[int, int] | None = None
        self._read_only: str | None = None  # why the store is read-only, when it is
        self._lock = threading.Lock()

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def _drop_connection(self) -> None:
        if self._connection is not None and self._pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
        self._connection = None
        self._file_id = None
        self._read_only = None

    def _unwritable(self) -> str | None:
        """Why this process cannot write the store (None when it can)."""
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return f"its folder {str(folder)!r} cannot be created: {error.strerror or error}"
        if self.path.exists() and not os.access(self.path, os.W_OK):
            return "the file is not writable"
        if not os.access(folder, os.W_OK | os.X_OK):
            # SQLite writes its journal (-wal, -shm) beside the database.
            return f"its folder {str(folder)!r} is not writable"
        return None

    def _connect_read_only(self) -> sqlite3.Connection | None:
        """A read-only connection; None when there is no database file (nothing stored)."""
        if not self.path.exists():
            return None
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        last_error: sqlite3.Error | None = None
        # A WAL database needs its -shm file; without a writable folder to create it in, SQLite
        # reads the file only when told that it cannot change (immutable).
        for suffix in ("", "&immutable=1"):
            connection = sqlite3.connect(
                uri + suffix, uri=True, timeout=self.timeout, check_same_thread=False
            )
            try:
                connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                return connection
            except sqlite3.Error as error:
                last_error = error
                connection.close()
        raise OSError(
            f"Cannot read the read-only embedding store {str(self.path)!r}: {last_error}"
        ) from last_error

    def _connect(self) -> sqlite3.Connection | None:
        """This process's connection; None for a read-only store that has no file yet."""
        # A connection must not cross a fork; reopen in a child process. A database file that
        # was deleted or replaced since the connection was made is reopened by its path, so
        # that writes do not go to an unlinked file that no other process can see.
        if (self._connection is not None or self._read_only is not None) and (
            self._pid != os.getpid() or self._file_identity() != self._file_id
        ):
            self._drop_connection()
        if self._connection is None and self._read_only is None:
            reason = self._unwritable()
            if reason is not None:
                self._connection = self._connect_read_only()
                self._read_only = reason
                self._pid = os.getpid()
                self._file_id = self._file_identity()
                return self._connection
            try:
                connection = sqlite3.connect(
                    self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
                )
                (journal_mode,) = connection.execute("PRAGMA journal_mode=WAL").fetchone()
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.execute(_SCHEMA)
            except sqlite3.Error as error:
                raise OSError(
                    f"Cannot use {str(self.path)!r} as an embedding store: {error}"
                ) from error
            if str(journal_mode).lower() != "wal":
                warnings.warn(
                    f"The embedding store {str(self.path)!r} could not switch to write-ahead "
                    f"logging (journal_mode is {journal_mode!r}); it still works, but readers "
                    "wait for writers. WAL needs shared memory, which network filesystems (NFS, "
                    "SMB) do not provide: keep the store on a local disk.",
                    RuntimeWarning,
                    stacklevel=4,
                )
            self._connection = connection
            self._pid = os.getpid()
            self._file_id = self._file_identity()
        return self._connection

    def _error(self, action: str, error: sqlite3.Error) -> OSError:
        return OSError(f"Embedding store {str(self.path)!r}: cannot {action}: {error}")

    def _name(self):
        return f"embedding store {str(self.path)!r}"

    @staticmethod
    def _stored_length(connection, namespace) -> int | None:
        """Length of the vectors of ``namespace`` (from one row), None when it is empty."""
        row = connection.execute(
            "SELECT length(vector) FROM embeddings WHERE namespace = ? LIMIT 1", (namespace,)
        ).fetchone()
        return None if row is None else row[0] // 4

    def _has_table(self, connection) -> bool:
        row = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'embeddings'"
        ).fetchone()
        return row is not None

    def get_many(self, namespace, keys):
        keys = list(dict.fromkeys(keys))
        found = {}
        bad_blobs = []
        with self._lock:
            connection = self._connect()
            if connection is None or (self._read_only and not self._has_table(connection)):
                return found
            try:
                stored_length = self._stored_length(connection, namespace)
                for start in range(0, len(keys), _SELECT_CHUNK):
                    chunk = keys[start : start + _SELECT_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = connection.execute(
                        "SELECT key, vector FROM embeddings WHERE namespace = ? "
                        f"AND key IN ({marks})",
                        [namespace, *chunk],
                    )
                    for key, blob in rows:
                        if not isinstance(blob, bytes) or len(blob) % 4:
                            bad_blobs.append(key)
                            continue
                        found[key] = np.frombuffer(blob, dtype="<f4").astype(np.float32)
            except sqlite3.Error as error:
                raise self._error("read embeddings", error) from error
        if bad_blobs:
            raise ValueError(
                f"The {self._name()} holds {len(bad_blobs)} value(s) in namespace {namespace!r} "
                f"that are not float32 vectors (keys {_some(bad_blobs)}): the store was damaged "
                "or written by another program. Delete the wrong rows or the store."
            )
        return self._check_read(namespace, found, stored_length)

    def put_many(self, namespace, items):
        pairs = self._checked(namespace, items)
        if not pairs:
            return
        rows = [(namespace, key, vector.astype("<f4").tobytes()) for key, vector in pairs]
        with self._lock:
            connection = self._connect()
            if self._read_only is not None:
                raise PermissionError(
                    f"The embedding store {str(self.path)!r} is read-only ({self._read_only}): "
                    f"cannot store {len(rows)} new embedding(s) in namespace {namespace!r}. "
                    "Make it writable, or pass another store (a writable path, or 'memory')."
                )
            try:
                connection.execute("BEGIN IMMEDIATE")
                self._checked(namespace, dict(pairs), self._stored_length(connection, namespace))
                connection.executemany(
                    "INSERT OR REPLACE INTO embeddings (namespace, key, vector) VALUES (?, ?, ?)",
                    rows,
                )
                connection.execute("COMMIT")
            except BaseException as error:
                # SQLite may already have rolled back (e.g. on SQLITE_FULL); an unconditional
                # ROLLBACK would then raise and hide the real error.
                if connection.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        connection.execute("ROLLBACK")
                if isinstance(error, sqlite3.Error):
                    raise self._error(f"store {len(rows)} embedding(s)", error) from error
                raise

    def count(self, namespace=None):
        with self._lock:
            connection = self._connect()
            if connection is None or (self._read_only and not self._has_table(connection)):
                return 0
            try:
                if namespace is None:
                    (n,) = connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()
                else:
                    (n,) = connection.execute(
                        "SELECT COUNT(*) FROM embeddings WHERE namespace = ?", (namespace,)
                    ).fetchone()
            except sqlite3.Error as error:
                raise self._error("count embeddings", error) from error
        return int(n)

    def close(self) -> None:
        """Close this process's connection (it reopens on next use)."""
        with self._lock:
            self._drop_connection()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_connection"] = None
        state["_pid"] = None
        state["_file_id"] = None
        state["_read_only"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._file_id = None
        self._read_only = None
        self._lock = threading.Lock()

    def __repr__(self):
        return f"SQLiteStore({str(self.path)!r})"


_DEFAULT_MEMORY_STORE = MemoryStore()
_SQLITE_STORES: dict[str, SQLiteStore] = {}
_SQLITE_LOCK = threading.Lock()


def default_memory_store() -> MemoryStore:
    """The process-level :class:`MemoryStore` that embedders use with ``store="memory"``.

    Returns
    -------
    store : MemoryStore
        The one in-process store shared by every :class:`~skicm.CLIPEmbedder` of the process.

    Examples
    --------
    >>> from skicm.store import default_memory_store
    >>> default_memory_store() is default_memory_store()
    True
    """
    return _DEFAULT_MEMORY_STORE


def open_store(spec) -> EmbeddingStore | None:
    """Resolve an embedder's ``store`` parameter to a store (one per file and process).

    Parameters
    ----------
    spec : None, "memory", str or os.PathLike
        ``None`` for no store, ``"memory"`` for :func:`default_memory_store`, anything else is the
        path of a :class:`SQLiteStore` (write ``./memory`` for a file called ``memory``).

    Returns
    -------
    store : EmbeddingStore or None

    Examples
    --------
    >>> from skicm.store import open_store, default_memory_store
    >>> open_store("memory") is default_memory_store()
    True
    >>> open_store(None) is None
    True
    """
    if spec is None:
        return None
    if isinstance(spec, str) and spec == "memory":
        return _DEFAULT_MEMORY_STORE
    path = os.path.abspath(os.fspath(spec))
    with _SQLITE_LOCK:
        store = _SQLITE_STORES.get(path)
        if store is None:
            store = _SQLITE_STORES[path] = SQLiteStore(path)
    return store


def close_stores() -> None:
    """Close the connections of every :class:`SQLiteStore` that :func:`open_store` has opened.

    The stores are forgotten: the next :func:`open_store` (or ``transform``) opens the file again.
    Call it before deleting or moving a store file, or at the end of a test.

    Examples
    --------
    >>> from skicm.store import close_stores
    >>> close_stores()
    """
    with _SQLITE_LOCK:
        stores = list(_SQLITE_STORES.values())
        _SQLITE_STORES.clear()
    for store in stores:
        store.close()
