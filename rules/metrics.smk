# Metrics, tables, figures, cross-survey transfer and the results archive (deepred/tables.py, figures.py,
# transfer.py, archive.py). Every model's prediction file is an input, so a missing model is a missing-input
# error naming its file; a change to one model reruns that model's jobs and these summaries only.
from deepred.archive import archive_date
from deepred.tables import (
    METRIC_KINDS,
    metrics_targets,
    prediction_file,
    table_files,
    table_models,
    test_set_inputs,
    transfer_inputs,
)
from deepred.transfer import transfer_models, transfer_pairs

try:
    TRANSFER_PAIRS = transfer_pairs(config)
    TRANSFER_MODELS = transfer_models(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
TABLE_MODELS = table_models(config)
ARCHIVE = f"{RESULTS}/archive/deepred-results-{archive_date(config)}.tar.gz"
FIGS = f"{RESULTS}/figures"


rule metrics_test_set:
    input:
        unpack(lambda wc: test_set_inputs(config, wc.test_set)),
    output:
        metrics=f"{RESULTS}/metrics/{{test_set}}/metrics.csv",
        nmad=f"{RESULTS}/metrics/{{test_set}}/nmad.csv",
        binned=f"{RESULTS}/metrics/{{test_set}}/binned.csv",
        calibration=f"{RESULTS}/metrics/{{test_set}}/calibration.csv",
    log:
        "logs/metrics/{test_set}.log",
    benchmark:
        f"{RESULTS}/benchmarks/metrics/{{test_set}}.tsv"
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="15m",
    params:
        depends_on=test_set_params,
    script:
        "../workflow_scripts/metrics_test_set.py"


rule tables:
    input:
        **{
            kind: expand(f"{RESULTS}/metrics/{{ts}}/{kind}.csv", ts=TEST_SETS)
            for kind in METRIC_KINDS
        },
    output:
        **{
            n: report(
                p,
                category="Tables",
                subcategory="NMAD per test set" if n.endswith("_nmad") else "Study",
                labels={"table": n},
            )
            for n, p in table_files(config).items()
        },
        provenance=f"{RESULTS}/tables/tables.provenance.json",
    log:
        "logs/metrics/tables.log",
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime="10m",
    params:
        # which test sets make which table, the published R per test set
        test_sets=config["test_sets"],
        paper_R=config["metrics"]["paper_R"],
    script:
        "../workflow_scripts/tables.py"


rule figures_test_set:
    input:
        unpack(lambda wc: test_set_inputs(config, wc.test_set)),
        binned=f"{RESULTS}/metrics/{{test_set}}/binned.csv",
    output:
        density=report(
            f"{FIGS}/density/{{test_set}}.png",
            category="{test_set}",
            subcategory="Predicted vs true",
            labels={"figure": "density", "test set": "{test_set}"},
        ),
        density_pdf=f"{FIGS}/density/{{test_set}}.pdf",
        nmad_vs_z=report(
            f"{FIGS}/nmad_vs_z/{{test_set}}.png",
            category="{test_set}",
            subcategory="NMAD vs redshift",
            labels={"figure": "NMAD vs z", "test set": "{test_set}"},
        ),
        nmad_vs_z_pdf=f"{FIGS}/nmad_vs_z/{{test_set}}.pdf",
        pit=report(
            f"{FIGS}/pit/{{test_set}}.png",
            category="{test_set}",
            subcategory="PIT (distribution models)",
            labels={"figure": "PIT", "test set": "{test_set}"},
        ),
        pit_pdf=f"{FIGS}/pit/{{test_set}}.pdf",
    log:
        "logs/figures/{test_set}.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/{{test_set}}.tsv"
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="15m",
    params:
        depends_on=test_set_params,
    script:
        "../workflow_scripts/figures_test_set.py"


rule improvement_figure:
    input:
        improvement=f"{RESULTS}/tables/improvement.csv",
    output:
        png=report(
            f"{FIGS}/improvement.png",
            category="Study",
            subcategory="Improvement over the best baseline",
            labels={"figure": "R per test set"},
        ),
        pdf=f"{FIGS}/improvement.pdf",
    log:
        "logs/figures/improvement.log",
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
        weights=f"{RESULTS}/models/{{model}}/{{train}}/model.safetensors",
        meta=f"{RESULTS}/models/{{model}}/{{train}}/model.json",
        catalog=processed("{eval}"),
        stats=processed("{eval}", "stats.json"),
        shards=shards_of("eval"),
    output:
        f"{RESULTS}/transfer/{{model}}/{{train}}__{{eval}}.parquet",
    log:
        "logs/transfer/{model}/{train}__{eval}.log",
    benchmark:
        f"{RESULTS}/benchmarks/transfer/{{model}}/{{train}}__{{eval}}.tsv"
    wildcard_constraints:
        model="|".join(TRANSFER_MODELS) or "(?!)",
        train="|".join(DATASETS),
        eval="|".join(DATASETS),
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime="30m",
        gpu=1,
    params:
        seed=config["seed"],
    script:
        "../workflow_scripts/transfer_predict.py"


rule transfer_table:
    input:
        unpack(lambda wc: transfer_inputs(config, TRANSFER_MODELS, TRANSFER_PAIRS)),
    output:
        table=report(
            f"{RESULTS}/tables/transfer_nmad.csv",
            category="Tables",
            subcategory="Study",
            labels={"table": "transfer_nmad"},
        ),
        png=report(
            f"{FIGS}/transfer_nmad.png",
            category="Study",
            subcategory="Cross-survey transfer",
            labels={"figure": "transfer NMAD"},
        ),
        pdf=f"{FIGS}/transfer_nmad.pdf",
    log:
        "logs/metrics/transfer_table.log",
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
        results=metrics_targets(config, bool(TRANSFER_MODELS)),
        figure_pdfs=[
            p.removesuffix(".png") + ".pdf"
            for p in metrics_targets(config, bool(TRANSFER_MODELS))
            if p.endswith(".png")
        ],
        shap=shap_outputs(),  # SHAP localization table and figures (rules/shap.smk)
        pdfs=pdf_targets(),  # test-set PDFs as qp ensembles, truth tables (rules/pdfs.smk)
        metrics=expand(
            f"{RESULTS}/metrics/{{ts}}/{{kind}}.csv",
            ts=TEST_SETS,
            kind=METRIC_KINDS,
        ),
        predictions=sorted(
            {
                prediction_file(config, m, config["test_sets"][ts]["dataset"])
                for m in TABLE_MODELS
                for ts in TEST_SETS
            }
        ),
        checksummed=archive_checksummed(),
    output:
        ARCHIVE,
    log:
        "logs/archive.log",
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
