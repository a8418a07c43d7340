"""Perturbed cutouts for the attribution controls: which pixels to hide, sky-noise fills, donor cutouts, and the
network's prediction on any stack of cutouts (deepred.explain.controls, deepred.explain.occlusion_map)."""

from __future__ import annotations

import numpy as np
import torch

from deepred.explain.scoring import _robust_sigma, grow


def occlusion_masks(regions: np.ndarray, grow_px: int) -> dict[str, np.ndarray]:
    """The four (n, H, W) masks to hide: the footprint, the footprint grown by grow_px, and each moved by half
    the cutout (wrapping round), minus the grown footprint and a 3 px margin, so a control never hides the
    object; plus `sky`: where the noise statistics are measured (outside the grown footprint and its margin)."""
    h, w = regions.shape[1:]
    wide = grow(regions, grow_px)
    near = grow(regions, grow_px + 3)

    def moved(m):
        return np.roll(m, (h // 2, w // 2), axis=(1, 2)) & ~near

    return {"object": regions, "elsewhere": moved(regions), "wide": wide, "wide_elsewhere": moved(wide),
            "sky": ~near}


def sky_levels(images: np.ndarray, sky: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, C) median and robust sigma of each image's and band's `sky` pixels (all pixels where fewer than 50)."""
    med = np.empty(images.shape[:2])
    sig = np.empty(images.shape[:2])
    for i in range(len(images)):
        where = sky[i] if sky[i].sum() >= 50 else np.ones_like(sky[i])
        for b in range(images.shape[1]):
            px = np.asarray(images[i, b][where], dtype=np.float64)
            med[i, b], sig[i, b] = np.median(px), _robust_sigma(px)
    return med, sig


def fill_with_sky(images: np.ndarray, hide: np.ndarray, levels: tuple[np.ndarray, np.ndarray],
                  rng: np.random.Generator) -> np.ndarray:
    """A copy of (n, C, H, W) images with the `hide` pixels replaced by Gaussian noise of each image's and
    band's sky level and noise (`levels`: sky_levels)."""
    med, sig = levels
    noise = rng.standard_normal(images.shape)
    filled = (med[:, :, None, None] + sig[:, :, None, None] * noise).astype(np.float32)
    return np.where(hide[:, None], filled, np.asarray(images, dtype=np.float32))


def predict(module: torch.nn.Module, images: np.ndarray, device: str, batch: int = 256) -> np.ndarray:
    """The module's redshift (first output) for (n, C, H, W) images, in batches, without gradients."""
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[s:s + batch], dtype=np.float32)).to(device)
            out.append(module(x)[:, 0].float().cpu().numpy())
    return np.concatenate(out).astype(float) if out else np.empty(0)


def donor_index(n: int, seed: int) -> np.ndarray:
    """For each of n cutouts, another one (a seeded cyclic derangement: nobody is their own donor)."""
    order = np.random.default_rng(seed).permutation(n)
    donors = np.empty(n, dtype=int)
    donors[order] = np.roll(order, -1)
    return donors
