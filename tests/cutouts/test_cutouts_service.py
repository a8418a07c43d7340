"""The cutout-service provider against a loopback server in the Legacy Surveys `fits-cutout` form: a 3-D FITS
cube per target, an HTTP 500, a 429 with Retry-After and a stalled answer (timeout).

The 500 here is a transient outage (Python's own error page, not the viewer's Django page): retried, then fatal
by default. The viewer's off-footprint 500, a reject at once, is in test_legacysurvey_real.py."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from survey_formats import CutoutServer, aperture_flux, centroid, cutout_config, render

from deepred.cutouts.resample import target_wcs
from deepred.cutouts.source import OUT, build_cutouts, fetch_images, raw_dir, read_cutouts
from deepred.fetch.download import DownloadError

BANDS = ("g", "r", "i", "z")
CUT, SCALE = 32, 0.262


def _targets():
    rng = np.random.default_rng(5)
    ra = 150.0 + np.arange(6) * 0.01
    dec = 2.0 + rng.uniform(-0.001, 0.001, 6)
    return pd.DataFrame({"id": [f"t{i}" for i in range(6)], "ra": ra, "dec": dec, "z": rng.uniform(0.1, 0.9, 6)})


def _modes(t):
    key = lambda i: (round(float(t.ra[i]), 4), round(float(t.dec[i]), 4))  # noqa: E731
    return {key(1): "500", key(2): "429", key(3): "timeout"}


def _cfg(root, url, t, **src):
    tmpl = url + "/fits-cutout?ra={ra:.6f}&dec={dec:.6f}&layer={layer}&pixscale={pixscale}&bands={bands}&size={size}"
    cfg = cutout_config(root, "legacy", t, {"name": "cutout_service", "url_template": tmpl, "layer": "ls-dr10",
                                            "pixscale": SCALE}, BANDS, CUT, **src)
    cfg["download"]["timeout_s"] = 1.0
    cfg["download"]["backoff_s"] = 0.2
    return cfg


def test_service_cube_429_timeout_and_500(tmp_path):
    t = _targets()
    sources = [{"ra": r.ra, "dec": r.dec, "flux": 300.0, "kind": "point"} for r in t.itertuples()]
    with CutoutServer(sources, _modes(t), stall_s=2.5) as srv:
        cfg = _cfg(tmp_path / "a", srv.url, t)
        t0 = time.monotonic()
        with pytest.raises(DownloadError) as err:  # default: a persistent 500 stops the run, naming the URL
            fetch_images(cfg, "legacy")
        assert "1 of 6 images" in str(err.value) and "HTTP 500" in str(err.value) and "ra=150.010000" in str(err.value)
        log = list(srv.requests)
        by_ra = {}
        for r in log:
            by_ra.setdefault(round(float(r["query"]["ra"]), 4), []).append(r["status"])
        assert by_ra[150.02] == [429, 200]  # Retry-After honoured, then served
        assert by_ra[150.03][-1] == 200 and len(by_ra[150.03]) == 2  # stalled past the 1 s timeout, retried
        assert by_ra[150.01] == [500] * 4  # 1 + 3 retries
        assert all(len(v) == 1 for k, v in by_ra.items() if k not in (150.01, 150.02, 150.03))
        assert time.monotonic() - t0 >= 1.0
        # the same run with download_failures: reject asks only for what is not cached yet, and rejects the 500
        cfg["datasets"]["legacy"]["source"]["download_failures"] = "reject"
        n = len(srv.requests)
        stamp = fetch_images(cfg, "legacy")
        assert [round(float(r["query"]["ra"]), 4) for r in srv.requests[n:]] == [150.01] * 4
    meta = build_cutouts(cfg, "legacy")
    assert meta["n_cut"] == 5 and meta["n_rejected"] == 1 and len(stamp["missing"]) == 1
    rej = pd.read_parquet(raw_dir(cfg, "legacy") / OUT / "rejects.parquet")
    assert rej["object_id"].tolist() == ["t1"] and "HTTP 500" in rej["reason"].iloc[0]
    chunks = list(read_cutouts(raw_dir(cfg, "legacy") / OUT).chunks(10))
    images = np.concatenate([c.images for c in chunks])
    ids = pd.concat([c.truth for c in chunks])["object_id"].tolist()
    assert images.shape == (5, 4, CUT, CUT)
    for oid, img in zip(ids, images):
        r = t[t["id"] == oid].iloc[0]
        ref = render(target_wcs(r.ra, r.dec, CUT, SCALE), (CUT, CUT), sources, SCALE)
        for b in range(4):  # plane b is BAND{b}: the server scales it by 1 + 0.1 b
            cx, cy = centroid(img[b])
            assert abs(cx - (CUT - 1) / 2) < 0.1 and abs(cy - (CUT - 1) / 2) < 0.1
            assert aperture_flux(img[b], 6) / aperture_flux(ref, 6) == pytest.approx(1 + 0.1 * b, rel=0.01)
