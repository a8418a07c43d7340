"""The cutout_service provider against the Legacy Surveys viewer as it really answers (tests/formats_legacysurvey.py):
zero planes for bands without bricks, values per native 0.262" pixel at any pixscale, HTTP 500 off the footprint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from formats_legacysurvey import DJANGO_500, LegacyViewer
from survey_formats import aperture_flux, cutout_config

from deepred.cutouts.cutout_service import CutoutService
from deepred.cutouts.source import OUT, build_cutouts, cache_dir, fetch_images, raw_dir, read_cutouts

NORTH, SOUTH, NO_I, OFF, FLAKY = (180.0, 40.0), (150.0, 2.0), (150.5, 2.0), (151.0, 2.0), (151.5, 2.0)
HOLES = [((150.45, 150.55, 1.9, 2.1), "i"), ((150.95, 151.05, 1.9, 2.1), "griz")]


def _targets(*positions):
    return pd.DataFrame({"id": [f"t{k}" for k in range(len(positions))], "ra": [p[0] for p in positions],
                         "dec": [p[1] for p in positions], "z": np.linspace(0.1, 0.5, len(positions))})


def _sources(t, flux=400.0):
    return [{"ra": r.ra, "dec": r.dec, "flux": flux, "kind": "point"} for r in t.itertuples()]


def _cfg(root, name, url, t, bands="griz", cutout=32, **src):
    tmpl = url + "/fits-cutout?ra={ra:.6f}&dec={dec:.6f}&layer={layer}&pixscale={pixscale}&bands={bands}&size={size}"
    cfg = cutout_config(root, name, t, {"name": "cutout_service", "url_template": tmpl, "layer": "ls-dr10"},
                        list(bands), cutout, **src)
    cfg["download"].update(timeout_s=5.0, backoff_s=0.05)
    return cfg


def _cut(cfg, name):
    fetch_images(cfg, name)
    meta = build_cutouts(cfg, name)
    rej = pd.read_parquet(raw_dir(cfg, name) / OUT / "rejects.parquet")
    chunks = list(read_cutouts(raw_dir(cfg, name) / OUT).chunks(100))
    ids = pd.concat([c.truth for c in chunks])["object_id"].tolist() if chunks else []
    images = np.concatenate([c.images for c in chunks]) if chunks else None
    return meta, dict(zip(rej["object_id"], rej["reason"])), ids, images


def test_bands_without_bricks_are_rejects_not_zero_images(tmp_path):
    t = _targets(NORTH, SOUTH, NO_I)
    with LegacyViewer(_sources(t), HOLES) as srv:
        cfg = _cfg(tmp_path, "ls", srv.url, t)
        meta, rejects, ids, images = _cut(cfg, "ls")
        grz = _cfg(tmp_path, "grz", srv.url, t, bands="grz")
        _, grz_rejects, grz_ids, _ = _cut(grz, "grz")
    # the trap is real: the north cube names i among its planes and draws it as zeros
    data, hdr = fits.getdata(cache_dir(cfg, "ls") / "service" / "t0.fits", header=True)
    assert hdr["BANDS"] == "griz" and hdr["BAND2"] == "i" and not data[2].any() and data[1].any()
    assert ids == ["t1"] and meta["n_cut"] == 1 and np.isfinite(images).all() and images[0, 2].any()
    for oid in ("t0", "t2"):
        assert rejects[oid].startswith("band i:") and "no data (plane is all zero" in rejects[oid]
    assert sorted(grz_ids) == ["t0", "t1", "t2"] and not grz_rejects  # g, r, z exist everywhere here


@pytest.mark.parametrize("scale", [0.262, 0.396])
def test_flux_is_the_same_at_any_pixel_scale(tmp_path, scale):
    t = _targets(SOUTH)
    with LegacyViewer(_sources(t, flux=400.0)) as srv:
        cfg = _cfg(tmp_path, "ls", srv.url, t, bands="gr", cutout=40, pixel_scale=scale)
        meta, rejects, _, images = _cut(cfg, "ls")
        asked = {r["query"]["pixscale"] for r in srv.requests}
    assert asked == {str(scale)} and meta["n_cut"] == 1 and not rejects  # the service is asked at that scale
    for b in range(2):  # nanomaggies per output pixel: the aperture holds the source's 400 nMgy
        assert aperture_flux(images[0, b], 3.0 / scale) == pytest.approx(400.0, rel=0.01)


def test_off_footprint_is_a_reject_at_once_and_a_flaky_500_is_retried(tmp_path):
    t = _targets(SOUTH, OFF, FLAKY)
    with LegacyViewer(_sources(t), HOLES, transient={FLAKY: 2}) as srv:
        cfg = _cfg(tmp_path, "ls", srv.url, t)  # download_failures: error (the default)
        meta, rejects, ids, _ = _cut(cfg, "ls")
        statuses = {}
        for r in srv.requests:
            statuses.setdefault(round(float(r["query"]["ra"]), 4), []).append(r["status"])
    assert statuses == {SOUTH[0]: [200], OFF[0]: [500], FLAKY[0]: [500, 500, 200]}
    assert sorted(ids) == ["t0", "t2"] and meta["n_rejected"] == 1
    assert "no data at this position" in rejects["t1"] and "NoOverlapError" in rejects["t1"]


def test_permanent_answer_tells_the_viewer_page_from_an_outage():
    svc = CutoutService({"name": "cutout_service"}, ["g"], 32, 0.262)
    debug_page = b"<title>NoOverlapError at /fits-cutout</title> ... No overlap"
    assert svc.permanent_answer(500, DJANGO_500) and svc.permanent_answer(500, b"<h1>Server Error (500)</h1>")
    assert svc.permanent_answer(500, debug_page)
    outage = b"<html><body><h1>Error response</h1><p>Error code: 500</p><p>Message: Internal Server Error.</p>"
    assert svc.permanent_answer(500, outage) is None and svc.permanent_answer(503, DJANGO_500) is None


@pytest.mark.parametrize("cfg, native", [({}, 0.262), ({"layer": "ls-dr9-north"}, 0.262),
                                         ({"layer": "sdss"}, None), ({"native_pixscale": None}, None),
                                         ({"native_pixscale": 0.396}, 0.396),
                                         ({"url_template": "https://x/cut?ra={ra}&dec={dec}&size={size}"}, None)])
def test_native_pixscale_defaults_to_legacy_surveys_layers_only(cfg, native):
    assert CutoutService({"name": "cutout_service", **cfg}, ["g"], 32, 0.396).native_pixscale() == native
