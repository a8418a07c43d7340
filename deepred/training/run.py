"""One training job's working set (TrainingRun) and the schedule facts it derives from its params.

Its own module so that the trainer (deepred.training.train) and the resume checkpoint
(deepred.training.resume) both import it, one way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from deepred.contracts.processed import ProcessedDataset
from deepred.models.heads import RedshiftNet
from deepred.training.loader import EpochSampler


def lr_at(step: int, total: int, base: float, warmup: int, schedule: str, min_ratio: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    t = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def uses_channels_last(params: dict, device: torch.device) -> bool:
    """Channels-last memory format: on CUDA by `channels_last`, on the CPU by `cpu_channels_last` (measured per
    backbone by benchmarks/bench_cpu_speed.py, docs/speed.md)."""
    return bool(params.get("channels_last" if device.type == "cuda" else "cpu_channels_last", False))


@dataclass
class TrainingRun:
    """One training job's working set, built by setup_run (timm's train.py keeps these in main's locals)."""

    model_name: str
    dataset: str
    params: dict  # training_params: `training` with the model's overrides
    seed: int
    device: torch.device
    amp: bool
    proc: ProcessedDataset
    in_chans: int
    cutout: int
    train_rows: pd.DataFrame
    val_rows: pd.DataFrame
    net: RedshiftNet
    init: dict  # how the weights started: {"weights": "scratch"} or what load_local_weights did
    grid: np.ndarray | None  # pdf heads' bin centres
    label_loc: float  # point heads predict (z - label_loc) / label_scale
    label_scale: float
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    sampler: EpochSampler
    loader: DataLoader
    val_loader: DataLoader
    hybrid: dict | None = None  # a hybrid's model.json record (deepred.models.hybrid.hybrid_record)

    @property
    def label(self) -> str:
        return self.proc.stats["label_column"]

    @property
    def epochs(self) -> int:
        return int(self.params["epochs"])

    @property
    def amp_dtype(self) -> torch.dtype:
        """bfloat16: fp32's exponent range, so no loss scaling; float16 trains with the GradScaler."""
        return getattr(torch, self.params.get("amp_dtype", "bfloat16"))

    @property
    def channels_last(self) -> bool:
        return uses_channels_last(self.params, self.device)

    def lr(self, step: int) -> float:
        """The learning rate of a global step: linear warm-up, then the schedule over every epoch's steps."""
        p, steps = self.params, len(self.loader)
        warmup = int(round(p["warmup_epochs"] * steps))
        return lr_at(step, self.epochs * steps, p["lr"], warmup, p["schedule"], p["min_lr_ratio"])
