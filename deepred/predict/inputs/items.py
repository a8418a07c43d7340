"""What every cutout input yields: one `Item` per object, its pixels or the reason it cannot be used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


class InferenceError(ValueError):
    """Unusable model or input as a whole; the message names the file and the problem."""


class Reject(Exception):
    """One object cannot be used; the message is the reason in the rejects file."""


@dataclass
class Item:
    """One object from an input: its pixels in the model's band order, or the reason it was rejected."""

    object_id: str
    file: str
    image: np.ndarray | None = None  # float32 (C, H, W), raw flux
    pixel_scale: float | None = None
    reason: str | None = None


def item_from(object_id: str, file: str, read: Callable[[], tuple[np.ndarray, float | None]]) -> Item:
    """The item of one object whose pixels `read` returns, or its rejection when `read` raises Reject."""
    try:
        image, scale = read()
    except Reject as r:
        return Item(object_id, file, reason=str(r))
    return Item(object_id, file, image=image, pixel_scale=scale)
