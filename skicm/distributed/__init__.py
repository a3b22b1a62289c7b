"""Embedding collections beyond one process: Parquet shards, Ray, merged projector statistics.

The optional extra ``skicm[ray]`` (Ray Data and pyarrow) is needed here; ``import skicm`` does
not import this package, Ray or pyarrow.

- :func:`embed_collection` (the ``skicm embed`` command) embeds a folder, a listing of images,
  WebDataset tar shards or a Hugging Face dataset into resumable Parquet shards, in this
  process or on a Ray cluster;
- :func:`load_embeddings` reads them back as arrays, and :class:`ShardStore` lets an embedder
  answer from them instead of encoding again;
- :func:`fit_projector_from_shards` fits the invariant projector from statistics computed per
  shard on Ray tasks and merged.
"""

from skicm.distributed._embed_collection import embed_collection
from skicm.distributed._projector_statistics import fit_projector_from_shards, shard_statistics
from skicm.distributed._shards import ShardStore, load_embeddings
from skicm.distributed._sources import list_images

__all__ = [
    "ShardStore",
    "embed_collection",
    "fit_projector_from_shards",
    "list_images",
    "load_embeddings",
    "shard_statistics",
]
