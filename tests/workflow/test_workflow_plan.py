"""The workflow layer (deepred/workflow): one home for every path pattern, the plan's target lists, the triggers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deepred.contracts.config import validate_config
from deepred.workflow import triggers
from deepred.workflow.paths import Layout
from deepred.workflow.plan import Plan

REPO = Path(__file__).resolve().parents[2]


def _ci_plan() -> Plan:
    config = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())
    validate_config(config)
    return Plan(config)


def test_rules_spell_no_results_or_data_path():
    """The rules name outputs through deepred.workflow.paths; only logs/ patterns are typed there."""
    typed = []
    for smk in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        for n, line in enumerate(smk.read_text().splitlines(), 1):
            if "logs/" not in line and not line.lstrip().startswith("#") and re.search(
                    r"\{(RESULTS|DATA)\}|/(models|predictions|shap|metrics|tables|figures|pdfs|processed)/", line):
                typed.append(f"{smk.name}:{n}: {line.strip()}")
    assert typed == []


def test_every_pattern_is_spelled_once_in_the_package():
    """Each results/data folder pattern is typed in deepred/workflow/paths.py and nowhere else in the package."""
    for folder in ("predictions", "models", "shap", "pdfs", "metrics", "transfer", "scale_study"):
        hits = [str(p) for p in (REPO / "deepred").rglob("*.py")
                if re.search(r"f\"[^\"\n]*\{[^}]*results[^}]*\}/" + folder + r"/", p.read_text())]
        assert hits == [str(REPO / "deepred" / "workflow" / "paths.py")], folder


def test_plan_of_the_ci_config():
    plan = _ci_plan()
    assert plan.datasets == ["kids"] and plan.networks == ["resnet", "mixer", "netz", "hybrid_mixer",
                                                           "hybrid_mixer_shuffled", "hybrid_mixer_noimage"]
    targets = plan.all_targets()
    assert "results/ci/tables/kids_nmad.csv" in targets and "data/ci/processed/kids/catalog.parquet" in targets
    assert plan.test_set_inputs("kids_hpl")["pred_photometry"] == "results/ci/predictions/photometry/kids.parquet"
    assert Layout(plan.config).model_file("model.json") == "results/ci/models/{model}/{dataset}/model.json"


def test_triggers_leave_out_run_only_keys():
    config = _ci_plan().config
    assert "threads" not in triggers.training_recipe(config) and "epochs" in triggers.training_recipe(config)
    settings = triggers.shap_settings(config, "resnet", "kids")
    assert "threads" not in settings and settings["occlusion_variants"]
    assert "paper_R" not in triggers.test_set_params(config, "kids_hpl")["metrics"]


def test_the_workflow_layer_imports_no_torch():
    code = "import sys, deepred.workflow.plan, deepred.workflow.triggers; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.mark.workflow
def test_one_nmad_table_plans_only_its_own_dataset(tmp_path):
    """`snakemake results/tables/kids_nmad.csv` (the README's command) plans the KiDS dataset's jobs and nothing of
    the other datasets: each {table}_nmad reads only its own test sets' metrics."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", str(REPO / "config.yaml"),
           "-n", "results/tables/kids_nmad.csv"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    others = set(yaml.safe_load((REPO / "config.yaml").read_text())["datasets"]) - {"kids"}
    planned = set(re.findall(r"wildcards: .*?dataset=(\w+)", text)) | set(re.findall(r"test_set=(\w+)", text))
    assert planned and not planned & others, planned
    assert set(re.findall(r"test_set=(\w+)", text)) == {"kids_general", "kids_hpl"}
    assert re.search(r"^nmad_table\s+1$", text, re.M) and not re.search(r"^tables\s", text, re.M)
    # the KiDS dataset's 8 networks and its hybrid row; the hybrid's controls feed hybrid_controls.csv only
    assert int(re.search(r"^train\s+(\d+)$", text, re.M)[1]) == 9
