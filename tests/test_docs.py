"""The README and docs/ name only files that exist, their links resolve, and the README stays a short guide.

A path counts when it starts with one of the repository's folders (PREFIXES) or is one of its top-level files
(TOP_LEVEL), wherever it is written: in backticks, in a code block, in a markdown link or in prose. Paths the
pipeline writes (results/, data/, logs/, the download locks, the benchmark JSON folder) and patterns with `{...}`
or `<...>` placeholders are not checked; a glob (`rules/*.smk`) must match at least one file. Markdown link
targets are also resolved as a browser would, relative to the file that holds them.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 160

PREFIXES = ("deepred/", "rules/", "workflow_scripts/", "tests/", "benchmarks/", "config/", "profiles/", "scripts/",
            "docs/", "envs/", "report/", ".ci/")
TOP_LEVEL = ("Snakefile", "Makefile", "config.yaml", "pyproject.toml", "requirements.lock")
# Written by a run, not part of a checkout: the run outputs, the locks of a first download, benchmark JSON.
RUN_OUTPUTS = ("results/", "data/", "logs/", "benchmarks/results/")
RUN_OUTPUT_PATTERNS = (re.compile(r"^config/pins/.*\.lock\.yaml$"),)

_START = r"(?<![\w./~$-])"  # not inside another path (.snakemake/deepred/, /path/to/profiles/...) or a word
PATH_RE = re.compile(_START + r"((?:" + "|".join(re.escape(p) for p in PREFIXES) + r")[^\s`'\"()\[\],;|]*)")
TOP_RE = re.compile(_START + r"(" + "|".join(re.escape(t) for t in TOP_LEVEL) + r")(?![\w/-])")
LINK_RE = re.compile(r"\]\(([^)\s]+)\)")
TRAILING = re.compile(r"(:\d+(-\d+)?)?[.,:;!?*]*$")  # `file.py:12`, end of a sentence, bold markers


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def repo_paths(text: str) -> set[str]:
    """The repository paths a markdown text names (placeholders and run outputs left out)."""
    found = set()
    for match in [*PATH_RE.finditer(text), *TOP_RE.finditer(text)]:
        path = TRAILING.sub("", match.group(1))
        if not path or "{" in path or "<" in path:
            continue
        if path.startswith(RUN_OUTPUTS) or any(p.match(path) for p in RUN_OUTPUT_PATTERNS):
            continue
        found.add(path)
    return found


def exists(path: str, base: Path = ROOT) -> bool:
    if any(c in path for c in "*?["):
        return any(base.glob(path))
    return (base / path).exists()


def link_targets(text: str) -> set[str]:
    """Relative markdown link targets (no URLs, no bare #anchors), without their #fragment."""
    targets = set()
    for match in LINK_RE.finditer(text):
        target = match.group(1).split("#")[0]
        if target and not re.match(r"^[a-z][a-z0-9+.-]*:", target):
            targets.add(target)
    return targets


def test_extractor_finds_paths_and_skips_outputs():
    sample = ("Run `python benchmarks/bench_gpu.py --config config/paper.yaml` (see deepred/core/imports.py:12, "
              "[the guide](docs/slurm.md) and rules/*.smk). Not `results/tables/x.csv`, `data/raw/<dataset>/`, "
              "`deepred/{a,b}.py`, .snakemake/deepred/ or git add config/pins/*.lock.yaml; `config.yaml` is.")
    assert repo_paths(sample) == {"benchmarks/bench_gpu.py", "config/paper.yaml", "deepred/core/imports.py",
                                  "docs/slurm.md", "rules/*.smk", "config.yaml"}
    assert link_targets("[a](docs/slurm.md#x) [b](https://x.org/y.md) [c](#top)") == {"docs/slurm.md"}
    assert exists("deepred/core/imports.py") and exists("rules/*.smk")
    assert not exists("deepred/no_such_module.py") and not exists("rules/*.no_such_suffix")


def test_every_named_path_exists():
    missing = [f"{doc.relative_to(ROOT)}: {path}" for doc in doc_files()
               for path in sorted(repo_paths(doc.read_text())) if not exists(path)]
    assert not missing, "the docs name files that do not exist:\n" + "\n".join(missing)


def test_every_relative_link_resolves():
    broken = [f"{doc.relative_to(ROOT)}: {target}" for doc in doc_files()
              for target in sorted(link_targets(doc.read_text())) if not exists(target, doc.parent)]
    assert not broken, "broken links (relative to the file that holds them):\n" + "\n".join(broken)


def test_readme_is_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; measured results belong in docs/results.md"


def test_the_documented_sdss_query_gives_every_column_the_paper_config_reads():
    """The SkyServer query of docs/real-data-surveys.md and config/paper.yaml's sdss target table agree."""
    import yaml

    text = (ROOT / "docs" / "real-data-surveys.md").read_text()
    query = re.search(r"```sql\n(SELECT .*?)\nFROM", text, re.S).group(1)
    selected = {re.split(r"\s+AS\s+|\.", item.strip(), flags=re.I)[-1].strip() for item in query[7:].split(",")}
    src = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["datasets"]["sdss"]["source"]
    needed = {src[k] for k in ("id_column", "ra_column", "dec_column")} | set(src["columns"].values())
    needed |= {src["provider"][k] for k in ("run_column", "camcol_column", "field_column")}
    assert needed <= selected, sorted(needed - selected)
