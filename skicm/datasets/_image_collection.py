"""Images of WebDataset tar shards and Hugging Face datasets, labelled, as a data set Bunch."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

#: The file of class names that CLIP_benchmark's WebDataset mirrors ship beside their shards.
CLASSNAMES_FILE = "classnames.txt"
# Folder names that are a split rather than a data set: a default domain is named after the
# folder above them (CLIP_benchmark's mirrors keep their shards in wds_<name>/test/).
_SPLIT_FOLDERS = {"train", "test", "val", "valid", "validation", "eval"}
_INDEX = re.compile(r"[+-]?\d+")


def load_image_collection(
    source,
    *,
    image_key=None,
    label_key=None,
    domain_key=None,
    split=None,
    class_names=None,
    domain_name=None,
):
    """The images of WebDataset tar shards or of a Hugging Face dataset, with their labels.

    Nothing is decoded: ``images`` holds one :class:`skicm.image_loading.CollectionImage` per
    sample (a tar member, or a dataset row), which :class:`skicm.CLIPEmbedder` and
    :class:`skicm.ImageEmbedder` embed as they embed files, and which the evaluation protocols
    take as they take ``paths`` (see :func:`skicm.evaluation.evaluate_domain_generalization`).

    Parameters
    ----------
    source : str or path-like
        WebDataset shards: a ``.tar`` file, a glob or a brace pattern
        (``"shards-{000..009}.tar"``); or a Hugging Face dataset: a ``save_to_disk`` folder,
        or ``"hf:NAME[@CONFIG]"`` from the local cache.
    image_key : str, optional
        WebDataset: the image extension(s), the first one a sample has (default
        ``"jpg;jpeg;png;webp"``); Hugging Face: the image column (default ``"image"``).
    label_key : str, optional
        WebDataset: the extension of the label member (text, e.g. ``"cls"``); Hugging Face: the
        label column. None: no ``target``.
    domain_key : str, optional
        As ``label_key``, for the domain (environment) of each sample. None: every sample is in
        one domain, ``domain_name``.
    split : str, optional
        Hugging Face: the split, when the dataset has several.
    class_names : list of str, str or path-like, optional
        The class names that integer labels index (a WebDataset ``.cls`` member holds the
        class index): a list, or a file of one name per line (CLIP_benchmark's
        ``classnames.txt``). With text labels, the names they must be among, in this order.
        None: a Hugging Face ``ClassLabel`` column's own names; else a ``classnames.txt`` in
        the shards' (or dataset's) folder or the folder above it, if there is one (``DESCR``
        says which file); else text labels give sorted class names, as
        :func:`load_image_folders` does, and integer labels the names ``"0"``, ``"1"``, ...
    domain_name : str, optional
        The domain of every sample without ``domain_key``. Default: the name of the folder of
        the shards (of the one above it when that folder is named as a split: ``test``,
        ``train``, ``val``...), of the dataset's folder, or the ``NAME`` of ``hf:NAME``.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        In the order of the shards and of the samples in each (of the dataset's rows):

        images : ndarray of shape (n_samples,), dtype object
            The :class:`~skicm.image_loading.CollectionImage` of each sample; its ``id`` is
            the row identifier, ``<tar path>#<sample key>`` or ``hf:FINGERPRINT/SPLIT/ROW``.
        target : ndarray of shape (n_samples,)
            Class index into ``target_names`` (with ``label_key``).
        target_names : list of str
            The class names (with ``label_key``).
        environments, domains : ndarray of shape (n_samples,)
            The domain of each sample.
        environment_names, domain_names : list of str
            The sorted domains.
        source : str
            ``source``.
        kind : {"webdataset", "huggingface"}
            What ``source`` is.
        DESCR : str
            What was read and where the class names come from.

    Raises
    ------
    ValueError
        If a sample lacks an image, label or domain member (column), a label is not one of
        ``class_names`` or indexes outside them (the error names the sample or row), or the
        source is neither shards nor a dataset.
    FileNotFoundError
        If the shards or the ``class_names`` file do not exist.

    See Also
    --------
    load_image_folders : The same Bunch from a DomainBed-layout folder of image files.

    Examples
    --------
    >>> import io, tarfile, tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skicm.datasets import load_image_collection
    >>> folder = Path(tempfile.mkdtemp()) / "pets" / "test"
    >>> folder.mkdir(parents=True)
    >>> _ = (folder / "classnames.txt").write_text("cat\\ndog\\n")
    >>> with tarfile.open(folder / "0.tar", "w") as tar:
    ...     for key, index in [("s0", b"1"), ("s1", b"0")]:
    ...         png = io.BytesIO()
    ...         Image.new("RGB", (4, 4)).save(png, format="PNG")
    ...         for member, data in [(f"{key}.png", png.getvalue()), (f"{key}.cls", index)]:
    ...             info = tarfile.TarInfo(member)
    ...             info.size = len(data)
    ...             tar.addfile(info, io.BytesIO(data))
    >>> data = load_image_collection(folder / "0.tar", label_key="cls")
    >>> data.target.tolist(), data.target_names, data.domain_names
    ([1, 0], ['cat', 'dog'], ['pets'])
    """
    from skicm.datasets._collection_reader import (
        collection_items,
        collection_table,
    )

    table, kind, reader = collection_table(
        source, image_key=image_key, label_key=label_key, domain_key=domain_key, split=split
    )
    items = collection_items(table, kind, reader)
    ids = table.column("path")  # the row identifiers, for error messages
    text = os.fspath(source)
    images = np.empty(len(items), dtype=object)
    images[:] = items
    notes = [
        f"{len(items)} images of the {_KIND_NAMES[kind]} {text!r}"
        + (f" (split {split!r})" if split is not None else "")
        + "; images are read and decoded when embedded."
    ]
    data = Bunch(images=images, source=text, kind=kind)
    if label_key is not None:
        labels = table.column("label").to_pylist()
        names, origin = _class_names(class_names, kind, reader, table, label_key)
        target, target_names, how = _targets(labels, ids, names, origin, label_key)
        data.update(target=target, target_names=target_names)
        notes.append(how)
    if domain_key is not None:
        domains = np.asarray(table.column("domain").to_pylist(), dtype=object).astype(str)
        notes.append(f"Domains from {domain_key!r}.")
    else:
        name = domain_name if domain_name is not None else _default_domain(kind, text, table)
        domains = np.full(len(items), str(name), dtype=object).astype(str)
        notes.append(
            f"No domain key: every image is in one domain, {name!r}"
            + (" (domain_name)." if domain_name is not None else " (named after the source).")
        )
    domain_names = sorted(set(domains.tolist()))
    data.update(
        environments=domains,
        environment_names=domain_names,
        domains=domains,
        domain_names=domain_names,
        DESCR=" ".join(notes),
    )
    return data


_KIND_NAMES = {"webdataset": "WebDataset shards", "huggingface": "Hugging Face dataset"}


def _read_names(path, option="class_names"):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{option} {str(path)!r}: no such file.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{option} {str(path)!r} is not UTF-8 text.") from None
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    empty = [i + 1 for i, name in enumerate(names) if not name]
    if empty or not names:
        raise ValueError(
            f"{option} {str(path)!r} must hold one class name per line; "
            + (f"line(s) {empty[:5]} are empty." if empty else "it is empty.")
        )
    return names


def _class_names(class_names, kind, reader, table, label_key):
    """The class names given, found, or None; and where they come from (for DESCR)."""
    if class_names is not None:
        if isinstance(class_names, (str, os.PathLike)):
            return _read_names(class_names), f"the file {os.fspath(class_names)!r}"
        names = [str(name) for name in class_names]
        if not names:
            raise ValueError("class_names is empty.")
        if len(set(names)) != len(names):
            raise ValueError("class_names names a class more than once.")
        return names, "class_names"
    if kind == "huggingface":
        import datasets

        feature = reader._hf_dataset().features[label_key]
        if isinstance(feature, datasets.ClassLabel):
            return list(feature.names), f"the ClassLabel names of the column {label_key!r}"
        folder = None if reader.source.startswith("hf:") else Path(reader.source)
    else:
        folder = Path(table.column("_file")[0].as_py()).parent
    for place in (folder, folder.parent) if folder is not None else ():
        candidate = place / CLASSNAMES_FILE
        if candidate.is_file():
            return _read_names(candidate), f"the file {str(candidate)!r} (found beside the source)"
    return None, None


def _targets(labels, ids, names, origin, label_key):
    """``(target, target_names, description)`` of the label texts."""
    indices = all(_INDEX.fullmatch(label) for label in labels)
    if indices:
        values = np.array([int(label) for label in labels], dtype=np.int64)
        if names is None:
            names = [str(i) for i in range(max(int(values.max()), 0) + 1)]
            origin = "none given or found: the indices' own numbers"
        bad = np.flatnonzero((values < 0) | (values >= len(names)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"The label {labels[i]} ({label_key!r}) of {ids[i].as_py()} is not a class index: "
                f"{len(names)} class names come from {origin} (0 to {len(names) - 1}); "
                f"{bad.size} label(s) are out of range."
            )
        how = f"Labels {label_key!r} are class indices; class names from {origin}."
        return values, list(names), how
    if names is None:
        target_names = sorted(set(labels))
        target = np.searchsorted(target_names, labels)
        return target, target_names, f"Labels {label_key!r} are class names (sorted)."
    position = {name: i for i, name in enumerate(names)}
    unknown = [i for i, label in enumerate(labels) if label not in position]
    if unknown:
        i = unknown[0]
        raise ValueError(
            f"The label {labels[i]!r} ({label_key!r}) of {ids[i].as_py()} is not one of the "
            f"{len(names)} class names from {origin}; {len(unknown)} label(s) are unknown."
        )
    target = np.array([position[label] for label in labels], dtype=np.int64)
    return target, list(names), f"Labels {label_key!r} are class names from {origin}."


def _default_domain(kind, source, table):
    if source.startswith("hf:"):
        return source[3:].partition("@")[0]
    folder = (
        Path(table.column("_file")[0].as_py()).parent
        if kind == "webdataset"
        else Path(os.path.abspath(source))
    )
    if folder.name.lower() in _SPLIT_FOLDERS and folder.parent.name:
        return folder.parent.name
    return folder.name
