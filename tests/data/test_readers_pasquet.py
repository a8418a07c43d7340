"""`source.kind: sdss` reading the Pasquet et al. (2019) `sdss.npz` as distributed (tests/formats_pasquet.py says
what is known of the real file and from where): the paper's selection from the labels' own fields, the right
image for every galaxy, the cube memory-mapped (or, deflated, streamed) never loaded whole, and clear errors."""

from __future__ import annotations

import copy
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from formats_pasquet import paper_rows, pasquet_cube, pasquet_labels, write_pasquet_npz
from realformats import file_specs

from deepred.contracts.config import ConfigError, validate_config
from deepred.contracts.processed import DataError, ProcessedDataset
from deepred.data.normalize import normalize
from deepred.data.sources import open_source

ROOT = Path(__file__).resolve().parents[2]
BANDS = ["u", "g", "r", "i", "z"]


def _cfg(tmp_path, **source):
    """The repository's config.yaml with one dataset `sdss` reading data/raw/sdss/sdss.npz (pinned)."""
    raw = tmp_path / "raw" / "sdss"
    src = {"kind": "sdss", "cube": "sdss.npz", "files": file_specs(raw, None), **source}
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["data_dir"] = str(tmp_path)
    cfg["datasets"] = {"sdss": {"source": src, "bands": BANDS, "cutout": 64, "label_column": "z_lens",
                                "label_range": [0.0, 0.4], "rows_per_shard": 16, "scaling": "none",
                                "splits": {"train": 0.4, "val": 0.3, "test": 0.3}}}
    cfg["test_sets"] = {"sdss": {"dataset": "sdss", "table": "sdss"}}
    return validate_config(cfg)


def _rows_and_peak(src, rows=8) -> tuple[int, int]:
    """(images read, peak traced bytes) of reading the whole source `rows` at a time."""
    tracemalloc.start()
    try:
        n = sum(len(c.images) for c in src.chunks(rows))
        return n, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _read_all(src, rows=7):
    chunks = list(src.chunks(rows))
    return pd.concat([c.truth for c in chunks], ignore_index=True), np.concatenate([c.images for c in chunks])


@pytest.fixture
def npz(tmp_path):
    return write_pasquet_npz(tmp_path / "raw" / "sdss" / "sdss.npz", n=60)


def test_npz_reads_with_the_paper_selection(tmp_path, npz):
    cube, labels = npz
    keep = paper_rows(labels)
    assert 0 < len(keep) < len(labels) and 2 in keep and not {1, 3, 4} & set(keep)  # the edges: r = 17.8 kept
    src = open_source(_cfg(tmp_path), "sdss")
    assert src.n_objects == len(keep) and src.bands == BANDS
    truth, images = _read_all(src)
    assert list(truth["object_id"]) == [str(v) for v in labels["objID"][keep]]
    np.testing.assert_array_equal(truth["z_lens"], labels["z"][keep])
    np.testing.assert_array_equal(truth["z_spec"], labels["z"][keep])
    np.testing.assert_array_equal(truth["ebv"], labels["EBV"][keep])
    np.testing.assert_array_equal(images, cube[keep].transpose(0, 3, 1, 2))  # channels last -> first, right rows
    assert src.meta["id_from"] == "objID" and src.meta["n_rows"] == 60 and src.meta["n_selected"] == len(keep)
    assert src.meta["cube_access"] == "memory-mapped"


def test_npz_normalizes_end_to_end(tmp_path, npz):
    cube, labels = npz
    cfg = _cfg(tmp_path)
    normalize(open_source(cfg, "sdss"), "sdss", cfg["datasets"]["sdss"], tmp_path / "proc", seed=3, config=cfg)
    ds = ProcessedDataset(tmp_path / "proc")
    keep = paper_rows(labels)
    assert len(ds.catalog) == len(keep)
    rows = ds.catalog.iloc[[0, len(keep) - 1]]
    idx = [int(np.flatnonzero(labels["objID"].astype(str) == o)[0]) for o in rows["object_id"]]
    np.testing.assert_array_equal(ds.images(rows), cube[idx].transpose(0, 3, 1, 2))


def test_npz_cube_is_memory_mapped_and_read_a_chunk_at_a_time(tmp_path):
    from deepred.data.readers.sdss_npz import member_memmap, open_member

    path = tmp_path / "raw" / "sdss" / "sdss.npz"
    cube, _ = write_pasquet_npz(path, n=200)
    member = open_member(path, "cube")
    mm = member_memmap(member)
    assert isinstance(mm, np.memmap) and mm.shape == (200, 64, 64, 5) and member.stored
    np.testing.assert_array_equal(mm[[5, 150]], cube[[5, 150]])  # the data offset is right
    n, peak = _rows_and_peak(open_source(_cfg(tmp_path, selection=None), "sdss"))
    assert n == 200 and peak < cube.nbytes / 8, f"peak {peak} bytes for a {cube.nbytes}-byte cube"


def test_npz_deflated_cube_is_streamed_to_the_same_galaxies(tmp_path, npz):
    cube, labels = npz
    stored_truth, stored_images = _read_all(open_source(_cfg(tmp_path), "sdss"))
    other = tmp_path / "deflated"
    write_pasquet_npz(other / "raw" / "sdss" / "sdss.npz", cube=cube, labels=labels, compressed=True)
    src = open_source(_cfg(other), "sdss")
    assert src.meta["cube_access"].startswith("streamed")
    truth, images = _read_all(src, rows=5)
    pd.testing.assert_frame_equal(truth, stored_truth)
    np.testing.assert_array_equal(images, stored_images)


def test_npz_deflated_stream_holds_one_chunk(tmp_path):
    path = tmp_path / "raw" / "sdss" / "sdss.npz"
    cube, _ = write_pasquet_npz(path, n=200, compressed=True)
    n, peak = _rows_and_peak(open_source(_cfg(tmp_path, selection=None), "sdss"))
    assert n == 200 and peak < cube.nbytes / 4, f"peak {peak} bytes for a {cube.nbytes}-byte cube"


def test_npz_selection_options(tmp_path, npz):
    _, labels = npz
    assert open_source(_cfg(tmp_path, selection=None), "sdss").n_objects == 60
    src = open_source(_cfg(tmp_path, selection={"z_max": 0.3, "mag_max": 18.5}), "sdss")
    z, r = labels["z"], labels["dered_petro_r"]
    assert src.n_objects == int(((z < 0.3) & (r <= 18.5)).sum())


@pytest.mark.parametrize(
    ("drop", "id_from", "first_id"),
    [(("objID",), "specObjID", lambda lab, i: str(lab["specObjID"][i])), (("objID", "specObjID"), "row index", lambda lab, i: f"row{i}")],
)
def test_npz_ids_without_objid(tmp_path, drop, id_from, first_id):
    _, labels = write_pasquet_npz(tmp_path / "raw" / "sdss" / "sdss.npz", n=40, drop=drop)
    src = open_source(_cfg(tmp_path), "sdss")
    truth, _ = _read_all(src)
    assert src.meta["id_from"] == id_from and truth["object_id"].iloc[0] == first_id(labels, int(paper_rows(labels)[0]))


def test_npz_missing_field_is_named(tmp_path):
    write_pasquet_npz(tmp_path / "raw" / "sdss" / "sdss.npz", n=12, drop=("dered_petro_r",))
    with pytest.raises(DataError, match=r"sdss\.npz \(member labels\.npy\): field\(s\) dered_petro_r missing .*selection.*"
                                        r"the labels have specObjID, objID, ra"):
        open_source(_cfg(tmp_path), "sdss")
    with pytest.raises(DataError, match=r"field\(s\) E_BV missing"):
        open_source(_cfg(tmp_path, ebv_column="E_BV", selection=None), "sdss")
    with pytest.raises(DataError, match=r"field\(s\) bestObjID missing \(source\.id_column\)"):
        open_source(_cfg(tmp_path, id_column="bestObjID", selection=None), "sdss")


def test_npz_wrong_shapes_are_named(tmp_path):
    raw = tmp_path / "raw" / "sdss"
    cube = pasquet_cube(10)
    write_pasquet_npz(raw / "sdss.npz", cube=np.ascontiguousarray(cube.transpose(0, 3, 1, 2)))
    with pytest.raises(DataError, match=r"sdss\.npz \(member cube\.npy\): cube has shape \(10, 5, 64, 64\).*channels first"):
        open_source(_cfg(tmp_path), "sdss")
    write_pasquet_npz(raw / "sdss.npz", cube=cube, labels=pasquet_labels(9))
    with pytest.raises(DataError, match=r"member labels\.npy\).*shape \(9,\), expected a record array of 10 rows"):
        open_source(_cfg(tmp_path), "sdss")
    np.savez(raw / "sdss.npz", cube=cube, labels=np.zeros(10))
    with pytest.raises(DataError, match=r"float64 array of shape \(10,\), expected a record array"):
        open_source(_cfg(tmp_path), "sdss")


def test_npz_bad_containers_are_named(tmp_path):
    raw = tmp_path / "raw" / "sdss"
    raw.mkdir(parents=True)
    np.savez(raw / "sdss.npz", images=pasquet_cube(4), labels=pasquet_labels(4))
    with pytest.raises(DataError, match=r"sdss\.npz: no member 'cube' \(the npz holds: images, labels\)"):
        open_source(_cfg(tmp_path), "sdss")
    (raw / "sdss.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=r"sdss\.npz: not an \.npz \(zip\) file"):
        open_source(_cfg(tmp_path), "sdss")
    np.savez(raw / "sdss.npz", cube=pasquet_cube(4), labels=np.array([{"z": 0.1}] * 4, dtype=object))
    with pytest.raises(DataError, match=r"member labels\.npy\): holds Python objects"):
        open_source(_cfg(tmp_path), "sdss")


def test_npz_truncated_or_changed_file_is_refused(tmp_path, npz):
    cfg = _cfg(tmp_path)
    path = tmp_path / "raw" / "sdss" / "sdss.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"sdss\.npz"):  # the pinned checksum (and size) no longer match
        open_source(cfg, "sdss")
    from deepred.data.readers.sdss_npz import open_member

    with pytest.raises(DataError, match=r"sdss\.npz: not an \.npz|truncated"):  # unpinned: the reader's own check
        open_member(path, "cube")


def test_npz_config_is_checked(tmp_path, npz):
    cfg = _cfg(tmp_path)
    assert "labels" not in cfg["datasets"]["sdss"]["source"]
    bad = copy.deepcopy(cfg)
    bad["datasets"]["sdss"]["source"]["labels"] = "labels.csv"
    with pytest.raises(ConfigError, match=r"datasets\.sdss\.source\.labels.*leave labels out"):
        validate_config(bad)
    npy = copy.deepcopy(cfg)
    npy["datasets"]["sdss"]["source"].update(cube="cube.npy", selection=None)
    with pytest.raises(ConfigError, match=r"'labels' is a required property"):
        validate_config(npy)
    npy["datasets"]["sdss"]["source"]["labels"] = "labels.csv"
    with pytest.raises(ConfigError, match=r"datasets\.sdss\.source\.selection.*for an \.npz cube only"):
        validate_config(npy)
    del npy["datasets"]["sdss"]["source"]["selection"]
    validate_config(npy)  # the old form (NPY cube + label table) stays valid
