# The scale study (deepred/results/scale_study.py): test NMAD against the number of training systems, set against the
# photometric baseline. Only a config with a `scale_study` section has these jobs (config/scale_study.yaml):
#   snakemake scale_study --cores 2 --configfile config/scale_study.yaml
# Each point trains on a nested subset of the training split and predicts the whole test split.
# Its point list and files: deepred/workflow/plan.py (Plan.scale_points, Plan.scale_point_files).


rule scale_point:
    input:
        catalog=P.processed(),
        stats=P.processed(name="stats.json"),
        shards=shards_of("dataset"),
    output:
        # the model's own files (weights or trees, history) are written beside these
        predictions=P.scale_point("test.parquet"),
        meta=P.scale_point("model.json"),
    log:
        "logs/scale_study/{dataset}/{model}/n{n}.log",
        usage=P.benchmark("scale_study", "{dataset}", "{model}", "n{n}"),
    wildcard_constraints:
        model=choices(PLAN.scale_models),
        n=r"[1-9][0-9]*",
    conda:
        "../envs/deepred.yaml"
    threads: config["training"]["threads"]
    resources:
        mem_mb=4000,
        runtime="4h",
        gpu=lambda wc: 0 if wc.model == PHOTOMETRY_BASELINE else 1,  # trees: CPU
    params:
        **rule_params(config, "scale_point"),
    script:
        "../workflow_scripts/scale_point.py"


rule scale_study:
    input:
        predictions=PLAN.scale_point_files("test.parquet"),
        meta=PLAN.scale_point_files("model.json"),
    output:
        table=P.table("scale_study"),
        crossover=P.table("scale_study_crossover"),
        png=P.figure("scale_study"),
        pdf=P.figure("scale_study", ".pdf"),
        provenance=P.table("scale_study.provenance", ".json"),
    log:
        "logs/scale_study/tables.log",
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="15m",
    params:
        **rule_params(config, "scale_study"),
        points=PLAN.scale_points,
    script:
        "../workflow_scripts/scale_study.py"
