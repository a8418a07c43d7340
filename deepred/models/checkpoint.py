"""Checkpoints as safetensors (never pickle) and the trained-model loader every later stage uses.

- Resume state (`last.safetensors`): one file holding weights, best weights and optimizer tensors, with
  the JSON state (epoch, history, early-stopping counters, optimizer hyper-parameters) and a SHA-256 of
  the tensor bytes in the safetensors header, so the file is self-verifying and written in one atomic rename.
- Final model (`model.safetensors` + `model.json`): model.json holds the resolved config, architecture,
  head, grid, normalization, metrics, provenance and the SHA-256 of model.safetensors, checked on load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from deepred.contracts.model_json import NEURAL, WEIGHTS_FILE, read_verified_card, write_card
from deepred.core.io import atomic_path
from deepred.models.heads import PointModule, RedshiftNet, pdf_summary
from deepred.models.registry import build_model


class CheckpointError(ValueError):
    """A checkpoint is unreadable, corrupt or does not match; the message names the file."""


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Atomically write tensors plus a JSON `meta` and the tensor digest into one safetensors file."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    header = {"deepred_meta": json.dumps(meta, sort_keys=True, default=str), "tensors_sha256": tensors_digest(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of a file written by save_checkpoint; CheckpointError naming the file otherwise."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from exc
    if "deepred_meta" not in header or "tensors_sha256" not in header:
        raise CheckpointError(f"{path}: not a DeepRed checkpoint (no deepred_meta/tensors_sha256 in its header)")
    if tensors_digest(tensors) != header["tensors_sha256"]:
        raise CheckpointError(f"{path}: corrupt checkpoint (tensor SHA-256 does not match its header)")
    return tensors, json.loads(header["deepred_meta"])


def write_model(model_dir: str | Path, net: RedshiftNet, meta: dict) -> dict:
    """model.safetensors (weights + buffers) then model.json (meta + the weights' SHA-256); returns the card."""
    weights = Path(model_dir) / WEIGHTS_FILE[NEURAL]
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": "deepred-redshiftnet"})
    return write_card(model_dir, NEURAL, dict(meta, weights_file=weights.name))


@dataclass
class TrainedModel:
    meta: dict
    net: RedshiftNet
    model_dir: Path

    @property
    def head(self) -> str:
        return self.net.head

    @property
    def grid(self) -> np.ndarray | None:
        return self.net.grid.cpu().numpy().astype(float) if self.net.head == "pdf" else None

    def point_module(self) -> PointModule:
        """nn.Module (B, C, H, W) -> (B, 1): the redshift point estimate (the PDF mean for pdf heads)."""
        return PointModule(self.net).eval()

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 256, features: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
        """z_pred for float32 (N, C, H, W) images (+ z_mean, z_median, z_mode, z_lo68, z_hi68, pdf for pdf heads);
        a hybrid also takes the images' photometric features (N, F)."""
        images = np.asarray(images, dtype=np.float32)
        shape = (self.net.in_chans, self.net.cutout, self.net.cutout)
        if images.ndim != 4 or images.shape[1:] != shape:
            raise ValueError(
                f"{self.model_dir}: images of shape {images.shape}; the model takes (N, {shape[0]}, {shape[1]}, "
                f"{shape[2]}) ({shape[0]} bands {self.meta.get('bands')}, {shape[1]}x{shape[2]} cutouts)"
            )
        device = next(self.net.parameters()).device
        outs = []
        for s in range(0, len(images), batch_size):
            extra = [] if features is None else [  # a copy: the features may be a read-only view
                torch.from_numpy(np.array(features[s : s + batch_size], dtype=np.float32)).to(device)]
            outs.append(self.net(torch.from_numpy(images[s : s + batch_size]).to(device), *extra).float().cpu())
        out = torch.cat(outs) if outs else torch.zeros((0, self.net.num_outputs))
        if self.net.head == "point":
            return {"z_pred": self.net.point(out).numpy().astype(float)}
        pdf = torch.softmax(out, dim=1).numpy().astype(float)
        res = pdf_summary(pdf, self.grid)
        res["z_pred"] = res["z_mean"]  # point estimate of a pdf head: its mean (as point_module)
        res["pdf"] = pdf
        return res


def load_trained(model_dir: str | Path) -> TrainedModel:
    """The trained network of results/models/{model}/{dataset}/, its weights verified against model.json."""
    model_dir = Path(model_dir)
    meta, weights = read_verified_card(model_dir, NEURAL, CheckpointError, "train the model first")
    net = build_model(meta["model"], meta["config"], int(meta["in_chans"]), int(meta["cutout"]))
    try:
        net.load_state_dict(load_file(str(weights)), strict=True)
    except (SafetensorError, RuntimeError) as exc:
        raise CheckpointError(f"{weights}: does not fit model '{meta['model']}' ({exc})") from exc
    return TrainedModel(meta=meta, net=net.eval(), model_dir=model_dir)
