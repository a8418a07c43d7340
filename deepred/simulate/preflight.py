"""Can every simulated dataset of a config be made? Checked before Snakemake starts a job.

A band the preset lacks would fail only inside the simulate job, after Snakemake has deleted the dataset's raw
files (and so, downstream, made every model stale). The check reads the presets (surveycodex: 0.6 s of imports),
so its verdict is cached under `.snakemake/` by a digest of the simulated datasets' presets and bands.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from deepred.contracts.config import ConfigError
from deepred.core.verdicts import cached_check


def _simulated(config: dict) -> dict[str, tuple[str, list[str]]]:
    return {name: (ds["source"]["preset"], list(ds["bands"])) for name, ds in config["datasets"].items()
            if ds["source"]["kind"] == "simulate"}


def band_problems(config: dict) -> list[str]:
    from deepred.simulate.surveys import get_preset, presets  # here: 0.6 s spared when the verdict is cached

    problems = []
    for name, (preset, bands) in _simulated(config).items():
        if preset not in presets():
            continue  # the schema names the presets
        have = list(get_preset(preset).bands)
        missing = [b for b in bands if b not in have]
        if missing:
            problems.append(f"config key 'datasets.{name}.bands': preset '{preset}' has no band "
                            f"{', '.join(missing)}; it has {', '.join(have)}")
    return problems


def check_bands(config: dict, cache_dir: str | Path | None = None) -> None:
    """Raise ConfigError naming every simulated dataset whose bands its preset cannot render (cached)."""
    simulated = _simulated(config)
    if not simulated:
        return

    def check():
        problems = band_problems(config)
        if problems:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))

    key = hashlib.sha256(json.dumps(simulated, sort_keys=True).encode()).hexdigest()[:32]
    cached_check(cache_dir, "bands", key, check, "every simulated dataset's bands are in its preset")
