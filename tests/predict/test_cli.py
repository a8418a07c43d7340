"""The `deepred` command as a user runs it: `deepred predict` on real FITS cutouts gives the pipeline's
redshifts (the pipeline's own prediction file, written by deepred.predict.splits.predict_model), `deepred info`
prints the model card, and bad input ends with a clear message naming the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from deepred.cli import main
from deepred.contracts.processed import ProcessedDataset
from deepred.predict.splits import predict_model
from deepred.contracts.predictions import read_predictions
from own_cutouts import raw_of, train_tiny, write_band_files



def deepred_command() -> list[str]:
    """The installed console script (pyproject [project.scripts]); `python -m deepred.cli` if not installed."""
    script = Path(sysconfig.get_path("scripts")) / "deepred"
    return [str(script)] if script.exists() else [sys.executable, "-m", "deepred.cli"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_dataset):
    """A tiny 'default run': a trained PDF model and its prediction file in results/predictions/."""
    results = train_tiny(tmp_path_factory.mktemp("cli_results"), tiny_dataset, models=("photoz",))
    pred = results / "predictions" / "photoz" / "tiny.parquet"
    predict_model(results / "models" / "photoz" / "tiny", tiny_dataset, pred)
    return results, pred


def test_predict_command_gives_the_pipeline_redshifts(pipeline, tiny_dataset, tmp_path):
    results, pred_file = pipeline
    images, truth = raw_of(tiny_dataset)
    rows = ProcessedDataset(tiny_dataset).split("test").iloc[:6]
    folder = tmp_path / "my cutouts"  # a space in the path, as users have
    for oid in rows["object_id"]:
        write_band_files(folder, oid, images[int(np.flatnonzero(truth["object_id"] == oid)[0])])
    bad = np.array(images[0], np.float32)
    bad[2, 10, 10] = np.nan
    write_band_files(folder, "has_nan", bad)
    out = tmp_path / "z.parquet"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        deepred_command() + ["predict", "photoz/tiny", str(folder), "-o", str(out), "--results-dir", str(results),
                             "--pdf", "--no-progress", "--threads", "1"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "6 redshifts" in proc.stderr and "1 rejected" in proc.stderr
    got = pd.read_parquet(out).set_index("object_id")
    ref, grid = read_predictions(pred_file)
    ref = ref.set_index("object_id").loc[rows["object_id"]]
    assert sorted(got.index) == sorted(rows["object_id"])
    got = got.loc[rows["object_id"]]
    for col in ("z_pred", "z_mean", "z_median", "z_mode", "z_lo68", "z_hi68"):
        np.testing.assert_allclose(got[col].to_numpy(), ref[col].to_numpy(), rtol=1e-5, atol=1e-6, err_msg=col)
    np.testing.assert_allclose(np.stack(got["pdf"]), np.stack(ref["pdf"]), atol=1e-6)
    rejects = pd.read_csv(tmp_path / "z.rejects.csv")
    assert list(rejects["object_id"]) == ["has_nan"]
    assert "NaN" in rejects["reason"][0] and "band(s) i" in rejects["reason"][0]


def test_info_prints_the_model_card(pipeline, capsys):
    results, _ = pipeline
    assert main(["info", "photoz/tiny", "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    for text in ("photoz trained on tiny", "bands           g, r, i, z", "cutout (px)     45", '0.263 "/px',
                 "head            pdf", "code version", "val_nmad=", "model config:", "training config:"):
        assert text in out, text
    # with the metrics engineer's results/tables/summary.csv (long form) the test metrics come from there
    tables = results / "tables"
    tables.mkdir(exist_ok=True)
    pd.DataFrame({"test_set": ["tiny", "tiny", "tiny"], "dataset": ["tiny"] * 3, "model": ["photoz", "photoz", "netz"],
                  "family": ["baseline"] * 3, "metric": ["nmad", "bias", "nmad"], "value": [0.031, 0.002, 0.5],
                  "ci_lo": [0.03, 0.001, 0.4], "ci_hi": [0.033, 0.003, 0.6], "n": [35] * 3}).to_csv(
        tables / "summary.csv", index=False)
    try:
        assert main(["info", str(results / "models" / "photoz" / "tiny"), "--results-dir", str(results), "--json"]) == 0
        card = json.loads(capsys.readouterr().out)
        assert card["dataset"] == "tiny" and card["bands"] == ["g", "r", "i", "z"] and card["pixel_scale"] == 0.263
        assert [r["metric"] for r in card["test_metrics"]] == ["nmad", "bias"]
        assert card["code_version"] and "config" not in card
        assert main(["info", "photoz/tiny", "--results-dir", str(results), "--full-config"]) == 0
        out = capsys.readouterr().out
        assert "tiny (n=35): nmad 0.031 [0.03, 0.033], bias 0.002" in out and "pipeline config:" in out
    finally:
        (tables / "summary.csv").unlink()


def test_errors_are_one_clear_line(pipeline, tiny_dataset, tmp_path, capsys):
    results, _ = pipeline
    assert main(["predict", "resnet/tiny", str(tmp_path), "-o", str(tmp_path / "o.csv"),
                 "--results-dir", str(results)]) == 1
    err = capsys.readouterr().err
    assert "deepred: error: model 'resnet/tiny' not found" in err and "photoz/tiny" in err
    assert "Traceback" not in err
    # every object bad: exit 1 naming the rejects file; the (empty) output and the rejects are still written
    fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.ones(2))]).writeto(tmp_path / "cat_like.fits")
    os.makedirs(tmp_path / "in")
    os.replace(tmp_path / "cat_like.fits", tmp_path / "in" / "obj1.fits")
    assert main(["predict", "photoz/tiny", str(tmp_path / "in"), "-o", str(tmp_path / "o.csv"),
                 "--results-dir", str(results), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no usable cutouts" in err and "o.rejects.csv" in err
    assert "not a FITS image" in (tmp_path / "o.rejects.csv").read_text()
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--help"])
    assert exc.value.code == 0
    helptext = capsys.readouterr().out
    assert "examples:" in helptext and "<id>_<band>.fits" in helptext and ".rejects.csv" in helptext
