"""The collection sources of ``skicm embed``: WebDataset tar shards and Hugging Face datasets.

They are read by :mod:`skicm.datasets._collection_reader`, in the core, so that
:func:`skicm.datasets.load_image_collection` and the embedders read them without this
package; the names the Ray path uses are re-exported here.
"""

from skicm.datasets._collection_reader import (
    CollectionReader,
    check_unique,
    collection_items,
    collection_table,
    is_collection,
)

__all__ = [
    "CollectionReader",
    "check_unique",
    "collection_items",
    "collection_table",
    "is_collection",
]
