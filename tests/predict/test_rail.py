"""The RAIL estimator (deepred.predict.rail.DeepRedEstimator) run through RAIL's own estimate() path on FITS cutouts
listed in a catalogue: the same PDFs as `deepred predict --format qp` on the same cutouts, one per input row.

Real components: the PhotoZ network of conftest.tiny_pdf_model, cutouts written with astropy, the catalogue as an
HDF5 table (tables_io, RAIL's usual input) and as an in-memory DataFrame, pz-rail-base's CatEstimator machinery.
"""

from __future__ import annotations

import numpy as np
import pytest
import qp
import tables_io
from rail.core.data import TableHandle

from deepred.cli import main
from deepred.predict.inputs import InferenceError
from deepred.predict.rail import DeepRedEstimator
from own_cutouts import SUMMARIES, write_cutouts


def test_estimator_gives_deepred_predicts_pdfs(tiny_pdf_model, tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # RAIL writes its in-progress file beside the output, nothing in the checkout
    cat = write_cutouts(tmp_path, tiny_dataset, 7)
    cat.to_csv(tmp_path / "cat.csv", index=False)
    assert main(["predict", str(tiny_pdf_model), str(tmp_path / "cat.csv"), "-o", str(tmp_path / "ref.hdf5"),
                 "--no-progress", "--device", "cpu"]) == 0
    ref = qp.read(str(tmp_path / "ref.hdf5"))

    # a catalogue file: paths relative to its folder; chunks of 4 rows (4 + 3) written as they come
    tables_io.write({c: cat[c].to_numpy().astype("S" if c != "redshift" else float) for c in cat},
                    str(tmp_path / "cat.hdf5"))
    stage = DeepRedEstimator.make_stage(name="deepred_file", model=str(tiny_pdf_model), chunk_size=4,
                                        device="cpu", output=str(tmp_path / "rail.hdf5"))
    stage.estimate(TableHandle("catalogue", path=str(tmp_path / "cat.hdf5")))
    got = qp.read(str(tmp_path / "rail.hdf5"))
    assert got.gen_class.name == "hist" and got.npdf == 7
    assert list(got.ancil["id"]) == list(ref.ancil["id"]) == list(cat["object_id"])  # input row order
    # the same grid: the network's float32 buffer here, model.json's float64 one in deepred predict's files
    np.testing.assert_allclose(got.metadata["bins"], ref.metadata["bins"], rtol=1e-6)
    np.testing.assert_allclose(got.objdata["pdfs"], ref.objdata["pdfs"], rtol=1e-5, atol=1e-5)  # float32 spool
    for col in SUMMARIES + ("zmode",):
        np.testing.assert_allclose(got.ancil[col], ref.ancil[col], rtol=1e-5, atol=1e-6, err_msg=col)
    np.testing.assert_array_equal(got.ancil["redshift"], cat["redshift"])  # the input's redshift_col, as RAIL does

    # an in-memory table: paths from image_dir; output_mode "return" keeps the ensemble
    stage = DeepRedEstimator.make_stage(name="deepred_memory", model=str(tiny_pdf_model / "model.json"),
                                        device="cpu", image_dir=str(tmp_path), output_mode="return")
    mem = stage.estimate(cat.drop(columns="redshift")).data
    np.testing.assert_allclose(mem.objdata["pdfs"], got.objdata["pdfs"], rtol=1e-5, atol=1e-5)
    assert "redshift" not in mem.ancil


def test_estimator_stops_on_an_unusable_row(tiny_pdf_model, tiny_dataset, tmp_path, monkeypatch):
    """One PDF per input row (RAIL's evaluators pair rows by position): a row without usable pixels is an error
    naming it, raised before the chunk is written."""
    monkeypatch.chdir(tmp_path)
    cat = write_cutouts(tmp_path, tiny_dataset, 2)
    cat.loc[1, "file"] = "cutouts/missing.fits"
    stage = DeepRedEstimator.make_stage(name="deepred_bad", model=str(tiny_pdf_model), device="cpu",
                                        image_dir=str(tmp_path), output=str(tmp_path / "bad.hdf5"))
    with pytest.raises(InferenceError, match=rf"rows 0-2: 1 object\(s\) cannot be used, e.g. {cat['object_id'][1]} "
                                             r"\(.*missing.fits\)"):
        stage.estimate(cat)
    assert not (tmp_path / "bad.hdf5").exists()
