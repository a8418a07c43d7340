"""Occlusion-sensitivity maps (Zeiler & Fergus 2014), the `occlusion` attribution method of the explain jobs.

Each square window of the cutout, `window` pixels a side (a few of the network's input units: it hides whole
patches of a patch model), centred every `stride` pixels, is filled in turn, `draws` times, and the prediction
redone. Two fills (`shap.occlusion_map_fill`):
- `background`: the same window of a random training cutout (the explainer's background sample), SHAP's
  marginal masker: what is put in is in the data's distribution, so a window matters only when the network reads
  what the cutout holds there.
- `sky`: Gaussian noise of the cutout's own sky (per band: the median and robust sigma away from the object, as the
  occlusion control). Hiding the object then shows a network a cutout without an object, which it never saw in
  training: tests/explain/test_shap.py shows such maps point at the object for a network whose signal is elsewhere.
A window's effect is the mean over draws of |z_clean - z_filled| / (1 + z_clean); each pixel scores the mean effect
of the windows covering it. The pointing game then asks whether refilling the object moves the prediction most.
"""

from __future__ import annotations

import numpy as np
import torch

from deepred.explain.scoring import grow
from deepred.explain.perturb import predict, sky_levels

FILLS = ("background", "sky")
# Cutouts filled together: one row of windows stacks (windows per row x draws x CHUNK) cutouts in memory.
CHUNK = 64


def window_slices(size: int, window: int, stride: int) -> list[slice]:
    """Windows of `window` px along one axis, centred on 0, stride, 2 stride, ... and on the last pixel, clipped
    to the cutout (so the edges are covered as often as their neighbours)."""
    centres = np.unique(np.r_[np.arange(0, size, stride), size - 1])
    return [slice(max(c - window // 2, 0), min(c - window // 2 + window, size)) for c in centres]


def filler(images: np.ndarray, regions: np.ndarray, background: np.ndarray, fill: str, draws: int,
           rng: np.random.Generator):
    """fill_window(k, sy, sx) -> (n, C, h, w) pixels to put in window (sy, sx) of every cutout for draw k."""
    n, bands = images.shape[:2]
    if fill == "background":
        # one background cutout per (cutout, draw), the same for every window: each draw is one other cutout
        pick = rng.integers(len(background), size=(draws, n))
        return lambda k, sy, sx: background[pick[k]][:, :, sy, sx]
    if fill != "sky":
        raise ValueError(f"occlusion fill '{fill}' unknown; known: {', '.join(FILLS)}")
    med, sig = sky_levels(images, ~grow(regions, 3))

    def sky(k, sy, sx):
        noise = rng.standard_normal((n, bands, sy.stop - sy.start, sx.stop - sx.start))
        return med[:, :, None, None] + sig[:, :, None, None] * noise

    return sky


def window_effects(module: torch.nn.Module, images: np.ndarray, fill_window, window: int, stride: int, draws: int,
                   device: str = "cpu", batch_size: int = 256) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
    """(draws, n, windows) |z_clean - z_filled| / (1 + z_clean) of every window and draw, and the windows, for
    float32 `images`. One row of windows is predicted at a time, all its windows and draws in one stack."""
    n, bands, h, w = images.shape
    z0 = predict(module, images, device, batch_size)
    ys, xs = window_slices(h, window, stride), window_slices(w, window, stride)
    effects = np.empty((draws, n, len(ys) * len(xs)))
    for iy, sy in enumerate(ys):
        stack = np.repeat(images[None], len(xs) * draws, axis=0)
        for j, sx in enumerate(xs):
            for k in range(draws):
                stack[j * draws + k][:, :, sy, sx] = fill_window(k, sy, sx)
        z = predict(module, stack.reshape(-1, bands, h, w), device, batch_size).reshape(len(xs), draws, n)
        effects[:, :, iy * len(xs):(iy + 1) * len(xs)] = (np.abs(z0 - z) / (1 + z0)).transpose(1, 2, 0)
    return effects, [(sy, sx) for sy in ys for sx in xs]


def cover(values: np.ndarray, windows: list[tuple[slice, slice]], shape: tuple[int, int]) -> np.ndarray:
    """(n, H, W): per pixel, the mean of `values` (n, windows) over the windows that cover it."""
    total, count = np.zeros((len(values), *shape)), np.zeros(shape)
    for i, (sy, sx) in enumerate(windows):
        total[:, sy, sx] += values[:, i, None, None]
        count[sy, sx] += 1
    return total / np.maximum(count, 1)


def occlusion_maps(module: torch.nn.Module, images: np.ndarray, regions: np.ndarray, background: np.ndarray,
                   window: int, stride: int, draws: int, fill: str, seed: int, device: str = "cpu",
                   batch_size: int = 256) -> np.ndarray:
    """(3, n, 1, H, W) float32: the occlusion map of every cutout (all draws), then the maps of the first and the
    second half of the draws (their agreement is the map's stability, as expected gradients' half samples).
    Seeded: same seed, same maps."""
    module = module.eval().to(device)
    rng = np.random.default_rng(seed)
    images = np.asarray(images, dtype=np.float32)
    background = np.asarray(background, dtype=np.float32)
    chunks = []
    for s in range(0, len(images), CHUNK):
        part = images[s:s + CHUNK]
        fill_window = filler(part, regions[s:s + CHUNK], background, fill, draws, rng)
        chunks.append(window_effects(module, part, fill_window, window, stride, draws, device, batch_size))
    effects, windows = np.concatenate([c[0] for c in chunks], axis=1), chunks[0][1]
    half = max((draws + 1) // 2, 1)
    parts = (effects, effects[:half], effects[half:] if draws > 1 else effects[:half])
    maps = [cover(p.mean(axis=0), windows, images.shape[2:]) for p in parts]
    return np.stack(maps)[:, :, None].astype(np.float32)
