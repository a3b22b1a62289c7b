"""The linear structural causal model of CLIP-ICM, as a data generator with known answers."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy.stats import ortho_group
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, validate_params


def _orthonormal_rows(matrix):
    """Orthonormal basis (as rows) of the row space of ``matrix``."""
    q, _ = np.linalg.qr(matrix.T)
    return q.T


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "n_invariant": [Interval(Integral, 1, None, closed="left")],
        "n_variant": [Interval(Integral, 1, None, closed="left")],
        "n_features": [Interval(Integral, 2, None, closed="left"), None],
        "n_classes": [Interval(Integral, 2, None, closed="left")],
        "environment_agreement": ["array-like"],
        "invariant_separation": [Interval(Real, 0, None, closed="left")],
        "variant_separation": [Interval(Real, 0, None, closed="left")],
        "environment_shift": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_linear_scm(
    n_samples=3000,
    *,
    n_invariant=4,
    n_variant=4,
    n_features=None,
    n_classes=2,
    environment_agreement=(0.9, 0.8, 0.1),
    invariant_separation=0.8,
    variant_separation=3.0,
    environment_shift=1.0,
    random_state=None,
):
    """Generate embeddings from the linear SCM of CLIP-ICM, with interventional counterparts.

    Latent factors ``z = (z_inv, z_var)`` are mixed linearly into embeddings
    ``x = z_inv G_inv + z_var G_var`` by a random injective matrix ``G``:

    - the invariant factors cause the label: ``z_inv = mu[y] + N(0, I)``;
    - the variant factors carry a "colour" that agrees with the label with a probability that
      depends on the environment (``environment_agreement``, as in Colored MNIST), plus an
      environment-specific offset: ``z_var = nu[colour] + b[env] + N(0, I)``;
    - the intervened counterpart of a sample keeps ``z_inv`` and resamples the variant
      factors: a uniformly random colour, the offset of a random environment, fresh noise.

    The invariant subspace of the embedding space (directions ``a`` with ``G_var a = 0``
    inside the span of the data) is returned, so an estimate can be scored by principal
    angles, and so are the invariant factors, on which an oracle classifier can be trained.

    Parameters
    ----------
    n_samples : int, default=3000
        Number of samples, split evenly over the environments.
    n_invariant : int, default=4
        Number of invariant factors.
    n_variant : int, default=4
        Number of variant factors.
    n_features : int, default=None
        Width of the embeddings; at least ``n_invariant + n_variant``. None means exactly
        ``n_invariant + n_variant`` (an invertible mixing).
    n_classes : int, default=2
        Number of classes.
    environment_agreement : array-like of float in [0, 1], default=(0.9, 0.8, 0.1)
        For each environment, the probability that the variant "colour" equals the label
        (otherwise it is another class drawn uniformly). The defaults follow Colored MNIST:
        two training environments where the colour predicts the label and a test
        environment where the correlation is reversed.
    invariant_separation : float, default=0.8
        Scale of the class means of the invariant factors (unit noise); sets the accuracy
        an oracle on the invariant factors can reach.
    variant_separation : float, default=3.0
        Scale of the colour means of the variant factors (unit noise). Larger than
        ``invariant_separation`` so that a plain classifier prefers the spurious colour.
    environment_shift : float, default=1.0
        Scale of the environment-specific offsets of the variant factors.
    random_state : int, RandomState instance or None, default=None
        Seed for reproducible output.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With the keys of every skicm data set (see :mod:`skicm.datasets`)

        - ``data`` (n_samples, n_features): embeddings;
        - ``target`` (n_samples,): labels;
        - ``environments`` (n_samples,): environment index of each sample;
        - ``environment_names``: the environments, ``[0, 1, ..., n_environments - 1]``;
        - ``data_intervened`` (n_samples, n_features): the intervened counterparts;
        - ``X``, ``y``, ``X_intervened``: the same arrays as ``data``, ``target`` and
          ``data_intervened`` (the names the paper's notation uses);
        - ``invariant_basis`` (n_invariant, n_features): orthonormal rows spanning the true
          invariant subspace;
        - ``invariant_factors`` (n_samples, n_invariant) and ``variant_factors``
          (n_samples, n_variant): the latent factors of ``X``;
        - ``mixing`` (n_invariant + n_variant, n_features): the mixing matrix ``G``.

    Examples
    --------
    >>> from skicm.datasets import make_linear_scm
    >>> data = make_linear_scm(n_samples=600, random_state=0)
    >>> data.X.shape, data.X_intervened.shape, data.invariant_basis.shape
    ((600, 8), (600, 8), (4, 8))
    >>> sorted(set(data.environments.tolist()))
    [0, 1, 2]
    """
    rng = check_random_state(random_state)
    agreement = np.asarray(environment_agreement, dtype=float).ravel()
    if agreement.size == 0 or np.any((agreement < 0) | (agreement > 1)):
        raise ValueError(
            "environment_agreement must be a non-empty sequence of probabilities in [0, 1]; "
            f"got {environment_agreement!r}."
        )
    n_latent = n_invariant + n_variant
    if n_features is None:
        n_features = n_latent
    if n_features < n_latent:
        raise ValueError(
            f"n_features={n_features} must be at least n_invariant + n_variant = {n_latent} "
            "for the mixing to be injective."
        )
    n_environments = agreement.size

    # A well-conditioned injective mixing: orthogonal x singular values in [0.5, 2] x orthogonal.
    left = ortho_group.rvs(n_latent, random_state=rng)  # n_latent >= 2
    right = ortho_group.rvs(n_features, random_state=rng)[:n_latent]
    mixing = (left * rng.uniform(0.5, 2.0, size=n_latent)) @ right
    mixing_invariant, mixing_variant = mixing[:n_invariant], mixing[n_invariant:]

    invariant_means = _class_means(n_classes, n_invariant, invariant_separation, rng)
    variant_means = _class_means(n_classes, n_variant, variant_separation, rng)
    offsets = environment_shift * rng.standard_normal((n_environments, n_variant))

    environments = np.arange(n_samples) % n_environments
    rng.shuffle(environments)
    y = rng.randint(n_classes, size=n_samples)
    agrees = rng.random_sample(n_samples) < agreement[environments]
    other = (y + rng.randint(1, n_classes, size=n_samples)) % n_classes
    colour = np.where(agrees, y, other)

    invariant_factors = invariant_means[y] + rng.standard_normal((n_samples, n_invariant))
    variant_factors = (
        variant_means[colour] + offsets[environments] + rng.standard_normal((n_samples, n_variant))
    )
    intervened_variant = (
        variant_means[rng.randint(n_classes, size=n_samples)]
        + offsets[rng.randint(n_environments, size=n_samples)]
        + rng.standard_normal((n_samples, n_variant))
    )

    X = invariant_factors @ mixing_invariant + variant_factors @ mixing_variant
    X_intervened = invariant_factors @ mixing_invariant + intervened_variant @ mixing_variant

    # Invariant directions: orthogonal to the variant mixing rows, inside the data span.
    variant_basis = _orthonormal_rows(mixing_variant)
    residual = mixing_invariant - (mixing_invariant @ variant_basis.T) @ variant_basis
    invariant_basis = _orthonormal_rows(residual)

    return Bunch(
        data=X,
        target=y,
        environments=environments,
        environment_names=list(range(n_environments)),
        data_intervened=X_intervened,
        X=X,
        y=y,
        X_intervened=X_intervened,
        invariant_basis=invariant_basis,
        invariant_factors=invariant_factors,
        variant_factors=variant_factors,
        mixing=mixing,
    )


def _class_means(n_classes, n_dims, separation, rng):
    """Class means at distance ``2 * separation`` from each other when ``n_classes == 2``."""
    directions = rng.standard_normal((n_classes, n_dims))
    if n_classes == 2:
        directions = np.stack([directions[0], -directions[0]])
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return separation * directions
