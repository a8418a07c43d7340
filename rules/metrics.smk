# Metrics, tables, figures, cross-survey transfer and the results archive (deepred/results/tables.py, figures.py,
# transfer.py, archive.py). Every model's prediction file is an input, so a missing model is a missing-input
# error naming its file; a change to one model reruns that model's jobs and these summaries only.
from deepred.workflow.paths import METRIC_KINDS


rule metrics_test_set:
    input:
        unpack(lambda wc: PLAN.test_set_inputs(wc.test_set)),
    output:
        metrics=P.metrics("metrics"),
        nmad=P.metrics("nmad"),
        binned=P.metrics("binned"),
        calibration=P.metrics("calibration"),
    log:
        "logs/metrics/{test_set}.log",
        usage=P.benchmark("metrics_test_set", "{test_set}"),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="15m",
    params:
        **rule_params(config, "metrics_test_set"),
    script:
        "../workflow_scripts/metrics_test_set.py"


rule nmad_table:
    input:
        nmad=lambda wc: PLAN.nmad_table_inputs(wc.table),
    output:
        table=report(
            P.table("{table}_nmad"),
            category="Tables",
            subcategory="NMAD per test set",
            labels={"table": "{table}_nmad"},
        ),
        provenance=P.table("{table}_nmad.provenance", ".json"),
    log:
        "logs/metrics/{table}_nmad.log",
        usage=P.benchmark("nmad_table", "{table}"),
    wildcard_constraints:
        table="|".join(PLAN.nmad_tables),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime="10m",
    params:
        **rule_params(config, "nmad_table"),
    script:
        "../workflow_scripts/nmad_table.py"


rule tables:
    input:
        **{kind: PLAN.metric_files(kind) for kind in METRIC_KINDS},
    output:
        **{
            n: report(p, category="Tables", subcategory="Study", labels={"table": n})
            for n, p in PLAN.study_table_files().items()
        },
        provenance=P.table("tables.provenance", ".json"),
    log:
        "logs/metrics/tables.log",
        usage=P.benchmark("tables", "all"),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime="10m",
    params:
        **rule_params(config, "tables"),
    script:
        "../workflow_scripts/tables.py"


rule hybrid_controls:
    input:
        **PLAN.hybrid_controls_inputs(),
    output:
        table=report(
            P.table("hybrid_controls"),
            category="Tables",
            subcategory="Study",
            labels={"table": "hybrid_controls"},
        ),
        provenance=P.table("hybrid_controls.provenance", ".json"),
    log:
        "logs/metrics/hybrid_controls.log",
        usage=P.benchmark("hybrid_controls", "all"),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        **rule_params(config, "hybrid_controls"),
    script:
        "../workflow_scripts/hybrid_controls.py"


rule runtime_table:
    input:
        PLAN.all_targets(),  # last: after every job of the default target has written its benchmark file
    output:
        table=report(
            P.table("runtime"),
            category="Tables",
            subcategory="Study",
            labels={"table": "runtime"},
        ),
    log:
        "logs/metrics/runtime_table.log",
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime="10m",
    script:
        "../workflow_scripts/runtime_table.py"


rule figures_test_set:
    input:
        unpack(lambda wc: PLAN.test_set_inputs(wc.test_set)),
        binned=P.metrics("binned"),
    output:
        density=report(
            P.figure("density/{test_set}"),
            category="{test_set}",
            subcategory="Predicted vs true",
            labels={"figure": "density", "test set": "{test_set}"},
        ),
        density_pdf=P.figure("density/{test_set}", ".pdf"),
        nmad_vs_z=report(
            P.figure("nmad_vs_z/{test_set}"),
            category="{test_set}",
            subcategory="NMAD vs redshift",
            labels={"figure": "NMAD vs z", "test set": "{test_set}"},
        ),
        nmad_vs_z_pdf=P.figure("nmad_vs_z/{test_set}", ".pdf"),
        pit=report(
            P.figure("pit/{test_set}"),
            category="{test_set}",
            subcategory="PIT (distribution models)",
            labels={"figure": "PIT", "test set": "{test_set}"},
        ),
        pit_pdf=P.figure("pit/{test_set}", ".pdf"),
    log:
        "logs/figures/{test_set}.log",
        usage=P.benchmark("figures_test_set", "{test_set}"),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="15m",
    params:
        **rule_params(config, "figures_test_set"),
    script:
        "../workflow_scripts/figures_test_set.py"


rule improvement_figure:
    input:
        improvement=P.table("improvement"),
    output:
        png=report(
            P.figure("improvement"),
            category="Study",
            subcategory="Improvement over the best baseline",
            labels={"figure": "R per test set"},
        ),
        pdf=P.figure("improvement", ".pdf"),
    log:
        "logs/figures/improvement.log",
        usage=P.benchmark("improvement_figure", "all"),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime="5m",
    script:
        "../workflow_scripts/improvement_figure.py"


rule transfer_predict:
    input:
        weights=P.model_file("model.safetensors", dataset="{train}"),
        meta=P.model_file("model.json", dataset="{train}"),
        catalog=P.processed("{eval}"),
        stats=P.processed("{eval}", "stats.json"),
        shards=shards_of("eval"),
    output:
        P.transfer(),
    log:
        "logs/transfer/{model}/{train}__{eval}.log",
        usage=P.benchmark("transfer_predict", "{model}", "{train}__{eval}"),
    wildcard_constraints:
        model=choices(TRANSFER_MODELS),
        train=choices(DATASETS),
        eval=choices(DATASETS),
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime="30m",
        gpu=1,
    params:
        **rule_params(config, "transfer_predict"),
    script:
        "../workflow_scripts/transfer_predict.py"


rule transfer_table:
    input:
        unpack(lambda wc: PLAN.transfer_inputs()),
    output:
        table=report(
            P.table("transfer_nmad"),
            category="Tables",
            subcategory="Study",
            labels={"table": "transfer_nmad"},
        ),
        png=report(
            P.figure("transfer_nmad"),
            category="Study",
            subcategory="Cross-survey transfer",
            labels={"figure": "transfer NMAD"},
        ),
        pdf=P.figure("transfer_nmad", ".pdf"),
    log:
        "logs/metrics/transfer_table.log",
        usage=P.benchmark("transfer_table", "all"),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    script:
        "../workflow_scripts/transfer_table.py"


rule archive:
    input:
        results=PLAN.metrics_targets(),
        figure_pdfs=[
            p.removesuffix(".png") + ".pdf"
            for p in PLAN.metrics_targets()
            if p.endswith(".png")
        ],
        shap=PLAN.shap_outputs(),  # SHAP localization table and figures (rules/shap.smk)
        pdfs=PLAN.pdf_targets(),  # test-set PDFs as qp ensembles, truth tables (rules/pdfs.smk)
        metrics=[P.metrics(k, ts) for ts in TEST_SETS for k in METRIC_KINDS],
        predictions=PLAN.archived_predictions(),
        checksummed=PLAN.archive_checksummed(),
    output:
        P.archive(archive_date(config)),
    log:
        "logs/archive.log",
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime="10m",
    params:
        root=lambda wc, output: str(Path(output[0]).parent.parent),  # the results folder
    script:
        "../workflow_scripts/archive.py"
