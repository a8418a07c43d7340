"""What every image provider shares: the request, the errors, FITS reading and the Provider base class.

A provider answers three questions, and nothing else (the catalogue-driven source in
deepred.cutouts.source does the rest: downloads, caching, the lock, resampling, rejects, shards):

- `requests(target)`: for each band, the image file holding the target (an `ImageRequest`: a cache path,
  a URL and, for multi-band cubes, a plane), or a reason string when no image can cover it;
- `check(path)`: parse a downloaded file once (a truncated or corrupt file raises before it is trusted);
- `read(path, request)`: one band's pixels (2-D, flux per pixel in nanomaggies) and its celestial WCS;
- `read_aux(path, request)`: a companion file of a band (`ImageRequest.companions`: a weight map, a mask, a
  calibration catalogue), as the provider defines it (see deepred.cutouts.kids_tiles).
"""

from __future__ import annotations

import bz2
import gzip
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepred.contracts.raw import truncation_is_fatal


class ProviderError(ValueError):
    """A file cannot be used (truncated, corrupt, not the expected format); the message names it."""


class MissingBand(ProviderError):
    """The file has no plane for this band (a reject, not an error)."""


class CalibrationError(ProviderError):
    """The file parses, but its flux calibration cannot be established (a missing zero-point keyword): the
    whole dataset is wrong, not one target, so the fetch stops; the file is kept (no download again)."""


@dataclass(frozen=True)
class ImageRequest:
    key: str  # path under the cache folder (also the name in the lock)
    url: str
    band: str
    plane: int | None = None  # index along the first axis of a 3-D cube (None: a 2-D image)
    role: str = "sci"  # "sci": the pixels; else a companion's kind (e.g. KiDS "wei", "msk", "cat")
    companions: tuple = ()  # ImageRequests fetched with this one and read by `Provider.read_aux` when cutting


def _decompress(path: Path) -> bytes | Path:
    """The FITS bytes of a .bz2/.gz file (whole; raises ProviderError when truncated), else the path."""
    name = path.name.lower()
    try:
        if name.endswith(".bz2"):
            return bz2.decompress(path.read_bytes())
        if name.endswith(".gz"):
            return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, ValueError) as exc:
        raise ProviderError(f"{path}: truncated or corrupt {path.suffix} file ({exc})") from exc
    return path


def read_fits_hdu(path: Path, hdu_index: int | None = None, memmap: bool = True):
    """(data, header) of the first image HDU with data (or `hdu_index`); ProviderError on any problem.

    Uncompressed files are memory-mapped (a 20k x 20k KiDS tile costs only the pages a cutout touches)."""
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    src = _decompress(Path(path))
    try:
        with truncation_is_fatal():  # only "File may have been truncated"; other header warnings pass
            hdul = fits.open(io.BytesIO(src) if isinstance(src, bytes) else src, memmap=memmap and not isinstance(src, bytes))
            try:
                hdus = [hdul[hdu_index]] if hdu_index is not None else list(hdul)
                hdu = next((h for h in hdus if h.is_image and h.data is not None), None)
                if hdu is None:
                    raise ProviderError(f"{path}: no image HDU with data")
                data = hdu.data  # memmap stays valid after close only when we keep the HDUList; copy header
                header = hdu.header.copy()
                if not memmap or isinstance(src, bytes):
                    data = np.array(data, dtype=np.float32)
                    hdul.close()
                    return data, header
                return _KeepOpen(data, hdul), header
            except Exception:
                hdul.close()
                raise
    except ProviderError:
        raise
    except (OSError, ValueError, TypeError, EOFError, IndexError, AstropyUserWarning) as exc:
        raise ProviderError(f"{path}: unreadable or truncated FITS ({exc})") from exc


def read_fits_header(path: Path, hdu_index: int = 0):
    """One HDU's header (default the primary), without reading any data; ProviderError on any problem."""
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    src = _decompress(Path(path))
    try:
        with truncation_is_fatal():  # the open itself reads the primary header
            with fits.open(io.BytesIO(src) if isinstance(src, bytes) else src, lazy_load_hdus=True) as hdul:
                return hdul[hdu_index].header.copy()
    except (OSError, ValueError, TypeError, EOFError, IndexError, AstropyUserWarning) as exc:
        raise ProviderError(f"{path}: unreadable or truncated FITS ({exc})") from exc


@dataclass(frozen=True)
class FluxScale:
    """A companion's answer: multiply the band's fluxes by `factor` (e.g. a per-tile zero-point offset)."""

    factor: float


@dataclass(frozen=True)
class WeightMap:
    """A companion's answer: the band's weight map; zero weight under the cutout's footprint means no data."""

    data: np.ndarray
    wcs: object


@dataclass(frozen=True)
class FlagMap:
    """A companion's answer: the band's flag image; a flag (`bits`, -1: any) in the central `core_px` rejects."""

    data: np.ndarray
    wcs: object
    bits: int = -1
    core_px: int = 9


class _KeepOpen(np.ndarray):
    """A memory-mapped FITS image that keeps its HDUList alive (closed when the array is collected)."""

    def __new__(cls, data, hdul):
        obj = np.asarray(data).view(cls)
        obj._hdul = hdul
        return obj

    def __array_finalize__(self, obj):
        self._hdul = getattr(obj, "_hdul", None)


def celestial_wcs(header, path: Path):
    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SDSS headers carry non-standard keywords astropy warns about
        w = WCS(header).celestial
    if w.naxis != 2 or not w.has_celestial:
        raise ProviderError(f"{path}: no celestial WCS in the header")
    if not np.all(np.isfinite(proj_plane_pixel_scales(w))):
        raise ProviderError(f"{path}: degenerate WCS")
    return w


class Provider:
    """Base class; see the module docstring."""

    name = "provider"
    flux_unit = "nanomaggy"
    decodes = False  # True: files are compressed, and a decoded copy is worth keeping (see SDSSFrames)

    def __init__(self, cfg: dict, bands: list[str], size: int, pixel_scale: float):
        self.cfg, self.bands, self.size, self.pixel_scale = dict(cfg), list(bands), int(size), float(pixel_scale)

    @classmethod
    def columns_for(cls, cfg: dict) -> list[str]:
        """Target-table columns the provider needs besides id/RA/Dec (e.g. SDSS run/camcol/field)."""
        return []

    def required_columns(self) -> list[str]:
        return self.columns_for(self.cfg)

    def requests(self, target: dict) -> dict[str, ImageRequest | str]:
        raise NotImplementedError

    def check(self, path: Path, request: ImageRequest) -> None:
        data, header = read_fits_hdu(path)
        celestial_wcs(header, path)
        np.asarray(data[-1])  # touch the last row: a short file fails here

    def read(self, path: Path, request: ImageRequest):
        """(image 2-D, possibly memory-mapped; its celestial WCS; factor to nanomaggies per pixel).

        The factor is applied by the caller to the resampled cutout, never to a whole memory-mapped tile."""
        data, header = read_fits_hdu(path)
        return data, celestial_wcs(header, path), self.flux_factor(header, path)

    def flux_factor(self, header, path: Path) -> float:
        return 1.0

    def read_aux(self, path: Path, request: ImageRequest):
        raise ProviderError(f"{self.name}: no companion files of kind {request.role!r}")
