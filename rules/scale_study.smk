# The scale study (deepred/scale_study.py): test NMAD against the number of training systems, set against the
# photometric baseline. Only a config with a `scale_study` section has these jobs (config/scale_study.yaml):
#   snakemake scale_study --cores 2 --configfile config/scale_study.yaml
# Each point trains on a nested subset of the training split and predicts the whole test split.
# Its point list and file helpers live in rules/common.smk (SCALE_POINTS, scale_point_files).


rule scale_point:
    input:
        catalog=processed("{dataset}"),
        stats=processed("{dataset}", "stats.json"),
        shards=shards_of("dataset"),
    output:
        # the model's own files (weights or trees, history) are written beside these
        predictions=f"{SCALE_DIR}/test.parquet",
        meta=f"{SCALE_DIR}/model.json",
    log:
        "logs/scale_study/{dataset}/{model}/n{n}.log",
    benchmark:
        f"{RESULTS}/benchmarks/scale_study/{{dataset}}/{{model}}/n{{n}}.tsv"
    wildcard_constraints:
        model="|".join(SCALE.get("models", [])) or "(?!)",
        n=r"[1-9][0-9]*",
    conda:
        "../envs/deepred.yaml"
    threads: config["training"]["threads"]
    resources:
        mem_mb=4000,
        runtime="4h",
        gpu=lambda wc: 0 if wc.model == PHOTOMETRY_BASELINE else 1,  # trees: CPU
    params:
        # rerun triggers, as in rule train: the model's section, the training recipe, the seed
        section=model_config_section,
        training=TRAINING_RECIPE,
        seed=config["seed"],
    script:
        "../workflow_scripts/scale_point.py"


rule scale_study:
    input:
        predictions=scale_point_files("test.parquet"),
        meta=scale_point_files("model.json"),
    output:
        table=f"{RESULTS}/tables/scale_study.csv",
        crossover=f"{RESULTS}/tables/scale_study_crossover.csv",
        png=f"{RESULTS}/figures/scale_study.png",
        pdf=f"{RESULTS}/figures/scale_study.pdf",
        provenance=f"{RESULTS}/tables/scale_study.provenance.json",
    log:
        "logs/scale_study/tables.log",
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="15m",
    params:
        points=SCALE_POINTS,
        metrics={
            k: v for k, v in config["metrics"].items() if k not in METRICS_RUN_ONLY
        },
    script:
        "../workflow_scripts/scale_study.py"
