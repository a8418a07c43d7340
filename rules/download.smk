# Real survey files (source kinds deepgravilens, kids, sdss): one verified download per pinned file.
# Downloads run where Snakemake itself runs (the Snakefile's `localrules`: a cluster's login node has the
# network, its compute nodes often not). With download.offline (or DEEPRED_OFFLINE=1) nothing is fetched: files placed
# under data/raw/{dataset}/ are verified against their pinned checksums instead.
ruleorder: download > simulate


rule download:
    output:
        f"{DATA}/raw/{{dataset}}/{{file}}",
    log:
        "logs/download/{dataset}/{file}.log",
    wildcard_constraints:
        dataset="|".join(REAL) or "(?!)",
        file=pinned_file_names(),
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime="12h",
    params:
        spec=download_spec,
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
    conda:
        "../envs/deepred.yaml"
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
