"""Image providers: where a target's pixels live, how to fetch them and how to read them.

The registry of providers and the one import point for callers. What a provider answers is described in
deepred.cutouts.base (the shared request, errors, FITS reading and base class); each provider lives in its
own module, with the survey documentation it follows:

- `sdss_frames` (deepred.cutouts.sdss_frames): SDSS DR17 calibrated frames;
- `kids_tiles` (deepred.cutouts.kids_tiles): KiDS DR4 coadd tiles;
- `cutout_service` (deepred.cutouts.cutout_service): any URL template answering a FITS image or cube, e.g.
  the Legacy Surveys viewer.

Decoded copies of compressed frames are kept by deepred.cutouts.decoded.
"""

from __future__ import annotations

from deepred.cutouts.base import (
    CalibrationError,
    FlagMap,
    FluxScale,
    ImageRequest,
    MissingBand,
    Provider,
    ProviderError,
    WeightMap,
    celestial_wcs,
    read_fits_hdu,
    read_fits_header,
)
from deepred.cutouts.cutout_service import CutoutService
from deepred.cutouts.decoded import decoded_path, read_decoded, wcs_cards, write_decoded
from deepred.cutouts.kids_tiles import KiDSTiles
from deepred.cutouts.sdss_frames import SDSSFrames

__all__ = ["PROVIDERS", "CalibrationError", "CutoutService", "FlagMap", "FluxScale", "ImageRequest", "KiDSTiles",
           "MissingBand", "Provider", "ProviderError", "SDSSFrames", "WeightMap", "celestial_wcs", "decoded_path",
           "read_decoded", "read_fits_hdu", "read_fits_header", "wcs_cards", "write_decoded"]

PROVIDERS = {p.name: p for p in (SDSSFrames, KiDSTiles, CutoutService)}
