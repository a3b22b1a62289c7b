"""Data preparation: features (embedded once), counterparts, labels and domains of a data set."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.utils.validation import check_consistent_length

_COUNTERPART_CHUNK = 256  # images made and embedded at a time (memory stays bounded)


#: Names of each field of a data set, in the order they are looked for: the one Bunch
#: convention of :mod:`skicm.datasets` first (scikit-learn's names), then the names data sets
#: used before it (``X`` / ``y`` / ``X_intervened`` of make_linear_scm, ``domains`` of
#: load_image_folders, ``environment`` of make_colored_digits).
FIELDS = {
    "features": ("data", "X"),
    "target": ("target", "y"),
    "environments": ("environments", "domains", "environment"),
    "features_intervened": ("data_intervened", "X_intervened"),
    "images": ("paths", "images"),
    "images_intervened": ("images_intervened",),
    "class_names": ("target_names",),
}


@dataclass
class _Features:
    X: np.ndarray
    y: np.ndarray
    domains: np.ndarray
    X_intervened: np.ndarray | None
    class_names: list | None


def _field(data, kind):
    for name in FIELDS[kind]:
        if name in data and data[name] is not None:
            return data[name]
    return None


def _names(kind):
    names = FIELDS[kind]
    return f"'{names[0]}'" + (f" (or {', '.join(map(repr, names[1:]))})" if names[1:] else "")


@dataclass
class _DataSet:
    """A data set read without embedding anything: what the options are checked against."""

    data: Mapping
    y: np.ndarray
    domains: np.ndarray
    class_names: list | None
    embed: bool  # features come from the embedder (else the data's own features)
    n_features: int | None  # known before embedding for raw features
    has_counterparts: bool  # counterpart features or images in the data


def _read_data(data, embedder):
    """Labels, domains and what the data hold, checked, without a forward pass."""
    if not isinstance(data, Mapping):
        raise ValueError(
            "data must be a Bunch (e.g. from skicm.datasets.load_image_folders or "
            f"make_colored_mnist) or a callable returning one, got {type(data).__name__}."
        )
    y, domains = _field(data, "target"), _field(data, "environments")
    if y is None or domains is None:
        raise ValueError(
            f"data must hold labels in {_names('target')} and the domain of each row in "
            f"{_names('environments')}; it has {sorted(data)}."
        )
    y, domains = np.asarray(y), np.asarray(domains).astype(str)
    if domains.ndim != 1:
        raise ValueError(f"data's domains must be one-dimensional, got shape {domains.shape}.")
    class_names = _field(data, "class_names")
    class_names = None if class_names is None else [str(name) for name in class_names]
    if embedder is None:
        X = _field(data, "features")
        if X is None:
            raise ValueError(
                f"without an embedder, data must hold features in {_names('features')} (e.g. "
                f"pixels from make_colored_mnist); it has {sorted(data)}. Pass embedder= to "
                "embed images."
            )
        X = np.asarray(X)
        counterparts = _field(data, "features_intervened")
        check_consistent_length(X, y, domains)
        if counterparts is not None and np.shape(counterparts) != X.shape:
            raise ValueError(
                f"the counterparts have shape {np.shape(counterparts)} but the features "
                f"{X.shape}; row i of the counterparts must be the intervened version of row i."
            )
        n_features = X.shape[1] if X.ndim == 2 else None
        return _DataSet(data, y, domains, class_names, False, n_features, counterparts is not None)
    inputs = _field(data, "images")
    if inputs is None:
        raise ValueError(
            f"to embed, data must hold images in {_names('images')}; it has {sorted(data)}."
        )
    check_consistent_length(inputs, y, domains)
    counterparts = _field(data, "images_intervened")
    if counterparts is not None:
        check_consistent_length(inputs, counterparts)
    return _DataSet(data, y, domains, class_names, True, None, counterparts is not None)


def _prepare_features(dataset, embedder, *, want_image, intervention_seed, progress):
    """Embeddings (or raw features) and counterparts of a data set read by :func:`_read_data`."""
    data = dataset.data
    if not dataset.embed:
        X = np.asarray(_field(data, "features"))
        X_intervened = _field(data, "features_intervened")
        X_intervened = None if X_intervened is None else np.asarray(X_intervened)
    else:
        inputs = _field(data, "images")
        X = np.asarray(embedder.transform(inputs))
        X_intervened = None
        counterparts = _field(data, "images_intervened")
        if counterparts is not None:
            X_intervened = np.asarray(embedder.transform(counterparts))
        elif want_image:
            X_intervened = _embed_image_interventions(
                embedder, inputs, seed=intervention_seed, progress=progress
            )
    if X.ndim != 2:
        raise ValueError(f"the features must be a 2-D array (rows, features), got {X.shape}.")
    if X_intervened is not None and X_intervened.shape != X.shape:
        raise ValueError(
            f"the counterparts have shape {X_intervened.shape} but the features {X.shape}; "
            "row i of the counterparts must be the intervened version of row i."
        )
    return _Features(X, dataset.y, dataset.domains, X_intervened, dataset.class_names)


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


def _data_params(features, rows, names):
    params = {}
    if "X_intervened" in names:
        params["X_intervened"] = features.X_intervened[rows]
    if "groups" in names:
        params["groups"] = features.domains[rows]
    return params


def _fit(estimator, features, rows, kind):
    """Fit a projector of ``kind`` (or an estimator asking for nothing) on ``rows``."""
    names = {"image": ("X_intervened",), "groups": ("groups",)}.get(kind, ())
    return _fit_with(estimator, features, rows, names)


def _fit_with(estimator, features, rows, names):
    """Fit on ``rows`` with the fit parameters ``names`` (the rows' counterparts or domains).

    The fits' expected warnings (a fold without interventional data of a kind, a projector
    asked for every direction keeping the data's rank) are silenced once around the whole
    grid, by the protocol's grid context: ``warnings.catch_warnings`` is not thread-safe, and
    the candidates are fitted on threads.
    """
    return estimator.fit(features.X[rows], features.y[rows], **_data_params(features, rows, names))
