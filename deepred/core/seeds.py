"""The one seed helper: every seed of the pipeline is derived from the master seed and a purpose."""

from __future__ import annotations

import hashlib


def derive_seed(*parts) -> int:
    """The one seed helper: a seed for a purpose named by `parts` (master seed first), the same in every
    process (Python's hash() is salted): blake2b-32 of the ':'-joined parts, 31 bits (any torch or numpy seed).
    The trainer's original formula, so unifying the two helpers left every trained model unchanged."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF
