"""KiDS DR4 tiles -> cutouts against a loopback server holding KiDS-format coadd tiles (KiDS_DR4.0_R.R_D.D_F_sci.fits,
0.2"/px, PHOTZP, each band on its own grid): tile chosen by position, PHOTZP -> nanomaggies, grades, rejects."""

from __future__ import annotations

import numpy as np
import pandas as pd
from formats_kids import KIDS_BANDS, write_kids_dr4
from realformats import RangeServer
from survey_formats import aperture_flux, centroid, cutout_config, render

from deepred.cutouts.resample import target_wcs
from deepred.cutouts.source import OUT, build_cutouts, fetch_images, raw_dir, read_cutouts

CUT, SCALE = 45, 0.2
TILES = [(150.0, 0.5), (150.1, 0.5)]


def _targets():
    rng = np.random.default_rng(2)
    rows = []
    for k, (ra0, dec0) in enumerate(TILES):
        for m in range(3):
            rows.append({"ID": f"KIDS_{k}{m}", "RA": ra0 + rng.uniform(-0.005, 0.005), "DEC": dec0 + rng.uniform(-0.005, 0.005),
                         "z": rng.uniform(0.1, 0.8), "grade": "ABC"[m], "kind": "point" if m < 2 else "sersic"})
    rows.append({"ID": "KIDS_edge", "RA": 150.0 + 47 / 3600, "DEC": 0.5, "z": 0.3, "grade": "A", "kind": "point"})
    rows.append({"ID": "KIDS_far", "RA": 151.0, "DEC": 0.5, "z": 0.3, "grade": "B", "kind": "point"})
    rows.append({"ID": "KIDS_D", "RA": 150.1, "DEC": 0.5, "z": 0.3, "grade": "D", "kind": "point"})  # not kept
    return pd.DataFrame(rows)


def test_kids_tiles_to_cutouts(tmp_path):
    t = _targets()
    sources = [{"ra": r.RA, "dec": r.DEC, "flux": 200.0, "kind": r.kind, "r_e": 0.8} for r in t.itertuples()]
    archive = tmp_path / "kids"
    tiles = write_kids_dr4(archive, TILES, sources, size=500)
    # one tile's r band as the ESO archive serves it: under an archive id, its link in the tile list
    (archive / "eso").mkdir()
    (archive / "tiles" / "KiDS_DR4.0_150.1_0.5_r_sci.fits").rename(archive / "eso" / "ADP.2019-02-11T13:02:24.807.fits")
    with RangeServer(archive) as srv:
        tiles["url_r"] = [None, srv.url + "/eso/ADP.2019-02-11T13:02:24.807.fits"]
        cfg = cutout_config(tmp_path / "run", "kids", t.drop(columns="kind"),
                            {"name": "kids_tiles", "base_url": srv.url + "/tiles", "tiles": "tiles.csv",
                             "tile_half_size_deg": 0.014},
                            KIDS_BANDS, CUT, extra_files={"tiles.csv": tiles}, id_column="ID", ra_column="RA",
                            dec_column="DEC", columns={"z_lens": "z"}, obj_class="lens_candidate",
                            grade_column="grade", grades={"keep": ["A", "B", "C"], "high_prob": ["A"]})
        stamp = fetch_images(cfg, "kids")
        paths = [r["path"] for r in srv.requests]
    named = [f"tiles/KiDS_DR4.0_{ra:.1f}_{dec:.1f}_{b}_{p}.fits" for ra, dec in TILES for b in KIDS_BANDS
             for p in ("sci", "wei", "msk")]
    named += [f"tiles/KiDS_DR4.0_{ra:.1f}_{dec:.1f}_ugriZYJHKs_cat.fits" for ra, dec in TILES]
    named.remove("tiles/KiDS_DR4.0_150.1_0.5_r_sci.fits")
    assert sorted(paths) == sorted(named + ["eso/ADP.2019-02-11T13:02:24.807.fits"])  # each file once
    assert stamp["n_images"] == 8 * 3 + 2
    meta = build_cutouts(cfg, "kids")
    rej = pd.read_parquet(raw_dir(cfg, "kids") / OUT / "rejects.parquet").set_index("object_id")
    assert sorted(rej.index) == ["KIDS_edge", "KIDS_far"]
    assert "too close to the image edge" in rej.loc["KIDS_edge", "reason"]
    assert "no KiDS tile" in rej.loc["KIDS_far", "reason"]
    chunks = list(read_cutouts(raw_dir(cfg, "kids") / OUT).chunks(10))
    truth = pd.concat([c.truth for c in chunks], ignore_index=True)
    images = np.concatenate([c.images for c in chunks])
    assert meta["n_cut"] == 6 and images.shape == (6, 4, CUT, CUT)
    assert set(truth["obj_class"]) == {"lens_candidate"}
    assert truth.set_index("object_id")["high_prob_lens"].to_dict() == {
        i: i.endswith("0") for i in truth["object_id"]}  # grade A only
    for oid, img in zip(truth["object_id"], images):
        r = t[t["ID"] == oid].iloc[0]
        ref = render(target_wcs(r.RA, r.DEC, CUT, SCALE), (CUT, CUT), sources, SCALE)  # nanomaggies
        for b in range(4):
            assert aperture_flux(img[b], 8) / aperture_flux(ref, 8) - 1 < 0.01
            if r.kind == "point":
                cx, cy = centroid(img[b])
                assert abs(cx - (CUT - 1) / 2) < 0.1 and abs(cy - (CUT - 1) / 2) < 0.1
