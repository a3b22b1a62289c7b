"""The evaluated methods: a registry of named entries, each one column of the results (or one
column per kind of interventional data), and the invariant projectors they share."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import product

from skicm.evaluation._features import _fit

#: What a method may need, checked before any data is embedded: ``"text tower"`` (an encoder
#: that embeds text: zero-shot classification, text prompts), ``"class names"`` (the data name
#: their classes, ``target_names``), ``"counterparts"`` (an intervened counterpart of every row:
#: ``X_intervened``), ``"groups"`` (the training domain of every row; always available).
NEEDS = ("text tower", "class names", "counterparts", "groups")

#: Fit parameters a method may ask for: the training rows' counterparts or training domains.
FIT_PARAMS = ("X_intervened", "groups")

#: What each kind of interventional data of the invariant projector needs.
KIND_NEEDS = {
    "image": ("counterparts",),
    "text": ("text tower", "class names"),
    "groups": ("groups",),
}


def grid_product(**axes):
    """Every combination of the given hyperparameter values, the first axis varying slowest.

    Parameters
    ----------
    **axes : sequence
        Values of each hyperparameter.

    Returns
    -------
    candidates : list of dict
        One dict per combination, in the order of :func:`itertools.product`.

    Examples
    --------
    >>> from skicm.evaluation import grid_product
    >>> grid_product(alpha=[0.1, 1.0], C=[1.0])
    [{'alpha': 0.1, 'C': 1.0}, {'alpha': 1.0, 'C': 1.0}]
    """
    names = list(axes)
    return [dict(zip(names, values)) for values in product(*(axes[name] for name in names))]


@dataclass(frozen=True)
class Method:
    """A method of the evaluation: its name, what it needs, its grid and how to build it.

    Every entry of the registry (:func:`available_methods`) is a ``Method``; pass one by name
    or as an object in ``methods=`` of :func:`evaluate_domain_generalization`, or register it
    with :func:`register_method` so that ``skicm evaluate --methods NAME`` finds it.

    Parameters
    ----------
    name : str
        The column name (for ``per_intervention_kind`` methods, each column is ``"name
        (kind)"``).
    build : callable
        ``build(context, params)`` returns an unfitted estimator: a classifier, or a pipeline
        ending in one (e.g. a transformer followed by :func:`make_linear_probe`). ``context``
        is a :class:`MethodContext`; ``params`` one candidate of ``grid``.
    grid : callable or mapping, default={}
        The candidates: a mapping of hyperparameter to values (every combination is tried), or
        ``grid(axes)`` returning a list of dicts, where ``axes`` holds the protocol's grid
        (``"n_components"``, ``"alpha"``, ``"C"``: what ``n_components=``, ``alpha=`` and
        ``C=`` of the protocol resolved to), e.g. ``lambda axes: grid_product(C=axes["C"])``.
    needs : tuple of str, default=()
        Of :data:`NEEDS`; a method whose needs are not met is left out with a note (when it
        was not asked for) or is an error (when it was).
    fit_params : tuple of str, default=()
        Of :data:`FIT_PARAMS`: ``"groups"`` passes the training rows' domains to ``fit``,
        ``"X_intervened"`` their counterparts (metadata routing is on during the protocol: a
        pipeline step asks for them with ``set_fit_request``).
    zero_shot : bool, default=False
        The estimator names classes from their names (no training labels needed): the only
        kind of method the open-class protocol runs.
    per_intervention_kind : bool, default=False
        One column per kind of interventional data (``interventions=``); ``build`` gets the
        column's kind as ``context.kind`` and an invariant projector from
        ``context.invariant_projector``.
    default : bool, default=True
        Run when ``methods="auto"`` (where its needs are met); False runs it only when asked.
    description : str, default=""
        One line for ``skicm evaluate --list-methods``.

    See Also
    --------
    register_method : Make a method available by name.
    available_methods : The registry.

    Examples
    --------
    >>> from sklearn.decomposition import PCA
    >>> from sklearn.pipeline import make_pipeline
    >>> from skicm.evaluation import Method, grid_product, make_linear_probe
    >>> pca_probe = Method(
    ...     "linear probe PCA",
    ...     build=lambda context, params: make_pipeline(
    ...         PCA(params["n_components"]), make_linear_probe(params["C"])),
    ...     grid=lambda axes: grid_product(n_components=[2, 4], C=axes["C"]),
    ...     description="the linear probe on the top principal components")
    >>> pca_probe.candidates({"C": [0.1, 1.0]})[:2]
    [{'n_components': 2, 'C': 0.1}, {'n_components': 2, 'C': 1.0}]
    """

    name: str
    build: Callable
    grid: Callable | Mapping = field(default_factory=dict)
    needs: tuple = ()
    fit_params: tuple = ()
    zero_shot: bool = False
    per_intervention_kind: bool = False
    default: bool = True
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a method needs a non-empty name, got {self.name!r}.")
        if not callable(self.build):
            raise ValueError(f"method {self.name!r}: build must be callable, got {self.build!r}.")
        if not (callable(self.grid) or isinstance(self.grid, Mapping)):
            raise ValueError(
                f"method {self.name!r}: grid must be a mapping of values or a callable, got "
                f"{self.grid!r}."
            )
        for option, values, known in (
            ("needs", self.needs, NEEDS),
            ("fit_params", self.fit_params, FIT_PARAMS),
        ):
            if isinstance(values, str) or any(value not in known for value in values):
                raise ValueError(
                    f"method {self.name!r}: {option} must hold values of {list(known)}, got "
                    f"{values!r}."
                )
        object.__setattr__(self, "needs", tuple(self.needs))
        object.__setattr__(self, "fit_params", tuple(self.fit_params))

    def candidates(self, axes):
        """The grid's candidates for the protocol's grid ``axes``.

        Parameters
        ----------
        axes : dict
            The protocol's resolved ``"n_components"``, ``"alpha"`` and ``"C"`` values.

        Returns
        -------
        candidates : list of dict
            At least one (``[{}]`` for a method without hyperparameters).
        """
        if callable(self.grid):
            candidates = list(self.grid(axes))
        else:
            candidates = grid_product(**self.grid)
        if not candidates or not all(isinstance(c, Mapping) for c in candidates):
            raise ValueError(
                f"method {self.name!r}: its grid must give at least one candidate, each a "
                f"dict of hyperparameters; got {candidates!r}."
            )
        return [dict(c) for c in candidates]

    def requirements(self, kind=None):
        """What the method (its ``kind`` column) needs, in the order of :data:`NEEDS`.

        Parameters
        ----------
        kind : str or None, default=None
            The column's kind of interventional data.

        Returns
        -------
        needs : list of str
        """
        needs = set(self.needs) | set(KIND_NEEDS.get(kind, ()))
        return [need for need in NEEDS if need in needs]


@dataclass
class MethodContext:
    """What a :class:`Method`'s ``build`` may use: the encoder, the class names, the templates,
    the column's kind of interventional data and the invariant projector of the training rows.

    Attributes
    ----------
    kind : str or None
        The column's kind of interventional data (``per_intervention_kind`` methods).
    text_encoder : estimator or None
        The embedder (with ``encode_text`` where it has a text tower).
    class_names : list of str or None
        Class names as words for prompts (underscores made spaces), in label order.
    templates : list of str or None
        Zero-shot prompt templates.
    training_domains : list of str
        The domains of the rows the estimator is fitted on.
    """

    kind: str | None
    text_encoder: object
    class_names: list | None
    templates: list | None
    training_domains: list
    _projectors: object = None
    _rows: object = None
    projector_: object = None

    def invariant_projector(self, n_components, alpha):
        """The :class:`~skicm.InvariantProjector` of ``kind`` fitted on the training rows.

        One eigendecomposition per ``alpha`` and set of rows serves every rank (a projector
        with ``k`` directions is the first ``k`` of one fit), so a grid over ranks costs one
        fit. The projector is fitted: use it as it is (e.g. ``FrozenEstimator(projector)`` in
        a pipeline, or ``refit_projector=False``).

        Parameters
        ----------
        n_components : int or "auto"
            The rank.
        alpha : float
            Weight of the intervention term.

        Returns
        -------
        projector : InvariantProjector
        """
        if self.kind is None:
            raise ValueError(
                "an invariant projector needs a kind of interventional data: give the method "
                "per_intervention_kind=True."
            )
        self.projector_ = self._projectors.get(self.kind, alpha, n_components, self._rows)
        return self.projector_


def make_linear_probe(C=1.0):
    """The linear probe of every evaluation: ``StandardScaler`` then ``LogisticRegression``.

    One definition for the documentation, the Python protocol and ``skicm evaluate``, so their
    numbers agree (an unscaled logistic regression on CLIP embeddings is a different, weaker
    model at the same ``C``).

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength of the logistic regression.

    Returns
    -------
    probe : sklearn.pipeline.Pipeline
        ``make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))``.

    Examples
    --------
    >>> from skicm.evaluation import make_linear_probe
    >>> make_linear_probe(0.1).named_steps["logisticregression"].C
    0.1
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))


# ------------------------------------------------------------------------------ built-in methods
def _zero_shot_classifier(context, params):
    from skicm.zero_shot import ZeroShotClassifier

    projector = None
    if context.kind is not None:
        projector = context.invariant_projector(params["n_components"], params["alpha"])
    # A fitted projector is used as it is (one fit serves every rank of the grid).
    return ZeroShotClassifier(
        list(context.class_names), encoder=context.text_encoder, templates=context.templates,
        projector=projector, refit_projector=False,
    )  # fmt: skip


def _linear_probe(context, params):
    from sklearn.frozen import FrozenEstimator
    from sklearn.pipeline import Pipeline

    probe_steps = make_linear_probe(params["C"]).steps
    if context.kind is None:
        return Pipeline(probe_steps)
    projector = context.invariant_projector(params["n_components"], params["alpha"])
    return Pipeline([("invariantprojector", FrozenEstimator(projector)), *probe_steps])


def _projector_grid(axes):
    return grid_product(n_components=axes["n_components"], alpha=axes["alpha"])


def _probe_grid(axes):
    return grid_product(C=axes["C"])


def _projector_probe_grid(axes):
    return grid_product(n_components=axes["n_components"], alpha=axes["alpha"], C=axes["C"])


_REGISTRY: dict[str, Method] = {}


def register_method(method, *, replace=False):
    """Add ``method`` to the registry, so that it can be selected by name.

    Parameters
    ----------
    method : Method
        The entry.
    replace : bool, default=False
        Replace an entry of the same name (otherwise that is an error).

    Returns
    -------
    method : Method
        The entry, as registered.

    Raises
    ------
    ValueError
        If ``method`` is not a :class:`Method` or its name is taken.

    Examples
    --------
    >>> from skicm.evaluation import Method, available_methods, make_linear_probe
    >>> from skicm.evaluation import register_method, unregister_method
    >>> probe = register_method(Method(
    ...     "linear probe C=10", build=lambda context, params: make_linear_probe(10.0),
    ...     default=False))
    >>> "linear probe C=10" in available_methods()
    True
    >>> unregister_method("linear probe C=10")
    """
    if not isinstance(method, Method):
        raise ValueError(f"register_method takes a Method, got {type(method).__name__}.")
    if method.name in _REGISTRY and not replace:
        raise ValueError(
            f"a method named {method.name!r} is already registered; pass replace=True to "
            "replace it."
        )
    _REGISTRY[method.name] = method
    return method


def unregister_method(name):
    """Remove the method named ``name`` from the registry.

    Parameters
    ----------
    name : str
        A registered method's name.

    Raises
    ------
    ValueError
        If no method has that name.

    Examples
    --------
    >>> from skicm.evaluation import Method, available_methods, make_linear_probe
    >>> from skicm.evaluation import register_method, unregister_method
    >>> _ = register_method(Method("probe", lambda context, params: make_linear_probe()))
    >>> unregister_method("probe")
    >>> "probe" in available_methods()
    False
    """
    if name not in _REGISTRY:
        raise ValueError(f"no method named {name!r}; the methods are {list(_REGISTRY)}.")
    del _REGISTRY[name]


def available_methods():
    """The registry: every method that can be selected by name, in column order.

    Returns
    -------
    methods : dict of str to Method
        A copy; change the registry with :func:`register_method`.

    Examples
    --------
    >>> from skicm.evaluation import available_methods
    >>> list(available_methods())[:4]  # the built-in entries come first
    ['zero-shot', 'zero-shot ICM', 'linear probe', 'linear probe ICM']
    >>> available_methods()["linear probe ICM"].requirements("text")
    ['text tower', 'class names']
    """
    return dict(_REGISTRY)


for _method in (
    Method(
        "zero-shot", _zero_shot_classifier, needs=("text tower", "class names"), zero_shot=True,
        description="CLIP zero-shot classification from the class names (no training)",
    ),
    Method(
        "zero-shot ICM", _zero_shot_classifier, grid=_projector_grid,
        needs=("text tower", "class names"), zero_shot=True, per_intervention_kind=True,
        description="zero-shot in the invariant subspace learned on the training domains",
    ),
    Method(
        "linear probe", _linear_probe, grid=_probe_grid,
        description="StandardScaler + LogisticRegression on the embeddings",
    ),
    Method(
        "linear probe ICM", _linear_probe, grid=_projector_probe_grid,
        per_intervention_kind=True,
        description="the linear probe in the invariant subspace",
    ),
):  # fmt: skip
    register_method(_method)
del _method


def _select_methods(methods):
    """The entries ``methods`` names ("auto": every default entry), and whether asked for."""
    if isinstance(methods, str) and methods == "auto":
        return [m for m in _REGISTRY.values() if m.default], False
    if isinstance(methods, (str, Method)):
        methods = [methods]
    selected = []
    for entry in methods:
        if isinstance(entry, Method):
            method = entry
        elif isinstance(entry, str) and entry in _REGISTRY:
            method = _REGISTRY[entry]
        else:
            raise ValueError(
                f"methods must hold names of {list(_REGISTRY)} or Method objects (or be "
                f"'auto'), got {entry!r}."
            )
        if any(m.name == method.name for m in selected):
            raise ValueError(f"methods names {method.name!r} twice.")
        selected.append(method)
    if not selected:
        raise ValueError("methods must name at least one method.")
    return selected, True


@dataclass(frozen=True)
class _Column:
    """One column of the results: a method, with its kind of interventional data."""

    method: Method
    kind: str | None

    @property
    def name(self):
        return self.method.name if self.kind is None else f"{self.method.name} ({self.kind})"


# ------------------------------------------------------------------------------ shared projectors
def _projector(kind, text_encoder, class_names):
    from skicm.interventions import TextInterventions
    from skicm.projection import InvariantProjector

    interventions = None
    if kind == "text":
        interventions = TextInterventions(text_encoder, class_names=list(class_names))
    projector = InvariantProjector(interventions=interventions)
    return projector.set_fit_request(X_intervened=kind == "image", groups=kind == "groups")


class _ProjectorFits:
    """Fitted projectors by (kind, alpha, training rows): one eigendecomposition per alpha.

    The directions of a projector fitted with ``n_components=k`` are the first ``k`` of the
    same projector fitted with every direction (the eigenvectors of one ``M``), so every rank
    of the grid is a truncation of one fit: a grid over ``r`` ranks and ``c`` values of ``C``
    costs one projector fit instead of ``r * c``. The key holds a digest of the row indices
    themselves: two folds with as many rows must not share a projector.
    """

    def __init__(self, features, text_encoder, class_names):
        self.features = features
        self.text_encoder = text_encoder
        self.class_names = class_names
        self._fits = {}

    @staticmethod
    def key(kind, alpha, rows):
        return (kind, float(alpha), hashlib.sha1(rows.tobytes()).hexdigest())

    def full(self, kind, alpha, rows):
        """The projector of ``kind`` with every direction, fitted on ``rows`` (cached)."""
        key = self.key(kind, alpha, rows)
        full = self._fits.get(key)
        if full is None:
            projector = _projector(kind, self.text_encoder, self.class_names)
            projector.set_params(n_components=self.features.X.shape[1], alpha=alpha)
            full = self._fits[key] = _fit(projector, self.features, rows, kind)
        return full

    def get(self, kind, alpha, n_components, rows):
        return _truncated(self.full(kind, alpha, rows), n_components)


def _truncated(projector, n_components):
    """The projector with its first directions only, as if fitted with ``n_components``.

    A rank above the training rows warns once, up front (the protocol's grid context
    silences the projector's own warning of each fold and candidate).
    """
    return projector.truncated(n_components)
