"""The neural baselines the paper compares against: PhotoZ, NetZ, A1 and A3.

Every network maps (B, in_chans, img_size, img_size) -> (B, num_outputs) raw outputs (no softmax);
deepred.models.registry wraps it with the head ("point": num_outputs = 1; "pdf": logits over n_bins).

- PhotoZ (Pasquet et al. 2019, A&A 621, A26; layer list from the authors' public `network.py`):
  conv 5x5 (64) + PReLU, 2x2 average pooling, inception blocks I0 (48/64), I1 (64/92), pooling,
  I2 (92/128), I3 (92/128), pooling, I4 (92/128, no 5x5 branch), flatten, FC 1096 + ReLU twice,
  FC n_bins (180 in the paper; its softmax is the redshift PDF). Each inception block concatenates
  four branches: 1x1 (S2); 1x1 (S1) -> 3x3 (S2); 1x1 (S1) -> 5x5 (S2); 1x1 (S1) -> 2x2 average
  pooling (stride 1). All convolutions are "same" padded and followed by PReLU. `width` scales every
  channel count and `fc` sets the FC width, so the CPU default is a narrow copy of the same graph.
  The E(B-V) input of the original is left out (no dataset here carries it).
- NetZ (Schuldt et al. 2021, A&A 651, A55): two convolutional layers with 5x5 kernels, each followed
  by ReLU and 2x2 max pooling, then three fully connected layers (two hidden + the output), a point
  estimate. The paper's exact filter counts and FC widths are not in the public text available here:
  the channel/FC widths are config values (documented in docs/models.md "Baselines").
- A1 and A3: the paper does not define them publicly. They are two small literature-style image CNNs,
  so a reader can replace them once the paper's definition is known:
  * A1: LeNet-5 (LeCun et al. 1998) adapted to multi-band cutouts: conv 5x5 (6) -> max pool ->
    conv 5x5 (16) -> max pool -> FC 120 -> FC 84 -> output, with ReLU instead of tanh.
  * A3: a VGG-style CNN (Simonyan & Zisserman 2015) of three stages of two 3x3 conv + BatchNorm +
    ReLU with 2x2 max pooling (widths 16/32/64 by default), global average pooling, FC 128 + dropout,
    output; the shape of the CNNs of Hoyle (2016) and D'Isanto & Polsterer (2018) for photo-z.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from deepred.core.model_names import MODEL_TRAINING_KEYS

# Published sizes, for tests and for config/paper.yaml: (conv0, [(S1, S2) per inception block], FC).
PASQUET_CONV0 = 64
PASQUET_INCEPTION = ((48, 64), (64, 92), (92, 128), (92, 128), (92, 128))
PASQUET_FC = 1096
PASQUET_BINS = 180


class BaselineError(ValueError):
    """A baseline name or setting is invalid; the message names it and what is allowed."""


# The networks of the neural baselines by name (the names themselves: deepred.core.model_names.neural_baselines).
_BUILDERS: dict[str, type[nn.Module]] = {}


def register_baseline(name: str):
    """Class decorator: `name`'s network. Its constructor takes (in_chans, img_size, num_outputs) and, as
    keyword arguments, the keys of its config section that shape the layers."""

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        _BUILDERS[name] = cls
        return cls

    return register


def registered_baselines() -> tuple[str, ...]:
    return tuple(_BUILDERS)


def network_keys(cls: type[nn.Module]) -> set[str]:
    """The config keys a network takes: its constructor's arguments after (in_chans, img_size, num_outputs)."""
    return set(list(inspect.signature(cls).parameters)[3:])


def _scaled(n: int, width: float) -> int:
    return max(4, int(round(n * width)))


class ConvPReLU(nn.Sequential):
    """Same-padded convolution followed by a per-channel PReLU (Pasquet's conv2d)."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__(nn.Conv2d(cin, cout, k, padding=k // 2), nn.PReLU(cout, init=0.0))


class AvgPoolSame(nn.Module):
    """2x2 average pooling with TF "SAME" padding (stride 1 keeps the size; stride 2 rounds up)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        # Pad right/bottom and divide by the count of real pixels, as TF's SAME average pooling does.
        pad_w = 1 if self.stride == 1 else x.shape[-1] % 2
        pad_h = 1 if self.stride == 1 else x.shape[-2] % 2
        if pad_w or pad_h:
            ones = torch.ones_like(x[:1, :1])
            num = F.avg_pool2d(F.pad(x, (0, pad_w, 0, pad_h)), 2, self.stride)
            den = F.avg_pool2d(F.pad(ones, (0, pad_w, 0, pad_h)), 2, self.stride)
            return num / den
        return F.avg_pool2d(x, 2, self.stride)


class Inception(nn.Module):
    """Pasquet et al. 2019 inception block: 1x1 | 1x1->3x3 | 1x1->5x5 | 1x1->avgpool, concatenated."""

    def __init__(self, cin: int, s1: int, s2: int, with_5x5: bool = True):
        super().__init__()
        self.direct = ConvPReLU(cin, s2, 1)
        self.b3 = nn.Sequential(ConvPReLU(cin, s1, 1), ConvPReLU(s1, s2, 3))
        self.b5 = nn.Sequential(ConvPReLU(cin, s1, 1), ConvPReLU(s1, s2, 5)) if with_5x5 else None
        self.pool = nn.Sequential(ConvPReLU(cin, s1, 1), AvgPoolSame(1))
        self.out_channels = s2 * (3 if with_5x5 else 2) + s1

    def forward(self, x):
        parts = [self.direct(x)]
        if self.b5 is not None:
            parts.append(self.b5(x))
        parts += [self.b3(x), self.pool(x)]
        return torch.cat(parts, dim=1)


@register_baseline("photoz")
class PhotoZNet(nn.Module):
    """Pasquet et al. 2019 inception CNN (see module docstring)."""

    def __init__(self, in_chans: int, img_size: int, num_outputs: int, width: float = 1.0, fc: int = PASQUET_FC):
        super().__init__()
        c0 = _scaled(PASQUET_CONV0, width)
        blocks = [(_scaled(a, width), _scaled(b, width)) for a, b in PASQUET_INCEPTION]
        layers: list[nn.Module] = [ConvPReLU(in_chans, c0, 5), AvgPoolSame(2)]
        cin = c0
        for i, (s1, s2) in enumerate(blocks):
            block = Inception(cin, s1, s2, with_5x5=i < len(blocks) - 1)
            layers.append(block)
            cin = block.out_channels
            if i in (1, 3):  # pooling after I1 and I3, as in the original
                layers.append(AvgPoolSame(2))
        self.features = nn.Sequential(*layers)
        side = img_size
        for _ in range(3):
            side = -(-side // 2)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin * side * side, fc),
            nn.ReLU(inplace=True),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Linear(fc, num_outputs),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_baseline("netz")
class NetZ(nn.Module):
    """Schuldt et al. 2021: 2 x (conv 5x5 + ReLU + max pool 2x2), then 3 FC layers (2 hidden + output)."""

    def __init__(self, in_chans: int, img_size: int, num_outputs: int, channels=(32, 64), fc=(256, 64),
                 dropout: float = 0.0):
        super().__init__()
        if len(channels) != 2 or len(fc) != 2:
            raise BaselineError(f"netz: needs 2 conv widths and 2 hidden FC widths, got {channels} and {fc}")
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, c1, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        side = img_size // 2 // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, fc[0]), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc[0], fc[1]), nn.ReLU(inplace=True),
            nn.Linear(fc[1], num_outputs),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_baseline("a1")
class A1LeNet(nn.Module):
    """A1: LeNet-5 (LeCun et al. 1998) with ReLU, for multi-band cutouts."""

    def __init__(self, in_chans: int, img_size: int, num_outputs: int, channels=(6, 16), fc=(120, 84)):
        super().__init__()
        if len(channels) != 2 or len(fc) != 2:
            raise BaselineError(f"a1: needs 2 conv widths and 2 hidden FC widths, got {channels} and {fc}")
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, c1, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        side = ((img_size - 4) // 2 - 4) // 2
        if side < 1:
            raise BaselineError(f"a1: cutout {img_size} px is too small for two valid 5x5 conv + pool stages")
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, fc[0]), nn.ReLU(inplace=True),
            nn.Linear(fc[0], fc[1]), nn.ReLU(inplace=True),
            nn.Linear(fc[1], num_outputs),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_baseline("a3")
class A3VGG(nn.Module):
    """A3: VGG-style CNN, stages of 2 x (conv 3x3 + BN + ReLU) + max pool, GAP, FC + dropout, output."""

    def __init__(self, in_chans: int, img_size: int, num_outputs: int, channels=(16, 32, 64), fc: int = 128,
                 dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        for c in channels:
            for _ in range(2):
                layers += [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                cin = c
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(cin, fc), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc, num_outputs),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


# Keys of a baseline's config section that configure the head or the run, not the layers.
NON_NETWORK_KEYS = {"enabled", "head", "n_bins", "z_range", *MODEL_TRAINING_KEYS}


def build_baseline(name: str, in_chans: int, img_size: int, num_outputs: int, **cfg) -> nn.Module:
    """The network of baseline `name`: (B, in_chans, img_size, img_size) -> (B, num_outputs) raw outputs.

    `cfg` is the baseline's config section (config["baselines"][name]); keys that configure the
    head or the run rather than the layers are ignored here.
    """
    if name not in _BUILDERS:
        raise BaselineError(f"unknown neural baseline '{name}'; known: {', '.join(_BUILDERS)}")
    if in_chans < 1 or img_size < 8 or num_outputs < 1:
        raise BaselineError(
            f"{name}: in_chans={in_chans}, img_size={img_size}, num_outputs={num_outputs} must be >= 1, 8, 1"
        )
    cls = _BUILDERS[name]
    allowed = network_keys(cls)
    unknown = set(cfg) - allowed - NON_NETWORK_KEYS
    if unknown:
        raise BaselineError(f"{name}: unknown setting(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k in allowed}
    return cls(in_chans, img_size, num_outputs, **kwargs)


def baseline_z_range(config: dict, name: str, dataset: str) -> tuple[float, float]:
    """The redshift interval of a PDF baseline's bins on `dataset`: its per-dataset `z_range`
    entry, else the dataset's label_range (Pasquet et al. used [0, 0.4] for SDSS)."""
    section = config.get("baselines", {}).get(name, {})
    lo, hi = section.get("z_range", {}).get(dataset) or config["datasets"][dataset]["label_range"]
    return float(lo), float(hi)
