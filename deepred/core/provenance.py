"""Provenance written next to every model and table: config, code version, packages, input checksums."""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path

from deepred import __version__
from deepred.core.io import sha256_file

PACKAGES = (
    "deepred", "numpy", "torch", "torchvision", "timm", "astropy", "pandas", "pyarrow", "scikit-learn",
    "scikit-image", "shap", "snakemake", "galsim", "lenstronomy", "speclite", "surveycodex", "safetensors",
)


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def code_version() -> str:
    """git describe of the checkout when there is one, else the package version plus a hash of its source."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=root, capture_output=True, text=True, timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{__version__}+src.{source_hash()[:12]}"


def source_hash() -> str:
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent
    for f in sorted(pkg.rglob("*.py")):
        h.update(f.relative_to(pkg).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def provenance(config: dict | None = None, inputs: list[str | Path] | None = None) -> dict:
    """A JSON-ready record: resolved config, code version, packages and SHA-256 of each input file."""
    checksums = {}
    for p in inputs or []:
        p = Path(p)
        if p.is_file():
            checksums[str(p)] = sha256_file(p)
        elif p.is_dir():
            for f in sorted(x for x in p.rglob("*") if x.is_file()):
                checksums[str(f)] = sha256_file(f)
    return {
        "code_version": code_version(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "config": config,
        "inputs": checksums,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
