# Real survey files (source kinds deepgravilens, kids, sdss): one verified download per pinned file.
# Downloads run where Snakemake itself runs (localrule: a cluster's login node has the network, its
# compute nodes often not). With download.offline (or DEEPRED_OFFLINE=1) nothing is fetched: files placed
# under data/raw/{dataset}/ are verified against their pinned checksums instead.
import re

REAL = [d for d in DATASETS if config["datasets"][d]["source"]["kind"] != "simulate"]
MANIFEST_DONE = (
    ".manifest.verified"  # same name as deepred.data.readers._common.MANIFEST_DONE
)


def real_raw_files(dataset):
    """The files listed in a real dataset's source (+ its manifest and the stamp of its listed files)."""
    src = config["datasets"][dataset]["source"]
    names = [f["name"] for f in src.get("files", [])]
    if src.get("manifest"):
        names += [src["manifest"]["name"], MANIFEST_DONE]
    return [f"{DATA}/raw/{dataset}/{n}" for n in names]


def _pinned_names():
    names = {
        f["name"]
        for d in REAL
        for f in config["datasets"][d]["source"].get("files", [])
    }
    names |= {
        config["datasets"][d]["source"]["manifest"]["name"]
        for d in REAL
        if config["datasets"][d]["source"].get("manifest")
    }
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


def _spec(wildcards):
    src = config["datasets"][wildcards.dataset]["source"]
    specs = src.get("files", []) + ([src["manifest"]] if src.get("manifest") else [])
    return next(f for f in specs if f["name"] == wildcards.file)


ruleorder: download > simulate


rule download:
    output:
        f"{DATA}/raw/{{dataset}}/{{file}}",
    log:
        "logs/download/{dataset}/{file}.log",
    wildcard_constraints:
        dataset="|".join(REAL) or "(?!)",
        file=_pinned_names(),
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime="12h",
    params:
        spec=_spec,
        settings=config["download"],
    script:
        "../workflow_scripts/download.py"


rule download_manifest_files:
    input:
        manifest=lambda wc: f"{DATA}/raw/{wc.dataset}/{config['datasets'][wc.dataset]['source']['manifest']['name']}",
    output:
        f"{DATA}/raw/{{dataset}}/{MANIFEST_DONE}",
    log:
        "logs/download/{dataset}/manifest.log",
    wildcard_constraints:
        dataset="|".join(
            d for d in REAL if config["datasets"][d]["source"].get("manifest")
        )
        or "(?!)",
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime="24h",
    params:
        settings=config["download"],
    script:
        "../workflow_scripts/download.py"


rule download_all:
    input:
        [f for d in REAL for f in real_raw_files(d)],
