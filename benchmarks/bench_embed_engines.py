"""CPU throughput of ``skicm embed`` (local and Ray engines) against CLIPEmbedder.transform.

Same JPEG files, same model (random weights: speed does not depend on them), same process, one
run, interleaved repeats (best of each, so that other load on a shared machine slows all
contenders alike):

- ``transform``: ``CLIPEmbedder.transform(paths)`` with no store (the reference);
- ``--engine local``: ``embed_collection(..., engine="local")`` into a fresh folder (listing,
  image keys, Parquet shards and manifest included);
- ``--engine ray``: ``embed_collection(..., engine="ray")`` on a local Ray instance with
  ``--ray-cpus`` CPUs (started once before timing; the time to start the actors and load the
  model in them is inside every call, as a user pays it), for each place of decoding
  (``decode_in="encoder"``, the default, and ``"tasks"``).

A Ray call pays a fixed start-up (a new actor process imports torch, open_clip and skicm and
builds the model) that ``transform`` in a warm process does not. To separate it from the
throughput, each Ray variant also embeds the first ``--small`` images alone: the start-up is
about that call's time, and the steady-state rate is ``(N - small) / (t_N - t_small)``.

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
    parser.add_argument(
        "--decode-in",
        nargs="+",
        default=["encoder", "tasks"],
        choices=["encoder", "tasks"],
        help="Ray variants to time",
    )
    parser.add_argument(
        "--small", type=int, default=32, help="images of the start-up call of each Ray variant"
    )
    args = parser.parse_args(argv)

    import torch

    from skicm import CLIPEmbedder
    from skicm.distributed import embed_collection, list_images, load_embeddings

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

    small_listing = work / "small.csv"
    small_listing.write_text("path\n" + "\n".join(paths[: args.small]) + "\n")

    def embed(engine, decode_in="encoder", source=listing):
        out = work / f"out-{engine}-{decode_in}-{Path(source).stem}"
        shutil.rmtree(out, ignore_errors=True)
        options = {"decode_in": decode_in} if engine == "ray" else {}
        result = embed_collection(
            source,
            out,
            embedder=embedder,
            engine=engine,
            shard_size=10_000,
            progress=False,
            **options,
        )
        assert result.n_embedded == len(list_images(source).paths), result.bad_files
        return out

    ray = None
    if not args.skip_ray:
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - start

    variants = [] if ray is None else args.decode_in
    best = {"transform": np.inf, "local": np.inf}
    best.update({f"ray-{v}": np.inf for v in variants})
    best.update({f"ray-{v}-small": np.inf for v in variants})
    out_ray = {}
    for _ in range(args.repeats):
        t, reference = timed(embedder.transform, paths)
        best["transform"] = min(best["transform"], t)
        t, out_local = timed(embed, "local")
        best["local"] = min(best["local"], t)
        for variant in variants:
            t, out_ray[variant] = timed(embed, "ray", variant)
            best[f"ray-{variant}"] = min(best[f"ray-{variant}"], t)
            t, _ = timed(embed, "ray", variant, small_listing)
            best[f"ray-{variant}-small"] = min(best[f"ray-{variant}-small"], t)

    n = len(paths)
    ips = {name: n / t for name, t in best.items() if not name.endswith("-small")}
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
    for variant in variants:
        whole = ips[f"ray-{variant}"] / ips["transform"]
        start_up = best[f"ray-{variant}-small"]
        steady = (n - args.small) / (best[f"ray-{variant}"] - start_up)
        print(f"  skicm embed --engine ray --decode-in {variant} ({args.ray_cpus} CPUs):")
        print(
            f"    whole call incl. actor start: {ips[f'ray-{variant}']:7.1f} images/s   "
            f"ratio {whole:.2f} (target >= 0.7)"
        )
        print(
            f"    start-up (a call on {args.small} images): {start_up:.1f} s; steady state "
            f"{steady:.1f} images/s, ratio {steady / ips['transform']:.2f}"
        )
        on_ray = load_embeddings(out_ray[variant])
        print(
            f"    max |ray - transform| (unit norm): "
            f"{np.abs(on_ray.embeddings - reference).max():.1e}"
        )
    if ray is not None:
        print(f"  (Ray start-up, once, not in the figures above: {ray_start:.1f} s)")
        ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
