"""Top-k eigenvectors (the paper) against bottom-k (the authors' released code).

CLIP-ICM maximises ``tr(A M A^T)`` with ``M = X^T X / n - alpha * Delta^T Delta / m``: the
solution is the eigenvectors of ``M`` with the LARGEST eigenvalues, which is what
:class:`skicm.InvariantProjector` keeps. The released ``clip_icm.py`` calls
``torch.linalg.eigh`` (eigenvalues ascending) and keeps ``eig_vector[:, :k]``, the SMALLEST:
the directions that interventions move most, i.e. the variant subspace.

Both choices are read off the same fitted spectrum (one ``InvariantProjector`` fitted with every
component), with the same k, and followed by the same logistic regression, on:

- colored digits: IRM's Colored MNIST protocol on scikit-learn's digits with colour-swap
  interventions (``skicm.datasets.make_colored_digits``); k from ``n_components="auto"``;
- the linear SCM of the paper (``skicm.datasets.make_linear_scm``), k = the number of
  invariant factors; also the largest principal angle to the true invariant subspace.

Run: python benchmarks/compare_eigenvector_choice.py [--seeds 5] [--alpha 1.0]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from scipy.linalg import subspace_angles
from sklearn.linear_model import LogisticRegression

from skicm import InvariantProjector
from skicm.datasets._colored_digits import make_colored_digits
from skicm.exceptions import NoInvarianceWarning


def accuracy(components, X, y, train, test):
    """Test accuracy of a logistic regression on the projection of X onto ``components``."""
    Z = X @ components.T
    model = LogisticRegression(max_iter=2000).fit(Z[train], y[train])
    return model.score(Z[test], y[test])


def top_and_bottom(X, X_intervened, alpha, k):
    """The top-k (paper) and bottom-k (released code) eigenvectors of one fitted M."""
    full = InvariantProjector(n_components=X.shape[1], alpha=alpha)
    full.fit(X, X_intervened=X_intervened)
    if k == "auto":
        k = InvariantProjector(alpha=alpha).fit(X, X_intervened=X_intervened).n_components_
    # components_ is in decreasing eigenvalue order; eigh's first k columns are the last k rows.
    return full.components_[:k], full.components_[::-1][:k], k


def colored_digits(seed, alpha):
    data = make_colored_digits(random_state=seed)
    train, test = data.environment != 2, data.environment == 2
    top, bottom, k = top_and_bottom(data.X[train], data.X_swapped[train], alpha, "auto")
    erm = LogisticRegression(max_iter=2000).fit(data.X[train], data.y[train])
    gray = LogisticRegression(max_iter=2000).fit(data.X_gray[train], data.y[train])
    return {
        "k": k,
        "ERM (no projection)": erm.score(data.X[test], data.y[test]),
        "top-k (paper, skicm)": accuracy(top, data.X, data.y, train, test),
        "bottom-k (released code)": accuracy(bottom, data.X, data.y, train, test),
        "grayscale oracle": gray.score(data.X_gray[test], data.y[test]),
    }


def linear_scm(seed, alpha):
    from skicm.datasets import make_linear_scm

    data = make_linear_scm(n_samples=3000, random_state=seed)
    train, test = data.environments != 2, data.environments == 2
    k = data.invariant_basis.shape[0]
    top, bottom, _ = top_and_bottom(data.X[train], data.X_intervened[train], alpha, k)
    erm = LogisticRegression(max_iter=2000).fit(data.X[train], data.y[train])
    oracle = LogisticRegression(max_iter=2000).fit(data.invariant_factors[train], data.y[train])
    return {
        "k": k,
        "ERM (no projection)": erm.score(data.X[test], data.y[test]),
        "top-k (paper, skicm)": accuracy(top, data.X, data.y, train, test),
        "bottom-k (released code)": accuracy(bottom, data.X, data.y, train, test),
        "invariant-factor oracle": oracle.score(data.invariant_factors[test], data.y[test]),
        "angle top-k (deg)": np.degrees(subspace_angles(top.T, data.invariant_basis.T).max()),
        "angle bottom-k (deg)": np.degrees(subspace_angles(bottom.T, data.invariant_basis.T).max()),
    }


def report(name, runs):
    print(f"\n{name} ({len(runs)} seeds; test environment = colour agrees 10%)")
    print(f"  k per seed: {[run['k'] for run in runs]}")
    for key in runs[0]:
        if key == "k":
            continue
        values = np.array([run[key] for run in runs])
        unit = "" if "angle" in key else " test accuracy"
        print(f"  {key + unit:<45} {values.mean():7.3f} +- {values.std():.3f}")
    top = np.mean([run["top-k (paper, skicm)"] for run in runs])
    bottom = np.mean([run["bottom-k (released code)"] for run in runs])
    print(f"  ratio top-k / bottom-k test accuracy: {top / bottom:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=1.0)
    args = parser.parse_args()
    warnings.simplefilter("ignore", NoInvarianceWarning)
    seeds = range(args.seeds)
    print(f"alpha = {args.alpha}")
    report("Colored digits", [colored_digits(seed, args.alpha) for seed in seeds])
    try:
        from skicm.datasets import make_linear_scm  # noqa: F401
    except ImportError:
        print("\nLinear SCM: skipped (skicm.datasets.make_linear_scm is not available)")
    else:
        report(
            "Linear SCM (paper, 4 invariant + 4 variant factors)",
            [linear_scm(seed, args.alpha) for seed in seeds],
        )


if __name__ == "__main__":
    main()
