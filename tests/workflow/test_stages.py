"""Stage declarations (deepred/workflow/stages.py): what each rule's job reads, and what reruns it, from one place."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from deepred.contracts.config import validate_config
from deepred.core.model_names import enabled_networks, table_models
from deepred.workflow.stages import SECTIONS, STAGES, Stage, job_config, rule_params, unaccounted

REPO = Path(__file__).resolve().parents[2]


def _rules_with_scripts() -> dict[str, str]:
    """rule -> its workflow script, for every rule of the workflow."""
    out = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M):
            m = re.match(r"rule (\w+):", block)
            script = re.search(r'^    script:\n        "\.\./(workflow_scripts/\w+\.py)"', block, re.M)
            if m and script:
                out[m.group(1)] = script.group(1)
    return out


def _ci_config() -> dict:
    config = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())
    validate_config(config)
    return config


def test_every_rule_whose_script_reads_the_config_has_a_stage():
    rules = _rules_with_scripts()
    reading = {r for r, s in rules.items() if "job_config" in (REPO / s).read_text()}
    assert reading and reading <= set(STAGES), sorted(reading - set(STAGES))
    for rule, script in rules.items():  # a script gets its config only through job_config
        assert "snakemake.config[" not in (REPO / script).read_text(), script
    assert set(STAGES) <= set(rules), sorted(set(STAGES) - set(rules))


@pytest.mark.parametrize("rule", sorted(STAGES))
def test_every_section_a_stage_reads_is_accounted_for(rule):
    stage = STAGES[rule]
    assert set(stage.reads) <= set(SECTIONS)
    assert unaccounted(stage) == set()


def test_a_stage_that_reads_a_section_without_a_trigger_is_caught():
    assert unaccounted(Stage(("training", "seed"), {"seed": STAGES["train"].triggers["seed"]})) == {"training"}


def test_a_job_sees_only_its_sections():
    config = _ci_config()
    sliced = job_config(config, "train")
    assert set(sliced) == set(STAGES["train"].reads)
    with pytest.raises(KeyError):
        sliced["shap"]  # noqa: B018 (a read outside the declaration fails loudly)


def test_rule_params_are_the_triggers_in_declaration_order():
    config = _ci_config()
    params = rule_params(config, "train")
    assert list(params) == ["section", "training", "seed", "calibration"]
    wc = {"model": "netz", "dataset": "kids"}
    assert params["section"](wc) == config["baselines"]["netz"]
    assert "threads" not in params["training"](wc) and params["seed"](wc) == 7
    figures = rule_params(config, "shap_figures")["depends_on"]({"test_set": "kids_hpl"})
    assert figures["bootstrap"] == [config["metrics"]["bootstrap_resamples"]] and figures["seed"] == 7


@pytest.mark.parametrize("rule", sorted(STAGES))
def test_a_job_that_reads_models_sees_the_same_models_as_the_plan(rule):
    """A job given `architectures` and `baselines` lists the models from them; without `hybrid` it would not see the
    hybrids (the metrics job at 8791b54 left them out of every table, and runtime.csv out of its counts)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate_config(config)
    job = job_config(config, rule)
    if not {"architectures", "baselines"} <= set(job):
        return
    assert table_models(job) == table_models(config), rule
    assert enabled_networks(job) == enabled_networks(config), rule
