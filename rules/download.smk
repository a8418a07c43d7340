# Real survey files (source kinds deepgravilens, kids, sdss): one verified download per file, pinned in the
# config or in the source's lock file (config/pins/<dataset>.lock.yaml, recorded at first download:
# deepred/pins.py); or one archive (source.archive, e.g. DeepGraviLens' dataset.zip from its Zenodo record)
# downloaded once into data/raw/_archives/ and extracted member by member into each dataset's raw folder.
# Downloads and extraction run where Snakemake itself runs (the Snakefile's `localrules`: a cluster's login node
# has the network, its compute nodes often not). With download.offline (or DEEPRED_OFFLINE=1) nothing is
# fetched: files placed under data/raw/ are verified against their pins instead. The download settings are read
# from the config by the script, not passed as params: editing retries or offline must not make Snakemake delete
# and fetch again files that are in place and verified (the params rerun trigger).
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
        lock=lambda wc: str(
            source_lock(config["datasets"][wc.dataset]["source"], wc.dataset)
        ),
    script:
        "../workflow_scripts/download.py"


rule download_archive:
    output:
        f"{DATA}/raw/{ARCHIVES_DIR}/{{archive}}/{{file}}",
    log:
        f"logs/download/{ARCHIVES_DIR}/{{archive}}/{{file}}.log",
    wildcard_constraints:
        archive="|".join(re.escape(a) for a in ARCHIVES) or "(?!)",
        file="|".join(re.escape(a["file"]) for a in ARCHIVES.values()) or "(?!)",
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime="24h",
    params:
        archive=lambda wc: {  # what identifies the file (not the extraction bounds)
            k: v
            for k, v in ARCHIVES[wc.archive]["archive"].items()
            if k in ("zenodo", "url", "name", "size", "sha256", "md5")
        },
        lock=lambda wc: ARCHIVES[wc.archive]["lock"],
    script:
        "../workflow_scripts/download.py"


rule extract_archive:
    input:
        archive=lambda wc: archive_file(wc.dataset),
    output:
        f"{DATA}/raw/{{dataset}}/{ARCHIVE_DONE}",
    log:
        "logs/download/{dataset}/extract.log",
    wildcard_constraints:
        dataset="|".join(ARCHIVE_DATASETS) or "(?!)",
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime="4h",
    params:
        source=lambda wc: {
            k: v
            for k, v in config["datasets"][wc.dataset]["source"].items()
            if k in ("archive", "files", "subset", "lock")
        },
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
    script:
        "../workflow_scripts/download.py"


rule download_all:
    input:
        [f for d in REAL for f in real_raw_files(d)],


# Catalogue-driven cutouts (source kind `cutouts`): every survey image the targets need, fetched once
# (concurrent, resumable, cached, verified against or recorded in the source's lock); a local rule.
rule cutout_images:
    input:
        cutout_source_files,
    output:
        f"{DATA}/raw/{{dataset}}/{CUTOUT_STAMP}",
    log:
        "logs/download/{dataset}/cutout_images.log",
    wildcard_constraints:
        dataset="|".join(CUTOUT_DATASETS) or "(?!)",
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="48h",
    params:
        source=lambda wc: config["datasets"][wc.dataset]["source"],
    script:
        "../workflow_scripts/cutouts.py"


# ... then cut from the cache (no network): one TAN grid per target, every band resampled onto it.
rule cutouts:
    input:
        files=cutout_source_files,
        stamp=f"{DATA}/raw/{{dataset}}/{CUTOUT_STAMP}",
    output:
        truth=f"{DATA}/raw/{{dataset}}/cutouts/truth.parquet",
        rejects=f"{DATA}/raw/{{dataset}}/cutouts/rejects.parquet",
        meta=f"{DATA}/raw/{{dataset}}/cutouts/meta.json",
        shards=directory(f"{DATA}/raw/{{dataset}}/cutouts/shards"),
    log:
        "logs/cutouts/{dataset}.log",
    benchmark:
        f"{RESULTS}/benchmarks/cutouts/{{dataset}}.tsv"
    wildcard_constraints:
        dataset="|".join(CUTOUT_DATASETS) or "(?!)",
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime="12h",
    params:
        dataset_cfg=lambda wc: config["datasets"][wc.dataset],
    script:
        "../workflow_scripts/cutouts.py"
