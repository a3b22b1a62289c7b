"""Readers of the spurious-correlation benchmarks' file layouts: Waterbirds, CelebA, MetaShift.

Each reader returns a :class:`~sklearn.utils.Bunch` of :mod:`skicm.datasets`' convention for
a data set of files (``paths``, ``target``, ``target_names``, ``environments``,
``environment_names``) plus what the spurious-correlation protocol needs:

- ``place`` (n,) int: the spurious attribute of each row (Waterbirds' background, CelebA's
  spurious attribute, MetaShift's context), with ``place_names``; ``environments`` holds the
  same attribute by name;
- ``groups`` (n,) int: the group ``target * len(place_names) + place``, with
  ``group_names`` ("y=waterbird, place=land");
- ``split`` (n,) str: "train", "val" or "test".

Nothing is decoded: the files are listed and checked to exist, so reading a layout of
200,000 images takes seconds.
"""

from __future__ import annotations

import csv
import numbers
import os
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch, check_random_state

from skicm.datasets._image_folders import IMAGE_EXTENSIONS

__all__ = [
    "LAYOUTS",
    "load_celeba_attributes",
    "load_context_folders",
    "load_group_metadata",
    "load_waterbirds_metadata",
]

SPLIT_NAMES = ("train", "val", "test")
#: The layouts :func:`load_group_metadata` reads.
LAYOUTS = ("waterbirds", "celeba", "folders")
_WATERBIRDS_COLUMNS = ("img_filename", "y", "split", "place")


def _group_bunch(paths, target, place, split, *, target_names, place_names, description):
    """The Bunch of the convention, with the group columns derived from target and place."""
    target = np.asarray(target, dtype=np.int64)
    place = np.asarray(place, dtype=np.int64)
    n_places = len(place_names)
    groups = target * n_places + place
    group_names = [f"y={t}, place={p}" for t in target_names for p in place_names]
    place_names = [str(name) for name in place_names]
    return Bunch(
        paths=[str(path) for path in paths],
        target=target,
        target_names=[str(name) for name in target_names],
        place=place,
        place_names=place_names,
        environments=np.asarray(place_names, dtype=object)[place].astype(str),
        environment_names=sorted(place_names),
        groups=groups,
        group_names=group_names,
        split=np.asarray(SPLIT_NAMES, dtype=object)[_split_codes(split)].astype(str),
        DESCR=description,
    )


def _split_codes(split):
    split = np.asarray(split)
    if split.dtype.kind in "iu":
        return split
    return np.array([SPLIT_NAMES.index(s) for s in split], dtype=np.int64)


def _check_files(paths, source):
    """Every listed file exists; one error names the first missing ones and how many."""
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise FileNotFoundError(
            f"{source} lists {len(missing)} image file(s) that do not exist (of {len(paths)}), "
            f"e.g. {shown}. Check the image folder (root=) the file names are relative to."
        )


def _integer(value, *, source, line, column, allowed=None):
    """One cell as an integer, or an error naming the file, line and column."""
    text = value.strip() if isinstance(value, str) else value
    try:
        number = int(text)
    except (TypeError, ValueError):
        number = None
    if number is None or (allowed is not None and number not in allowed):
        expected = "an integer" if allowed is None else f"one of {sorted(allowed)}"
        raise ValueError(
            f"{source}, line {line}, column {column!r}: expected {expected}, got {value!r}."
        )
    return number


def _check_names(names, n_values, option, what):
    if names is None:
        return None
    names = [str(name) for name in names]
    if len(names) != n_values or len(set(names)) != len(names):
        raise ValueError(
            f"{option} must give {n_values} distinct names, one per {what}, got {names!r}."
        )
    return names


def load_waterbirds_metadata(metadata, *, root=None, target_names=None, place_names=None):
    """Read Waterbirds' ``metadata.csv`` (the layout of WILDS and of the group-DRO release).

    The file has one row per image with at least the columns ``img_filename`` (relative to
    ``root``), ``y`` (the class: 0 landbird, 1 waterbird), ``split`` (0 train, 1 val,
    2 test: the official splits) and ``place`` (the background: 0 land, 1 water); other
    columns (``img_id``, ``place_filename``) are ignored. The group of a row is
    ``(y, place)``, numbered ``2 * y + place``.

    Parameters
    ----------
    metadata : str or path-like
        The ``metadata.csv`` file.
    root : str or path-like or None, default=None
        The folder ``img_filename`` is relative to; None is the folder of ``metadata``.
    target_names : sequence of str or None, default=None
        Names of the classes in label order; None is ``["landbird", "waterbird"]`` for two
        classes, else the labels as text.
    place_names : sequence of str or None, default=None
        Names of the places in code order; None is ``["land", "water"]`` for two places.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``paths``, ``target``, ``target_names``, ``place``, ``place_names``,
        ``environments`` (the place by name), ``environment_names``, ``groups``,
        ``group_names``, ``split`` ("train", "val", "test"), ``DESCR``.

    Raises
    ------
    ValueError
        A missing column, or a cell that is not a valid label, split or place (the error
        names the file, line and column); labels or places that are not ``0 .. k - 1``.
    FileNotFoundError
        The file, or images it lists, do not exist.

    See Also
    --------
    load_group_metadata : Any of the layouts by name.
    skicm.evaluation.evaluate_spurious_groups : The protocol these data sets are for.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skicm.datasets._group_metadata import load_waterbirds_metadata
    >>> folder = Path(tempfile.mkdtemp())
    >>> rows = ["img_id,img_filename,y,split,place"]
    >>> for i, (y, split, place) in enumerate([(0, 0, 0), (1, 1, 0), (1, 2, 1)]):
    ...     Image.new("RGB", (8, 8)).save(folder / f"{i}.png")
    ...     rows.append(f"{i},{i}.png,{y},{split},{place}")
    >>> _ = (folder / "metadata.csv").write_text("\\n".join(rows) + "\\n")
    >>> data = load_waterbirds_metadata(folder / "metadata.csv")
    >>> data.split.tolist(), data.groups.tolist(), data.environments.tolist()
    (['train', 'val', 'test'], [0, 2, 3], ['land', 'land', 'water'])
    """
    metadata = Path(metadata)
    if not metadata.is_file():
        raise FileNotFoundError(f"the Waterbirds metadata file {metadata} does not exist.")
    root = metadata.parent if root is None else Path(root)
    with metadata.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in _WATERBIRDS_COLUMNS if c not in columns]
        if missing:
            raise ValueError(
                f"{metadata} has no column {', '.join(map(repr, missing))}: Waterbirds' "
                f"metadata.csv needs {list(_WATERBIRDS_COLUMNS)}; its header is {columns}."
            )
        reader.fieldnames = columns
        paths, target, split, place = [], [], [], []
        for line, row in enumerate(reader, start=2):
            name = (row.get("img_filename") or "").strip()
            if not name:
                raise ValueError(f"{metadata}, line {line}, column 'img_filename': it is empty.")
            paths.append(root / name)
            target.append(_integer(row["y"], source=metadata, line=line, column="y"))
            split.append(
                _integer(row["split"], source=metadata, line=line, column="split",
                         allowed={0, 1, 2})
            )  # fmt: skip
            place.append(_integer(row["place"], source=metadata, line=line, column="place"))
    if not paths:
        raise ValueError(f"{metadata} lists no image.")
    target_codes = _dense_codes(target, metadata, "y")
    place_codes = _dense_codes(place, metadata, "place")
    n_classes, n_places = max(target_codes) + 1, max(place_codes) + 1
    target_names = _check_names(target_names, n_classes, "target_names", "class") or (
        ["landbird", "waterbird"] if n_classes == 2 else [str(c) for c in range(n_classes)]
    )
    place_names = _check_names(place_names, n_places, "place_names", "place") or (
        ["land", "water"] if n_places == 2 else [str(p) for p in range(n_places)]
    )
    _check_files(paths, metadata)
    return _group_bunch(
        paths, target, place, split, target_names=target_names, place_names=place_names,
        description=f"Waterbirds metadata {metadata}: {len(paths)} images, groups (y, place).",
    )  # fmt: skip


def _dense_codes(values, source, column):
    """Integer codes must be 0 .. k - 1 (a gap would make a group that has no rows)."""
    present = sorted(set(values))
    if present != list(range(len(present))) or len(present) < 2:
        raise ValueError(
            f"{source}, column {column!r}: the values must be 0 .. k - 1 with k >= 2, got "
            f"{present}."
        )
    return values


def _read_table(path, *, what):
    """Lines of a whitespace- or comma-separated table (CelebA ships both)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the CelebA {what} {path} does not exist.")
    separator = "," if path.suffix.lower() == ".csv" else None
    with path.open() as handle:
        lines = [line.rstrip("\n") for line in handle]
    return [
        (number, [cell.strip() for cell in line.split(separator)])
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]


def _celeba_attributes(path):
    """{image: row of -1/1 values} and the attribute names of ``list_attr_celeba``."""
    rows = _read_table(path, what="attribute file")
    if not rows:
        raise ValueError(f"{path} is empty.")
    if len(rows[0][1]) == 1 and rows[0][1][0].isdigit():  # the official .txt: a count first
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{path} has no header line of attribute names.")
    header = rows[0][1]
    if header and header[0] in ("image_id", "img_filename", ""):  # the CSV form names the file
        header = header[1:]
    attributes = {}
    for line, cells in rows[1:]:
        if len(cells) != len(header) + 1:
            raise ValueError(
                f"{path}, line {line}: expected the file name and {len(header)} attribute "
                f"values, got {len(cells)} cells."
            )
        attributes[cells[0]] = (line, cells[1:])
    return header, attributes


def load_celeba_attributes(attributes, *, target_attribute="Blond_Hair",
                           spurious_attribute="Male", partition=None,
                           image_folder=None):  # fmt: skip
    """Read CelebA's attribute and partition files (``list_attr_celeba.txt`` layout).

    The attribute file has the number of images on its first line, the 40 attribute names on
    its second, then one line per image: its file name and one value per attribute, ``1``
    (present) or ``-1`` (absent). The Kaggle CSV form (``list_attr_celeba.csv``, a header
    ``image_id,...``) is read too. The partition file (``list_eval_partition.txt``) gives
    each image its official split: 0 train, 1 val, 2 test. The label is whether
    ``target_attribute`` is present (group-DRO's Blond_Hair), the place whether
    ``spurious_attribute`` is (Male); groups are (label, place).

    Parameters
    ----------
    attributes : str or path-like
        ``list_attr_celeba.txt`` (or ``.csv``).
    target_attribute : str, default="Blond_Hair"
        The attribute to predict.
    spurious_attribute : str, default="Male"
        The attribute correlated with it in training.
    partition : str or path-like or None, default=None
        ``list_eval_partition.txt`` (or ``.csv``); None looks beside ``attributes``.
    image_folder : str or path-like or None, default=None
        The folder of the images; None is ``img_align_celeba`` beside ``attributes``.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        As :func:`load_waterbirds_metadata`; ``target_names`` are ``["not <target>",
        "<target>"]`` and ``place_names`` ``["not <spurious>", "<spurious>"]``.

    Raises
    ------
    ValueError
        An attribute not in the file (the error lists them), a value other than 1 / -1, a
        split other than 0 / 1 / 2 (naming file, line and column), images without a
        partition.
    FileNotFoundError
        A file, or listed images, do not exist.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skicm.datasets._group_metadata import load_celeba_attributes
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "img_align_celeba").mkdir()
    >>> for name in ("000001.jpg", "000002.jpg"):
    ...     Image.new("RGB", (8, 8)).save(root / "img_align_celeba" / name)
    >>> _ = (root / "list_attr_celeba.txt").write_text(
    ...     "2\\nBlond_Hair Male\\n000001.jpg 1 -1\\n000002.jpg -1 1\\n")
    >>> _ = (root / "list_eval_partition.txt").write_text("000001.jpg 0\\n000002.jpg 2\\n")
    >>> data = load_celeba_attributes(root / "list_attr_celeba.txt")
    >>> data.target.tolist(), data.place_names, data.split.tolist()
    ([1, 0], ['not Male', 'Male'], ['train', 'test'])
    """
    attributes = Path(attributes)
    partition = attributes.parent / "list_eval_partition.txt" if partition is None else partition
    image_folder = (
        attributes.parent / "img_align_celeba" if image_folder is None else Path(image_folder)
    )
    header, rows = _celeba_attributes(attributes)
    columns = {}
    for option, name in (("target_attribute", target_attribute),
                         ("spurious_attribute", spurious_attribute)):  # fmt: skip
        if name not in header:
            raise ValueError(
                f"{option}={name!r} is not an attribute of {attributes}; its attributes are "
                f"{header}."
            )
        columns[option] = header.index(name)
    if target_attribute == spurious_attribute:
        raise ValueError("target_attribute and spurious_attribute must differ.")
    splits = {}
    for line, cells in _read_table(partition, what="partition file"):
        if line == 1 and cells[0] in ("image_id", "img_filename"):
            continue
        if len(cells) != 2:
            raise ValueError(
                f"{partition}, line {line}: expected a file name and a split, got {cells}."
            )
        splits[cells[0]] = _integer(
            cells[1], source=partition, line=line, column="partition", allowed={0, 1, 2}
        )
    names = list(rows)
    without = [name for name in names if name not in splits]
    if without:
        raise ValueError(
            f"{len(without)} image(s) of {attributes} have no split in {partition}, e.g. "
            f"{without[:3]}."
        )
    target, place = [], []
    for name in names:
        line, values = rows[name]
        for option, out in (("target_attribute", target), ("spurious_attribute", place)):
            column = header[columns[option]]
            value = _integer(
                values[columns[option]], source=attributes, line=line, column=column,
                allowed={-1, 1},
            )  # fmt: skip
            out.append(int(value == 1))
    paths = [image_folder / name for name in names]
    _check_files(paths, attributes)
    return _group_bunch(
        paths, target, place, [splits[name] for name in names],
        target_names=[f"not {target_attribute}", target_attribute],
        place_names=[f"not {spurious_attribute}", spurious_attribute],
        description=(
            f"CelebA {attributes}: {len(paths)} images, target {target_attribute}, spurious "
            f"attribute {spurious_attribute}."
        ),
    )  # fmt: skip


def _images_in(folder, extensions):
    return sorted(
        path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in extensions
    )


def _subfolders(folder):
    return sorted(path for path in folder.iterdir() if path.is_dir())


def _check_split_sizes(split_sizes):
    sizes = np.asarray(split_sizes, dtype=np.float64)
    if sizes.shape != (3,) or np.any(sizes <= 0) or not np.isclose(sizes.sum(), 1.0):
        raise ValueError(
            "split_sizes must be 3 positive shares (train, val, test) summing to 1, got "
            f"{split_sizes!r}."
        )
    return sizes


def load_context_folders(root, *, split_sizes=(0.6, 0.2, 0.2), random_state=0,
                         extensions=IMAGE_EXTENSIONS):  # fmt: skip
    """Read a folder per (class, context): MetaShift's layout, ``ROOT/class/context/image``.

    MetaShift (Liang and Zou, ICLR 2022) groups the images of each class by the context they
    were found in ("cat(sofa)", "dog(bench)"); the context is the spurious attribute. Two
    layouts are read:

    - ``ROOT/<class>/<context>/<image>``: no official split; each (class, context) group is
      split at random (seeded) into train, val and test by ``split_sizes``, so every split
      keeps every group's share (a stratified split);
    - ``ROOT/<split>/<class>/<context>/<image>`` with ``<split>`` the folders ``train``,
      ``val`` and ``test``: the folders are the splits.

    Contexts are pooled by name across classes (the place of a "cat" in "sofa" and of a "dog"
    in "sofa" is the same), so the groups are the (class, context) pairs that have images.

    Parameters
    ----------
    root : str or path-like
        The top folder.
    split_sizes : tuple of 3 floats, default=(0.6, 0.2, 0.2)
        Shares of each group in train, val and test, for the layout without split folders.
    random_state : int, RandomState instance or None, default=0
        Draws that split.
    extensions : sequence of str, default=IMAGE_EXTENSIONS
        File name endings of images (case-insensitive).

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        As :func:`load_waterbirds_metadata`; ``target_names`` are the class folders,
        ``place_names`` the context folders (sorted).

    Raises
    ------
    ValueError
        No class or context folders, a context folder without images, a group too small to
        have a row in every split (each named by its folder), split folders missing a class.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skicm.datasets._group_metadata import load_context_folders
    >>> root = Path(tempfile.mkdtemp())
    >>> for folder in ("cat/sofa", "cat/grass", "dog/sofa", "dog/grass"):
    ...     (root / folder).mkdir(parents=True)
    ...     for i in range(5):
    ...         Image.new("RGB", (8, 8)).save(root / folder / f"{i}.png")
    >>> data = load_context_folders(root, random_state=0)
    >>> data.target_names, data.place_names, len(data.paths)
    (['cat', 'dog'], ['grass', 'sofa'], 20)
    >>> {split: int((data.split == split).sum()) for split in ("train", "val", "test")}
    {'train': 12, 'val': 4, 'test': 4}
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"the folder {root} does not exist.")
    sizes = _check_split_sizes(split_sizes)
    extensions = tuple(e.lower() for e in ([extensions] if isinstance(extensions, str)
                                           else extensions))  # fmt: skip
    top = [folder.name for folder in _subfolders(root)]
    split_layout = bool(top) and set(top) <= set(SPLIT_NAMES) and "train" in top
    if split_layout:
        missing = [name for name in SPLIT_NAMES if name not in top]
        if missing:
            raise ValueError(
                f"{root} has split folders {top} but not {missing}: give train, val and test "
                "folders, or no split folders (then each group is split at random)."
            )
        listed = {name: _listing(root / name, extensions) for name in SPLIT_NAMES}
        classes = sorted({c for entries in listed.values() for c, _, _ in entries})
        for name, entries in listed.items():
            absent = sorted(set(classes) - {c for c, _, _ in entries})
            if absent:
                raise ValueError(f"the split folder {root / name} has no class {absent}.")
        entries = [(c, ctx, path, name) for name, items in listed.items()
                   for c, ctx, path in items]  # fmt: skip
    else:
        items = _listing(root, extensions)
        rng = check_random_state(random_state)
        by_group = {}
        for c, ctx, path in items:
            by_group.setdefault((c, ctx), []).append(path)
        entries = []
        for (c, ctx), paths in by_group.items():
            n = len(paths)
            n_val, n_test = round(sizes[1] * n), round(sizes[2] * n)
            n_train = n - n_val - n_test
            if min(n_train, n_val, n_test) < 1:
                raise ValueError(
                    f"{root / c / ctx} holds {n} image(s): too few for a train, val and test "
                    f"row each with split_sizes={tuple(sizes.tolist())}."
                )
            order = rng.permutation(n)
            labels = np.repeat(np.array(SPLIT_NAMES), [n_train, n_val, n_test])
            entries.extend((c, ctx, paths[i], labels[k]) for k, i in enumerate(order))
        entries.sort(key=lambda e: (SPLIT_NAMES.index(e[3]), e[0], e[1], str(e[2])))
    classes = sorted({e[0] for e in entries})
    contexts = sorted({e[1] for e in entries})
    if len(classes) < 2:
        raise ValueError(f"{root} holds images of {len(classes)} class folder(s); need 2 or more.")
    return _group_bunch(
        [e[2] for e in entries],
        [classes.index(e[0]) for e in entries],
        [contexts.index(e[1]) for e in entries],
        [e[3] for e in entries],
        target_names=classes, place_names=contexts,
        description=(
            f"Context folders {root}: {len(entries)} images, classes {classes}, contexts "
            f"{contexts}" + ("; split folders." if split_layout else "; seeded split.")
        ),
    )  # fmt: skip


def _listing(root, extensions):
    """(class, context, path) of every image of ``root/class/context``."""
    classes = _subfolders(root)
    if not classes:
        raise ValueError(f"{root} has no class folders (expected {root}/<class>/<context>/).")
    entries = []
    for class_folder in classes:
        contexts = _subfolders(class_folder)
        if not contexts:
            raise ValueError(
                f"the class folder {class_folder} has no context folders (expected "
                f"{class_folder}/<context>/<image>)."
            )
        for context in contexts:
            images = _images_in(context, extensions)
            if not images:
                raise ValueError(
                    f"the context folder {context} holds no image ({', '.join(extensions)})."
                )
            entries.extend((class_folder.name, context.name, path) for path in images)
    return entries


def load_group_metadata(source, *, layout="waterbirds", target_attribute="Blond_Hair",
                        spurious_attribute="Male", root=None, split_sizes=(0.6, 0.2, 0.2),
                        random_state=0):  # fmt: skip
    """Read a spurious-correlation data set of files by its layout.

    Parameters
    ----------
    source : str or path-like
        ``"waterbirds"``: the ``metadata.csv`` file; ``"celeba"``: ``list_attr_celeba.txt``;
        ``"folders"``: the top folder.
    layout : {"waterbirds", "celeba", "folders"}, default="waterbirds"
        Which reader: :func:`load_waterbirds_metadata`, :func:`load_celeba_attributes` or
        :func:`load_context_folders`.
    target_attribute, spurious_attribute : str, default="Blond_Hair", "Male"
        CelebA's attributes.
    root : str or path-like or None, default=None
        The image folder (Waterbirds: what ``img_filename`` is relative to; CelebA: the
        images' folder).
    split_sizes : tuple of 3 floats, default=(0.6, 0.2, 0.2)
        The folder layout's seeded split.
    random_state : int, default=0
        Seed of that split.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        See :func:`load_waterbirds_metadata`.

    Examples
    --------
    >>> from skicm.datasets._group_metadata import LAYOUTS
    >>> LAYOUTS
    ('waterbirds', 'celeba', 'folders')
    """
    if layout == "waterbirds":
        return load_waterbirds_metadata(source, root=root)
    if layout == "celeba":
        return load_celeba_attributes(
            source, target_attribute=target_attribute, spurious_attribute=spurious_attribute,
            image_folder=root,
        )  # fmt: skip
    if layout == "folders":
        if not isinstance(random_state, numbers.Integral):
            raise ValueError(f"random_state must be an integer, got {random_state!r}.")
        return load_context_folders(source, split_sizes=split_sizes, random_state=random_state)
    raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}.")
