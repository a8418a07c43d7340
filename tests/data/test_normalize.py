"""Normalization into the data contract: round trip, splits by system, and one test per bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import make_tiny_raw, tiny_config
from deepred.contracts.processed import DataError, ProcessedDataset
from deepred.contracts.processed import test_set_rows as select_test_set
from deepred.data.normalize import assign_splits, normalize, scale_images, scaling_for_bands, unscale_images
from deepred.contracts.raw import read_simulated


def write_raw_folder(folder, n=40, bands=("g", "r", "i", "z"), cutout=24, copies=1):
    """make_tiny_raw, with every `copies` consecutive rows one system (like DeepGraviLens' rotated copies)."""
    raw = make_tiny_raw(folder, n=n, bands=bands, cutout=cutout)
    truth = pd.read_parquet(raw / "truth.parquet")
    truth["system_id"] = [f"sys{i // copies:05d}" for i in range(n)]
    truth.to_parquet(raw / "truth.parquet", index=False)
    return raw


def run(tmp_path, raw, **overrides):
    cfg = tiny_config({"t": {"cutout": 24}})["datasets"]["t"]
    cfg.update(overrides)
    out = tmp_path / "processed"
    stats = normalize(read_simulated(raw), "t", cfg, out, seed=3)
    return out, stats


def test_shards_read_back_identical_to_what_was_written(tmp_path):
    raw = write_raw_folder(tmp_path / "raw", n=150)
    out, stats = run(tmp_path, raw, rows_per_shard=64, scaling="none")
    ds = ProcessedDataset(out)
    cat = ds.catalog
    assert len(cat) == 150 and stats["n_shards"] == 3
    written = np.load(raw / "images.npy")
    order = cat["object_id"].str[3:].astype(int).to_numpy()
    np.testing.assert_array_equal(ds.images(cat), written[order])
    np.testing.assert_array_equal(ds.masks(cat), np.load(raw / "masks.npy")[order])
    shard0 = np.load(out / "shards" / "images_00000.npy", mmap_mode="r")
    assert isinstance(shard0, np.memmap) and shard0.dtype == np.float32 and shard0.shape == (64, 4, 24, 24)
    assert set(cat["split"]) == {"train", "val", "test"}
    assert stats["provenance"]["inputs"], "input checksums recorded"


def test_no_system_in_two_splits(tmp_path):
    raw = write_raw_folder(tmp_path / "raw", n=400, copies=8)  # 8 rotated/mirrored copies per system
    out, _ = run(tmp_path, raw)
    cat = ProcessedDataset(out).catalog
    per_system = cat.groupby("system_id")["split"].nunique()
    assert per_system.max() == 1
    assert cat["system_id"].nunique() == 50


def test_split_assignment_is_deterministic_and_near_fractions():
    ids = [f"s{i}" for i in range(20000)]
    a = assign_splits(ids, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=1)
    b = assign_splits(ids, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=1)
    assert (a == b).all()
    frac = pd.Series(a).value_counts(normalize=True)
    assert abs(frac["train"] - 0.7) < 0.02 and abs(frac["test"] - 0.15) < 0.02


def test_scalings_are_finite_and_recorded(tmp_path):
    raw = write_raw_folder(tmp_path / "raw", n=60)
    images = np.load(raw / "images.npy")
    mm = scale_images(images, {"method": "minmax"})
    assert mm.min() == 0.0 and mm.max() == 1.0
    _, stats = run(tmp_path, raw, scaling="minmax")
    assert stats["scaling"]["method"] == "minmax"
    out, stats = run(tmp_path, raw, scaling="asinh")
    soft = np.asarray(stats["scaling"]["softening"])
    # the fixture's sky noise is 1.0 in every band
    np.testing.assert_allclose(soft, 1.0, rtol=0.1)
    ds = ProcessedDataset(out)
    np.testing.assert_allclose(ds.images(ds.catalog[:3]), np.arcsinh(images[:3] / soft[None, :, None, None]), rtol=1e-5)
    with pytest.raises(ValueError, match="unknown scaling"):
        scale_images(images, {"method": "log"})


def test_asinh_scaling_keeps_colours(tmp_path):
    """One softening per band for the whole dataset: two objects of equal colour but different brightness
    keep the same band difference in their bright cores (a per-image noise estimate would not)."""
    img = np.zeros((2, 2, 9, 9), np.float32)
    img[0, :, 4, 4] = [1000.0, 2000.0]
    img[1, :, 4, 4] = [4000.0, 8000.0]
    scaled = scale_images(img, {"method": "asinh", "softening": [1.0, 1.0]})
    colour = scaled[:, 1, 4, 4] - scaled[:, 0, 4, 4]
    np.testing.assert_allclose(colour, np.log(2.0), atol=1e-3)


def _corrupt(raw, fn):
    images = np.load(raw / "images.npy")
    truth = pd.read_parquet(raw / "truth.parquet")
    images, truth = fn(images, truth)
    np.save(raw / "images.npy", images)
    truth.to_parquet(raw / "truth.parquet", index=False)


def nan_pixels(images, truth):
    images[5, 2, 3, 3] = np.nan
    return images, truth


def inf_pixels(images, truth):
    images[5, 0, 0, 0] = np.inf
    return images, truth


def label_out_of_range(images, truth):
    truth.loc[5, "z_lens"] = 7.5
    return images, truth


def duplicate_id(images, truth):
    truth.loc[5, "object_id"] = truth.loc[4, "object_id"]
    return images, truth


@pytest.mark.parametrize(
    "corrupt, expected",
    [
        (nan_pixels, "non-finite pixels (NaN or inf) in band(s) i"),
        (inf_pixels, "non-finite pixels (NaN or inf) in band(s) g"),
        (label_out_of_range, "label z_lens=7.5 outside [0.0, 4.0]"),
        (duplicate_id, "duplicate object_id"),
    ],
)
def test_bad_object_errors_name_file_object_and_problem(tmp_path, corrupt, expected):
    raw = write_raw_folder(tmp_path / "raw", n=40)
    _corrupt(raw, corrupt)
    with pytest.raises(DataError) as err:
        run(tmp_path, raw)
    msg = str(err.value)
    bad_id = "obj00004" if corrupt is duplicate_id else "obj00005"  # the second holder of an id is the duplicate
    assert "images.npy" in msg and f"object {bad_id}" in msg and expected in msg
    # nothing half-written: no catalogue, no shard folder
    assert not (tmp_path / "processed" / "catalog.parquet").exists()
    assert not (tmp_path / "processed" / "shards").exists()


@pytest.mark.parametrize("corrupt", [nan_pixels, label_out_of_range, duplicate_id])
def test_skip_mode_moves_bad_objects_to_rejects(tmp_path, corrupt):
    raw = write_raw_folder(tmp_path / "raw", n=40)
    _corrupt(raw, corrupt)
    out, stats = run(tmp_path, raw, on_bad="skip")
    rejects = pd.read_parquet(out / "rejects.parquet")
    assert list(rejects["object_id"]) == ["obj00005" if corrupt is not duplicate_id else "obj00004"]
    assert rejects["reason"].str.len().min() > 5
    assert stats["n_objects"] == 39 and stats["n_rejected"] == 1


def test_wrong_shape_is_an_error(tmp_path):
    raw = write_raw_folder(tmp_path / "raw", n=20, cutout=20)
    with pytest.raises(DataError, match=r"images.npy: images have shape \(20, 4, 20, 20\), expected \(n, 4, 24, 24\)"):
        run(tmp_path, raw)


def test_missing_band_is_an_error(tmp_path):
    raw = write_raw_folder(tmp_path / "raw", n=20, bands=("g", "r", "i"))
    with pytest.raises(DataError, match=r"band\(s\) z missing; the source has g, r, i"):
        run(tmp_path, raw)


def test_truncated_npy_is_an_error(tmp_path):
    raw = write_raw_folder(tmp_path / "raw", n=20)
    data = (raw / "images.npy").read_bytes()
    (raw / "images.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="images.npy"):
        read_simulated(raw)


def test_empty_split_is_an_error(tmp_path):
    raw = write_raw_folder(tmp_path / "raw", n=6, copies=6)  # one system -> only one split can be filled
    with pytest.raises(DataError, match=r"split\(s\) .* empty"):
        run(tmp_path, raw)


def test_test_set_rows_apply_query(tiny_dataset):
    config = {"test_sets": {"hpl": {"dataset": "tiny", "table": "t", "query": "high_prob_lens"}}}
    rows = select_test_set(config, "hpl", tiny_dataset)
    assert len(rows) > 0 and rows["high_prob_lens"].all() and (rows["split"] == "test").all()


def test_unscale_inverts_asinh_and_rescales_between_datasets():
    rng = np.random.default_rng(0)
    flux = rng.normal(0, 5, (3, 2, 8, 8)).astype(np.float32)
    a = {"method": "asinh", "softening": [0.5, 2.0]}
    b = {"method": "asinh", "softening": [1.5, 0.7]}
    np.testing.assert_allclose(unscale_images(scale_images(flux, a), a), flux, rtol=1e-4, atol=1e-4)
    # cutouts scaled for dataset A, re-expressed as dataset B's training data was scaled
    np.testing.assert_allclose(scale_images(unscale_images(scale_images(flux, a), a), b), scale_images(flux, b),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="not invertible"):
        unscale_images(flux, {"method": "minmax"})
    sub = scaling_for_bands({"method": "asinh", "softening": [1, 2, 3]}, ["g", "r", "i"], ["i", "g"])
    assert sub["softening"] == [3, 1]
