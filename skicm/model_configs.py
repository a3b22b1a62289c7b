"""Tiny open_clip architectures that run anywhere, offline, in a fraction of a second.

They have random weights (``pretrained=None``) and exist for tests, documentation examples and
smoke runs of whole pipelines on machines that cannot download pretrained CLIP weights.
"""

from __future__ import annotations

import copy
import importlib.abc
import json
import sys
import tempfile
import threading
from pathlib import Path

__all__ = ["TINY_CLIP_CONFIG", "register_model_config", "register_tiny_clip", "tiny_image_model"]

#: open_clip model config of the tiny CLIP: 32-d joint embedding, 32x32 images, two layers of
#: width 64 in each tower.
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {
        "context_length": 77,
        "vocab_size": 49408,
        "width": 64,
        "heads": 2,
        "layers": 2,
    },
}

# Architectures registered through skicm in this process: name -> config. open_clip learns them
# when it is imported (at once if it already is), so that registering one, and identifying a
# model by it (CLIPEmbedder.store_namespace), needs no open_clip (and so no torch).
_CONFIGS: dict[str, dict] = {}
_LOCK = threading.RLock()


def register_tiny_clip(name: str = "skicm-tiny-clip") -> str:
    """Register :data:`TINY_CLIP_CONFIG` with open_clip under ``name`` and return the name.

    Registering twice is harmless. The model is then available to
    ``open_clip.create_model_and_transforms(name, pretrained=None)`` and to
    :class:`skicm.CLIPEmbedder` (``model_name=name, pretrained=None``).

    Parameters
    ----------
    name : str, default="skicm-tiny-clip"
        Name under which open_clip will know the architecture.

    Returns
    -------
    name : str
        The registered model name.

    Examples
    --------
    >>> import open_clip
    >>> from skicm.model_configs import register_tiny_clip
    >>> name = register_tiny_clip()
    >>> name in open_clip.list_models()
    True
    """
    return register_model_config(name, TINY_CLIP_CONFIG)


def register_model_config(name: str, config: dict) -> str:
    """Register the open_clip architecture ``config`` under ``name`` and return the name.

    open_clip learns architectures from JSON files (``open_clip.add_model_config``); this writes
    ``config`` to a private temporary file and registers it: at once when open_clip is imported
    already, else the moment it is imported (so registering imports neither open_clip nor
    torch). A name registered before with another config now means ``config``.
    :class:`skicm.CLIPEmbedder` pickles carry the config of such a name and register it when
    unpickled, so that worker processes know it.

    Parameters
    ----------
    name : str
        Name under which open_clip will know the architecture.
    config : dict
        open_clip model config: ``embed_dim``, ``vision_cfg`` and ``text_cfg``.

    Returns
    -------
    name : str
        The registered model name.

    Raises
    ------
    ValueError
        If ``config`` is not an open_clip model config.

    Examples
    --------
    >>> import open_clip
    >>> from skicm.model_configs import TINY_CLIP_CONFIG, register_model_config
    >>> register_model_config("my-tiny-clip", TINY_CLIP_CONFIG)
    'my-tiny-clip'
    >>> open_clip.get_model_config("my-tiny-clip")["embed_dim"]
    32
    """
    check_model_config(config, f"the config of {name!r}")
    with _LOCK:
        _CONFIGS[name] = copy.deepcopy(config)
        open_clip = sys.modules.get("open_clip")
        if open_clip is not None and hasattr(open_clip, "add_model_config"):
            _add_to_open_clip(open_clip, name, config)
        elif not any(isinstance(finder, _RegisterOnImport) for finder in sys.meta_path):
            sys.meta_path.insert(0, _RegisterOnImport())
    return name


def registered_model_config(name: str) -> dict | None:
    """The config registered under ``name`` through skicm in this process (a copy), or None.

    Parameters
    ----------
    name : str
        An architecture name.

    Returns
    -------
    config : dict or None
        What :func:`register_model_config` registered last under ``name``.

    Examples
    --------
    >>> from skicm.model_configs import register_tiny_clip, registered_model_config
    >>> registered_model_config(register_tiny_clip())["embed_dim"]
    32
    >>> registered_model_config("no-such-architecture") is None
    True
    """
    with _LOCK:
        config = _CONFIGS.get(name)
        return None if config is None else copy.deepcopy(config)


def _add_to_open_clip(open_clip, name: str, config: dict) -> None:
    if open_clip.get_model_config(name) == config:
        return
    folder = Path(tempfile.mkdtemp(prefix="skicm-model-config-"))
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)


def _add_all_to_open_clip(open_clip) -> None:
    with _LOCK:
        for name, config in _CONFIGS.items():
            _add_to_open_clip(open_clip, name, config)


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Gives open_clip the architectures registered through skicm as it is imported.

    Finds ``open_clip`` as the other finders would and wraps its loader, so that right after
    the package's own code has run (its built-in architectures scanned), the registered ones are
    added, whoever imports it (skicm, or a user calling open_clip directly).
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "open_clip":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _add_all_to_open_clip(module)

    def __getattr__(self, name):  # get_resource_reader, is_package, ...
        return getattr(self.loader, name)


def check_model_config(config, what: str) -> None:
    """Raise a ValueError naming ``what`` unless ``config`` looks like an open_clip model config."""
    missing = (
        ["an object"]
        if not isinstance(config, dict)
        else [key for key in ("embed_dim", "vision_cfg", "text_cfg") if key not in config]
    )
    if missing:
        raise ValueError(
            f"{what} is not an open_clip model config: it needs {', '.join(missing)} (see the "
            "JSON files in open_clip/model_configs/, e.g. ViT-B-32.json, or "
            "skicm.model_configs.TINY_CLIP_CONFIG)."
        )


def tiny_image_model():
    """A tiny random-weight convolutional image model with its preprocessing (16-d features).

    For tests, documentation examples and smoke runs of :class:`skicm.ImageEmbedder`
    (``ImageEmbedder("skicm.model_configs:tiny_image_model")``): two convolutions on 32x32
    images, then global average pooling. Weights are random (seeded by the embedder).

    Returns
    -------
    module : torch.nn.Module
        Maps a float batch (B, 3, 32, 32) to (B, 16) features.
    preprocess : torchvision.transforms.Compose
        Resize to 32, centre crop 32, ToTensor, Normalize (ImageNet mean and std).

    Examples
    --------
    >>> import torch
    >>> from skicm.model_configs import tiny_image_model
    >>> module, preprocess = tiny_image_model()
    >>> module(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 16])
    """
    import torch
    from torchvision import transforms as T

    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    preprocess = T.Compose(
        [
            T.Resize(32),
            T.CenterCrop(32),
            T.ToTensor(),
            T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    return module, preprocess
