# Real survey files (source kinds deepgravilens, kids, sdss): one verified download per file, pinned in the
# config or in the source's lock file (config/pins/<dataset>.lock.yaml, recorded at first download:
# deepred/fetch/pins.py); or one archive (source.archive, e.g. DeepGraviLens' dataset.zip from its Zenodo record)
# downloaded once into data/raw/_archives/ and extracted member by member into each dataset's raw folder.
# Downloads and extraction run where Snakemake itself runs (the Snakefile's `localrules`: a cluster's login node
# has the network, its compute nodes often not). With download.offline (or DEEPRED_OFFLINE=1) nothing is
# fetched: files placed under data/raw/ are verified against their pins instead. The download settings are read
# from the config by the script, not passed as params: editing retries or offline must not make Snakemake delete
# and fetch again files that are in place and verified (the params rerun trigger).
ruleorder: download > simulate


rule download:
    output:
        P.raw(name="{file}"),
    log:
        "logs/download/{dataset}/{file}.log",
    wildcard_constraints:
        dataset=choices(PLAN.real),
        file=PLAN.pinned_file_names(),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime="12h",
    params:
        **rule_params(config, "download"),
    script:
        "../workflow_scripts/download.py"


rule download_archive:
    output:
        P.archive_download(),
    log:
        f"logs/download/{ARCHIVES_DIR}/{{archive}}/{{file}}.log",
    wildcard_constraints:
        archive=choices(ARCHIVES),
        file=choices(ARCHIVES.values()),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime="24h",
    params:
        **rule_params(config, "download_archive"),
    script:
        "../workflow_scripts/download.py"


rule extract_archive:
    input:
        archive=lambda wc: PLAN.archive_file(wc.dataset),
    output:
        P.raw(name=ARCHIVE_DONE),
    log:
        "logs/download/{dataset}/extract.log",
    wildcard_constraints:
        dataset=choices(d for d in PLAN.real if PLAN.sources[d].get("archive")),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime="4h",
    params:
        **rule_params(config, "extract_archive"),
    script:
        "../workflow_scripts/download.py"


rule download_manifest_files:
    input:
        manifest=lambda wc: P.raw(
            wc.dataset, PLAN.sources[wc.dataset]["manifest"]["name"]
        ),
    output:
        P.raw(name=MANIFEST_DONE),
    log:
        "logs/download/{dataset}/manifest.log",
    wildcard_constraints:
        dataset=choices(d for d in PLAN.real if PLAN.sources[d].get("manifest")),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime="24h",
    script:
        "../workflow_scripts/download.py"


rule download_all:
    input:
        [f for d in PLAN.real for f in PLAN.real_raw_files(d)],
    localrule: True


# Catalogue-driven cutouts (source kind `cutouts`): every survey image the targets need, fetched once
# (concurrent, resumable, cached, verified against or recorded in the source's lock); a local rule.
rule cutout_images:
    input:
        lambda wc: PLAN.cutout_source_files(wc.dataset),
    output:
        P.raw(name=FETCH_STAMP),
    log:
        "logs/download/{dataset}/cutout_images.log",
    wildcard_constraints:
        dataset=choices(PLAN.cutout_datasets),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="48h",
    params:
        **rule_params(config, "cutout_images"),
    script:
        "../workflow_scripts/cutouts.py"


# ... then cut from the cache (no network): one TAN grid per target, every band resampled onto it.
rule cutouts:
    input:
        files=lambda wc: PLAN.cutout_source_files(wc.dataset),
        stamp=P.raw(name=FETCH_STAMP),
    output:
        truth=P.raw(name="cutouts/truth.parquet"),
        rejects=P.raw(name="cutouts/rejects.parquet"),
        meta=P.raw(name="cutouts/meta.json"),
        shards=directory(P.raw(name="cutouts/shards")),
    log:
        "logs/cutouts/{dataset}.log",
        usage=P.benchmark("cutouts", "{dataset}"),
    wildcard_constraints:
        dataset=choices(PLAN.cutout_datasets),
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime="12h",
    params:
        **rule_params(config, "cutouts"),
    script:
        "../workflow_scripts/cutouts.py"
