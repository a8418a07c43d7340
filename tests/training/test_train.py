"""The trainer on a tiny real dataset: its pieces alone (setup, one epoch, validation, checkpoint state, model
card), learning, files written, determinism, resume after a real SIGKILL, corrupt checkpoints, band-count
mismatches, and the prediction contract (point and PDF heads)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_config
from deepred.contracts.processed import DataError, ProcessedDataset, shard_record
from deepred.core.io import sha256_file
from deepred.models.checkpoint import CheckpointError, load_checkpoint, load_trained
from deepred.predict.splits import PDF_SUMMARY, predict_model, read_predictions
from deepred.training.resume import new_state, restore_state, save_state
from deepred.training.train import model_card, nmad, predict_points, setup_run, train_model, train_one_epoch, validate

REPO = Path(__file__).resolve().parents[2]


def cfg_for(tmp, **training):
    cfg = tiny_config({"tiny": {}}, results_dir=tmp / "results", data_dir=tmp)
    cfg["training"].update({"epochs": 3, "patience": 3, "batch_size": 32, **training})
    for a in cfg["architectures"].values():
        a["epochs"] = None  # the tests set epochs through training:
    return cfg


def _weights(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_one_epoch_and_validation_alone(tiny_dataset, tmp_path):
    cfg = cfg_for(tmp_path, epochs=2)
    run = setup_run("a3", "tiny", cfg, tiny_dataset)  # BatchNorm and dropout: seeding matters
    before = _weights(run.net)
    metrics = train_one_epoch(run, 0)
    assert set(metrics) == {"train_loss", "lr", "images_per_s"}
    assert np.isfinite(metrics["train_loss"]) and metrics["images_per_s"] > 0
    assert metrics["lr"] == run.lr(len(run.loader) - 1)  # the last step's rate
    assert not _same(before, _weights(run.net))
    val = validate(run)
    z = run.val_rows["z_lens"].to_numpy(float)
    assert set(val) == {"val_nmad"} and val["val_nmad"] == nmad(predict_points(run.net, run.val_loader,
                                                                                run.device, False), z)
    # an epoch is seeded by (seed, epoch) alone: a fresh run's epoch 0 gives the same weights and loss
    again = setup_run("a3", "tiny", cfg, tiny_dataset)
    assert _same(before, _weights(again.net))
    assert train_one_epoch(again, 0)["train_loss"] == metrics["train_loss"]
    assert _same(_weights(run.net), _weights(again.net))


def test_checkpoint_state_round_trip_continues_exactly(tiny_dataset, tmp_path):
    cfg = cfg_for(tmp_path, epochs=2)
    straight = setup_run("a1", "tiny", cfg, tiny_dataset)
    for epoch in (0, 1):
        train_one_epoch(straight, epoch)
    first = setup_run("a1", "tiny", cfg, tiny_dataset)
    train_one_epoch(first, 0)
    state, path = {**new_state(), "epoch": 1}, tmp_path / "last.safetensors"
    save_state(first, path, "key", state, _weights(first.net))
    assert json.loads((tmp_path / "last.json").read_text())["state"]["epoch"] == 1
    resumed = setup_run("a1", "tiny", cfg, tiny_dataset)
    assert restore_state(resumed, path, "another key") is None  # another configuration: start clean
    got_state, best = restore_state(resumed, path, "key")
    assert got_state == state and _same(best, _weights(first.net))
    train_one_epoch(resumed, 1)  # the optimizer's moments came back too
    assert _same(_weights(resumed.net), _weights(straight.net))


def test_model_card_describes_the_run(tiny_dataset, tmp_path):
    cfg = cfg_for(tmp_path, epochs=1)
    run = setup_run("netz", "tiny", cfg, tiny_dataset)
    state = {**new_state(), "epoch": 1, "best_epoch": 1, "best_nmad": 0.1}
    card = model_card(run, state, cfg, Path(tiny_dataset), time.time())
    assert card["model"] == "netz" and card["kind"] == "baseline" and card["head"] == "point"
    assert card["n_train"] == len(run.train_rows) and card["n_val"] == len(run.val_rows)
    assert card["training"]["epochs"] == 1 and card["seed"] == run.seed and card["init"] == {"weights": "scratch"}
    assert card["metrics"]["val_nmad"] == 0.1 and card["metrics"]["val_nmad_train_median"] > 0
    assert np.isnan(card["train_images_per_s"])  # no epoch in the history
    assert "sha256" not in card and "provenance" in card  # write_model adds the weights digest


@pytest.fixture(scope="module")
def swin_run(tiny_dataset, tmp_path_factory):
    """Swin trained 4 epochs on the tiny blobs (the learning and resume reference)."""
    tmp = tmp_path_factory.mktemp("swin")
    cfg = cfg_for(tmp, epochs=4, patience=4)
    out = tmp / "models" / "swin" / "tiny"
    meta = train_model("swin", "tiny", cfg, tiny_dataset, out)
    return cfg, out, meta


def test_training_learns_and_writes_the_model_contract(swin_run, tiny_dataset):
    cfg, out, meta = swin_run
    for name in ("model.safetensors", "model.json", "history.csv", "last.safetensors", "last.json"):
        assert (out / name).is_file(), name
    hist = pd.read_csv(out / "history.csv")
    assert list(hist.columns[:5]) == ["epoch", "train_loss", "val_nmad", "lr", "images_per_s"]
    assert len(hist) == 4 and (hist["images_per_s"] > 0).all()
    assert hist["lr"].iloc[-1] < hist["lr"].iloc[1]  # the schedule decays
    assert meta["sha256"] == sha256_file(out / "model.safetensors")
    assert meta["bands"] == ["g", "r", "i", "z"] and meta["cutout"] == 45 and meta["input_size"] == 48
    assert meta["label_standardization"]["scale"] > 0 and "provenance" in meta
    # learning: the network beats predicting the training median by a wide margin
    assert meta["metrics"]["val_nmad"] < 0.5 * meta["metrics"]["val_nmad_train_median"]
    # the saved best model reproduces the recorded validation NMAD
    trained = load_trained(out)
    val = ProcessedDataset(tiny_dataset).split("val")
    z = trained.predict(ProcessedDataset(tiny_dataset).images(val))["z_pred"]
    assert nmad(z, val["z_lens"]) == pytest.approx(meta["metrics"]["val_nmad"], rel=1e-5)
    assert meta["metrics"]["val_nmad"] == pytest.approx(hist["val_nmad"].min())


def test_same_config_gives_identical_weights(tiny_dataset, tmp_path):
    cfg = cfg_for(tmp_path, epochs=1)  # a3 has BatchNorm and dropout
    shas = [train_model("a3", "tiny", cfg, tiny_dataset, tmp_path / f"run{i}")["sha256"] for i in range(2)]
    assert shas[0] == shas[1]


RUNNER = """
import json, logging, sys
sys.path.insert(0, {repo!r})
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from deepred.training.train import train_model
cfg = json.loads(open({cfg!r}).read())
train_model("swin", "tiny", cfg, {data!r}, {out!r})
"""


def test_resume_after_sigkill_matches_uninterrupted_run(swin_run, tiny_dataset, tmp_path, caplog):
    cfg, ref_out, ref_meta = swin_run
    out = tmp_path / "killed"
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg, default=str))
    script = tmp_path / "run.py"
    script.write_text(RUNNER.format(repo=str(REPO), cfg=str(cfg_path), data=str(tiny_dataset), out=str(out)))
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    last = out / "last.safetensors"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # as SLURM preemption or a node failure would
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert last.exists() and not (out / "model.json").exists()
    done = load_checkpoint(last)[1]["state"]["epoch"]
    assert 1 <= done < 4
    with caplog.at_level("INFO", logger="deepred.training.train"):
        meta = train_model("swin", "tiny", cfg, tiny_dataset, out)
    assert f"resuming from {last} after epoch {done} of 4" in caplog.text
    assert meta["metrics"]["val_nmad"] == ref_meta["metrics"]["val_nmad"]
    assert meta["sha256"] == ref_meta["sha256"]  # bit-identical weights
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "history.csv")[["epoch", "train_loss", "val_nmad", "lr"]],
        pd.read_csv(ref_out / "history.csv")[["epoch", "train_loss", "val_nmad", "lr"]],
    )


def test_corrupt_checkpoint_is_named_and_restarts_only_when_configured(tiny_dataset, tmp_path, caplog):
    cfg = cfg_for(tmp_path, epochs=1)
    out = tmp_path / "m"
    train_model("a1", "tiny", cfg, tiny_dataset, out)
    last = out / "last.safetensors"
    data = bytearray(last.read_bytes())
    data[-100:] = bytes(100)  # damage tensor bytes (the header still parses)
    last.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{last}: corrupt checkpoint .*on_corrupt_checkpoint: restart"):
        train_model("a1", "tiny", cfg, tiny_dataset, out)
    last.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=rf"{last}: unreadable checkpoint"):
        train_model("a1", "tiny", cfg, tiny_dataset, out)
    cfg["training"]["on_corrupt_checkpoint"] = "restart"
    with caplog.at_level("WARNING", logger="deepred.training.train"):
        meta = train_model("a1", "tiny", cfg, tiny_dataset, out)
    assert "starting clean" in caplog.text and meta["epochs_run"] == 1


def test_band_count_mismatch_fails_before_training(tiny_dataset, tmp_path):
    cfg = cfg_for(tmp_path)
    cfg["datasets"]["tiny"]["bands"] = ["u", "g", "r", "i", "z"]
    with pytest.raises(DataError, match=r"4 bands .* 5 "):
        train_model("resnet", "tiny", cfg, tiny_dataset, tmp_path / "a")
    # a shard that disagrees with stats.json and the config: named, with both numbers
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset, copy)
    shard = copy / "shards" / "images_00001.npy"
    np.save(shard, np.load(shard)[:, :3])
    with pytest.raises(DataError, match=r"images_00001.npy: .* bytes, stats.json records"):  # the manifest sees it
        train_model("resnet", "tiny", cfg_for(tmp_path), copy, tmp_path / "b")
    stats = json.loads((copy / "stats.json").read_text())  # ... and a manifest that agrees: the shape check does
    stats["shards"][shard.name] = shard_record(shard)
    (copy / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(DataError, match=r"images_00001.npy: shard has 3 bands .* takes 4 bands"):
        train_model("resnet", "tiny", cfg_for(tmp_path), copy, tmp_path / "b")
    assert not (tmp_path / "b" / "last.safetensors").exists()


def test_predictions_follow_the_contract_for_both_heads(swin_run, tiny_dataset, tmp_path):
    cfg, out, meta = swin_run
    pred = predict_model(out, tiny_dataset, tmp_path / "swin.parquet")
    df, grid = read_predictions(tmp_path / "swin.parquet")
    assert grid is None and list(df.columns) == ["object_id", "split", "z_true", "z_pred"]
    assert set(df["split"]) == {"val", "test"} and len(df) == len(pred)
    cat = ProcessedDataset(tiny_dataset).catalog
    assert len(df) == int(cat["split"].isin(["val", "test"]).sum())

    cfg = cfg_for(tmp_path, epochs=1)
    cfg["architectures"]["efficientnet"]["head"] = "pdf"
    cfg["architectures"]["efficientnet"]["n_bins"] = 40
    pdf_dir = tmp_path / "pdf"
    m = train_model("efficientnet", "tiny", cfg, tiny_dataset, pdf_dir)
    assert m["head"] == "pdf" and len(m["grid"]) == 40
    predict_model(pdf_dir, tiny_dataset, tmp_path / "pdf.parquet")
    df, grid = read_predictions(tmp_path / "pdf.parquet")
    assert list(df.columns) == ["object_id", "split", "z_true", "z_pred", *PDF_SUMMARY, "pdf"]
    np.testing.assert_allclose(grid, m["grid"])
    pdfs = np.stack(df["pdf"].to_numpy())
    assert pdfs.shape == (len(df), 40)
    np.testing.assert_allclose(pdfs.sum(1), 1.0, atol=1e-5)
    assert (df["z_lo68"] <= df["z_median"]).all() and (df["z_median"] <= df["z_hi68"]).all()
    np.testing.assert_allclose(df["z_pred"], df["z_mean"])


def test_prediction_on_other_bands_names_both_counts(swin_run, tiny_dataset_64):
    _, out, _ = swin_run
    rows = ProcessedDataset(tiny_dataset_64).split("test")
    from deepred.predict.splits import predict_rows

    with pytest.raises(DataError, match=r"5 bands .* takes 4 bands"):
        predict_rows(out, tiny_dataset_64, rows)


def test_cpu_channels_last_is_the_training_memory_format_when_set(tiny_dataset, tmp_path):
    """training.cpu_channels_last (default: on; docs/speed.md) trains the CPU network in channels-last."""
    for on in (True, False):
        run = setup_run("a3", "tiny", cfg_for(tmp_path, cpu_channels_last=on), tiny_dataset)
        conv = next(p for p in run.net.parameters() if p.ndim == 4)
        assert run.channels_last is on and conv.is_contiguous(memory_format=torch.channels_last) is on


def test_resume_digest_covers_every_module_the_trainer_runs():
    """The resume fingerprint's code digest is the trainer's import closure: it holds what changes trained
    numbers (the metric that picks the best epoch, the calibration, the data contract's subsets), and every
    package module that training actually loads."""
    from deepred.core.imports import closure
    from deepred.training.resume import TRAINER_MODULE

    covered = set(closure(TRAINER_MODULE))
    assert {"deepred.core.metrics", "deepred.pdfs.calibration", "deepred.contracts.processed", "deepred.core.seeds",
            "deepred.training.loader", "deepred.training.run", "deepred.models.heads"} <= covered
    code = ("import sys, deepred.training.train as t, deepred.training.resume as r; r.trainer_code_digest(); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('deepred'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert set(loaded) - covered == set()


def test_resume_digest_changes_with_any_covered_module(monkeypatch, tmp_path):
    from deepred.core import imports
    from deepred.training import resume

    before = resume.trainer_code_digest()
    modules = dict(imports.package_modules())
    changed = tmp_path / "metrics.py"
    changed.write_text(modules["deepred.core.metrics"].read_text() + "\n# a changed metric\n")
    modules["deepred.core.metrics"] = changed
    monkeypatch.setattr(resume, "package_modules", lambda: modules)
    assert resume.trainer_code_digest() != before
