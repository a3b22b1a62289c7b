"""GPU throughput of ``skicm embed`` from JPEG files: local engine and Ray on 1..N GPUs of a node.

Target on one H200 (16 cores): >= 6,000 images/s for ViT-B-32 (random weights,
``pretrained=None``: speed does not depend on the weights) from 500x375 JPEG files, and
throughput growing with the GPUs of the node under ``--engine ray``. Printed, measured in one run:

- ``CLIPEmbedder.transform`` (no store) on the files: the reference;
- ``embed_collection(engine="local")``: the same encoder plus keys, Parquet shards, manifest;
- ``embed_collection(engine="ray")`` on a local Ray instance that sees 1, 2, ... GPUs
  (``CUDA_VISIBLE_DEVICES`` is not touched: Ray is told how many GPUs to use), with the speed-up
  over one GPU; the actors decode the files themselves (``decode_in="encoder"``: JPEG on the
  GPU). On the first GPU count also ``decode_in="tasks"`` (Ray Data CPU tasks decode, actors
  resize and encode). The start of the actors and the loading of the model are inside each
  call.

- ``embed_collection(engine="local")`` from the same JPEGs packed into WebDataset tar shards
  (``--webdataset``, on by default when the webdataset package is installed): the items are
  read by offset from the tars and decoded on the CPU (threads; reduced as files are, but no
  nvjpeg), so the gap to the files' row is what the CPU decode costs on this node.

``--size 2048x1536`` writes large photos instead (cropped and upscaled), and ``--decode both``
(the default) also times ``transform`` with ``decode="full"`` beside the default
``decode="reduced"``: on CUDA, JPEG files that the preprocessing lets shrink are decoded at
reduced scale by Pillow in the DataLoader workers (nvjpeg has no DCT scaling), the others by
nvjpeg on the GPU; with ``decode="full"`` nvjpeg decodes every file in full. Which is faster
depends on the cores per GPU: the run prints both. 500x375 files are too small to be reduced
for a 224-pixel model, so the two agree there.

Self-contained: it writes its JPEG files (from scikit-learn's two sample photos, cropped, with
noise, so that no two are alike) into ``--data`` and needs only skicm, torch, torchvision,
open_clip_torch, ray[data] and pyarrow. ``--dry`` runs the same code on the CPU with the tiny
model and a few images (a smoke test for machines without a GPU).

Run::

    python benchmarks/bench_embed_gpu.py                 # on the GPU node
    python benchmarks/bench_embed_gpu.py --size 2048x1536 --n-images 8000 --skip-ray
    python benchmarks/bench_embed_gpu.py --dry           # anywhere

On a machine whose image lacks open_clip_torch, ftfy and wcwidth, install their wheels with
``pip install --no-deps --target <dir>`` and put ``<dir>`` on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

TARGET = {"ViT-B-32": 6000.0}


def _write_jpegs(folder, start, stop, size=(500, 375)):
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two 427x640 photos
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        path = Path(folder) / f"{i:06d}.jpg"
        if path.exists():
            continue
        photo = photos[i % 2]
        top, left = rng.integers(0, 53), rng.integers(0, 141)
        crop = photo[top : top + 375, left : left + 500]
        if tuple(size) != (500, 375):
            crop = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BICUBIC))
        crop = crop.astype(np.int16)
        crop = np.clip(crop + rng.integers(-8, 9, crop.shape), 0, 255).astype(np.uint8)
        Image.fromarray(crop).save(path, quality=90)


def make_jpegs(folder: Path, n: int, workers: int, size=(500, 375)) -> list[str]:
    """Write ``n`` distinct JPEG files of ``size`` (width, height) into ``folder`` (kept)."""
    if tuple(size) != (500, 375):
        folder = folder.with_name(f"{folder.name}-{size[0]}x{size[1]}")
    folder.mkdir(parents=True, exist_ok=True)
    chunk = max(1, -(-n // workers))
    with ProcessPoolExecutor(workers) as pool:
        futures = [
            pool.submit(_write_jpegs, str(folder), s, min(n, s + chunk), tuple(size))
            for s in range(0, n, chunk)
        ]
        for future in futures:
            future.result()
    return [str(folder / f"{i:06d}.jpg") for i in range(n)]


def write_tar_shards(paths, folder: Path, per_shard: int = 1000) -> str | None:
    """The JPEG files of ``paths`` as WebDataset tar shards; their brace pattern (None without
    the webdataset package, which skicm's reader needs)."""
    try:
        import webdataset as wds
    except ImportError:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    n_shards = (len(paths) + per_shard - 1) // per_shard
    for s in range(n_shards):
        with wds.TarWriter(str(folder / f"shard-{s:05d}.tar")) as sink:
            for i in range(s * per_shard, min(len(paths), (s + 1) * per_shard)):
                sink.write({"__key__": f"{i:08d}", "jpg": Path(paths[i]).read_bytes()})
    return str(folder / f"shard-{{00000..{n_shards - 1:05d}}}.tar")


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--n-images", type=int, default=30000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "skicm-jpegs"))
    parser.add_argument("--gpus", default="all", help="'all' or a comma list, e.g. 1,2,4")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--size", default="500x375", help="JPEG files' WIDTHxHEIGHT")
    parser.add_argument(
        "--decode",
        choices=["reduced", "full", "both"],
        default="both",
        help="the embedders' decode parameter; both: time the other one as well",
    )
    parser.add_argument(
        "--webdataset",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the same JPEGs from WebDataset tar shards (default: on)",
    )
    parser.add_argument("--dry", action="store_true", help="tiny CPU smoke run of the same code")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from skicm import CLIPEmbedder
    from skicm.distributed import embed_collection, load_embeddings

    cores = os.cpu_count() or 2
    cuda = torch.cuda.is_available() and not args.dry
    model, n, batch_size, device = args.model, args.n_images, args.batch_size, "cuda"
    if not cuda:
        from skicm.model_configs import register_tiny_clip

        model, n, batch_size, device = register_tiny_clip(), 64, 16, "cpu"
        print("no CUDA device (or --dry): smoke run on the CPU with the tiny model")
    size = tuple(int(side) for side in args.size.lower().split("x"))
    start = time.perf_counter()
    paths = make_jpegs(Path(args.data), n, max(1, min(cores, 16)), size)
    print(
        f"{n} JPEG files {size[0]}x{size[1]} ready in {time.perf_counter() - start:.1f} s; "
        f"{cores} cores"
    )
    n_gpus = torch.cuda.device_count() if cuda else 0
    if cuda:
        print(f"device: {n_gpus} x {torch.cuda.get_device_name(0)}")
    work = Path(tempfile.mkdtemp(prefix="skicm-bench-gpu-"))
    listing = work / "listing.csv"
    listing.write_text("path\n" + "\n".join(paths) + "\n")
    decode = "full" if args.decode == "full" else "reduced"
    embedder = CLIPEmbedder(
        model,
        pretrained=None,
        device=device,
        batch_size=batch_size,
        decode=decode,
        store=None,
        progress=False,
    )

    embedder.transform(paths[: 2 * batch_size])  # warm-up: model, kernels, decoders
    _sync()
    start = time.perf_counter()
    reference = embedder.transform(paths)
    _sync()
    reference_ips = n / (time.perf_counter() - start)
    target = TARGET.get(model)
    versus = f" ({reference_ips / target:.2f}x the target {target:.0f})" if target and cuda else ""
    print(
        f"{model}: CLIPEmbedder.transform decode={decode:7} {reference_ips:9.0f} images/s{versus}"
    )
    if args.decode == "both":
        other = embedder.set_params(decode="full")
        other.transform(paths[: 2 * batch_size])
        _sync()
        start = time.perf_counter()
        full = other.transform(paths)
        _sync()
        full_ips = n / (time.perf_counter() - start)
        embedder.set_params(decode="reduced")
        cosine = np.sum(full * reference, axis=1) / (
            np.linalg.norm(full, axis=1) * np.linalg.norm(reference, axis=1)
        )
        print(
            f"{model}: CLIPEmbedder.transform decode=full    {full_ips:9.0f} images/s "
            f"(reduced / full: {reference_ips / full_ips:.2f}x; cosine reduced to full: "
            f"min {cosine.min():.5f})"
        )

    def embed(engine, out, source=listing, **options):
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        result = embed_collection(
            source,
            out,
            embedder=embedder,
            engine=engine,
            shard_size=10_000,
            progress=False,
            **options,
        )
        elapsed = time.perf_counter() - start
        assert result.n_embedded == n, result.bad_files
        return n / elapsed

    local_ips = embed("local", work / "local")
    versus = f", {local_ips / target:.2f}x the target" if target and cuda else ""
    print(
        f"{model}: skicm embed --engine local     {local_ips:9.0f} images/s "
        f"({local_ips / reference_ips:.2f}x transform{versus})"
    )
    local = load_embeddings(work / "local")
    unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    print(f"  max |local - transform| (unit norm): {np.abs(local.embeddings - unit).max():.1e}")
    if args.webdataset:
        pattern = write_tar_shards(paths, work / "shards")
        if pattern is None:
            print("webdataset is not installed: no WebDataset row (pip install webdataset)")
        else:
            tar_ips = embed("local", work / "tars", source=pattern)
            print(
                f"{model}: skicm embed WebDataset shards {tar_ips:9.0f} images/s "
                f"({tar_ips / local_ips:.2f}x the same files; CPU decode)"
            )

    if not args.skip_ray:
        import ray

        counts = [1, 2, 4, 8, 16] if args.gpus == "all" else [int(k) for k in args.gpus.split(",")]
        counts = [k for k in counts if k <= max(n_gpus, 1)] if cuda else [0]
        one_gpu = None
        for k in counts:
            ray.init(num_cpus=cores, num_gpus=k, include_dashboard=False, log_to_driver=False)
            places = ["encoder", "tasks"] if k == counts[0] else ["encoder"]
            try:
                for place in places:
                    out = work / f"ray{k}-{place}"
                    ips = embed("ray", out, decode_in=place)
                    label = f"{k} GPU(s)" if cuda else "CPU"
                    speed_up = ""
                    if place == "encoder":
                        one_gpu = one_gpu or ips
                        speed_up = f", speed-up {ips / one_gpu:.2f}x over one GPU"
                    print(
                        f"{model}: skicm embed --engine ray --decode-in {place:7} {label:9} "
                        f"{ips:9.0f} images/s ({ips / reference_ips:.2f}x transform on one "
                        f"device{speed_up})"
                    )
                    on_ray = load_embeddings(out)
                    print(
                        f"  max |ray - transform| (unit norm): "
                        f"{np.abs(on_ray.embeddings - unit).max():.1e}"
                        + (" (CPU decoding and resizing)" if place == "tasks" and cuda else "")
                    )
            finally:
                ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
