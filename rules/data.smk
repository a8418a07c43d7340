# Raw data (simulated here; downloads in rules/download.smk) -> normalized Parquet + NPY shards.


rule simulate:
    output:
        images=f"{DATA}/raw/{{dataset}}/images.npy",
        masks=f"{DATA}/raw/{{dataset}}/masks.npy",
        truth=f"{DATA}/raw/{{dataset}}/truth.parquet",
        meta=f"{DATA}/raw/{{dataset}}/meta.json",
    log:
        "logs/simulate/{dataset}.log",
    benchmark:
        f"{RESULTS}/benchmarks/simulate/{{dataset}}.tsv"
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="30m",
    params:
        source=lambda wc: config["datasets"][wc.dataset]["source"],
        bands=lambda wc: config["datasets"][wc.dataset]["bands"],
        cutout=lambda wc: config["datasets"][wc.dataset]["cutout"],
        seed=config["seed"],
    script:
        "../workflow_scripts/simulate.py"


rule normalize:
    input:
        raw_inputs,
    output:
        catalog=f"{DATA}/processed/{{dataset}}/catalog.parquet",
        stats=f"{DATA}/processed/{{dataset}}/stats.json",
        rejects=f"{DATA}/processed/{{dataset}}/rejects.parquet",
        shards=directory(f"{DATA}/processed/{{dataset}}/shards"),
    log:
        "logs/normalize/{dataset}.log",
    benchmark:
        f"{RESULTS}/benchmarks/normalize/{{dataset}}.tsv"
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="30m",
    params:
        dataset_cfg=lambda wc: config["datasets"][wc.dataset],
        seed=config["seed"],  # the splits hash each system id with it
    script:
        "../workflow_scripts/normalize.py"
