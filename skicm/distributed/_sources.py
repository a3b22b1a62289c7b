"""What ``skicm embed`` can read: a DomainBed-layout folder, a folder of images, a listing file."""

from __future__ import annotations

import os
from pathlib import Path

from sklearn.utils import Bunch

from skicm.distributed._collections import check_unique as _check_unique

__all__ = ["list_images"]

_LISTING_SUFFIXES = (".csv", ".parquet", ".pq")


def _image_suffixes():
    from skicm.datasets._image_folders import IMAGE_EXTENSIONS

    return set(IMAGE_EXTENSIONS)


def _is_domainbed_layout(root: Path, suffixes) -> bool:
    """True when no image lies directly in ``root`` or its subfolders, but some at depth 2.

    ``root/domain/class/image`` is DomainBed's layout; a folder with images at the top or one
    level down (``root/class/image``) is read as a plain folder of images instead.
    """
    for entry in root.iterdir():
        if entry.is_file() and entry.suffix.lower() in suffixes:
            return False
        if entry.is_dir() and not entry.name.startswith("."):
            for inner in entry.iterdir():
                if inner.is_file() and inner.suffix.lower() in suffixes:
                    return False
    return any(
        path.suffix.lower() in suffixes
        for domain in root.iterdir()
        if domain.is_dir() and not domain.name.startswith(".")
        for label in domain.iterdir()
        if label.is_dir() and not label.name.startswith(".")
        for path in label.iterdir()
    )


def _walk_images(root: Path, suffixes) -> list[str]:
    paths = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        paths.extend(
            os.path.join(folder, name)
            for name in sorted(files)
            if not name.startswith(".") and Path(name).suffix.lower() in suffixes
        )
    return paths


# Rows normalised per Python call: bounds the Python objects alive at once for long listings.
_LISTING_CHUNK = 1_000_000


def _absolute_paths(column, base: str):
    """``column`` (Arrow strings) as absolute normalised paths; relative ones from ``base``."""
    import pyarrow as pa

    chunks = []
    for chunk in column.chunks:
        for start in range(0, len(chunk), _LISTING_CHUNK):
            values = chunk.slice(start, _LISTING_CHUNK).to_pylist()
            chunks.append(
                pa.array(
                    [os.path.abspath(os.path.join(base, value)) for value in values],
                    type=pa.string(),
                )
            )
    return pa.chunked_array(chunks, type=pa.string())


def _read_listing(path: Path):
    import pyarrow as pa

    if path.suffix.lower() == ".csv":
        from pyarrow import csv

        try:
            options = csv.ConvertOptions(
                column_types={"path": pa.string()}, strings_can_be_null=True
            )
            table = csv.read_csv(path, convert_options=options)
        except pa.ArrowInvalid as error:
            raise ValueError(f"Cannot read the listing {str(path)!r} as CSV: {error}") from None
    else:
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
            # Labels and domains repeat: kept dictionary-encoded, as Parquet stores them.
            table = pq.read_table(
                path, read_dictionary=[name for name in ("label", "domain") if name in names]
            )
        except (pa.ArrowInvalid, OSError) as error:
            raise ValueError(f"Cannot read the listing {str(path)!r} as Parquet: {error}") from None
    if "path" not in table.column_names:
        raise ValueError(
            f"The listing {str(path)!r} has no 'path' column (columns: {table.column_names}); "
            "it needs a 'path' column of image files and may have 'label' and 'domain' columns."
        )
    column = table.column("path")
    if column.null_count:
        raise ValueError(f"The 'path' column of {str(path)!r} has {column.null_count} empty cells.")
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        raise ValueError(
            f"The 'path' column of {str(path)!r} holds {column.type}, not strings (file paths)."
        )
    # Relative paths are relative to the listing, so that a data set folder can be moved whole.
    columns = {"path": _absolute_paths(column, str(path.parent))}
    for name in ("label", "domain"):
        if name in table.column_names:
            values = table.column(name)
            if values.null_count:
                raise ValueError(
                    f"The {name!r} column of {str(path)!r} has {values.null_count} empty cells."
                )
            columns[name] = values
    return pa.table(columns)


def listing_table(source, class_aliases=None, collection=None):
    """The images of ``source`` as an Arrow table, and the kind of source.

    The table has a ``path`` column (absolute, normalised, each path once) and ``label`` and
    ``domain`` columns when the source knows them. A listing file stays in Arrow memory (about
    the bytes of its paths), so that the driver of a long run holds no Python object per image.

    Parameters
    ----------
    source : str or path-like
        See :func:`list_images`.
    class_aliases : mapping, str, path-like or None, default=None
        See :func:`list_images`.
    collection : dict or None, default=None
        ``image_key``, ``label_key``, ``domain_key`` and ``split`` of WebDataset shards or a
        Hugging Face dataset (see :mod:`skicm.distributed._collections`); for those sources the
        ``path`` column holds row identifiers and hidden columns locate each item.

    Returns
    -------
    table : pyarrow.Table
    kind : {"domainbed", "folder", "listing", "webdataset", "huggingface"}
    """
    from skicm.distributed._collections import collection_table, is_collection

    options = {key: value for key, value in (collection or {}).items() if value is not None}
    if is_collection(source):
        if class_aliases:
            raise ValueError(
                "class_aliases (--class-alias) names the class folders of a DomainBed-layout "
                f"folder; {str(source)!r} is a collection whose labels come from --label-key."
            )
        table, kind, _ = collection_table(source, **options)  # says which package is missing
        return table, kind
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        raise ImportError(
            f"Listing the images of {str(source)!r} needs pyarrow, which is not installed: "
            "pip install 'skicm[ray]' (skicm embed and skicm.distributed)."
        )
    import pyarrow as pa

    if options:
        raise ValueError(
            f"{', '.join(sorted(options))} (--image-key, --label-key, --domain-key, --split) "
            f"choose the items of WebDataset shards or a Hugging Face dataset; {str(source)!r} "
            "is neither (a folder or a .csv/.parquet listing of files)."
        )
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"The source {str(source)!r} does not exist.")
    suffixes = _image_suffixes()
    if path.is_dir():
        if _is_domainbed_layout(path, suffixes):
            from skicm.datasets import load_image_folders

            data = load_image_folders(path, class_aliases=class_aliases)
            kind = "domainbed"
            columns = {
                "path": [os.path.abspath(p) for p in data.paths],
                "label": [data.target_names[i] for i in data.target],
                "domain": [str(d) for d in data.domains],
            }
        else:
            kind = "folder"
            columns = {"path": [os.path.abspath(p) for p in _walk_images(path, suffixes)]}
            if not columns["path"]:
                raise ValueError(
                    f"The folder {str(source)!r} holds no image files (extensions "
                    f"{sorted(suffixes)})."
                )
        table = pa.table({name: pa.array(values) for name, values in columns.items()})
    elif path.suffix.lower() in _LISTING_SUFFIXES:
        kind = "listing"
        table = _read_listing(path)
        if not table.num_rows:
            raise ValueError(f"The listing {str(source)!r} has no rows.")
    else:
        raise ValueError(
            f"The source {str(source)!r} is neither a folder nor a .csv or .parquet listing."
        )
    if class_aliases and kind != "domainbed":
        raise ValueError(
            f"class_aliases (--class-alias) names the class folders of a DomainBed-layout folder "
            f"(root/domain/class/image); {str(source)!r} is a {kind} "
            f"({'its labels come from its label column' if kind == 'listing' else 'no labels'})."
        )
    _check_unique(table.column("path"), source)
    return table, kind


def list_images(
    source, *, class_aliases=None, image_key=None, label_key=None, domain_key=None, split=None
) -> Bunch:
    """List the images of ``source`` with their labels and domains when the source knows them.

    Parameters
    ----------
    source : str or path-like
        A DomainBed-layout folder (``root/domain/class/image``: labels and domains from the
        folder names, read by :func:`skicm.datasets.load_image_folders`), any other folder
        (every image file below it, in sorted order, without labels), or a ``.csv`` /
        ``.parquet`` file with a ``path`` column and optional ``label`` and ``domain`` columns
        (relative paths are relative to the file's folder); or WebDataset tar shards (a
        ``.tar`` file, a glob or a brace pattern) or a Hugging Face dataset (a ``save_to_disk``
        folder or ``hf:NAME[@CONFIG]`` from the local cache), whose items are identified by
        ``TAR#SAMPLE_KEY`` and ``hf:FINGERPRINT/SPLIT/ROW`` (see docs/collections.md).
    class_aliases : mapping of str to str, str, path-like or None, default=None
        Class name of each class folder named otherwise, for a DomainBed-layout folder whose
        domains name a class differently (see :func:`skicm.datasets.load_image_folders`).
    image_key, label_key, domain_key : str or None, default=None
        WebDataset: extension(s) of the image member (``"jpg;png"``: the first one a sample
        has; default ``"jpg;jpeg;png;webp"``), of the label and of the domain member (text).
        Hugging Face dataset: the image column (default ``"image"``), the label and the domain
        columns. No labels or domains when None.
    split : str or None, default=None
        The split of a Hugging Face dataset that has several.

    Returns
    -------
    listing : :class:`~sklearn.utils.Bunch`
        ``paths`` (list of absolute, normalised paths, each once), ``labels`` and ``domains``
        (lists aligned with ``paths``, or None when unknown) and ``kind`` (``"domainbed"``,
        ``"folder"``, ``"listing"``, ``"webdataset"`` or ``"huggingface"``).

    Raises
    ------
    FileNotFoundError
        If ``source`` does not exist, or a tar pattern matches nothing.
    ValueError
        If it holds no image, is a file of another kind, a listing lacks its ``path`` column,
        a path is listed twice, or ``class_aliases`` is given for a source that is not a
        DomainBed-layout folder.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skicm.distributed import list_images
    >>> root = Path(tempfile.mkdtemp())
    >>> for domain, label in [("photo", "dog"), ("sketch", "dog")]:
    ...     (root / domain / label).mkdir(parents=True)
    ...     Image.new("RGB", (4, 4)).save(root / domain / label / "0.png")
    >>> listing = list_images(root)
    >>> listing.kind, listing.labels, listing.domains
    ('domainbed', ['dog', 'dog'], ['photo', 'sketch'])
    """
    collection = {
        "image_key": image_key,
        "label_key": label_key,
        "domain_key": domain_key,
        "split": split,
    }
    table, kind = listing_table(source, class_aliases=class_aliases, collection=collection)
    names = table.column_names
    return Bunch(
        paths=table.column("path").to_pylist(),
        labels=table.column("label").to_pylist() if "label" in names else None,
        domains=table.column("domain").to_pylist() if "domain" in names else None,
        kind=kind,
    )
