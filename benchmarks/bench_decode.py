"""Images/s per core from 2048x1536 JPEG files: full decode vs reduced-scale decode.

Measures what each image costs before the forward pass: read the file, decode it (upright, bomb
limit checked), resize and crop it to the model's input (CLIP's 224-pixel ``Resize`` +
``CenterCrop``, bicubic), as :class:`skicm.image_loading.ImageDecodingDataset` does for the
embedders, with ``decode="full"`` and ``decode="reduced"`` side by side, for both decoders
(``"tensor"``: torchvision's JPEG decoder and uint8 resize, the default; ``"pil"``: Pillow),
on one thread (per core: decoding scales with the cores, one image per thread). Also printed:
the difference between the two model inputs, in grey levels.

The files are written from scikit-learn's two sample photos (crops, upscaled, with a little
noise so that no two are alike). Run::

    python benchmarks/bench_decode.py            # 48 files, 3 rounds
    python benchmarks/bench_decode.py --n 16 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def write_jpegs(folder: Path, n: int, size=(2048, 1536)) -> list[Path]:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two 427x640 photos
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        top, left = rng.integers(0, 60), rng.integers(0, 150)
        crop = Image.fromarray(photos[i % 2][top : top + 360, left : left + 480])
        big = np.asarray(crop.resize(size, Image.Resampling.BICUBIC)).astype(np.int16)
        big = np.clip(big + rng.integers(-3, 4, big.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"{i:04d}.jpg")
        Image.fromarray(big).save(paths[-1], quality=90)
    return paths


def images_per_second(paths, mode, decode, rounds):
    from skicm.image_loading import ImageDecodingDataset

    dataset = ImageDecodingDataset(paths, _preprocess(), mode=mode, decode=decode)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for index in range(len(dataset)):
            error = dataset[index][3]
            assert error is None, error
        best = min(best, time.perf_counter() - start)
    return len(paths) / best


def _preprocess():
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
        ]
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="JPEG files")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many passes")
    args = parser.parse_args(argv)

    import numpy as np
    import PIL
    import torch
    import torchvision

    from skicm.image_loading import DecodeTarget, ImageDecodingDataset

    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="skicm-bench-decode-"))
    paths = write_jpegs(folder, args.n)
    target = DecodeTarget.from_transform(_preprocess())
    scale = target.scale(2048, 1536)
    print(
        f"{args.n} JPEG files 2048x1536 (quality 90) -> 224x224 model input, one thread; "
        f"reduced decode at 1/{scale} ({2048 // scale}x{1536 // scale}); Pillow "
        f"{PIL.__version__}, torchvision {torchvision.__version__}, {os.cpu_count()} cores"
    )
    header = ["decoder ", " full img/s", " reduced img/s", " ratio", " mean |diff|"]
    print(" ".join(header))
    for mode in ("tensor", "pil"):
        full = images_per_second(paths, mode, "full", args.rounds)
        reduced = images_per_second(paths, mode, "reduced", args.rounds)
        diffs = []
        for path in paths[:8]:
            a = ImageDecodingDataset([path], _preprocess(), mode=mode, decode="full")[0][1]
            b = ImageDecodingDataset([path], _preprocess(), mode=mode, decode="reduced")[0][1]
            diffs.append(np.abs(a.astype(int) - b).mean())
        print(
            f"{mode:8} {full:11.1f} {reduced:14.1f} {reduced / full:5.2f}x {np.mean(diffs):12.2f}"
        )
    for path in paths:
        path.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
