"""Survey images in the surveys' own formats, with sources injected at known RA/Dec, and loopback servers.

- SDSS DR17 frames (`frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2` under `301/{run}/{camcol}/`):
  HDU0 a float32 image in nanomaggies with a TAN WCS (CD matrix), HDU1 the calibration vector, HDU2 the sky
  table (ALLSKY, XINTERP, YINTERP), HDU3 an astrometry table, bzip2-compressed as the SAS serves them
  (https://data.sdss.org/datamodel/files/BOSS_PHOTOOBJ/frames/RERUN/RUN/CAMCOL/frame.html). The five bands
  of a field get *different* WCS offsets (arcsec), rotations (degrees) and pixel scales, as real frames do.
- KiDS DR4 tiles with their weights, flag images and catalogues: tests/formats_kids.py.
- A cutout service answering the Legacy Surveys `fits-cutout` form: one primary HDU holding a float32 cube
  (nbands, size, size) with a TAN WCS, BANDS and BAND0..n; chosen positions answer HTTP 500 (always), 429
  with Retry-After (first time) or stall past the client's timeout (first time).

Sources are rendered exactly: a circular Gaussian PSF integrated over each pixel (erf differences), so the
pixel sum of a point source is its flux (minus what falls off the image), and Sersic galaxies on a 5x
supersampled grid. Pixel values are nanomaggies per pixel of the image they are drawn on.
"""

from __future__ import annotations

import bz2
import io
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS
from realformats import LoopbackServer
from scipy.special import erf

SDSS_BANDS = ("u", "g", "r", "i", "z")
SDSS_SCALE = 0.396
PSF_SIGMA_ARCSEC = 0.6
# nanomaggies per pixel: a sky-subtracted survey image is never exactly 0 off the sources (only a no-data fill
# is, which the pipeline rejects), so survey-format fixtures carry a little noise by default
SKY_NOISE = 0.002


# ------------------------------------------------------------------------------------------------ images
def tan_wcs(ra0: float, dec0: float, shape: tuple[int, int], scale: float, rot_deg: float = 0.0,
            crpix: tuple[float, float] | None = None) -> WCS:
    """TAN WCS with a rotated CD matrix: (ra0, dec0) at FITS pixel crpix (default: the image centre)."""
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = list(crpix) if crpix else [(nx + 1) / 2.0, (ny + 1) / 2.0]
    s = scale / 3600.0
    c, si = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    w.wcs.cd = [[-s * c, s * si], [s * si, s * c]]
    w.wcs.cunit = ["deg", "deg"]
    w.pixel_shape = (nx, ny)
    return w


def _pixel_gauss(x0: float, y0: float, sigma_px: float, shape, flux: float) -> np.ndarray:
    ny, nx = shape
    xs = np.arange(nx)
    ys = np.arange(ny)
    k = 1.0 / (np.sqrt(2.0) * sigma_px)
    fx = 0.5 * (erf((xs + 0.5 - x0) * k) - erf((xs - 0.5 - x0) * k))
    fy = 0.5 * (erf((ys + 0.5 - y0) * k) - erf((ys - 0.5 - y0) * k))
    return flux * np.outer(fy, fx)


def _sersic(x0, y0, shape, flux, r_e_px, n=1.0, q=0.7, pa_deg=30.0, sub=5, psf_sigma_px=1.5):
    """A PSF-convolved Sersic profile (total flux `flux`, normalised on the supersampled grid)."""
    from scipy.ndimage import gaussian_filter

    ny, nx = shape
    yy, xx = (np.mgrid[: ny * sub, : nx * sub] + 0.5) / sub - 0.5
    dx, dy = xx - x0, yy - y0
    c, s = np.cos(np.radians(pa_deg)), np.sin(np.radians(pa_deg))
    u, v = dx * c + dy * s, (-dx * s + dy * c) / q
    r = np.hypot(u, v)
    b = 2.0 * n - 1.0 / 3.0
    img = np.exp(-b * ((r / r_e_px) ** (1.0 / n) - 1.0))
    img = gaussian_filter(img, psf_sigma_px * sub)
    img = img.reshape(ny, sub, nx, sub).sum(axis=(1, 3))
    return img / img.sum() * flux


def render(wcs: WCS, shape, sources, scale: float, noise: float = 0.0, rng=None) -> np.ndarray:
    """float32 image: `sources` rows (ra, dec, flux, kind) with kind 'point' or 'sersic'."""
    img = np.zeros(shape, np.float64)
    sigma_px = PSF_SIGMA_ARCSEC / scale
    for s in sources:
        x, y = wcs.world_to_pixel_values(s["ra"], s["dec"])
        if not (-20 < x < shape[1] + 20 and -20 < y < shape[0] + 20):
            continue
        if s.get("kind", "point") == "point":
            img += _pixel_gauss(float(x), float(y), sigma_px, shape, s["flux"])
        else:
            # only a box around the galaxy is rendered (supersampling a whole frame would be slow)
            h = 24
            x0, y0 = int(round(float(x))) - h, int(round(float(y))) - h
            box = _sersic(float(x) - x0, float(y) - y0, (2 * h + 1, 2 * h + 1), s["flux"], s.get("r_e", 1.5) / scale,
                          psf_sigma_px=sigma_px)
            ys, xs = slice(max(y0, 0), min(y0 + 2 * h + 1, shape[0])), slice(max(x0, 0), min(x0 + 2 * h + 1, shape[1]))
            img[ys, xs] += box[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
    if noise:
        img += (rng or np.random.default_rng(0)).normal(0, noise, shape)
    return img.astype(np.float32)


# -------------------------------------------------------------------------------------------------- SDSS
def sdss_frame_bytes(image: np.ndarray, wcs: WCS, band: str, run: int, camcol: int, field: int) -> bytes:
    """The bzip2-compressed bytes of a frame file (HDU0 image + WCS, HDU1 calibvec, HDU2 sky, HDU3 astrometry)."""
    hdr = wcs.to_header()
    for k in ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2"):  # write the CD matrix as SDSS does
        hdr.remove(k, ignore_missing=True)
    cd = wcs.wcs.cd
    hdr["CD1_1"], hdr["CD1_2"], hdr["CD2_1"], hdr["CD2_2"] = cd[0, 0], cd[0, 1], cd[1, 0], cd[1, 1]
    hdr["FILTER"] = (band, "filter used")
    hdr["RUN"], hdr["CAMCOL"], hdr["FIELD"] = run, camcol, field
    hdr["BUNIT"] = "nanomaggy"
    hdr["NMGY"] = (0.005, "Calibration factor [nMgy per count]")
    primary = fits.PrimaryHDU(image.astype(np.float32), header=hdr)
    calib = fits.ImageHDU(np.full(image.shape[1], 0.005, np.float32))
    ny, nx = image.shape
    sky = fits.BinTableHDU.from_columns([
        fits.Column(name="ALLSKY", format=f"{(ny // 8) * (nx // 8)}E", dim=f"({nx // 8},{ny // 8})",
                    array=np.full((1, ny // 8, nx // 8), 100.0, np.float32)),
        fits.Column(name="XINTERP", format=f"{nx}E", array=np.linspace(0, nx // 8 - 1, nx, dtype=np.float32)[None]),
        fits.Column(name="YINTERP", format=f"{ny}E", array=np.linspace(0, ny // 8 - 1, ny, dtype=np.float32)[None]),
    ])
    astrom = fits.BinTableHDU.from_columns([
        fits.Column(name="A", format="D", array=[0.0]), fits.Column(name="B", format="D", array=[cd[0, 0]]),
        fits.Column(name="C", format="D", array=[cd[0, 1]]), fits.Column(name="F", format="D", array=[cd[1, 1]]),
    ])
    buf = io.BytesIO()
    fits.HDUList([primary, calib, sky, astrom]).writeto(buf)
    return bz2.compress(buf.getvalue(), 9)


def sdss_frame_key(band: str, run: int, camcol: int, field: int, rerun: int = 301) -> str:
    return f"{rerun}/{run}/{camcol}/frame-{band}-{run:06d}-{camcol}-{field:04d}.fits.bz2"


def write_sdss_frames(root: str | Path, fields: list[dict], sources: list[dict], shape=(240, 320), noise: float = SKY_NOISE,
                      seed: int = 0, skip: set = frozenset(), truncate: set = frozenset()) -> dict:
    """Frames under root/301/{run}/{camcol}/ for each field dict (run, camcol, field, ra, dec); every band
    gets its own offset (up to 3"), rotation (up to 2 deg) and pixel scale (0.396" +- 0.5%).
    `skip`: (key) not written (the server answers 404); `truncate`: keys written cut to half their bytes.
    Returns {key: WCS} of the frames written."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    wcses = {}
    for f in fields:
        for j, b in enumerate(SDSS_BANDS):
            off = rng.uniform(-3.0, 3.0, 2) / 3600.0
            rot = rng.uniform(-2.0, 2.0) + (j - 2) * 0.4
            scale = SDSS_SCALE * (1 + rng.uniform(-0.005, 0.005))
            w = tan_wcs(f["ra"] + off[0] / np.cos(np.radians(f["dec"])), f["dec"] + off[1], shape, scale, rot)
            key = sdss_frame_key(b, f["run"], f["camcol"], f["field"])
            if key in skip:
                continue
            data = sdss_frame_bytes(render(w, shape, sources, scale, noise, rng), w, b, f["run"], f["camcol"], f["field"])
            if key in truncate:
                data = data[: len(data) // 2]
            p = root / key
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            wcses[key] = w
    return wcses


def sdss_archive(root: str | Path, n_fields: int = 2, per_field: int = 4, shape=(240, 320), seed: int = 1,
                 noise: float = SKY_NOISE, sersic_every: int = 3):
    """Fields along a stripe, `per_field` targets inside each (clear of the edges), a point source or a
    Sersic galaxy at every target. Returns (fields, targets DataFrame with objID, ra, dec, z, EBV, run,
    camcol, field, kind, flux)."""
    rng = np.random.default_rng(seed)
    fields, rows = [], []
    half_w = 0.5 * shape[1] * SDSS_SCALE / 3600.0
    half_h = 0.5 * shape[0] * SDSS_SCALE / 3600.0
    for k in range(n_fields):
        f = {"run": 756, "camcol": 3, "field": 100 + k, "ra": 180.0 + k * 0.1, "dec": 1.0}
        fields.append(f)
        for m in range(per_field):
            ra = f["ra"] + rng.uniform(-0.55, 0.55) * half_w
            dec = f["dec"] + rng.uniform(-0.5, 0.5) * half_h
            kind = "sersic" if (len(rows) % sersic_every == sersic_every - 1) else "point"
            rows.append({"objID": 1237650000000000000 + len(rows), "ra": ra, "dec": dec, "z": rng.uniform(0.02, 0.35),
                         "EBV": rng.uniform(0, 0.1), "run": f["run"], "camcol": f["camcol"], "field": f["field"],
                         "kind": kind, "flux": float(rng.uniform(200, 800))})
    targets = pd.DataFrame(rows)
    return fields, targets


def sources_of(targets: pd.DataFrame) -> list[dict]:
    return [{"ra": r.ra, "dec": r.dec, "flux": r.flux, "kind": r.kind, "r_e": 1.2} for r in targets.itertuples()]


# ---------------------------------------------------------------------------------------- cutout service
class LoggedHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 handler that logs each GET (path, query, status) in server.requests, under server.lock."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def logged_query(self) -> tuple[dict, dict]:
        """(the query as {key: first value}, this request's entry in server.requests)."""
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        entry = {"path": url.path, "query": q, "status": None}
        with self.server.lock:
            self.server.requests.append(entry)
        return q, entry

    def send_body(self, entry: dict, status: int, body: bytes, ctype: str) -> None:
        entry["status"] = status
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            entry["status"] = "client gone"


class _ServiceHandler(LoggedHandler):
    def do_GET(self):
        srv = self.server
        q, entry = self.logged_query()
        try:
            ra, dec = float(q["ra"]), float(q["dec"])
            size, pixscale, bands = int(q["size"]), float(q["pixscale"]), q["bands"]
        except (KeyError, ValueError):
            entry["status"] = 400
            self.send_error(400)
            return
        key = (round(ra, 4), round(dec, 4))
        mode = srv.modes.get(key)
        with srv.lock:
            seen = srv.seen.get(key, 0)
            srv.seen[key] = seen + 1
        if mode == "500":
            entry["status"] = 500
            self.send_error(500, "Internal Server Error")
            return
        if mode == "429" and seen == 0:
            entry["status"] = 429
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "timeout" and seen == 0:
            time.sleep(srv.stall_s)
        w = tan_wcs(ra, dec, (size, size), pixscale, 0.0)
        cube = np.stack([render(w, (size, size), srv.sources, pixscale) for _ in bands]) if mode != "empty" else \
            np.zeros((len(bands), size, size), np.float32)
        for i in range(len(bands)):
            cube[i] *= 1.0 + 0.1 * i  # a colour: distinct planes
        hdr = w.to_header()
        hdr["BANDS"] = bands
        for i, b in enumerate(bands):
            hdr[f"BAND{i}"] = b
        buf = io.BytesIO()
        fits.PrimaryHDU(cube.astype(np.float32), header=hdr).writeto(buf)
        self.send_body(entry, 200, buf.getvalue(), "application/fits")


class CutoutServer(LoopbackServer):
    """`with CutoutServer(sources, modes) as srv:` serves /fits-cutout at srv.url; srv.requests logs every GET.

    modes: {(round(ra, 4), round(dec, 4)): "500" | "429" | "timeout" | "empty"}."""

    def __init__(self, sources: list[dict], modes: dict | None = None, stall_s: float = 3.0):
        super().__init__(_ServiceHandler)
        self.httpd.sources = sources
        self.httpd.modes = dict(modes or {})
        self.httpd.seen = {}
        self.httpd.stall_s = stall_s
        self.httpd.lock = threading.Lock()


# ------------------------------------------------------------------------------------------ measurements
def centroid(img: np.ndarray, radius: float = 6.0) -> tuple[float, float]:
    """First-moment centroid (x, y) within `radius` px of the cutout centre (positive pixels)."""
    n = img.shape[0]
    c = (n - 1) / 2.0
    yy, xx = np.mgrid[:n, :n]
    m = ((xx - c) ** 2 + (yy - c) ** 2 <= radius**2)
    w = np.where(m, np.clip(img, 0, None), 0.0)
    return float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())


def aperture_flux(img: np.ndarray, radius: float) -> float:
    n = img.shape[0]
    c = (n - 1) / 2.0
    yy, xx = np.mgrid[:n, :n]
    return float(img[(xx - c) ** 2 + (yy - c) ** 2 <= radius**2].sum())


# ------------------------------------------------------------------------------------------------ config
def cutout_config(root: str | Path, name: str, targets: pd.DataFrame, provider: dict, bands, cutout: int,
                  label_range=(0.0, 4.0), extra_files: dict | None = None, **src) -> dict:
    """A validated config with one `kind: cutouts` dataset whose target table (and `extra_files`: name ->
    DataFrame) are written, pinned, under root/data/raw/{name}/; the lock goes to root/pins/."""
    import yaml

    from deepred.contracts.config import validate_config
    from deepred.fetch.download import pin_folder

    root = Path(root)
    raw = root / "data" / "raw" / name
    raw.mkdir(parents=True, exist_ok=True)
    targets.to_csv(raw / "targets.csv", index=False)
    for fname, df in (extra_files or {}).items():
        df.to_csv(raw / fname, index=False)
    files = [f for f in pin_folder(raw) if f["name"] in {"targets.csv", *(extra_files or {})}]
    repo = Path(__file__).resolve().parent.parent
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    source = {"kind": "cutouts", "files": files, "targets": "targets.csv", "provider": provider,
              "lock": str(root / "pins" / f"{name}.lock.yaml"), **src}
    cfg.update({"data_dir": str(root / "data"), "results_dir": str(root / "results"),
                "datasets": {name: {"source": source, "bands": list(bands), "cutout": int(cutout),
                                    "label_column": "z_lens", "label_range": list(label_range),
                                    "splits": {"train": 0.5, "val": 0.25, "test": 0.25}, "rows_per_shard": 8,
                                    "on_bad": "skip"}},
                "test_sets": {name: {"dataset": name, "table": name}}})
    cfg["download"] = {"retries": 3, "backoff_s": 0.0, "timeout_s": 10}
    return validate_config(cfg)
