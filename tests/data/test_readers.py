"""Readers of the real formats, end to end: fixture files in the exact archive formats are served over a real
loopback HTTP server, downloaded and verified by deepred.fetch.download, read by deepred.data.readers through
open_source, and normalized into the data contract; plus the failures each reader must name clearly."""

from __future__ import annotations

import copy
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from realformats import (
    RangeServer,
    file_specs,
    write_deepgravilens,
    write_kids,
    write_old_pickle_npy,
    write_sdss,
)

from deepred.contracts.config import validate_config
from deepred.contracts.processed import DataError, ProcessedDataset
from deepred.contracts.processed import test_set_rows as select_test_set
from deepred.data.normalize import normalize
from deepred.data.sources import open_source
from deepred.fetch.dataset import fetch_dataset
from deepred.fetch.download import DownloadSettings

ROOT = Path(__file__).resolve().parents[2]
FAST = DownloadSettings(retries=2, backoff_s=0.0, timeout_s=10)


def _config(tmp_path, dataset, source, bands, cutout, **ds):
    """The repository's config.yaml with one real dataset in place of the simulated ones."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["data_dir"] = str(tmp_path / "data")
    cfg["datasets"] = {
        dataset: {"source": source, "bands": bands, "cutout": cutout, "label_column": "z_lens", "rows_per_shard": 32, **ds}
    }
    cfg["test_sets"] = {dataset: {"dataset": dataset, "table": dataset}}
    return validate_config(cfg)


def _run(cfg, dataset):
    raw = tmp = cfg["data_dir"] + f"/raw/{dataset}"
    fetch_dataset(cfg, dataset, raw, FAST)
    out = cfg["data_dir"] + f"/processed/{dataset}"
    normalize(open_source(cfg, dataset), dataset, cfg["datasets"][dataset], out, seed=7, config=cfg)
    del tmp
    return ProcessedDataset(out)


# ------------------------------------------------------------------------------------------ DeepGraviLens
@pytest.fixture
def dgl(tmp_path):
    archive = tmp_path / "zenodo" / "des_deep_data"
    truth = write_deepgravilens(archive, systems_per_group=6, groups=(1, 2))
    with RangeServer(tmp_path / "zenodo") as srv:
        files = file_specs(archive, srv.url + "/des_deep_data")
        yield srv, archive, truth, files


def _dgl_cfg(tmp_path, files, **src):
    source = {"kind": "deepgravilens", "subset": "des_deep_data", "files": files, **src}
    splits = {"train": 0.4, "val": 0.3, "test": 0.3}  # a dozen systems: every split gets some
    return _config(tmp_path, "des_deep", source, ["g", "r", "i", "z"], 45, scaling="none", splits=splits)


def test_deepgravilens_download_verify_normalize(tmp_path, dgl):
    srv, archive, truth, files = dgl
    cfg = _dgl_cfg(tmp_path, files)
    ds = _run(cfg, "des_deep")
    cat = ds.catalog
    # Group 1 (no lens) has one star-only (z ~0.005) and one empty-sky (0.1) system: 2 x 8 rows dropped.
    assert len(cat) == 2 * 6 * 8 - 16
    assert set(cat["obj_class"]) == {"no_lens", "gg_lens"}
    assert cat["z_source"][cat["obj_class"] == "no_lens"].isna().all()  # placeholder 2.0 -> NaN
    # Every system's 8 copies share one system_id, derived from metadata: it groups exactly the true systems.
    cat = cat.assign(group=cat["object_id"].str.extract(r"-g(\d)-")[0].astype(int), raw_row=cat["object_id"].str[-7:].astype(int))
    merged = cat.merge(truth.rename(columns={"row": "raw_row"}), on=["group", "raw_row"], suffixes=("", "_true"))
    assert (merged.groupby("system_id")["system"].nunique() == 1).all()
    assert (merged.groupby(["group", "system"])["system_id"].nunique() == 1).all()
    assert (merged.groupby("system_id").size() == 8).all()
    assert (merged.groupby("system_id")["split"].nunique() == 1).all()  # copies never straddle splits
    np.testing.assert_allclose(merged["z_lens"], merged["z_lens_true"])
    # Images are (N, 4, 45, 45) g,r,i,z; copy 2 (block 2) is the 90-degree rotation of copy 0.
    sid = merged.loc[merged["group"] == 2, "system_id"].iloc[0]
    rows = merged[merged["system_id"] == sid].sort_values("raw_row")
    imgs = ds.images(rows)
    assert imgs.shape == (8, 4, 45, 45)
    np.testing.assert_array_equal(imgs[2], np.rot90(imgs[0], 1, axes=(1, 2)))
    assert ds.stats["has_masks"] is False and ds.masks(rows) is None
    assert ds.stats["survey"] == "DES-deep" and ds.stats["pixel_scale"] == 0.263


def test_deepgravilens_placeholder_keep_flags_and_nan_rejects(tmp_path, dgl):
    srv, archive, truth, files = dgl
    raw = tmp_path / "data" / "raw" / "des_deep"
    cfg = _dgl_cfg(tmp_path, files, placeholders={"action": "keep"})
    fetch_dataset(cfg, "des_deep", raw, FAST)
    src = open_source(cfg, "des_deep")
    assert src.n_objects == 2 * 6 * 8
    t = pd.concat([c.truth for c in src.chunks(64)])
    assert ((t["quality_flag"] & 1) > 0).sum() == 16 and t["z_lens"].notna().all()
    cfg2 = _dgl_cfg(tmp_path, files, placeholders={"action": "nan"})
    cfg2["datasets"]["des_deep"]["on_bad"] = "skip"
    out = tmp_path / "proc"
    stats = normalize(open_source(cfg2, "des_deep"), "des_deep", cfg2["datasets"]["des_deep"], out, seed=1)
    rejects = pd.read_parquet(out / "rejects.parquet")
    assert stats["n_rejected"] == 16 and rejects["reason"].str.contains("outside").all()


def test_deepgravilens_pickle_with_wrong_checksum_is_never_loaded(tmp_path, dgl):
    srv, archive, truth, files = dgl
    cfg = _dgl_cfg(tmp_path, files)
    raw = tmp_path / "data" / "raw" / "des_deep"
    fetch_dataset(cfg, "des_deep", raw, FAST)
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))  # would create the sentinel file if unpickled

    mds = raw / "GROUP_2_mds_14.npy"
    mds.write_bytes(mds.read_bytes()[:128] + pickle.dumps(Evil(), protocol=2))
    with pytest.raises(DataError, match=r"GROUP_2_mds_14\.npy: checksum mismatch.*NOT loaded"):
        open_source(cfg, "des_deep")
    assert not sentinel.exists()


def test_deepgravilens_unloadable_old_pickle_fails_clearly(tmp_path, dgl):
    srv, archive, truth, files = dgl
    raw = tmp_path / "raw" / "des_deep"
    shutil.copytree(archive, raw)
    # An entry referencing a pandas class that no longer exists anywhere (not in pandas' own compat map).
    payload = b"\x80\x02cpandas.core.sparse.frame\nSparseDataFrame\nq\x00)\x81q\x01."
    hdr = (archive / "GROUP_1_mds_14.npy").read_bytes()[:128]
    (raw / "GROUP_1_mds_14.npy").write_bytes(hdr + payload)
    cfg = _dgl_cfg(tmp_path, file_specs(raw, None), placeholders={"action": "drop"})
    cfg["data_dir"] = str(tmp_path)
    with pytest.raises(DataError, match=r"GROUP_1_mds_14\.npy: the metadata pickle .* cannot be loaded with pandas 3"):
        open_source(cfg, "des_deep")


def test_deepgravilens_metadata_count_mismatch(tmp_path, dgl):
    srv, archive, truth, files = dgl
    raw = tmp_path / "raw" / "des_deep"
    shutil.copytree(archive, raw)
    meta = {i: pd.DataFrame({"PLANE_1-REDSHIFT-g": [0.3], "PLANE_2-REDSHIFT-g": [1.0]}) for i in range(5)}
    write_old_pickle_npy(raw / "GROUP_2_mds_14.npy", meta)
    cfg = _dgl_cfg(tmp_path, file_specs(raw, None))
    cfg["data_dir"] = str(tmp_path)
    with pytest.raises(DataError, match=r"GROUP_2_mds_14\.npy: 5 metadata entries for 48 images"):
        open_source(cfg, "des_deep")


# ------------------------------------------------------------------------------------------ SDSS
def test_sdss_download_verify_normalize(tmp_path):
    archive = tmp_path / "archive"
    table = write_sdss(archive, 90, labels="labels.parquet")
    with RangeServer(archive) as srv:
        source = {"kind": "sdss", "cube": "cube.npy", "labels": "labels.parquet", "files": file_specs(archive, srv.url)}
        cfg = _config(tmp_path, "sdss", source, ["u", "g", "r", "i", "z"], 64, scaling="none", label_range=[0.0, 0.4])
        ds = _run(cfg, "sdss")
    cube = np.load(archive / "cube.npy")
    cat = ds.catalog
    assert len(cat) == 90 and list(ds.bands) == ["u", "g", "r", "i", "z"]
    rows = cat.iloc[[0, 45, 89]]
    idx = [int(np.flatnonzero(table["objID"].astype(str) == o)[0]) for o in rows["object_id"]]
    np.testing.assert_array_equal(ds.images(rows), cube[idx].transpose(0, 3, 1, 2))  # channels last -> first
    np.testing.assert_allclose(rows["ebv"], table["EBV"].to_numpy()[idx])
    np.testing.assert_allclose(rows["z_lens"], table["z"].to_numpy()[idx])


def test_sdss_bad_inputs_are_named(tmp_path):
    raw = tmp_path / "raw" / "sdss"
    table = write_sdss(raw, 20)
    source = {"kind": "sdss", "cube": "cube.npy", "labels": "labels.csv", "files": file_specs(raw, None)}
    cfg = _config(tmp_path, "sdss", source, ["u", "g", "r", "i", "z"], 64, label_range=[0.0, 0.3])
    cfg["data_dir"] = str(tmp_path)
    table.loc[3, "z"] = 0.39  # outside label_range [0, 0.3]
    table.to_csv(raw / "labels.csv", index=False)
    cfg["datasets"]["sdss"]["source"]["files"] = file_specs(raw, None)
    with pytest.raises(DataError, match=rf"cube\.npy: object {table.loc[3, 'objID']}: label z_lens=0.39"):
        normalize(open_source(cfg, "sdss"), "sdss", cfg["datasets"]["sdss"], tmp_path / "p", seed=1)
    np.save(raw / "cube.npy", np.zeros((20, 5, 64, 64), np.float32))  # channels first: not the Pasquet form
    cfg["datasets"]["sdss"]["source"]["files"] = file_specs(raw, None)
    with pytest.raises(DataError, match=r"cube\.npy: cube has shape \(20, 5, 64, 64\).*channels first"):
        open_source(cfg, "sdss")
    (raw / "cube.npy").write_bytes(b"corrupted")
    with pytest.raises(DataError, match=r"cube\.npy: checksum mismatch"):
        open_source(cfg, "sdss")


# ------------------------------------------------------------------------------------------ KiDS
def _kids_cfg(tmp_path, catalog_spec, manifest_spec, **src):
    source = {"kind": "kids", "catalog": "candidates.fits", "files": [catalog_spec], "manifest": manifest_spec, **src}
    splits = {"train": 0.4, "val": 0.3, "test": 0.3}
    return _config(tmp_path, "kids", source, ["u", "g", "r", "i"], 45, scaling="none", splits=splits)


@pytest.fixture
def kids(tmp_path):
    archive = tmp_path / "archive"
    table = write_kids(archive, 24)
    with RangeServer(archive) as srv:
        specs = {s["name"]: s for s in file_specs(archive, srv.url)}
        cutouts = [s for n, s in specs.items() if n.startswith("cutouts/")]
        (archive / "manifest.csv").write_text(
            "name,url,size,sha256\n" + "".join(f"{s['name']},{s['url']},{s['size']},{s['sha256']}\n" for s in cutouts)
        )
        manifest = [s for s in file_specs(archive, srv.url) if s["name"] == "manifest.csv"][0]
        yield srv, archive, table, specs["candidates.fits"], manifest


def test_kids_download_verify_normalize_with_grades(tmp_path, kids):
    srv, archive, table, cat_spec, manifest = kids
    cfg = _kids_cfg(tmp_path, cat_spec, manifest, grades={"keep": ["A", "B"], "high_prob": ["A"]})
    ds = _run(cfg, "kids")
    assert len(srv.requests) == 2 + 24 * 4  # catalogue, manifest, every cutout once
    cat = ds.catalog
    assert len(cat) == 16 and set(cat["grade"]) == {"A", "B"}  # grade C left out
    assert (cat["high_prob_lens"] == (cat["grade"] == "A")).all()
    from astropy.io import fits

    row = cat.iloc[[0]]
    oid = row["object_id"].iloc[0]
    expect = np.stack([fits.getdata(archive / "cutouts" / f"{oid}_{b}.fits") for b in "ugri"])
    np.testing.assert_array_equal(ds.images(row)[0], expect)
    cfg = copy.deepcopy(cfg)
    cfg["test_sets"] = {
        "hpl": {"dataset": "kids", "table": "kids", "query": "high_prob_lens"},
        "general": {"dataset": "kids", "table": "kids", "query": "not high_prob_lens"},
    }
    hpl, general = (select_test_set(cfg, t, ds.root) for t in ("hpl", "general"))
    assert set(hpl["grade"]) == {"A"} and set(general["grade"]) == {"B"}
    assert len(hpl) + len(general) == (cat["split"] == "test").sum()


def _placed_kids(tmp_path, kids):
    srv, archive, table, cat_spec, manifest = kids
    cfg = _kids_cfg(tmp_path, cat_spec, manifest)
    raw = tmp_path / "data" / "raw" / "kids"
    fetch_dataset(cfg, "kids", raw, FAST)
    return cfg, raw, table


def test_kids_truncated_fits_is_named(tmp_path, kids):
    cfg, raw, table = _placed_kids(tmp_path, kids)
    oid = table["ID"].iloc[5]
    f = raw / "cutouts" / f"{oid}_g.fits"
    f.write_bytes(f.read_bytes()[:5000])
    cfg["datasets"]["kids"]["source"].pop("manifest")  # so the checksum does not catch it first
    cfg["datasets"]["kids"]["source"]["files"] = [s for s in file_specs(raw, None) if s["name"] == "candidates.fits"]
    with pytest.raises(DataError, match=rf"{oid}_g\.fits: object {oid}: unreadable or truncated FITS"):
        list(open_source(cfg, "kids").chunks(4))


def test_kids_missing_band_and_wrong_filter_keyword(tmp_path, kids):
    cfg, raw, table = _placed_kids(tmp_path, kids)
    cfg["datasets"]["kids"]["source"].pop("manifest")
    cfg["datasets"]["kids"]["source"]["files"] = [s for s in file_specs(raw, None) if s["name"] == "candidates.fits"]
    oid = table["ID"].iloc[2]
    (raw / "cutouts" / f"{oid}_u.fits").unlink()
    with pytest.raises(DataError, match=rf"{oid}_u\.fits: object {oid}: cutout for band u missing"):
        list(open_source(cfg, "kids").chunks(4))
    from astropy.io import fits

    fits.PrimaryHDU(np.ones((45, 45), np.float32), header=fits.Header([("FILTER", "z_SDSS")])).writeto(
        raw / "cutouts" / f"{oid}_u.fits"
    )
    with pytest.raises(DataError, match=rf"object {oid}: FILTER='z_SDSS', expected band u"):
        list(open_source(cfg, "kids").chunks(4))


def test_kids_manifest_checksum_catches_a_corrupted_cutout(tmp_path, kids):
    cfg, raw, table = _placed_kids(tmp_path, kids)
    f = raw / "cutouts" / f"{table['ID'].iloc[0]}_r.fits"
    f.write_bytes(f.read_bytes()[:-2880])
    with pytest.raises(DataError, match=r"_r\.fits: checksum mismatch: size"):
        list(open_source(cfg, "kids").chunks(4))
