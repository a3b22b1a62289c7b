"""Load an image data set laid out as DomainBed does: ``root/domain/class/image``.

Classes are matched across domains by the name of their folder. Some data sets name one class
differently in each domain (the VLCS folders of some distributions: ``hund``, ``husky`` and
``dog``); left alone, every domain then has classes of its own and a leave-one-domain-out score
is zero. :func:`load_image_folders` therefore warns, naming them per domain, about class
folders found in one domain only (and says so when the domains share no class at all), and
takes ``class_aliases`` (a mapping, or a file of ``FOLDER=CLASS`` lines or a JSON object, see
:func:`read_class_aliases`) to name the classes.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

__all__ = ["IMAGE_EXTENSIONS", "load_image_folders", "read_class_aliases"]

_FIX = (
    "Classes are matched across domains by folder name; name the class of each folder with "
    "class_aliases={{{example}}} (a mapping, or the path of a file with one FOLDER=CLASS line "
    "per folder, or of a JSON object), on the command line --class-alias FOLDER=CLASS "
    "(repeatable) or --class-alias-file FILE."
)

#: File extensions (lower case) that :func:`load_image_folders` treats as images.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def _subfolders(folder):
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def read_class_aliases(path) -> dict[str, str]:
    """Read class aliases (class folder name -> class name) from a file.

    Two formats: a JSON object (``{"hund": "dog", "husky": "dog"}``), or text with one
    ``FOLDER=CLASS`` per line (blank lines and lines starting with ``#`` are ignored; spaces
    around the names are dropped). A file whose name ends in ``.json``, or whose text starts with
    ``{``, is read as JSON.

    Parameters
    ----------
    path : str or path-like
        The alias file.

    Returns
    -------
    aliases : dict of str to str
        Class name of each aliased class folder.

    Raises
    ------
    ValueError
        If the file cannot be read or a line or entry is malformed; the message names the file
        (and the line).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from skicm.datasets._image_folders import read_class_aliases
    >>> path = Path(tempfile.mkdtemp()) / "aliases.txt"
    >>> _ = path.write_text("# VLCS caltech folders\\nhund = dog\\nauto=car\\n")
    >>> read_class_aliases(path)
    {'hund': 'dog', 'auto': 'car'}
    """
    name = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Cannot read the class alias file {name!r}: {error}") from error
    if name.lower().endswith(".json") or text.lstrip().startswith("{"):
        try:
            aliases = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"The class alias file {name!r} is not valid JSON: {error}. Write a JSON object "
                'such as {"hund": "dog"}, or one FOLDER=CLASS per line.'
            ) from None
        if not isinstance(aliases, dict):
            raise ValueError(
                f"The class alias file {name!r} holds a JSON {type(aliases).__name__}; expected "
                'an object mapping folder names to class names, such as {"hund": "dog"}.'
            )
        return _checked_aliases(aliases, f"class alias file {name!r}")
    aliases = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        folder, sep, label = (part.strip() for part in line.partition("="))
        if not sep or not folder or not label:
            raise ValueError(
                f"Line {number} of the class alias file {name!r} is {line!r}; each line must be "
                "FOLDER=CLASS, such as hund=dog."
            )
        if aliases.get(folder, label) != label:
            raise ValueError(
                f"The class alias file {name!r} names two classes for folder {folder!r} "
                f"({aliases[folder]!r} and, on line {number}, {label!r})."
            )
        aliases[folder] = label
    return aliases


def _checked_aliases(aliases, source: str) -> dict[str, str]:
    bad = [
        f"{folder!r}: {label!r}"
        for folder, label in aliases.items()
        if not (isinstance(folder, str) and folder and isinstance(label, str) and label)
    ]
    if bad:
        raise ValueError(
            f"The {source} must map folder names to class names (non-empty strings); got "
            + ", ".join(bad[:5])
            + "."
        )
    return dict(aliases)


def _resolve_aliases(class_aliases) -> dict[str, str]:
    if class_aliases is None:
        return {}
    if isinstance(class_aliases, (str, os.PathLike)):
        return read_class_aliases(class_aliases)
    if not isinstance(class_aliases, Mapping):
        raise ValueError(
            f"class_aliases must be a mapping from folder name to class name or the path of an "
            f"alias file, got {type(class_aliases).__name__}."
        )
    return _checked_aliases(class_aliases, "class_aliases mapping")


def _check_classes_shared(root, folders_by_domain, aliases, all_folders):
    """Warn about class folders of one domain only, and louder when no class is shared.

    A warning, not an error: listing or embedding the images needs no shared class, and the
    evaluation refuses a held-out domain whose classes no training domain has.

    ``folders_by_domain`` maps each loaded domain to ``{folder name: class name}``.
    """
    unknown = sorted(set(aliases) - all_folders)
    if unknown:
        warnings.warn(
            f"class_aliases names folders found in no domain under {str(root)!r}: "
            f"{', '.join(map(repr, unknown))}; check their spelling.",
            UserWarning,
            stacklevel=3,
        )
    if len(folders_by_domain) < 2:
        return
    domains_of = {}
    for domain, folders in folders_by_domain.items():
        for label in set(folders.values()):
            domains_of.setdefault(label, set()).add(domain)
    lonely = {
        domain: sorted(f for f, label in folders.items() if len(domains_of[label]) == 1)
        for domain, folders in folders_by_domain.items()
    }
    lonely = {domain: folders for domain, folders in lonely.items() if folders}
    if not lonely:
        return

    def shown(domain, folders):
        mapped = folders_by_domain[domain]
        names = [f if mapped[f] == f else f"{f} (= {mapped[f]})" for f in folders]
        return f"{domain}: {', '.join(names)}"

    listing = "; ".join(shown(d, f) for d, f in lonely.items())
    example = ", ".join(
        f"{folder!r}: 'CLASS'" for folders in list(lonely.values())[:2] for folder in folders[:1]
    )
    fix = _FIX.format(example=example)
    if all(len(domains) == 1 for domains in domains_of.values()):
        warnings.warn(
            f"The {len(folders_by_domain)} domains under {str(root)!r} share no class: every "
            f"class folder is found in one domain only ({listing}). A model trained on some "
            f"domains would be scored on classes it has never seen. {fix}",
            UserWarning,
            stacklevel=3,
        )
        return
    warnings.warn(
        f"Some class folders under {str(root)!r} are found in one domain only, so their images "
        f"are scored as classes that the other domains do not have: {listing}. If they are "
        f"classes of the other domains under another name: {fix}",
        UserWarning,
        stacklevel=3,
    )


def load_image_folders(root, *, domains=None, class_aliases=None, extensions=IMAGE_EXTENSIONS):
    """List the images of a multi-domain data set stored as ``root/domain/class/image``.

    This is the layout of the DomainBed benchmarks (PACS, VLCS, OfficeHome, TerraIncognita,
    DomainNet): one folder per domain, inside it one folder per class. Only the file paths are
    returned; images are decoded later, e.g. by :class:`skicm.CLIPEmbedder`, which accepts
    paths. Hidden folders and files that are not images are ignored.

    Classes are matched across domains by folder name (after ``class_aliases``). When several
    domains are loaded and some class folders are found in one domain only, a ``UserWarning``
    lists them per domain (and says when the domains share no class at all) and names the fix:
    ``class_aliases``.

    Parameters
    ----------
    root : str or path-like
        Folder holding one subfolder per domain.
    domains : sequence of str or None, default=None
        Domains to load, by folder name. None loads every domain folder.
    class_aliases : mapping of str to str, str, path-like or None, default=None
        Class name for class folders whose name is not the class name, such as VLCS-style
        folders named differently in each domain (``{"hund": "dog", "husky": "dog"}``), or the
        path of a file of such aliases, one ``FOLDER=CLASS`` per line or a JSON object (see
        :func:`read_class_aliases`). Folders not in the mapping keep their own name.
    extensions : str or sequence of str, default=IMAGE_EXTENSIONS
        File extensions (matched case-insensitively) that count as images.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object, one entry per image in the sorted order of domain, class folder
        and file name:

        paths : list of str
            Image file paths.
        target : ndarray of shape (n_images,)
            Class index into ``target_names``.
        target_names : list of str
            Sorted class names over all loaded domains.
        environments : ndarray of shape (n_images,)
            Domain (folder name) of each image.
        environment_names : list of str
            Sorted names of the loaded domains.
        domains, domain_names
            The same as ``environments`` and ``environment_names`` (DomainBed's word).
        root : str
            The ``root`` folder.
        classes_by_domain : dict of str to list of str
            Sorted class names found in each loaded domain.

    Raises
    ------
    ValueError
        If ``root`` is not a folder, a requested domain does not exist, no image is found, or
        the alias file or mapping is malformed.

    Warns
    -----
    UserWarning
        If some class folders are found in one of the loaded domains only (the domains may
        name a class differently), or ``class_aliases`` names folders that no domain has.

    See Also
    --------
    skicm.evaluation.leave_one_domain_out : The protocol these data sets are scored with.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skicm.datasets import load_image_folders
    >>> root = Path(tempfile.mkdtemp())
    >>> for domain, folder in [("photo", "cat"), ("photo", "dog"), ("sketch", "cat"),
    ...                        ("sketch", "hund")]:
    ...     (root / domain / folder).mkdir(parents=True)
    ...     Image.new("RGB", (4, 4)).save(root / domain / folder / "0.png")
    >>> data = load_image_folders(root, class_aliases={"hund": "dog"})  # sketch's dogs: hund/
    >>> data.target_names, data.environment_names
    (['cat', 'dog'], ['photo', 'sketch'])
    >>> data.target.tolist(), data.environments.tolist()
    ([0, 1, 0, 1], ['photo', 'photo', 'sketch', 'sketch'])
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise ValueError(f"root must be an existing folder, got {str(root)!r}.")
    aliases = _resolve_aliases(class_aliases)
    if isinstance(extensions, str):
        extensions = [extensions]
    suffixes = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}

    available = {p.name: p for p in _subfolders(root_path)}
    if domains is None:
        selected = list(available)
    else:
        if isinstance(domains, str):
            domains = [domains]
        selected = sorted(set(domains))
        unknown = [d for d in selected if d not in available]
        if unknown:
            raise ValueError(
                f"domains {unknown} not found under {str(root)!r}; available domains: "
                f"{sorted(available)}."
            )
    if not selected:
        raise ValueError(
            "domains is an empty selection."
            if domains is not None
            else f"root {str(root)!r} has no domain subfolders."
        )

    records = []
    folders_by_domain = {}
    for domain in selected:
        for class_folder in _subfolders(available[domain]):
            label = aliases.get(class_folder.name, class_folder.name)
            images = [
                str(path)
                for path in sorted(class_folder.iterdir())
                if path.is_file() and path.suffix.lower() in suffixes
            ]
            if images:
                folders_by_domain.setdefault(domain, {})[class_folder.name] = label
            records.extend((path, label, domain) for path in images)
    if not records:
        raise ValueError(
            f"root {str(root)!r} holds no images with extensions {sorted(suffixes)} in "
            "root/domain/class/ folders."
        )
    all_folders = set()
    if aliases:
        for domain_folder in available.values():
            all_folders.update(p.name for p in _subfolders(domain_folder))
    _check_classes_shared(root, folders_by_domain, aliases, all_folders)

    paths, labels, image_domains = zip(*records)
    target_names = sorted(set(labels))
    target = np.searchsorted(target_names, labels)
    image_domains = np.asarray(image_domains)
    domain_names = sorted(set(image_domains.tolist()))
    return Bunch(
        paths=list(paths),
        target=target,
        target_names=target_names,
        environments=image_domains,
        environment_names=domain_names,
        domains=image_domains,
        domain_names=domain_names,
        root=str(root_path),
        classes_by_domain={
            domain: sorted(set(folders.values())) for domain, folders in folders_by_domain.items()
        },
    )
