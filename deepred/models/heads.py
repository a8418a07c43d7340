"""RedshiftNet: a body network plus the redshift head, with the input and label standardization inside.

- Input: per-band standardization with the training pixels' mean/std from stats.json (buffers, so they
  travel with the weights), then symmetric zero padding up to `input_size` (for Swin/Mixer patch and
  window sizes; zero is the standardized sky level). Pixels are never resampled.
- Head "point": one output, the label in units of the training label distribution
  ((z - label_loc) / label_scale, recorded in model.json); loss Huber/MSE/L1 on that.
- Head "pdf": logits over `n_bins` redshift bin centres (`grid`); the PDF is their softmax; loss is the
  cross-entropy against a target that splits each label between its two neighbouring bins (so the
  target's mean is the label exactly). Summaries: mean, median, mode, 68% central interval.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepred.contracts.predictions import pdf_quantiles, pdf_summary  # noqa: F401 (torch-free home; importable here)

HEADS = ("point", "pdf")
LOSSES = ("huber", "mse", "l1")


def make_grid(lo: float, hi: float, n_bins: int) -> np.ndarray:
    """n_bins bin centres spanning [lo, hi] (first and last centre on the interval ends)."""
    if not hi > lo or n_bins < 2:
        raise ValueError(f"redshift grid needs hi > lo and n_bins >= 2, got [{lo}, {hi}] with {n_bins} bins")
    return np.linspace(lo, hi, n_bins)


def soft_targets(z: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B, K) targets: each label shared linearly between its two neighbouring bin centres."""
    k = grid.numel()
    zc = z.clamp(grid[0], grid[-1])
    hi = torch.searchsorted(grid, zc.contiguous()).clamp(1, k - 1)
    lo = hi - 1
    w_hi = (zc - grid[lo]) / (grid[hi] - grid[lo])
    t = torch.zeros(z.shape[0], k, dtype=grid.dtype, device=z.device)
    t.scatter_(1, lo[:, None], (1 - w_hi)[:, None])
    t.scatter_add_(1, hi[:, None], w_hi[:, None])
    return t


class RedshiftNet(nn.Module):
    """body: (B, C, input_size, input_size) -> (B, num_outputs); see the module docstring."""

    def __init__(self, body: nn.Module, *, head: str, in_chans: int, cutout: int, input_size: int,
                 n_bins: int | None = None, loss: str = "huber"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head '{head}'; known: {', '.join(HEADS)}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss '{loss}'; known: {', '.join(LOSSES)}")
        if input_size < cutout:
            raise ValueError(f"input_size {input_size} is smaller than the cutout {cutout}")
        self.body, self.head, self.in_chans, self.cutout, self.input_size = body, head, in_chans, cutout, input_size
        self.loss_name = loss
        self.num_outputs = n_bins if head == "pdf" else 1
        self.register_buffer("band_mean", torch.zeros(in_chans))
        self.register_buffer("band_std", torch.ones(in_chans))
        self.register_buffer("label_loc", torch.zeros(()))
        self.register_buffer("label_scale", torch.ones(()))
        if head == "pdf":
            self.register_buffer("grid", torch.as_tensor(make_grid(0.0, 1.0, n_bins), dtype=torch.float32))

    def set_normalization(self, band_mean, band_std, label_loc: float, label_scale: float, grid=None) -> None:
        self.band_mean.copy_(torch.as_tensor(band_mean, dtype=torch.float32))
        self.band_std.copy_(torch.as_tensor(np.maximum(np.asarray(band_std, dtype=float), 1e-6), dtype=torch.float32))
        self.label_loc.fill_(float(label_loc))
        self.label_scale.fill_(max(float(label_scale), 1e-6))
        if self.head == "pdf":
            if grid is None or len(grid) != self.grid.numel():
                raise ValueError(f"pdf head needs a grid of {self.grid.numel()} bin centres")
            self.grid.copy_(torch.as_tensor(grid, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(x))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Standardized, padded body input of a (B, in_chans, cutout, cutout) batch."""
        if x.ndim != 4 or x.shape[1] != self.in_chans or x.shape[-1] != self.cutout or x.shape[-2] != self.cutout:
            raise ValueError(
                f"input of shape {tuple(x.shape)}: this model takes (B, {self.in_chans}, {self.cutout}, {self.cutout})"
            )
        x = (x - self.band_mean.view(1, -1, 1, 1)) / self.band_std.view(1, -1, 1, 1)
        pad = self.input_size - self.cutout
        if pad:
            x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
        return x

    def loss(self, out: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = out.float()
        if self.head == "pdf":
            return -(soft_targets(z, self.grid) * F.log_softmax(out, dim=1)).sum(1).mean()
        t = (z - self.label_loc) / self.label_scale
        fn = {"huber": F.huber_loss, "mse": F.mse_loss, "l1": F.l1_loss}[self.loss_name]
        return fn(out[:, 0], t)

    def point(self, out: torch.Tensor) -> torch.Tensor:
        """(B,) redshift point estimate: the de-standardized output, or the PDF mean."""
        out = out.float()
        if self.head == "pdf":
            return F.softmax(out, dim=1) @ self.grid
        return out[:, 0] * self.label_scale + self.label_loc


class PointModule(nn.Module):
    """(B, C, H, W) -> (B, 1) redshift point estimate, for attribution methods (SHAP)."""

    def __init__(self, net: RedshiftNet):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.point(self.net(x))[:, None]
