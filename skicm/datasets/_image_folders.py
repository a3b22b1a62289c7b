"""Load an image data set laid out as DomainBed does: ``root/domain/class/image``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

__all__ = ["IMAGE_EXTENSIONS", "load_image_folders"]

#: File extensions (lower case) that :func:`load_image_folders` treats as images.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def _subfolders(folder):
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_image_folders(root, *, domains=None, class_aliases=None, extensions=IMAGE_EXTENSIONS):
    """List the images of a multi-domain data set stored as ``root/domain/class/image``.

    This is the layout of the DomainBed benchmarks (PACS, VLCS, OfficeHome, TerraIncognita,
    DomainNet): one folder per domain, inside it one folder per class. Only the file paths are
    returned; images are decoded later, e.g. by :class:`skicm.CLIPEmbedder`, which accepts
    paths. Hidden folders and files that are not images are ignored.

    Parameters
    ----------
    root : str or path-like
        Folder holding one subfolder per domain.
    domains : sequence of str or None, default=None
        Domains to load, by folder name. None loads every domain folder.
    class_aliases : mapping of str to str or None, default=None
        Class name for class folders whose name is not the class name, such as VLCS-style
        folders named differently in each domain (``{"hund": "dog", "husky": "dog"}``).
        Folders not in the mapping keep their own name.
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
        domains : ndarray of shape (n_images,)
            Domain (folder name) of each image.
        domain_names : list of str
            Sorted names of the loaded domains.
        root : str
            The ``root`` folder.

    Raises
    ------
    ValueError
        If ``root`` is not a folder, a requested domain does not exist, or no image is found.

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
    >>> for domain, label in [("photo", "dog"), ("photo", "cat"), ("sketch", "dog")]:
    ...     (root / domain / label).mkdir(parents=True)
    ...     Image.new("RGB", (4, 4)).save(root / domain / label / "0.png")
    >>> data = load_image_folders(root)
    >>> data.target_names, data.domain_names
    (['cat', 'dog'], ['photo', 'sketch'])
    >>> data.target.tolist(), data.domains.tolist()
    ([0, 1, 1], ['photo', 'photo', 'sketch'])
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise ValueError(f"root must be an existing folder, got {str(root)!r}.")
    if class_aliases is not None and not isinstance(class_aliases, Mapping):
        raise ValueError(
            f"class_aliases must be a mapping from folder name to class name, got "
            f"{type(class_aliases).__name__}."
        )
    aliases = dict(class_aliases or {})
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
    for domain in selected:
        for class_folder in _subfolders(available[domain]):
            label = aliases.get(class_folder.name, class_folder.name)
            for path in sorted(class_folder.iterdir()):
                if path.is_file() and path.suffix.lower() in suffixes:
                    records.append((str(path), label, domain))
    if not records:
        raise ValueError(
            f"root {str(root)!r} holds no images with extensions {sorted(suffixes)} in "
            "root/domain/class/ folders."
        )

    paths, labels, image_domains = zip(*records)
    target_names = sorted(set(labels))
    target = np.searchsorted(target_names, labels)
    image_domains = np.asarray(image_domains)
    return Bunch(
        paths=list(paths),
        target=target,
        target_names=target_names,
        domains=image_domains,
        domain_names=sorted(set(image_domains.tolist())),
        root=str(root_path),
    )
