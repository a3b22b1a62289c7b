"""Domain-generalisation protocols: leave-one-domain-out, as in DomainBed and CLIP-ICM.

Two layers:

- :func:`leave_one_domain_out` scores one estimator with one split per held-out domain;
- :func:`evaluate_domain_generalization` (and :func:`evaluate_open_class`) is the whole
  protocol behind ``skicm evaluate``: features (embedded once, optionally kept in an on-disk
  store), every method as a column (zero-shot, zero-shot in the invariant subspace, linear
  probe, linear probe in the invariant subspace for each kind of interventional data), a
  hyperparameter grid chosen per held-out domain by a named model-selection rule, several
  seeds, and an :class:`EvaluationResults` that writes ``results.csv``, ``results.md`` and
  ``results.png``. The command line only parses its arguments and calls these functions, so
  Python code reproduces its numbers exactly.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import product
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.model_selection import cross_validate
from sklearn.utils.validation import check_consistent_length

__all__ = [
    "DEFAULT_GRID",
    "INTERVENTION_KINDS",
    "SELECTION_RULES",
    "DomainScores",
    "EvaluationResults",
    "evaluate_domain_generalization",
    "evaluate_open_class",
    "format_domain_scores",
    "leave_one_domain_out",
    "make_linear_probe",
    "zero_shot_templates",
]

#: Kinds of interventional data an invariant projector can learn from, one result column each:
#: ``"image"`` (aligned counterparts: image interventions or a data set's own counterparts),
#: ``"text"`` (domain prompts of the class names, encoded by the text tower), ``"groups"``
#: (class-conditional differences between the training domains).
INTERVENTION_KINDS = ("image", "text", "groups")

#: Model-selection rules: DomainBed's training-domain validation
#: (:class:`skicm.model_selection.TrainingDomainSplit`), leave-one-domain-out over the training
#: domains (:class:`sklearn.model_selection.LeaveOneGroupOut`), and test-domain selection
#: (``"oracle"``: an upper bound, always labelled as such).
SELECTION_RULES = ("training-domain", "leave-one-domain-out", "oracle")

#: Default hyperparameter grid of :func:`evaluate_domain_generalization`. ``n_components`` holds
#: ``"auto"``, integers, or fractions in (0, 1) of the embedding width.
DEFAULT_GRID = {
    "n_components": ("auto", 0.25, 0.5),
    "alpha": (0.1, 1.0, 10.0, 100.0),
    "C": (0.1, 1.0),
}

_SCORINGS = ("auto", "accuracy", "interventional", "worst-environment")
_SELECTION_LABELS = {
    "training-domain": "training-domain validation",
    "leave-one-domain-out": "leave-one-domain-out validation over the training domains",
    "oracle": "test-domain validation (oracle: the held-out domain chose the hyperparameters; "
    "an upper bound, not a domain-generalisation result)",
}
#: Rows written in ``results.csv``, in this order.
RESULT_COLUMNS = (
    "method",
    "test_domain",
    "seed",
    "accuracy",
    "classes",
    "n_components",
    "n_components_fitted",
    "alpha",
    "C",
    "selection",
    "scoring",
    "validation_score",
    "n_candidates",
    "n_train",
    "n_test",
)
_COUNTERPART_CHUNK = 256  # images made and embedded at a time (memory stays bounded)


@dataclass
class DomainScores:
    """Per-domain scores of one estimator under :func:`leave_one_domain_out`.

    Attributes
    ----------
    domains : ndarray of shape (n_folds,)
        The held-out domain of each fold.
    scores : ndarray of shape (n_folds,)
        Test score on the held-out domain of the estimator trained on the other domains.
    n_train, n_test : ndarray of shape (n_folds,)
        Number of training and test samples of each fold.
    estimators : list of estimators or None
        The fitted estimator of each fold, when ``return_estimator=True``.
    """

    domains: np.ndarray
    scores: np.ndarray
    n_train: np.ndarray
    n_test: np.ndarray
    estimators: list | None = None

    @property
    def mean_score(self):
        """Mean over held-out domains (each domain counts once, as in DomainBed)."""
        return float(np.mean(self.scores))

    def as_dict(self):
        """Scores by held-out domain.

        Returns
        -------
        scores : dict of str to float
            ``{domain: score}``.
        """
        return {str(d): float(s) for d, s in zip(self.domains, self.scores)}


def leave_one_domain_out(
    estimator,
    X,
    y,
    domains,
    *,
    test_domains=None,
    domain_param=None,
    params=None,
    scoring=None,
    return_estimator=False,
    n_jobs=None,
):
    """Train on all domains but one and test on the held-out one, for each domain.

    This is the domain-generalisation protocol of DomainBed (Gulrajani and Lopez-Paz, 2021)
    and of the CLIP-ICM paper's PACS, VLCS, OfficeHome, TerraIncognita and DomainNet tables,
    for one fixed estimator. It runs :func:`sklearn.model_selection.cross_validate` with one
    split per held-out domain, so sample-aligned fit parameters in ``params`` (such as
    ``X_intervened``) are sliced to the training rows of each fold. To choose hyperparameters
    per held-out domain and compare several methods, use
    :func:`evaluate_domain_generalization`.

    Parameters
    ----------
    estimator : estimator
        Cloned and fitted once per held-out domain.
    X : array-like of shape (n_samples, n_features)
        Features, e.g. CLIP embeddings computed once for all domains.
    y : array-like of shape (n_samples,)
        Labels.
    domains : array-like of shape (n_samples,)
        Domain of each sample.
    test_domains : sequence or None, default=None
        Domains to hold out, in this order. None holds out each domain in sorted order.
    domain_param : str or None, default=None
        Name of a fit parameter that should receive the training samples' domains, e.g.
        ``"invariantprojector__groups"`` for a pipeline whose
        :class:`~skicm.InvariantProjector` learns invariance from environment labels. With
        metadata routing enabled, parameters are routed by their plain names instead: use
        ``"groups"`` and ``InvariantProjector().set_fit_request(groups=True)``.
    params : dict or None, default=None
        Further fit parameters, passed as in :func:`~sklearn.model_selection.cross_validate`.
    scoring : str, callable or None, default=None
        Scorer; None uses the estimator's ``score`` (accuracy for classifiers).
    return_estimator : bool, default=False
        Keep the fitted estimator of each fold.
    n_jobs : int or None, default=None
        Folds run in parallel.

    Returns
    -------
    scores : DomainScores
        Per-domain scores; ``scores.mean_score`` is their mean.

    Raises
    ------
    ValueError
        If there are fewer than two domains, ``test_domains`` names an unknown domain or
        repeats one, or ``scoring`` names several metrics.

    See Also
    --------
    evaluate_domain_generalization : The whole protocol, with model selection and seeds.
    skicm.datasets.load_image_folders : Load a DomainBed-layout image folder.
    format_domain_scores : Print several estimators' scores side by side.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skicm.evaluation import leave_one_domain_out
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 300)
    >>> domains = np.repeat(["a", "b", "c"], 100)
    >>> X = y[:, None] + rng.normal(scale=0.5, size=(300, 2))
    >>> result = leave_one_domain_out(LogisticRegression(), X, y, domains)
    >>> result.domains.tolist()
    ['a', 'b', 'c']
    >>> bool(result.mean_score > 0.8)
    True
    """
    check_consistent_length(X, y, domains)
    domains = np.asarray(domains)
    if domains.ndim != 1:
        raise ValueError(f"domains must be one-dimensional, got shape {domains.shape}.")
    held_out = _held_out_domains(domains, test_domains)
    if scoring is not None and not (isinstance(scoring, str) or callable(scoring)):
        raise ValueError(
            "scoring must be one scorer (a name or a callable); several metrics would need one "
            f"leave_one_domain_out call each. Got {scoring!r}."
        )
    splits = [
        (np.flatnonzero(domains != domain), np.flatnonzero(domains == domain))
        for domain in held_out
    ]
    fit_params = dict(params or {})
    if domain_param is not None:
        if domain_param in fit_params:
            raise ValueError(f"domain_param {domain_param!r} is also given in params.")
        fit_params[domain_param] = domains
    results = cross_validate(
        estimator,
        X,
        y,
        cv=splits,
        scoring=scoring,
        params=fit_params,
        return_estimator=return_estimator,
        n_jobs=n_jobs,
        error_score="raise",
    )
    return DomainScores(
        domains=held_out,
        scores=np.asarray(results["test_score"], dtype=float),
        n_train=np.array([len(train) for train, _ in splits]),
        n_test=np.array([len(test) for _, test in splits]),
        estimators=results.get("estimator"),
    )


def _held_out_domains(domains, test_domains):
    known = np.unique(domains)
    if len(known) < 2:
        raise ValueError(
            f"domains must contain at least two distinct domains, got {known.tolist()}."
        )
    if test_domains is None:
        return known
    held_out = np.asarray(test_domains)
    if held_out.ndim == 0:
        held_out = held_out[None]
    unknown = [d for d in held_out.tolist() if d not in set(known.tolist())]
    if unknown or len(held_out) == 0:
        raise ValueError(
            f"test_domains must be a non-empty subset of the domains {known.tolist()}, "
            f"got unknown {unknown if unknown else 'empty selection'}."
        )
    if len(set(held_out.tolist())) != len(held_out):
        raise ValueError(
            f"test_domains must not repeat a domain (each domain counts once in the mean), got "
            f"{held_out.tolist()}."
        )
    return held_out


def _check_same_domains(results):
    """Check that every method of ``results`` held out the same domains in the same order.

    Returns the first :class:`DomainScores`, whose domains label the rows of tables and plots.
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping of method name to DomainScores.")
    first = next(iter(results.values()))
    for name, scores in results.items():
        if scores.domains.tolist() != first.domains.tolist():
            raise ValueError(
                f"results[{name!r}] holds out domains {scores.domains.tolist()}, the others "
                f"{first.domains.tolist()}: every method must hold out the same domains in the "
                "same order."
            )
    return first


def format_domain_scores(results, *, precision=3):
    """Format several estimators' :class:`DomainScores` as a plain-text table.

    Parameters
    ----------
    results : mapping of str to DomainScores
        Scores per method name, all over the same held-out domains.
    precision : int, default=3
        Decimals shown.

    Returns
    -------
    table : str
        One row per held-out domain and a final ``mean`` row; one column per method.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.evaluation import DomainScores, format_domain_scores
    >>> scores = DomainScores(np.array(["a", "b"]), np.array([0.5, 1.0]),
    ...                       np.array([2, 2]), np.array([2, 2]))
    >>> print(format_domain_scores({"model": scores}))
    held-out domain  n_test  model
    a                     2  0.500
    b                     2  1.000
    mean                     0.750
    """
    first = _check_same_domains(results)
    names = list(results)
    rows = [
        [str(domain), str(n_test), *(f"{results[m].scores[i]:.{precision}f}" for m in names)]
        for i, (domain, n_test) in enumerate(zip(first.domains, first.n_test))
    ]
    rows.append(["mean", "", *(f"{results[m].mean_score:.{precision}f}" for m in names)])
    header = ["held-out domain", "n_test", *names]
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- the full protocol
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


def zero_shot_templates(templates="openai-imagenet"):
    """Prompt templates for the zero-shot columns, with one ``{}`` for the class name.

    Parameters
    ----------
    templates : str or sequence of str, default="openai-imagenet"
        ``"openai-imagenet"``: open_clip's 80 ImageNet templates of the CLIP paper;
        ``"simple-imagenet"``: open_clip's 7 selected ones; ``"skicm"``:
        :data:`skicm.zero_shot.DEFAULT_ZERO_SHOT_TEMPLATES`; a single template containing
        ``{}`` or a sequence of them is returned as a list.

    Returns
    -------
    templates : list of str

    Examples
    --------
    >>> from skicm.evaluation import zero_shot_templates
    >>> len(zero_shot_templates()), zero_shot_templates()[0]
    (80, 'a bad photo of a {}.')
    >>> zero_shot_templates("a photo of a {}.")
    ['a photo of a {}.']
    """
    _check_templates(templates)
    if isinstance(templates, str) and templates in _TEMPLATE_SETS:
        if templates == "skicm":
            from skicm.zero_shot import DEFAULT_ZERO_SHOT_TEMPLATES

            return list(DEFAULT_ZERO_SHOT_TEMPLATES)
        from open_clip import zero_shot_metadata

        name = templates.split("-")[0].upper() + "_IMAGENET_TEMPLATES"
        return [template("{}") for template in getattr(zero_shot_metadata, name)]
    return [templates] if isinstance(templates, str) else list(templates)


_TEMPLATE_SETS = ("openai-imagenet", "simple-imagenet", "skicm")


def _check_templates(templates):
    """Validate ``templates`` without importing open_clip."""
    if isinstance(templates, str) and "{}" not in templates:
        if templates not in _TEMPLATE_SETS:
            raise ValueError(
                f"templates must be one of {list(_TEMPLATE_SETS)} or templates with one '{{}}' "
                f"for the class name, got {templates!r}."
            )
        return
    values = [templates] if isinstance(templates, str) else list(templates)
    bad = [t for t in values if not isinstance(t, str) or t.count("{}") != 1]
    if not values or bad:
        raise ValueError(
            f"templates must hold strings with exactly one '{{}}' for the class name, got {bad}."
        )


@dataclass
class EvaluationResults:
    """Results of :func:`evaluate_domain_generalization` or :func:`evaluate_open_class`.

    One record per method, held-out domain, seed (and, for the open-class protocol, class
    split) with the test accuracy and the hyperparameters the selection rule chose.

    Attributes
    ----------
    records : list of dict
        The rows of ``results.csv`` (keys :data:`RESULT_COLUMNS`).
    methods : list of str
        Method names, in column order.
    domains : list of str
        Held-out domains, in order.
    selection : str
        The model-selection rule (one of :data:`SELECTION_RULES`).
    scoring : str
        What the selection rule scored: ``"accuracy"``, ``"interventional"`` (the worse of
        accuracy on the validation rows and on their counterparts) or ``"worst-environment"``.
    chance : float
        Accuracy of guessing uniformly among the classes.
    notes : list of str
        What could not be run and why (e.g. no zero-shot columns without a text tower).
    protocol : str
        ``"leave-one-domain-out"`` or ``"open-class"``.
    """

    records: list
    methods: list
    domains: list
    selection: str
    scoring: str
    chance: float
    notes: list = field(default_factory=list)
    protocol: str = "leave-one-domain-out"

    @property
    def selection_label(self):
        """The selection rule in words, oracle selection labelled as such."""
        return _SELECTION_LABELS[self.selection]

    @property
    def seeds(self):
        """The seeds of the records, sorted."""
        return sorted({record["seed"] for record in self.records})

    def _rows(self):
        """(label, method, classes) of each table row."""
        splits = list(dict.fromkeys(record["classes"] for record in self.records))
        rows = []
        for method in self.methods:
            for split in splits:
                if any(r["method"] == method and r["classes"] == split for r in self.records):
                    label = method if split == "all" else f"{method} [{split} classes]"
                    rows.append((label, method, split))
        return rows

    def accuracy(self, method, domain=None, *, classes="all"):
        """Mean and standard deviation over seeds of one method's accuracy.

        Parameters
        ----------
        method : str
            A name of :attr:`methods`.
        domain : str or None, default=None
            A held-out domain; None gives the average over held-out domains (computed per seed,
            then averaged over seeds, as DomainBed does).
        classes : {"all", "base", "new"}, default="all"
            The class split (the open-class protocol reports base and new classes apart).

        Returns
        -------
        mean, std : float
            Over seeds (``std`` is 0 for one seed).
        """
        if method not in self.methods:
            raise ValueError(f"method {method!r} is not one of {self.methods}.")
        per_seed = {}
        for record in self.records:
            if record["method"] != method or record["classes"] != classes:
                continue
            if domain is None or record["test_domain"] == domain:
                per_seed.setdefault(record["seed"], []).append(record["accuracy"])
        if not per_seed:
            raise ValueError(
                f"no result for method {method!r}, domain {domain!r}, classes {classes!r}."
            )
        values = np.array([np.mean(v) for v in per_seed.values()])
        return float(values.mean()), float(values.std())

    def to_csv(self, path):
        """Write one row per method, held-out domain, seed (and class split).

        Parameters
        ----------
        path : str or path-like
            The CSV file to write.

        Returns
        -------
        path : pathlib.Path
        """
        path = Path(path)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
            writer.writeheader()
            for record in self.records:
                writer.writerow({key: _csv_value(record[key]) for key in RESULT_COLUMNS})
        return path

    def to_markdown(self, *, title=None):
        """DomainBed-style tables: accuracy (%) mean ± std over seeds, then the chosen values.

        Parameters
        ----------
        title : str or None, default=None
            A heading put first.

        Returns
        -------
        markdown : str
            The accuracy table (one row per method, one column per held-out domain and an
            ``Average`` column), the selection rule in words, notes, and a table of the
            hyperparameters chosen in each fold.
        """
        lines = [f"## {title}", ""] if title else []
        seeds = self.seeds
        lines.append(
            f"Accuracy (%) on each held-out domain, mean ± std over {len(seeds)} seed"
            f"{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))}); model selection: "
            f"{self.selection_label}, scored by {self.scoring}. Chance: {100 * self.chance:.1f}."
        )
        lines.append("")
        header = ["method", *self.domains, "Average"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for label, method, split in self._rows():
            cells = [label]
            for domain in [*self.domains, None]:
                mean, std = self.accuracy(method, domain, classes=split)
                cells.append(f"{100 * mean:.1f} ± {100 * std:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
        for note in self.notes:
            lines.extend(["", f"Note: {note}"])
        lines.extend(["", "Chosen hyperparameters per held-out domain (one entry per seed):", ""])
        lines.append("| method | held-out domain | n_components (fitted) | alpha | C |")
        lines.append("|---|---|---|---|---|")
        for method in self.methods:
            for domain in self.domains:
                chosen = [
                    r
                    for r in self.records
                    if r["method"] == method and r["test_domain"] == domain
                    and r["classes"] in ("all", "base")
                ]  # fmt: skip
                if not chosen or all(r["n_candidates"] <= 1 for r in chosen):
                    continue
                n = _joined(
                    chosen,
                    lambda r: (
                        f"{r['n_components']} ({r['n_components_fitted']})"
                        if r["n_components"] is not None
                        else None
                    ),
                )
                alpha = _joined(chosen, lambda r: r["alpha"])
                c = _joined(chosen, lambda r: r["C"])
                lines.append(f"| {method} | {domain} | {n} | {alpha} | {c} |")
        return "\n".join(lines) + "\n"

    def plot(self, *, ax=None, title=None):
        """Per-domain bars (mean over seeds, std as error bars) with value labels and chance.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Where to draw; None creates a new figure.
        title : str or None, default=None
            Axes title, followed by a line naming the selection rule (which says when it is
            the test-domain oracle); None names the protocol.

        Returns
        -------
        figure : matplotlib.figure.Figure
        """
        from skicm.plotting import plot_domain_scores

        selection = f"selection: {self.selection}"
        if self.selection == "oracle":
            selection += " (test-domain oracle)"
        title = f"{self.protocol}; {selection}" if title is None else f"{title}\n{selection}"
        return plot_domain_scores(self, ax=ax, title=title)

    def save(self, output_dir, *, title=None):
        """Write ``results.csv``, ``results.md`` and ``results.png`` (needs matplotlib).

        Parameters
        ----------
        output_dir : str or path-like
            Folder, created if needed.
        title : str or None, default=None
            Heading of ``results.md`` and title of the plot.

        Returns
        -------
        paths : list of pathlib.Path
            The files written.
        """
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        csv_path = self.to_csv(folder / "results.csv")
        markdown_path = folder / "results.md"
        markdown_path.write_text(self.to_markdown(title=title))
        figure = self.plot(title=title)
        png_path = folder / "results.png"
        figure.savefig(png_path, dpi=120)
        import matplotlib.pyplot as plt

        plt.close(figure)
        return [csv_path, markdown_path, png_path]


def _joined(records, value):
    """One entry per seed, or a dash where the method has no such hyperparameter."""
    values = [value(record) for record in records]
    if all(v is None for v in values):
        return "-"
    return "; ".join(_csv_value(v) for v in values)


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# ------------------------------------------------------------------------------ data preparation
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


# ------------------------------------------------------------------------------ validation
def _as_tuple(values, name):
    if isinstance(values, (str, Real)):
        values = (values,)
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} must hold at least one value.")
    return values


def _resolve_n_components(values, n_features):
    resolved = []
    for value in _as_tuple(values, "n_components"):
        if value == "auto":
            resolved.append("auto")
        elif isinstance(value, Integral) and not isinstance(value, bool) and value >= 1:
            resolved.append(min(int(value), n_features))
        elif isinstance(value, Real) and 0 < value < 1:
            resolved.append(max(1, round(value * n_features)))
        else:
            raise ValueError(
                "n_components must hold 'auto', positive integers or fractions in (0, 1) of "
                f"the embedding width, got {value!r}."
            )
    return list(dict.fromkeys(resolved))


def _positive_values(values, name, *, allow_zero):
    values = _as_tuple(values, name)
    for value in values:
        ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (value == 0 and not allow_zero):
            kind = "non-negative" if allow_zero else "positive"
            raise ValueError(f"{name} must hold {kind} numbers, got {value!r}.")
    return [float(v) for v in dict.fromkeys(values)]


def _seed_list(seeds):
    if isinstance(seeds, Integral) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be a positive number of seeds or a list, got {seeds}.")
        return list(range(int(seeds)))
    seeds = [int(s) for s in _as_tuple(seeds, "seeds")]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must not repeat a seed, got {seeds}.")
    return seeds


def _has_text_tower(embedder):
    if embedder is None:
        return False
    return bool(getattr(embedder, "has_text_tower", hasattr(embedder, "encode_text")))


def _embedder_name(embedder):
    params = embedder.get_params() if hasattr(embedder, "get_params") else {}
    return str(params.get("model", params.get("model_name", type(embedder).__name__)))


def _check_classes(features, held_out):
    """A held-out class that no training domain has makes the probe's accuracy meaningless."""
    for domain in held_out:
        test = features.domains == domain
        train_classes = set(np.unique(features.y[~test]).tolist())
        test_classes = np.unique(features.y[test]).tolist()
        missing = [c for c in test_classes if c not in train_classes]
        if missing:
            names = _label_names(missing, features.class_names)
            training = sorted(set(features.domains[~test].tolist()))
            raise ValueError(
                f"the held-out domain {domain!r} has class{'es' if len(names) > 1 else ''} "
                f"{names} that no training domain ({', '.join(training)}) has: a classifier "
                "trained there can never predict it. If the domains name the same class "
                "differently (VLCS: hund / dog), map the folder names to one class name "
                "(class_aliases= in load_image_folders, --class-alias FOLDER=CLASS or "
                "--class-alias-file in skicm evaluate)."
            )
        if len(train_classes) < 2:
            raise ValueError(
                f"holding out {domain!r} leaves the training domains "
                f"{sorted(set(features.domains[~test].tolist()))} with the single class "
                f"{_label_names(sorted(train_classes), features.class_names)}; a classifier "
                "needs at least two classes."
            )


def _label_names(labels, class_names):
    if class_names is None:
        return [str(label) for label in labels]
    return [
        class_names[label] if isinstance(label, Integral) and 0 <= label < len(class_names)
        else str(label)
        for label in labels
    ]  # fmt: skip


# ------------------------------------------------------------------------------ methods
@dataclass
class _Method:
    name: str
    kind: str | None  # interventional data of the projector, None without projector
    zero_shot: bool
    grid: list  # list of dicts: n_components, alpha (ICM methods), C (probes)
    build: Callable  # (fitted projector or None, C or None) -> unfitted estimator


def _projector(kind, text_encoder, class_names):
    from skicm.interventions import TextInterventions
    from skicm.projection import InvariantProjector

    interventions = None
    if kind == "text":
        interventions = TextInterventions(text_encoder, class_names=list(class_names))
    projector = InvariantProjector(interventions=interventions)
    return projector.set_fit_request(X_intervened=kind == "image", groups=kind == "groups")


def _methods(kinds, *, zero_shot, probe, grid, text_encoder, class_names, templates):
    """The evaluated methods, in column order."""
    from sklearn.frozen import FrozenEstimator
    from sklearn.pipeline import Pipeline

    from skicm.zero_shot import ZeroShotClassifier

    projector_grid = [
        {"n_components": n, "alpha": a} for n, a in product(grid["n_components"], grid["alpha"])
    ]

    def zero_shot_classifier(projector, C=None):
        # A fitted projector is used as it is (one fit serves every rank of the grid).
        return ZeroShotClassifier(
            list(class_names), encoder=text_encoder, templates=templates, projector=projector,
            refit_projector=False,
        )  # fmt: skip

    def linear_probe(projector, C):
        probe_steps = make_linear_probe(C).steps
        if projector is None:
            return Pipeline(probe_steps)
        return Pipeline([("invariantprojector", FrozenEstimator(projector)), *probe_steps])

    methods = []
    if zero_shot:
        methods.append(_Method("zero-shot", None, True, [{}], zero_shot_classifier))
        for kind in kinds:
            name = f"zero-shot ICM ({kind})"
            methods.append(_Method(name, kind, True, projector_grid, zero_shot_classifier))
    if probe:
        c_grid = [{"C": c} for c in grid["C"]]
        methods.append(_Method("linear probe", None, False, c_grid, linear_probe))
        for kind in kinds:
            pipeline_grid = [{**p, **c} for p, c in product(projector_grid, c_grid)]
            name = f"linear probe ICM ({kind})"
            methods.append(_Method(name, kind, False, pipeline_grid, linear_probe))
    return methods


class _ProjectorFits:
    """Fitted projectors by (kind, alpha, training rows): one eigendecomposition per alpha.

    The directions of a projector fitted with ``n_components=k`` are the first ``k`` of the
    same projector fitted with every direction (the eigenvectors of one ``M``), so every rank
    of the grid is a truncation of one fit: a grid over ``r`` ranks and ``c`` values of ``C``
    costs one projector fit instead of ``r * c``.
    """

    def __init__(self, features, text_encoder, class_names):
        self.features = features
        self.text_encoder = text_encoder
        self.class_names = class_names
        self._fits = {}

    def get(self, kind, alpha, n_components, rows):
        key = (kind, alpha, rows.shape[0], hashlib.sha1(rows.tobytes()).hexdigest())
        full = self._fits.get(key)
        if full is None:
            projector = _projector(kind, self.text_encoder, self.class_names)
            projector.set_params(n_components=self.features.X.shape[1], alpha=alpha)
            full = self._fits[key] = _fit(projector, self.features, rows, kind)
        return _truncated(full, n_components)


def _truncated(projector, n_components):
    """The projector with its first directions only, as if fitted with ``n_components``."""
    from skicm.projection import count_positive_eigenvalues

    if n_components == "auto":
        k = max(1, count_positive_eigenvalues(projector.eigenvalues_))
    else:
        k = min(int(n_components), projector.components_.shape[0])
    truncated = copy.copy(projector)
    truncated.n_components = n_components
    truncated.n_components_ = k
    for name in ("components_", "signal_variance_", "intervention_variance_", "invariance_ratio_"):
        setattr(truncated, name, getattr(projector, name)[:k])
    return truncated


# ------------------------------------------------------------------------------ selection
def _scorer(scoring):
    from sklearn.metrics import get_scorer

    if scoring == "accuracy":
        return get_scorer("accuracy")
    from skicm import model_selection

    if scoring == "interventional":
        return model_selection.make_interventional_scorer("accuracy")
    return model_selection.make_worst_environment_scorer("accuracy")


def _validation_splits(selection, X, y, groups, seed, validation_size):
    if selection == "training-domain":
        from skicm.model_selection import TrainingDomainSplit

        splitter = TrainingDomainSplit(test_size=validation_size, random_state=seed)
    else:
        from sklearn.model_selection import LeaveOneGroupOut

        if len(np.unique(groups)) < 2:
            raise ValueError(
                "selection='leave-one-domain-out' needs at least two training domains; "
                f"the training rows hold only {np.unique(groups).tolist()}."
            )
        splitter = LeaveOneGroupOut()
    return list(splitter.split(X, y, groups=groups))


def _fit(estimator, features, rows, kind):
    params = {}
    if kind == "image":
        params["X_intervened"] = features.X_intervened[rows]
    elif kind == "groups":
        params["groups"] = features.domains[rows]
    with warnings.catch_warnings():
        # A fold may lack the interventional data of a kind (one training domain for groups);
        # the projector then warns and the score says what it is worth.
        warnings.filterwarnings("ignore", message=".*interventional data.*")
        return estimator.fit(features.X[rows], features.y[rows], **params)


def _score(scorer, scoring, estimator, features, rows):
    params = {}
    if scoring == "interventional":
        params["X_intervened"] = features.X_intervened[rows]
    elif scoring == "worst-environment":
        params["groups"] = features.domains[rows]
    return float(scorer(estimator, features.X[rows], features.y[rows], **params))


def _fit_candidate(method, params, features, rows, projectors):
    projector = None
    if method.kind is not None:
        projector = projectors.get(method.kind, params["alpha"], params["n_components"], rows)
    estimator = method.build(projector, params.get("C"))
    return _fit(estimator, features, rows, None)


def _select_and_fit(method, features, train, test, *, selection, scoring, seed, validation_size,
                    projectors, bar):  # fmt: skip
    """Choose the method's hyperparameters by ``selection``, refit on ``train``; return both."""
    candidates = method.grid
    if len(candidates) == 1:
        chosen, validation = candidates[0], None
        bar.update(1)
    else:
        if selection == "oracle":
            splits = [(train, test)]
            scorer, score_kind = _scorer("accuracy"), "accuracy"
        else:
            local = _validation_splits(
                selection, features.X[train], features.y[train], features.domains[train], seed,
                validation_size,
            )  # fmt: skip
            splits = [(train[fit_rows], train[val_rows]) for fit_rows, val_rows in local]
            scorer, score_kind = _scorer(scoring), scoring
        scores = []
        for params in candidates:
            fold_scores = []
            for fit_rows, val_rows in splits:
                estimator = _fit_candidate(method, params, features, fit_rows, projectors)
                fold_scores.append(_score(scorer, score_kind, estimator, features, val_rows))
            scores.append(float(np.mean(fold_scores)))
            bar.update(1)
        best = int(np.argmax(scores))  # the first of equal scores: the grid's order breaks ties
        chosen, validation = candidates[best], scores[best]
    estimator = _fit_candidate(method, chosen, features, train, projectors)
    return estimator, chosen, validation


def _chosen_values(method, estimator, chosen):
    values = {"n_components": None, "n_components_fitted": None, "alpha": None, "C": None}
    projector = None
    if method.kind is not None:
        projector = estimator.projector_ if method.zero_shot else estimator[0].estimator
    if projector is not None:
        values["n_components"] = projector.n_components
        values["n_components_fitted"] = int(projector.n_components_)
        values["alpha"] = float(projector.alpha)
    if not method.zero_shot:
        values["C"] = float(estimator[-1].C)
    del chosen
    return values


# ------------------------------------------------------------------------------ public protocols
def _resolve_options(
    features, *, embedder, interventions, zero_shot, scoring, selection, notes, open_class
):
    """Which kinds of interventional data and which zero-shot columns can run, and the scorer."""
    if selection not in SELECTION_RULES:
        raise ValueError(f"selection must be one of {list(SELECTION_RULES)}, got {selection!r}.")
    if scoring not in _SCORINGS:
        raise ValueError(f"scoring must be one of {list(_SCORINGS)}, got {scoring!r}.")
    text_tower = _has_text_tower(embedder)
    available = {
        "image": features.X_intervened is not None,
        "text": text_tower and features.class_names is not None,
        "groups": True,
    }
    reasons = {
        "image": "the data have no counterparts (images_intervened / data_intervened) and no "
        "images to intervene on",
        "text": (
            f"the encoder {_embedder_name(embedder)!r} has no text tower"
            if embedder is not None and not text_tower
            else "there is no text encoder (raw features)"
            if embedder is None
            else "the data name no classes (target_names)"
        ),
    }
    if interventions == "auto":
        kinds = [kind for kind in INTERVENTION_KINDS if available[kind]]
        for kind in INTERVENTION_KINDS:
            if not available[kind]:
                notes.append(f"no '{kind}' interventions: {reasons[kind]}.")
    else:
        kinds = list(dict.fromkeys(_as_tuple(interventions, "interventions")))
        for kind in kinds:
            if kind not in INTERVENTION_KINDS:
                raise ValueError(
                    f"interventions must hold kinds of {list(INTERVENTION_KINDS)} or be "
                    f"'auto', got {kind!r}."
                )
            if not available[kind]:
                raise ValueError(f"interventions={kind!r} cannot run: {reasons[kind]}.")
    zero_shot_possible = text_tower and features.class_names is not None
    if open_class and not zero_shot_possible:
        raise ValueError(
            "the open-class protocol classifies new classes by their names: it needs an "
            f"encoder with a text tower and class names ({reasons['text']})."
        )
    if zero_shot == "auto":
        zero_shot = zero_shot_possible
        if not zero_shot_possible:
            notes.append(
                "no zero-shot columns: "
                + (
                    "zero-shot classification needs a text tower, and "
                    f"{reasons['text'].removeprefix('the encoder ')}"
                    if not text_tower
                    else "the data name no classes (target_names)"
                )
                + "."
            )
    elif zero_shot and not zero_shot_possible:
        raise ValueError(f"zero_shot=True cannot run: {reasons['text']}.")
    if scoring == "auto":
        scoring = "interventional" if features.X_intervened is not None else "accuracy"
    elif scoring == "interventional" and features.X_intervened is None:
        raise ValueError(
            f"scoring='interventional' needs counterparts of the validation rows: "
            f"{reasons['image']}."
        )
    if selection == "oracle":
        scoring = "accuracy"
    return kinds, bool(zero_shot), scoring


def _protocol(
    data,
    *,
    embedder,
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
    progress,
    base_classes=None,
):
    open_class = base_classes is not None
    seeds = _seed_list(seeds)
    alphas = _positive_values(alpha, "alpha", allow_zero=True)
    c_values = _positive_values(C, "C", allow_zero=False)
    if not (isinstance(validation_size, Real) and 0 < validation_size < 1):
        raise ValueError(f"validation_size must be in (0, 1), got {validation_size!r}.")
    _check_templates(templates)
    want_image = interventions == "auto" or "image" in _as_tuple(interventions, "interventions")
    make_data = data if callable(data) else None

    records, notes, methods_seen = [], [], []
    features, resolved = None, None
    chance = None
    for seed in _progress_iter(seeds, "seeds", progress):
        if features is None or make_data is not None:
            bunch = make_data(random_state=seed) if make_data is not None else data
            features = _prepare_features(
                bunch, embedder, want_image=want_image, intervention_seed=intervention_seed,
                progress=progress,
            )  # fmt: skip
        if resolved is None:
            kinds, use_zero_shot, scoring_used = _resolve_options(
                features, embedder=embedder, interventions=interventions, zero_shot=zero_shot,
                scoring=scoring, selection=selection, notes=notes, open_class=open_class,
            )  # fmt: skip
            grid = {
                "n_components": _resolve_n_components(n_components, features.X.shape[1]),
                "alpha": alphas,
                "C": c_values,
            }
            held_out = [str(d) for d in _held_out_domains(features.domains, test_domains)]
            n_classes = len(features.class_names or np.unique(features.y))
            chance = 1.0 / n_classes
            resolved = True
        if open_class:
            base = _base_labels(base_classes, features)
            class_names_for_projector = [features.class_names[label] for label in sorted(base)]
        else:
            base = None
            class_names_for_projector = features.class_names
            _check_classes(features, held_out)
        if use_zero_shot and not isinstance(templates, list):
            templates = zero_shot_templates(templates)
        methods = _methods(
            kinds, zero_shot=use_zero_shot, probe=linear_probe and not open_class, grid=grid,
            text_encoder=embedder, class_names=_prompt_names(features.class_names),
            templates=templates,
        )  # fmt: skip
        if not methods_seen:
            methods_seen = [m.name for m in methods]
        total = len(held_out) * sum(len(m.grid) for m in methods)
        bar = _progress(total=total, desc=f"seed {seed}: grid candidates", enabled=progress)
        for domain in held_out:
            test = np.flatnonzero(features.domains == domain)
            train = np.flatnonzero(features.domains != domain)
            if open_class:
                train = train[np.isin(features.y[train], list(base))]
            # The projectors of this fold (and of its validation splits), shared by the
            # zero-shot and probe columns of each kind.
            projectors = _ProjectorFits(
                features, embedder, _prompt_names(class_names_for_projector)
            )
            for method in methods:
                bar.set_postfix_str(f"held out {domain}: {method.name}")
                estimator, chosen, validation = _select_and_fit(
                    method, features, train, test, selection=selection, scoring=scoring_used,
                    seed=seed, validation_size=validation_size, projectors=projectors, bar=bar,
                )  # fmt: skip
                common = {
                    "method": method.name,
                    "test_domain": domain,
                    "seed": seed,
                    "selection": selection,
                    "scoring": scoring_used if len(method.grid) > 1 else "",
                    "validation_score": validation,
                    "n_candidates": len(method.grid),
                    "n_train": len(train),
                    **_chosen_values(method, estimator, chosen),
                }
                predictions = estimator.predict(features.X[test])
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
        methods=methods_seen,
        domains=held_out,
        selection=selection,
        scoring=scoring_used,
        chance=chance,
        notes=notes,
        protocol="open-class" if open_class else "leave-one-domain-out",
    )


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


_PARAMETER_DOCS = {  # numpydoc entries, composed in signature order by _document_parameters
    "data": """\
    data : Bunch or callable
        A data set as :func:`skicm.datasets.load_image_folders` returns it (``paths``,
        ``target``, ``target_names``, ``domains``) or as the MNIST builders do (``data``,
        ``data_intervened``, ``images``, ``images_intervened``, ``target``,
        ``environments``); or a callable ``data(random_state=seed)`` returning one per seed.""",
    "embedder": """\
    embedder : estimator with ``transform`` or None, default=None
        Embeds ``data.paths`` or ``data.images`` (and the counterparts), e.g. a
        :class:`~skicm.CLIPEmbedder`; its ``store`` keeps the embeddings (an SQLite path: a
        rerun encodes nothing). None uses ``data.data`` as features (raw pixels). Zero-shot
        columns and text interventions need its text tower (``has_text_tower``).""",
    "interventions": """\
    interventions : "auto" or sequence of {"image", "text", "groups"}, default="auto"
        Interventional data of the projector, one column per kind. ``"image"``: counterparts
        (``data.images_intervened`` / ``data.data_intervened``, or the paper's seven image
        interventions drawn with ``intervention_seed``); ``"text"``: domain prompts of the
        class names; ``"groups"``: the training domains' labels. ``"auto"``: every kind the
        data and encoder allow (what is skipped is said in ``notes``).""",
    "zero_shot": """\
    zero_shot : "auto" or bool, default="auto"
        Zero-shot columns (plain and in the invariant subspace); ``"auto"``: where the encoder
        has a text tower and the data name their classes.""",
    "selection": """\
    selection : {"training-domain", "leave-one-domain-out", "oracle"}, default="training-domain"
        How each held-out domain's hyperparameters are chosen: on ``validation_size`` of every
        training domain (:class:`skicm.model_selection.TrainingDomainSplit`), by
        :class:`~sklearn.model_selection.LeaveOneGroupOut` over the training domains, or on the
        held-out domain itself (``"oracle"``: labelled as such in every output).""",
    "scoring": """\
    scoring : {"auto", "accuracy", "interventional", "worst-environment"}, default="auto"
        What the selection maximises. ``"interventional"``
        (:func:`skicm.model_selection.make_interventional_scorer`): the worse of the accuracy
        on the validation rows and on their counterparts, so a spurious feature that the
        counterparts change is not selected; ``"auto"`` uses it wherever counterparts exist,
        else accuracy. ``"worst-environment"``: the lowest per-domain accuracy of the
        validation rows. Oracle selection always scores test accuracy.""",
    "n_components": """\
    n_components : sequence, default=DEFAULT_GRID["n_components"]
        Ranks of the grid: ``"auto"``, integers, or fractions in (0, 1) of the width.""",
    "alpha": """\
    alpha : sequence of float, default=DEFAULT_GRID["alpha"]
        Weights of the intervention term in the grid.""",
    "C": """\
    C : sequence of float, default=DEFAULT_GRID["C"]
        Inverse regularisation strengths of the linear probe in the grid.""",
    "seeds": """\
    seeds : int or sequence of int, default=1
        Seeds (an int ``n``: ``0 .. n - 1``). A seed draws the training-domain validation
        split and, when ``data`` is a callable, the data set itself (``data(random_state=
        seed)``, as DomainBed's trials); results are reported as mean and std over seeds.""",
    "test_domains": """\
    test_domains : sequence of str or None, default=None
        Domains to hold out, in order; None holds out each domain.""",
    "templates": """\
    templates : str or sequence of str, default="openai-imagenet"
        Zero-shot prompt templates (see :func:`zero_shot_templates`).""",
    "intervention_seed": """\
    intervention_seed : int, default=0
        Seed of the image interventions (fixed across ``seeds``, so the store keeps one
        counterpart per image).""",
    "validation_size": """\
    validation_size : float, default=0.2
        Share of every training domain held out by training-domain selection.""",
    "progress": """\
    progress : bool, default=True
        tqdm progress bars over seeds and grid candidates (the embedder shows its own).""",
    "linear_probe": """\
    linear_probe : bool, default=True
        Linear-probe columns.""",
    "base_classes": """\
    base_classes : float or sequence of str, default=0.5
        A fraction: the first ``ceil(fraction * n_classes)`` classes (in ``target_names``
        order) are base; or the base class names.""",
}


def evaluate_domain_generalization(
    data,
    *,
    embedder=None,
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
    {parameters}

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
        progress=progress,
    )


def evaluate_open_class(
    data,
    *,
    embedder,
    base_classes=0.5,
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
    {parameters}

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
        progress=progress,
        base_classes=base_classes,
    )


def _document_parameters(function, **overrides):
    """Fill ``{parameters}`` of ``function``'s docstring in the order of its signature."""
    import inspect

    docs = {**_PARAMETER_DOCS, **overrides}
    names = inspect.signature(function).parameters
    function.__doc__ = function.__doc__.replace(
        "    {parameters}", "\n".join(docs[name] for name in names)
    )


_document_parameters(evaluate_domain_generalization)
_document_parameters(
    evaluate_open_class,
    data=_PARAMETER_DOCS["data"] + " It must name its classes (``target_names``).",
    embedder=(
        "    embedder : estimator with ``transform`` and ``encode_text``\n"
        "        The image and text encoder (a text tower is needed to name new classes), e.g.\n"
        "        a :class:`~skicm.CLIPEmbedder`; its ``store`` keeps the embeddings."
    ),
)
