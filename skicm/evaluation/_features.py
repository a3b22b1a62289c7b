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
    folders; each chunk gets its own seed derived from ``seed``, so the counterparts are the
    same in every run. With an embedding store, each counterpart's embedding is also kept
    under a key of its own (:func:`_counterpart_keys`: the source image's key, the
    interventions' identity, the seed and the position), so that a later run finds it without
    making the intervened image: a warm run neither decodes the images for the interventions
    nor imports torchvision.
    """
    from sklearn.base import clone

    from skicm.interventions import ImageInterventions

    quiet = clone(embedder)
    if "progress" in quiet.get_params():
        quiet.set_params(progress=False)
    keyed = _counterpart_store(quiet, inputs, seed)
    blocks = []
    bar = _progress(total=len(inputs), desc="embedding image interventions", enabled=progress)
    for start in range(0, len(inputs), _COUNTERPART_CHUNK):
        chunk = inputs[start : start + _COUNTERPART_CHUNK]
        block = None if keyed is None else keyed.lookup(start, len(chunk))
        if block is None:
            interventions = ImageInterventions(random_state=np.random.RandomState([seed, start]))
            counterparts = interventions.apply(chunk)
            block = np.asarray(quiet.transform(counterparts))
            if keyed is not None:
                keyed.keep(start, counterparts)
        blocks.append(block)
        bar.update(len(chunk))
    bar.close()
    return np.concatenate(blocks)


def _counterpart_keys(source_keys, identity, *, seed, start):
    """Store keys of the counterparts of one chunk (``""`` where the source has no key).

    The counterpart of the image at position ``index`` of the chunk starting at ``start`` is
    a function of the image, the interventions (``identity``: parameters, code and package
    versions, see ``ImageInterventions._identity``), ``seed``, ``start`` and ``index`` only
    (the chunk's call seed is drawn from ``RandomState([seed, start])`` and each counterpart
    from ``(call seed, index)``): its key hashes exactly these. A changed image (its key: the
    file's identity or the pixels' hash), intervention, seed or position gives another key;
    the prefix ``counterpart:`` keeps the keys apart from the images' own.
    """
    from skicm._image_embedder_base import digest

    return [
        "counterpart:"
        + digest(
            {"image": key, "interventions": identity, "seed": seed, "start": start, "index": i}
        )
        if key
        else ""
        for i, key in enumerate(source_keys)
    ]


class _KeyedCounterparts:
    """Counterpart embeddings of one data set in the embedder's store, by counterpart key."""

    def __init__(self, embedder, store, namespace, source_keys, identity, seed):
        self.embedder, self.store, self.namespace = embedder, store, namespace
        self.source_keys, self.identity, self.seed = source_keys, identity, seed

    def _keys(self, start, length):
        return _counterpart_keys(
            self.source_keys[start : start + length], self.identity, seed=self.seed, start=start
        )

    def lookup(self, start, length):
        """Embeddings of the chunk's counterparts (as ``transform`` returns them), or None."""
        keys = self._keys(start, length)
        if not all(keys):
            return None
        found = self.store.get_many(self.namespace, keys)
        if len(found) < len(set(keys)):
            return None
        raw = np.stack([found[key] for key in keys]).astype(np.float32, copy=False)
        return self.embedder._normalized(raw)

    def keep(self, start, counterparts):
        """Key the chunk's just-embedded counterparts (stored by their pixels) by position."""
        from skicm.image_loading import as_image_list, image_keys

        keys = self._keys(start, len(counterparts))
        pixel_keys = image_keys(as_image_list(counterparts, type(self.embedder).__name__))
        raw = self.store.get_many(self.namespace, pixel_keys)
        fresh = {
            key: raw[pixel_key]
            for key, pixel_key in zip(keys, pixel_keys)
            if key and pixel_key in raw
        }
        if fresh:
            self.store.put_many(self.namespace, fresh)


def _counterpart_store(embedder, inputs, seed):
    """:class:`_KeyedCounterparts` of an embedder with a store (None: no such store)."""
    from skicm.interventions import ImageInterventions

    if not all(hasattr(embedder, name) for name in ("store_namespace", "_normalized", "store")):
        return None
    from skicm._image_embedder_base import resolve_store
    from skicm.image_loading import as_image_list, image_keys_and_missing

    store = resolve_store(embedder.store)
    identity = ImageInterventions()._identity()
    if store is None or identity is None:
        return None
    source_keys, _ = image_keys_and_missing(as_image_list(inputs, type(embedder).__name__))
    return _KeyedCounterparts(
        embedder, store, embedder.store_namespace(), source_keys, identity, seed
    )


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
