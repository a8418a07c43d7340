"""SDSS frames -> cutouts -> shards against a loopback server holding SDSS-format frames (.fits.bz2, TAN WCS,
five bands with different offsets, rotations and pixel scales; point sources and Sersic galaxies injected at
known RA/Dec). Checks centring (< 0.1 px in every band), aperture flux (1%), rejects (edge, missing band,
truncated .bz2), one request per frame, the lock, resume and the normalized shards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from realformats import RangeServer
from survey_formats import (
    SDSS_BANDS,
    aperture_flux,
    centroid,
    cutout_config,
    render,
    sdss_archive,
    sdss_frame_key,
    sources_of,
    write_sdss_frames,
)

from deepred.cutouts.resample import target_wcs
from deepred.cutouts.source import OUT, build_cutouts, fetch_images, raw_dir, read_cutouts
from deepred.data.normalize import normalize
from deepred.data.sources import open_source

CUT = 64


@pytest.fixture(scope="module")
def sdss(tmp_path_factory):
    """Four fields: 100 and 101 clean, 102 without its u frame (404), 103 with a truncated g frame; one extra
    target 12 px from field 100's edge."""
    root = tmp_path_factory.mktemp("sdss")
    fields, targets = sdss_archive(root, n_fields=4, per_field=4)
    f0 = fields[0]
    edge = {"objID": 1237650000000009999, "ra": f0["ra"] + (160 - 12) * 0.396 / 3600, "dec": f0["dec"], "z": 0.1,
            "EBV": 0.02, "run": f0["run"], "camcol": f0["camcol"], "field": f0["field"], "kind": "point", "flux": 300.0}
    targets = pd.concat([targets, pd.DataFrame([edge])], ignore_index=True)
    missing = sdss_frame_key("u", 756, 3, 102)
    truncated = sdss_frame_key("g", 756, 3, 103)
    archive = root / "sas"
    wcses = write_sdss_frames(archive, fields, sources_of(targets), skip={missing}, truncate={truncated})
    return root, archive, targets, wcses, missing, truncated


def _config(root, url, targets, **src):
    return cutout_config(root / "run", "sdss", targets[["objID", "ra", "dec", "z", "EBV", "run", "camcol", "field"]],
                         {"name": "sdss_frames", "base_url": url}, SDSS_BANDS, CUT, (0.0, 0.4),
                         id_column="objID", columns={"z_lens": "z", "ebv": "EBV"}, max_connections=3, **src)


@pytest.fixture(scope="module")
def built(sdss):
    root, archive, targets, wcses, missing, truncated = sdss
    with RangeServer(archive) as srv:
        cfg = _config(root, srv.url, targets)
        stamp = fetch_images(cfg, "sdss")
        first_requests = list(srv.requests)
        again = fetch_images(cfg, "sdss")  # a second run: everything cached and verified against the lock
        second_requests = srv.requests[len(first_requests):]
    meta = build_cutouts(cfg, "sdss")
    return cfg, stamp, again, first_requests, second_requests, meta


def test_each_frame_is_requested_once_and_locked(sdss, built):
    root, archive, targets, wcses, missing, truncated = sdss
    cfg, stamp, again, first, second, meta = built
    paths = [r["path"] for r in first]
    assert len(paths) == len(set(paths)) == 4 * 5  # 20 frames for 17 targets: each once, however many targets
    assert {r["status"] for r in first if r["path"] == missing} == {404}
    # second run: the 18 verified frames come from the cache; only the two unavailable ones are asked again
    assert sorted(r["path"] for r in second) == sorted([missing, truncated])
    assert stamp["n_images"] == 20 and again["n_downloaded"] == 0
    lock = yaml.safe_load(open(cfg["datasets"]["sdss"]["source"]["lock"]))["files"]
    # the 18 usable frames are pinned by sha256; the 404 and the truncated file are not
    assert sorted(lock) == sorted(k for k in wcses if k != truncated)
    assert all(len(e["sha256"]) == 64 and e["url"].endswith(k) for k, e in lock.items())
    assert missing in stamp["missing"] and "HTTP 404" in stamp["missing"][missing]
    assert "truncated or corrupt .bz2" in stamp["missing"][truncated]
    assert not (raw_dir(cfg, "sdss") / "images" / truncated).exists()  # deleted, never trusted


def test_rejects_name_the_reason_and_file(sdss, built):
    cfg, stamp, again, first, second, meta = built
    targets = sdss[2]
    rej = pd.read_parquet(raw_dir(cfg, "sdss") / OUT / "rejects.parquet").set_index("object_id")
    edge_id = "1237650000000009999"
    assert "too close to the image edge" in rej.loc[edge_id, "reason"]
    assert rej.loc[edge_id, "file"].endswith(".fits.bz2")
    in_102 = targets.loc[targets["field"] == 102, "objID"].astype(str)
    in_103 = targets.loc[targets["field"] == 103, "objID"].astype(str)
    assert all("band u" in rej.loc[i, "reason"] and "HTTP 404" in rej.loc[i, "reason"] for i in in_102)
    assert all("band g" in rej.loc[i, "reason"] and "truncated" in rej.loc[i, "reason"] for i in in_103)
    assert meta["n_cut"] == 8 and meta["n_rejected"] == 9


def test_every_band_is_centred_and_flux_conserved(sdss, built):
    root, archive, targets, wcses, missing, truncated = sdss
    cfg = built[0]
    src = read_cutouts(raw_dir(cfg, "sdss") / OUT)
    chunks = list(src.chunks(100))
    truth = pd.concat([c.truth for c in chunks], ignore_index=True)
    images = np.concatenate([c.images for c in chunks])
    assert images.shape == (8, 5, CUT, CUT) and images.dtype == np.float32
    everything = sources_of(targets)
    worst_c, worst_f = 0.0, 0.0
    for oid, img in zip(truth["object_id"], images):
        t = targets[targets["objID"].astype(str) == oid].iloc[0]
        ref = render(target_wcs(t.ra, t.dec, CUT, 0.396), (CUT, CUT), everything, 0.396)  # truth on the target grid
        for b in range(5):
            if t.kind == "point":
                cx, cy = centroid(img[b])
                rx, ry = centroid(ref)
                worst_c = max(worst_c, abs(cx - rx), abs(cy - ry), abs(rx - (CUT - 1) / 2), abs(ry - (CUT - 1) / 2))
            worst_f = max(worst_f, abs(aperture_flux(img[b], 8) / aperture_flux(ref, 8) - 1))
    print(f"worst centring {worst_c:.4f} px, worst aperture flux {100 * worst_f:.3f}%")
    assert worst_c < 0.1, f"centring off by {worst_c:.3f} px"
    assert worst_f < 0.01, f"aperture flux off by {100 * worst_f:.2f}%"


def test_normalize_reads_the_cutouts_and_keeps_their_rejects(sdss, built, tmp_path):
    cfg = built[0]
    targets = sdss[2]
    stats = normalize(open_source(cfg, "sdss"), "sdss", cfg["datasets"]["sdss"], tmp_path, seed=1, config=cfg)
    cat = pd.read_parquet(tmp_path / "catalog.parquet")
    rej = pd.read_parquet(tmp_path / "rejects.parquet")
    assert len(cat) == 8 and len(rej) == 9 and stats["n_rejected"] == 9
    assert set(cat.columns) >= {"object_id", "z_lens", "ebv", "ra", "dec", "split", "shard", "row"}
    z = dict(zip(targets["objID"].astype(str), targets["z"]))
    assert np.allclose(cat["z_lens"], [z[i] for i in cat["object_id"]])
    assert stats["bands"] == list(SDSS_BANDS) and stats["source_meta"]["provider"] == "sdss_frames"
    assert np.load(tmp_path / "shards" / "images_00000.npy").shape[1:] == (5, CUT, CUT)


def test_interrupted_download_resumes_with_range(sdss, tmp_path):
    root, archive, targets, wcses, missing, truncated = sdss
    one = targets[targets["field"] == 100].head(1)
    key = sdss_frame_key("r", 756, 3, 100)
    with RangeServer(archive) as srv:
        srv.cut(key, 5000)  # the first GET of the r frame drops after 5000 bytes
        cfg = cutout_config(tmp_path, "sdss", one[["objID", "ra", "dec", "z", "EBV", "run", "camcol", "field"]],
                            {"name": "sdss_frames", "base_url": srv.url}, SDSS_BANDS, CUT, (0.0, 0.4),
                            id_column="objID", columns={"z_lens": "z", "ebv": "EBV"})
        fetch_images(cfg, "sdss")
        got = [r for r in srv.requests if r["path"] == key]
    assert [r["status"] for r in got] == [200, 206] and got[1]["range"] == "bytes=5000-"
    assert (raw_dir(cfg, "sdss") / "images" / key).stat().st_size == (archive / key).stat().st_size


def test_the_decoded_copies_give_the_same_cutouts_as_the_bz2_frames(sdss, built, tmp_path):
    cfg = built[0]
    decoded = sorted((raw_dir(cfg, "sdss") / "images" / "decoded").rglob("*.npy"))
    assert len(decoded) == 18  # one per usable frame
    a = np.concatenate([c.images for c in read_cutouts(raw_dir(cfg, "sdss") / OUT).chunks(100)])
    cfg["datasets"]["sdss"]["source"]["keep_decoded"] = False
    try:
        build_cutouts(cfg, "sdss", out_dir=tmp_path / "bz2")
    finally:
        cfg["datasets"]["sdss"]["source"]["keep_decoded"] = True
    b = np.concatenate([c.images for c in read_cutouts(tmp_path / "bz2").chunks(100)])
    assert np.array_equal(a, b)
