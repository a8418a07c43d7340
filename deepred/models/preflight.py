"""Can every enabled network of a config be built for every dataset? Checked before Snakemake starts a job.

Snakemake deletes a job's old outputs before it runs the job, so a config that can never train (a timm
name timm does not know, a `timm_kwargs` key its builder rejects, a patch size that does not fit the
cutout) would cost the user the model it replaces. `check_networks` builds each (network, dataset) pair
on torch's meta device (shapes only: no memory, no arithmetic; about 0.1 s a pair) and reports every
failure by its config key. The verdict is cached under the workflow's `.snakemake/` by a digest of what it
depends on, so only the first Snakemake call after an edit pays the seconds timm takes to import.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from importlib import metadata, resources
from pathlib import Path

from deepred.contracts.config import ConfigError
from deepred.core.model_names import enabled_networks, parse_hybrid
from deepred.core.verdicts import cached_check
from deepred.models.registry import build_model, model_section


def _section_key(name: str, config: dict) -> str:
    hybrid = parse_hybrid(name, config)
    if hybrid:
        return f"architectures.{hybrid[0]} (as {name}, hybrid.backbones)"
    return f"architectures.{name}" if name in config.get("architectures", {}) else f"baselines.{name}"


def _cache_key(config: dict, networks: list[str]) -> str:
    """Digest of everything a build depends on: the network sections, band counts and cutouts, the loss,
    the installed timm/torch and the source of deepred.models."""
    sections = {n: model_section(n, config)[1] for n in networks}
    hybrid = [config.get("hybrid"), config.get("baselines", {}).get("photometry")] if config.get("hybrid") else []
    shapes = sorted({(len(d["bands"]), int(d["cutout"])) for d in config["datasets"].values()})
    code = b"".join(f.read_bytes() for f in sorted(resources.files("deepred.models").iterdir(), key=str)
                    if f.name.endswith(".py"))
    payload = json.dumps([sections, hybrid, shapes, config.get("training", {}).get("loss"),
                          metadata.version("timm"), metadata.version("torch")], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode() + code).hexdigest()[:32]


def unknown_timm_names(config: dict) -> dict[str, str]:
    """{architecture: problem} for enabled architectures whose timm name timm does not know, with close names."""
    import timm

    from deepred.models.backbones import unknown_timm_name  # importing it registers deepred_mixer/_efficientnet

    return {name: f"config key 'architectures.{name}.timm_name': {unknown_timm_name(arch['timm_name'])}"
            for name, arch in config.get("architectures", {}).items()
            if arch.get("enabled", True) and not timm.is_model(arch["timm_name"])}


def build_problems(config: dict, networks: list[str]) -> list[str]:
    """Build each network for each dataset's (bands, cutout) on the meta device; one line per failure."""
    import torch

    problems = []
    shapes = {}
    for ds_name, ds in config["datasets"].items():  # one build per distinct input shape
        shapes.setdefault((len(ds["bands"]), int(ds["cutout"])), ds_name)
    for net in networks:
        for (bands, cutout), ds_name in shapes.items():
            try:
                with torch.device("meta"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # meta tensors warn that initializing them is a no-op
                    build_model(net, config, bands, cutout)
            except Exception as exc:  # the builders raise TypeError, ValueError, AssertionError, ...
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                problems.append(f"config key '{_section_key(net, config)}': cannot be built for dataset "
                                f"'{ds_name}' ({bands} bands, {cutout} px): {msg}")
                break  # one dataset's failure is enough to name the key
    return problems


def check_networks(config: dict, cache_dir: str | Path | None = None) -> None:
    """Raise ConfigError naming every enabled network that cannot be built; cached by _cache_key."""
    networks = enabled_networks(config)
    if not networks:
        return

    def check():
        unknown = unknown_timm_names(config)
        problems = list(unknown.values()) + build_problems(config, [n for n in networks if n not in unknown])
        if problems:
            raise ConfigError("invalid configuration (networks that cannot be built):\n  - " + "\n  - ".join(problems))

    cached_check(cache_dir, "networks", _cache_key(config, networks), check,
                 "every enabled network builds for every dataset shape")
