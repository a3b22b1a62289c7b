"""The invariant projector fitted from shards: statistics per shard on Ray tasks, then merged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from sklearn.base import clone

from skicm.distributed._shards import (
    MANIFEST_NAME,
    embedding_matrix,
    iter_shards,
    open_shard,
    read_columns,
    require_manifest,
    shard_identity,
)

__all__ = ["fit_projector_from_shards", "shard_statistics"]


def shard_statistics(path, *, normalize=True, use_domains=True):
    """:class:`~skicm.InterventionStatistics` of one shard (memory: the shard and d^2 floats).

    The shard is checked against the ``manifest.json`` of its folder first (model identity,
    width and dtype, as every reader of shards does).

    Parameters
    ----------
    path : str or path-like
        A shard written by :func:`skicm.distributed.embed_collection`, in its folder.
    normalize : bool, default=True
        Unit-normalise the embeddings first (as :func:`load_embeddings` does by default).
    use_domains : bool, default=True
        Add per-(label, domain) sums when the shard has ``label`` and ``domain`` columns, so
        that class-conditional environment differences enter the fit (``groups=domains``).

    Returns
    -------
    statistics : InterventionStatistics
        Sums over the shard's rows; its ``labels`` are the distinct labels of the shard
        (empty when it has none).

    Raises
    ------
    ValueError
        If the shard has no manifest beside it, cannot be read, or was written by another
        model than the manifest's (the error names the shard).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skicm.distributed import embed_collection, shard_statistics
    >>> from skicm.model_configs import register_tiny_clip
    >>> folder = Path(tempfile.mkdtemp())
    >>> for i in range(3):
    ...     Image.new("RGB", (16, 16), (80 * i, 0, 0)).save(folder / f"{i}.png")
    >>> out = Path(tempfile.mkdtemp()) / "embeddings"
    >>> result = embed_collection(folder, out, model_name=register_tiny_clip(), pretrained=None,
    ...                           device="cpu", progress=False)
    >>> statistics = shard_statistics(result.shards[0])
    >>> statistics.n_samples, statistics.gram.shape, statistics.labels
    (3, (32, 32), set())
    """
    from skicm.projection import InterventionStatistics

    path = Path(path)
    folder = path.parent
    if not (folder / MANIFEST_NAME).exists():
        raise ValueError(
            f"The shard {str(path)!r} has no {MANIFEST_NAME} beside it: a shard is read only in "
            "the folder that skicm embed wrote it to, whose manifest names its model."
        )
    file, _ = open_shard(path, require_manifest(folder))
    with file:
        table = read_columns(path, file, ["embedding", "label", "domain"])
    X = embedding_matrix(table.column("embedding"))
    if normalize:
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), np.finfo(np.float32).tiny)
    statistics = InterventionStatistics(X.shape[1])
    statistics.add_samples(X)
    if "label" in table.column_names:
        labels = np.asarray(table.column("label").to_pylist())
        statistics.add_labels(labels)
        if use_domains and "domain" in table.column_names:
            domains = np.asarray(table.column("domain").to_pylist())
            statistics.add_environments(X, labels, domains)
    return statistics


def _merged_statistics(paths, normalize, use_domains, address):
    """Statistics of every shard on Ray tasks, merged on the driver as they arrive."""
    import ray

    from skicm.projection import InterventionStatistics

    started = False
    if not ray.is_initialized():
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False)
            started = True
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(shard_statistics)
        pending = [
            task.remote(str(path), normalize=normalize, use_domains=use_domains) for path in paths
        ]
        merged = None
        # Merged in shard order (each result waits for the earlier ones), so that the sums are
        # added in the same order on every run: the result does not depend on scheduling.
        # Arrays fetched from the object store are read-only: merge into fresh statistics.
        for ref in pending:
            statistics = ray.get(ref)
            if merged is None:
                merged = InterventionStatistics(statistics.n_features)
            merged.merge(statistics)
        return merged
    finally:
        if started:
            ray.shutdown()


def fit_projector_from_shards(
    out, projector=None, *, normalize=True, use_domains=True, engine="ray", address=None
):
    """Fit an :class:`~skicm.InvariantProjector` on every embedding of ``out``, shard by shard.

    Each shard's :class:`~skicm.InterventionStatistics` is computed by its own Ray task (memory
    per worker: one shard plus ``d^2`` floats), the statistics are merged on the driver and the
    projector is solved once: the same projector as ``fit(Z, labels, groups=domains)`` on all
    rows at once, without ever holding all rows in one memory.

    Parameters
    ----------
    out : str, path-like or sequence of them
        Output folder(s) of :func:`skicm.distributed.embed_collection` (several folders of one
        model, e.g. one per part of a very large collection, are fitted on together).
    projector : InvariantProjector, default=None
        Unfitted projector with its parameters (cloned); None for the defaults.
    normalize : bool, default=True
        Unit-normalise the embeddings (as :func:`load_embeddings` does by default).
    use_domains : bool, default=True
        Use the ``label`` and ``domain`` columns as environment labels (differences between
        class-conditional domain means), as ``fit(..., groups=domains)`` does.
    engine : {"ray", "local"}, default="ray"
        ``"ray"``: one task per shard on a Ray cluster; ``"local"``: shard after shard in
        this process (same result).
    address : str, default=None
        Ray cluster to attach to; None uses the instance already started in this process or
        starts a local one.

    Returns
    -------
    projector : InvariantProjector
        The fitted projector.

    Raises
    ------
    ValueError
        If a folder has no manifest or no shard, the folders hold embeddings of different
        models, or a shard is unreadable or was written by another model than its folder's
        (checked for every shard before any task starts; the error names the shard).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from skicm import InvariantProjector
    >>> from skicm.distributed import embed_collection, fit_projector_from_shards
    >>> from skicm.model_configs import register_tiny_clip
    >>> root = Path(tempfile.mkdtemp())
    >>> for d, domain in enumerate(["photo", "sketch"]):
    ...     for c, label in enumerate(["cat", "dog"]):
    ...         (root / domain / label).mkdir(parents=True)
    ...         for i in range(2):
    ...             colour = (100 * d + 20 * i, 120 * c, 60)
    ...             Image.new("RGB", (16, 16), colour).save(root / domain / label / f"{i}.png")
    >>> out = Path(tempfile.mkdtemp()) / "embeddings"
    >>> _ = embed_collection(root, out, model_name=register_tiny_clip(), pretrained=None,
    ...                      device="cpu", shard_size=3, progress=False)
    >>> projector = fit_projector_from_shards(out, InvariantProjector(n_components=4),
    ...                                       engine="local")
    >>> projector.components_.shape, projector.n_samples_seen_
    ((4, 32), 8)
    """
    from skicm.projection import InvariantProjector

    folders = [Path(out)] if isinstance(out, (str, os.PathLike)) else [Path(f) for f in out]
    if engine not in ("ray", "local"):
        raise ValueError(f"engine must be 'ray' or 'local', got {engine!r}.")
    identities = {str(folder): shard_identity(require_manifest(folder)) for folder in folders}
    if len({json.dumps(identity, sort_keys=True) for identity in identities.values()}) > 1:
        raise ValueError(
            "The folders hold embeddings of different models (their manifests say "
            + "; ".join(f"{folder}: {identity}" for folder, identity in identities.items())
            + "); fit on the folders of one model."
        )
    paths = []
    for folder in folders:
        # Every shard is checked on the driver (footers only) before any task starts, so that
        # a bad shard fails here with its name, not inside a Ray task.
        paths.extend(path for path, _ in iter_shards(folder, require_manifest(folder)))
    if not paths:
        raise ValueError(f"{[str(f) for f in folders]} hold no finished shard to fit on.")
    if engine == "ray":
        statistics = _merged_statistics(paths, normalize, use_domains, address)
    else:
        statistics = None
        for path in paths:
            shard = shard_statistics(path, normalize=normalize, use_domains=use_domains)
            statistics = shard if statistics is None else statistics.merge(shard)
    projector = clone(projector) if projector is not None else InvariantProjector()
    return projector.fit_from_statistics(statistics)
