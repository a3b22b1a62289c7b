"""Collections that are not files: WebDataset tar shards and Hugging Face datasets.

Every item of a collection gets a row identifier that plays the part a file's path plays for a
folder (it fills the ``path`` column of the listing and of the written shards), so that
resumption and "every item exactly once" hold as for files:

- a WebDataset sample: ``<absolute tar path>#<sample key>``, the sample key as webdataset
  groups members (``base_plus_ext``: the member name up to the first dot of its base name);
- a Hugging Face dataset row: ``hf:<dataset fingerprint>/<split>/<row index>``.

A :class:`CollectionReader` then reads and decodes the items of any slice of the listing, in
this process or in a Ray task: tar members by their offset in the (uncompressed) tar file, rows
by their index in the memory-mapped dataset; :func:`collection_items` makes one
:class:`skicm.image_loading.CollectionImage` of each row, which the embedders read one at a
time through the same reader. This module is in the core (imported by
:func:`skicm.datasets.load_image_collection`); ``skicm.distributed._collections`` re-exports
it for ``skicm embed``.
"""

from __future__ import annotations

import glob
import os
import tarfile
import threading
from pathlib import Path

import numpy as np

__all__ = ["CollectionReader", "collection_items", "collection_table", "is_collection"]

# WebDataset's image extensions, tried in this order in each sample (webdataset's "a;b" rule:
# the first one the sample has).
DEFAULT_IMAGE_KEYS = "jpg;jpeg;png;webp"
DEFAULT_IMAGE_COLUMN = "image"
# The label key that `skicm evaluate` reads when --label-key is not given: the conventions of
# img2dataset / CLIP_benchmark (a `cls` member) and of Hugging Face datasets (a `label` column).
DEFAULT_LABEL_KEYS = {"webdataset": "cls", "huggingface": "label"}
_HF_PREFIX = "hf:"
# Hidden columns of a collection's listing (what a reader needs to find an item).
TAR_COLUMNS = ("_file", "_member", "_offset", "_size")
HF_COLUMNS = ("_row",)
_COMPRESSED_TAR = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")


def _has_pattern(source: str) -> bool:
    return any(char in source for char in "*?[{")


def is_collection(source) -> str | None:
    """``"webdataset"``, ``"huggingface"`` or None (a folder or a listing file)."""
    text = os.fspath(source)
    if text.startswith(_HF_PREFIX):
        return "huggingface"
    path = Path(text)
    if path.is_dir():
        if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            return "huggingface"
        return None
    lower = text.lower()
    if lower.endswith(".tar") or lower.endswith(_COMPRESSED_TAR):
        return "webdataset"
    if _has_pattern(text) and not path.exists():
        return "webdataset"
    return None


def check_unique(paths, source) -> None:
    """Refuse a listing where an image (path or row identifier) appears more than once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n_distinct = pc.count_distinct(paths).as_py()
    pa.default_memory_pool().release_unused()  # the hash table's memory, back to the system
    if n_distinct == len(paths):
        return
    counts = pc.value_counts(paths)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    raise ValueError(
        f"{len(repeated)} path(s) are listed more than once in {str(source)!r}, e.g. "
        f"{repeated.slice(0, 3).to_pylist()}; every image must appear once."
    )


# ---------------------------------------------------------------------------- WebDataset
def expand_shards(pattern: str) -> list[str]:
    """The tar files of ``pattern``: a file, a glob, or a brace pattern (``s-{000..009}.tar``).

    Braces are expanded as webdataset does (``braceexpand``); every expanded name that holds a
    glob character is globbed. Every file named by the pattern must exist.
    """
    from braceexpand import braceexpand

    files, missing = [], []
    for name in braceexpand(pattern):
        if any(char in name for char in "*?["):
            found = sorted(glob.glob(name))
            if not found:
                missing.append(name)
            files.extend(found)
        elif os.path.isfile(name):
            files.append(name)
        else:
            missing.append(name)
    if missing:
        raise FileNotFoundError(
            f"The WebDataset source {pattern!r} names {len(missing)} tar file(s) or pattern(s) "
            f"that match nothing: {missing[:5]}" + (" ..." if len(missing) > 5 else "")
        )
    files = [os.path.abspath(name) for name in files]
    repeated = sorted({name for name in files if files.count(name) > 1})
    if repeated:
        raise ValueError(f"The WebDataset source {pattern!r} names {repeated[:3]} more than once.")
    for name in files:
        if name.lower().endswith(_COMPRESSED_TAR):
            raise ValueError(
                f"The WebDataset shard {name!r} is compressed; skicm embed reads members by their "
                "offset in uncompressed .tar shards (as img2dataset writes them). Decompress it."
            )
    return files


def _split_keys(option: str) -> list[str]:
    return [part.strip().lower() for part in option.split(";") if part.strip()]


def _tar_samples(tar_path: str):
    """Samples of one tar as webdataset groups them: ``(key, {extension: TarInfo})``."""
    from webdataset.tariterators import base_plus_ext

    try:
        archive = tarfile.open(tar_path, mode="r:")
    except (tarfile.TarError, OSError) as error:
        raise ValueError(
            f"Cannot read the WebDataset shard {tar_path!r} as a tar: {error}"
        ) from None
    with archive:
        key, members = None, {}
        try:
            for info in archive:
                if not info.isfile():
                    continue
                prefix, suffix = base_plus_ext(info.name)
                if prefix is None or os.path.basename(info.name).startswith("."):
                    continue
                suffix = suffix.lower()
                # webdataset starts a sample where the prefix changes or a suffix repeats.
                if key is not None and (prefix != key or suffix in members):
                    yield key, members
                    members = {}
                key = prefix
                members[suffix] = info
        except tarfile.TarError as error:
            raise ValueError(f"The WebDataset shard {tar_path!r} is damaged: {error}") from None
        if key is not None:
            yield key, members


def _read_member(file, info) -> bytes:
    file.seek(info.offset_data)
    return file.read(info.size)


def _text(data: bytes, tar_path: str, member: str) -> str:
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(
            f"The member {member!r} of the WebDataset shard {tar_path!r} is not UTF-8 text; a "
            "label or domain member holds the class or domain as text (e.g. '3' in a .cls)."
        ) from None


def webdataset_table(pattern, image_key=None, label_key=None, domain_key=None):
    """The samples of WebDataset shards as a listing table (``path`` = row identifier).

    Returns the table and its :class:`CollectionReader`, which holds the identity of every tar
    (as a file's key: real path, device, inode, size, modification and change times) taken
    when it was listed: the items' store keys are made of it, and a tar changed since is
    refused when an item must be read.
    """
    import pyarrow as pa

    from skicm.image_loading import _file_key

    image_keys = _split_keys(image_key or DEFAULT_IMAGE_KEYS)
    if not image_keys:
        raise ValueError(f"image_key {image_key!r} names no extension.")
    files = expand_shards(os.fspath(pattern))
    columns = {name: [] for name in ("path", *TAR_COLUMNS)}
    extra = {
        name: key.lower() for name, key in (("label", label_key), ("domain", domain_key)) if key
    }
    for name in extra:
        columns[name] = []
    identities = {}
    for tar_path in files:
        with open(tar_path, "rb") as file:
            identities[tar_path] = _file_key(tar_path)
            for key, members in _tar_samples(tar_path):
                found = next((ext for ext in image_keys if ext in members), None)
                if found is None:
                    raise ValueError(
                        f"The sample {key!r} of the WebDataset shard {tar_path!r} has no image "
                        f"member with extension {';'.join(image_keys)} (--image-key); its members: "
                        f"{sorted(info.name for info in members.values())}."
                    )
                info = members[found]
                columns["path"].append(f"{tar_path}#{key}")
                columns["_file"].append(tar_path)
                columns["_member"].append(info.name)
                columns["_offset"].append(info.offset_data)
                columns["_size"].append(info.size)
                for name, ext in extra.items():
                    if ext not in members:
                        option = f"--{name}-key"
                        raise ValueError(
                            f"The sample {key!r} of the WebDataset shard {tar_path!r} has no "
                            f"{ext!r} member ({option} {ext}); its members: "
                            f"{sorted(i.name for i in members.values())}."
                        )
                    member = members[ext]
                    columns[name].append(_text(_read_member(file, member), tar_path, member.name))
    if not columns["path"]:
        raise ValueError(f"The WebDataset shards {os.fspath(pattern)!r} hold no sample.")
    types = {"_offset": pa.int64(), "_size": pa.int64()}
    table = pa.table(
        {
            name: pa.array(values, type=types.get(name, pa.string()))
            for name, values in columns.items()
        }
    )
    return table, CollectionReader("webdataset", identities=identities)


# ---------------------------------------------------------------------------- Hugging Face
def _open_hf(source: str, split):
    """The dataset of ``source`` (``save_to_disk`` folder or ``hf:name[@config]``), its split."""
    import datasets

    if source.startswith(_HF_PREFIX):
        name = source[len(_HF_PREFIX) :]
        repo, _, config = name.partition("@")
        try:
            loaded = datasets.load_dataset(repo, config or None, split=split)
        except Exception as error:  # datasets raises many kinds: all mean "cannot load"
            raise ValueError(
                f"Cannot load the Hugging Face dataset {repo!r} (split {split!r}) from the local "
                f"cache: {type(error).__name__}: {error}"
            ) from None
    else:
        loaded = datasets.load_from_disk(source)
    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            raise ValueError(
                f"The Hugging Face dataset {source!r} has the splits {sorted(loaded)}; choose one "
                "with --split (split=)."
            )
        if split not in loaded:
            raise ValueError(
                f"The Hugging Face dataset {source!r} has no split {split!r}; its splits: "
                f"{sorted(loaded)}."
            )
        loaded = loaded[split]
    elif split is not None and loaded.split is not None and str(loaded.split) != split:
        raise ValueError(
            f"The Hugging Face dataset {source!r} is the split {str(loaded.split)!r}, "
            f"not {split!r}."
        )
    return loaded, split if split is not None else str(loaded.split or "all")


def _check_column(dataset, column, option, source):
    if column not in dataset.column_names:
        raise ValueError(
            f"The Hugging Face dataset {source!r} has no column {column!r} ({option}); its "
            f"columns: {dataset.column_names}."
        )


def huggingface_table(source, image_key=None, label_key=None, domain_key=None, split=None):
    """The rows of a Hugging Face dataset as a listing table (``path`` = row identifier)."""
    import datasets
    import pyarrow as pa

    source = os.fspath(source)
    if not source.startswith(_HF_PREFIX):
        source = os.path.abspath(source)
    dataset, split_name = _open_hf(source, split)
    image_column = image_key or DEFAULT_IMAGE_COLUMN
    _check_column(dataset, image_column, "--image-key", source)
    feature = dataset.features[image_column]
    if not isinstance(feature, datasets.Image) and getattr(feature, "dtype", None) not in (
        "binary",
        "large_binary",
    ):
        raise ValueError(
            f"The column {image_column!r} of the Hugging Face dataset {source!r} holds "
            f"{feature}, not images (an Image() feature or bytes)."
        )
    columns = {}
    for name, column in (("label", label_key), ("domain", domain_key)):
        if column is None:
            continue
        _check_column(dataset, column, f"--{name}-key", source)
        values = dataset.select_columns([column]).with_format("arrow")[:].column(0)
        feature = dataset.features[column]
        if isinstance(feature, datasets.ClassLabel):
            names = feature.names
            values = pa.array([names[i] for i in values.to_pylist()], type=pa.string())
        else:
            if values.null_count:
                raise ValueError(
                    f"The column {column!r} of the Hugging Face dataset {source!r} has "
                    f"{values.null_count} empty cells."
                )
            values = values.cast(pa.string())
        columns[name] = values
    n_rows = dataset.num_rows
    if not n_rows:
        raise ValueError(f"The Hugging Face dataset {source!r} (split {split_name!r}) has no rows.")
    prefix = f"hf:{dataset._fingerprint}/{split_name}/"
    table = {
        "path": pa.array([f"{prefix}{index}" for index in range(n_rows)], type=pa.string()),
        "_row": pa.array(np.arange(n_rows, dtype=np.int64)),
        **columns,
    }
    reader = CollectionReader(
        "huggingface",
        source=source,
        split=split,
        image_key=image_column,
        fingerprint=dataset._fingerprint,
        row_prefix=prefix,
    )
    return pa.table(table), reader


_KIND_NAMES = {"webdataset": "WebDataset shards", "huggingface": "a Hugging Face dataset"}


def check_installed(kind) -> None:
    """A clear ImportError when an optional package that reads ``kind`` is missing."""
    import importlib.util

    needed = {"webdataset": ("webdataset", "pyarrow"), "huggingface": ("datasets", "pyarrow")}
    missing = [name for name in needed.get(kind, ()) if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"Reading {_KIND_NAMES[kind]} needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: pip install "
            "'skicm[collections]'."
        )


def collection_table(source, *, image_key=None, label_key=None, domain_key=None, split=None):
    """The listing table and reader of a collection source (see the module documentation).

    Returns
    -------
    table : pyarrow.Table
        ``path`` (row identifiers), ``label`` / ``domain`` when asked for, and the hidden columns
        the reader needs.
    kind : {"webdataset", "huggingface"}
    reader : CollectionReader
    """
    kind = is_collection(source)
    check_installed(kind)
    if kind == "webdataset":
        if split is not None:
            raise ValueError(
                "split (--split) chooses a split of a Hugging Face dataset; "
                f"{os.fspath(source)!r} is WebDataset shards."
            )
        table, reader = webdataset_table(source, image_key, label_key, domain_key)
    elif kind == "huggingface":
        table, reader = huggingface_table(source, image_key, label_key, domain_key, split)
    if kind is not None:
        # A sample key twice in one tar (members not next to each other) is two samples to
        # webdataset but one row identifier: refused, so that each item is embedded once.
        check_unique(table.column("path"), source)
        return table, kind, reader
    raise ValueError(
        f"{os.fspath(source)!r} is neither WebDataset shards nor a Hugging Face dataset."
    )


# ---------------------------------------------------------------------------- decoding
_OPEN_LOCK = threading.Lock()


def _read_span(handle, offset, size) -> bytes:
    """``size`` bytes at ``offset`` of an open tar: one member's content."""
    handle.seek(offset)
    data = handle.read(size)
    if len(data) != size:
        raise OSError("the shard is shorter than when it was listed")
    return data


def _changed_tar(tar_path) -> str:
    return (
        f"the WebDataset shard {tar_path!r} changed since it was listed (rewritten, replaced "
        "or touched); list it again"
    )


def _cell_bytes(cell) -> bytes:
    """The encoded image of a dataset cell (``Image(decode=False)``: bytes or a file path)."""
    if isinstance(cell, dict):
        data = cell.get("bytes")
        if data is None and cell.get("path"):
            with open(cell["path"], "rb") as file:
                data = file.read()
    else:
        data = cell
    if not data:
        raise ValueError("the cell holds no image")
    return bytes(data)


def collection_items(table, kind, reader):
    """One :class:`skicm.image_loading.CollectionImage` per row of a collection's listing.

    The key of a tar member is the tar's file identity (as for a file: real path, device,
    inode, size, modification and change times), taken when the tar was listed (the reader
    holds it), and the member's name; the key of a dataset row is its row identifier (the
    fingerprint names the content) and the image column. No image byte is read, no file
    opened: the items of any slice of a listing (a shard of ``skicm embed``, a Ray block) have
    the keys of the same rows listed whole. An item holds only where it is (the tar's
    path and identity are shared by its members): its identifier, key and description are
    made when asked for, so that a million items take about 250 MB (a dataset's rows less).
    """
    from skicm.image_loading import CollectionImage, _file_key

    if kind == "webdataset":
        files = table.column("_file").to_pylist()
        members = table.column("_member").to_pylist()
        offsets = table.column("_offset").to_pylist()
        sizes = table.column("_size").to_pylist()
        known = reader.identities or {}
        shared = {
            name: (name, known[name] if name in known else _file_key(name))
            for name in dict.fromkeys(files)
        }
        return [
            CollectionImage(reader, (*shared[tar], member, offset, size))
            for tar, member, offset, size in zip(files, members, offsets, sizes)
        ]
    return [CollectionImage(reader, row) for row in table.column("_row").to_pylist()]


class CollectionReader:
    """Reads and decodes the items of rows of a collection's listing; picklable (Ray tasks)."""

    def __init__(
        self,
        kind,
        source=None,
        split=None,
        image_key=None,
        fingerprint=None,
        row_prefix=None,
        identities=None,
    ):
        self.kind = kind
        self.source = source
        self.split = split
        self.image_key = image_key
        # The fingerprint the rows were listed under: a dataset saved again with other
        # content under the same folder is refused rather than read under the old row ids.
        self.fingerprint = fingerprint
        self.row_prefix = row_prefix  # "hf:FINGERPRINT/SPLIT/": a row's identifier is this + row
        # WebDataset: {tar path: its identity when listed}; the items' keys are made of it.
        self.identities = identities
        self._dataset = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_dataset"] = None  # reopened (memory-mapped) where it is used
        return state

    def _hf_dataset(self):
        with _OPEN_LOCK:  # decoding threads share one reader: the dataset is opened once
            if self._dataset is None:
                import datasets

                dataset, _ = _open_hf(self.source, self.split)
                if self.fingerprint is not None and dataset._fingerprint != self.fingerprint:
                    raise OSError(
                        f"the Hugging Face dataset {self.source!r} changed since it was listed "
                        f"(fingerprint {dataset._fingerprint}, listed {self.fingerprint}); "
                        "list it again"
                    )
                self._dataset = dataset.cast_column(self.image_key, datasets.Image(decode=False))
        return self._dataset

    def item_id(self, location) -> str:
        """The row identifier of an item: ``<tar path>#<sample key>`` or ``hf:.../ROW``."""
        if self.kind == "webdataset":
            tar_path, _, member = location[:3]
            # webdataset's sample key: the member's name up to the first dot of its base name
            dot = member.find(".", member.rfind("/") + 1)
            return f"{tar_path}#{member[:dot] if dot >= 0 else member}"
        return f"{self.row_prefix}{location}"

    def item_key(self, location) -> str:
        """The store key of an item, made of what was listed (no read)."""
        if self.kind == "webdataset":
            return f"{location[1]}#{location[2]}"
        return f"{self.row_prefix}{location}#{self.image_key}"

    def describe(self, location) -> str:
        """How errors name an item: its member and shard, or its row and dataset."""
        if self.kind == "webdataset":
            return f"member {location[2]!r} of the WebDataset shard {location[0]!r}"
        return (
            f"row {location} (column {self.image_key!r}) of the Hugging Face dataset "
            f"{self.source!r}"
        )

    def read_item(self, location):
        """The encoded bytes of one item (a :class:`skicm.image_loading.CollectionImage`).

        ``location``: ``(tar path, tar identity, member, offset, size)`` of a WebDataset
        member, or the row index of a Hugging Face dataset row. A tar whose identity (path,
        inode, size, modification and change times) is not the one it was listed with is
        refused: its offsets may point elsewhere, and the item's store key names the listed
        tar.

        Raises
        ------
        OSError
            If the shard or dataset cannot be read, has changed, or the cell holds no image.
        """
        if self.kind == "webdataset":
            tar_path, identity, _, offset, size = location
            from skicm.image_loading import _file_key

            with open(tar_path, "rb") as handle:
                if _file_key(tar_path) != identity:
                    raise OSError(_changed_tar(tar_path))
                return _read_span(handle, offset, size)
        cell = self._hf_dataset()[int(location)][self.image_key]
        try:
            return _cell_bytes(cell)
        except ValueError as error:
            raise OSError(str(error)) from None

    def encoded(self, table):
        """``{row id: (bytes, description)}`` of the rows of ``table``, and unreadable rows.

        A tar whose identity is not the one it was listed with (see :meth:`read_item`) is
        refused: every row of it is unreadable.
        """
        ids = table.column("path").to_pylist()
        found, bad = {}, {}
        if self.kind == "webdataset":
            from skicm.image_loading import _file_key

            files = table.column("_file").to_pylist()
            members = table.column("_member").to_pylist()
            offsets = table.column("_offset").to_pylist()
            sizes = table.column("_size").to_pylist()
            order = sorted(range(len(ids)), key=lambda i: (files[i], offsets[i]))
            listed = self.identities or {}
            handle, current, refused = None, None, None
            try:
                for i in order:
                    where = f"member {members[i]!r} of the WebDataset shard {files[i]!r}"
                    if files[i] != current:  # each tar opened (and checked) once
                        if handle is not None:
                            handle.close()
                        handle, current, refused = None, files[i], None
                        try:
                            handle = open(files[i], "rb")
                            if files[i] in listed and _file_key(files[i]) != listed[files[i]]:
                                raise OSError(_changed_tar(files[i]))
                        except OSError as error:
                            refused = f"{type(error).__name__}: {error}"
                    if refused is not None:
                        bad[ids[i]] = f"{where}: {refused}"
                        continue
                    try:
                        found[ids[i]] = (_read_span(handle, offsets[i], sizes[i]), where)
                    except OSError as error:
                        bad[ids[i]] = f"{where}: {type(error).__name__}: {error}"
            finally:
                if handle is not None:
                    handle.close()
            return found, bad
        dataset = self._hf_dataset()
        rows = table.column("_row").to_pylist()
        cells = dataset.select(rows).select_columns([self.image_key])
        for row_id, row, cell in zip(ids, rows, cells[self.image_key]):
            where = (
                f"row {row} (column {self.image_key!r}) of the Hugging Face dataset {self.source!r}"
            )
            try:
                found[row_id] = (_cell_bytes(cell), where)
            except (OSError, ValueError) as error:
                bad[row_id] = f"{where}: {type(error).__name__}: {error}"
        return found, bad

    def decoded(self, table, target=None, decoder="tensor", n_threads=1):
        """``{row id: uint8 (H, W, 3) array}`` of the rows of ``table``, and why others failed.

        Each item is decoded by :func:`skicm.image_loading.decode_image_data` as an embedder
        decodes the same bytes in a file: ``target`` (the embedder's ``decode_target()``: a
        large JPEG decoded at reduced scale, or None: in full) and ``decoder`` (``"tensor"`` or
        ``"pil"``) are the embedder's.
        """
        from skicm.image_loading import decode_image_data

        encoded, bad = self.encoded(table)

        def decode(item):
            row_id, (data, where) = item
            try:
                return row_id, decode_image_data(data, where, target, decoder), None
            except Exception as error:  # every bad item is reported, with its member / row
                return row_id, None, f"{where}: {type(error).__name__}: {error}"

        items = list(encoded.items())
        if n_threads > 1 and len(items) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(n_threads, thread_name_prefix="skicm-decode") as pool:
                results = list(pool.map(decode, items))
        else:
            results = [decode(item) for item in items]
        arrays = {}
        for row_id, array, error in results:
            if error is None:
                arrays[row_id] = array
            else:
                bad[row_id] = error
        return arrays, bad
