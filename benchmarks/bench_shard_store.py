"""ShardStore lookups of 1% of the keys of N shards: reading the rows asked for vs whole columns.

An embedder that answers from the shards of ``skicm embed`` asks :class:`skicm.distributed.
ShardStore` for the embeddings of the images it is given; often a small part of the collection
(a domain, a split, a sample). The store used to read the whole ``embedding`` column of every
shard holding an asked key, and read every shard's footer when made, again to index the keys,
and again per lookup. Now it lists the shards when made, checks each footer once while
indexing the keys at the first lookup, and reads only the rows asked for (in place, from the
memory-mapped file). Both are timed here side by side on the same random embeddings:

- ``before``: the previous store (kept below as :class:`ReferenceShardStore`) on shards in the
  previous layout (pyarrow's defaults: snappy, dictionary attempted, version-1 pages);
- ``after``: :class:`~skicm.distributed.ShardStore` on shards as ``skicm embed`` writes them now;
- ``after, old shards``: ``ShardStore`` on the previous layout (one row group per shard, read
  through pyarrow): a folder written before this version;
- ``row groups of R``: the other way to read only part of a shard: ``ShardStore`` on shards in
  the previous layout cut into row groups of ``--row-group`` rows, of which it reads only those
  holding an asked row (through pyarrow, then a take).

Each timing is the best of ``--rounds`` runs of: make the store, then one ``get_many`` of a
random ``--fraction`` of the keys (the first lookup indexes the keys), then a second lookup of
another random sample (a warm store). The files are in the OS page cache (just written), so the
figures count decoding and copying, not disk reads; from a cold disk, reading fewer bytes gains
more. Every answer is checked against the embeddings written. Run::

    python benchmarks/bench_shard_store.py                 # 100 shards of 1,000 x 512
    python benchmarks/bench_shard_store.py --shards 1000 --rows 1000 --fraction 0.001
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


class ReferenceShardStore:
    """The previous ShardStore's reading: footers at creation, whole columns per lookup."""

    def __init__(self, out):
        from skicm.distributed._shards import iter_shards, require_manifest

        out = Path(out)
        manifest = require_manifest(out)
        self._shards = [path for path, _ in iter_shards(out, manifest)]
        self.namespace = manifest["namespace"]
        self._manifest = manifest
        self._index = None

    def _key_index(self):
        from skicm.distributed._shards import open_shard, read_columns

        if self._index is None:
            index = {}
            for number, path in enumerate(self._shards):
                file, _ = open_shard(path, self._manifest)
                with file:
                    keys = read_columns(path, file, ["key"]).column("key").to_pylist()
                index.update((key, (number, row)) for row, key in enumerate(keys))
            self._index = index
        return self._index

    def get_many(self, namespace, keys):
        from skicm.distributed._shards import embedding_matrix, open_shard, read_columns

        found = {}
        if namespace != self.namespace:
            return found
        index = self._key_index()
        by_shard = {}
        for key in keys:
            if key in index:
                shard, row = index[key]
                by_shard.setdefault(shard, []).append((key, row))
        for shard, wanted in by_shard.items():
            path = self._shards[shard]
            file, _ = open_shard(path, self._manifest)
            with file:
                table = read_columns(path, file, ["embedding"])
            matrix = embedding_matrix(table.column("embedding"))
            found.update((key, matrix[row]) for key, row in wanted)
        return found


def write_folder(
    out: Path, n_shards, n_rows, embed_dim, *, previous_layout, row_group=None, seed=0
):
    """A folder as skicm embed writes it (manifest, identities), random embeddings."""
    import pyarrow.parquet as pq

    from skicm.distributed._shards import (
        SHARD_METADATA_KEY,
        shard_identity,
        shard_name,
        shard_table,
        write_shard,
    )

    out.mkdir(parents=True)
    manifest = {"format": 2, "embedder": "benchmark", "model": "random", "weights": "none",
                "namespace": "benchmark:random", "embed_dim": embed_dim}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest))
    identity = json.dumps(shard_identity(manifest))
    rng = np.random.default_rng(seed)
    for index in range(n_shards):
        keys = [f"/collection/{index:06d}/{row:06d}.jpg:key" for row in range(n_rows)]
        rows = {
            "path": [key[: -len(":key")] for key in keys],
            "key": keys,
            "embedding": rng.standard_normal((n_rows, embed_dim), dtype=np.float32),
        }
        table = shard_table(rows, embed_dim)
        if previous_layout:  # what write_shard wrote before: pyarrow's defaults
            metadata = {SHARD_METADATA_KEY: identity}
            pq.write_table(table.replace_schema_metadata(metadata), out / shard_name(index),
                           row_group_size=row_group)  # fmt: skip
        else:
            write_shard(out, index, table, shard_identity(manifest))


def expected_rows(n_shards, n_rows, embed_dim, seed=0):
    """The embeddings :func:`write_folder` wrote, by key."""
    rng = np.random.default_rng(seed)
    return {
        f"/collection/{index:06d}/{row:06d}.jpg:key": vector
        for index in range(n_shards)
        for row, vector in enumerate(rng.standard_normal((n_rows, embed_dim), dtype=np.float32))
    }


def time_lookups(make_store, samples, rounds, expected):
    """Best (make the store, open + first lookup, second lookup) seconds over ``rounds``."""
    best = [float("inf")] * 3
    for _ in range(rounds):
        start = time.perf_counter()
        store = make_store()
        made = time.perf_counter()
        first = store.get_many(store.namespace, samples[0])
        middle = time.perf_counter()
        second = store.get_many(store.namespace, samples[1])
        end = time.perf_counter()
        best = [min(b, t) for b, t in zip(best, (made - start, middle - start, end - middle))]
        for found, asked in ((first, samples[0]), (second, samples[1])):
            assert set(found) == set(asked)
            for key in asked:
                np.testing.assert_array_equal(found[key], expected[key])
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=100, help="number of shards")
    parser.add_argument("--rows", type=int, default=1000, help="rows per shard")
    parser.add_argument("--dim", type=int, default=512, help="embedding width")
    parser.add_argument("--fraction", type=float, default=0.01, help="share of keys looked up")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs")
    parser.add_argument("--row-group", type=int, default=64, help="rows per row group (last run)")
    args = parser.parse_args(argv)

    from skicm.distributed import ShardStore

    with tempfile.TemporaryDirectory(prefix="skicm-bench-shards-") as tmp:
        now, before, groups = Path(tmp) / "now", Path(tmp) / "before", Path(tmp) / "groups"
        start = time.perf_counter()
        write_folder(now, args.shards, args.rows, args.dim, previous_layout=False)
        write_folder(before, args.shards, args.rows, args.dim, previous_layout=True)
        write_folder(groups, args.shards, args.rows, args.dim, previous_layout=True,
                     row_group=args.row_group)  # fmt: skip
        size = {name: sum(p.stat().st_size for p in folder.glob("shard-*.parquet"))
                for name, folder in (("now", now), ("before", before))}  # fmt: skip
        print(f"{args.shards} shards x {args.rows} rows x {args.dim} float32 "
              f"(written in {time.perf_counter() - start:.1f} s; {size['now'] / 2**20:.0f} MiB "
              f"now, {size['before'] / 2**20:.0f} MiB in the previous layout)")  # fmt: skip
        expected = expected_rows(args.shards, args.rows, args.dim)
        keys = list(expected)
        rng = np.random.default_rng(1)
        n = max(1, round(args.fraction * len(keys)))
        samples = [[keys[i] for i in rng.choice(len(keys), n, replace=False)] for _ in range(2)]
        print(f"lookups of {n} keys ({args.fraction:.2%}), best of {args.rounds}")
        runs = {
            "before": lambda: ReferenceShardStore(before),
            "after": lambda: ShardStore(now),
            "after, old shards": lambda: ShardStore(before),
            f"row groups of {args.row_group}": lambda: ShardStore(groups),
        }
        times = {name: time_lookups(make, samples, args.rounds, expected)
                 for name, make in runs.items()}  # fmt: skip
    print(f"{'':20s} {'make the store':>15s} {'+ 1st lookup':>13s} {'2nd lookup':>11s}")
    for name, (made, first, second) in times.items():
        print(f"{name:20s} {made:14.4f}s {first:12.3f}s {second:10.4f}s")
    (made_b, first_b, second_b), (made_a, first_a, second_a) = times["before"], times["after"]
    print(f"after / before: make the store {made_a / made_b:.3f}x, make + first lookup "
          f"{first_a / first_b:.3f}x, second lookup {second_a / second_b:.4f}x "
          f"({second_b / second_a:.0f} times faster)")  # fmt: skip


if __name__ == "__main__":
    main()
