# Raw data (simulated here; downloads in rules/download.smk) -> normalized Parquet + NPY shards.


rule simulate:
    output:
        images=P.raw(name="images.npy"),
        masks=P.raw(name="masks.npy"),
        truth=P.raw(name="truth.parquet"),
        meta=P.raw(name="meta.json"),
    log:
        "logs/simulate/{dataset}.log",
        usage=P.benchmark("simulate", "{dataset}"),
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="30m",
    params:
        **rule_params(config, "simulate"),
    script:
        "../workflow_scripts/simulate.py"


rule normalize:
    input:
        raw_inputs,
    output:
        catalog=P.processed(),
        stats=P.processed(name="stats.json"),
        rejects=P.processed(name="rejects.parquet"),
        shards=directory(P.processed(name="shards")),
    log:
        "logs/normalize/{dataset}.log",
        usage=P.benchmark("normalize", "{dataset}"),
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="30m",
    params:
        **rule_params(config, "normalize"),
    script:
        "../workflow_scripts/normalize.py"
