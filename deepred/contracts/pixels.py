"""Is a cutout an image at all? The pixel checks of normalization and of `deepred predict`, in one place.

A cutout is refused (a reject with its reason, never a silent prediction) when any band
- holds a non-finite pixel (NaN or inf);
- is blank or constant: every pixel the same value (a band a survey rendered as zeros where it has no data, a
  masked or padded plane);
- has no data at the centre: a pixel of the central CORE x CORE box exactly 0 (a survey's no-data fill, e.g. a
  coadd gap or a tile edge, where the object should be; a measured flux with noise is never exactly 0);
- is absurd: a pixel beyond `max_abs_pixel` in absolute value. Pixels are fluxes in nanomaggies per pixel (AB
  zero point 22.5); 1e7 is a source of magnitude 5 in one pixel, far beyond any unsaturated galaxy, so the
  default only catches garbage (1e30, wrong units). A dataset may set `max_abs_pixel` (datasets.<name>), a
  prediction `--max-abs-pixel`.
"""

from __future__ import annotations

import numpy as np

MAX_ABS_PIXEL = 1e7
CORE = 5  # px: the central box that must hold data in every band


def pixel_problem(image: np.ndarray, bands, max_abs_pixel: float = MAX_ABS_PIXEL) -> str | None:
    """Why a (bands, H, W) cutout cannot be used (None if it can)."""
    flat = np.asarray(image, dtype=np.float64).reshape(len(bands), -1)
    finite = np.isfinite(flat)
    if not finite.all():
        bad = [b for b, ok in zip(bands, finite.all(axis=1)) if not ok]
        return f"{int((~finite).sum())} non-finite pixels (NaN or inf) in band(s) {', '.join(bad)}"
    constant = [(b, row[0]) for b, row in zip(bands, flat) if row.size and (row == row[0]).all()]
    if constant:
        what = "blank (every pixel 0)" if all(v == 0 for _, v in constant) else "constant (every pixel the same)"
        return f"band(s) {', '.join(b for b, _ in constant)} {what}: no data there"
    h, w = np.shape(image)[-2:]
    y0, x0 = max(0, (h - CORE) // 2), max(0, (w - CORE) // 2)
    core = np.asarray(image)[:, y0:y0 + CORE, x0:x0 + CORE].reshape(len(bands), -1)
    holes = [b for b, row in zip(bands, core) if (row == 0).any()]
    if holes:
        return f"band(s) {', '.join(holes)} exactly 0 in the central {CORE}x{CORE} px: no data where the object is"
    peak = np.abs(flat).max(axis=1)
    absurd = [f"{b} ({p:.3g})" for b, p in zip(bands, peak) if p > max_abs_pixel]
    if absurd:
        return f"|pixel| above {max_abs_pixel:g} in band(s) {', '.join(absurd)}: not fluxes in nanomaggies"
    return None
