"""Model selection per held-out domain: the scorings, validation splits, and a grid search of
its own (candidates share one projector fit per alpha and may run in parallel)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from skicm.evaluation._features import _data_params, _fit_with
from skicm.evaluation._methods import MethodContext, _ProjectorFits


def _accuracy_scorer():
    from sklearn.metrics import get_scorer

    return get_scorer("accuracy")


def _interventional_scorer():
    from skicm.model_selection import make_interventional_scorer

    return make_interventional_scorer("accuracy")


def _worst_environment_scorer():
    from skicm.model_selection import make_worst_environment_scorer

    return make_worst_environment_scorer("accuracy")


@dataclass(frozen=True)
class Scoring:
    """A named rule that scores the validation rows of model selection.

    Parameters
    ----------
    name : str
        The name used by ``scoring=`` and ``skicm evaluate --scoring``.
    make_scorer : callable
        ``make_scorer()`` returns a scikit-learn scorer
        ``scorer(estimator, X, y, **score_params)``.
    score_params : tuple of str, default=()
        What the scorer receives with the validation rows: ``"X_intervened"`` (their
        counterparts) and/or ``"groups"`` (their domains).
    description : str, default=""
        One line for the command line's help.
    """

    name: str
    make_scorer: Callable
    score_params: tuple = ()
    description: str = ""

    @property
    def needs(self):
        """What the data must hold: ``["counterparts"]`` for a scorer of counterparts."""
        return ["counterparts"] if "X_intervened" in self.score_params else []


#: The scorings of model selection, by name (``"auto"`` picks ``"interventional"`` where the
#: data have counterparts, else ``"accuracy"``). Adding a scoring is one entry.
SCORINGS = {
    scoring.name: scoring
    for scoring in (
        Scoring("accuracy", _accuracy_scorer, description="accuracy of the validation rows"),
        Scoring(
            "interventional", _interventional_scorer, ("X_intervened",),
            "the worse of the accuracy on the validation rows and on their counterparts",
        ),
        Scoring(
            "worst-environment", _worst_environment_scorer, ("groups",),
            "the lowest per-domain accuracy of the validation rows",
        ),
    )
}  # fmt: skip


def _validation_splits(selection, X, y, groups, seed, validation_size):
    if selection == "training-domain":
        from skicm.model_selection import TrainingDomainSplit

        splitter = TrainingDomainSplit(test_size=validation_size, random_state=seed)
    elif selection == "leave-one-domain-out":
        from sklearn.model_selection import LeaveOneGroupOut

        if len(np.unique(groups)) < 2:
            raise ValueError(
                "selection='leave-one-domain-out' needs at least two training domains; "
                f"the training rows hold only {np.unique(groups).tolist()}."
            )
        splitter = LeaveOneGroupOut()
    else:
        raise ValueError(f"no validation splits for selection={selection!r}.")
    return list(splitter.split(X, y, groups=groups))


def _score(scoring, scorer, estimator, features, rows):
    params = _data_params(features, rows, scoring.score_params)
    return float(scorer(estimator, features.X[rows], features.y[rows], **params))


def _fit_candidate(column, params, features, rows, fold):
    """Build the column's estimator for one candidate and fit it on ``rows``."""
    context = fold.context(column.kind, rows)
    estimator = column.method.build(context, params)
    return _fit_with(estimator, features, rows, column.method.fit_params), context.projector_


def _select_and_fit(column, candidates, features, train, test, *, selection, scoring, seed,
                    validation_size, fold, bar):  # fmt: skip
    """Choose the column's hyperparameters by ``selection``, refit on ``train``.

    Returns the fitted estimator, the chosen candidate, its validation score (None without a
    choice to make) and the invariant projector the estimator uses (None without one).
    """
    if len(candidates) == 1:
        chosen, validation = candidates[0], None
        bar.update(1)
    else:
        if selection == "oracle":
            splits = [(train, test)]
            scoring = SCORINGS["accuracy"]
        else:
            local = _validation_splits(
                selection, features.X[train], features.y[train], features.domains[train], seed,
                validation_size,
            )  # fmt: skip
            splits = [(train[fit_rows], train[val_rows]) for fit_rows, val_rows in local]
        scorer = scoring.make_scorer()
        if column.kind is not None:
            # Every projector the candidates will truncate, fitted first (in parallel): one
            # eigendecomposition per alpha and split, never two threads computing the same.
            alphas = list(dict.fromkeys(c["alpha"] for c in candidates if "alpha" in c))
            jobs = [(alpha, rows) for alpha in alphas for rows, _ in splits]
            fold.map(lambda job: fold.projectors.full(column.kind, *job), jobs, None)

        def score(params):
            fold_scores = []
            for fit_rows, val_rows in splits:
                estimator, _ = _fit_candidate(column, params, features, fit_rows, fold)
                fold_scores.append(_score(scoring, scorer, estimator, features, val_rows))
            return float(np.mean(fold_scores))

        scores = fold.map(score, candidates, bar)
        best = int(np.argmax(scores))  # the first of equal scores: the grid's order breaks ties
        chosen, validation = candidates[best], scores[best]
    estimator, projector = _fit_candidate(column, chosen, features, train, fold)
    return estimator, chosen, validation, projector


def _chosen_values(chosen, projector):
    """The ``results.csv`` columns of the chosen hyperparameters."""
    values = {"n_components": None, "n_components_fitted": None, "alpha": None, "C": None}
    if projector is not None:
        values["n_components"] = projector.n_components
        values["n_components_fitted"] = int(projector.n_components_)
        values["alpha"] = float(projector.alpha)
    elif "n_components" in chosen:
        values["n_components"] = chosen["n_components"]
    if "alpha" in chosen and values["alpha"] is None:
        values["alpha"] = float(chosen["alpha"])
    if "C" in chosen:
        values["C"] = float(chosen["C"])
    return values


class _Fold:
    """What the columns of one held-out domain share: the projectors fitted on each set of
    rows (one eigendecomposition per kind, alpha and rows) and the workers of the grid."""

    def __init__(self, features, *, text_encoder, class_names, projector_class_names,
                 templates, n_jobs):  # fmt: skip
        self.features = features
        self.text_encoder = text_encoder
        self.class_names = class_names
        self.templates = templates
        self.n_jobs = n_jobs
        self.projectors = _ProjectorFits(features, text_encoder, projector_class_names)

    def context(self, kind, rows):
        domains = sorted(set(self.features.domains[rows].tolist()))
        return MethodContext(
            kind=kind, text_encoder=self.text_encoder, class_names=self.class_names,
            templates=self.templates, training_domains=domains, _projectors=self.projectors,
            _rows=rows,
        )  # fmt: skip

    def map(self, function, candidates, bar):
        """``[function(c) for c in candidates]``, on ``n_jobs`` threads where it is above 1."""
        if self.n_jobs == 1 or len(candidates) == 1:
            results = []
            for candidate in candidates:
                results.append(function(candidate))
                if bar is not None:
                    bar.update(1)
            return results
        from sklearn.utils.parallel import Parallel, delayed

        results = Parallel(n_jobs=self.n_jobs, prefer="threads", return_as="generator")(
            delayed(function)(candidate) for candidate in candidates
        )
        collected = []
        for result in results:
            collected.append(result)
            if bar is not None:
                bar.update(1)
        return collected
