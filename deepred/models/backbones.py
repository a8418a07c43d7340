"""DeepRed backbones through timm: one factory, small CPU variants, local weights with stem adaptation.

Every backbone is made with `timm.create_model(timm_name, pretrained=False, in_chans=bands,
num_classes=num_outputs, **timm_kwargs)`. Families that embed patches (Swin, MLP-Mixer, ViT) also get
`img_size` = the network input size (the cutout padded up to a multiple of `pad_multiple`, see
deepred.models.heads.RedshiftNet).

timm's named MLP-Mixer and EfficientNet variants fix their sizes (passing e.g. `patch_size` again is a
TypeError), so two generic entries are registered with timm here, sized entirely by `timm_kwargs`:
- `deepred_mixer`: timm's MlpMixer (patch_size, num_blocks, embed_dim, mlp_ratio, ...).
- `deepred_efficientnet`: timm's EfficientNet-B0 block layout scaled by channel_multiplier and
  depth_multiplier (the compound scaling of Tan & Le 2019), as timm builds B0..B8.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

import timm
import torch
from timm.layers import get_act_layer
from timm.models import register_model
from timm.models._manipulate import adapt_input_conv
from torch import nn

log = logging.getLogger("deepred.backbones")

# timm modules whose models take img_size (patch embeddings / position tables sized to the input).
IMG_SIZE_MODULES = (
    "timm.models.swin_transformer",
    "timm.models.swin_transformer_v2",
    "timm.models.mlp_mixer",
    "timm.models.vision_transformer",
    "deepred.models.backbones",
)


class BackboneError(ValueError):
    """A backbone cannot be built as configured; the message names the architecture and the problem."""


@register_model
def deepred_mixer(pretrained=False, **kwargs):
    from timm.models.mlp_mixer import MlpMixer

    if pretrained:
        raise BackboneError("deepred_mixer has no pretrained weights; use the architecture's `weights` key")
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("pretrained_cfg") and k != "cache_dir"}
    kwargs.setdefault("patch_size", 5)
    return MlpMixer(**kwargs)


@register_model
def deepred_efficientnet(pretrained=False, channel_multiplier=0.5, depth_multiplier=0.5, **kwargs):
    from timm.models.efficientnet import _gen_efficientnet

    if pretrained:
        raise BackboneError("deepred_efficientnet has no pretrained weights; use the architecture's `weights` key")
    kwargs.pop("img_size", None)  # convolutional: any input size
    if isinstance(kwargs.get("act_layer"), str):
        kwargs["act_layer"] = get_act_layer(kwargs["act_layer"])
    return _gen_efficientnet(
        "efficientnet_b0", channel_multiplier=channel_multiplier, depth_multiplier=depth_multiplier, **kwargs
    )


def unknown_timm_name(timm_name: str) -> str:
    """The message for a name timm does not know, with timm's closest names."""
    close = difflib.get_close_matches(timm_name, timm.list_models(), n=4, cutoff=0.6)
    return f"timm has no model '{timm_name}'" + (f" (did you mean {', '.join(close)}?)" if close else
                                                   "; timm.list_models('*resnet*') lists names")


def needs_img_size(timm_name: str) -> bool:
    try:
        module = timm.models.model_entrypoint(timm_name).__module__
    except RuntimeError:
        return False
    return module in IMG_SIZE_MODULES


def input_size(cutout: int, pad_multiple: int) -> int:
    """The cutout padded up to the next multiple of pad_multiple."""
    return -(-cutout // pad_multiple) * pad_multiple


def create_backbone(arch: str, arch_cfg: dict, in_chans: int, img_size: int, num_outputs: int) -> nn.Module:
    """The timm network of one architecture config entry: (B, in_chans, img_size, img_size) -> (B, num_outputs)."""
    name = arch_cfg["timm_name"]
    if not timm.is_model(name):
        raise BackboneError(f"architecture '{arch}': {unknown_timm_name(name)}")
    kwargs = dict(arch_cfg.get("timm_kwargs") or {})
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()}
    if needs_img_size(name):
        kwargs["img_size"] = img_size
    try:
        net = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_outputs, **kwargs)
    except (TypeError, AssertionError, ValueError, RuntimeError) as exc:
        raise BackboneError(
            f"architecture '{arch}': timm.create_model('{name}', in_chans={in_chans}, num_classes={num_outputs}, "
            f"**{kwargs}) failed: {exc}"
        ) from exc
    out_layer = net.get_classifier()
    if arch_cfg.get("zero_init_head") and isinstance(out_layer, nn.Linear):
        # start from a constant prediction (the label centre, or a flat PDF): timm's random output layer put
        # EfficientNet's first predictions several label sigmas off and cost it its first epochs (Swin, whose
        # head timm already initializes small, trained worse from zero: hence a per-architecture switch)
        with torch.no_grad():
            out_layer.weight.zero_()
            out_layer.bias.zero_()
    with torch.no_grad():  # fail now, not in the first training step, when the input size does not fit
        try:
            net.eval()(torch.zeros(1, in_chans, img_size, img_size))
        except Exception as exc:
            raise BackboneError(
                f"architecture '{arch}' ({name}) does not accept {img_size}x{img_size} inputs: {exc}; "
                "adjust pad_multiple or the patch/window sizes in timm_kwargs"
            ) from exc
    return net.train()


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # no arbitrary pickle
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BackboneError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_local_weights(body: nn.Module, path: str | Path, arch: str) -> dict:
    """Load a local weights file into `body`, adapting what does not fit; log and return what was done.

    A first convolution with another band count is adapted with timm's adapt_input_conv (ImageNet RGB
    weights repeated/summed over the bands and rescaled); tensors of other shapes (the classifier, position
    tables of another input size) are left at their fresh initialization.
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"architecture '{arch}': weights file {path} does not exist")
    src = _read_weights(path)
    own = body.state_dict()
    new, adapted, skipped = {}, [], []
    for k, v in src.items():
        if k not in own:
            skipped.append(f"{k} (not in the model)")
            continue
        want = own[k].shape
        if v.shape == want:
            new[k] = v
        elif v.ndim == 4 and len(want) == 4 and v.shape[0] == want[0] and v.shape[2:] == want[2:]:
            new[k] = adapt_input_conv(want[1], v.float())
            adapted.append(f"{k}: {v.shape[1]} -> {want[1]} input channels")
        else:
            skipped.append(f"{k} (shape {tuple(v.shape)} vs {tuple(want)})")
    missing = sorted(set(own) - set(new))
    body.load_state_dict(new, strict=False)
    log.info("architecture %s: loaded %d/%d tensors from %s", arch, len(new), len(own), path)
    for a in adapted:
        log.info("architecture %s: adapted stem %s", arch, a)
    for s in skipped:
        log.info("architecture %s: skipped %s", arch, s)
    if missing:
        log.info("architecture %s: %d tensors keep their fresh initialization: %s", arch, len(missing),
                 ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    return {"path": str(path), "loaded": len(new), "adapted": adapted, "skipped": skipped, "fresh": missing}
