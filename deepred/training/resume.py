"""The resume checkpoint of a training job (last.safetensors, written after every epoch): the weights, the
best weights, the optimizer state and the loop state, under a fingerprint of what the numbers depend on.

A rerun with the same configuration, data and trainer code continues after the last finished epoch and, on
CPU, ends with exactly the weights of an uninterrupted run (deepred.training.train seeds epoch e by (seed, e) alone).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from deepred.core.imports import closure, package_modules
from deepred.core.io import sha256_file, write_json
from deepred.core.model_names import RUN_ONLY_TRAINING_KEYS
from deepred.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from deepred.models.registry import model_section
from deepred.training.run import TrainingRun

log = logging.getLogger("deepred.training.train")

# The trainer's entry point: every package module it imports, transitively, is the trainer's code.
TRAINER_MODULE = "deepred.training.train"


def new_state() -> dict:
    """The loop state before the first epoch (saved in the checkpoint as JSON)."""
    return {"epoch": 0, "history": [], "best_nmad": None, "best_epoch": None, "bad_epochs": 0, "stopped": False}


def fingerprint(run: TrainingRun, config: dict, processed: Path) -> str:
    """What the numbers depend on: a resume is only made from a checkpoint of the same fingerprint."""
    _, section = model_section(run.model_name, config)
    key = {
        "model": run.model_name,
        "section": section,
        "training": {k: v for k, v in run.params.items() if k not in RUN_ONLY_TRAINING_KEYS},
        "dataset": config["datasets"][run.dataset],
        "seed": config["seed"],
        "n_train": len(run.train_rows),  # the scale study trains on nested subsets of one split
        "data": [sha256_file(processed / "catalog.parquet"), sha256_file(processed / "stats.json")],
        "code": trainer_code_digest(),
    }
    if run.hybrid:  # its head, control and the digest of its feature inputs (the trees' predictions among them)
        key["hybrid"] = run.hybrid
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def trainer_code_digest() -> str:
    """SHA-256 of every module the trainer imports, transitively (deepred.core.imports reads the imports with
    `ast`): a fixed trainer, metric, calibration or data contract must not resume a run of the old code."""
    h = hashlib.sha256()
    modules = package_modules()
    for name in closure(TRAINER_MODULE):
        h.update(name.encode() + b"\0" + modules[name].read_bytes())
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


def save_state(run: TrainingRun, path: Path, fingerprint: str, state: dict, best: dict) -> None:
    """last.safetensors (weights, best weights, optimizer, loop state) and its readable summary last.json."""
    tensors = {f"model.{k}": v for k, v in run.net.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in best.items()})
    opt_t, opt_meta = _opt_tensors(run.opt)
    tensors.update(opt_t)
    meta = {"fingerprint": fingerprint, "state": state, "optimizer": opt_meta,
            "scaler": run.scaler.state_dict() if run.amp else None, "model": run.model_name, "dataset": run.dataset}
    save_checkpoint(path, tensors, meta)
    write_json(path.with_name("last.json"), {k: meta[k] for k in ("model", "dataset", "fingerprint", "state")})


def restore_state(run: TrainingRun, path: Path, fingerprint: str) -> tuple[dict, dict] | None:
    """(loop state, best weights) of a checkpoint of the same fingerprint, its weights and optimizer state
    loaded into `run`; None to start clean (resume off, no checkpoint, another configuration, or a corrupt
    one with training.on_corrupt_checkpoint: restart)."""
    if not (run.params["resume"] and path.exists()):
        return None
    try:
        tensors, meta = load_checkpoint(path)
    except CheckpointError as exc:
        if run.params["on_corrupt_checkpoint"] != "restart":
            raise CheckpointError(
                f"{exc}; delete it, or set training.on_corrupt_checkpoint: restart to start this job clean"
            ) from None
        log.warning("%s; starting clean (training.on_corrupt_checkpoint: restart)", exc)
        return None
    if meta.get("fingerprint") != fingerprint:
        log.warning("%s: saved for another configuration or data; starting clean", path)
        return None
    run.net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    _restore_opt(run.opt, tensors, meta["optimizer"])
    if run.amp and meta.get("scaler"):
        run.scaler.load_state_dict(meta["scaler"])
    log.info("%s/%s: resuming from %s after epoch %d of %d", run.model_name, run.dataset, path,
             meta["state"]["epoch"], run.epochs)
    return meta["state"], best
