"""Beyond one machine: an inverted index split into shards, served by Ray actors or by local threads.

:class:`ShardedIndex` builds shards as ordinary :class:`~sparsecore.index.InvertedIndex` files plus a checked
manifest (Ray tasks, or threads), opens one server per shard replica (a Ray actor with ``max_restarts=-1`` that
memory-maps its file, or an object of this process), and answers searches by fanning a query batch out to every
shard and merging exactly. ``backend="local"`` needs no Ray; ``backend="ray"`` needs the ``distributed`` extra
(``pip install 'sparsecore[distributed]'``). Importing this module never imports Ray.

``sparsecore serve INDEX_DIR --port N`` serves a sharded index over HTTP (:mod:`sparsecore.distributed.serve`).
"""

from __future__ import annotations

from sparsecore.distributed._backends import PartialResultWarning, ShardTimeoutError, ShardUnavailableError
from sparsecore.distributed._shard import MANIFEST_NAME, Manifest, ShardEntry, read_manifest
from sparsecore.distributed.sharded import BUILD_PARAMS, SEARCH_PARAMS, SearchResult, ShardedIndex, merge_top_k

__all__ = [
    "BUILD_PARAMS",
    "MANIFEST_NAME",
    "SEARCH_PARAMS",
    "Manifest",
    "PartialResultWarning",
    "SearchResult",
    "ShardEntry",
    "ShardTimeoutError",
    "ShardUnavailableError",
    "ShardedIndex",
    "merge_top_k",
    "read_manifest",
]
