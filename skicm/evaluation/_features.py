"""Data preparation: features (embedded once), counterparts, labels and domains of a data set."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.utils.validation import check_consistent_length

_COUNTERPART_CHUNK = 256  # images made and embedded at a time (memory stays bounded)


@dataclass
class _Features:
    X: np.ndarray
    y: np.ndarray
    domains: np.ndarray
    X_intervened: np.ndarray | None
    class_names: list | None


def _field(data, *names):
    for name in names:
        if name in data:
            return data[name]
    return None


def _prepare_features(data, embedder, *, want_image, intervention_seed, progress):
    """Embeddings (or raw features), counterparts, labels and domains of one data set."""
    if not isinstance(data, Mapping):
        raise ValueError(
            "data must be a Bunch (e.g. from skicm.datasets.load_image_folders or "
            f"make_colored_mnist) or a callable returning one, got {type(data).__name__}."
        )
    y = _field(data, "target")
    domains = _field(data, "domains", "environments")
    if y is None or domains is None:
        raise ValueError(
            f"data must hold 'target' and 'domains' (or 'environments'); it has {sorted(data)}."
        )
    y, domains = np.asarray(y), np.asarray(domains).astype(str)
    class_names = _field(data, "target_names")
    class_names = None if class_names is None else [str(name) for name in class_names]
    if embedder is None:
        X = _field(data, "data")
        if X is None:
            raise ValueError(
                "without an embedder, data must hold features in 'data' (e.g. pixels from "
                f"make_colored_mnist); it has {sorted(data)}. Pass embedder= to embed images."
            )
        X = np.asarray(X)
        X_intervened = _field(data, "data_intervened")
        X_intervened = None if X_intervened is None else np.asarray(X_intervened)
    else:
        inputs = _field(data, "paths", "images")
        if inputs is None:
            raise ValueError(
                f"to embed, data must hold images in 'paths' or 'images'; it has {sorted(data)}."
            )
        X = np.asarray(embedder.transform(inputs))
        X_intervened = None
        counterparts = _field(data, "images_intervened")
        if counterparts is not None:
            X_intervened = np.asarray(embedder.transform(counterparts))
        elif want_image:
            X_intervened = _embed_image_interventions(
                embedder, inputs, seed=intervention_seed, progress=progress
            )
    check_consistent_length(X, y, domains)
    if X_intervened is not None and X_intervened.shape != X.shape:
        raise ValueError(
            f"the counterparts have shape {X_intervened.shape} but the features {X.shape}; "
            "row i of the counterparts must be the intervened version of row i."
        )
    return _Features(X, y, domains, X_intervened, class_names)


def _embed_image_interventions(embedder, inputs, *, seed, progress):
    """Embed one intervened counterpart (the paper's seven interventions) of every image.

    Counterparts are made and embedded a chunk at a time, so memory stays bounded on large
    folders; each chunk gets its own seed derived from ``seed``, so the counterparts (and
    therefore their keys in an embedding store) are the same in every run.
    """
    from sklearn.base import clone

    from skicm.interventions import ImageInterventions

    quiet = clone(embedder)
    if "progress" in quiet.get_params():
        quiet.set_params(progress=False)
    blocks = []
    bar = _progress(total=len(inputs), desc="embedding image interventions", enabled=progress)
    for start in range(0, len(inputs), _COUNTERPART_CHUNK):
        chunk = inputs[start : start + _COUNTERPART_CHUNK]
        interventions = ImageInterventions(random_state=np.random.RandomState([seed, start]))
        blocks.append(np.asarray(quiet.transform(interventions.apply(chunk))))
        bar.update(len(chunk))
    bar.close()
    return np.concatenate(blocks)


def _progress(*, total, desc, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)
