"""One fixed estimator under leave-one-domain-out: :func:`leave_one_domain_out` and its scores."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import cross_validate
from sklearn.utils.validation import check_consistent_length


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
