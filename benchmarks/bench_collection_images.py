"""Images/s per core: the same JPEGs as files, as WebDataset tar members, as dataset rows.

What a collection image costs beside a file before the forward pass: its bytes read by offset
from the tar (the shard's identity checked on each read) or from the memory-mapped Hugging
Face dataset, then decoded, resized and cropped to CLIP's 224-pixel input exactly as a file
(:class:`skicm.image_loading.ImageDecodingDataset`, torchvision's decoder, the reduced decode
and Pillow's at full scale), on one thread. Printed side by side: images/s of each source and
the ratio to files; and the cost of the store keys (no read: microseconds per image).

The photos are those of ``bench_decode.py`` (2048x1536, quality 90). Run::

    python benchmarks/bench_collection_images.py            # 48 images, 3 rounds
    python benchmarks/bench_collection_images.py --n 16 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench_decode import images_per_second, write_jpegs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="JPEG images")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many passes")
    args = parser.parse_args(argv)

    import datasets
    import torch
    import webdataset as wds

    from skicm.datasets import load_image_collection
    from skicm.image_loading import image_keys

    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    folder = Path(tempfile.mkdtemp(prefix="skicm-bench-collection-"))
    try:
        paths = write_jpegs(folder, args.n)
        with wds.TarWriter(str(folder / "shard-000.tar")) as sink:
            for i, path in enumerate(paths):
                sink.write({"__key__": f"{i:06d}", "jpg": path.read_bytes()})
        datasets.Dataset.from_dict(
            {"image": [{"bytes": path.read_bytes(), "path": None} for path in paths]},
            features=datasets.Features(image=datasets.Image()),
        ).save_to_disk(folder / "hf")
        sources = {
            "files": [str(path) for path in paths],
            "tar members": list(load_image_collection(folder / "shard-000.tar").images),
            "dataset rows": list(load_image_collection(folder / "hf").images),
        }
        print(
            f"{args.n} JPEG images 2048x1536 -> 224x224 model input, one thread, best of "
            f"{args.rounds}; {os.cpu_count()} cores"
        )
        print("decode   source         img/s  ratio to files  keys us/img")
        for decode, mode in (("reduced", "tensor"), ("full", "tensor")):
            files = None
            for name, items in sources.items():
                rate = images_per_second(items, mode, decode, args.rounds)
                files = files or rate
                start = time.perf_counter()
                image_keys(items)
                keys = (time.perf_counter() - start) / len(items) * 1e6
                print(f"{decode:8} {name:13} {rate:6.1f} {rate / files:14.2f}x {keys:12.1f}")
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
