"""Tests of skicm.store: the in-memory LRU store and the SQLite store behind one interface."""

from __future__ import annotations

import contextlib
import glob
import multiprocessing
import os
import pickle
import sqlite3

import numpy as np
import pytest

from skicm.store import (
    MemoryStore,
    SQLiteStore,
    close_stores,
    default_memory_store,
    open_store,
)


def _vectors(n, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return {f"key-{i}": rng.standard_normal(dim).astype(np.float32) for i in range(n)}


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        return MemoryStore()
    return SQLiteStore(tmp_path / "store.sqlite")


def test_round_trip_and_namespaces(store):
    items = _vectors(5)
    store.put_many("model-a", items)
    store.put_many("model-b", {"key-0": np.zeros(8, dtype=np.float32)})
    found = store.get_many("model-a", [*items, "absent"])
    assert sorted(found) == sorted(items)
    for key, vector in items.items():
        assert found[key].dtype == np.float32
        np.testing.assert_array_equal(found[key], vector)
    np.testing.assert_array_equal(store.get_many("model-b", ["key-0"])["key-0"], np.zeros(8))
    assert store.get_many("model-c", list(items)) == {}
    assert store.count() == 6
    assert store.count("model-a") == 5


def test_put_replaces_and_empty_put_is_a_no_op(store):
    store.put_many("ns", {"k": np.ones(3, dtype=np.float32)})
    store.put_many("ns", {"k": np.full(3, 2.0, dtype=np.float32)})
    store.put_many("ns", {})
    assert store.count() == 1
    np.testing.assert_array_equal(store.get_many("ns", ["k"])["k"], [2.0, 2.0, 2.0])


def test_many_keys_in_one_lookup(store):
    # More keys than SQLite accepts bound parameters in one statement.
    items = _vectors(2500, dim=2)
    store.put_many("ns", items)
    assert len(store.get_many("ns", list(items))) == 2500


def test_memory_store_copies_and_freezes_vectors():
    store = MemoryStore()
    vector = np.ones(4, dtype=np.float32)
    store.put_many("ns", {"k": vector})
    vector[:] = 5
    stored = store.get_many("ns", ["k"])["k"]
    np.testing.assert_array_equal(stored, np.ones(4))
    with pytest.raises(ValueError, match="read-only"):
        stored[0] = 3


def test_memory_store_evicts_least_recently_used():
    store = MemoryStore(max_bytes=3 * 4 * 4)  # three 4-d float32 vectors
    for i in range(3):
        store.put_many("ns", {f"k{i}": np.full(4, i, dtype=np.float32)})
    store.get_many("ns", ["k0"])  # k0 becomes the most recently used
    store.put_many("ns", {"k3": np.zeros(4, dtype=np.float32)})
    assert sorted(store.get_many("ns", ["k0", "k1", "k2", "k3"])) == ["k0", "k2", "k3"]
    store.clear()
    assert store.count() == 0


def test_sqlite_store_persists_across_instances_and_uses_wal(tmp_path):
    path = tmp_path / "nested" / "folder" / "store.sqlite"
    items = _vectors(4)
    SQLiteStore(path).put_many("ns", items)
    reopened = SQLiteStore(path)
    np.testing.assert_array_equal(reopened.get_many("ns", ["key-3"])["key-3"], items["key-3"])
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_readers_are_not_blocked_by_an_open_write(tmp_path):
    path = tmp_path / "store.sqlite"
    store = SQLiteStore(path)
    store.put_many("ns", _vectors(3))
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO embeddings VALUES ('ns', 'pending', x'00000000')")
    try:
        # A reader in another connection sees the committed rows, not the pending one.
        assert SQLiteStore(path).count("ns") == 3
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_sqlite_failed_batch_leaves_nothing(tmp_path):
    store = SQLiteStore(tmp_path / "store.sqlite")
    good = _vectors(3)
    # A None key violates NOT NULL after the first rows of the batch were inserted.
    batch = {**good, None: np.zeros(8, dtype=np.float32)}
    with pytest.raises(OSError, match=r"store\.sqlite.*NOT NULL") as raised:
        store.put_many("ns", batch)
    assert isinstance(raised.value.__cause__, sqlite3.IntegrityError)
    assert store.count() == 0
    store.put_many("ns", good)  # the connection is usable after the rollback
    assert store.count() == 3


def test_sqlite_store_pickles_without_its_connection(tmp_path):
    store = SQLiteStore(tmp_path / "store.sqlite")
    store.put_many("ns", _vectors(2))
    copy = pickle.loads(pickle.dumps(store))
    assert copy.path == store.path
    assert copy.count() == 2
    assert repr(copy) == f"SQLiteStore({str(store.path)!r})"


def _child_writes(store):
    store.put_many("child", {"from-child": np.ones(2, dtype=np.float32)})


def test_sqlite_store_reconnects_in_a_forked_child(tmp_path):
    store = SQLiteStore(tmp_path / "store.sqlite")
    store.put_many("ns", _vectors(1))  # the parent opened its connection
    process = multiprocessing.get_context("fork").Process(target=_child_writes, args=(store,))
    process.start()
    process.join(30)
    assert process.exitcode == 0
    assert "from-child" in store.get_many("child", ["from-child"])


def test_sqlite_store_rejects_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "not-a-database.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OSError, match=r"not-a-database\.sqlite"):
        SQLiteStore(path).count()


def test_open_store_resolves_specs(tmp_path):
    assert open_store(None) is None
    assert open_store("memory") is default_memory_store()
    first = open_store(tmp_path / "a.sqlite")
    assert isinstance(first, SQLiteStore)
    assert open_store(str(tmp_path / "a.sqlite")) is first  # one store per file and process


def _rows_on_disk(path):
    connection = sqlite3.connect(path)
    try:
        return connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
    finally:
        connection.close()


def _open_store_files(path):
    names = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
    return [name for name in names if name.startswith(str(path))]


def test_sqlite_store_reopens_a_deleted_database_file(tmp_path):
    path = tmp_path / "store.sqlite"
    store = SQLiteStore(path)
    store.put_many("ns", _vectors(1))
    for name in glob.glob(f"{path}*"):  # the user clears the cache: rm store.sqlite*
        os.remove(name)
    store.put_many("ns", {"new": np.ones(8, dtype=np.float32)})
    assert path.exists()
    assert _rows_on_disk(path) == 1  # written to the new file, visible to other processes
    assert store.count() == 1
    if os.path.isdir("/proc/self/fd"):
        assert not [name for name in _open_store_files(path) if name.endswith("(deleted)")]
    store.close()


def test_sqlite_store_follows_a_replaced_database_file(tmp_path):
    path, other = tmp_path / "store.sqlite", tmp_path / "other.sqlite"
    store = SQLiteStore(path)
    store.put_many("ns", _vectors(2))
    replacement = SQLiteStore(other)
    replacement.put_many("ns", {"only": np.ones(8, dtype=np.float32)})
    replacement.close()
    for name in glob.glob(f"{path}*"):  # the old database goes, with its -wal and -shm files
        os.remove(name)
    os.replace(other, path)
    assert store.count() == 1
    assert sorted(store.get_many("ns", ["only", "key-0"])) == ["only"]
    store.close()


def test_sqlite_disk_full_is_reported_with_the_store_path(tmp_path):
    path = tmp_path / "full.sqlite"
    store = SQLiteStore(path)
    store.put_many("ns", _vectors(1))
    store._connect().execute("PRAGMA max_page_count = 8")  # simulates a full disk
    with pytest.raises(OSError, match=r"full\.sqlite.*full") as raised:
        store.put_many("wide", _vectors(200, dim=512, seed=1))
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    assert not store._connect().in_transaction
    store._connect().execute("PRAGMA max_page_count = 1000000")
    store.put_many("ns", {"after": np.ones(8, dtype=np.float32)})
    assert store.count() == 2
    store.close()


def test_sqlite_lock_timeout_is_reported_with_the_store_path(tmp_path):
    path = tmp_path / "locked.sqlite"
    SQLiteStore(path).count()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OSError, match=r"locked\.sqlite.*locked"):
            SQLiteStore(path, timeout=0.2).put_many("ns", _vectors(1))
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_close_stores_closes_and_forgets_the_cached_stores(tmp_path):
    path = tmp_path / "cached.sqlite"
    store = open_store(path)
    store.put_many("ns", _vectors(1))
    close_stores()
    assert store._connection is None
    if os.path.isdir("/proc/self/fd"):
        assert _open_store_files(path) == []
    assert open_store(path) is not store
    assert open_store(path).count() == 1
    close_stores()


# ------------------------------------------------- what a store refuses: wrong vectors, stated
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_vectors_are_refused_naming_store_namespace_and_key(store, bad):
    good = _vectors(3)
    poisoned = np.ones(8, dtype=np.float32)
    poisoned[5] = bad
    with pytest.raises(ValueError, match="NaN or infinite") as raised:
        store.put_many("model-a", {**good, "poisoned": poisoned})
    message = str(raised.value)
    assert "'model-a'" in message and "'poisoned'" in message and "key-0" not in message
    assert ("store.sqlite" in message) == isinstance(store, SQLiteStore)
    assert store.count() == 0  # nothing of the batch
    store.put_many("model-a", good)
    assert store.count() == 3


def test_vectors_of_another_length_than_the_namespace_are_refused(store):
    store.put_many("model-a", _vectors(2, dim=8))
    with pytest.raises(ValueError, match=r"'model-a'.*length 4: 'key-0'.*already holds .*8"):
        store.put_many("model-a", _vectors(1, dim=4))
    with pytest.raises(ValueError, match=r"different lengths.*length 4: 'a'.*length 8: 'b'"):
        store.put_many("model-b", {"a": np.ones(4), "b": np.ones(8)})
    with pytest.raises(ValueError, match=r"one-dimensional.*'m' \(2, 4\)"):
        store.put_many("model-b", {"m": np.ones((2, 4))})
    assert store.count() == 2 and store.count("model-b") == 0
    store.put_many("model-b", _vectors(1, dim=4))  # another namespace, another model
    assert store.count("model-b") == 1


def test_sqlite_store_reports_a_damaged_vector_naming_file_and_namespace(tmp_path):
    path = tmp_path / "store.sqlite"
    store = SQLiteStore(path)
    store.put_many("model-a", _vectors(3))
    with sqlite3.connect(path) as connection:  # another program writes a 7-d vector
        connection.execute(
            "UPDATE embeddings SET vector = ? WHERE key = 'key-1'",
            (np.ones(7, dtype="<f4").tobytes(),),
        )
    assert sorted(store.get_many("model-a", ["key-0", "key-2"])) == ["key-0", "key-2"]
    with pytest.raises(ValueError) as raised:
        store.get_many("model-a", ["key-0", "key-1"])
    message = str(raised.value)
    assert str(path) in message and "'model-a'" in message
    assert "length 7: 'key-1'" in message and "length 8" in message
    with sqlite3.connect(path) as connection:  # a value that is not a float32 vector at all
        connection.execute("UPDATE embeddings SET vector = x'0102' WHERE key = 'key-2'")
    with pytest.raises(ValueError, match=r"store\.sqlite.*'model-a'.*not float32.*'key-2'"):
        store.get_many("model-a", ["key-2"])
    store.close()


# ------------------------------------------------------------------------ read-only stores
def _in_child_without_write_access(function, *args):
    """Run ``function(*args)`` in a forked child that cannot write what its permissions forbid.

    Root ignores permission bits, so a child of root drops to the unprivileged user ``nobody``.
    Returns what the function returned (or raised: the exception's type name and message). The
    child must not run torch: its thread pools do not survive a fork.
    """
    import signal

    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(reader)
        try:
            signal.alarm(60)  # a child that hangs is killed, and the test fails
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                result = ("ok", function(*args))
            except Exception as error:
                result = (type(error).__name__, str(error))
            os.write(writer, pickle.dumps(result))
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        data = pipe.read()
    _, exit_status = os.waitpid(pid, 0)
    return pickle.loads(data) if data else ("child died", exit_status)


def _read_then_write(path, keys):
    store = SQLiteStore(path)
    found = store.get_many("model-a", keys)
    answers = {"found": sorted(found), "count": store.count(), "count_a": store.count("model-a")}
    store.put_many("model-a", {})  # nothing to write: fine
    try:
        store.put_many("model-a", {"new": np.ones(8, dtype=np.float32)})
    except PermissionError as error:
        answers["write_error"] = str(error)
    return answers


@pytest.fixture
def shared_folder():
    """A folder that the unprivileged user can reach (pytest's tmp_path is private to root)."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="skicm-store-")
    os.chmod(folder, 0o755)
    yield folder
    os.chmod(folder, 0o755)
    for name in os.listdir(folder):
        target = os.path.join(folder, name)
        if os.path.isdir(target):
            os.chmod(target, 0o755)
    shutil.rmtree(folder)


@pytest.mark.parametrize("locked", ["file", "folder"])
def test_read_only_store_answers_lookups_and_refuses_only_writes(shared_folder, locked):
    folder = os.path.join(shared_folder, "cache")
    path = os.path.join(folder, "store.sqlite")
    items = _vectors(3)
    writable = SQLiteStore(path)
    writable.put_many("model-a", items)
    writable.close()
    os.chmod(path, 0o444)
    os.chmod(folder, 0o755 if locked == "file" else 0o555)
    if locked == "folder":
        os.chmod(path, 0o666)  # the file itself is writable; its folder is not
    status, answers = _in_child_without_write_access(_read_then_write, path, [*items, "absent"])
    assert status == "ok", answers
    assert answers["found"] == sorted(items)
    assert answers["count"] == 3 and answers["count_a"] == 3
    message = answers["write_error"]
    assert path in message and "read-only" in message and "'model-a'" in message
    assert ("not writable" in message) and (locked in message)
    assert _rows_on_disk(path) == 3


def test_read_only_folder_without_a_store_file_reads_as_empty(shared_folder):
    folder = os.path.join(shared_folder, "empty")
    os.mkdir(folder, 0o555)
    os.chmod(folder, 0o555)
    path = os.path.join(folder, "store.sqlite")
    status, answers = _in_child_without_write_access(_read_then_write, path, ["a"])
    assert status == "ok", answers
    assert answers["found"] == [] and answers["count"] == 0
    assert path in answers["write_error"]
    assert not os.path.exists(path)


def test_embedder_reading_a_damaged_store_names_the_store_and_namespace(tmp_path):
    from skicm import CLIPEmbedder
    from skicm.model_configs import register_tiny_clip

    path = tmp_path / "embeddings.sqlite"
    images = [np.full((16, 16, 3), value, dtype=np.uint8) for value in (0, 100, 200)]
    embedder = CLIPEmbedder(
        register_tiny_clip(), pretrained=None, device="cpu", batch_size=4, num_workers=0,
        store=path, progress=False,
    )  # fmt: skip
    embedder.transform(images)
    namespace = embedder.store_namespace()
    with sqlite3.connect(path) as connection:  # one vector loses its last value
        rows = connection.execute(
            "SELECT key FROM embeddings WHERE namespace = ? ORDER BY key", (namespace,)
        )
        keys = [key for (key,) in rows]
        assert len(keys) == 3
        connection.execute(
            "UPDATE embeddings SET vector = substr(vector, 1, length(vector) - 4) WHERE key = ?",
            (keys[1],),
        )
    close_stores()
    with pytest.raises(ValueError) as raised:
        embedder.transform(images)
    message = str(raised.value)
    assert str(path) in message and repr(namespace) in message and repr(keys[1]) in message
    close_stores()


def _transform(embedder, images):
    return embedder.transform(images)


def test_embedder_answers_from_a_read_only_store_holding_every_embedding(shared_folder):
    from skicm import CLIPEmbedder
    from skicm.model_configs import register_tiny_clip

    folder = os.path.join(shared_folder, "cache")
    path = os.path.join(folder, "embeddings.sqlite")
    images = [np.full((16, 16, 3), value, dtype=np.uint8) for value in (0, 100, 200)]
    embedder = CLIPEmbedder(
        register_tiny_clip(), pretrained=None, device="cpu", batch_size=4, num_workers=0,
        store=path, progress=False,
    )  # fmt: skip
    Z = embedder.transform(images)
    close_stores()
    os.chmod(path, 0o444)
    os.chmod(folder, 0o555)
    # Every embedding is stored, so the child needs neither the model nor a write.
    status, answer = _in_child_without_write_access(_transform, embedder, images[::-1])
    assert status == "ok", answer
    np.testing.assert_array_equal(answer, Z[::-1])
    close_stores()
