"""A safetensors file checked from its header alone (no torch): the layout a local `weights:` file must have.

safetensors' format (huggingface/safetensors, README "Format"): 8 bytes little-endian u64 N, then N bytes of
UTF-8 JSON mapping each tensor name to {dtype, shape, data_offsets: [begin, end]} (offsets into the byte buffer
that follows the header) plus an optional "__metadata__" map, then the buffer. A file is whole when the header
parses and the buffer ends exactly where the last tensor does.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the header's size


def safetensors_problem(path: str | Path) -> str | None:
    """Why `path` is not a whole safetensors file (None if it is)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than a safetensors header"
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER, size - 8):
                return f"header length {n} does not fit the file ({size} bytes): not a safetensors file, or truncated"
            header = json.loads(fh.read(n).decode("utf-8"))
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "its header is not JSON: not a safetensors file, or corrupt"
    if not isinstance(header, dict):
        return "its header is not a JSON object: not a safetensors file"
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    ends = []
    for name, entry in tensors.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]):
            return f"tensor '{name}' has no valid data_offsets in the header"
        ends.append(offsets[1])
    buffer = size - 8 - n
    if not tensors:
        return "it holds no tensor"
    if max(ends) != buffer:
        return f"the header's tensors end at byte {max(ends)} of a {buffer}-byte buffer: truncated or padded"
    return None
