"""A loopback Legacy Surveys viewer answering `fits-cutout` as the real one does, per its code.

Sources (github.com/legacysurvey/imagine, read at commit 000f4fd; the same lines hold in older versions):

- routing: `map/urls.py` sends `fits-cutout` (and `cutout.fits`) to `map/cutouts.py: fits_cutout`, which
  calls `layer.get_cutout(req, fits=True)` with no exception handling;
- the request (`map/views.py: MapLayer.get_cutout`): `pixscale` (default the layer's), `size` (default 256,
  at most 3000), `width`/`height` (default `size`), `bands` parsed by `parse_bands`: every character must be
  one of the layer's bands, else the request falls back to all of them (`get_bands()`);
- the layer (`map/views.py: get_layer`): `ls-dr10` is `LegacySurveySplitLayer(name, north=ls-dr9-north,
  south=ls-dr10-south, 32.375, bottom_bands='griz')` with `layer.bands = 'griz'`; the north layer has bands
  'grz' (DR9-north has no i);
- the split (`LegacySurveySplitLayer.render_rgb`, cutouts pass tile y = -1): each output row is north when its
  Dec at the central column is >= 32.375 and its galactic latitude b > 0 (`topmask`), else south; a cutout
  all north or all south is rendered by that layer alone, a mixed one row by row;
- a band without bricks is drawn as zeros and still listed: `render_into_wcs` keeps one accumulator per
  requested band, `bricks_for_band` drops bricks without `has_<band>`, and `RenderAccumulatorImage.finish`
  returns `rimg / np.maximum(rw, 1e-18)`, zero where no brick contributed; `write_cutout` then writes
  `BANDS` and `BAND<i>` for every requested band;
- values (`render_into_wcs`, `resample_for_render`: astrometry's `resample_with_wcs`, Lanczos) are the
  bricks' pixel values interpolated and averaged, never scaled by the requested pixscale; coarser zoom
  levels use smoothed 2x2 *means* (`create_scaled_image`): nanomaggies per native pixel
  (`MapLayer.pixscale = 0.262`) at any pixscale. Drawn here as the flux per output pixel times
  (0.262 / pixscale)^2;
- the header (`write_cutout`, `LegacySurveySplitLayer.populate_fits_cutout_header`): SURVEY, VERSION,
  IMAGETYP, BANDS, BAND<i>, the TAN WCS of `Tan(ra, dec, (W+1)/2, (H+1)/2, -ps, 0, 0, ps, W, H)` with
  IMAGEW/IMAGEH; the data a float32 cube (nbands, H, W), or 2-D for one band;
- no brick at all (`render_into_wcs` returns None): `write_cutout` raises `NoOverlapError('No overlap')`,
  uncaught; production runs DEBUG = False (`viewer/settings_rancher2.py`), no `handler500` and no
  `500.html`, so Django's `django/views/defaults.py: server_error` answers HTTP 500, text/html, with its
  generic page (Django >= 3: the ERROR_PAGE_TEMPLATE below; 2.2: the bare `<h1>Server Error (500)</h1>`).

Stand-ins: which bands have bricks is decided at the cutout centre, from the north/south rule above minus the
`holes` given (boxes without some bands, e.g. south areas without i, or without anything = off footprint).
`transient` positions first answer a 500 that is not the viewer's (Python's own error page, as a failing proxy
in front of it would), then data. Covered planes get Gaussian sky noise (`noise`, nanomaggies per native pixel:
a coadd's measured pixel is never exactly 0); planes without bricks stay exact zeros.
"""

from __future__ import annotations

import io
import threading

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from realformats import LoopbackServer
from survey_formats import LoggedHandler, render, tan_wcs

NATIVE = 0.262
DECSPLIT = 32.375
NORTH_BANDS, SOUTH_BANDS, LAYER_BANDS = "grz", "griz", "griz"
DJANGO_500 = (b'\n<!doctype html>\n<html lang="en">\n<head>\n  <title>Server Error (500)</title>\n</head>\n<body>\n'
              b'  <h1>Server Error (500)</h1><p></p>\n</body>\n</html>\n')


def is_north(ra, dec) -> np.ndarray:
    """`topmask` of LegacySurveySplitLayer.render_rgb: Dec >= 32.375 in the northern galactic cap."""
    b = SkyCoord(ra, dec, unit="deg").galactic.b.deg
    return (np.asarray(dec) >= DECSPLIT) & (b > 0)


def parse_bands(bands: str) -> str:
    """MapLayer.parse_bands + get_cutout: an unknown band makes the request fall back to all bands."""
    return bands if bands and all(b in LAYER_BANDS for b in bands) else LAYER_BANDS


def covered(ra: float, dec: float, holes) -> tuple[set, set]:
    """(north bands, south bands) with bricks at (ra, dec): each survey's bands minus the holes there."""
    gone = set()
    for (ra0, ra1, dec0, dec1), bands in holes:
        if ra0 <= ra <= ra1 and dec0 <= dec <= dec1:
            gone |= set(bands)
    return set(NORTH_BANDS) - gone, set(SOUTH_BANDS) - gone


def cutout_cube(q: dict, sources, holes, noise: float = 0.0) -> tuple[np.ndarray | None, fits.Header]:
    """(cube in nanomaggies per native pixel, header) as write_cutout makes it; cube None: NoOverlapError."""
    ra, dec, ps = float(q["ra"]), float(q["dec"]), float(q.get("pixscale", NATIVE))
    size = min(int(q.get("size", 256)), 3000)
    w_px, h_px = min(int(q.get("width", size)), 3000), min(int(q.get("height", size)), 3000)
    bands = parse_bands(q.get("bands", ""))
    wcs = tan_wcs(ra, dec, (h_px, w_px), ps)
    rr, dd = wcs.pixel_to_world_values(np.full(h_px, w_px // 2 - 0.5), np.arange(h_px))
    north = is_north(rr, dd)
    have_n, have_s = covered(ra, dec, holes)
    if not ((north.any() and have_n) or ((~north).any() and have_s)):
        return None, wcs.to_header()
    rng = np.random.default_rng([round(ra * 1e6), round((dec + 90) * 1e6)])
    image = render(wcs, (h_px, w_px), sources, ps) * (NATIVE / ps) ** 2 + rng.normal(0, noise, (h_px, w_px))
    cube = np.zeros((len(bands), h_px, w_px), np.float32)
    for i, b in enumerate(bands):
        rows = (north & (b in have_n)) | (~north & (b in have_s))
        cube[i, rows] = image[rows]
    return (cube if len(bands) > 1 else cube[0]), _header(wcs, bands, w_px, h_px)


def _header(wcs, bands: str, w_px: int, h_px: int) -> fits.Header:
    hdr = fits.Header({"SURVEY": "LegacySurvey", "VERSION": "DR10", "IMAGETYP": "image"})
    hdr["BANDS"] = bands
    for i, b in enumerate(bands):
        hdr[f"BAND{i}"] = b
    hdr.update(wcs.to_header())
    hdr["IMAGEW"], hdr["IMAGEH"] = w_px, h_px
    hdr["IMAGETYP"] = "IMAGE"
    return hdr


class _ViewerHandler(LoggedHandler):
    def do_GET(self):
        srv = self.server
        q, entry = self.logged_query()
        with srv.lock:
            key = (round(float(q.get("ra", 0)), 4), round(float(q.get("dec", 0)), 4))
            seen = srv.seen[key] = srv.seen.get(key, 0) + 1
        if seen <= srv.transient.get(key, 0):
            entry["status"] = 500
            self.send_error(500, "Internal Server Error")  # not the viewer's page: a failing proxy's
            return
        cube, hdr = cutout_cube(q, srv.sources, srv.holes, srv.noise)
        if cube is None:  # NoOverlapError, uncaught: Django's generic 500
            self.send_body(entry, 500, DJANGO_500, "text/html")
            return
        buf = io.BytesIO()
        fits.PrimaryHDU(cube, header=hdr).writeto(buf)
        self.send_body(entry, 200, buf.getvalue(), "image/fits")


class LegacyViewer(LoopbackServer):
    """`with LegacyViewer(sources, holes) as srv:` serves /fits-cutout at srv.url; srv.requests logs every GET.

    holes: [((ra0, ra1, dec0, dec1), bands without bricks there)]; transient: {(round(ra, 4), round(dec, 4)):
    how many first answers are a non-viewer HTTP 500}; noise: sky sigma (nanomaggies per native pixel)."""

    def __init__(self, sources: list[dict], holes=(), transient: dict | None = None, noise: float = 0.005):
        super().__init__(_ViewerHandler)
        self.httpd.sources = sources
        self.httpd.holes = list(holes)
        self.httpd.noise = float(noise)
        self.httpd.transient = dict(transient or {})
        self.httpd.seen = {}
        self.httpd.lock = threading.Lock()
