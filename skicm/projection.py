"""The CLIP-ICM invariant projection and the mergeable statistics it is estimated from."""

from __future__ import annotations

import copy
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real

import numpy as np
import sklearn
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import check_array
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    StrOptions,
    validate_parameter_constraints,
)
from sklearn.utils.validation import _get_feature_names, check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from skicm.exceptions import NoInvarianceWarning, RankWarning

__all__ = ["InterventionStatistics", "InvariantProjector", "count_positive_eigenvalues"]

# Rows per block when forming Gram matrices: each block product runs in the input's precision
# (exact BLAS work, no float64 copy of the data) and is added into a float64 accumulator, so
# float32 round-off accumulates over at most one block (<= 65,536 rows), never over the whole
# data set. 2**23 floats (32 MiB in float32) per block: large enough for BLAS to run at full
# speed, small next to the input.
_BLOCK_ELEMENTS = 2**23
_MAX_BLOCK_ROWS = 2**16


def _block_rows(n_features):
    return int(np.clip(_BLOCK_ELEMENTS // max(n_features, 1), 256, _MAX_BLOCK_ROWS))


def _gram_partials(X, X_intervened, shift):
    """Float64 sums of ``(X - shift)^T (X - shift)``, ``X - shift`` and ``D^T D``, in parts.

    Large inputs are cut into one contiguous range of blocks per core, each processed by its
    own thread with single-threaded BLAS: every core then alternates between the memory-bound
    subtractions (single-threaded in numpy) and the compute-bound Gram products of its range,
    instead of one core subtracting while the others wait. The parts are returned in row
    order, so the result does not depend on thread scheduling.
    """
    step = _block_rows(X.shape[1])
    n_blocks = -(-X.shape[0] // step)
    n_parts = min(n_blocks, _available_cores()) if X.size >= 2**22 else 1
    bounds = [step * (n_blocks * part // n_parts) for part in range(n_parts + 1)]
    ranges = [(bounds[i], min(bounds[i + 1], X.shape[0])) for i in range(n_parts)]
    shift = shift.astype(X.dtype)

    def accumulate(row_range):
        start, stop = row_range
        rows = min(step, stop - start)
        gram = np.zeros((X.shape[1], X.shape[1]))
        total = np.zeros(X.shape[1])
        difference_gram = None if X_intervened is None else np.zeros_like(gram)
        ones = np.ones(rows, dtype=X.dtype)
        buffer = np.empty((rows, X.shape[1]), dtype=X.dtype)
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite input: caught later
            for first in range(start, stop, step):
                block = X[first : min(first + step, stop)]
                work = buffer[: len(block)]
                np.subtract(block, shift, out=work)
                _add_gram(gram, work)
                total += ones[: len(block)] @ work
                if X_intervened is not None:
                    np.subtract(block, X_intervened[first : first + len(block)], out=work)
                    _add_gram(difference_gram, work)
        return gram, total, difference_gram

    if n_parts == 1:
        return [accumulate(ranges[0])]
    with (
        threadpool_limits(limits=1, user_api="blas"),
        ThreadPoolExecutor(n_parts, thread_name_prefix="skicm-gram") as pool,
    ):
        return list(pool.map(accumulate, ranges))


def _available_cores():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _merged_dtype(first, second):
    if first is None or second is None:
        return second if first is None else first
    return np.result_type(first, second)


def _add_gram(accumulator, block):
    """Add ``block.T @ block`` (a symmetric rank-k update) to a float64 accumulator."""
    # numpy dispatches ``A.T @ A`` on the same buffer to BLAS syrk: half the flops of gemm.
    accumulator += block.T @ block


class InterventionStatistics:
    """Sufficient statistics of CLIP-ICM, accumulated in float64 and mergeable.

    The invariant projection depends on the data only through the sums below, so batches can
    be added one at a time (:meth:`InvariantProjector.partial_fit`) or computed on several
    workers and merged (:meth:`merge`), with the same result as one pass over all the data.

    Parameters
    ----------
    n_features : int
        Width of the embeddings.

    Attributes
    ----------
    n_samples : int
        Number of embeddings seen.
    shift : ndarray of shape (n_features,) or None
        Reference vector subtracted from the embeddings before their sums are formed (the
        mean of the first block seen); None before any data.
    shifted_sum : ndarray of shape (n_features,)
        Sum of ``Z - shift``.
    shifted_gram : ndarray of shape (n_features, n_features)
        Sum of outer products ``(Z - shift)^T (Z - shift)``. The properties :attr:`sum` and
        :attr:`gram` give ``sum(Z)`` and ``Z^T Z``; :meth:`covariance` the covariance.
    n_differences : int
        Number of interventional differences seen.
    difference_gram : ndarray of shape (n_features, n_features)
        Sum of outer products ``Delta^T Delta`` of the differences.
    cell_sums : dict
        ``{(label, environment): (sum of embeddings, count)}``, from which differences between
        class-conditional environment means are formed (see
        :meth:`environment_differences`).
    labels : set
        Distinct class labels of the data (see :meth:`add_labels`); an intervention source
        (``InvariantProjector(interventions=...)``) receives them when the projector is
        fitted from these statistics.
    dtype : numpy.dtype or None
        Floating dtype of the embeddings added: float32 when every batch was float32,
        float64 as soon as one was; None before any data. A projector fitted from the
        statistics stores its ``components_`` in this dtype, as ``fit`` on the data would.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.projection import InterventionStatistics
    >>> X = np.arange(12.0).reshape(4, 3)
    >>> a, b = InterventionStatistics(3), InterventionStatistics(3)
    >>> a.add_samples(X[:2]); b.add_samples(X[2:])
    >>> a.merge(b).n_samples
    4
    """

    def __init__(self, n_features):
        self.n_features = int(n_features)
        self.n_samples = 0
        self.shift = None
        self.shifted_sum = np.zeros(self.n_features)
        self.shifted_gram = np.zeros((self.n_features, self.n_features))
        self.n_differences = 0
        self.difference_gram = np.zeros((self.n_features, self.n_features))
        self.cell_sums = {}
        self.labels = set()
        self.dtype = None

    @property
    def sum(self):
        """Sum of the embeddings, ``sum(Z)`` (float64)."""
        if self.shift is None:
            return self.shifted_sum.copy()
        return self.shifted_sum + self.n_samples * self.shift

    @property
    def gram(self):
        """Sum of outer products ``Z^T Z`` (float64)."""
        if self.shift is None:
            return self.shifted_gram.copy()
        cross = np.outer(self.shift, self.shifted_sum)
        return (
            self.shifted_gram + cross + cross.T + self.n_samples * np.outer(self.shift, self.shift)
        )

    def covariance(self):
        """Covariance of the embeddings, free of the cancellation of ``Z^T Z / n - m m^T``.

        Returns
        -------
        covariance : ndarray of shape (n_features, n_features)
            ``(Z - mean)^T (Z - mean) / n`` in float64.
        """
        shifted_mean = self.shifted_sum / self.n_samples
        return self.shifted_gram / self.n_samples - np.outer(shifted_mean, shifted_mean)

    def add_samples(self, X, X_intervened=None):
        """Add embeddings and, if given, their sample-aligned intervened counterparts.

        Blocks of rows are processed in the input's precision (float32 stays float32: no
        float64 copy of the data) and accumulated in float64; the differences
        ``X - X_intervened`` exist one block at a time only. The embeddings are shifted by a
        fixed reference vector (the mean of the first block, ``shift``) before their Gram
        products, so that a large common mean does not eat the float32 digits of the
        covariance.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Embeddings.
        X_intervened : ndarray of shape (n_samples, n_features), default=None
            Intervened counterpart of each row of ``X``.
        """
        self._check_rows(X, "X")
        if X_intervened is not None and X_intervened.shape != X.shape:
            raise ValueError(
                f"X_intervened has shape {X_intervened.shape} but X has shape {X.shape}."
            )
        rows = min(_block_rows(self.n_features), X.shape[0])
        self.dtype = _merged_dtype(self.dtype, X.dtype)
        if self.shift is None and rows:
            # Representable in float32 and float64 alike, so every batch subtracts it exactly.
            self.shift = X[:rows].mean(axis=0, dtype=np.float64).astype(np.float32)
            self.shift = self.shift.astype(np.float64)
        if rows:
            for gram, total, difference_gram in _gram_partials(X, X_intervened, self.shift):
                self.shifted_gram += gram
                self.shifted_sum += total
                if difference_gram is not None:
                    self.difference_gram += difference_gram
        self.n_samples += X.shape[0]
        if X_intervened is not None:
            self.n_differences += X.shape[0]

    def add_differences(self, differences):
        """Add interventional differences that are not aligned with any embedding.

        Parameters
        ----------
        differences : ndarray of shape (n_differences, n_features)
            Rows of ``Delta``.
        """
        self._check_rows(differences, "differences")
        step = _block_rows(self.n_features)
        for start in range(0, differences.shape[0], step):
            _add_gram(self.difference_gram, differences[start : start + step])
        self.n_differences += differences.shape[0]

    def _check_rows(self, array, name):
        if np.ndim(array) != 2 or array.shape[1] != self.n_features:
            raise ValueError(
                f"{name} has shape {np.shape(array)} but these statistics are of "
                f"n_features={self.n_features}: expected (n_rows, {self.n_features})."
            )

    def add_labels(self, labels):
        """Record class labels of the data (their distinct values).

        Parameters
        ----------
        labels : array-like of shape (n_samples,)
            Class label of each row (repeats are fine).
        """
        self.labels.update(_as_key(label) for label in np.unique(np.asarray(labels)))

    def add_environments(self, X, labels, environments):
        """Add per-(label, environment) sums of the embeddings.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Embeddings.
        labels : array-like of shape (n_samples,)
            Class label of each row.
        environments : array-like of shape (n_samples,)
            Environment label of each row.
        """
        self._check_rows(X, "X")
        label_values, label_index = np.unique(labels, return_inverse=True)
        environment_values, environment_index = np.unique(environments, return_inverse=True)
        cells = label_index.ravel() * len(environment_values) + environment_index.ravel()
        for cell in np.unique(cells):
            members = cells == cell
            label, environment = divmod(int(cell), len(environment_values))
            key = (_as_key(label_values[label]), _as_key(environment_values[environment]))
            total = X[members].sum(axis=0, dtype=np.float64)
            count = int(members.sum())
            if key in self.cell_sums:
                previous_total, previous_count = self.cell_sums[key]
                total, count = previous_total + total, previous_count + count
            self.cell_sums[key] = (total, count)

    def environment_differences(self):
        """Differences between class-conditional environment means.

        For every label and every pair of environments in which that label occurs, the row
        ``mean(Z | label, env_a) - mean(Z | label, env_b)``. A shift of the class-conditional
        mean between environments is, by definition, not caused by the label, so these rows
        span (an estimate of) the variant directions. Within-class variation is deliberately
        not used: it contains invariant variation too.

        Returns
        -------
        differences : ndarray of shape (n_pairs, n_features)
        """
        by_label = {}
        for (label, environment), (total, count) in sorted(
            self.cell_sums.items(), key=lambda item: (str(item[0][0]), str(item[0][1]))
        ):
            by_label.setdefault(label, []).append((environment, total / count))
        rows = []
        for means in by_label.values():
            for i in range(len(means)):
                for j in range(i + 1, len(means)):
                    rows.append(means[i][1] - means[j][1])
        if not rows:
            return np.empty((0, self.n_features))
        return np.asarray(rows)

    def merge(self, other):
        """Add another :class:`InterventionStatistics` of the same width into this one.

        Parameters
        ----------
        other : InterventionStatistics
            Statistics of other data, e.g. computed on another worker.

        Returns
        -------
        self : InterventionStatistics
        """
        if not isinstance(other, InterventionStatistics):
            raise TypeError(
                f"Cannot merge {type(other).__name__} into InterventionStatistics: other must "
                "be InterventionStatistics."
            )
        if other.n_features != self.n_features:
            raise ValueError(
                f"Cannot merge statistics of {other.n_features} features into statistics of "
                f"{self.n_features} features."
            )
        if other.shift is not None:
            if self.shift is None:
                self.shift = other.shift.copy()
            # Re-express the other's sums around this shift: Z - c = (Z - c_other) + delta.
            delta = other.shift - self.shift
            cross = np.outer(delta, other.shifted_sum)
            self.shifted_gram += (
                other.shifted_gram + cross + cross.T + other.n_samples * np.outer(delta, delta)
            )
            self.shifted_sum += other.shifted_sum + other.n_samples * delta
        self.n_samples += other.n_samples
        self.dtype = _merged_dtype(self.dtype, other.dtype)
        self.labels.update(other.labels)
        self.n_differences += other.n_differences
        self.difference_gram += other.difference_gram
        for key, (total, count) in other.cell_sums.items():
            if key in self.cell_sums:
                previous_total, previous_count = self.cell_sums[key]
                total, count = previous_total + total, previous_count + count
            self.cell_sums[key] = (total, count)
        return self


# The precision of the "auto" rank rule, whatever the dtype of the embeddings: float32's.
# Embeddings come out of networks that compute in float32 or less, so a float64 copy carries
# no direction finer than float32 rounding of the features; and the statistics of float32
# embeddings are formed with float32 products. One tolerance for both makes the rank a
# property of the data, not of its dtype.
_RANK_EPS = float(np.finfo(np.float32).eps)


def count_positive_eigenvalues(eigenvalues, dtype=None):
    """Number of eigenvalues of ``M`` that are positive beyond round-off: the "auto" rank.

    An eigenvalue counts when it exceeds ``n_features * eps * max|eigenvalue|`` with
    ``eps = 2**-23`` (float32's machine epsilon) **for every dtype**. The tolerance is
    relative to the spectrum's scale, so multiplying the embeddings by a constant does not
    change the count, and it is the same for float32 and float64 embeddings, so casting does
    not change it either. Eigenvalues below it cannot be told apart from zero in float32
    statistics, and a float64 copy of float32 embeddings carries no direction finer than the
    float32 rounding of its features: counting them would count round-off. The
    ``n_features`` factor is the usual bound on how far entry-wise round-off moves the
    eigenvalues (as in :func:`numpy.linalg.matrix_rank`).

    Parameters
    ----------
    eigenvalues : array-like of shape (n_features,)
        Spectrum of ``M``.
    dtype : dtype, default=None
        Not used: the rule is the same for every dtype. Accepted so that calls written for
        earlier versions keep working.

    Returns
    -------
    count : int
        Number of positive eigenvalues.

    Examples
    --------
    >>> import numpy as np
    >>> from skicm.projection import count_positive_eigenvalues
    >>> count_positive_eigenvalues(np.array([2.0, 1e-3, 1e-9, -1.0]))
    2
    >>> count_positive_eigenvalues(1e6 * np.array([2.0, 1e-3, 1e-9, -1.0]))  # scale-free
    2
    """
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    if eigenvalues.size == 0:
        return 0
    tolerance = eigenvalues.size * _RANK_EPS * np.abs(eigenvalues).max()
    return int(np.sum(eigenvalues > tolerance))


_INPUT_ATTRIBUTES = ("n_features_in_", "feature_names_in_")
_PER_COMPONENT_ATTRIBUTES = (
    "components_",
    "signal_variance_",
    "intervention_variance_",
    "invariance_ratio_",
)
_SKLEARN_DIR = os.path.dirname(sklearn.__file__)


def _warn_at_caller(message, category):
    """Warn pointing at the first frame outside this module and scikit-learn (the user's)."""
    frame, level = sys._getframe(1), 2
    while frame is not None and (
        frame.f_code.co_filename == __file__ or frame.f_code.co_filename.startswith(_SKLEARN_DIR)
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def _kept_directions(n_components, eigenvalues, data_rank, n_samples, center):
    """Directions kept for ``n_components``: never more than the data's rank (at least one)."""
    if n_components == "auto":
        return max(1, min(count_positive_eigenvalues(eigenvalues), data_rank))
    kept = max(1, min(int(n_components), data_rank))
    if kept < n_components:
        rows = f"{n_samples} rows" + (", centred" if center else "")
        _warn_at_caller(
            f"n_components={n_components} exceeds the rank of the training data ({rows}: "
            f"rank {data_rank}): kept n_components_={kept} directions. Directions beyond "
            "the data's rank would span round-off noise; fit on more rows or ask for fewer "
            "components.",
            RankWarning,
        )
    return kept


def _gram_diagonal(statistics):
    """``diag(Z^T Z)`` of the statistics without forming the d x d matrix."""
    diagonal = np.diag(statistics.shifted_gram).copy()
    if statistics.shift is not None:
        shift = statistics.shift
        diagonal += 2 * shift * statistics.shifted_sum + statistics.n_samples * shift**2
    return diagonal


def _span_basis(blocks, n_features):
    """An orthonormal basis (n_features, r) of the span of the rows of ``blocks``, or None.

    r is the rows' numerical rank. None when the rows number
    ``n_features`` or more (the span may be the whole space and the full eigendecomposition
    costs no more) or there are none.
    """
    blocks = [block for block in blocks if block is not None and len(block)]
    n_rows = sum(block.shape[0] for block in blocks)
    if not blocks or n_rows >= n_features:
        return None
    stacked = np.concatenate([np.asarray(block, dtype=np.float64) for block in blocks])
    # The right singular vectors of the rows' nonzero singular values (beyond the float64
    # round-off of numpy.linalg.matrix_rank's rule): their span, and no more, even when the
    # rows repeat one another (counterparts equal to their images, deltas among the rows). A
    # direction dropped carries rows of norm below that tolerance, so M moves by its square.
    _, singular, right = np.linalg.svd(stacked, full_matrices=False)
    tolerance = singular[:1].max(initial=0.0) * max(stacked.shape) * np.finfo(np.float64).eps
    kept = singular > tolerance
    if not kept.any():
        return None
    return right[kept].T


def _complement(basis, count):
    """``count`` orthonormal columns orthogonal to ``basis`` (deterministic).

    The coordinate axes least covered by the span (smallest rows of ``basis``), with the span
    projected out twice ("twice is enough": orthogonal to working precision) and orthonormalised
    by QR: O(d r count), where a complete QR would cost O(d^2 r).
    """
    axes = np.sort(np.argsort(np.einsum("ij,ij->i", basis, basis), kind="stable")[:count])
    columns = np.zeros((basis.shape[0], count))
    columns[axes, np.arange(count)] = 1.0
    for _ in range(2):
        columns -= basis @ (basis.T @ columns)
        columns, _ = np.linalg.qr(columns)
    return columns


def _solve_in_span(objective, signal, basis):
    """Eigenpairs of ``M`` (and eigenvalues of ``S``) from the r x r problem in a span.

    ``M = S - alpha * I`` with ``S`` and ``I`` sums of outer products of rows in the span of
    ``basis`` (Q, orthonormal, r columns), so ``M = Q (Q^T M Q) Q^T``: its eigenvectors are
    ``Q V`` with ``V`` those of the r x r matrix ``Q^T M Q`` (same eigenvalues), and its other
    d - r eigenvalues are exactly zero, with the orthogonal complement of the span as their
    eigenspace. Costs O(d^2 r) instead of the O(d^3) of a d x d eigendecomposition.

    Returns ``(eigenvalues, eigenvectors, signal_eigenvalues)``: the d eigenvalues of ``M`` in
    decreasing order (zeros included), a function of ``k`` giving the first ``k`` eigenvectors
    (columns; the complement is computed only when ``k`` reaches it) and the d eigenvalues of
    ``S``.
    """
    n_features, rank = basis.shape
    reduced = basis.T @ objective @ basis
    values, vectors = np.linalg.eigh((reduced + reduced.T) / 2)
    values, vectors = values[::-1], vectors[:, ::-1]
    n_positive = int(np.sum(values > 0))
    zeros = np.zeros(n_features - rank)
    # The span's positive eigenvalues, the complement's zeros, the span's others: decreasing.
    eigenvalues = np.concatenate([values[:n_positive], zeros, values[n_positive:]])
    reduced_signal = basis.T @ signal @ basis
    signal_eigenvalues = np.concatenate(
        [np.linalg.eigvalsh((reduced_signal + reduced_signal.T) / 2), zeros]
    )

    def eigenvectors(k):
        if k <= n_positive:
            return basis @ vectors[:, :k]
        wanted = min(k - n_positive, n_features - rank)
        return np.hstack(
            [
                basis @ vectors[:, :n_positive],
                _complement(basis, wanted),
                basis @ vectors[:, n_positive : n_positive + k - n_positive - wanted],
            ]
        )

    return eigenvalues, eigenvectors, signal_eigenvalues


def _check_n_components(n_components, n_features):
    if isinstance(n_components, Integral) and n_components > n_features:
        raise ValueError(
            f"n_components={n_components} must be between 1 and n_features={n_features}."
        )


def _check_width(array, name, n_features):
    if array.shape[1] != n_features:
        raise ValueError(
            f"{name} has {array.shape[1]} features but X has {n_features}; "
            "interventional differences must live in the embedding space of X."
        )


_SHAPES = {1: "one-dimensional", 2: "two-dimensional"}


def _named_array(values, name, *, ndim, **check_kwargs):
    """``check_array`` whose every error names the parameter, with the expected ``ndim``."""
    try:
        array = check_array(values, ensure_2d=False, allow_nd=True, input_name=name, **check_kwargs)
    except (TypeError, ValueError) as error:
        if name in str(error):
            raise
        raise ValueError(f"{name} could not be read as an array: {error}") from error
    if array.ndim != ndim:
        expected = "(n_samples,)" if ndim == 1 else "(n_rows, n_features)"
        raise ValueError(
            f"{name} must be {_SHAPES[ndim]} {expected}, got an array of shape {array.shape}."
        )
    return array


def _check_statistics(statistics):
    """Check that ``statistics`` are complete, finite and of one width; return them."""
    if not isinstance(statistics, InterventionStatistics):
        raise TypeError(
            f"statistics must be an InterventionStatistics, got {type(statistics).__name__}."
        )
    width = statistics.n_features
    if statistics.n_samples < 1:
        raise ValueError("statistics hold no embedding (n_samples=0): add samples first.")
    expected = {
        "shifted_sum": (width,),
        "shifted_gram": (width, width),
        "difference_gram": (width, width),
        "shift": (width,),
    }
    for name, shape in expected.items():
        value = getattr(statistics, name)
        if np.shape(value) != shape:
            raise ValueError(
                f"statistics.{name} has shape {np.shape(value)} but statistics.n_features is "
                f"{width}: expected {shape}."
            )
    for key, (total, _) in statistics.cell_sums.items():
        if np.shape(total) != (width,):
            raise ValueError(
                f"statistics.cell_sums[{key!r}] has shape {np.shape(total)} but "
                f"statistics.n_features is {width}."
            )
    for name in ("shifted_gram", "difference_gram"):
        if not np.all(np.isfinite(np.diag(getattr(statistics, name)))):
            raise ValueError(f"statistics.{name} contains NaN or infinity.")
    return statistics


def _non_finite_message(name, dtype):
    return (
        f"Input {name} contains NaN, infinity or a value too large for {np.dtype(dtype).name} "
        "(its squares overflow)."
    )


def _describe_raw_images(values):
    """How ``values`` looks like images rather than embeddings, or None if it does not."""
    ndim = getattr(values, "ndim", None)
    if isinstance(ndim, int) and ndim >= 3:
        return f"an array of shape {tuple(values.shape)}"
    if isinstance(values, list | tuple) and len(values) > 0:
        first = values[0]
        if isinstance(first, str | bytes | os.PathLike):
            return "a list of file paths"
        if type(first).__module__.startswith("PIL."):
            return "a list of PIL images"
        if getattr(first, "ndim", 0) >= 2:
            return f"a list of arrays of shape {tuple(first.shape)}"
    return None


def _as_key(value):
    return value.item() if isinstance(value, np.generic) else value


class InvariantProjector(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Project embeddings onto the invariant subspace of CLIP-ICM.

    CLIP-ICM (Song et al., "Learning Invariant Causal Mechanism from Vision-Language Models",
    ICML 2025) looks for an orthonormal map ``A`` (``n_components x n_features``) that keeps
    the embeddings ``Z`` reconstructable through ``A^T A`` and makes ``A Z`` unchanged under
    interventions on the variant factors (style, colour, background, domain). For orthonormal
    ``A`` the objective reduces to maximising ``tr(A M A^T)`` with

    .. math::

        M = \\frac{1}{n} Z^\\top Z - \\alpha \\frac{1}{m} \\Delta^\\top \\Delta

    where the ``m`` rows of ``Delta`` are interventional differences (an embedding minus the
    embedding of its intervened counterpart). The solution is the eigenvectors of ``M`` with
    the **largest** eigenvalues.

    .. note::
        The authors' released code (``clip_icm.py``) calls ``torch.linalg.eigh``, whose
        eigenvalues are in ascending order, and keeps ``eig_vector[:, :k]``: the eigenvectors
        of the *smallest* eigenvalues, i.e. the variant subspace. skicm implements the
        paper's objective (largest eigenvalues); the evidence is in the documentation
        (``docs/eigenvector_choice.md``).

    Interventional data can come in four forms, all pooled into ``Delta``:

    - ``X_intervened`` in :meth:`fit`: counterparts aligned with ``X`` (row ``i`` is the
      intervened version of row ``i``); sample-aligned, so cross-validation splits it;
    - ``deltas`` in :meth:`fit`: differences not aligned with ``X`` (e.g. text pairs);
    - ``groups`` in :meth:`fit`: environment labels; differences between class-conditional
      environment means are used (see :meth:`InterventionStatistics.environment_differences`);
    - the ``interventions`` parameter: an object whose ``differences(y)`` method returns
      differences, called during :meth:`fit` (e.g. text interventions from class names).

    With no interventional data at all, ``fit`` returns the top second-moment directions
    (``alpha = 0``) and warns with :class:`~skicm.exceptions.NoInvarianceWarning`.

    Parameters
    ----------
    n_components : int or "auto", default="auto"
        Dimension of the invariant subspace. ``"auto"`` keeps every direction whose
        eigenvalue of ``M`` is positive, i.e. whose signal second moment exceeds ``alpha``
        times its intervention second moment, beyond round-off: above
        ``n_features * 2**-23`` times the largest absolute eigenvalue (at least one
        direction). The tolerance is relative, so rescaling the embeddings does not change
        the rank, and uses float32's precision for every dtype, so float32 and float64
        copies of the same embeddings get the same rank (see
        :func:`~skicm.projection.count_positive_eigenvalues`).

        Neither ``"auto"`` nor an integer keeps more directions than the training data
        has: at most ``data_rank_``, the numerical rank of the embeddings' second-moment
        matrix (covariance with ``center=True``) under the same tolerance, which is never
        above the rows seen (one less with ``center=True``). An integer above
        ``data_rank_`` keeps ``data_rank_`` directions and warns with
        :class:`~skicm.exceptions.RankWarning`; an integer above ``n_features`` is an
        error.
    alpha : float, default=1.0
        Weight of the invariance term (the paper's lambda). ``alpha = 0`` ignores the
        interventions.
    center : bool, default=False
        Use the covariance of ``Z`` instead of its uncentred second moment (the paper's
        objective). With ``center=True``, :meth:`transform` subtracts ``mean_`` first.
        Differences are never centred: a systematic shift under intervention is variant.
    interventions : object with a ``differences`` method, default=None
        Source of interventional differences computed at fit time, such as
        :class:`skicm.interventions.TextInterventions`. ``differences(y)`` receives the
        unique training labels (or None) and returns an array of shape
        ``(m, n_features)``.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Orthonormal basis of the invariant subspace, one direction per row, in order of
        decreasing eigenvalue. The sign of each row makes its largest-magnitude entry
        positive.
    eigenvalues_ : ndarray of shape (n_features,)
        The whole spectrum of ``M`` in decreasing order.
    n_components_ : int
        Number of kept directions: ``n_components``, or fewer when it exceeds
        ``data_rank_``.
    data_rank_ : int
        Numerical rank of the training embeddings' second-moment matrix (their covariance
        with ``center=True``), at most ``n_samples_seen_`` (minus one with ``center=True``):
        the most directions the data can support, and the cap on ``n_components_``.
    signal_variance_ : ndarray of shape (n_components,)
        Second moment of the embeddings along each kept direction, ``a^T (Z^T Z / n) a``
        (their variance with ``center=True``).
    intervention_variance_ : ndarray of shape (n_components,)
        Second moment of the differences along each kept direction,
        ``a^T (Delta^T Delta / m) a``; zero without interventional data.
    invariance_ratio_ : ndarray of shape (n_components,)
        ``intervention_variance_ / signal_variance_``: 0 for a perfectly invariant
        direction; about 2 for a centred direction that interventions resample completely.
    mean_ : ndarray of shape (n_features,)
        Mean embedding (subtracted in :meth:`transform` only when ``center=True``).
    statistics_ : InterventionStatistics
        The float64 sufficient statistics; :meth:`partial_fit` adds to them (to a copy:
        the object itself is never modified once fitted). :meth:`fit_from_statistics` fits
        from such statistics directly.
    n_samples_seen_ : int
        Number of embeddings seen.
    n_differences_seen_ : int
        Number of interventional difference rows used.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` has string column names.

    See Also
    --------
    sklearn.decomposition.PCA : the ``alpha = 0``, ``center=True`` special case.
    skicm.interventions : image and text interventions that produce the pairs.

    Examples
    --------
    >>> from skicm import InvariantProjector
    >>> from skicm.datasets import make_linear_scm
    >>> data = make_linear_scm(n_samples=2000, random_state=0)
    >>> projector = InvariantProjector(n_components=4, alpha=20.0)
    >>> Z = projector.fit_transform(data.X, X_intervened=data.X_intervened)
    >>> Z.shape
    (2000, 4)
    >>> bool(projector.invariance_ratio_.max() < 0.05)
    True
    """

    # Under metadata routing, ``groups`` is what every group-aware splitter consumes
    # (GroupKFold, LeaveOneGroupOut, TrainingDomainSplit): a search given ``groups=`` for its
    # splitter must not force environment labels on the projector too. Deriving interventions
    # from environments is an explicit opt-in: ``set_fit_request(groups=True)``.
    __metadata_request__fit = {"groups": False}
    __metadata_request__partial_fit = {"groups": False}

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "center": ["boolean"],
        "interventions": [HasMethods(["differences"]), None],
    }

    def __init__(self, n_components="auto", *, alpha=1.0, center=False, interventions=None):
        self.n_components = n_components
        self.alpha = alpha
        self.center = center
        self.interventions = interventions

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, X_intervened=None, deltas=None, groups=None):
        """Estimate the invariant subspace.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings.
        y : array-like of shape (n_samples,), default=None
            Labels. Used to form class-conditional environment means with ``groups`` and
            passed (as unique values) to ``interventions``; otherwise ignored.
        X_intervened : array-like of shape (n_samples, n_features), default=None
            Embedding of the intervened counterpart of each row of ``X`` (embeddings, not
            images: in a pipeline that embeds images, route counterpart images through the
            embedder with ``Pipeline(..., transform_input=["X_intervened"])``).
        deltas : array-like of shape (n_differences, n_features), default=None
            Interventional differences not aligned with ``X``.
        groups : array-like of shape (n_samples,), default=None
            Environment (domain) label of each row of ``X``. Under metadata routing it is not
            requested by default (splitters such as ``GroupKFold`` consume ``groups``); opt
            in with ``set_fit_request(groups=True)``.

        Returns
        -------
        self : InvariantProjector
            The fitted projector.
        """
        return self._accumulate_and_solve(X, y, X_intervened, deltas, groups, reset=True)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None, *, X_intervened=None, deltas=None, groups=None):
        """Add a batch to the statistics and re-estimate the subspace.

        A sequence of ``partial_fit`` calls gives the same projector as one :meth:`fit` on
        the concatenated batches (the statistics are sums), so embeddings that do not fit in
        memory can be streamed.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A batch of embeddings.
        y : array-like of shape (n_samples,), default=None
            Labels of the batch.
        X_intervened : array-like of shape (n_samples, n_features), default=None
            Intervened counterparts of the batch, aligned with ``X``.
        deltas : array-like of shape (n_differences, n_features), default=None
            Interventional differences not aligned with ``X``.
        groups : array-like of shape (n_samples,), default=None
            Environment label of each row of the batch.

        Returns
        -------
        self : InvariantProjector
            The updated projector.
        """
        first_call = not hasattr(self, "statistics_")
        return self._accumulate_and_solve(X, y, X_intervened, deltas, groups, reset=first_call)

    def _accumulate_and_solve(self, X, y, X_intervened, deltas, groups, *, reset):
        # validate_data(reset=True) records the width and column names of X before the rest is
        # checked; a fit that then fails must not leave them describing the rejected data.
        saved = {name: vars(self)[name] for name in _INPUT_ATTRIBUTES if name in vars(self)}
        try:
            return self._update(X, y, X_intervened, deltas, groups, reset=reset)
        except BaseException:
            for name in _INPUT_ATTRIBUTES:
                if name in saved:
                    setattr(self, name, saved[name])
                else:
                    vars(self).pop(name, None)
            raise

    def _update(self, X, y, X_intervened, deltas, groups, *, reset):
        # Finiteness is checked on the Gram diagonals below rather than by another pass over
        # the data: a NaN or infinity in a column makes that column's sum of squares non-finite.
        X = validate_data(
            self,
            X,
            dtype=[np.float64, np.float32],
            reset=reset,
            ensure_min_samples=1,
            ensure_all_finite=False,
        )
        n_samples, n_features = X.shape
        _check_n_components(self.n_components, n_features)
        if X_intervened is not None and hasattr(self, "feature_names_in_"):
            names = _get_feature_names(X_intervened)
            if names is not None and list(names) != list(self.feature_names_in_):
                raise ValueError(
                    "X_intervened has columns "
                    f"{list(names)[:10]} but X has {list(self.feature_names_in_)[:10]}: "
                    "the counterparts must have the same columns in the same order."
                )
        X_intervened = self._check_aligned(X_intervened, X, "X_intervened", dtype=X.dtype)
        groups = self._check_aligned(groups, X, "groups")
        # y is used only to pair environments by class and to name classes for an
        # intervention source; otherwise it is ignored like in any unsupervised transformer.
        uses_y = groups is not None or self.interventions is not None
        y = self._check_aligned(y, X, "y") if uses_y else None
        if deltas is not None:
            deltas = _named_array(
                deltas, "deltas", ndim=2, dtype=[np.float64, np.float32], ensure_min_samples=0
            )
            _check_width(deltas, "deltas", n_features)

        # Statistics of this batch are complete and valid before they touch the fitted state.
        batch = InterventionStatistics(n_features)
        batch.add_samples(X, X_intervened)
        if not np.all(np.isfinite(_gram_diagonal(batch))):
            raise ValueError(_non_finite_message("X", X.dtype))
        if not np.all(np.isfinite(np.diag(batch.difference_gram))):
            raise ValueError(_non_finite_message("X_intervened", X.dtype))
        if deltas is not None:
            batch.add_differences(deltas)
        if groups is not None:
            labels = y if y is not None else np.zeros(n_samples, dtype=int)
            batch.add_environments(X, labels, groups)
        if y is not None:
            batch.add_labels(y)

        # The fitted state changes only once everything has succeeded: a fit or partial_fit
        # that raises (bad batch, failing intervention source) leaves the projector as it was.
        if reset:
            statistics = batch  # the merge of one batch into empty statistics is the batch
        else:
            statistics = self._statistics_copy()
            statistics.merge(batch)
        # On a fresh fit the rows behind every sum are at hand: they span M (see _solve).
        rows = [X, X_intervened, deltas] if reset else None
        self._solve(statistics, dtype=X.dtype, rows=rows)
        return self

    def _statistics_copy(self):
        statistics = copy.deepcopy(self.statistics_)
        if not hasattr(statistics, "labels"):  # pickled before the statistics kept labels
            statistics.labels, statistics.dtype = set(vars(self).get("_labels_seen", ())), None
        return statistics

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_from_statistics(self, statistics):
        """Fit from sufficient statistics instead of the data they summarise.

        The fitted state is the one :meth:`fit` reaches on the data the statistics were
        accumulated from: ``fit(X, y, X_intervened=..., deltas=..., groups=...)`` equals
        ``fit_from_statistics(s)`` with ``s.add_samples(X, X_intervened)``,
        ``s.add_differences(deltas)``, ``s.add_environments(X, y, groups)`` and
        ``s.add_labels(y)`` (the labels only matter to an ``interventions`` source).
        Statistics computed on several workers and merged with
        :meth:`InterventionStatistics.merge` thus fit a projector on data that never sits in
        one memory. :meth:`partial_fit` can add batches afterwards.

        Parameters
        ----------
        statistics : InterventionStatistics
            Statistics of at least one embedding. They are copied: later changes to
            ``statistics`` do not reach the projector.

        Returns
        -------
        self : InvariantProjector
            The fitted projector; ``feature_names_in_`` is not set (statistics carry no
            column names) and ``components_`` has the dtype of the statistics' embeddings
            (``statistics.dtype``; float64 when unknown).

        Raises
        ------
        TypeError
            If ``statistics`` is not an :class:`InterventionStatistics`.
        ValueError
            If the statistics hold no embedding, contain non-finite sums, have arrays whose
            width differs from ``statistics.n_features``, or are narrower than an integer
            ``n_components``.

        Examples
        --------
        >>> from skicm import InterventionStatistics, InvariantProjector
        >>> from skicm.datasets import make_linear_scm
        >>> data = make_linear_scm(n_samples=2000, random_state=0)
        >>> first, second = InterventionStatistics(8), InterventionStatistics(8)
        >>> first.add_samples(data.X[:1000], data.X_intervened[:1000])
        >>> second.add_samples(data.X[1000:], data.X_intervened[1000:])
        >>> merged = first.merge(second)
        >>> projector = InvariantProjector(n_components=4, alpha=20.0)
        >>> projector.fit_from_statistics(merged).n_samples_seen_
        2000
        >>> direct = InvariantProjector(n_components=4, alpha=20.0)
        >>> direct = direct.fit(data.X, X_intervened=data.X_intervened)
        >>> bool(abs(projector.components_ - direct.components_).max() < 1e-8)
        True
        """
        statistics = _check_statistics(statistics)
        _check_n_components(self.n_components, statistics.n_features)
        dtype = statistics.dtype if statistics.dtype == np.float32 else np.float64
        saved = {name: vars(self)[name] for name in _INPUT_ATTRIBUTES if name in vars(self)}
        try:
            self.n_features_in_ = statistics.n_features
            vars(self).pop("feature_names_in_", None)
            self._solve(copy.deepcopy(statistics), dtype=dtype)
        except BaseException:
            for name in _INPUT_ATTRIBUTES:
                if name in saved:
                    setattr(self, name, saved[name])
                else:
                    vars(self).pop(name, None)
            raise
        return self

    def truncated(self, n_components):
        """A copy of this fitted projector that keeps fewer directions, without refitting.

        The directions of a projector fitted with ``n_components=k`` are the first ``k``
        eigenvectors of the same matrix ``M`` for every ``k``, so the copy equals a fresh
        :meth:`fit` with ``n_components`` on the same data (same components, diagnostics
        and spectrum) and costs no eigendecomposition: one fit with the largest rank of a
        grid serves every smaller rank. This projector is left unchanged; the copy shares
        its read-only ``statistics_`` (a :meth:`partial_fit` of either copies them first).

        Parameters
        ----------
        n_components : int or "auto"
            Rank of the copy, as the ``n_components`` parameter of a fresh fit (capped at
            ``data_rank_`` with a :class:`~skicm.exceptions.RankWarning`, as in :meth:`fit`).

        Returns
        -------
        projector : InvariantProjector
            A new fitted projector with ``n_components`` set.

        Raises
        ------
        ValueError
            If ``n_components`` is not a positive integer or "auto", exceeds
            ``n_features_in_``, or needs more directions than the ``n_components_`` this
            projector holds (a lower-rank copy cannot add directions: fit again).

        Examples
        --------
        >>> from skicm import InvariantProjector
        >>> from skicm.datasets import make_linear_scm
        >>> data = make_linear_scm(n_samples=2000, random_state=0)
        >>> full = InvariantProjector(n_components=8, alpha=20.0)
        >>> full = full.fit(data.X, X_intervened=data.X_intervened)
        >>> [full.truncated(k).n_components_ for k in (2, 4, "auto")]
        [2, 4, 4]
        >>> full.n_components_
        8
        """
        check_is_fitted(self)
        validate_parameter_constraints(
            {"n_components": self._parameter_constraints["n_components"]},
            {"n_components": n_components},
            caller_name=f"{type(self).__name__}.truncated",
        )
        _check_n_components(n_components, self.n_features_in_)
        k = _kept_directions(
            n_components, self.eigenvalues_, self.data_rank_, self.n_samples_seen_, self.center
        )
        if k > self.n_components_:
            raise ValueError(
                f"truncated(n_components={n_components!r}) needs {k} directions but this "
                f"projector holds n_components_={self.n_components_}: truncation only lowers "
                f"the rank. Fit with n_components={n_components!r} (or fit once with the "
                "largest rank you need and truncate that)."
            )
        shared = {"statistics_", "interventions"}
        result = copy.copy(self)
        for name, value in vars(self).items():
            if name not in shared:
                setattr(result, name, copy.deepcopy(value))
        result.n_components = n_components
        result.n_components_ = k
        for name in _PER_COMPONENT_ATTRIBUTES:
            setattr(result, name, getattr(result, name)[:k].copy())
        return result

    def _check_aligned(self, values, X, name, dtype=None):
        if values is None:
            return None
        if name == "X_intervened":
            images = _describe_raw_images(values)
            if images is not None:
                raise ValueError(
                    f"X_intervened looks like raw images ({images}), but InvariantProjector "
                    "takes embeddings: X_intervened must have shape (n_samples, n_features) "
                    f"like X ({X.shape[1]} features). To give image counterparts to a "
                    "pipeline that embeds images, let the pipeline embed them too: "
                    'Pipeline([...], transform_input=["X_intervened"]) with metadata routing '
                    "on (sklearn.set_config(enable_metadata_routing=True)) and "
                    "InvariantProjector().set_fit_request(X_intervened=True), then "
                    "pipe.fit(images, y, X_intervened=counterpart_images); or "
                    'skicm.make_clip_icm_pipeline(embedder, interventions="X_intervened"), '
                    "which sets this up."
                )
            values = _named_array(values, name, ndim=2, dtype=dtype, ensure_all_finite=False)
            if values.shape != X.shape:
                raise ValueError(
                    f"X_intervened has shape {values.shape} but X has shape {X.shape}; row i "
                    "of X_intervened must be the intervened counterpart of row i of X."
                )
            return values
        values = _named_array(values, name, ndim=1, dtype=None)
        if values.shape[0] != X.shape[0]:
            raise ValueError(
                f"{name} has {values.shape[0]} entries but X has {X.shape[0]} rows; {name} "
                "needs one entry per row of X."
            )
        return values

    def _intervention_differences(self, labels_seen, n_features):
        labels = sorted(labels_seen, key=str) if labels_seen else None
        differences = self.interventions.differences(
            None if labels is None else np.asarray(labels, dtype=object)
        )
        differences = _named_array(
            differences,
            "interventions.differences(y)",
            ndim=2,
            dtype=[np.float64, np.float32],
            ensure_min_samples=0,
        )
        _check_width(differences, "interventions.differences(y)", n_features)
        return differences

    def _solve(self, statistics, dtype, rows=None):
        """Set the fitted state from complete statistics (the only writer of that state).

        ``rows``: arrays (or None) whose rows together span every row the statistics sum
        over (the embeddings, their counterparts, the deltas), when known. With fewer such
        rows (plus the extra differences) than features, ``M`` is eigendecomposed in their
        span instead of in the whole space; see :func:`_span_basis`.
        """
        extra_differences = [statistics.environment_differences()]
        if self.interventions is not None:
            extra_differences.append(
                self._intervention_differences(statistics.labels, statistics.n_features)
            )
        difference_gram = statistics.difference_gram.copy()
        n_differences = statistics.n_differences
        for differences in extra_differences:
            if len(differences):
                difference_gram += differences.T @ differences.astype(np.float64)
                n_differences += differences.shape[0]

        mean = statistics.sum / statistics.n_samples
        if self.center:
            signal = statistics.covariance()
        else:
            signal = statistics.gram / statistics.n_samples
        if n_differences == 0:
            _warn_at_caller(
                "InvariantProjector was fitted without interventional data (no X_intervened, "
                "deltas, groups with two or more environments per class, or interventions): "
                "no invariance was learned and the projection keeps the top second-moment "
                "directions.",
                NoInvarianceWarning,
            )
            intervention = np.zeros_like(signal)
        else:
            intervention = difference_gram / n_differences
            if not np.any(intervention):
                _warn_at_caller(
                    "All interventional differences are zero (identical pairs): the invariance "
                    "term vanishes and the projection keeps the top second-moment directions.",
                    NoInvarianceWarning,
                )

        objective = signal - self.alpha * intervention
        objective = (objective + objective.T) / 2
        span = None
        if rows is not None:
            # environment_differences are differences of means of rows of X: already spanned.
            span = _span_basis([*rows, *extra_differences[1:]], statistics.n_features)
        if span is not None:
            eigenvalues, eigenvectors, signal_eigenvalues = _solve_in_span(objective, signal, span)
        else:
            eigenvalues, eigenvectors = np.linalg.eigh(objective)
            eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
            signal_eigenvalues = np.linalg.eigvalsh(signal)

        # No more directions than the training data has: M = S - alpha * I with I positive
        # semi-definite has at most rank(S) positive eigenvalues (Weyl), and rank(S) is at most
        # the rows seen (one less once centred). Beyond it lie round-off eigenvalues whose
        # eigenvectors differ from machine to machine. The rank of S uses the "auto" rule's
        # tolerance (float32 precision relative to the largest eigenvalue).
        data_rank = min(
            statistics.n_samples - int(self.center),
            count_positive_eigenvalues(signal_eigenvalues),
        )
        n_components = _kept_directions(
            self.n_components, eigenvalues, data_rank, statistics.n_samples, self.center
        )
        if callable(eigenvectors):
            eigenvectors = eigenvectors(n_components)
        components = eigenvectors[:, :n_components].T
        # Deterministic sign: the largest-magnitude entry of each direction is positive.
        largest = np.argmax(np.abs(components), axis=1)
        signs = np.sign(components[np.arange(n_components), largest])
        signs[signs == 0] = 1
        components = components * signs[:, None]

        self.components_ = components.astype(dtype, copy=False)
        self.eigenvalues_ = eigenvalues
        self.n_components_ = n_components
        self.signal_variance_ = np.sum((components @ signal) * components, axis=1)
        self.intervention_variance_ = np.sum((components @ intervention) * components, axis=1)
        self.invariance_ratio_ = np.divide(
            self.intervention_variance_,
            self.signal_variance_,
            out=np.full(n_components, np.inf),
            where=self.signal_variance_ > 0,
        )
        self.mean_ = mean.astype(dtype, copy=False)
        self.data_rank_ = data_rank
        self.n_samples_seen_ = statistics.n_samples
        self.n_differences_seen_ = n_differences
        self.statistics_ = statistics

    @property
    def _n_features_out(self):
        return self.n_components_

    def transform(self, X):
        """Project embeddings onto the invariant subspace.

        A linear map (affine with ``center=True``): no normalisation is applied.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components)
            Coordinates in the invariant subspace, in the dtype of ``X`` (float32 stays
            float32).
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        components = self.components_.astype(X.dtype, copy=False)
        if self.center:
            X = X - self.mean_.astype(X.dtype, copy=False)
        return X @ components.T

    def inverse_transform(self, X):
        """Map subspace coordinates back to the embedding space (``A^T A z``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components)
            Coordinates in the invariant subspace.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
            The projection of the embeddings onto the invariant subspace, expressed in the
            embedding space.
        """
        check_is_fitted(self)
        X = check_array(X, dtype=[np.float64, np.float32], input_name="X")
        if X.shape[1] != self.n_components_:
            raise ValueError(
                f"X has {X.shape[1]} features, but inverse_transform expects "
                f"n_components_={self.n_components_} (the output width of transform)."
            )
        reconstruction = X @ self.components_.astype(X.dtype, copy=False)
        if self.center:
            reconstruction = reconstruction + self.mean_.astype(X.dtype, copy=False)
        return reconstruction

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
