"""qp output (deepred.pdfs.qp_io): `deepred predict --format qp` and the pipeline's results/pdfs/ write qp ensembles that
qp.read reads back, with DeepRed's point estimates as ancil, and RAIL's evaluation stages run on them unchanged.

Real components throughout: a PhotoZ network trained on the tiny dataset (conftest.tiny_pdf_model), FITS cutouts
written with astropy, qp-prob and pz-rail-base as installed.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import qp

from conftest import tiny_config
from deepred.contracts.predictions import test_set_predictions as select_test_set
from deepred.cli import main
from deepred.contracts import processed as contract
from deepred.contracts.processed import ProcessedDataset
from deepred.models.heads import pdf_summary
from deepred.pdfs.qp_io import (QpFormatError, ancil_columns, id_bytes, write_ensemble, write_test_set_pdfs,
                           write_test_set_truth)
from own_cutouts import SUMMARIES, raw_of, write_cutouts, write_mef  # noqa: F401

def test_hist_ensemble_keeps_deepreds_summaries(tmp_path):
    """qp.hist is DeepRed's convention: qp's mean, median and 68% interval are z_mean, z_median, z_lo68, z_hi68."""
    rng = np.random.default_rng(3)
    grid = np.linspace(0.05, 2.0, 40)
    pdfs = np.exp(3 * rng.normal(size=(6, 40)))
    pdfs /= pdfs.sum(axis=1, keepdims=True)
    frame = pd.DataFrame({"object_id": [f"g{i}" * (i + 1) for i in range(6)], **pdf_summary(pdfs, grid)})
    frame["z_pred"] = frame["z_mean"]
    write_ensemble(tmp_path / "e.hdf5", grid, pdfs, ancil_columns(frame))
    ens = qp.read(tmp_path / "e.hdf5")
    assert ens.gen_class.name == "hist" and ens.npdf == 6
    np.testing.assert_allclose(ens.mean().ravel(), frame["z_mean"], atol=1e-12)
    np.testing.assert_allclose(ens.median().ravel(), frame["z_median"], atol=1e-12)
    np.testing.assert_allclose(ens.ppf([0.16, 0.84]), frame[["z_lo68", "z_hi68"]], atol=1e-12)
    assert list(ens.ancil["id"]) == list(frame["object_id"])  # unicode back from fixed-width bytes
    np.testing.assert_array_equal(ens.ancil["zmode"], frame["z_mode"])  # RAIL's point-estimate key
    with pytest.raises(QpFormatError, match="'g0g0g0' is longer than 4 bytes"):
        id_bytes(["g0", "g0g0g0"], width=4, where="x.hdf5")
    with pytest.raises(QpFormatError, match=r"must be named \*\.hdf5"):
        write_ensemble(tmp_path / "e.h5", grid, pdfs, ancil_columns(frame))


def test_predict_format_qp_is_read_back_by_qp(tiny_pdf_model, tiny_dataset, tmp_path):
    cat = write_cutouts(tmp_path, tiny_dataset, 7)
    cat = pd.concat([cat, pd.DataFrame([{"object_id": "gone", "file": "cutouts/none.fits", "redshift": 0.5}])])
    cat.to_csv(tmp_path / "cat.csv", index=False)
    args = ["predict", str(tiny_pdf_model), str(tmp_path / "cat.csv"), "--no-progress", "--device", "cpu",
            "--batch-size", "3"]
    assert main(args + ["-o", str(tmp_path / "z.hdf5"), "--format", "qp"]) == 0
    assert main(args + ["-o", str(tmp_path / "z.parquet"), "--pdf"]) == 0
    ens, ref = qp.read(str(tmp_path / "z.hdf5")), pd.read_parquet(tmp_path / "z.parquet")
    assert ens.npdf == len(ref) == 7 and list(ens.ancil["id"]) == list(ref["object_id"])
    for col in SUMMARIES:
        np.testing.assert_array_equal(ens.ancil[col], ref[col], err_msg=col)
    mass = ens.objdata["pdfs"] * np.diff(ens.metadata["bins"].ravel())
    np.testing.assert_allclose(mass, np.stack(ref["pdf"]), atol=1e-6)  # the Parquet file's float32 PDFs
    np.testing.assert_allclose(ens.median().ravel(), ref["z_median"], atol=1e-5)
    assert pd.read_csv(tmp_path / "z.rejects.csv")["object_id"].tolist() == ["gone"]
    prov = json.loads((tmp_path / "z.hdf5.provenance.json").read_text())
    assert prov["summary"]["n_ok"] == 7
    assert not list(tmp_path.glob("*spool*"))  # the spooled batches are gone


def test_qp_without_pdfs_or_with_a_wrong_name_fails_before_any_output(tiny_pdf_model, tiny_dataset, tmp_path,
                                                                      capsys):
    from deepred.training.train import train_model

    cat = write_cutouts(tmp_path, tiny_dataset, 2)
    cat.to_csv(tmp_path / "cat.csv", index=False)
    netz = tmp_path / "models" / "netz" / "tiny"
    cfg = tiny_config({"tiny": {"n": 240}}, data_dir=tiny_dataset.parent.parent, results_dir=tmp_path)
    cfg["training"]["epochs"] = 1
    train_model("netz", "tiny", cfg, tiny_dataset, netz, threads=1)
    card = json.loads((netz / "model.json").read_text())
    card.pop("calibration", None)  # a point head without a calibration (deepred.pdfs.calibration): no PDF at all
    (netz / "model.json").write_text(json.dumps(card))
    assert main(["predict", str(netz), str(tmp_path / "cat.csv"), "-o", str(tmp_path / "z.hdf5"), "--device",
                 "cpu"]) == 1
    assert "netz/tiny: --format qp writes PDFs, but this model (netz) gives point estimates only" in \
        capsys.readouterr().err
    assert main(["predict", str(tiny_pdf_model), str(tmp_path / "cat.csv"), "-o", str(tmp_path / "z.parquet"),
                 "--format", "qp", "--device", "cpu"]) == 1
    assert "z.parquet: --format qp writes an HDF5 qp ensemble; name the output *.hdf5" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.csv", "cutouts", "models"]  # nothing written


def test_pipeline_pdfs_are_the_metrics_rows_and_feed_rails_evaluators(tiny_pdf_model, tiny_dataset, tmp_path):
    from rail.core.data import QPHandle, TableHandle
    from rail.evaluation.dist_to_point_evaluator import DistToPointEvaluator
    from rail.evaluation.point_to_point_evaluator import PointToPointEvaluator

    from deepred.predict.splits import predict_model

    cfg = tiny_config({"tiny": {"n": 240}}, data_dir=tiny_dataset.parent.parent, results_dir=tmp_path)
    cfg["test_sets"]["tiny"]["query"] = "z_lens > 0.3"  # narrowed as the metrics rule narrows it
    pred = tmp_path / "predictions" / "photoz" / "tiny.parquet"
    predict_model(tiny_pdf_model, tiny_dataset, pred)
    out, truth = tmp_path / "pdfs" / "photoz" / "tiny.hdf5", tmp_path / "pdfs" / "truth" / "tiny.hdf5"
    n = write_test_set_pdfs(cfg, "tiny", "photoz", pred, tiny_dataset, out)
    assert write_test_set_truth(cfg, "tiny", tiny_dataset, truth) == n
    rows = contract.test_set_rows(cfg, "tiny", tiny_dataset)
    sel, grid = select_test_set(pred, rows, ProcessedDataset(tiny_dataset).catalog, "z_lens")
    ens = qp.read(str(out))
    assert n == ens.npdf == len(rows) < int((ProcessedDataset(tiny_dataset).catalog["split"] == "test").sum())
    assert list(ens.ancil["id"]) == list(rows["object_id"])
    np.testing.assert_array_equal(ens.ancil["redshift"], sel["z_true"])
    np.testing.assert_array_equal(ens.ancil["z_pred"], sel["z_pred"])
    np.testing.assert_allclose(ens.metadata["bins"].ravel()[:-1] + np.diff(ens.metadata["bins"].ravel()) / 2, grid)

    # RAIL's evaluators, default keys: the ensemble's `zmode`, the truth table's photometry/redshift
    kw = dict(force_exact=True, output=str(tmp_path / "ev.hdf5"), summary=str(tmp_path / "evs.hdf5"),
              single_distribution_summary=str(tmp_path / "evd.hdf5"))
    points = PointToPointEvaluator.make_stage(name="pp", metrics=["point_bias", "point_outlier_rate"], **kw)
    res = points.evaluate(QPHandle("pz", path=str(out)), TableHandle("truth", path=str(truth)))
    dz = (ens.ancil["zmode"] - rows["z_lens"]) / (1 + rows["z_lens"])
    assert res["summary"].data["point_bias"][0] == pytest.approx(np.median(dz))
    dists = DistToPointEvaluator.make_stage(name="dp", metrics=["cdeloss"], **kw)
    res = dists.evaluate(QPHandle("pz2", path=str(out)), TableHandle("truth2", path=str(truth)))
    assert np.isfinite(res["summary"].data["cdeloss"][0])
