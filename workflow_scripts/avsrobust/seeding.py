"""Per-item random streams: the same (seed, dataset, split, video, purpose)
always gives the same numbers, whatever else runs, in whatever order.

The published generator drew everything from one global RNG in loop order, so
no single file could be regenerated alone. Here each item hashes its own key
(SHA-256, stable across machines and Python versions; ``hash()`` is salted).
"""

from __future__ import annotations

import hashlib

import numpy as np


def item_seed(seed: int, *key: str) -> int:
    """A 64-bit seed derived from the global seed and the item's key parts."""
    text = "\x1f".join([str(int(seed)), *key])
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def item_rng(seed: int, *key: str) -> np.random.Generator:
    """A fresh PCG64 generator for one item."""
    return np.random.Generator(np.random.PCG64(item_seed(seed, *key)))
