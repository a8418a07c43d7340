"""One trainer for every network (DeepRed backbones and the neural baselines).

AdamW with linear warm-up and cosine decay (a pure function of the step, so resuming needs no scheduler
state), early stopping on the validation NMAD with patience, best-weights keeping, flips and 90-degree
rotations (the 8 symmetries of the square, drawn per (seed, epoch, object), so they do not depend on
worker processes), seeded and deterministic on CPU, AMP and channels-last on CUDA, a DataLoader over the
memory-mapped shards, history.csv and one progress line per epoch in the log.

Resume: after every epoch `last.safetensors` (deepred.models.checkpoint) holds the weights, the best
weights, the optimizer state and the loop state. A rerun with the same configuration and data continues
after the last finished epoch and, on CPU, ends with exactly the weights of an uninterrupted run: the
shuffling, augmentation and dropout randomness of epoch e are seeded by (seed, e) alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from deepred.config import ConfigError, dataset_config
from deepred.data.contract import DataError, ProcessedDataset, shard_name
from deepred.io import sha256_file, write_csv, write_json
from deepred.metrics import nmad
from deepred.models.backbones import load_local_weights
from deepred.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_model
from deepred.models.heads import RedshiftNet, make_grid
from deepred.models.registry import build_model, head_of, model_section
from deepred.provenance import provenance

log = logging.getLogger("deepred.train")

OVERRIDABLE = ("epochs", "lr", "batch_size", "weight_decay", "patience")  # per-model keys that win over training:
RUN_ONLY = ("threads", "num_workers", "device", "resume", "on_corrupt_checkpoint")  # do not change the numbers


class TrainingError(ValueError):
    """Training cannot go on (diverged loss, bad split); the message names the model and dataset."""


def training_params(model_name: str, config: dict) -> dict:
    """config["training"] with the model's own overrides (epochs, lr, batch_size, weight_decay, patience)."""
    params = dict(config.get("training", {}))
    _, section = model_section(model_name, config)
    for key in OVERRIDABLE:
        if section.get(key) is not None:
            params[key] = section[key]
    return params


def derive_seed(*parts) -> int:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def check_inputs(proc: ProcessedDataset, ds_cfg: dict, dataset: str) -> tuple[int, int]:
    """(bands, cutout) the model is built for; every shard must match them (checked before training)."""
    in_chans, cutout = len(ds_cfg["bands"]), int(ds_cfg["cutout"])
    stats_path = proc.root / "stats.json"
    if len(proc.stats["bands"]) != in_chans:
        raise DataError(
            f"{stats_path}: dataset has {len(proc.stats['bands'])} bands {proc.stats['bands']}, the config's "
            f"datasets.{dataset}.bands has {in_chans} {ds_cfg['bands']}: the model would take {in_chans}"
        )
    for k in sorted(proc.catalog["shard"].unique()):
        path = proc.root / "shards" / shard_name("images", int(k))
        shape = proc.shard("images", int(k)).shape  # checked against stats.json's manifest
        if len(shape) != 4 or shape[1] != in_chans:
            raise DataError(
                f"{path}: shard has {shape[1] if len(shape) == 4 else '?'} bands (shape {shape}) but the model "
                f"takes {in_chans} bands ({ds_cfg['bands']})"
            )
        if shape[2:] != (cutout, cutout):
            raise DataError(f"{path}: cutouts are {shape[2]}x{shape[3]}, the model takes {cutout}x{cutout}")
    return in_chans, cutout


class ShardImages(Dataset):
    """Images and labels of catalogue rows, read from the memory-mapped shards a batch at a time.

    Index e * n + i is object i in epoch e: augmentation is drawn from (seed, e, i), so it is the same
    whichever worker reads it and after a resume.
    """

    def __init__(self, proc: ProcessedDataset, rows: pd.DataFrame, label: str, augment: bool, seed: int):
        self.proc, self.augment, self.seed = proc, augment, seed
        self.rows = rows[["shard", "row"]].reset_index(drop=True)
        self.z = rows[label].to_numpy(dtype=np.float32)
        self.n = len(rows)

    def __len__(self):
        return self.n

    def __getitems__(self, indices):
        idx = np.asarray(indices) % self.n
        images = self.proc.images(self.rows.iloc[idx])
        out = []
        for img, full, i in zip(images, indices, idx):
            if self.augment:
                r = int(np.random.default_rng([self.seed, int(full) // self.n, int(i)]).integers(8))
                img = np.rot90(img, r % 4, axes=(1, 2))
                if r >= 4:
                    img = img[:, :, ::-1]
            out.append((torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)), torch.tensor(self.z[i])))
        return out

    def __getitem__(self, i):
        return self.__getitems__([i])[0]


class EpochSampler(Sampler):
    """A seeded permutation per epoch, yielding e * n + i (see ShardImages)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self):
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(derive_seed(self.seed, "shuffle", self.epoch))
        return iter((torch.randperm(self.n, generator=g) + self.epoch * self.n).tolist())


def make_loader(dataset: Dataset, batch_size: int, params: dict, device: torch.device, sampler=None, drop_last=False):
    workers = int(params.get("num_workers", 0))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )


def lr_at(step: int, total: int, base: float, warmup: int, schedule: str, min_ratio: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    t = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'training.device': cuda requested but torch sees no CUDA device")
    return torch.device(name)


@torch.no_grad()
def predict_points(net: RedshiftNet, loader: DataLoader, device: torch.device, amp: bool) -> np.ndarray:
    net.eval()
    out = []
    for x, _ in loader:
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=amp):
            out.append(net.point(net(x)).float().cpu())
    return torch.cat(out).numpy().astype(float)


def pdf_grid(model_name: str, config: dict, dataset: str, n_bins: int, z_train: np.ndarray) -> np.ndarray:
    """Bin centres: a baseline's configured z_range, else the training labels' range padded by 5%."""
    kind, _ = model_section(model_name, config)
    if kind == "baseline":
        from deepred.models.baselines import baseline_z_range

        lo, hi = baseline_z_range(config, model_name, dataset)
    else:
        span = float(z_train.max() - z_train.min()) or 1.0
        lo, hi = max(0.0, float(z_train.min()) - 0.05 * span), float(z_train.max()) + 0.05 * span
    return make_grid(lo, hi, n_bins)


def _fingerprint(model_name, dataset, config, params, processed: Path) -> str:
    """What the numbers depend on: a resume is only made from a checkpoint of the same fingerprint."""
    _, section = model_section(model_name, config)
    key = {
        "model": model_name,
        "section": section,
        "training": {k: v for k, v in params.items() if k not in RUN_ONLY},
        "dataset": config["datasets"][dataset],
        "seed": config["seed"],
        "data": [sha256_file(processed / "catalog.parquet"), sha256_file(processed / "stats.json")],
        "code": _training_code_digest(),  # a fixed trainer must not resume a run of the old one
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _training_code_digest() -> str:
    pkg = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in [pkg / "train.py", *sorted((pkg / "models").glob("*.py"))]:
        h.update(f.read_bytes())
    return h.hexdigest()


def _opt_tensors(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, {"param_groups": sd["param_groups"]}


def _restore_opt(opt: torch.optim.Optimizer, tensors: dict, groups: dict) -> None:
    state: dict = {}
    for name, v in tensors.items():
        if name.startswith("opt."):
            _, pid, k = name.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups["param_groups"]})


def _trained_by() -> str:
    """Which process trained an epoch (history.csv): a resumed run's epochs name more than one."""
    job = os.environ.get("SLURM_JOB_ID")
    return f"slurm:{job}" if job else f"pid:{os.getpid()}@{socket.gethostname()}"


def train_model(model_name: str, dataset: str, config: dict, processed_dir, out_dir, threads: int | None = None) -> dict:
    """Train `model_name` on `dataset`; write model.safetensors, model.json, history.csv into out_dir."""
    t_start = time.time()
    processed_dir, out_dir = Path(processed_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = training_params(model_name, config)
    ds_cfg = dataset_config(config, dataset)
    proc = ProcessedDataset(processed_dir)
    in_chans, cutout = check_inputs(proc, ds_cfg, dataset)
    label = proc.stats["label_column"]
    train_rows, val_rows = proc.split("train"), proc.split("val")
    if len(train_rows) < 2 or len(val_rows) < 1:
        raise TrainingError(f"{processed_dir}: {len(train_rows)} train / {len(val_rows)} val rows; need >= 2 / >= 1")

    torch.set_num_threads(int(threads or params["threads"]))
    if params["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = pick_device(params["device"])
    cuda = device.type == "cuda"
    amp = bool(params["amp"]) and cuda
    seed = derive_seed(config["seed"], model_name, dataset)
    torch.manual_seed(seed)

    net = build_model(model_name, config, in_chans, cutout)
    head, n_bins = head_of(model_name, config)
    z_train = train_rows[label].to_numpy(dtype=float)
    z_val = val_rows[label].to_numpy(dtype=float)
    grid = pdf_grid(model_name, config, dataset, n_bins, z_train) if head == "pdf" else None
    label_loc, label_scale = float(np.mean(z_train)), float(np.std(z_train)) or 1.0
    net.set_normalization(proc.stats["band_mean"], proc.stats["band_std"], label_loc, label_scale, grid)
    kind, section = model_section(model_name, config)
    init = {"weights": "scratch"}
    if kind == "architecture" and section.get("weights"):
        init = load_local_weights(net.body, section["weights"], model_name)
    net.to(device)
    if cuda and params["channels_last"]:
        net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    bs = int(params["batch_size"])
    train_set = ShardImages(proc, train_rows, label, augment=bool(params["augment"]), seed=seed)
    sampler = EpochSampler(len(train_set), seed)
    # drop_last: a last batch of one image breaks BatchNorm in training mode
    loader = make_loader(train_set, bs, params, device, sampler=sampler, drop_last=len(train_set) > bs)
    val_loader = make_loader(ShardImages(proc, val_rows, label, False, seed), max(bs, 256), params, device)
    steps_per_epoch = len(loader)
    epochs = int(params["epochs"])
    total_steps = epochs * steps_per_epoch
    warmup = int(round(params["warmup_epochs"] * steps_per_epoch))

    fingerprint = _fingerprint(model_name, dataset, config, params, processed_dir)
    state = {"epoch": 0, "history": [], "best_nmad": None, "best_epoch": None, "bad_epochs": 0, "stopped": False}
    best = {k: v.detach().clone() for k, v in net.state_dict().items()}
    last_path = out_dir / "last.safetensors"
    if params["resume"] and last_path.exists():
        try:
            tensors, meta = load_checkpoint(last_path)
        except CheckpointError as exc:
            if params["on_corrupt_checkpoint"] != "restart":
                raise CheckpointError(
                    f"{exc}; delete it, or set training.on_corrupt_checkpoint: restart to start this job clean"
                ) from None
            log.warning("%s; starting clean (training.on_corrupt_checkpoint: restart)", exc)
        else:
            if meta.get("fingerprint") != fingerprint:
                log.warning("%s: saved for another configuration or data; starting clean", last_path)
            else:
                net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
                best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
                _restore_opt(opt, tensors, meta["optimizer"])
                if amp and meta.get("scaler"):
                    scaler.load_state_dict(meta["scaler"])
                state = meta["state"]
                log.info("%s/%s: resuming from %s after epoch %d of %d", model_name, dataset, last_path,
                         state["epoch"], epochs)

    log.info("%s/%s: %d train, %d val images (%d bands, %dx%d, input %d), head %s, %s on %s, %d threads, "
             "%d epochs max", model_name, dataset, len(train_rows), len(val_rows), in_chans, cutout, cutout,
             net.input_size, head, f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f}M params", device,
             torch.get_num_threads(), epochs)
    for epoch in range(state["epoch"], epochs):
        if state["stopped"]:
            break
        torch.manual_seed(derive_seed(seed, "epoch", epoch))  # dropout / drop-path: same with or without resume
        sampler.epoch = epoch
        net.train()
        t0, loss_sum, seen = time.time(), 0.0, 0
        lr = params["lr"]
        for step, (x, z) in enumerate(loader):
            lr = lr_at(epoch * steps_per_epoch + step, total_steps, params["lr"], warmup, params["schedule"],
                       params["min_lr_ratio"])
            for g in opt.param_groups:
                g["lr"] = lr
            x, z = x.to(device, non_blocking=True), z.to(device, non_blocking=True)
            if cuda and params["channels_last"]:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, enabled=amp):
                out = net(x)
            loss = net.loss(out, z)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"{model_name}/{dataset}: loss is {loss.item()} at epoch {epoch + 1}, step {step}; "
                    "lower the learning rate (training.lr or the model's lr)"
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if params["grad_clip"]:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(net.parameters(), params["grad_clip"])
            scaler.step(opt)
            scaler.update()
            loss_sum += float(loss.detach()) * len(z)
            seen += len(z)
        train_s = time.time() - t0
        val_nmad = nmad(predict_points(net, val_loader, device, amp), z_val)
        improved = state["best_nmad"] is None or val_nmad < state["best_nmad"]
        if improved:
            state.update(best_nmad=val_nmad, best_epoch=epoch + 1, bad_epochs=0)
            best = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            state["bad_epochs"] += 1
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "val_nmad": val_nmad,
            "lr": lr,
            "images_per_s": seen / max(train_s, 1e-9),
            "epoch_seconds": time.time() - t0,
            "best": improved,
            "trained_by": _trained_by(),
        }
        state["history"].append(row)
        state["epoch"] = epoch + 1
        if state["bad_epochs"] >= params["patience"]:
            state["stopped"] = True
        log.info("%s/%s epoch %d/%d loss %.4f val_nmad %.4f%s lr %.2e %.0f img/s %.1f s", model_name, dataset,
                 epoch + 1, epochs, row["train_loss"], val_nmad, " *" if improved else "", lr, row["images_per_s"],
                 row["epoch_seconds"])
        tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
        tensors.update({f"best.{k}": v for k, v in best.items()})
        opt_t, opt_meta = _opt_tensors(opt)
        tensors.update(opt_t)
        meta = {"fingerprint": fingerprint, "state": state, "optimizer": opt_meta,
                "scaler": scaler.state_dict() if amp else None, "model": model_name, "dataset": dataset}
        save_checkpoint(last_path, tensors, meta)
        write_json(out_dir / "last.json", {k: meta[k] for k in ("model", "dataset", "fingerprint", "state")})
        if state["stopped"]:
            log.info("%s/%s: early stop after epoch %d (no better val NMAD for %d epochs; best %.4f at epoch %d)",
                     model_name, dataset, epoch + 1, params["patience"], state["best_nmad"], state["best_epoch"])
            break

    net.load_state_dict(best)
    history = pd.DataFrame(state["history"])
    write_csv(out_dir / "history.csv", history)
    median_nmad = nmad(np.full_like(z_val, np.median(z_train)), z_val)
    rates = history["images_per_s"].to_numpy() if len(history) else np.array([np.nan])
    meta = {
        "model": model_name,
        "kind": kind,
        "dataset": dataset,
        "bands": list(proc.stats["bands"]),
        "in_chans": in_chans,
        "cutout": cutout,
        "input_size": net.input_size,
        "pixel_scale": proc.stats.get("pixel_scale"),
        "scaling": proc.stats.get("scaling"),
        "label_column": label,
        "head": head,
        "n_bins": n_bins,
        "grid": None if grid is None else [float(g) for g in grid],
        "band_mean": [float(v) for v in net.band_mean],
        "band_std": [float(v) for v in net.band_std],
        "label_standardization": {"loc": label_loc, "scale": label_scale,
                                  "note": "point heads predict (z - loc) / scale"},
        "architecture": section,
        "training": params,
        "init": init,
        "seed": seed,
        "device": str(device),
        "n_params": int(sum(p.numel() for p in net.parameters())),
        "n_train": len(train_rows),
        "n_val": len(val_rows),
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped"],
        "train_images_per_s": float(np.median(rates)),
        "metrics": {"val_nmad": state["best_nmad"], "val_nmad_train_median": median_nmad},
        "wall_seconds_this_run": time.time() - t_start,
        "config": config,
        "provenance": provenance(config, [processed_dir / "catalog.parquet", processed_dir / "stats.json"]),
    }
    meta = write_model(out_dir, net, meta)
    log.info("%s/%s: best val NMAD %.4f at epoch %d (training-median predictor %.4f); wrote %s", model_name, dataset,
             state["best_nmad"], state["best_epoch"], median_nmad, out_dir / "model.safetensors")
    return meta
