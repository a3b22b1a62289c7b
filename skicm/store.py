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

Both write a batch in one transaction, so a failure never leaves part of a batch behind.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
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

    Subclasses implement :meth:`get_many` and :meth:`put_many`; vectors are float32 and one-
    dimensional, and all vectors of a namespace have the same length.

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
        self._nbytes = 0
        self._lock = threading.Lock()

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
        # Copies are made before taking the lock, so the insertion itself cannot fail halfway.
        prepared = [
            ((namespace, key), np.array(vector, dtype=np.float32, copy=True).reshape(-1))
            for key, vector in items.items()
        ]
        for _, vector in prepared:
            vector.setflags(write=False)
        with self._lock:
            for full_key, vector in prepared:
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

    def _connect(self) -> sqlite3.Connection:
        # A connection must not cross a fork; reopen in a child process. A database file that
        # was deleted or replaced since the connection was made is reopened by its path, so
        # that writes do not go to an unlinked file that no other process can see.
        if self._connection is not None and (
            self._pid != os.getpid() or self._file_identity() != self._file_id
        ):
            self._drop_connection()
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
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

    def get_many(self, namespace, keys):
        keys = list(dict.fromkeys(keys))
        found = {}
        with self._lock:
            connection = self._connect()
            try:
                for start in range(0, len(keys), _SELECT_CHUNK):
                    chunk = keys[start : start + _SELECT_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = connection.execute(
                        "SELECT key, vector FROM embeddings WHERE namespace = ? "
                        f"AND key IN ({marks})",
                        [namespace, *chunk],
                    )
                    for key, blob in rows:
                        found[key] = np.frombuffer(blob, dtype="<f4").astype(np.float32)
            except sqlite3.Error as error:
                raise self._error("read embeddings", error) from error
        return found

    def put_many(self, namespace, items):
        rows = [
            (namespace, key, np.ascontiguousarray(vector, dtype="<f4").reshape(-1).tobytes())
            for key, vector in items.items()
        ]
        if not rows:
            return
        with self._lock:
            connection = self._connect()
            try:
                connection.execute("BEGIN IMMEDIATE")
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
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._file_id = None
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
