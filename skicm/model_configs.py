"""Tiny open_clip architectures that run anywhere, offline, in a fraction of a second.

They have random weights (``pretrained=None``) and exist for tests, documentation examples and
smoke runs of whole pipelines on machines that cannot download pretrained CLIP weights.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

__all__ = ["TINY_CLIP_CONFIG", "register_tiny_clip"]

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

_registered: set[str] = set()


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
    import open_clip

    if name in _registered and name in open_clip.list_models():
        return name
    folder = Path(tempfile.mkdtemp(prefix="skicm-model-config-"))
    path = folder / f"{name}.json"
    path.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(path)
    _registered.add(name)
    return name
