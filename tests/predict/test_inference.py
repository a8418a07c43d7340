"""deepred.predict.inputs and deepred.predict.own_cutouts: readers of users' cutouts (FITS folders, MEF, cubes, NPY,
catalogues), rejects, pixel-scale checks, model resolution, and predictions equal to the pipeline's for the same pixels.

Real files throughout: a tiny dataset normalized from a raw folder (conftest), real tiny networks trained
with deepred.training.train.train_model, a real HOG+SVR, FITS written with astropy.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from conftest import tiny_config
from deepred.contracts.processed import ProcessedDataset
from deepred.predict.own_cutouts import InferenceError, load_predictor, predict_cutouts, resolve_model_dir
from deepred.predict.inputs import header_pixel_scale, match_band, open_input, parse_band_map
from deepred.models.checkpoint import load_trained
from deepred.predict.splits import predict_rows
from own_cutouts import BANDS, SCALE, train_tiny, raw_of, band_header, write_band_files, write_mef  # noqa: F401


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_dataset) -> Path:
    return train_tiny(tmp_path_factory.mktemp("results"), tiny_dataset)


@pytest.fixture(scope="module")
def test_rows(tiny_dataset) -> pd.DataFrame:
    return ProcessedDataset(tiny_dataset).split("test").iloc[:8].reset_index(drop=True)


def pipeline_predictions(model_dir: Path, processed: Path, rows: pd.DataFrame) -> dict:
    """The pipeline's path: normalized shards -> deepred.predict.splits.predict_rows."""
    df = predict_rows(model_dir, processed, rows)
    out = {c: df[c].to_numpy() for c in df.columns if c.startswith("z_")}
    if "pdf" in df:
        out["pdf"] = np.stack(df["pdf"].to_numpy())
    return out


def test_fits_folder_per_band_matches_pipeline(results, tiny_dataset, test_rows, tmp_path):
    images, truth = raw_of(tiny_dataset)
    idx = truth.reset_index().set_index("object_id").loc[test_rows["object_id"], "index"].to_numpy()
    folder = tmp_path / "cutouts"
    for oid, i in zip(test_rows["object_id"], idx):
        write_band_files(folder, oid, images[i])
    pred = load_predictor("photoz/tiny", results, device="cpu")
    items, total, kind = open_input(folder, pred.bands)
    assert (total, kind) == (len(test_rows), "fits folder")
    out = tmp_path / "z.parquet"
    summary = predict_cutouts(pred, items, out, with_pdf=True, batch_size=3, total=total, progress=False)
    assert (summary.n_ok, summary.n_rejected) == (len(test_rows), 0)
    got = pd.read_parquet(out).set_index("object_id").loc[test_rows["object_id"]]
    ref = pipeline_predictions(results / "models" / "photoz" / "tiny", tiny_dataset, test_rows)
    for col in ("z_pred", "z_mean", "z_median", "z_mode", "z_lo68", "z_hi68"):
        np.testing.assert_allclose(got[col].to_numpy(), ref[col], rtol=1e-5, atol=1e-6, err_msg=col)
    np.testing.assert_allclose(np.stack(got["pdf"].to_numpy()), ref["pdf"], atol=1e-6)
    # streamed: one Parquet row group per batch of 3, grid in the metadata
    meta = pq.ParquetFile(out)
    assert meta.metadata.num_row_groups == -(-len(test_rows) // 3)
    grid = json.loads(meta.schema_arrow.metadata[b"deepred_pdf_grid"])
    np.testing.assert_allclose(grid, load_trained(results / "models" / "photoz" / "tiny").grid)
    prov = json.loads((tmp_path / "z.parquet.provenance.json").read_text())
    assert prov["summary"]["n_ok"] == len(test_rows) and prov["weights_sha256"]


def test_mef_cube_npy_and_catalogues_agree(results, tiny_dataset, test_rows, tmp_path):
    """One object per MEF (bands shuffled, found by FILTER), a 3-D cube, an NPY cube and three catalogue
    formats all give the pipeline's numbers for a point model."""
    images, truth = raw_of(tiny_dataset)
    idx = truth.reset_index().set_index("object_id").loc[test_rows["object_id"], "index"].to_numpy()
    ids = list(test_rows["object_id"])
    mef, cube = tmp_path / "mef", tmp_path / "cube"
    cube.mkdir()
    for oid, i in zip(ids, idx):
        write_mef(mef / f"{oid}.fits", images[i], order=[2, 0, 3, 1])
        h = fits.Header()
        for k, b in enumerate(["z", "i", "r", "g"]):
            h[f"BAND{k + 1}"] = b
        fits.PrimaryHDU(np.ascontiguousarray(images[i][::-1], np.float32), header=h).writeto(cube / f"{oid}.fits")
    npy = tmp_path / "cube.npy"
    np.save(npy, np.asarray(images[idx][:, [1, 0, 2, 3]], np.float32))  # r,g,i,z order
    (tmp_path / "ids.txt").write_text("object_id\n" + "\n".join(ids) + "\n")
    cat = pd.DataFrame({"object_id": ids, "file": [f"mef/{o}.fits" for o in ids]})
    cat.to_csv(tmp_path / "cat.csv", index=False)
    per_band = pd.DataFrame({"id": ids, **{f"file_{b}": [str(tmp_path / "pb" / f"{o}_{b}.fits") for o in ids]
                                           for b in BANDS}})
    for oid, i in zip(ids, idx):
        write_band_files(tmp_path / "pb", oid, images[i])
    per_band.to_parquet(tmp_path / "cat.parquet")
    fits.BinTableHDU.from_columns([fits.Column("OBJECT_ID", "20A", array=np.array(ids)),
                                   fits.Column("FILE", "40A", array=np.array(cat["file"]))]).writeto(tmp_path / "cat.fits")

    pred = load_predictor(results / "models" / "netz" / "tiny", device="cpu")
    ref = pipeline_predictions(pred.model_dir, tiny_dataset, test_rows)["z_pred"]
    cases = [(mef, {}), (cube, {}), (npy, {"band_order": ["r", "g", "i", "z"], "ids_file": tmp_path / "ids.txt"}),
             (tmp_path / "cat.csv", {}), (tmp_path / "cat.parquet", {}), (tmp_path / "cat.fits", {})]
    for k, (src, kw) in enumerate(cases):
        items, total, kind = open_input(src, pred.bands, **kw)
        out = tmp_path / f"out{k}.csv"
        s = predict_cutouts(pred, items, out, total=total, progress=False)
        assert s.n_rejected == 0, (src, pd.read_csv(s.rejects))
        got = pd.read_csv(out, dtype={"object_id": str}).set_index("object_id").loc[ids, "z_pred"].to_numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, err_msg=f"{src} ({kind})")


def test_bad_objects_go_to_rejects_and_good_ones_are_written(results, tiny_dataset, tmp_path, caplog):
    images, truth = raw_of(tiny_dataset)
    folder = tmp_path / "in"
    write_band_files(folder, "good1", images[0])
    write_band_files(folder, "good2", images[1])
    nan = np.array(images[2], np.float32)
    nan[1, 3, 4] = np.nan
    write_band_files(folder, "nanpix", nan)
    write_band_files(folder, "big", np.pad(images[3], ((0, 0), (2, 2), (2, 2))))
    write_band_files(folder, "noz", images[4], bands=["g", "r", "i"])
    fits.PrimaryHDU(np.asarray(images[5][0], np.float32), header=band_header("u")).writeto(folder / "good1_u.fits")
    fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.ones(3))]).writeto(folder / "table.fits")
    (folder / "junk.fits").write_text("this is not FITS")
    write_band_files(folder, "liar", images[6])
    fits.PrimaryHDU(np.asarray(images[6][1], np.float32), header=band_header("r")).writeto(
        folder / "liar_g.fits", overwrite=True)  # file says g, header says r
    pred = load_predictor("netz/tiny", results, device="cpu")
    items, total, _ = open_input(folder, pred.bands)
    out = tmp_path / "z.parquet"
    with caplog.at_level(logging.WARNING, logger="deepred"):
        s = predict_cutouts(pred, items, out, total=total, progress=False)
    got = pd.read_parquet(out)
    assert set(got["object_id"]) == {"good1", "good2"}  # good1_u.fits: a band the model does not use
    rej = pd.read_csv(s.rejects).set_index("object_id")
    assert s.n_rejected == len(rej) == 6
    assert "non-finite" in rej.loc["nanpix", "reason"] and "band(s) r" in rej.loc["nanpix", "reason"]
    assert "49x49" in rej.loc["big", "reason"] and "45x45" in rej.loc["big", "reason"]
    assert "band(s) z missing" in rej.loc["noz", "reason"]
    assert "not a FITS image" in rej.loc["table", "reason"] and rej.loc["table", "file"].endswith("table.fits")
    assert "not a readable FITS file" in rej.loc["junk", "reason"]
    assert "names band r" in rej.loc["liar", "reason"] and rej.loc["liar", "file"].endswith("liar_g.fits")
    assert "junk.fits" in caplog.text  # each reject is also logged with its file
    # --crop rescues the oversized cutout (center crop back to 45x45 gives the original pixels)
    items, _, _ = open_input(folder, pred.bands)
    s2 = predict_cutouts(pred, items, tmp_path / "crop.csv", crop=True, progress=False)
    crop = pd.read_csv(tmp_path / "crop.csv").set_index("object_id")
    ref = pred.predict_raw(np.asarray(images[3:4], np.float32))["z_pred"][0]
    assert s2.n_ok == 3 and crop.loc["big", "z_pred"] == pytest.approx(ref, rel=1e-5)


def test_whole_input_errors_name_the_file(results, tmp_path):
    pred = load_predictor("netz/tiny", results, device="cpu")
    npy = tmp_path / "c.npy"
    np.save(npy, np.zeros((2, 3, 45, 45), np.float32))
    with pytest.raises(InferenceError, match=r"c\.npy: 3 bands per cutout"):
        open_input(npy, pred.bands)
    with pytest.raises(InferenceError, match=r"band\(s\) z missing"):
        open_input(npy, pred.bands, band_order=["g", "r", "i"])
    pd.DataFrame({"object_id": ["a"], "file_g": ["a_g.fits"], "file_r": ["a_r.fits"]}).to_csv(tmp_path / "c.csv")
    with pytest.raises(InferenceError, match=r"c\.csv: band\(s\) i, z missing: no column file_i, file_z"):
        open_input(tmp_path / "c.csv", pred.bands)
    with pytest.raises(InferenceError, match="nothere: input not found"):
        open_input(tmp_path / "nothere", pred.bands)
    with pytest.raises(InferenceError, match="--pdf asked"):
        predict_cutouts(pred, iter([]), tmp_path / "o.parquet", with_pdf=True, progress=False)


def test_model_resolution_and_checksum(results, tmp_path):
    assert resolve_model_dir("netz/tiny", results) == results / "models" / "netz" / "tiny"
    with pytest.raises(InferenceError, match=r"model 'resnet/tiny' not found.*netz/tiny, photoz/tiny"):
        resolve_model_dir("resnet/tiny", results)
    with pytest.raises(InferenceError, match="no trained models under"):
        resolve_model_dir("netz/tiny", tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(results / "models" / "netz" / "tiny", broken)
    weights = broken / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InferenceError, match=r"broken/model\.safetensors: SHA-256 .* does not match"):
        load_predictor(broken, device="cpu")


def test_pixel_scale_mismatch_warns_with_both_numbers(results, tiny_dataset, tmp_path, caplog):
    images, _ = raw_of(tiny_dataset)
    write_band_files(tmp_path / "in", "a", images[0], scale=0.396)
    write_band_files(tmp_path / "in", "b", images[1], scale=0.396)
    pred = load_predictor("netz/tiny", results, device="cpu")
    with caplog.at_level(logging.WARNING, logger="deepred"):
        s = predict_cutouts(pred, open_input(tmp_path / "in", pred.bands)[0], tmp_path / "o.csv", progress=False)
    assert s.n_ok == 2 and s.pixel_scales == {"0.396": 2}
    assert '0.396"/px' in caplog.text and '0.263"/px' in caplog.text
    assert caplog.text.count("differs from the training data") == 1  # once per distinct scale, not per object


def test_hogsvr_model_works_too(tiny_dataset, tmp_path):
    from deepred.baselines.hogsvr import train_hogsvr

    cfg = tiny_config({"tiny": {"n": 240}}, data_dir=tiny_dataset.parent.parent)
    cfg["baselines"]["hogsvr"].update(C=[1.0], epsilon=[0.05], gamma_scale=[1.0], max_train_rows=80)
    model_dir = tmp_path / "models" / "hogsvr" / "tiny"
    model = train_hogsvr("tiny", cfg, tiny_dataset, model_dir)
    images, truth = raw_of(tiny_dataset)
    rows = ProcessedDataset(tiny_dataset).split("test").iloc[:4]
    for oid in rows["object_id"]:
        write_band_files(tmp_path / "in", oid, images[int(truth.index[truth["object_id"] == oid][0])])
    pred = load_predictor("hogsvr/tiny", tmp_path, device="cpu")
    assert (pred.kind, pred.pixel_scale, pred.scaling["method"]) == ("hogsvr", SCALE, "asinh")
    assert len(pred.scaling["softening"]) == 4
    s = predict_cutouts(pred, open_input(tmp_path / "in", pred.bands)[0], tmp_path / "o.parquet", progress=False)
    got = pd.read_parquet(tmp_path / "o.parquet").set_index("object_id").loc[rows["object_id"], "z_pred"]
    ref = model.predict_images(ProcessedDataset(tiny_dataset).images(rows))
    assert s.n_ok == 4
    np.testing.assert_allclose(got.to_numpy(), ref, rtol=1e-9)


def test_band_matching_and_header_pixel_scale():
    assert match_band("g DECam SDSS c0001 4720.0 1520.0", BANDS) == "g"
    assert match_band("HSC-G", BANDS) == "g" and match_band("R", BANDS) == "r"
    assert match_band("OCAM_g_SDSS", BANDS, parse_band_map(["OCAM_g_SDSS=r"])) == "r"
    assert match_band("VR DECam", BANDS) is None and match_band("g+r", BANDS) is None
    with pytest.raises(InferenceError, match="expected VALUE=BAND"):
        parse_band_map(["HSC-G"])
    assert header_pixel_scale(band_header("g", 0.2637)) == pytest.approx(0.2637)
    assert header_pixel_scale(fits.Header({"CDELT1": -0.2 / 3600, "CDELT2": 0.2 / 3600})) == pytest.approx(0.2)
    assert header_pixel_scale(fits.Header({"PIXSCALE": 0.396})) == pytest.approx(0.396)
    assert header_pixel_scale(fits.Header({"NAXIS": 2})) is None


def test_ensemble_model_works_too(results, tiny_dataset, test_rows, tmp_path):
    """A stacked ensemble of two tiny point networks (deepred.predict.ensemble's format) predicts raw cutouts too.

    (Point members only: a barely trained PDF member is near-constant and gets a weight ~1e4, which
    magnifies float32 batch-size noise beyond any fixed tolerance.)"""
    from deepred.predict.ensemble import fit_ensembles
    from deepred.predict.splits import calibrate_model, predict_model, read_predictions

    shared = results
    results = tmp_path / "results"
    shutil.copytree(shared / "models" / "netz" / "tiny", results / "models" / "netz" / "tiny")
    train_tiny(results, tiny_dataset, models=("a1",))
    cfg = tiny_config({"tiny": {"n": 240}}, data_dir=tiny_dataset.parent.parent, results_dir=results)
    models = results / "models"
    paths = {m: tmp_path / "pred" / m / "tiny.parquet" for m in ("netz", "a1")}
    for m, p in paths.items():
        calibrate_model(models / m / "tiny", tiny_dataset, cfg)  # members with PDFs: the ensembles mix them
        predict_model(models / m / "tiny", tiny_dataset, p)
    fit_ensembles("tiny", cfg, paths, models, tmp_path / "pred")
    images, truth = raw_of(tiny_dataset)
    idx = truth.reset_index().set_index("object_id").loc[test_rows["object_id"], "index"].to_numpy()
    np.save(tmp_path / "c.npy", np.asarray(images[idx], np.float32))
    (tmp_path / "ids.txt").write_text("\n".join(test_rows["object_id"]) + "\n")
    pred = load_predictor("ensemble_stacked/tiny", results, device="cpu")
    assert pred.kind == "ensemble" and pred.head == "point" and pred.gives_pdf
    items, total, _ = open_input(tmp_path / "c.npy", pred.bands, ids_file=tmp_path / "ids.txt")
    predict_cutouts(pred, items, tmp_path / "o.parquet", total=total, progress=False, with_pdf=True)
    got = pd.read_parquet(tmp_path / "o.parquet").set_index("object_id")
    ref, grid = read_predictions(tmp_path / "pred" / "ensemble_stacked" / "tiny.parquet")
    ref, ids = ref.set_index("object_id"), list(test_rows["object_id"])
    np.testing.assert_allclose(got.loc[ids, "z_pred"].to_numpy(), ref.loc[ids, "z_pred"].to_numpy(), rtol=1e-5,
                               atol=1e-6)
    # its PDF: the members' calibrated PDFs mixed with the stacking weights, recalibrated (fitted on val rows)
    np.testing.assert_allclose(np.stack(got.loc[ids, "pdf"].to_numpy()), np.stack(ref.loc[ids, "pdf"].to_numpy()),
                               atol=1e-5)
    np.testing.assert_allclose(grid, pred.grid)


def test_calibrated_point_network_gives_the_pipelines_pdfs(results, tiny_dataset, test_rows, tmp_path):
    """A point head calibrated on the validation rows (deepred.predict.splits.calibrate_model): z_pred unchanged to the
    bit, a PDF on the calibration's grid through load_model, and deepred predict gives the pipeline's PDFs."""
    from deepred.predict.splits import calibrate_model
    from deepred.predict.predictor import load_model

    model_dir = tmp_path / "models" / "netz" / "tiny"
    shutil.copytree(results / "models" / "netz" / "tiny", model_dir)
    before = predict_rows(model_dir, tiny_dataset, test_rows)
    assert "pdf" not in before  # a point head without a calibration gives point estimates only
    cfg = tiny_config({"tiny": {"n": 240}}, data_dir=tiny_dataset.parent.parent)
    record = calibrate_model(model_dir, tiny_dataset, cfg)
    assert record["base"] == "gaussian" and record["fit_split"] == "val" and len(record["grid"]) == 100
    assert json.loads((model_dir / "model.json").read_text())["calibration"] == record
    after = predict_rows(model_dir, tiny_dataset, test_rows)
    assert after["z_pred"].to_numpy().tobytes() == before["z_pred"].to_numpy().tobytes()
    pdf = np.stack(after["pdf"].to_numpy())
    assert pdf.shape == (len(test_rows), 100) and np.allclose(pdf.sum(1), 1, atol=1e-5)
    assert "pdf_uncalibrated" in after and (after["z_lo68"] <= after["z_hi68"]).all()
    pred = load_model(model_dir)
    assert pred.gives_pdf and np.array_equal(pred.grid, np.asarray(record["grid"]))

    images, truth = raw_of(tiny_dataset)
    idx = truth.reset_index().set_index("object_id").loc[test_rows["object_id"], "index"].to_numpy()
    np.save(tmp_path / "c.npy", np.asarray(images[idx], np.float32))
    (tmp_path / "ids.txt").write_text("\n".join(test_rows["object_id"]) + "\n")
    items, total, _ = open_input(tmp_path / "c.npy", pred.bands, ids_file=tmp_path / "ids.txt")
    predict_cutouts(pred, items, tmp_path / "o.parquet", total=total, progress=False, with_pdf=True)
    got = pd.read_parquet(tmp_path / "o.parquet").set_index("object_id").loc[test_rows["object_id"]]
    np.testing.assert_allclose(got["z_pred"].to_numpy(), after["z_pred"].to_numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.stack(got["pdf"].to_numpy()), pdf, atol=1e-5)
    np.testing.assert_allclose(got["z_median"].to_numpy(), after["z_median"].to_numpy(), atol=1e-4)


def test_subfolder_per_object_with_bands_from_headers(results, tiny_dataset, tmp_path):
    """my_cutouts/<id>/<anything>.fits: each file's band from its FILTER keyword (HSC-style names via --band-map)."""
    images, _ = raw_of(tiny_dataset)
    for k, oid in enumerate(["a", "b"]):
        sub = tmp_path / "in" / oid
        sub.mkdir(parents=True)
        for j, band in enumerate(BANDS):
            h = band_header(band, value=f"HSC-{band.upper()}2" if band == "r" else f"HSC-{band.upper()}")
            fits.PrimaryHDU(np.asarray(images[k][j], np.float32), header=h).writeto(sub / f"exposure_{j}.fits")
    (tmp_path / "in" / "c").mkdir()  # an empty object folder: rejected, naming the missing bands
    pred = load_predictor("netz/tiny", results, device="cpu")
    items, total, _ = open_input(tmp_path / "in", pred.bands, band_map=parse_band_map(["HSC-R2=r"]))
    s = predict_cutouts(pred, items, tmp_path / "o.csv", total=total, progress=False)
    assert (total, s.n_ok, s.n_rejected) == (3, 2, 1)
    got = pd.read_csv(tmp_path / "o.csv").set_index("object_id")["z_pred"]
    ref = pred.predict_raw(np.asarray(images[:2], np.float32))["z_pred"]
    np.testing.assert_allclose(got.loc[["a", "b"]].to_numpy(), ref, rtol=1e-5, atol=1e-6)
    assert "band(s) g, r, i, z missing" in pd.read_csv(s.rejects)["reason"][0]
