# SHAP localization (deepred/explain/attributions.py, deepred/explain/scoring.py, deepred/results/shap_figures.py): where each
# network looks (expected gradients, per pixel or per patch-sized window), scored against the object's footprint,
# and the controls that say whether it uses the object (deepred/explain/controls.py): occlusion in every explain job,
# shuffled-label networks for the models in shap.shuffled_models.
rule shap_explain:
    input:
        weights=P.model_file("model.safetensors"),
        meta=P.model_file("model.json"),
        catalog=P.processed(),
        stats=P.processed(name="stats.json"),
        shards=shards_of("dataset"),
    output:
        **shap_job_outputs(),
    log:
        "logs/shap/{model}/{dataset}.log",
        usage=P.benchmark("shap_explain", "{model}", "{dataset}"),
    wildcard_constraints:
        model=choices(SHAP_MODELS),
    conda:
        "../envs/deepred.yaml"
    threads: config["shap"]["threads"]
    resources:
        mem_mb=4000,
        runtime="30m",
        gpu=1,
    params:
        **rule_params(config, "shap_explain"),
    script:
        "../workflow_scripts/shap_explain.py"


rule shap_shuffled:
    input:
        catalog=P.processed(),
        stats=P.processed(name="stats.json"),
        shards=shards_of("dataset"),
    output:
        **shap_job_outputs(shuffled=True),
        weights=P.shap_file("model/model.safetensors", shuffled=True),
        model=P.shap_file("model/model.json", shuffled=True),
        history=P.shap_file("model/history.csv", shuffled=True),
    log:
        "logs/shap/shuffled/{model}/{dataset}.log",
        usage=P.benchmark("shap_shuffled", "{model}", "{dataset}"),
    wildcard_constraints:
        model=choices(SHAP_SHUFFLED),
    conda:
        "../envs/deepred.yaml"
    threads: config["training"]["threads"]
    resources:
        mem_mb=4000,
        runtime="4h",
        gpu=1,
    params:
        **rule_params(config, "shap_shuffled"),
    script:
        "../workflow_scripts/shap_shuffled.py"


rule shap_table:
    input:
        per_image=[P.shap_file("per_image.parquet", m, d) for m, d in SHAP_JOBS],
        occlusion=[P.shap_file(SHAP_OCCLUSION_FILE, m, d) for m, d in SHAP_JOBS],
        shuffled=[
            P.shap_file("per_image.parquet", m, d, shuffled=True)
            for m in SHAP_SHUFFLED
            for d in PLAN.shap_datasets
        ],
        catalogs=[P.processed(d) for d in PLAN.shap_datasets],
    output:
        table=report(
            P.table("shap_localization"),
            category="SHAP localization",
            labels={"table": "localization per model and test set"},
        ),
        provenance=P.table("shap_localization.provenance", ".json"),
    log:
        "logs/shap/table.log",
        usage=P.benchmark("shap_table", "all"),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        **rule_params(config, "shap_table"),
        per_image=[
            [
                m,
                d,
                P.shap_file("per_image.parquet", m, d),
                P.shap_file(SHAP_OCCLUSION_FILE, m, d),
                (
                    P.shap_file("per_image.parquet", m, d, shuffled=True)
                    if m in SHAP_SHUFFLED
                    else None
                ),
            ]
            for m, d in SHAP_JOBS
        ],
        processed={d: P.processed_dir(d) for d in PLAN.shap_datasets},
    script:
        "../workflow_scripts/shap_table.py"


rule shap_figures:
    input:
        explained=lambda wc: [
            P.shap_file(f, m, test_set_dataset(wc))
            for m in SHAP_MODELS
            for f in SHAP_FILES
        ],
        catalog=lambda wc: P.processed(test_set_dataset(wc)),
        shards=lambda wc: P.processed(test_set_dataset(wc), "shards"),
    output:
        snr=report(
            P.shap_figure("accuracy_vs_snr"),
            category="SHAP localization",
            subcategory="{test_set}",
            labels={"test set": "{test_set}", "figure": "accuracy vs S/N"},
        ),
        examples=[
            report(
                P.shap_figure(f"examples_{m}"),
                category="SHAP localization",
                subcategory="{test_set}",
                labels={"test set": "{test_set}", "figure": f"examples {m}"},
            )
            for m in SHAP_MODELS
        ],
    log:
        "logs/shap/figures_{test_set}.log",
        usage=P.benchmark("shap_figures", "{test_set}"),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        **rule_params(config, "shap_figures"),
        shap_dirs=lambda wc: {
            m: P.shap_dir(m, test_set_dataset(wc)) for m in SHAP_MODELS
        },
        processed=lambda wc: P.processed_dir(test_set_dataset(wc)),
        example_pngs=lambda wc: {
            m: P.shap_figure(f"examples_{m}", wc.test_set) for m in SHAP_MODELS
        },
    script:
        "../workflow_scripts/shap_figures.py"
