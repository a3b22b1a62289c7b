"""The invariant projector fitted from shards: statistics per shard on Ray tasks, then merged."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from sklearn.base import clone

from skicm.distributed._shards import (
    _embedding_matrix,
    _present_columns,
    _read_shard,
    read_manifest,
    shard_paths,
)

__all__ = ["fit_projector_from_shards", "shard_statistics"]


def shard_statistics(path, *, normalize=True, use_domains=True):
    """:class:`~skicm.InterventionStatistics` of one shard (memory: the shard and d^2 floats).

    Parameters
    ----------
    path : str or path-like
        A shard written by :func:`skicm.distributed.embed_collection`.
    normalize : bool, default=True
        Unit-normalise the embeddings first (as :func:`load_embeddings` does by default).
    use_domains : bool, default=True
        Add per-(label, domain) sums when the shard has ``label`` and ``domain`` columns, so
        that class-conditional environment differences enter the fit (``groups=domains``).

    Returns
    -------
    statistics : InterventionStatistics
        Sums over the shard's rows.
    labels : list
        Distinct labels of the shard (empty when it has none).

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
    >>> statistics, labels = shard_statistics(result.shards[0])
    >>> statistics.n_samples, statistics.gram.shape, labels
    (3, (32, 32), [])
    """
    from skicm.projection import InterventionStatistics

    present = _present_columns(path, ["embedding", "label", "domain"])
    table = _read_shard(path, present)
    X = _embedding_matrix(table.column("embedding"))
    if normalize:
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), np.finfo(np.float32).tiny)
    statistics = InterventionStatistics(X.shape[1])
    statistics.add_samples(X)
    labels = []
    if "label" in present:
        label_values = np.asarray(table.column("label").to_pylist())
        labels = np.unique(label_values).tolist()
        if use_domains and "domain" in present:
            domains = np.asarray(table.column("domain").to_pylist())
            statistics.add_environments(X, label_values, domains)
    return statistics, labels


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
        merged, labels = None, set()
        # Merged in shard order (each result waits for the earlier ones), so that the sums are
        # added in the same order on every run: the result does not depend on scheduling.
        # Arrays fetched from the object store are read-only: merge into fresh statistics.
        for ref in pending:
            statistics, shard_labels = ray.get(ref)
            if merged is None:
                merged = InterventionStatistics(statistics.n_features)
            merged.merge(statistics)
            labels.update(shard_labels)
        return merged, labels
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

    folders = [out] if isinstance(out, (str, os.PathLike)) else list(out)
    namespaces = {str(folder): (read_manifest(folder) or {}).get("namespace") for folder in folders}
    if len(set(namespaces.values())) > 1:
        raise ValueError(f"The folders hold embeddings of different models: {namespaces}.")
    paths = [path for folder in folders for path in shard_paths(folder)]
    if not paths:
        raise ValueError(f"{[str(Path(f)) for f in folders]} hold no finished shard to fit on.")
    if engine not in ("ray", "local"):
        raise ValueError(f"engine must be 'ray' or 'local', got {engine!r}.")
    if engine == "ray":
        statistics, labels = _merged_statistics(paths, normalize, use_domains, address)
    else:
        statistics, labels = None, set()
        for path in paths:
            shard, shard_labels = shard_statistics(
                path, normalize=normalize, use_domains=use_domains
            )
            statistics = shard if statistics is None else statistics.merge(shard)
            labels.update(shard_labels)
    projector = clone(projector) if projector is not None else InvariantProjector()
    return _solve_from_statistics(projector, statistics, labels)


def _solve_from_statistics(projector, statistics, labels):
    """Set ``projector``'s fitted state from merged statistics, as its ``fit`` would.

    InvariantProjector has no public method taking statistics yet, so this follows the last
    steps of its ``fit`` (after the statistics of the data are formed) through its private
    solver; ``tests/test_distributed.py`` checks the result equals a plain ``fit``.
    """
    from skicm.projection import _as_key

    projector._validate_params()
    n_features = statistics.n_features
    if isinstance(projector.n_components, int) and projector.n_components > n_features:
        raise ValueError(
            f"n_components={projector.n_components} must be between 1 and n_features={n_features}."
        )
    labels_seen = {_as_key(label) for label in labels}
    extra = [statistics.environment_differences()]
    if projector.interventions is not None:
        extra.append(projector._intervention_differences(labels_seen))
    projector.n_features_in_ = n_features
    projector._solve(statistics, extra, dtype=np.float32)
    projector.statistics_, projector._labels_seen = statistics, labels_seen
    return projector
