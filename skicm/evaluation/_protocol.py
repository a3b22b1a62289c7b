"""The whole protocols: :func:`evaluate_domain_generalization` and :func:`evaluate_open_class`."""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from numbers import Real

import numpy as np

from skicm.evaluation._domain_scores import _held_out_domains
from skicm.evaluation._features import _prepare_features, _progress, _read_data
from skicm.evaluation._options import (
    DEFAULT_GRID,
    _as_tuple,
    _check_classes,
    _positive_values,
    _resolve_n_components,
    _resolve_options,
    _seed_list,
    _uses_counterparts,
    _warn_ranks_above_rows,
)
from skicm.evaluation._results import EvaluationResults
from skicm.evaluation._selection import _chosen_values, _Fold, _select_and_fit
from skicm.zero_shot import _check_prompt_classes, _check_templates, zero_shot_templates


def _protocol(
    data,
    *,
    embedder,
    methods,
    interventions,
    zero_shot,
    linear_probe,
    selection,
    scoring,
    n_components,
    alpha,
    C,
    seeds,
    test_domains,
    templates,
    intervention_seed,
    validation_size,
    n_jobs,
    progress,
    base_classes=None,
):
    open_class = base_classes is not None
    # Every option is checked before anything is embedded (an encoder may take minutes).
    seeds = _seed_list(seeds)
    alphas = _positive_values(alpha, "alpha", allow_zero=True)
    c_values = _positive_values(C, "C", allow_zero=False)
    _resolve_n_components(n_components)
    if not (isinstance(validation_size, Real) and 0 < validation_size < 1):
        raise ValueError(f"validation_size must be in (0, 1), got {validation_size!r}.")
    n_jobs = _check_n_jobs(n_jobs)
    _check_templates(templates)
    want_image = interventions == "auto" or "image" in _as_tuple(interventions, "interventions")
    make_data = data if callable(data) else None

    records, notes = [], []
    columns = None
    for seed in _progress_iter(seeds, "seeds", progress):
        if columns is None or make_data is not None:
            # A callable builds one data set per seed (DomainBed's trials).
            dataset = _read_data(make_data(random_state=seed) if make_data else data, embedder)
        if columns is None:
            columns, scoring_used = _resolve_options(
                dataset, embedder=embedder, methods=methods, interventions=interventions,
                zero_shot=zero_shot, linear_probe=linear_probe, scoring=scoring,
                selection=selection, want_image=want_image, notes=notes, open_class=open_class,
            )  # fmt: skip
            want_image = want_image and _uses_counterparts(columns, scoring_used.needs)
            held_out = [str(d) for d in _held_out_domains(dataset.domains, test_domains)]
            width = _known_width(dataset, embedder)
            if width is not None:  # a rank above the width fails before any embedding
                _resolve_n_components(n_components, width)
            n_classes = len(dataset.class_names or np.unique(dataset.y))
            chance = 1.0 / n_classes
            if any(column.method.zero_shot for column in columns):
                templates = zero_shot_templates(templates)
                # a class missing from a prompt file fails before any embedding
                _check_prompt_classes(templates, _prompt_names(dataset.class_names))
        if open_class:
            base = _base_labels(base_classes, dataset)
            class_names_for_projector = [dataset.class_names[label] for label in sorted(base)]
            train_rows = {
                d: np.flatnonzero((dataset.domains != d) & np.isin(dataset.y, list(base)))
                for d in held_out
            }
        else:
            base = None
            class_names_for_projector = dataset.class_names
            _check_classes(dataset, held_out)
            train_rows = {d: np.flatnonzero(dataset.domains != d) for d in held_out}
        if make_data is not None or seed == seeds[0]:
            features = _prepare_features(
                dataset, embedder, want_image=want_image, intervention_seed=intervention_seed,
                progress=progress,
            )  # fmt: skip
        axes = {
            "n_components": _resolve_n_components(n_components, features.X.shape[1]),
            "alpha": alphas,
            "C": c_values,
        }
        if seed == seeds[0]:
            _warn_ranks_above_rows(
                [r for r in axes["n_components"] if r != "auto"],
                {d: len(rows) for d, rows in train_rows.items()},
                notes,
            )
        candidates = [column.method.candidates(axes) for column in columns]
        total = len(held_out) * sum(map(len, candidates))
        bar = _progress(total=total, desc=f"seed {seed}: grid candidates", enabled=progress)
        for domain in held_out:
            test = np.flatnonzero(features.domains == domain)
            train = train_rows[domain]
            # The projectors of this fold (and of its validation splits), shared by every
            # column of each kind.
            fold = _Fold(
                features, text_encoder=embedder,
                class_names=_prompt_names(features.class_names),
                projector_class_names=_prompt_names(class_names_for_projector),
                templates=templates, n_jobs=n_jobs,
            )  # fmt: skip
            for column, column_candidates in zip(columns, candidates):
                bar.set_postfix_str(f"held out {domain}: {column.name}")
                with _one_blas_thread():
                    estimator, chosen, validation, projector = _select_and_fit(
                        column, column_candidates, features, train, test, selection=selection,
                        scoring=scoring_used, seed=seed, validation_size=validation_size,
                        fold=fold, bar=bar,
                    )  # fmt: skip
                    predictions = estimator.predict(features.X[test])
                common = {
                    "method": column.name,
                    "test_domain": domain,
                    "seed": seed,
                    "selection": selection,
                    "scoring": scoring_used.name if len(column_candidates) > 1 else "",
                    "validation_score": validation,
                    "n_candidates": len(column_candidates),
                    "n_train": len(train),
                    **_chosen_values(chosen, projector),
                }
                correct = predictions == features.y[test]
                splits = {"all": np.ones(len(test), dtype=bool)}
                if open_class:
                    is_base = np.isin(features.y[test], list(base))
                    splits = {"base": is_base, "new": ~is_base}
                for split, rows in splits.items():
                    if not rows.any():
                        continue
                    records.append(
                        {
                            **common,
                            "classes": split,
                            "accuracy": float(correct[rows].mean()),
                            "n_test": int(rows.sum()),
                        }
                    )
        bar.close()
    return EvaluationResults(
        records=records,
        methods=[column.name for column in columns],
        domains=held_out,
        selection=selection,
        scoring=scoring_used.name,
        chance=chance,
        notes=notes,
        protocol="open-class" if open_class else "leave-one-domain-out",
        grids={column.name: list(grid) for column, grid in zip(columns, candidates)},
    )


def _known_width(dataset, embedder):
    """The width of the features when it is known without a forward pass or a model load.

    A :class:`~skicm.CLIPEmbedder` reads it from its architecture's configuration; other
    encoders would have to load their model (which a store holding every embedding avoids),
    so their width is checked once the features are there, before any fit.
    """
    if not dataset.embed:
        return dataset.n_features
    from skicm.embedding import CLIPEmbedder

    if isinstance(embedder, CLIPEmbedder):
        try:
            return int(embedder.embed_dim_)
        except Exception:  # unknown until embedded (e.g. a config that is not reachable)
            return None
    return None


def _check_n_jobs(n_jobs):
    """Threads of the grid search: None or 1 runs in the calling thread, -1 uses every core."""
    import os

    if n_jobs is None:
        return 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be None, -1 or a positive integer, got {n_jobs!r}.")
    if n_jobs == -1:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return n_jobs


@contextlib.contextmanager
def _one_blas_thread():
    """The context of a grid search: one BLAS thread, and the fits' expected warnings silenced.

    One BLAS thread: the fits are small (hundreds of rows), where more threads cost more in
    synchronisation than they save (2.8x slower with the default threads on 2 cores); the
    grid's parallelism comes from fitting candidates at the same time instead. The warnings
    (a fold without interventional data of a kind: the score says what it is worth; a
    projector fitted with every direction keeping the data's rank, or a grid rank above a
    fold's rows, which the protocol warns about once) are silenced here, once, in the calling
    thread: ``warnings.catch_warnings`` inside the candidates' threads would race on the
    process-wide filters and could leave them changed after the evaluation.
    """
    from threadpoolctl import threadpool_limits

    from skicm.exceptions import RankWarning

    with threadpool_limits(1, user_api="blas"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*interventional data.*")
        warnings.simplefilter("ignore", RankWarning)
        yield


def _prompt_names(class_names):
    """Class names as words in prompts: DomainBed's folders use underscores (alarm_clock)."""
    if class_names is None:
        return None
    return [name.replace("_", " ") for name in class_names]


def _base_labels(base_classes, features):
    if features.class_names is None:
        raise ValueError("the open-class protocol needs class names (data.target_names).")
    names = features.class_names
    if isinstance(base_classes, Real) and not isinstance(base_classes, bool):
        if not 0 < base_classes < 1:
            raise ValueError(f"base_classes as a fraction must be in (0, 1), got {base_classes}.")
        n_base = max(1, min(len(names) - 1, math.ceil(base_classes * len(names))))
        return set(range(n_base))
    unknown = [name for name in base_classes if name not in names]
    if unknown:
        raise ValueError(f"base_classes {unknown} are not class names; the classes are {names}.")
    base = {names.index(name) for name in base_classes}
    if not base or len(base) == len(names):
        raise ValueError(
            "base_classes must leave at least one base class and one new class; got "
            f"{sorted(base_classes)} of {names}."
        )
    return base


def _routed_protocol(data, **options):
    # Metadata routing carries X_intervened and groups to the projector and the scorers; it is
    # switched on here, whatever the caller's global setting, and every request is explicit.
    from sklearn import config_context

    with config_context(enable_metadata_routing=True):
        return _protocol(data, **options)


def _progress_iter(items, desc, enabled):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=not enabled or len(items) < 2, leave=False)


#: Descriptions of the parameters the protocols share, written once; a docstring line
#: ``{name}`` or ``{name, other}`` (alone, indented as a parameter) stands for those entries.
_PARAMETER_DOCS = {
    "data": """\
data : Bunch or callable
    A data set of :mod:`skicm.datasets`' convention: ``target`` (labels),
    ``environments`` (the domain of each row), ``data`` (features, used without an
    embedder), ``data_intervened`` (their counterparts), ``paths`` or ``images`` (embedded
    by ``embedder``), ``images_intervened``, ``target_names``; the names used before it
    (``X``, ``y``, ``X_intervened``, ``domains``, ``environment``) are read too. Or a
    callable ``data(random_state=seed)`` returning one per seed.
""",
    "methods": """\
methods : "auto" or sequence of str or Method, default="auto"
    The methods, by name in the registry (:func:`available_methods`) or as
    :class:`Method` objects, in column order; ``"auto"``: every default entry whose needs
    (a text tower, class names, counterparts) the data and encoder meet, saying in
    ``notes`` what is left out. A method asked for by name that cannot run is an error.
""",
    "interventions": """\
interventions : "auto" or sequence of {"image", "text", "groups"}, default="auto"
    Interventional data of the projector, one column per kind. ``"image"``: counterparts
    (``data.images_intervened`` / ``data.data_intervened``, or the paper's seven image
    interventions drawn with ``intervention_seed``); ``"text"``: domain prompts of the
    class names; ``"groups"``: the training domains' labels. ``"auto"``: every kind the
    data and encoder allow (what is skipped is said in ``notes``).
""",
    "selection": """\
selection : {"training-domain", "leave-one-domain-out", "oracle"}, default="training-domain"
    How each held-out domain's hyperparameters are chosen: on ``validation_size`` of every
    training domain (:class:`skicm.model_selection.TrainingDomainSplit`), by
    :class:`~sklearn.model_selection.LeaveOneGroupOut` over the training domains, or on the
    held-out domain itself (``"oracle"``: labelled as such in every output).
""",
    "scoring": """\
scoring : "auto" or str, default="auto"
    What the selection maximises, a name of :data:`SCORINGS` (``"accuracy"``,
    ``"interventional"``, ``"worst-environment"``). ``"interventional"``
    (:func:`skicm.model_selection.make_interventional_scorer`): the worse of the accuracy
    on the validation rows and on their counterparts, so a spurious feature that the
    counterparts change is not selected; ``"auto"`` uses it wherever counterparts exist,
    else accuracy. ``"worst-environment"``: the lowest per-domain accuracy of the
    validation rows. Oracle selection always scores test accuracy.
""",
    "n_components": """\
n_components : sequence, default=DEFAULT_GRID["n_components"]
    Ranks of the grid: ``"auto"``, integers, or fractions in (0, 1) of the width. An
    integer above the width is an error; a rank above the training rows of a fold is
    warned about (:class:`~skicm.exceptions.RankWarning`, also in ``notes``): the
    projector keeps as many directions as the rows span.
""",
    "alpha": """\
alpha : sequence of float, default=DEFAULT_GRID["alpha"]
    Weights of the intervention term in the grid.
""",
    "seeds": """\
seeds : int or sequence of int, default=1
    Seeds (an int ``n``: ``0 .. n - 1``). A seed draws the training-domain validation
    split and, when ``data`` is a callable, the data set itself (``data(random_state=
    seed)``, as DomainBed's trials); results are reported as mean and std over seeds.
""",
    "test_domains": """\
test_domains : sequence of str or None, default=None
    Domains to hold out, in order; None holds out each domain.
""",
    "templates": """\
templates : str or sequence of str, default="openai-imagenet"
    Zero-shot prompt templates (see :func:`zero_shot_templates`).
""",
    "intervention_seed": """\
intervention_seed : int, default=0
    Seed of the image interventions (fixed across ``seeds``, so the store keeps one
    counterpart per image).
""",
    "validation_size": """\
validation_size : float, default=0.2
    Share of every training domain held out by training-domain selection.
""",
    "n_jobs": """\
n_jobs : int or None, default=None
    Threads fitting the grid's candidates at the same time (each fit uses one BLAS
    thread); None runs them one after the other, -1 uses every core of the process.
""",
    "progress": """\
progress : bool, default=True
    tqdm progress bars over seeds and grid candidates (the embedder shows its own).
""",
}


def _with_parameter_docs(function):
    """Fill the placeholder lines of ``function``'s docstring from :data:`_PARAMETER_DOCS`.

    A line ``{name}``, or ``{name, other, ...}`` for several in a row, becomes the entries'
    lines at the placeholder's indentation; a name that is not an entry is a KeyError at
    import, so no placeholder reaches the documentation.
    """
    if function.__doc__ is None:  # python -OO
        return function
    lines = []
    for line in function.__doc__.splitlines():
        placeholder = re.fullmatch(r"(\s*)\{(\w+(?:, \w+)*)\}", line)
        if placeholder is None:
            lines.append(line)
            continue
        indent, names = placeholder.groups()
        for name in names.split(", "):
            entry = _PARAMETER_DOCS[name].splitlines()
            lines.extend(indent + text if text else text for text in entry)
    function.__doc__ = "\n".join(lines)
    return function


@_with_parameter_docs
def evaluate_domain_generalization(
    data,
    *,
    embedder=None,
    methods="auto",
    interventions="auto",
    zero_shot="auto",
    linear_probe=True,
    selection="training-domain",
    scoring="auto",
    n_components=DEFAULT_GRID["n_components"],
    alpha=DEFAULT_GRID["alpha"],
    C=DEFAULT_GRID["C"],
    seeds=1,
    test_domains=None,
    templates="openai-imagenet",
    intervention_seed=0,
    validation_size=0.2,
    n_jobs=None,
    progress=True,
):
    """Leave-one-domain-out accuracy of every method, hyperparameters chosen per held-out domain.

    For each seed and each held-out domain, every method is trained on the other domains with
    the grid's hyperparameters chosen by ``selection``, refitted on all training rows and
    scored on the held-out domain. The methods, one column each:

    - ``zero-shot``: CLIP zero-shot classification from the class names (no training);
    - ``zero-shot ICM (kind)``: zero-shot in the invariant subspace of an
      :class:`~skicm.InvariantProjector` fitted on the training domains;
    - ``linear probe``: :func:`make_linear_probe` on the embeddings;
    - ``linear probe ICM (kind)``: the same probe after the projector;

    with one ICM column per kind of interventional data (``interventions``). This is the code
    behind ``skicm evaluate``.

    Parameters
    ----------
    {data}
    embedder : estimator with ``transform`` or None, default=None
        Embeds ``data.paths`` or ``data.images`` (and the counterparts), e.g. a
        :class:`~skicm.CLIPEmbedder`; its ``store`` keeps the embeddings (an SQLite path: a
        rerun encodes nothing). None uses ``data.data`` as features (raw pixels). Zero-shot
        columns and text interventions need its text tower (``has_text_tower``).
    {methods, interventions}
    zero_shot : "auto" or bool, default="auto"
        Zero-shot columns (plain and in the invariant subspace) with ``methods="auto"``;
        ``"auto"``: where the encoder has a text tower and the data name their classes.
    linear_probe : bool, default=True
        Linear-probe columns with ``methods="auto"``.
    {selection, scoring, n_components, alpha}
    C : sequence of float, default=DEFAULT_GRID["C"]
        Inverse regularisation strengths of the linear probe in the grid.
    {seeds, test_domains, templates, intervention_seed, validation_size, n_jobs, progress}

    Returns
    -------
    results : EvaluationResults
        ``results.to_markdown()``, ``to_csv(path)``, ``plot()``, ``save(folder)``,
        ``accuracy(method, domain)``.

    Raises
    ------
    ValueError
        On an unknown option, a kind of interventional data the data or encoder cannot give,
        or a held-out domain with a class that no training domain has (naming the domain and
        the class).

    See Also
    --------
    evaluate_open_class : The paper's base-to-new class protocol.
    leave_one_domain_out : One fixed estimator, no selection.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.utils import Bunch
    >>> from skicm.evaluation import evaluate_domain_generalization
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 300)
    >>> data = Bunch(data=np.c_[y + rng.normal(0, .5, 300), rng.normal(0, 1, (300, 3))],
    ...              target=y, domains=np.repeat(["a", "b", "c"], 100))
    >>> results = evaluate_domain_generalization(
    ...     data, selection="leave-one-domain-out", n_components=[1, 2], alpha=[1.0],
    ...     C=[1.0], progress=False)
    >>> results.methods
    ['linear probe', 'linear probe ICM (groups)']
    >>> mean, std = results.accuracy("linear probe")
    >>> bool(mean > 0.8)
    True
    """
    return _routed_protocol(
        data,
        embedder=embedder,
        methods=methods,
        interventions=interventions,
        zero_shot=zero_shot,
        linear_probe=linear_probe,
        selection=selection,
        scoring=scoring,
        n_components=n_components,
        alpha=alpha,
        C=C,
        seeds=seeds,
        test_domains=test_domains,
        templates=templates,
        intervention_seed=intervention_seed,
        validation_size=validation_size,
        n_jobs=n_jobs,
        progress=progress,
    )


@_with_parameter_docs
def evaluate_open_class(
    data,
    *,
    embedder,
    base_classes=0.5,
    methods="auto",
    interventions="auto",
    selection="training-domain",
    scoring="auto",
    n_components=DEFAULT_GRID["n_components"],
    alpha=DEFAULT_GRID["alpha"],
    seeds=1,
    test_domains=None,
    templates="openai-imagenet",
    intervention_seed=0,
    validation_size=0.2,
    n_jobs=None,
    progress=True,
):
    """The paper's open-class protocol: invariance learned on base classes, tested on new ones.

    The classes are split into base and new. For each held-out domain, the projector is
    fitted on the base-class images of the other domains (text interventions name the base
    classes only), and zero-shot classification over **all** class names runs on the
    held-out domain; accuracy on its base-class and new-class images is reported apart. The
    columns are ``zero-shot`` and ``zero-shot ICM (kind)``; a linear probe cannot name a class
    it never saw.

    Parameters
    ----------
    {data}
        It must name its classes (``target_names``).
    embedder : estimator with ``transform`` and ``encode_text``
        The image and text encoder (a text tower is needed to name new classes), e.g.
        a :class:`~skicm.CLIPEmbedder`; its ``store`` keeps the embeddings.
    base_classes : float or sequence of str, default=0.5
        A fraction: the first ``ceil(fraction * n_classes)`` classes (in ``target_names``
        order) are base; or the base class names.
    {methods, interventions}
    {selection, scoring, n_components, alpha}
    {seeds, test_domains, templates, intervention_seed, validation_size, n_jobs, progress}

    Returns
    -------
    results : EvaluationResults
        Records with ``classes`` ``"base"`` and ``"new"``.

    See Also
    --------
    evaluate_domain_generalization : The closed-class protocol.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.utils import Bunch
    >>> from skicm import CLIPEmbedder
    >>> from skicm.evaluation import evaluate_open_class
    >>> from skicm.model_configs import register_tiny_clip
    >>> embedder = CLIPEmbedder(register_tiny_clip(), pretrained=None, device="cpu",
    ...                         progress=False)
    >>> images = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    >>> data = Bunch(images=images, target=np.tile([0, 1, 2], 8),
    ...              target_names=["cat", "dog", "bird"], domains=np.repeat(["a", "b", "c"], 8))
    >>> results = evaluate_open_class(
    ...     data, embedder=embedder, interventions=["groups"], selection="leave-one-domain-out",
    ...     n_components=[4], alpha=[1.0], templates="a photo of a {}.", progress=False)
    >>> results.methods
    ['zero-shot', 'zero-shot ICM (groups)']
    >>> sorted({record["classes"] for record in results.records})
    ['base', 'new']
    """
    return _routed_protocol(
        data,
        embedder=embedder,
        methods=methods,
        interventions=interventions,
        zero_shot=True,
        linear_probe=False,
        selection=selection,
        scoring=scoring,
        n_components=n_components,
        alpha=alpha,
        C=(1.0,),
        seeds=seeds,
        test_domains=test_domains,
        templates=templates,
        intervention_seed=intervention_seed,
        validation_size=validation_size,
        n_jobs=n_jobs,
        progress=progress,
        base_classes=base_classes,
    )
