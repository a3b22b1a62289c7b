"""The ``skicm demo`` protocol: Colored MNIST (IRM) on scikit-learn's digits, three ways.

Plain ERM learns the colour, which flips at test time; :class:`~skicm.InvariantProjector` fitted
on colour-swap interventions removes the colour subspace before the same classifier; the
grayscale oracle never sees colour. Everything runs on raw pixels in seconds, or on the
embeddings of any image embedder (for example :class:`skicm.CLIPEmbedder`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skicm.datasets._colored_digits import make_colored_digits

__all__ = ["IRM_PAPER_TEST_ACCURACY", "DemoResults", "run_colored_digits_demo"]

#: Test-environment accuracies on full Colored MNIST reported by Arjovsky et al. (2019, Table 1).
IRM_PAPER_TEST_ACCURACY = {"ERM": 0.17, "IRM": 0.67, "grayscale oracle": 0.73, "optimum": 0.75}

#: Samples kept per environment in fast mode: enough for a wide, stable ERM-vs-projector gap.
FAST_SAMPLES_PER_ENVIRONMENT = 200


@dataclass
class DemoResults:
    """Outcome of :func:`run_colored_digits_demo`.

    Attributes
    ----------
    rows : list of dict
        One dict per method with keys ``method``, ``n_features``, ``train_accuracy``,
        ``test_accuracy`` and ``paper_test_accuracy`` (the IRM paper's figure on full Colored
        MNIST, or None). Accuracies are None where a method was not run here.
        ``pandas.DataFrame(results.rows)`` gives a data frame.
    projector : InvariantProjector
        The fitted projector, e.g. for :func:`skicm.plotting.plot_spectrum`.
    features : str
        What the classifiers saw: ``"pixels"`` or a description of the embedder.
    n_train, n_test : int
        Number of training and test samples.
    color_agreement : tuple of float
        Colour agreement of the training environments, then of the test environment.
    """

    rows: list
    projector: object
    features: str
    n_train: int
    n_test: int
    color_agreement: tuple = field(default=())

    def accuracy(self, method, split="test"):
        """Accuracy of one method of the table.

        Parameters
        ----------
        method : str
            Row of the table, e.g. ``"ERM"``, ``"CLIP-ICM projector"``, ``"grayscale oracle"``.
        split : {"train", "test"}, default="test"
            Training environments or test environment.

        Returns
        -------
        accuracy : float
            The accuracy.
        """
        for row in self.rows:
            if row["method"] == method:
                return row[f"{split}_accuracy"]
        names = [row["method"] for row in self.rows]
        raise ValueError(f"method must be one of {names}, got {method!r}.")

    def to_text(self):
        """Format the results as the plain-text table printed by ``skicm demo``.

        Returns
        -------
        table : str
            The table, with IRM's published figures beside the measured ones.
        """
        *train_agreement, test_agreement = self.color_agreement
        header = (
            f"Colored digits (IRM's Colored MNIST protocol on scikit-learn's 8x8 digits)\n"
            f"features: {self.features}; train {self.n_train} samples (colour agrees with the "
            f"label {', '.join(f'{a:.0%}' for a in train_agreement)}), test {self.n_test} "
            f"samples (agrees {test_agreement:.0%})\n"
        )
        columns = ("method", "dims", "train acc", "test acc", "IRM paper test acc (full MNIST)")
        width = max(len(columns[0]), *(len(row["method"]) for row in self.rows))
        name, dims, train, test, paper = columns
        lines = [f"{name:<{width}}  {dims:>4}  {train:>9}  {test:>8}  {paper}"]
        for row in self.rows:
            dims = "-" if row["n_features"] is None else str(row["n_features"])
            train, test, paper = (
                "-" if value is None else f"{value:.2f}"
                for value in (
                    row["train_accuracy"],
                    row["test_accuracy"],
                    row["paper_test_accuracy"],
                )
            )
            lines.append(f"{row['method']:<{width}}  {dims:>4}  {train:>9}  {test:>8}  {paper:>6}")
        return header + "\n".join(lines)

    def __str__(self):
        return self.to_text()


def _take_per_environment(environment, limit):
    if limit is None:
        return np.arange(len(environment))
    return np.concatenate(
        [np.flatnonzero(environment == e)[:limit] for e in np.unique(environment)]
    )


def run_colored_digits_demo(
    *,
    fast=False,
    n_components="auto",
    alpha=1.0,
    color_agreement=(0.9, 0.8, 0.1),
    test_environment=-1,
    label_noise=0.25,
    embedder=None,
    random_state=0,
):
    """Run ERM, the invariant projector and the grayscale oracle on colored digits.

    The data come from :func:`skicm.datasets.make_colored_digits`. All environments but
    ``test_environment`` are pooled for training. Each method is a logistic regression on:

    - ERM: the coloured images;
    - projector: the coloured images projected by an :class:`~skicm.InvariantProjector`
      fitted on the training images and their colour-swapped counterparts
      (``X_intervened``), so that directions that change under a colour swap are dropped;
    - grayscale oracle: the grayscale images (colour removed by hand).

    Parameters
    ----------
    fast : bool, default=False
        Keep only the first 200 samples of each environment (about three times fewer), e.g.
        for tests or an expensive ``embedder``.
    n_components : "auto" or int, default="auto"
        Rank of the projector, see :class:`~skicm.InvariantProjector`.
    alpha : float, default=1.0
        Weight of the intervention term of the projector's objective.
    color_agreement : sequence of float, default=(0.9, 0.8, 0.1)
        Colour-label agreement per environment, as in
        :func:`~skicm.datasets.make_colored_digits`.
    test_environment : int, default=-1
        Index into ``color_agreement`` of the environment held out for testing.
    label_noise : float, default=0.25
        Probability of flipping a label; the best possible accuracy is ``1 - label_noise``.
    embedder : transformer or None, default=None
        If None, the classifiers see raw pixels. Otherwise a fitted or stateless transformer
        (``transform`` is called without ``fit``) whose ``transform`` maps uint8 RGB images
        of shape (n, 8, 8, 3) to features, e.g.
        :class:`skicm.CLIPEmbedder`; its features are standardised before the classifier.
    random_state : int, RandomState instance or None, default=0
        Seed of the data (environments, label noise, colours) and of the classifiers.

    Returns
    -------
    results : DemoResults
        The table (``results.rows``, printed by ``print(results)``) and the fitted projector.

    Examples
    --------
    >>> from skicm.demo import run_colored_digits_demo
    >>> results = run_colored_digits_demo(fast=True)
    >>> results.accuracy("ERM") < 0.3 < 0.5 < results.accuracy("CLIP-ICM projector")
    True
    """
    agreement = tuple(np.atleast_1d(np.asarray(color_agreement, dtype=float)).tolist())
    if len(agreement) < 2:
        raise ValueError(
            "color_agreement must list at least two environments (training and test), "
            f"got {color_agreement!r}."
        )
    if (
        not isinstance(test_environment, numbers.Integral)
        or isinstance(test_environment, bool)
        or not -len(agreement) <= test_environment < len(agreement)
    ):
        raise ValueError(
            f"test_environment must index one of the {len(agreement)} environments of "
            f"color_agreement, got {test_environment!r}."
        )
    test_environment = int(test_environment) % len(agreement)

    # Imported here so that ``import skicm.demo`` never needs the projector's dependencies.
    from skicm.projection import InvariantProjector

    data = make_colored_digits(agreement, label_noise=label_noise, random_state=random_state)
    keep = _take_per_environment(data.environment, FAST_SAMPLES_PER_ENVIRONMENT if fast else None)
    environment = data.environment[keep]
    train, test = environment != test_environment, environment == test_environment
    y = data.y[keep]

    if embedder is None:
        features = "pixels"
        colored, swapped, gray = data.X[keep], data.X_swapped[keep], data.X_gray[keep]
    else:
        features = _describe(embedder)
        colored, swapped, gray = (
            np.asarray(embedder.transform(images[keep]))
            for images in (data.images, data.images_swapped, data.images_gray)
        )

    def classifier():
        logistic = LogisticRegression(max_iter=2000, random_state=random_state)
        # Embeddings are unit-norm with tiny coordinates: standardise them so that the default
        # regularisation means the same as on pixels in [0, 1].
        return logistic if embedder is None else make_pipeline(StandardScaler(), logistic)

    projector = InvariantProjector(n_components=n_components, alpha=alpha)
    projector.fit(colored[train], X_intervened=swapped[train])
    views = {
        "ERM": colored,
        "CLIP-ICM projector": projector.transform(colored),
        "grayscale oracle": gray,
    }
    rows = []
    for method, Z in views.items():
        model = classifier().fit(Z[train], y[train])
        rows.append(
            {
                "method": method,
                "n_features": Z.shape[1],
                "train_accuracy": float(model.score(Z[train], y[train])),
                "test_accuracy": float(model.score(Z[test], y[test])),
                "paper_test_accuracy": IRM_PAPER_TEST_ACCURACY.get(method),
            }
        )
    rows.insert(
        2,
        {
            "method": "IRM",
            "n_features": None,
            "train_accuracy": None,
            "test_accuracy": None,
            "paper_test_accuracy": IRM_PAPER_TEST_ACCURACY["IRM"],
        },
    )
    rows.append(
        {
            "method": "optimum",
            "n_features": None,
            "train_accuracy": 1 - label_noise,
            "test_accuracy": 1 - label_noise,
            "paper_test_accuracy": IRM_PAPER_TEST_ACCURACY["optimum"],
        }
    )
    train_agreement = [a for e, a in enumerate(agreement) if e != test_environment]
    return DemoResults(
        rows=rows,
        projector=projector,
        features=features,
        n_train=int(train.sum()),
        n_test=int(test.sum()),
        color_agreement=(*train_agreement, agreement[test_environment]),
    )


def _describe(embedder):
    name = getattr(embedder, "model_name", None)
    if name is None:
        model = getattr(embedder, "model", None)
        if isinstance(model, str):
            return f"{type(embedder).__name__}({model!r})"
        return type(embedder).__name__
    return (
        f"{type(embedder).__name__}({name!r}, pretrained={getattr(embedder, 'pretrained', None)!r})"
    )
