"""Driver memory of planning a resumed ``skicm embed`` run over a long listing.

Before it embeds anything, the driver reads the listing, reads the paths of the finished shards
and works out which paths are left. This script times that step and measures its peak memory
(the process's high-water mark minus its size after the imports) and what the plan holds
afterwards, while the shards are embedded, side by side in one run:

- ``plan_shards``: skicm's planning (Arrow columns, ``pyarrow.compute.is_in``, zero-copy shard
  slices);
- Python lists: the same plan made with Python objects (a list of paths, a set of the finished
  ones, the rows of every shard as lists), which is what skicm did before.

Each runs in its own process, on a Parquet listing of ``--n-images`` synthetic paths (with label
and domain columns; the files need not exist: planning does not open them) of which the first
``--done`` are already in finished shards.

Run::

    .venv/bin/python benchmarks/bench_embed_planning.py --n-images 2000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak():
    # Writing 5 to clear_refs resets the high-water mark (VmHWM) to the current size (Linux).
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")


def _python_lists_plan(listing, out, shard_size):
    """The plan with Python objects, as skicm made it before (same results)."""
    import pyarrow.parquet as pq

    from skicm.distributed._shards import shard_paths

    table = pq.read_table(listing)
    base = Path(listing).parent
    paths = [os.path.abspath(os.path.normpath(base / p)) for p in table.column("path").to_pylist()]
    labels = table.column("label").to_pylist()
    domains = table.column("domain").to_pylist()
    seen = set()
    for p in paths:
        if p in seen:
            raise ValueError(p)
        seen.add(p)
    done = set()
    for shard in shard_paths(out):
        done.update(pq.read_table(shard, columns=["path"]).column("path").to_pylist())
    todo = [i for i, path in enumerate(paths) if path not in done]
    shards = []
    for start in range(0, len(todo), shard_size):
        chosen = todo[start : start + shard_size]
        shards.append(
            {
                "path": [paths[i] for i in chosen],
                "label": [labels[i] for i in chosen],
                "domain": [domains[i] for i in chosen],
            }
        )
    return [len(rows["path"]) for rows in shards], len(done & seen)


def _measure(kind, listing, out, shard_size):
    import pyarrow.compute
    import pyarrow.csv
    import pyarrow.parquet  # imports are not part of the plan's memory

    from skicm.distributed._embed_collection import plan_shards
    from skicm.distributed._shards import read_manifest
    from skicm.distributed._sources import listing_table

    _reset_peak()
    before = _rss_kib("VmRSS")
    start = time.perf_counter()
    if kind == "arrow":
        table = listing_table(listing)[0]
        shards, n_skipped = plan_shards(table, out, shard_size, read_manifest(out))
        sizes = [rows.num_rows for _, rows in shards]
        first = shards[0][1].column("path")[0].as_py()
    else:
        sizes, n_skipped = _python_lists_plan(listing, out, shard_size)
        first = None
    elapsed = time.perf_counter() - start
    peak = _rss_kib("VmHWM") - before
    if kind == "arrow":
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    held = _rss_kib("VmRSS") - before
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "peak_kib": peak,
                "held_kib": held,
                "sizes": sizes,
                "n_skipped": n_skipped,
                "first": first,
            }
        )
    )


def _make_data(folder: Path, n: int, n_done: int, shard_size: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from skicm.distributed._shards import FORMAT, shard_identity, shard_table, write_shard

    index = np.arange(n)
    paths = [f"/data/collection/domain_{i % 6}/class_{i % 345:03d}/{i:09d}.jpg" for i in index]
    listing = folder / "listing.parquet"
    pq.write_table(
        pa.table(
            {
                "path": paths,
                "label": [f"class_{i % 345:03d}" for i in index],
                "domain": [f"domain_{i % 6}" for i in index],
            }
        ),
        listing,
    )
    out = folder / "out"
    out.mkdir()
    # The manifest of a 4-wide model: planning checks every finished shard against it.
    manifest = {"format": FORMAT, "model": "bench", "namespace": "bench:0", "embed_dim": 4}
    (out / "manifest.json").write_text(json.dumps(manifest))
    for number, start in enumerate(range(0, n_done, shard_size)):
        chosen = paths[start : min(n_done, start + shard_size)]
        rows = {"path": chosen, "key": chosen, "embedding": np.zeros((len(chosen), 4))}
        write_shard(out, number, shard_table(rows, 4), shard_identity(manifest))
    return listing, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=2_000_000)
    parser.add_argument("--done", type=int, default=None, help="default: half of --n-images")
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--measure", choices=["arrow", "lists"], help=argparse.SUPPRESS)
    parser.add_argument("--listing", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        _measure(args.measure, args.listing, args.out, args.shard_size)
        return
    n_done = args.n_images // 2 if args.done is None else args.done
    folder = Path(tempfile.mkdtemp(prefix="skicm-bench-plan-"))
    start = time.perf_counter()
    listing, out = _make_data(folder, args.n_images, n_done, args.shard_size)
    print(
        f"listing of {args.n_images:,} paths, {n_done:,} in finished shards, written in "
        f"{time.perf_counter() - start:.0f} s; listing file "
        f"{listing.stat().st_size / 2**20:.0f} MiB"
    )
    results = {}
    for kind in ("lists", "arrow"):
        command = [sys.executable, __file__, "--measure", kind, "--listing", str(listing)]
        command += ["--out", str(out), "--shard-size", str(args.shard_size)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["arrow"]["sizes"] == results["lists"]["sizes"]
    assert results["arrow"]["n_skipped"] == results["lists"]["n_skipped"] == n_done
    for kind, label in (("lists", "Python lists (before)"), ("arrow", "plan_shards (Arrow)")):
        r = results[kind]
        print(
            f"  {label:22} {r['seconds']:6.1f} s   peak +{r['peak_kib'] / 2**10:7.0f} MiB   "
            f"{r['peak_kib'] * 1024 / args.n_images:6.0f} bytes per listed image; held by "
            f"the plan {r['held_kib'] * 1024 / args.n_images:4.0f} bytes per image"
        )
    ratio = results["arrow"]["peak_kib"] / results["lists"]["peak_kib"]
    print(
        f"  memory ratio Arrow / lists: {ratio:.2f}; shards to embed: "
        f"{len(results['arrow']['sizes'])}, first path {results['arrow']['first']}"
    )


if __name__ == "__main__":
    main()
