"""build_model: the one place that turns a model name into a RedshiftNet (backbone or neural baseline).

A model name is an architecture key of config["architectures"] (a timm backbone), a neural baseline
(deepred.core.model_names.neural_baselines; deepred.models.baselines.build_baseline, imported lazily), or a hybrid or
hybrid control (`hybrid_<architecture>[_<control>]`, deepred.models.hybrid): that architecture's section, kind "hybrid".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepred.contracts.config import ConfigError
from deepred.core.model_names import hybrid_control_models, hybrid_models, neural_baselines, parse_hybrid

if TYPE_CHECKING:
    from deepred.models.heads import RedshiftNet

DEFAULT_BINS = 100  # pdf heads of architectures without n_bins


def known_models(config: dict) -> list[str]:
    return (list(config.get("architectures", {})) + list(neural_baselines()) + hybrid_models(config)
            + hybrid_control_models(config))


def model_section(model_name: str, config: dict) -> tuple[str, dict]:
    """("architecture" | "baseline" | "hybrid", its config section: a hybrid's is its architecture's); unknown names
    list the known ones."""
    if model_name in config.get("architectures", {}):
        return "architecture", config["architectures"][model_name]
    hybrid = parse_hybrid(model_name, config)
    if hybrid and hybrid[0] in config.get("architectures", {}):
        return "hybrid", config["architectures"][hybrid[0]]
    if model_name in neural_baselines():
        return "baseline", config.get("baselines", {}).get(model_name, {})
    raise ConfigError(
        f"unknown architecture or neural baseline '{model_name}'; known: {', '.join(known_models(config))}"
    )


def head_of(model_name: str, config: dict) -> tuple[str, int | None]:
    """(head, n_bins) of a model: its section's `head` and `n_bins` (PhotoZ defaults to a 180-bin pdf)."""
    kind, section = model_section(model_name, config)
    default_head = "pdf" if model_name == "photoz" else "point"
    head = section.get("head", default_head)
    n_bins = int(section.get("n_bins", 180 if kind == "baseline" else DEFAULT_BINS)) if head == "pdf" else None
    return head, n_bins


def build_model(model_name: str, config: dict, in_chans: int, img_size: int) -> RedshiftNet:
    """A fresh RedshiftNet for `model_name` taking (B, in_chans, img_size, img_size) cutouts."""
    # torch/timm imported here, not at module level: the Snakefile reads known_models() at parse time,
    # in every Snakemake process (twice per SLURM job), and importing timm costs seconds there
    # imported here, not at the top: 2832 ms (measured, timm and torch) spared where this is not called
    from deepred.models.backbones import create_backbone, input_size
    from deepred.models.heads import RedshiftNet

    kind, section = model_section(model_name, config)
    head, n_bins = head_of(model_name, config)
    num_outputs = n_bins if head == "pdf" else 1
    loss = config.get("training", {}).get("loss", "huber")
    if kind == "hybrid":
        return _build_hybrid(model_name, config, in_chans, img_size, num_outputs, head, n_bins, loss)
    if kind == "architecture":
        size = input_size(img_size, int(section.get("pad_multiple", 1)))
        body = create_backbone(model_name, section, in_chans, size, num_outputs)
    else:
        from deepred.models.baselines import build_baseline  # the baselines area's module

        size = img_size
        body = build_baseline(model_name, in_chans, img_size, num_outputs, **section)
    return RedshiftNet(body, head=head, in_chans=in_chans, cutout=img_size, input_size=size, n_bins=n_bins, loss=loss)


def _build_hybrid(model_name: str, config: dict, in_chans: int, img_size: int, num_outputs: int, head: str,
                  n_bins: int | None, loss: str):
    """A HybridNet: the architecture's backbone without its classifier (the pooled embedding) and the fusion head."""
    # imported here, as in build_model: timm, torch and sep load only where a network is built
    from deepred.features.photometry import PhotometryParams, feature_names
    from deepred.models.backbones import create_backbone, input_size
    from deepred.models.hybrid import HybridNet

    arch, control = parse_hybrid(model_name, config)
    section, settings = config["architectures"][arch], config["hybrid"]
    size = input_size(img_size, int(section.get("pad_multiple", 1)))
    body = create_backbone(arch, section, in_chans, size, 0)  # num_classes=0: timm's pooled features
    params = PhotometryParams.from_config(config["baselines"]["photometry"], img_size)
    # + the photometric prediction as the last column; a saved config without `fusion` predates it: concat
    residual = settings.get("fusion", "concat") == "residual"
    n_features = len(feature_names([f"b{i}" for i in range(in_chans)], params)) + int(residual)
    return HybridNet(body, embed_dim=int(body.num_features), n_features=n_features, hidden=int(settings["hidden"]),
                     dropout=float(settings["dropout"]), image_branch=control != "noimage", residual=residual,
                     head=head,
                     in_chans=in_chans, cutout=img_size, input_size=size, n_bins=n_bins, loss=loss)
