"""GPU throughput of CLIPEmbedder.transform from JPEG files on disk (ViT-B-32 and ViT-B-16).

Targets on one H200 with 16 cores, random weights (``pretrained=None``; speed does not depend on
the weights): >= 6,000 images/s for ViT-B-32 and >= 3,000 images/s for ViT-B-16, from 500x375
JPEG files, with JPEG decoding and resizing on the GPU (``decoder="torchvision"``: nvjpeg via
``torchvision.io.decode_jpeg``). For each model the script prints, measured in the same run:

- the bare forward pass (bf16 autocast) on tensors already on the GPU: the limit;
- CLIPEmbedder with GPU decoding (the default on CUDA) and with Pillow decoding in the workers;
- the ratios to the target and to the bare forward pass.

Run (finishes in well under 8 minutes on the H200; ``--dry`` runs the same code path on the CPU
with a tiny model and a few images, as a smoke test on machines without a GPU)::

    python benchmarks/bench_embedding_gpu.py            # on the GPU machine
    python benchmarks/bench_embedding_gpu.py --dry      # anywhere

The GPU machine's image lacks open_clip_torch, ftfy and wcwidth: carry their wheels and install
them with ``pip install --no-deps --target <dir>`` then put ``<dir>`` on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embed_gpu import make_jpegs
from bench_embedding_cpu import DATA

TARGETS = {"ViT-B-32": 6000.0, "ViT-B-16": 3000.0}


def bare_forward_ips(model, device, image_size, batch_size, n_batches, autocast_dtype):
    import torch

    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    context = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else torch.autocast(device_type=device.type, enabled=False)
    )
    with torch.inference_mode(), context:
        model.encode_image(x)
        _sync(device)
        start = time.perf_counter()
        for _ in range(n_batches):
            model.encode_image(x).float().cpu()
        _sync(device)
    return batch_size * n_batches / (time.perf_counter() - start)


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=12000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--models", default="ViT-B-32,ViT-B-16")
    parser.add_argument("--dry", action="store_true", help="tiny CPU smoke run of the same code")
    args = parser.parse_args(argv)

    import torch

    from skicm._image_embedder_base import autocast_dtype as encoder_autocast_dtype
    from skicm.embedding import CLIPEmbedder, _load_model

    cores = os.cpu_count() or 2
    workers = args.num_workers if args.num_workers is not None else max(1, min(15, cores - 1))
    device_name = "cuda" if torch.cuda.is_available() and not args.dry else "cpu"
    models = args.models.split(",")
    n, batch_size = args.n_images, args.batch_size
    if args.dry or device_name == "cpu":
        from skicm.model_configs import register_tiny_clip

        models, n, batch_size, workers = [register_tiny_clip()], 64, 16, min(workers, 2)
        print("no CUDA device (or --dry): smoke run on the CPU with the tiny model")

    start = time.perf_counter()
    paths = make_jpegs(DATA, n, max(1, min(cores, 16)))
    print(f"{n} JPEG files 500x375 ready in {time.perf_counter() - start:.1f} s; {cores} cores")
    if device_name == "cuda":
        print(f"device: {torch.cuda.get_device_name(0)}")

    for model_name in models:
        device = torch.device(device_name)
        loaded = _load_model(model_name, None, device_name)
        size = loaded.model.visual.image_size
        size = size[0] if isinstance(size, tuple) else size
        dtype = encoder_autocast_dtype("auto", device)
        limit = bare_forward_ips(loaded.model, device, size, batch_size, 10, dtype)
        print(f"{model_name}: bare forward ({dtype or 'fp32'}) {limit:9.0f} images/s")
        for decoder in ("auto", "pil"):
            embedder = CLIPEmbedder(
                model_name,
                pretrained=None,
                device=device_name,
                batch_size=batch_size,
                num_workers=workers,
                decoder=decoder,
                store=None,
                progress=False,
            )
            embedder.transform(paths[: 2 * batch_size])  # warm-up: workers, kernels, nvjpeg
            _sync(device)
            start = time.perf_counter()
            Z = embedder.transform(paths)
            _sync(device)
            ips = len(paths) / (time.perf_counter() - start)
            target = TARGETS.get(model_name)
            versus = f", {ips / target:.2f}x the target {target:.0f}" if target else ""
            print(
                f"  CLIPEmbedder decoder={decoder!r:6} workers={workers}: {ips:9.0f} images/s "
                f"({ips / limit:.2f}x bare forward{versus}); output {Z.shape} {Z.dtype}"
            )


if __name__ == "__main__":
    main()
