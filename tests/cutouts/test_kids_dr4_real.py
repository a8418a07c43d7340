"""KiDS DR4 tiles as the survey writes them (tests/formats_kids.py): Astro-WISE or ESO zero points, the per-tile
DMAG offsets, weight maps and flag images, KiDS's own tile names, and a tile whose calibration is unknown."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from formats_kids import KIDS_BANDS, write_kids_dr4
from realformats import RangeServer
from survey_formats import aperture_flux, cutout_config, render

from deepred.cutouts import kids_tiles
from deepred.cutouts.providers import ProviderError
from deepred.cutouts.resample import target_wcs
from deepred.cutouts.source import OUT, build_cutouts, fetch_images, raw_dir, read_cutouts
from deepred.fetch.download import DownloadError

CUT, SCALE, TILE = 33, 0.2, (150.0, 0.5)
DMAG = {"u": 0.12, "g": -0.05, "r": 0.30, "i": -0.20}


def _targets(offsets: dict[str, tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"ID": k, "RA": TILE[0] + dx / 3600, "DEC": TILE[1] + dy / 3600, "z": 0.4}
                         for k, (dx, dy) in offsets.items()])


def _sources(t: pd.DataFrame) -> list[dict]:
    return [{"ra": r.RA, "dec": r.DEC, "flux": 150.0, "kind": "point", "r_e": 0.8} for r in t.itertuples()]


def _config(tmp_path, srv, t, tiles, **provider):
    prov = {"name": "kids_tiles", "base_url": srv.url + "/tiles", "tiles": "tiles.csv", "tile_half_size_deg": 0.03,
            **provider}
    return cutout_config(tmp_path / "run", "kids", t, prov, KIDS_BANDS, CUT, extra_files={"tiles.csv": tiles},
                         id_column="ID", ra_column="RA", dec_column="DEC", columns={"z_lens": "z"})


def _cut(cfg):
    fetch_images(cfg, "kids")
    meta = build_cutouts(cfg, "kids")
    folder = raw_dir(cfg, "kids") / OUT
    chunks = list(read_cutouts(folder).chunks(50))
    truth = pd.concat([c.truth for c in chunks], ignore_index=True) if chunks else pd.DataFrame()
    images = np.concatenate([c.images for c in chunks]) if chunks else np.empty((0,))
    return meta, truth, images, pd.read_parquet(folder / "rejects.parquet").set_index("object_id")


@pytest.mark.parametrize("style", ["astrowise", "eso"])
def test_zero_point_and_dmag_give_nanomaggies(tmp_path, style):
    """ZEROPNT = 0 (Astro-WISE) or PHOTZP (ESO), plus each band's DMAG: the cutouts are in nanomaggies."""
    t = _targets({"a": (-20, -15), "b": (18, 12)})
    write_kids_dr4(tmp_path / "kids", [TILE], _sources(t), size=400, header_style=style, dmag=DMAG)
    tiles = pd.DataFrame([{"tile": f"KIDS_{TILE[0]:.1f}_{TILE[1]:.1f}", "ra": TILE[0], "dec": TILE[1]}])
    with RangeServer(tmp_path / "kids") as srv:
        meta, truth, images, rej = _cut(_config(tmp_path, srv, t, tiles))
    assert meta["n_cut"] == 2, rej.to_dict("records")
    for oid, img in zip(truth["object_id"], images):
        r = t.set_index("ID").loc[oid]
        ref = aperture_flux(render(target_wcs(r.RA, r.DEC, CUT, SCALE), (CUT, CUT), _sources(t), SCALE), 8)
        for j, b in enumerate(KIDS_BANDS):
            assert aperture_flux(img[j], 8) / ref == pytest.approx(1.0, abs=0.01), (oid, b)


def test_zero_weight_masked_and_zero_filled_targets_are_rejects(tmp_path):
    """A gap (weight 0, coadd 0) under the footprint, a bright-star flag at the centre: rejects with a category and
    its share of the targets; a flag off the centre and the clean target are kept."""
    t = _targets({"clean": (-25, -25), "gap": (25, -25), "star": (-25, 25), "star_edge": (25, 25)})
    gaps = [(t.RA[1] + 2.0 / 3600, t.DEC[1], 8)]  # 2" east of the target: inside its 6.6" footprint
    masks = [(t.RA[2], t.DEC[2], 3, 4), (t.RA[3] + 2.5 / 3600, t.DEC[3], 3, 2)]  # at the centre / 12 px off it
    tiles = write_kids_dr4(tmp_path / "kids", [TILE], _sources(t), size=500, dmag=DMAG, gaps=gaps, masks=masks,
                           noise=0.05)
    with RangeServer(tmp_path / "kids") as srv:
        meta, truth, _, rej = _cut(_config(tmp_path, srv, t, tiles))
    assert sorted(truth["object_id"]) == ["clean", "star_edge"]
    assert rej.loc["gap", "category"] == "zero_weight" and "zero weight" in rej.loc["gap", "reason"]
    assert rej.loc["gap", "file"].endswith("_r_wei.fits") or rej.loc["gap", "file"].endswith("_wei.fits")
    assert rej.loc["star", "category"] == "masked" and "flags [4]" in rej.loc["star", "reason"]
    assert set(rej["category_fraction"]) == {0.25}
    quarter = {"n": 1, "fraction": 0.25}
    assert meta["rejected_by_category"] == {"masked": quarter, "zero_weight": quarter}


def test_zero_filled_pixels_without_weights_are_rejects(tmp_path):
    """Without weight maps (products: [cat]), SWarp's zero fill is caught in the pixels: a gap at the centre and a
    gap over part of the footprint are rejects (category no_data_pixels), never data."""
    t = _targets({"clean": (-25, -25), "hole": (25, -25), "part": (-25, 25)})
    gaps = [(t.RA[1], t.DEC[1], 2), (t.RA[2] + 4.0 / 3600, t.DEC[2], 6)]
    tiles = write_kids_dr4(tmp_path / "kids", [TILE], _sources(t), size=500, gaps=gaps, noise=0.05)
    with RangeServer(tmp_path / "kids") as srv:
        _, truth, _, rej = _cut(_config(tmp_path, srv, t, tiles, products=["cat"]))
    assert list(truth["object_id"]) == ["clean"]
    assert set(rej.loc[["hole", "part"], "category"]) == {"no_data_pixels"}
    assert "exactly 0 in the central" in rej.loc["hole", "reason"]
    assert "of the footprint" in rej.loc["part", "reason"]


def test_unknown_calibration_stops_on_the_first_tile(tmp_path):
    """Headers with neither PHOTZP nor ZEROPNT: the fetch stops after the first coadd and its companions, names
    what the header holds, keeps the file (a rerun downloads nothing), and provider.zero_point unblocks it."""
    t = _targets({"a": (-20, -15), "b": (18, 12), "c": (360, 0)})  # c: on the second tile
    tiles = write_kids_dr4(tmp_path / "kids", [TILE, (150.1, 0.5)], _sources(t), size=300, header_style="bare",
                           zp=27.0, dmag=DMAG, noise=0.02)
    with RangeServer(tmp_path / "kids") as srv:
        cfg = _config(tmp_path, srv, t, tiles, tile_half_size_deg=0.1)
        with pytest.raises(DownloadError, match=r"first file, before downloading the rest.*no PHOTZP or ZEROPNT"):
            fetch_images(cfg, "kids")
        first = [r["path"] for r in srv.requests]
        assert len(first) == 4 and sum(p.endswith("_sci.fits") for p in first) == 1  # one coadd + wei, msk, cat
        with pytest.raises(DownloadError, match="no PHOTZP"):
            fetch_images(cfg, "kids")
        assert [r["path"] for r in srv.requests] == first  # kept: nothing downloaded again
        cfg["datasets"]["kids"]["source"]["provider"]["zero_point"] = 27.0
        meta, truth, images, rej = _cut(cfg)
    assert meta["n_cut"] == 3, rej.to_dict("records")
    r = t.iloc[0]
    ref = aperture_flux(render(target_wcs(r.RA, r.DEC, CUT, SCALE), (CUT, CUT), _sources(t), SCALE), 8)
    assert aperture_flux(images[list(truth["object_id"]).index("a")][2], 8) / ref == pytest.approx(1.0, abs=0.01)
    assert json.loads((raw_dir(cfg, "kids") / OUT / "meta.json").read_text())["n_rejected"] == 0


def test_a_catalogue_without_one_bands_dmag_stops_the_fetch(tmp_path):
    """The catalogue is fetched once for all bands (under the first band's request): every band's DMAG is
    checked then, not only the first's, so a missing DMAG_R stops the fetch instead of rejecting every target."""
    t = _targets({"a": (-20, -15)})
    tiles = write_kids_dr4(tmp_path / "kids", [TILE], _sources(t), size=300, dmag=DMAG)
    cat = tmp_path / "kids" / "tiles" / f"KiDS_DR4.0_{TILE[0]:.1f}_{TILE[1]:.1f}_ugriZYJHKs_cat.fits"
    with fits.open(cat) as hdul:
        del hdul[0].header["DMAG_R"]
        hdul.writeto(cat, overwrite=True)
    with RangeServer(tmp_path / "kids") as srv:
        with pytest.raises(DownloadError, match=r"first file, before downloading the rest.*no DMAG_R card"):
            fetch_images(_config(tmp_path, srv, t, tiles), "kids")


def test_tile_names_as_kids_writes_them():
    assert kids_tiles.tile_name("KIDS_140.0_-0.5") == "140.0_-0.5"
    assert kids_tiles.tile_name("KIDS_140p0_m0p5") == "140.0_-0.5"
    assert kids_tiles.tile_name("kids_35.1_2.0") == "35.1_2.0"
    with pytest.raises(ProviderError, match="is not R.R_D.D"):
        kids_tiles.tile_name("KiDS-N_140")


def test_no_mirror_and_no_links_is_refused():
    tiles = pd.DataFrame([{"tile": "KIDS_150.0_0.5", "ra": 150.0, "dec": 0.5}])
    with pytest.raises(ProviderError, match=r"no base_url.*url_u.*serves catalogues, not images by name"):
        kids_tiles.KiDSTiles({"name": "kids_tiles"}, list(KIDS_BANDS), CUT, SCALE, tiles=tiles)
    links = tiles.assign(**{f"url_{b}{p}": f"https://eso.example/ADP.{b}{p}" for b in KIDS_BANDS
                            for p in ("", "_wei", "_msk")}, url_cat="https://eso.example/ADP.cat")
    reqs = kids_tiles.KiDSTiles({"name": "kids_tiles"}, list(KIDS_BANDS), CUT, SCALE, tiles=links).requests(
        {"object_id": "x", "ra": 150.0, "dec": 0.5})
    assert reqs["g"].url == "https://eso.example/ADP.g"
    assert {c.role: c.url for c in reqs["g"].companions} == {
        "wei": "https://eso.example/ADP.g_wei", "msk": "https://eso.example/ADP.g_msk",
        "cat": "https://eso.example/ADP.cat"}
