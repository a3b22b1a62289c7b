"""Model selection per held-out domain: validation splits, scorers, a grid search of its own."""

from __future__ import annotations

import warnings

import numpy as np


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
