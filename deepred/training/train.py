"""One trainer for every network (DeepRed backbones and the neural baselines), laid out as timm's train.py:

- setup_run: the data, the network, its optimizer and the loaders of one job (a TrainingRun);
- train_one_epoch and validate: one pass each, returning a metrics dict;
- the resume checkpoint after every epoch (deepred.training.resume) and model_card, the content of model.json;
- train_model: a short loop over the epochs with early stopping and best-weights keeping.

AdamW with linear warm-up and cosine decay (a pure function of the step, so resuming needs no scheduler
state), early stopping on the validation NMAD with patience, flips and 90-degree rotations drawn per
(seed, epoch, object) (deepred.training.loader), seeded and deterministic on CPU, AMP and channels-last on CUDA,
history.csv and one progress line per epoch in the log.

Resume: after every epoch `last.safetensors` holds the weights, the best weights, the optimizer state and
the loop state. A rerun with the same configuration and data continues after the last finished epoch and,
on CPU, ends with exactly the weights of an uninterrupted run: the shuffling, augmentation and dropout
randomness of epoch e are seeded by (seed, e) alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from deepred.contracts.config import ConfigError, dataset_config
from deepred.contracts.processed import ProcessedDataset, train_subset
from deepred.core.io import write_csv
from deepred.core.metrics import nmad
from deepred.core.model_names import MODEL_TRAINING_KEYS, parse_hybrid
from deepred.core.provenance import provenance
from deepred.core.seeds import derive_seed
from deepred.models.backbones import load_local_weights
from deepred.models.baselines import baseline_z_range
from deepred.models.checkpoint import write_model
from deepred.models.heads import RedshiftNet, make_grid
from deepred.models.hybrid import hybrid_record
from deepred.models.registry import build_model, head_of, model_section
from deepred.pdfs.calibration import label_grid
from deepred.training.hybrid_data import hybrid_data, keep_photometry
from deepred.training.loader import check_inputs, training_loaders
from deepred.training.resume import fingerprint, new_state, restore_state, save_state
from deepred.training.run import TrainingRun, uses_channels_last

log = logging.getLogger("deepred.training.train")


class TrainingError(ValueError):
    """Training cannot go on (diverged loss, bad split); the message names the model and dataset."""


def training_params(model_name: str, config: dict) -> dict:
    """config["training"] with the model's own overrides (epochs, lr, batch_size, weight_decay, patience)."""
    params = dict(config.get("training", {}))
    _, section = model_section(model_name, config)
    for key in MODEL_TRAINING_KEYS:
        if section.get(key) is not None:
            params[key] = section[key]
    return params


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'training.device': cuda requested but torch sees no CUDA device")
    return torch.device(name)


@torch.no_grad()
def predict_points(net: RedshiftNet, loader: DataLoader, device: torch.device, amp: bool,
                   amp_dtype: torch.dtype | None = None) -> np.ndarray:
    net.eval()
    out = []
    for batch in loader:  # (images, labels), or (images, features, labels) for a hybrid
        inputs = [t.to(device, non_blocking=True) for t in batch[:-1]]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            out.append(net.point(net(*inputs)).float().cpu())
    return torch.cat(out).numpy().astype(float)


def pdf_grid(model_name: str, config: dict, dataset: str, n_bins: int, z_train: np.ndarray) -> np.ndarray:
    """Bin centres: a baseline's configured z_range, else the training labels' range padded by 5%."""
    kind, _ = model_section(model_name, config)
    if kind == "baseline":
        return make_grid(*baseline_z_range(config, model_name, dataset), n_bins)
    return label_grid(z_train, n_bins)  # the point estimators' PDFs use this grid too (deepred.pdfs.calibration)


def _configure_torch(params: dict, threads: int | None) -> tuple[torch.device, bool]:
    """(device, amp): threads, deterministic algorithms and the device of the job."""
    torch.set_num_threads(int(threads or params["threads"]))
    if params["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = pick_device(params["device"])
    return device, bool(params["amp"]) and device.type == "cuda"


def _build_network(model_name: str, dataset: str, config: dict, proc: ProcessedDataset, z_train: np.ndarray,
                   shape: tuple[int, int], f_train: np.ndarray | None = None
                   ) -> tuple[RedshiftNet, dict, np.ndarray | None, float, float]:
    """(net, init, grid, label_loc, label_scale): the fresh network, normalized for this data (a hybrid's features
    by f_train), and its start."""
    net = build_model(model_name, config, *shape)
    head, n_bins = head_of(model_name, config)
    grid = pdf_grid(model_name, config, dataset, n_bins, z_train) if head == "pdf" else None
    label_loc, label_scale = float(np.mean(z_train)), float(np.std(z_train)) or 1.0
    net.set_normalization(proc.stats["band_mean"], proc.stats["band_std"], label_loc, label_scale, grid)
    if f_train is not None:
        net.set_feature_normalization(f_train.mean(axis=0), f_train.std(axis=0))
    kind, section = model_section(model_name, config)
    init = {"weights": "scratch"}
    if kind in ("architecture", "hybrid") and section.get("weights"):
        init = load_local_weights(net.body, section["weights"], model_name)
    return net, init, grid, label_loc, label_scale


def setup_run(model_name: str, dataset: str, config: dict, processed_dir, threads: int | None = None,
              train_systems: int | None = None, photometry_dir=None) -> TrainingRun:
    """Everything one training job needs. The order fixes its random numbers: the seed is set right before
    the network is built, so the initial weights depend on (seed, model, dataset) alone. `train_systems`: train on
    that many systems of the training split (a nested subset, deepred.contracts.processed.train_subset; the scale study)."""
    params = training_params(model_name, config)
    ds_cfg = dataset_config(config, dataset)
    proc = ProcessedDataset(Path(processed_dir))
    in_chans, cutout = check_inputs(proc, ds_cfg, dataset)
    label = proc.stats["label_column"]
    train_rows, val_rows = proc.split("train"), proc.split("val")
    try:
        train_rows = train_subset(train_rows, train_systems, config["seed"], dataset)
    except ValueError as exc:
        raise TrainingError(f"{processed_dir}: {exc}") from None
    if len(train_rows) < 2 or len(val_rows) < 1:
        raise TrainingError(f"{processed_dir}: {len(train_rows)} train / {len(val_rows)} val rows; need >= 2 / >= 1")
    hybrid = hybrid_record(model_name, config, dataset, proc) if parse_hybrid(model_name, config) else None
    features = None
    if hybrid:
        train_rows, val_rows, features = hybrid_data(hybrid, proc, train_rows, val_rows, photometry_dir)
        # what the hybrid learns from beyond the images (features, the trees' predictions): in model.json and in the
        # resume fingerprint, so that refitted trees retrain the hybrid instead of resuming its finished run
        hybrid["inputs_sha256"] = hashlib.sha256(b"".join(np.ascontiguousarray(f, dtype=np.float64).tobytes()
                                                          for f in features)).hexdigest()
    device, amp = _configure_torch(params, threads)
    seed = derive_seed(config["seed"], model_name, dataset)
    torch.manual_seed(seed)
    z_train = train_rows[label].to_numpy(dtype=float)
    f_train = None if features is None else features[0]
    net, init, grid, label_loc, label_scale = _build_network(model_name, dataset, config, proc, z_train,
                                                             (in_chans, cutout), f_train)
    net.to(device)
    if uses_channels_last(params, device):
        net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    scaler = torch.amp.GradScaler("cuda", enabled=amp and params.get("amp_dtype", "bfloat16") == "float16")
    sampler, loader, val_loader = training_loaders(proc, train_rows, val_rows, label, params, device, seed, features)
    return TrainingRun(model_name, dataset, params, seed, device, amp, proc, in_chans, cutout, train_rows, val_rows,
                       net, init, grid, label_loc, label_scale, opt, scaler, sampler, loader, val_loader, hybrid)


def train_one_epoch(run: TrainingRun, epoch: int) -> dict:
    """One pass over the training split. Epoch e's shuffle, augmentation and dropout are seeded by (seed, e)
    alone. Returns {"train_loss": mean over images, "lr": the last step's, "images_per_s"}."""
    torch.manual_seed(derive_seed(run.seed, "epoch", epoch))  # dropout / drop-path: same with or without resume
    run.sampler.epoch = epoch
    run.net.train()
    t0, loss_sum, seen, lr = time.time(), 0.0, 0, run.params["lr"]
    for step, batch in enumerate(run.loader):  # (images, labels), or (images, features, labels) for a hybrid
        lr = run.lr(epoch * len(run.loader) + step)
        for g in run.opt.param_groups:
            g["lr"] = lr
        x, *extra, z = (t.to(run.device, non_blocking=True) for t in batch)
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.amp):
            out = run.net(x, *extra)
        loss = run.net.loss(out, z)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"{run.model_name}/{run.dataset}: loss is {loss.item()} at epoch {epoch + 1}, step {step}; "
                "lower the learning rate (training.lr or the model's lr)"
            )
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if run.params["grad_clip"]:
            run.scaler.unscale_(run.opt)
            torch.nn.utils.clip_grad_norm_(run.net.parameters(), run.params["grad_clip"])
        run.scaler.step(run.opt)
        run.scaler.update()
        loss_sum += float(loss.detach()) * len(z)
        seen += len(z)
    return {"train_loss": loss_sum / max(seen, 1), "lr": lr, "images_per_s": seen / max(time.time() - t0, 1e-9)}


def validate(run: TrainingRun) -> dict:
    """{"val_nmad"}: the NMAD of the network's point estimates on the validation split."""
    z_val = run.val_rows[run.label].to_numpy(dtype=float)
    return {"val_nmad": nmad(predict_points(run.net, run.val_loader, run.device, run.amp, run.amp_dtype), z_val)}


def _trained_by() -> str:
    """Which process trained an epoch (history.csv): a resumed run's epochs name more than one."""
    job = os.environ.get("SLURM_JOB_ID")
    return f"slurm:{job}" if job else f"pid:{os.getpid()}@{socket.gethostname()}"


def _weights(net: RedshiftNet) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def model_card(run: TrainingRun, state: dict, config: dict, processed_dir: Path, t_start: float) -> dict:
    """The content of model.json: what the model takes and predicts, how it was trained, and from what."""
    kind, section = model_section(run.model_name, config)
    head, n_bins = head_of(run.model_name, config)
    z_train, z_val = (rows[run.label].to_numpy(dtype=float) for rows in (run.train_rows, run.val_rows))
    rates = [row["images_per_s"] for row in state["history"]] or [np.nan]
    stats, net = run.proc.stats, run.net
    return {
        "model": run.model_name,
        "kind": kind,
        "dataset": run.dataset,
        "bands": list(stats["bands"]),
        "in_chans": run.in_chans,
        "cutout": run.cutout,
        "input_size": net.input_size,
        "pixel_scale": stats.get("pixel_scale"),
        "scaling": stats.get("scaling"),
        "label_column": run.label,
        "head": head,
        "n_bins": n_bins,
        "grid": None if run.grid is None else [float(g) for g in run.grid],
        "band_mean": [float(v) for v in net.band_mean],
        "band_std": [float(v) for v in net.band_std],
        "label_standardization": {"loc": run.label_loc, "scale": run.label_scale,
                                  "note": "point heads predict (z - loc) / scale"},
        "architecture": section,
        **({"hybrid": run.hybrid} if run.hybrid else {}),
        "training": run.params,
        "init": run.init,
        "seed": run.seed,
        "device": str(run.device),
        "n_params": int(sum(p.numel() for p in net.parameters())),
        "n_train": len(run.train_rows),
        "n_val": len(run.val_rows),
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped"],
        "train_images_per_s": float(np.median(rates)),
        "metrics": {"val_nmad": state["best_nmad"],
                    "val_nmad_train_median": nmad(np.full_like(z_val, np.median(z_train)), z_val)},
        "wall_seconds_this_run": time.time() - t_start,
        "config": config,
        "provenance": provenance(config, [processed_dir / "catalog.parquet", processed_dir / "stats.json"]),
    }


def _log_start(run: TrainingRun) -> None:
    log.info("%s/%s: %d train, %d val images (%d bands, %dx%d, input %d), head %s, %s on %s, %d threads, "
             "%d epochs max", run.model_name, run.dataset, len(run.train_rows), len(run.val_rows), run.in_chans,
             run.cutout, run.cutout, run.net.input_size, run.net.head,
             f"{sum(p.numel() for p in run.net.parameters()) / 1e6:.2f}M params", run.device,
             torch.get_num_threads(), run.epochs)


def _record_epoch(state: dict, row: dict, patience: int) -> None:
    """Count the epoch in the loop state: best so far, epochs without improvement, early stop."""
    if row["best"]:
        state.update(best_nmad=row["val_nmad"], best_epoch=row["epoch"], bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    state["history"].append(row)
    state["epoch"] = row["epoch"]
    if state["bad_epochs"] >= patience:
        state["stopped"] = True


def train_model(model_name: str, dataset: str, config: dict, processed_dir, out_dir, threads: int | None = None,
                train_systems: int | None = None, photometry_dir=None) -> dict:
    """Train `model_name` on `dataset` (or on `train_systems` of its training systems); write model.safetensors,
    model.json, history.csv into out_dir. `photometry_dir`: the fitted photometric baseline a residual hybrid
    corrects (copied into out_dir)."""
    t_start = time.time()
    processed_dir, out_dir = Path(processed_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = setup_run(model_name, dataset, config, processed_dir, threads, train_systems, photometry_dir)
    key, last_path = fingerprint(run, config, processed_dir), out_dir / "last.safetensors"
    state, best = restore_state(run, last_path, key) or (new_state(), _weights(run.net))
    _log_start(run)
    for epoch in range(state["epoch"], run.epochs):
        if state["stopped"]:
            break
        t0 = time.time()
        metrics = {**train_one_epoch(run, epoch), **validate(run)}
        improved = state["best_nmad"] is None or metrics["val_nmad"] < state["best_nmad"]
        if improved:
            best = _weights(run.net)
        row = {"epoch": epoch + 1, "train_loss": metrics["train_loss"], "val_nmad": metrics["val_nmad"],
               "lr": metrics["lr"], "images_per_s": metrics["images_per_s"], "epoch_seconds": time.time() - t0,
               "best": improved, "trained_by": _trained_by()}
        _record_epoch(state, row, run.params["patience"])
        log.info("%s/%s epoch %d/%d loss %.4f val_nmad %.4f%s lr %.2e %.0f img/s %.1f s", model_name, dataset,
                 epoch + 1, run.epochs, row["train_loss"], row["val_nmad"], " *" if improved else "", row["lr"],
                 row["images_per_s"], row["epoch_seconds"])
        save_state(run, last_path, key, state, best)
        if state["stopped"]:
            log.info("%s/%s: early stop after epoch %d (no better val NMAD for %d epochs; best %.4f at epoch %d)",
                     model_name, dataset, epoch + 1, run.params["patience"], state["best_nmad"], state["best_epoch"])
            break
    run.net.load_state_dict(best)
    if run.hybrid and run.hybrid["fusion"] == "residual":
        keep_photometry(photometry_dir, out_dir)
    write_csv(out_dir / "history.csv", pd.DataFrame(state["history"]))
    meta = write_model(out_dir, run.net, model_card(run, state, config, processed_dir, t_start))
    log.info("%s/%s: best val NMAD %.4f at epoch %d (training-median predictor %.4f); wrote %s", model_name, dataset,
             state["best_nmad"], state["best_epoch"], meta["metrics"]["val_nmad_train_median"],
             out_dir / "model.safetensors")
    return meta
