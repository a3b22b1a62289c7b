"""CPU throughput of ``skicm embed`` (local and Ray engines) against CLIPEmbedder.transform.

Same JPEG files, same model (random weights: speed does not depend on them), same process, one
run, interleaved repeats (best of each, so that other load on a shared machine slows all
contenders alike):

- ``transform``: ``CLIPEmbedder.transform(paths)`` with no store (the reference);
- ``--engine local``: ``embed_collection(..., engine="local")`` into a fresh folder (listing,
  image keys, Parquet shards and manifest included);
- ``--engine ray``: ``embed_collection(..., engine="ray")`` on a local Ray instance with
  ``--ray-cpus`` CPUs (started once before timing; the time to start the actors and load the
  model in them is inside every call, as a user pays it).

Targets: local >= 0.9x transform; Ray on 2 CPUs >= 0.7x transform.

Run::

    .venv/bin/python benchmarks/bench_embed_engines.py --n-images 192
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embedding_cpu import make_jpegs


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-S-32")
    parser.add_argument("--n-images", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="best of, interleaved")
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from skicm import CLIPEmbedder
    from skicm.distributed import embed_collection, load_embeddings

    paths = [str(p) for p in make_jpegs(args.n_images)]
    work = Path(tempfile.mkdtemp(prefix="skicm-bench-embed-"))
    listing = work / "listing.csv"
    listing.write_text("path\n" + "\n".join(paths) + "\n")

    embedder = CLIPEmbedder(
        args.model,
        pretrained=None,
        device="cpu",
        batch_size=args.batch_size,
        store=None,
        progress=False,
    )
    embedder.transform(paths[: args.batch_size])  # load the model, warm the kernels

    def embed(engine):
        out = work / f"out-{engine}"
        shutil.rmtree(out, ignore_errors=True)
        result = embed_collection(
            listing, out, embedder=embedder, engine=engine, shard_size=10_000, progress=False
        )
        assert result.n_embedded == len(paths), result.bad_files
        return out

    ray = None
    if not args.skip_ray:
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - start

    best = {"transform": np.inf, "local": np.inf, "ray": np.inf}
    for _ in range(args.repeats):
        t, reference = timed(embedder.transform, paths)
        best["transform"] = min(best["transform"], t)
        t, out_local = timed(embed, "local")
        best["local"] = min(best["local"], t)
        if ray is not None:
            t, out_ray = timed(embed, "ray")
            best["ray"] = min(best["ray"], t)

    n = len(paths)
    ips = {name: n / t for name, t in best.items()}
    print(
        f"{args.model}, random weights, {n} JPEG 500x375 files, batch {args.batch_size}, "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores, best of "
        f"{args.repeats} interleaved"
    )
    print(f"  CLIPEmbedder.transform:        {ips['transform']:7.1f} images/s")
    print(
        f"  skicm embed --engine local:    {ips['local']:7.1f} images/s   "
        f"ratio {ips['local'] / ips['transform']:.2f} (target >= 0.9)"
    )
    local = load_embeddings(out_local)
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    difference = np.abs(local.embeddings - reference).max()
    print(f"    max |local - transform| (unit norm): {difference:.1e}")
    if ray is not None:
        print(
            f"  skicm embed --engine ray ({args.ray_cpus} CPUs, whole call incl. actor start): "
            f"{ips['ray']:7.1f} images/s   ratio {ips['ray'] / ips['transform']:.2f} "
            "(target >= 0.7)"
        )
        print(f"    (Ray start-up, once, not in the figures above: {ray_start:.1f} s)")
        on_ray = load_embeddings(out_ray)
        print(
            f"    max |ray - transform| (unit norm): "
            f"{np.abs(on_ray.embeddings - reference).max():.1e}"
        )
        ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
