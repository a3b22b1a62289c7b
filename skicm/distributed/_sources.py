"""What ``skicm embed`` can read: a DomainBed-layout folder, a folder of images, a listing file."""

from __future__ import annotations

import os
from pathlib import Path

from sklearn.utils import Bunch

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


def _read_listing(path: Path) -> Bunch:
    import pyarrow as pa

    if path.suffix.lower() == ".csv":
        from pyarrow import csv

        try:
            table = csv.read_csv(path)
        except pa.ArrowInvalid as error:
            raise ValueError(f"Cannot read the listing {str(path)!r} as CSV: {error}") from None
    else:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
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
    base = path.parent
    # Relative paths are relative to the listing, so that a data set folder can be moved whole.
    paths = [os.path.normpath(base / p) for p in column.to_pylist()]
    extra = {}
    for name in ("label", "domain"):
        if name in table.column_names:
            values = table.column(name)
            if values.null_count:
                raise ValueError(
                    f"The {name!r} column of {str(path)!r} has {values.null_count} empty cells."
                )
            extra[name] = values.to_pylist()
    return Bunch(paths=paths, labels=extra.get("label"), domains=extra.get("domain"))


def list_images(source) -> Bunch:
    """List the images of ``source`` with their labels and domains when the source knows them.

    Parameters
    ----------
    source : str or path-like
        A DomainBed-layout folder (``root/domain/class/image``: labels and domains from the
        folder names, read by :func:`skicm.datasets.load_image_folders`), any other folder
        (every image file below it, in sorted order, without labels), or a ``.csv`` /
        ``.parquet`` file with a ``path`` column and optional ``label`` and ``domain`` columns
        (relative paths are relative to the file's folder).

    Returns
    -------
    listing : :class:`~sklearn.utils.Bunch`
        ``paths`` (list of absolute, normalised paths, each once), ``labels`` and ``domains``
        (lists aligned with ``paths``, or None when unknown) and ``kind`` (``"domainbed"``,
        ``"folder"`` or ``"listing"``).

    Raises
    ------
    FileNotFoundError
        If ``source`` does not exist.
    ValueError
        If it holds no image, is a file of another kind, a listing lacks its ``path`` column,
        or a path is listed twice.

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
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"The source {str(source)!r} does not exist.")
    suffixes = _image_suffixes()
    if path.is_dir():
        if _is_domainbed_layout(path, suffixes):
            from skicm.datasets import load_image_folders

            data = load_image_folders(path)
            listing = Bunch(
                paths=list(data.paths),
                labels=[data.target_names[i] for i in data.target],
                domains=[str(d) for d in data.domains],
                kind="domainbed",
            )
        else:
            listing = Bunch(
                paths=_walk_images(path, suffixes), labels=None, domains=None, kind="folder"
            )
            if not listing.paths:
                raise ValueError(
                    f"The folder {str(source)!r} holds no image files (extensions "
                    f"{sorted(suffixes)})."
                )
    elif path.suffix.lower() in _LISTING_SUFFIXES:
        listing = _read_listing(path)
        listing.kind = "listing"
        if not listing.paths:
            raise ValueError(f"The listing {str(source)!r} has no rows.")
    else:
        raise ValueError(
            f"The source {str(source)!r} is neither a folder nor a .csv or .parquet listing."
        )
    listing.paths = [os.path.abspath(p) for p in listing.paths]
    seen, repeated = set(), []
    for p in listing.paths:
        if p in seen:
            repeated.append(p)
        seen.add(p)
    if repeated:
        raise ValueError(
            f"{len(repeated)} path(s) are listed more than once in {str(source)!r}, e.g. "
            f"{repeated[:3]}; every image must appear once."
        )
    return listing
