"""The package's own import graph, read from the source with `ast` (nothing is imported), and its layer order.

Two users: the layout test (tests/core/test_layout.py: no cycle, and every import goes down the layers) and the
training resume digest (deepred.training.resume: the code whose change must refuse a resume is every module the
trainer imports, transitively, found here rather than listed by hand).

Every import counts: module level, inside functions, and under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = "deepred"
PACKAGE_DIR = Path(__file__).resolve().parents[1]

# The stages, lowest first: a module may import its own stage and the stages before it, never one after it.
# `deepred` itself (the CLI and the one-release aliases) sits above them all.
LAYERS = (
    "core",  # torch-free basics: io, logs, seeds, schema, model names, metrics, provenance
    "contracts",  # the files stages exchange: config, processed data, predictions, model.json
    "fetch",  # downloads, archives, pins and checksums of real survey files
    "workflow",  # torch-free: path patterns, targets and rerun triggers the rules call; the SLURM preflight
    "simulate",  # the survey simulator (the default data)
    "cutouts",  # catalogue-driven cutouts from survey frames, tiles and services
    "data",  # raw readers and normalization into the data contract
    "features",  # features measured on the cutouts (sep photometry), once per dataset
    "models",  # networks: timm backbones, neural baselines, heads, registry, checkpoints
    "pdfs",  # PDF calibration, qp ensembles
    "baselines",  # HOG+SVR and photometry (feature baselines)
    "training",  # the trainer, its loader and its resume checkpoint
    "predict",  # any trained model behind one interface, ensembles, users' own cutouts, RAIL
    "explain",  # SHAP attributions, localization scores and controls
    "results",  # metrics tables, figures, transfer, scale study, archive
)


def module_name(path: Path) -> str:
    parts = path.resolve().relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=1)
def package_modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _imported(name: str, path: Path, node: ast.AST) -> list[str]:
    """The package modules one import statement names (a `from X import y` names X.y when y is a module)."""
    modules = package_modules()
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the importing module's package
            package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    found = []
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target.startswith(PACKAGE):
            found.append(target)
    return found


@lru_cache(maxsize=None)
def imports_of(name: str) -> frozenset[str]:
    """The package modules that module `name` imports anywhere in its source (itself excluded)."""
    path = package_modules()[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    found = {t for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for t in _imported(name, path, node)}
    found.discard(name)
    return frozenset(found)


def closure(name: str) -> list[str]:
    """`name` and every package module it imports, transitively, with the packages Python runs on the way
    (`deepred.core` before `deepred.core.io`), sorted."""
    seen, todo = set(), [name]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(imports_of(module))
            todo.extend(".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1))
    return sorted(seen)


def stage(name: str) -> str | None:
    """The layer a module belongs to (None: the package face, `deepred` and its top-level modules)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None
