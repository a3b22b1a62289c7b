"""CPU throughput of ``skicm embed`` from WebDataset shards and a Hugging Face dataset vs files.

The same JPEG images (500x375, quality 90) as files listed in a CSV, as WebDataset tar shards
(webdataset's ``TarWriter``) and as a Hugging Face dataset saved with ``save_to_disk``; the same
model (random weights: speed does not depend on them), the local engine, one process, one run,
interleaved repeats (best of each, so that other load on a shared machine slows all sources
alike). Every run embeds into a fresh folder (listing, reading, decoding, encoding, Parquet
shards and manifest included). Files and items are decoded alike (the embedder's default
``decode="reduced"``: 500x375 JPEGs are too small to be reduced for a 224-pixel model).

Also printed: the time to list the tar shards (read the tar headers and the label members), per
sample, which a rerun pays before it knows what is left.

Target: collections >= 0.9x the files' images/s.

Run::

    .venv/bin/python benchmarks/bench_embed_collections.py --n-images 192
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embedding_cpu import make_jpegs


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def write_sources(paths, root: Path, per_shard: int):
    """The images of ``paths`` as a CSV listing, tar shards and a saved HF dataset."""
    import datasets
    import webdataset as wds

    datasets.disable_progress_bars()
    listing = root / "listing.csv"
    listing.write_text("path,label\n" + "".join(f"{p},{i % 7}\n" for i, p in enumerate(paths)))
    shards = root / "shards"
    shards.mkdir()
    n_shards = (len(paths) + per_shard - 1) // per_shard
    for s in range(n_shards):
        with wds.TarWriter(str(shards / f"train-{s:05d}.tar")) as sink:
            for i in range(s * per_shard, min(len(paths), (s + 1) * per_shard)):
                sink.write(
                    {
                        "__key__": f"{i:08d}",
                        "jpg": paths[i].read_bytes(),
                        "cls": str(i % 7).encode(),
                    }
                )
    pattern = str(shards / f"train-{{00000..{n_shards - 1:05d}}}.tar")
    datasets.Dataset.from_dict(
        {
            "image": [{"bytes": p.read_bytes(), "path": None} for p in paths],
            "label": [i % 7 for i in range(len(paths))],
        },
        features=datasets.Features(image=datasets.Image(), label=datasets.Value("int64")),
        split="train",
    ).save_to_disk(root / "hf")
    return {
        "files (CSV listing)": (str(listing), {}),
        "WebDataset shards": (pattern, {"label_key": "cls"}),
        "Hugging Face dataset": (str(root / "hf"), {"label_key": "label"}),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-S-32")
    parser.add_argument("--n-images", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--per-shard", type=int, default=64, help="samples per tar shard")
    parser.add_argument("--repeats", type=int, default=2, help="best of, interleaved")
    args = parser.parse_args(argv)

    import torch

    from skicm import CLIPEmbedder
    from skicm.distributed import embed_collection
    from skicm.distributed._collections import collection_table

    root = Path(tempfile.mkdtemp(prefix="skicm-bench-collections-"))
    try:
        paths = make_jpegs(args.n_images, root / "jpegs")
        sources = write_sources(paths, root, args.per_shard)
        embedder = CLIPEmbedder(
            args.model, pretrained=None, device="cpu", batch_size=args.batch_size
        )
        embedder.transform([str(paths[0])])  # load the model once, outside the timings
        best = dict.fromkeys(sources, float("inf"))
        for repeat in range(args.repeats):
            for name, (source, options) in sources.items():
                out = root / f"out-{repeat}-{len(name)}"
                seconds, result = timed(
                    embed_collection, source, out, embedder=embedder, progress=False, **options
                )
                assert result.n_embedded == args.n_images and not result.bad_files
                best[name] = min(best[name], seconds)
                shutil.rmtree(out)
        listing_s = min(
            timed(collection_table, sources["WebDataset shards"][0], label_key="cls")[0]
            for _ in range(3)
        )
        print(
            f"{args.n_images} JPEGs 500x375, {args.model} (random weights), batch "
            f"{args.batch_size}, {torch.get_num_threads()} torch threads, {os.cpu_count()} "
            f"cores, best of {args.repeats}"
        )
        reference = args.n_images / best["files (CSV listing)"]
        for name, seconds in best.items():
            rate = args.n_images / seconds
            print(f"  {name:22s} {rate:7.1f} images/s   {rate / reference:.2f}x files")
        print(
            f"  listing the tar shards: {listing_s * 1e6 / args.n_images:.1f} us per sample "
            f"({args.n_images // args.per_shard + bool(args.n_images % args.per_shard)} shards)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
