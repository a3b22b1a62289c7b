"""The ImageNet robustness collection as CLIP_benchmark defines it: class names, prompts, masks.

CLIP_benchmark's ``imagenet_robustness`` collection is ImageNet-1k and five shifts of it:
ImageNet-V2 and ImageNet-Sketch (the same 1000 classes), ImageNet-R and ImageNet-A (200-class
subsets, the masks of its ``builder.py``: the classes whose WordNet id is in the subset, in
ImageNet order) and ObjectNet (113 classes, each one or several ImageNet classes, read from
ObjectNet's mapping files as its ``objectnet.py`` reads them). The class names and the 80
prompt templates of all six are ImageNet-1k's, which open_clip ships
(``open_clip.zero_shot_metadata``: ``IMAGENET_CLASSNAMES``, ``OPENAI_IMAGENET_TEMPLATES``,
equal to CLIP_benchmark's ``en_classnames.json`` and
``en_zeroshot_classification_templates.json``; tested); the WordNet ids, the R / A subsets
and the ObjectNet mapping, which open_clip lacks, are in ``data/imagenet_variants.json``
with a note of their origin.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from sklearn.utils import Bunch

__all__ = ["IMAGENET_VARIANTS", "imagenet_variant"]

#: CLIP_benchmark's names of the ImageNet robustness collection, ImageNet-1k first.
IMAGENET_VARIANTS = (
    "imagenet1k",
    "imagenetv2",
    "imagenet_sketch",
    "imagenet-r",
    "imagenet-a",
    "objectnet",
)

# Other spellings of the variants' names (Hugging Face mirrors wds_imagenet-r, paper names).
_ALIASES = {
    "imagenet": "imagenet1k",
    "imagenet-1k": "imagenet1k",
    "imagenet-v2": "imagenetv2",
    "imagenet-sketch": "imagenet_sketch",
    "imagenet_r": "imagenet-r",
    "imagenet_a": "imagenet-a",
}

_DATA = Path(__file__).parent / "data" / "imagenet_variants.json"


@lru_cache(maxsize=1)
def _data():
    with _DATA.open(encoding="utf-8") as handle:
        return json.load(handle)


def _imagenet_class_names():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def variant_name(name):
    """CLIP_benchmark's name of the variant ``name`` (its aliases and ``wds_`` prefix allowed).

    Parameters
    ----------
    name : str
        ``imagenet1k``, ``imagenetv2``, ``imagenet_sketch``, ``imagenet-r``, ``imagenet-a``,
        ``objectnet``, one of their other spellings (``imagenet-sketch``, ``imagenet_r``,
        ...) or a mirror's name (``wds_imagenet-r``).

    Returns
    -------
    name : str or None
        The name of :data:`IMAGENET_VARIANTS`, or None for any other name.
    """
    key = str(name).strip().lower().removeprefix("wds_").removeprefix("wds/")
    key = _ALIASES.get(key, key)
    return key if key in IMAGENET_VARIANTS else None


def imagenet_variant(name, *, class_names=True):
    """The classes of one variant of CLIP_benchmark's ImageNet robustness collection.

    Parameters
    ----------
    name : str
        A name of :data:`IMAGENET_VARIANTS` (``"imagenet1k"``, ``"imagenetv2"``,
        ``"imagenet_sketch"``, ``"imagenet-r"``, ``"imagenet-a"``, ``"objectnet"``), another
        spelling of one (``"imagenet-sketch"``, ``"imagenet_r"``) or its mirror's name
        (``"wds_imagenet-r"``).
    class_names : bool, default=True
        Fill ``target_names`` (ImageNet's names come from open_clip, which imports torch);
        False leaves it None and reads only the package's data file.

    Returns
    -------
    variant : Bunch
        ``name`` (CLIP_benchmark's), ``target_names`` (the variant's class names in label
        order, as in its ``classnames.txt``), ``imagenet_classes`` (for each class of the
        variant, the list of its ImageNet-1k class indices: ``[i]`` for the 1000 classes and
        the R / A subsets, one or several for ObjectNet), ``wnids`` (WordNet ids of the
        classes; None for ObjectNet, whose classes are its folders, in ``folders``) and
        ``templates`` (the name of the prompt-template set every variant uses:
        ``"openai-imagenet"``, open_clip's 80 templates of the CLIP paper).

    Raises
    ------
    ValueError
        If ``name`` is not a variant.

    Examples
    --------
    >>> from skicm.datasets._imagenet_variants import imagenet_variant
    >>> r = imagenet_variant("imagenet-r")
    >>> len(r.target_names), r.target_names[:2], r.imagenet_classes[:2]
    (200, ['goldfish', 'great white shark'], [[1], [2]])
    >>> objectnet = imagenet_variant("objectnet")
    >>> len(objectnet.target_names), objectnet.target_names[0], objectnet.imagenet_classes[0]
    (113, 'alarm clock', [409, 530])
    """
    key = variant_name(name)
    if key is None:
        raise ValueError(
            f"{name!r} is not a variant of the ImageNet robustness collection; the variants "
            f"are {list(IMAGENET_VARIANTS)}."
        )
    data = _data()
    wnids = data["imagenet_wnids"]
    names = _imagenet_class_names() if class_names else None
    if key == "objectnet":
        return Bunch(
            name=key,
            target_names=list(data["objectnet_class_names"]) if class_names else None,
            imagenet_classes=[list(map(int, ids)) for ids in data["objectnet_imagenet_indices"]],
            wnids=None,
            folders=list(data["objectnet_folders"]),
            templates="openai-imagenet",
        )
    if key in ("imagenet-r", "imagenet-a"):
        subset = set(data[f"{key}_wnids"])
        # CLIP_benchmark's mask: the classes of the subset, in ImageNet order.
        indices = [i for i, wnid in enumerate(wnids) if wnid in subset]
    else:
        indices = list(range(len(wnids)))
    return Bunch(
        name=key,
        target_names=[names[i] for i in indices] if class_names else None,
        imagenet_classes=[[i] for i in indices],
        wnids=[wnids[i] for i in indices],
        folders=None,
        templates="openai-imagenet",
    )
