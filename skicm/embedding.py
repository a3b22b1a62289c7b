"""CLIPEmbedder: open_clip image and text embeddings as a scikit-learn transformer.

The model is loaded lazily into a process-level cache shared by every clone of an embedder, an
embedding store (:mod:`skicm.store`) answers images seen before and a process-level text cache
answers texts seen before, so that a grid search encodes each distinct image and prompt once.
Batching, decoding, the store and errors are shared with every image encoder of skicm
(``skicm/_image_embedder_base.py``); this module says how open_clip models are identified,
fetched and built. torch and open_clip are imported inside functions: ``import skicm`` stays fast.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib.util
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

from skicm._image_embedder_base import (
    _MODEL_CACHE,  # noqa: F401  (the process-level model cache, shared by every encoder)
    EXPECTED_FAILED_CHECKS,
    RANDOM_WEIGHTS_SEED,
    LoadedEncoder,
    _BaseImageEmbedder,
    autocast_dtype,
    cached_model,
    check_finite_weights,
    clear_cached_models,
    digest,
    file_identity,
    optional_file_identity,
    resolve_device,
    split_preprocess,
)

__all__ = ["CLIPEmbedder", "clear_model_cache", "clear_text_cache"]

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt")
_HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"
_HF_SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"
_LOCAL_DIR_FORMAT = (
    "a folder holding the checkpoint (open_clip_model.safetensors or "
    "open_clip_pytorch_model.bin) and an open_clip_config.json of the form "
    '{"model_cfg": <the architecture\'s open_clip config>, "preprocess_cfg": '
    '{"mean": [...], "std": [...]}}'
)
# Seconds to wait for the Hugging Face Hub to answer before calling a download impossible.
_CONNECT_TIMEOUT = 5.0

# The estimator checks that tests/test_common.py expects to fail, found by this name in the
# module of each estimator.
_EXPECTED_FAILED_CHECKS = EXPECTED_FAILED_CHECKS

# Raw text embeddings by (text namespace, text). Text interventions and zero-shot prompts are
# encoded again in every fit of a grid search (each fit gets a clone), and the text tower costs
# seconds per fit for a full-size model on a CPU (3.3 s for 56 prompts with ViT-B-32 on 2 cores),
# while each distinct prompt needs encoding once per process. 128 MiB is ~65k 512-d vectors.
_TEXT_CACHE = None  # a skicm.store.MemoryStore, made on first use
_TEXT_CACHE_MAX_BYTES = 2**27
_TEXT_CACHE_LOCK = threading.Lock()

# Files of the Hugging Face Hub resolved to local paths in this process: (repo, filename) -> path.
# An ``hf-hub:`` model or checkpoint is looked up (and downloaded) once, not on every transform.
_HUB_FILES: dict[tuple[str, str], str] = {}
_HUB_LOCK = threading.Lock()
# Outcome of the last connectivity check per URL: (time, reason it failed or None).
_REACHABILITY: dict[str, tuple[float, str | None]] = {}


def clear_model_cache() -> None:
    """Drop every model that the embedders have loaded in this process (frees memory).

    The next ``transform`` or ``encode_text`` that needs a model loads it again.

    Examples
    --------
    >>> from skicm.embedding import clear_model_cache
    >>> clear_model_cache()
    """
    clear_cached_models()


def clear_text_cache() -> None:
    """Forget the text embeddings that :meth:`CLIPEmbedder.encode_text` has cached.

    Examples
    --------
    >>> from skicm.embedding import clear_text_cache
    >>> clear_text_cache()  # the next encode_text calls run the text tower again
    """
    _text_cache().clear()


def _text_cache():
    global _TEXT_CACHE
    with _TEXT_CACHE_LOCK:
        if _TEXT_CACHE is None:
            from skicm.store import MemoryStore

            _TEXT_CACHE = MemoryStore(max_bytes=_TEXT_CACHE_MAX_BYTES)
        return _TEXT_CACHE


# --------------------------------------------------------------------------- the Hub, offline
def _hub_constants():
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - open_clip depends on huggingface_hub
        return None
    return constants


@contextlib.contextmanager
def _hub_offline():
    """Let open_clip take Hub files from the local cache without asking the Hub (no retries)."""
    constants = _hub_constants()
    if constants is None:  # pragma: no cover
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _unreachable_reason(url: str) -> str | None:
    """Why ``url`` cannot be downloaded from now (offline mode, no connection), else None.

    One HEAD request with a short timeout and no retries, remembered for 30 s: huggingface_hub
    itself retries a failing connection for about a minute before giving up.
    """
    constants = _hub_constants()
    if constants is not None and constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set and the file is not in the local Hugging Face cache"
    import urllib.error
    import urllib.request

    seen = _REACHABILITY.get(url)
    if seen is not None and time.monotonic() - seen[0] < 30:
        return seen[1]
    reason = None
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=_CONNECT_TIMEOUT):
            pass
    except urllib.error.HTTPError:
        pass  # the server answered: downloads can be attempted
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = f"cannot connect to {url} ({getattr(error, 'reason', error)})"
    _REACHABILITY[url] = (time.monotonic(), reason)
    return reason


def _hub_url(repo: str, filename: str) -> str:
    constants = _hub_constants()
    endpoint = constants.ENDPOINT if constants is not None else "https://huggingface.co"
    return f"{endpoint.rstrip('/')}/{repo}/resolve/main/{filename}"


def _fetch_instructions(model_name: str, filename: str, url: str, *, is_config=False) -> str:
    if is_config:
        return (
            f"Fetch {filename} and the checkpoint from {url.rsplit('/resolve/', 1)[0]} on a "
            "machine with internet access and use model_name='local-dir:/path/to/folder' "
            f"(command line: --model-name local-dir:/path/to/folder), {_LOCAL_DIR_FORMAT}; or "
            "copy that machine's Hugging Face cache (~/.cache/huggingface/hub) here and set "
            "HF_HUB_OFFLINE=1."
        )
    return (
        f"Fetch {filename} ({url}) on a machine with internet access, then pass its path: "
        f"CLIPEmbedder({model_name!r}, pretrained='/path/to/{filename}') (command line: "
        f"--pretrained /path/to/{filename}); or use model_name='local-dir:/path/to/folder', "
        f"{_LOCAL_DIR_FORMAT}; or copy that machine's Hugging Face cache "
        "(~/.cache/huggingface/hub) here and set HF_HUB_OFFLINE=1."
    )


def _cached_hub_file(repo: str, filenames) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for filename in filenames:
        try:
            path = try_to_load_from_cache(repo, filename)
        except Exception:
            path = None
        if isinstance(path, str):
            return path
    return None


def _weights_alternatives(filename: str) -> list[str]:
    """The file names open_clip tries for ``filename``: its safetensors twin first."""
    if filename == _HF_WEIGHTS_NAME:
        return [_HF_SAFE_WEIGHTS_NAME, filename]
    if filename.endswith((".bin", ".pth", ".pt")):
        return [filename.rsplit(".", 1)[0] + ".safetensors", filename]
    return [filename]


def _hub_file(repo: str, filename: str, *, model_name: str, what: str) -> str:
    """Local path of a file of a Hugging Face repository: cached, else downloaded once.

    Fails within seconds, with one message saying what to fetch and how to pass it, when the
    file is neither in the local cache nor downloadable (offline).
    """
    with _HUB_LOCK:
        path = _HUB_FILES.get((repo, filename))
        if path is not None and os.path.isfile(path):
            return path
        candidates = _weights_alternatives(filename)
        path = _cached_hub_file(repo, candidates)
        if path is None:
            url = _hub_url(repo, filename)
            is_config = filename.endswith(".json")
            reason = _unreachable_reason(url)
            if reason is not None:
                raise OSError(
                    f"Cannot get {what} of model {model_name!r}: {reason}. "
                    + _fetch_instructions(model_name, filename, url, is_config=is_config)
                )
            import open_clip

            try:
                path = open_clip.pretrained.download_pretrained_from_hf(repo, filename=filename)
            except Exception as error:
                raise OSError(
                    f"Cannot download {what} of model {model_name!r}: {error}. "
                    + _fetch_instructions(model_name, filename, url, is_config=is_config)
                ) from error
        _HUB_FILES[(repo, filename)] = path
        return path


# --------------------------------------------------------------------------- open_clip's files
# A model's identity (its store namespace) needs open_clip's architecture configs, its table of
# pretrained tags, its preprocessing defaults and its version: data in open_clip's files.
# Importing open_clip for them imports torch (2-4 s), which a run answered from a store never
# needs. So when open_clip is not imported yet, its files are read instead; a reader that finds
# a file not as expected returns None and open_clip is imported and asked. The namespace is the
# same either way (tests compare both for every built-in architecture and pretrained tag).
_PRETRAINED_TABLE = None  # open_clip.pretrained's functions and table, read from its file
_PREPROCESS_DEFAULTS = None  # asdict(open_clip.transform.PreprocessCfg()), read from its file
_OPEN_CLIP_FILES_LOCK = threading.Lock()


def _open_clip_file(*parts) -> Path | None:
    """A file of the installed open_clip package, found without importing it."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0], *parts) if locations else None


def _read_python(path) -> dict | None:
    """Run a module file of open_clip that imports nothing (constants, version): its names."""
    try:
        source = Path(path).read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        if any(isinstance(node, (ast.Import, ast.ImportFrom)) for node in ast.walk(tree)):
            return None
        names: dict = {"__name__": "_skicm_open_clip_file"}
        exec(compile(tree, str(path), "exec"), names)
    except Exception:  # any surprise: open_clip is imported and asked instead
        return None
    return names


def _package_version(name: str) -> str:
    """``__version__`` of the package ``name`` (open_clip, torch), without importing it."""
    module = sys.modules.get(name)
    if module is None:
        version = _version_from_file(name)
        if version is not None:
            return version
        module = importlib.import_module(name)
    return str(module.__version__)


def _version_from_file(name: str) -> str | None:
    """The ``__version__`` string literal of the package's version.py (open_clip and torch
    assign it so), or None."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0], "version.py") if locations else None
    if path is None or not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]\s*$", text, re.MULTILINE)
    return found.group(1) if found else None


def _model_config(name: str) -> dict | None:
    """``open_clip.get_model_config(name)`` (a name without schema), without importing it."""
    open_clip = sys.modules.get("open_clip")
    if open_clip is None:
        from skicm.model_configs import registered_model_config

        config = registered_model_config(name)  # registered through skicm: wins, as in open_clip
        if config is not None:
            return config
        found, config = _builtin_model_config(name)
        if found:
            return config
        import open_clip
    return open_clip.get_model_config(name)


def _builtin_model_config(name: str) -> tuple[bool, dict | None]:
    """(read, config) of the built-in architecture ``name`` from open_clip/model_configs/;
    read is False when the folder cannot be read (then open_clip must be asked)."""
    folder = _open_clip_file("model_configs")
    try:
        # open_clip's registry: every model_configs/<name>.json that has the three keys.
        if folder is None or f"{name}.json" not in os.listdir(folder):
            return folder is not None, None
        with open(folder / f"{name}.json") as file:
            config = json.load(file)
    except (OSError, ValueError):
        return False, None
    complete = isinstance(config, dict) and all(
        key in config for key in ("embed_dim", "vision_cfg", "text_cfg")
    )
    return True, config if complete else None


def _pretrained_table() -> dict | None:
    """The names of open_clip/pretrained.py (its table of tags and functions reading it), run
    without the imports its downloads need (safetensors.torch, huggingface_hub, tqdm)."""
    global _PRETRAINED_TABLE
    with _OPEN_CLIP_FILES_LOCK:
        if _PRETRAINED_TABLE is None:
            _PRETRAINED_TABLE = _read_pretrained_table() or {}
    return _PRETRAINED_TABLE or None


def _read_pretrained_table() -> dict | None:
    path = _open_clip_file("pretrained.py")
    modules = {
        name: _read_python(_open_clip_file(f"{name}.py")) if path is not None else None
        for name in ("constants", "version")
    }
    if path is None or None in modules.values():
        return None
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names: dict = {"__name__": "_skicm_open_clip_pretrained"}
        body = []
        for node in tree.body:
            if isinstance(node, ast.Try):  # optional imports for downloading
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names.update(
                    (alias.asname or alias.name, modules[node.module][alias.name])
                    for alias in node.names
                )
                continue
            if isinstance(node, ast.ImportFrom) and node.module == "tqdm":
                continue  # progress bars of downloads
            body.append(node)
        module = ast.Module(body=body, type_ignores=[])
        exec(compile(module, str(path), "exec"), names)
    except Exception:
        return None
    return names if callable(names.get("get_pretrained_cfg")) else None


def _pretrained_cfg(model: str, tag: str) -> dict:
    """``open_clip.get_pretrained_cfg(model, tag)``, without importing open_clip."""
    table = None if "open_clip" in sys.modules else _pretrained_table()
    if table is None:
        import open_clip

        return open_clip.get_pretrained_cfg(model, tag)
    return table["get_pretrained_cfg"](model, tag)


def _preprocess_defaults() -> dict:
    """``asdict(open_clip.transform.PreprocessCfg())``, read from its file when not imported."""
    global _PREPROCESS_DEFAULTS
    transform = sys.modules.get("open_clip.transform")
    if transform is None:
        with _OPEN_CLIP_FILES_LOCK:
            if _PREPROCESS_DEFAULTS is None:
                _PREPROCESS_DEFAULTS = _read_preprocess_defaults() or {}
        if _PREPROCESS_DEFAULTS:
            return dict(_PREPROCESS_DEFAULTS)
        from open_clip import transform
    from dataclasses import asdict

    return asdict(transform.PreprocessCfg())


def _read_preprocess_defaults() -> dict | None:
    """The field defaults of ``PreprocessCfg`` in open_clip/transform.py: literals, or names
    that the module imports from open_clip/constants.py."""
    path = _open_clip_file("transform.py")
    constants = _read_python(_open_clip_file("constants.py")) if path is not None else None
    if constants is None:
        return None
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        imported = {
            alias.asname or alias.name: alias.name
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module == "constants"
            for alias in node.names
        }
        (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PreprocessCfg"]
        defaults = {}
        for node in cls.body:
            if not isinstance(node, ast.AnnAssign):
                continue
            if not isinstance(node.target, ast.Name) or node.value is None:
                return None
            if isinstance(node.value, ast.Name):
                defaults[node.target.id] = constants[imported[node.value.id]]
            else:
                defaults[node.target.id] = ast.literal_eval(node.value)
    except Exception:
        return None
    return defaults or None


def _find_checkpoint_in_dir(folder: Path) -> str | None:
    """The checkpoint open_clip loads from a ``local-dir:`` folder (its factory's
    ``_find_checkpoint_in_dir``, without importing it)."""
    open_clip = sys.modules.get("open_clip")
    if open_clip is not None:
        return open_clip.factory._find_checkpoint_in_dir(folder)
    return _checkpoint_in_dir(folder)


def _checkpoint_in_dir(folder: Path) -> str | None:
    checkpoints = [*folder.glob("*.safetensors"), *folder.glob("*.bin"), *folder.glob("*.pth")]
    if not checkpoints:
        return None
    checkpoints.sort()
    checkpoints.sort(key=lambda path: path.suffix == ".safetensors", reverse=True)
    preferred = [
        "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
        "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
        "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
    ]  # fmt: skip
    found = sorted(
        (p for p in checkpoints if p.name in preferred), key=lambda p: preferred.index(p.name)
    )
    return str(found[0] if found else checkpoints[0])


# --------------------------------------------------------------------------- architectures
def _schema(model_name: str) -> str | None:
    if model_name.startswith("hf-hub:"):
        return "hf-hub"
    if model_name.startswith("local-dir:"):
        return "local-dir"
    return None


def _unknown_model_error(model_name: str) -> ValueError:
    import open_clip

    known = open_clip.list_models()
    by_lower = {name.lower(): name for name in known}
    close = difflib.get_close_matches(model_name.lower(), list(by_lower), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(by_lower[c]) for c in close)}?" if close else ""
    return ValueError(
        f"model_name={model_name!r} is not an open_clip model.{hint} Known models: "
        f"{', '.join(known[:8])}, ... ({len(known)} in all, see open_clip.list_models()); "
        "register an architecture of your own with skicm.model_configs.register_model_config "
        "or open_clip.add_model_config (command line: --model-config FILE), or use "
        "'hf-hub:org/repo' or 'local-dir:/path/to/folder'."
    )


def _read_open_clip_config(path, model_name: str) -> tuple[dict, dict]:
    try:
        with open(path, encoding="utf-8") as file:
            config = json.load(file)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"Model {model_name!r} needs {os.fspath(path)!r}, which does not exist: a "
            f"local-dir: model is {_LOCAL_DIR_FORMAT}."
        ) from None
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{os.fspath(path)!r} (config of model {model_name!r}) is not valid JSON: {error}"
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise ValueError(
            f"{os.fspath(path)!r} (config of model {model_name!r}) has no 'model_cfg' object: "
            f"a local-dir: model is {_LOCAL_DIR_FORMAT}."
        )
    return config["model_cfg"], dict(config.get("preprocess_cfg") or {})


def _architecture(model_name: str) -> tuple[dict, dict]:
    """(open_clip model config, preprocessing config of the model's own files), no model built."""
    schema = _schema(model_name)
    if schema == "local-dir":
        folder = model_name[len("local-dir:") :]
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"model_name={model_name!r}: folder {folder!r} does not exist; a local-dir: model "
                f"is {_LOCAL_DIR_FORMAT}."
            )
        return _read_open_clip_config(os.path.join(folder, "open_clip_config.json"), model_name)
    if schema == "hf-hub":
        repo = model_name[len("hf-hub:") :]
        path = _hub_file(repo, "open_clip_config.json", model_name=model_name, what="the config")
        return _read_open_clip_config(path, model_name)
    config = _model_config(model_name.replace("/", "-"))
    if config is None:
        raise _unknown_model_error(model_name)
    return config, {}


def _check_model_name(model_name: str) -> None:
    _architecture(model_name)


# --------------------------------------------------------------------------- weights
def _random_weights_id() -> str:
    """Identity of seeded random weights (the architecture is identified apart)."""
    versions = f"open_clip{_package_version('open_clip')}:torch{_package_version('torch')}"
    return f"random:seed{RANDOM_WEIGHTS_SEED}:{versions}"


def _schema_weights_id(model_name: str) -> tuple[str, bool]:
    """(identity of the weights of an ``hf-hub:`` or ``local-dir:`` model, all files local)."""
    if model_name.startswith("local-dir:"):
        folder = model_name[len("local-dir:") :]
        checkpoint = _find_checkpoint_in_dir(Path(folder))
        identity = "no-checkpoint" if checkpoint is None else optional_file_identity(checkpoint)
        return f"local-dir:{identity}", True
    repo = model_name[len("hf-hub:") :]
    path = _cached_hub_file(repo, [_HF_SAFE_WEIGHTS_NAME, _HF_WEIGHTS_NAME])
    if path is None:
        path = _hub_file(repo, _HF_WEIGHTS_NAME, model_name=model_name, what="the weights")
    return f"hf-hub:{repo}:{optional_file_identity(path)}", True


class _Weights:
    """What ``pretrained`` resolves to, before any model is built."""

    def __init__(self, checkpoint, weights_id, tag_cfg=None, local=True):
        self.checkpoint = checkpoint  # what open_clip gets as ``pretrained``
        self.weights_id = weights_id
        self.tag_cfg = tag_cfg or {}  # open_clip's pretrained config of a tag (preprocessing)
        self.local = local  # every file the build needs is on this machine


def _tag_weights(model_name: str, tag: str, tag_cfg: dict) -> _Weights:
    """A pretrained tag: fine when its file is local; else fail fast if it cannot be fetched."""
    if tag_cfg.get("file"):
        return _Weights(tag, f"tag:{tag}", tag_cfg)
    hf_hub = tag_cfg.get("hf_hub", "")
    if hf_hub:
        repo, filename = os.path.split(hf_hub)  # as open_clip reads it: "org/repo/[file]"
        filename = filename or _HF_WEIGHTS_NAME
        # Downloaded here (once per process) so that the build takes it from the cache.
        _hub_file(repo, filename, model_name=model_name, what=f"the pretrained weights {tag!r}")
        return _Weights(tag, f"tag:{tag}", tag_cfg)
    url = tag_cfg.get("url", "")
    if url:
        filename = os.path.basename(url)
        if not os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), filename)):
            reason = _unreachable_reason(url)
            if reason is not None:
                raise OSError(
                    f"Cannot get the pretrained weights {tag!r} of model {model_name!r}: "
                    f"{reason}. " + _fetch_instructions(model_name, filename, url)
                )
            return _Weights(tag, f"tag:{tag}", tag_cfg, local=False)
    return _Weights(tag, f"tag:{tag}", tag_cfg)


def _resolve_pretrained(model_name: str, pretrained) -> _Weights:
    """What ``pretrained`` means for ``model_name``, checked without building the model."""
    if _schema(model_name) is not None:
        # open_clip takes the weights from the model's own repository or folder.
        if not (pretrained is None or pretrained == ""):
            raise ValueError(
                f"pretrained={pretrained!r} cannot be used with model_name={model_name!r}: "
                "an hf-hub: or local-dir: model takes its weights from its own repository or "
                "folder. Pass pretrained=None (or put the checkpoint into that folder)."
            )
        weights_id, local = _schema_weights_id(model_name)
        return _Weights(None, weights_id, local=local)
    if pretrained is None or pretrained == "":
        return _Weights(None, _random_weights_id())
    pretrained = os.fspath(pretrained)
    if pretrained.startswith("hf-hub:"):
        repo, _, filename = pretrained[len("hf-hub:") :].partition("@")
        path = _hub_file(
            repo,
            filename or _HF_WEIGHTS_NAME,
            model_name=model_name,
            what=f"the pretrained weights {pretrained!r}",
        )
        return _Weights(path, file_identity(path))
    tag_cfg = _pretrained_cfg(model_name.replace("/", "-"), pretrained)
    if tag_cfg:
        return _tag_weights(model_name, pretrained, tag_cfg)
    if os.path.isfile(pretrained):
        return _Weights(pretrained, file_identity(pretrained))
    if os.path.isdir(pretrained):
        raise ValueError(
            f"pretrained={pretrained!r} is a folder, not a checkpoint file. If it is "
            f"{_LOCAL_DIR_FORMAT}, pass it as the model: "
            f"CLIPEmbedder(model_name='local-dir:{pretrained}', pretrained=None) (command line: "
            f"--model-name local-dir:{pretrained} --pretrained none); else pass the checkpoint "
            "file inside it."
        )
    if os.sep in pretrained or pretrained.lower().endswith(_CHECKPOINT_SUFFIXES):
        raise FileNotFoundError(
            f"Checkpoint file {pretrained!r} (pretrained) of model {model_name!r} does not exist."
        )
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(model_name.replace("/", "-"))
    close = difflib.get_close_matches(pretrained, tags, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"pretrained={pretrained!r} is neither a pretrained tag of model {model_name!r} nor an "
        f"existing checkpoint file.{hint} Known tags: {tags or 'none'}; None gives random "
        "weights."
    )


def _preprocess_config(model_cfg: dict, own_preprocess: dict, tag_cfg: dict) -> dict:
    """The preprocessing open_clip will build, as its factory derives it (no model built)."""
    defaults = _preprocess_defaults()
    # open_clip.transform.merge_preprocess_dict: known keys only, None never overrides.
    preprocess = dict(defaults)
    for overlay in (own_preprocess, tag_cfg):
        preprocess.update(
            (key, value) for key, value in (overlay or {}).items()
            if key in defaults and value is not None
        )  # fmt: skip
    size = (model_cfg.get("vision_cfg") or {}).get("image_size")
    if size is not None:
        preprocess["size"] = list(size) if isinstance(size, (list, tuple)) else [size, size]
    return {
        key: list(value) if isinstance(value, tuple) else value for key, value in preprocess.items()
    }


class _ModelSpec:
    """Everything that identifies an open_clip model, found without building it."""

    def __init__(self, model_name: str, pretrained):
        if _schema(model_name) is not None and not (pretrained is None or pretrained == ""):
            _resolve_pretrained(model_name, pretrained)  # raises: says why, before any download
        model_cfg, own_preprocess = _architecture(model_name)
        self.model_name = model_name
        self.model_cfg = model_cfg
        self.weights = _resolve_pretrained(model_name, pretrained)
        self.preprocess = _preprocess_config(model_cfg, own_preprocess, self.weights.tag_cfg)
        self.identity = {
            "architecture": digest(model_cfg),
            "weights": self.weights.weights_id,
            "preprocess": self.preprocess,
        }

    def description(self, pretrained) -> str:
        if self.weights.checkpoint is not None and os.path.isfile(str(self.weights.checkpoint)):
            return f"checkpoint {self.weights.checkpoint!r} of open_clip model {self.model_name!r}"
        if pretrained:
            return f"open_clip model {self.model_name!r} with pretrained={pretrained!r}"
        return f"open_clip model {self.model_name!r}"


def _load_model(model_name: str, pretrained, device: str) -> LoadedEncoder:
    """Load (or fetch from the process-level cache) a model with its preprocessing."""
    resolved_device = resolve_device(device)
    spec = _ModelSpec(model_name, pretrained)
    cache_key = ("open_clip", model_name, digest(spec.identity), str(resolved_device))
    return cached_model(cache_key, lambda: _build_model(spec, pretrained, resolved_device))


def _build_model(spec: _ModelSpec, pretrained, device) -> LoadedEncoder:
    import open_clip
    import torch

    model_name, checkpoint = spec.model_name, spec.weights.checkpoint
    offline = _hub_offline() if spec.weights.local else contextlib.nullcontext()
    try:
        with offline, torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=checkpoint, device="cpu", weights_only=True
            )
    except RuntimeError as error:
        message = str(error)
        if "download" in message.lower() or "hf hub" in message.lower():
            raise OSError(
                f"Cannot download pretrained weights {checkpoint!r} of model {model_name!r}: "
                f"{message}. " + _fetch_instructions(model_name, _HF_WEIGHTS_NAME, "the Hub")
            ) from error
        if checkpoint is not None and os.path.isfile(checkpoint):
            raise ValueError(
                f"Cannot load checkpoint {checkpoint!r} into model {model_name!r}: {message}"
            ) from error
        raise ValueError(f"Cannot create open_clip model {model_name!r}: {message}") from error
    except Exception as error:
        if checkpoint is not None and os.path.isfile(checkpoint):
            raise ValueError(
                f"Cannot load checkpoint {checkpoint!r} into model {model_name!r}: "
                f"{type(error).__name__}: {error}"
            ) from error
        raise
    description = spec.description(pretrained)
    check_finite_weights(model, description)
    model = model.to(device).eval().requires_grad_(False)
    pil_transform, mean, std = split_preprocess(preprocess)
    if pil_transform is None:  # unusual preprocessing: run all of it where images are decoded
        pil_transform, mean, std = preprocess, None, None
    image_size = model.visual.image_size
    image_size = image_size if isinstance(image_size, tuple) else (image_size, image_size)
    with torch.inference_mode():
        probe = model.encode_image(torch.zeros(1, 3, *image_size, device=device))
    return LoadedEncoder(
        model=model,
        device=device,
        embed_dim=int(probe.shape[-1]),
        pil_transform=pil_transform,
        mean=None if mean is None else torch.tensor(mean, device=device).view(1, 3, 1, 1),
        std=None if std is None else torch.tensor(std, device=device).view(1, 3, 1, 1),
        encode_image=model.encode_image,
        description=description,
        weights_id=spec.weights.weights_id,
        preprocess_repr=repr(preprocess),
        tokenizer=open_clip.get_tokenizer(model_name),
        extra={"identity": spec.identity},
    )


def _registered_config(model_name) -> dict | None:
    """The open_clip config registered under ``model_name`` in this process, if any."""
    from skicm.model_configs import registered_model_config

    if not isinstance(model_name, str) or _schema(model_name) is not None:
        return None
    name = model_name.replace("/", "-")
    open_clip = sys.modules.get("open_clip")
    if open_clip is None:  # then only skicm can have registered one (or a built-in is meant)
        return registered_model_config(name)
    return open_clip.get_model_config(name)


class CLIPEmbedder(_BaseImageEmbedder):
    """Encode images with an open_clip model: a stateless scikit-learn transformer.

    ``transform`` maps images to CLIP image embeddings, in batches on the accelerator, with image
    decoding and preprocessing in DataLoader worker processes that overlap the forward pass (on
    the CPU, where the forward pass occupies every core, in this process between passes).
    Embeddings already computed (by this or any clone, or by another process sharing an on-disk
    store) are looked up instead of recomputed, so a grid search over a pipeline that starts with
    a ``CLIPEmbedder`` passes each distinct image through the image tower once (within one
    process: with process-based ``n_jobs>1`` workers, give ``store`` an SQLite file path).

    Parameters
    ----------
    model_name : str, default="ViT-B-32"
        open_clip architecture (see ``open_clip.list_models()``), including architectures
        registered at run time with ``open_clip.add_model_config``, or an ``"hf-hub:org/repo"``
        or ``"local-dir:/path"`` model identifier.

    pretrained : str, os.PathLike or None, default="openai"
        Weights: an open_clip pretrained tag of ``model_name``, the path of a local checkpoint
        file (loaded with ``torch.load(weights_only=True)``), ``"hf-hub:org/repo"`` (optionally
        ``"hf-hub:org/repo@file.bin"``), or None for random weights (seeded, hence identical in
        every process; for tests and speed measurements). Must be None (or "") when
        ``model_name`` is an ``hf-hub:`` or ``local-dir:`` identifier, which brings its own
        weights.

    device : str, default="auto"
        Torch device; ``"auto"`` picks CUDA when available, else the CPU.

    batch_size : int or "auto", default="auto"
        Images (or texts) per forward pass. ``"auto"`` chooses per device: 32 on the CPU
        (larger batches are slower there), 256 on CUDA.

    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Autocast dtype of the forward pass; ``"auto"`` is bf16 on CUDA (fp16 where bf16 is not
        supported) and fp32 on the CPU. Embeddings are returned as float32 in every case.

    num_workers : int or "auto", default="auto"
        DataLoader worker processes that decode and preprocess images while the forward pass
        runs. 0: in this process, one batch at a time between forward passes, split across
        ``torch.get_num_threads()`` threads. ``"auto"`` uses ``min(8, cpu_count - 1)`` workers
        with a CUDA device, and 0 on the CPU (whose cores the forward pass already keeps busy:
        a concurrent worker slows it more than it saves) or when a single batch is encoded.

    decoder : {"auto", "torchvision", "pil"}, default="auto"
        How images are decoded and resized. ``"pil"``: with Pillow, exactly as open_clip's
        preprocessing. ``"torchvision"``: JPEG files are decoded by
        ``torchvision.io.decode_jpeg`` (libjpeg-turbo in the workers on the CPU, nvjpeg on a
        CUDA device, where the resize runs too) and every image is resized by the factory's own
        Resize and CenterCrop applied to a uint8 tensor, about twice as fast as Pillow on the CPU;
        the pixels differ from Pillow's by resampling noise (about one grey level). ``"auto"``
        is ``"torchvision"``. The decoders keep separate entries in the store.

    decode : {"reduced", "full"}, default="reduced"
        The scale at which JPEG files are decoded. ``"reduced"``: a JPEG file larger than the
        preprocessing needs is decoded at 1/2, 1/4 or 1/8 of its size by libjpeg's DCT scaling
        (Pillow's draft mode), the largest reduction that keeps it 3 times as large as the
        preprocessing's first resize makes it (the shortest side for ``Resize`` +
        ``CenterCrop``); a 2048x1536 photo for a 224-pixel model is decoded at 1024x768, about
        twice as fast, the embedding nearly the same (cosine >= 0.999 to the full decode's).
        Smaller files, other formats, PIL images and arrays are decoded exactly as with
        ``"full"``. With a CUDA device and ``decoder="torchvision"``, JPEG files that can be
        reduced are decoded so on the CPU, the others on the device. ``"full"``: every file is
        decoded at its full size. The two keep separate entries in the store.

    normalize : bool, default=True
        Scale every embedding (image and text) to unit Euclidean norm, as CLIP's similarity does.

    store : "memory", str, os.PathLike, EmbeddingStore or None, default="memory"
        Where computed embeddings are kept: ``"memory"`` for the process-level cache
        (:func:`skicm.store.default_memory_store`), a file path for a persistent SQLite store
        (:class:`skicm.store.SQLiteStore`; a killed run resumes from it and other processes
        reuse it), any :class:`skicm.store.EmbeddingStore` instance, None to recompute every
        time. Text embeddings are cached in memory in every case (see :meth:`encode_text`).

    progress : bool, default=True
        Show a tqdm progress bar while encoding more than one batch.

    Attributes
    ----------
    embed_dim_ : int
        Width of the embeddings (from the architecture's config when it says).

    has_text_tower : bool
        True: :meth:`encode_text` embeds texts (zero-shot, text interventions).

    See Also
    --------
    skicm.store.SQLiteStore : The persistent embedding store.
    skicm.InvariantProjector : The projection usually fitted on these embeddings.

    Notes
    -----
    The estimator holds its parameters only: pickles and clones never contain model weights. A
    pickle does carry the open_clip config of an architecture registered at run time (with
    :func:`skicm.model_configs.register_model_config`, ``open_clip.add_model_config`` or the
    command line's ``--model-config``), which unpickling registers, so that process-based
    workers (``GridSearchCV(n_jobs=2)``) know it. Models live in a process-level cache keyed by
    the architecture's config, the weights, the preprocessing and the device; the store
    namespace (:meth:`store_namespace`) is keyed the same way plus precision and decoder. A
    store that holds every requested image answers without loading the model.

    Weights are checked before use: a model with NaN or infinite weights, or one whose forward
    pass gives a non-finite embedding, raises a ValueError naming the checkpoint; nothing
    non-finite is stored or returned. Pretrained weights that are not on this machine and cannot
    be downloaded (offline) fail within seconds, with one message naming the file to fetch and
    the ways to pass it.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm import CLIPEmbedder
    >>> from skicm.model_configs import register_tiny_clip
    >>> embedder = CLIPEmbedder(model_name=register_tiny_clip(), pretrained=None, device="cpu")
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 48, 64, 3), dtype=np.uint8)
    >>> Z = embedder.fit_transform(images)
    >>> Z.shape, Z.dtype
    ((4, 32), dtype('float32'))
    >>> bool(np.allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-5))
    True
    >>> embedder.encode_text(["a photo of a dog", "a photo of a cat"]).shape
    (2, 32)
    >>> embedder.get_feature_names_out()[:2]
    array(['clipembedder0', 'clipembedder1'], dtype=object)
    """

    has_text_tower: ClassVar[bool] = True
    _progress_label: ClassVar[str] = "CLIP image embeddings"

    _parameter_constraints: ClassVar[dict] = {
        "model_name": [str],
        "pretrained": [str, os.PathLike, None],
        **_BaseImageEmbedder._parameter_constraints,
    }

    def __init__(
        self,
        model_name="ViT-B-32",
        pretrained="openai",
        *,
        device="auto",
        batch_size="auto",
        precision="auto",
        num_workers="auto",
        decoder="auto",
        decode="reduced",
        normalize=True,
        store="memory",
        progress=True,
    ):
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self.num_workers = num_workers
        self.decoder = decoder
        self.decode = decode
        self.normalize = normalize
        self.store = store
        self.progress = progress

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        state = super().__getstate__()
        # An architecture registered at run time (open_clip.add_model_config, --model-config,
        # register_tiny_clip) exists only in this process: its config travels with the pickle,
        # so that process-based workers (GridSearchCV(n_jobs=2), joblib/loky) know it too.
        config = _registered_config(self.model_name)
        if config is not None:
            state = {**state, "_open_clip_model_config": config}
        return state

    def __setstate__(self, state):
        state = dict(state)
        config = state.pop("_open_clip_model_config", None)
        super().__setstate__(state)
        if config is not None:
            from skicm.model_configs import register_model_config

            register_model_config(self.model_name.replace("/", "-"), config)

    # ------------------------------------------------------------------ texts
    def encode_text(self, texts):
        """Embed texts with the text tower of the same model.

        Texts encoded before in this process, by this embedder or any other with the same model,
        weights and precision, are answered from a process-level cache (cleared by
        :func:`clear_text_cache`); only the others go through the text tower.

        Parameters
        ----------
        texts : str or sequence of str
            Texts (prompts); a single string gives one row.

        Returns
        -------
        T : ndarray of shape (n_texts, embed_dim), dtype float32
            Text embeddings, rows in the order of ``texts``, unit-norm when ``normalize=True``
            (as the image embeddings).
        """
        self._validate_params()
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("encode_text needs at least one text; got an empty sequence.")
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if bad:
            raise ValueError(
                f"encode_text takes strings; items {bad[:10]} are "
                f"{sorted({type(texts[i]).__name__ for i in bad})}."
            )
        loaded = self._loaded_model()
        cache = _text_cache()
        namespace = self._text_namespace(loaded)
        vectors = cache.get_many(namespace, texts)
        todo = [text for text in dict.fromkeys(texts) if text not in vectors]
        if todo:
            fresh = dict(zip(todo, self._encode_texts(loaded, todo)))
            cache.put_many(namespace, fresh)
            vectors.update(fresh)
        T = np.stack([vectors[text] for text in texts]).astype(np.float32, copy=False)
        return self._normalized(T)

    @property
    def embed_dim_(self) -> int:
        """Width of the embeddings (from the model config, else from the loaded model)."""
        config, _ = _architecture(self.model_name)
        if "embed_dim" in config:
            return int(config["embed_dim"])
        return self._loaded_model().embed_dim

    # ------------------------------------------------------------------ internals
    def _loaded_model(self) -> LoadedEncoder:
        return _load_model(self.model_name, self.pretrained, self.device)

    def _identity(self) -> tuple[str, dict]:
        spec = _ModelSpec(self.model_name, self.pretrained)
        return self.model_name, {"model": self.model_name, **spec.identity}

    def _text_namespace(self, loaded) -> str:
        """Text cache namespace: everything besides the text that determines its embedding."""
        tokenizer = loaded.tokenizer
        identity = loaded.extra["identity"]
        spec = {
            "model": self.model_name,
            "architecture": identity["architecture"],
            "weights": identity["weights"],
            "precision": str(autocast_dtype(self.precision, loaded.device) or "fp32"),
            "tokenizer": type(tokenizer).__qualname__,
            "tokenizer_name": str(getattr(tokenizer, "tokenizer_name", "")),
            "context_length": getattr(tokenizer, "context_length", None),
        }
        return f"text:{self.model_name}:{digest(spec)}"

    def _encode_texts(self, loaded, texts) -> np.ndarray:
        """Raw (unnormalised) embeddings of ``texts`` through the text tower, in batches."""
        import torch

        autocast = self._autocast(loaded.device)
        batch_size = self._batch_size(loaded.device)
        parts = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = loaded.tokenizer(texts[start : start + batch_size])
                with autocast:
                    out = loaded.model.encode_text(tokens.to(loaded.device))
                parts.append(out.float().cpu().numpy())
        T = np.concatenate(parts).astype(np.float32, copy=False)
        if not np.isfinite(T).all():
            raise ValueError(
                f"{loaded.description} gave non-finite text embeddings (NaN or infinity); "
                "nothing was cached. Check the checkpoint's weights."
            )
        return T


def _common_check_instance() -> CLIPEmbedder:
    """A CLIPEmbedder on the tiny random-weight model, for sklearn's common estimator checks."""
    from skicm.model_configs import register_tiny_clip

    return CLIPEmbedder(
        model_name=register_tiny_clip(),
        pretrained=None,
        device="cpu",
        batch_size=8,
        num_workers=0,
        progress=False,
    )
