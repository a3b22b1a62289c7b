"""
Reading the spectrum to choose the rank and alpha
=================================================

:class:`~skicm.InvariantProjector` keeps eigenvectors of
``M = Z^T Z / n - alpha * Delta^T Delta / m``. For a direction with signal second moment ``s``
and intervention second moment ``i`` the eigenvalue is ``s - alpha * i = s (1 - alpha r)``,
with ``r = i / s`` the direction's *invariance ratio*. This example reads the spectrum of a
fitted projector with :func:`skicm.plotting.plot_spectrum` and
:func:`skicm.plotting.spectrum_diagnostics` to choose ``n_components`` and ``alpha`` from the
training data alone.

The data are IRM's Colored MNIST protocol on scikit-learn's 8x8 digits
(:func:`skicm.datasets.make_colored_digits`): the label is "digit >= 5" (25% label noise), the
colour agrees with the label 90% and 80% of the time in the two training environments and
10% in the test environment. The intervention swaps the colour.
"""

# %%
# The spectrum with and without the intervention term
# ---------------------------------------------------
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from skicm import InvariantProjector
from skicm.datasets import make_colored_digits
from skicm.plotting import plot_spectrum, spectrum_diagnostics

data = make_colored_digits(random_state=0)
train, test = data.environment != 2, data.environment == 2
X_train, X_swapped = data.X[train], data.X_swapped[train]

# %%
# With ``alpha=0`` the interventions are ignored: ``M`` is the second moment of the pixels, all
# of its eigenvalues are non-negative, and the colour channels are among the kept directions
# (invariance ratios near 4, the value of a direction that the swap flips).
plot_spectrum(InvariantProjector(alpha=0.0).fit(X_train, X_intervened=X_swapped), title="alpha = 0")

# %%
# With ``alpha=1`` the spectrum splits into three blocks: positive eigenvalues (shape, kept by
# ``n_components="auto"``), a block of zeros (pixels that are black in every image) and
# negative eigenvalues (what the colour swap moves). Every kept direction has a ratio near 0.
projector = InvariantProjector(alpha=1.0).fit(X_train, X_intervened=X_swapped)
plot_spectrum(projector, title="alpha = 1")

diagnostics = spectrum_diagnostics(projector)
print(
    f"auto rank {diagnostics.n_components} of {len(diagnostics.eigenvalues)}; "
    f"{np.sum(diagnostics.eigenvalues < 0)} negative eigenvalues; "
    f"largest invariance ratio kept {diagnostics.invariance_ratio.max():.3f}"
)

# %%
# Choosing alpha
# --------------
# ``alpha`` is a threshold on the invariance ratio: ``n_components="auto"`` keeps exactly the
# directions with ``r < 1 / alpha``. A colour swap gives the colour directions ``r`` near 4, so
# any ``alpha`` well above 1/4 removes them. We sweep ``alpha`` and read, from the training data
# only, the rank and the largest ratio among the kept directions; the test accuracy (last
# panel) is shown to confirm the reading, not to choose.


def test_accuracy(projector):
    model = make_pipeline(projector, LogisticRegression(max_iter=1000))
    model.fit(X_train, data.y[train], invariantprojector__X_intervened=X_swapped)
    return model.score(data.X[test], data.y[test])


alphas = [0.0, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 4.0]
ranks, max_ratios, accuracies = [], [], []
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # alpha=0 warns that no interventions are used
    for alpha in alphas:
        fitted = InvariantProjector(alpha=alpha).fit(X_train, X_intervened=X_swapped)
        ranks.append(fitted.n_components_)
        max_ratios.append(fitted.invariance_ratio_.max())
        accuracies.append(test_accuracy(InvariantProjector(alpha=alpha)))

fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), layout="constrained")
axes[0].plot(alphas, ranks, marker="o")
axes[0].set(xlabel="alpha", ylabel='rank of n_components="auto"')
axes[1].plot(alphas, max_ratios, marker="o")
axes[1].axhline(4, color="C3", linestyle=":", label="colour swap (r = 4)")
axes[1].set(xlabel="alpha", ylabel="largest invariance ratio kept", yscale="symlog")
axes[1].legend()
axes[2].plot(alphas, accuracies, marker="o")
axes[2].set(xlabel="alpha", ylabel="test-environment accuracy", ylim=(0, 1))
for ax in axes:
    ax.axvline(0.25, color="0.6", linestyle="--")

# %%
# Below ``alpha = 1/4`` the colour directions stay positive, are kept, and the classifier
# follows the colour (low test accuracy). Above it, the kept directions' largest ratio drops by
# orders of magnitude at once: that drop, visible without any test data, is the sign that
# ``alpha`` is large enough. Past it, larger ``alpha`` changes little.
#
# Choosing the rank
# -----------------
# At ``alpha = 1`` we fit every component once (the rows of ``components_`` come in decreasing
# eigenvalue order) and try ranks up to the zero crossing and beyond. Within the positive block
# the rank matters little past a dozen directions. The zero and slightly negative directions
# add nothing. The colour comes back with the last direction, the most negative eigenvalue by
# far: total red minus total green intensity, which the swap flips (ratio about 4).
full = InvariantProjector(n_components=X_train.shape[1], alpha=1.0)
full.fit(X_train, X_intervened=X_swapped)
n_positive = spectrum_diagnostics(full).n_positive
ranks = [2, 4, 8, 16, 32, n_positive, 80, 96, 112, 124, 127, 128]
scores = []
for rank in ranks:
    components = full.components_[:rank]
    model = LogisticRegression(max_iter=1000).fit(X_train @ components.T, data.y[train])
    scores.append(model.score(data.X[test] @ components.T, data.y[test]))

fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
ax.plot(ranks, scores, marker="o")
ax.axvline(n_positive, color="C3", linestyle="--", label=f"zero crossing ({n_positive})")
ax.set(xlabel="n_components", ylabel="test-environment accuracy", ylim=(0, 1))
ax.legend()
print("eigenvalues of the last 3 directions:", np.round(full.eigenvalues_[-3:], 2))
print({rank: round(float(score), 3) for rank, score in zip(ranks, scores)})

# %%
# So: fit once with ``n_components="auto"``, look at :func:`~skicm.plotting.plot_spectrum`,
# raise ``alpha`` until the kept directions' ratios are far below those of the intervened
# directions (here at most 0.14, against about 4), and keep the rank at the zero crossing or
# a little earlier.
# Do not choose ``alpha`` by validation accuracy on environments that share the spurious
# correlation: they reward keeping it (see the guide on choosing the rank and alpha).
