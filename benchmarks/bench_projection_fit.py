"""Cost of InvariantProjector.fit against the two Gram products it cannot avoid, and of a
grid over ranks solved by truncation against one solve per rank.

Targets: on 200,000 x 512 float32 embeddings with aligned counterparts, ``fit`` costs at most
1.5x the float32 products ``X^T X`` and ``Delta^T Delta`` (Delta precomputed, so the reference
does strictly less work than fit), and its extra memory is a small multiple of the input (no
n x n matrix, no float64 copy of X). A grid over ranks from the same statistics costs one
solve (``fit_from_statistics`` with the largest rank, then ``truncated`` for the others)
instead of one solve per rank: the ratio printed is the grid's time by truncation over the
time of one solve per rank (target: about 1 / number of ranks).

Few rows, many features (``--small-n``, default 110 x 1280: a leave-one-domain-out fold of
mini VLCS with EfficientNet-Lite0 features): ``fit`` eigendecomposes the (2n x 2n) problem in
the span of the rows and counterparts; printed beside ``fit_from_statistics`` on the same
sums, which eigendecomposes the d x d matrix (only sums are known there), both with one BLAS
thread.

Run: python benchmarks/bench_projection_fit.py [--n-samples 200000] [--n-features 512]
[--small-n 110] [--small-d 1280]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import warnings

import numpy as np

from skicm import InvariantProjector


def best_of_interleaved(repeats, *functions):
    """Best time of each function, runs interleaved so that machine noise hits both alike."""
    best = [float("inf")] * len(functions)
    for _ in range(repeats):
        for index, function in enumerate(functions):
            start = time.perf_counter()
            function()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def few_rows(args):
    """fit (solve in the rows' span) against fit_from_statistics (d x d) on n << d data."""
    from threadpoolctl import threadpool_limits

    from skicm import InterventionStatistics

    rng = np.random.default_rng(0)
    n, d = args.small_n, args.small_d
    X = rng.standard_normal((n, d), dtype=np.float32)
    X_intervened = X + 0.3 * rng.standard_normal(X.shape, dtype=np.float32)
    statistics = InterventionStatistics(d)
    statistics.add_samples(X, X_intervened)

    def in_span():
        InvariantProjector(n_components=d, alpha=1.0).fit(X, X_intervened=X_intervened)

    def full():
        InvariantProjector(n_components=d, alpha=1.0).fit_from_statistics(statistics)

    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        in_span(), full()  # warm up
        span_seconds, full_seconds = best_of_interleaved(args.repeats, in_span, full)
    print(f"{n} x {d} float32 with aligned counterparts (n << d), one BLAS thread")
    print(f"  fit (eigendecomposition in the rows' span): {span_seconds:8.3f} s")
    print(f"  fit_from_statistics (d x d eigh):           {full_seconds:8.3f} s")
    print(f"  ratio span / full:                          {span_seconds / full_seconds:8.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=200_000)
    parser.add_argument("--n-features", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--small-n", type=int, default=110, help="rows of the n << d case")
    parser.add_argument("--small-d", type=int, default=1280, help="features of the n << d case")
    parser.add_argument("--only-small", action="store_true", help="run the n << d case only")
    args = parser.parse_args(argv)
    few_rows(args)
    if args.only_small:
        return

    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.n_samples, args.n_features), dtype=np.float32)
    X_intervened = X + 0.1 * rng.standard_normal(X.shape, dtype=np.float32)
    deltas = X - X_intervened  # only the reference uses this precomputed array

    def reference():
        X.T @ X
        deltas.T @ deltas

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            InvariantProjector(n_components=64).fit(X, X_intervened=X_intervened)

    fit()  # warm up BLAS threads and imports
    reference_seconds, fit_seconds = best_of_interleaved(args.repeats, reference, fit)

    tracemalloc.start()
    fit()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    input_bytes = X.nbytes + X_intervened.nbytes

    print(f"fit on {args.n_samples} x {args.n_features} float32 with aligned counterparts")
    print(f"  two float32 Gram products (reference): {reference_seconds:8.3f} s")
    print(f"  InvariantProjector.fit:                {fit_seconds:8.3f} s")
    print(
        f"  ratio fit / reference:                 {fit_seconds / reference_seconds:8.2f}"
        "  (target <= 1.5)"
    )
    print(
        f"  peak extra memory during fit:          {peak / 2**20:8.1f} MiB"
        f" = {peak / input_bytes:.3f} x the input ({input_bytes / 2**20:.0f} MiB)"
    )

    # A grid over ranks: every rank solved from the statistics, or one solve and truncations.
    statistics = InvariantProjector(n_components=1).fit(X, X_intervened=X_intervened).statistics_
    ranks = [k for k in (4, 8, 16, 32, 64, 128, 256) if k <= args.n_features]

    def solve_every_rank():
        for k in ranks:
            InvariantProjector(n_components=k).fit_from_statistics(statistics)

    def truncate():
        largest = InvariantProjector(n_components=max(ranks)).fit_from_statistics(statistics)
        for k in ranks:
            largest.truncated(k)

    every_seconds, truncate_seconds = best_of_interleaved(args.repeats, solve_every_rank, truncate)
    print(f"grid over {len(ranks)} ranks {ranks} from the same statistics ({args.n_features} wide)")
    print(f"  one fit_from_statistics per rank:      {every_seconds:8.3f} s")
    print(f"  one fit_from_statistics + truncated:   {truncate_seconds:8.3f} s")
    print(
        f"  ratio truncation / one solve per rank: {truncate_seconds / every_seconds:8.2f}"
        f"  (target about 1/{len(ranks)} = {1 / len(ranks):.2f})"
    )


if __name__ == "__main__":
    main()
