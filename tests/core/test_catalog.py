"""deepred.core.model_names: the model lists of a config, the schema-declared baselines, the seed helpers' values,
and that importing it (as rules/common.smk does in every Snakemake process) loads no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import tiny_config
from deepred.core import model_names as C
from deepred.core.seeds import derive_seed

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_catalogue_and_config_loads_no_torch():
    code = ("import sys; from deepred.core.model_names import enabled_networks, neural_baselines; import deepred.contracts.config; "
            "neural_baselines(); print('torch' in sys.modules, 'timm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_lists_of_the_default_config():
    cfg = tiny_config({"t": {}})
    archs = list(cfg["architectures"])
    assert C.neural_baselines() == ("photoz", "netz", "a1", "a3")
    hybrids = ["hybrid_resnet", "hybrid_resnet_shuffled", "hybrid_resnet_noimage"]  # hybrid.backbones: [resnet]
    assert C.enabled_networks(cfg) == archs + ["photoz", "netz", "a1", "a3"] + hybrids
    assert C.ensemble_members(cfg) == [m for m in cfg["ensemble"]["members"] if m in archs]
    assert C.table_models(cfg) == archs + ["ensemble_stacked", "ensemble_mean", "hybrid_resnet", "photoz", "netz",
                                           "a1", "a3", "hogsvr", "photometry"]  # the controls are no table rows
    assert [C.model_family(cfg, m) for m in (archs[0], "ensemble_mean", "netz", "hogsvr", "photometry")] == [
        "deepred_backbone", "deepred_ensemble", "baseline_neural", "baseline_features", "baseline_photometry"]
    assert C.image_baselines(cfg) == ["photoz", "netz", "a1", "a3", "hogsvr"]  # the paper's R compares with these


def test_disabled_models_leave_every_list():
    cfg = tiny_config({"t": {}})
    for name in list(cfg["architectures"])[1:]:
        cfg["architectures"][name]["enabled"] = False
    cfg["baselines"]["netz"]["enabled"] = cfg["baselines"]["hogsvr"]["enabled"] = False
    cfg["baselines"]["photometry"]["enabled"] = False
    first = next(iter(cfg["architectures"]))
    assert C.enabled_networks(cfg) == [first, "photoz", "a1", "a3"]  # residual hybrids need photometry
    cfg["hybrid"]["fusion"] = "concat"  # no controls either: they are compared with photometry
    assert C.enabled_networks(cfg) == [first, "photoz", "a1", "a3", f"hybrid_{first}"]
    cfg["hybrid"]["backbones"] = []
    assert C.enabled_networks(cfg) == [first, "photoz", "a1", "a3"]
    assert C.enabled_baselines(cfg) == ["photoz", "a1", "a3"]
    cfg["ensemble"]["members"] = [m for m in cfg["ensemble"]["members"] if m != first]
    assert C.ensemble_members(cfg) == [] and C.deepred_models(cfg) == [first]  # no members: no ensembles
    cfg["ensemble"]["members"] = None  # before validation: every enabled architecture
    assert C.ensemble_members(cfg) == [first]


def test_the_seed_helper_keeps_the_trainers_values():
    """One helper for training, bootstraps and SHAP samples: the trainer's formula, so trained models did not
    change when the bootstraps' helper (blake2b-64 of '|'-joined parts) was retired."""
    assert derive_seed(7, "netz", "tiny") == 816869369
    assert derive_seed(1, "epoch", 0) == 297034815
    assert derive_seed(7, "bootstrap", "kids") != 1671119638  # the retired helper's value
    assert not hasattr(C, "train_seed") and not hasattr(C, "analysis_seed")
