# SHAP localization (deepred/explain.py, deepred/localization.py, deepred/shap_plots.py): where each
# network looks (expected gradients, per pixel or per patch-sized window), scored against the object's footprint,
# and the controls that say whether it uses the object (deepred/shap_controls.py): occlusion in every explain job,
# shuffled-label networks for the models in shap.shuffled_models.
rule shap_explain:
    input:
        weights=f"{RESULTS}/models/{{model}}/{{dataset}}/model.safetensors",
        meta=f"{RESULTS}/models/{{model}}/{{dataset}}/model.json",
        catalog=processed("{dataset}"),
        stats=processed("{dataset}", "stats.json"),
        shards=shards_of("dataset"),
    output:
        per_image=f"{RESULTS}/shap/{{model}}/{{dataset}}/per_image.parquet",
        attributions=f"{RESULTS}/shap/{{model}}/{{dataset}}/attributions.npy",
        regions=f"{RESULTS}/shap/{{model}}/{{dataset}}/regions.npy",
        meta=f"{RESULTS}/shap/{{model}}/{{dataset}}/explain.json",
        occlusion=f"{RESULTS}/shap/{{model}}/{{dataset}}/occlusion.parquet",
    log:
        "logs/shap/{model}/{dataset}.log",
    benchmark:
        f"{RESULTS}/benchmarks/shap/{{model}}/{{dataset}}.tsv"
    wildcard_constraints:
        model="|".join(SHAP_MODELS) or "(?!)",
    conda:
        "../envs/deepred.yaml"
    threads: config["shap"]["threads"]
    resources:
        mem_mb=4000,
        runtime="30m",
        gpu=1,
    params:
        # rerun trigger: the explainer's settings for this job (which models, and threads, only select or run
        # jobs; hq_snr, n_examples and reliance_threshold are read by the table and figures only)
        settings=shap_settings,
        seed=config["seed"],
    script:
        "../workflow_scripts/shap_explain.py"


rule shap_shuffled:
    input:
        catalog=processed("{dataset}"),
        stats=processed("{dataset}", "stats.json"),
        shards=shards_of("dataset"),
    output:
        per_image=f"{RESULTS}/shap/{{model}}/{{dataset}}/shuffled/per_image.parquet",
        attributions=f"{RESULTS}/shap/{{model}}/{{dataset}}/shuffled/attributions.npy",
        regions=f"{RESULTS}/shap/{{model}}/{{dataset}}/shuffled/regions.npy",
        meta=f"{RESULTS}/shap/{{model}}/{{dataset}}/shuffled/explain.json",
        occlusion=f"{RESULTS}/shap/{{model}}/{{dataset}}/shuffled/occlusion.parquet",
        weights=f"{RESULTS}/shap/{{model}}/{{dataset}}/shuffled/model/model.safetensors",
        model=f"{RESULTS}/shap/{{model}}/{{dataset}}/shuffled/model/model.json",
        history=f"{RESULTS}/shap/{{model}}/{{dataset}}/shuffled/model/history.csv",
    log:
        "logs/shap/shuffled/{model}/{dataset}.log",
    benchmark:
        f"{RESULTS}/benchmarks/shap_shuffled/{{model}}/{{dataset}}.tsv"
    wildcard_constraints:
        model="|".join(SHAP_SHUFFLED) or "(?!)",
    conda:
        "../envs/deepred.yaml"
    threads: config["training"]["threads"]
    resources:
        mem_mb=4000,
        runtime="4h",
        gpu=1,
    params:
        # rerun trigger: what the real network's weights depend on, and the explainer's settings
        section=lambda wc: {**config["baselines"], **config["architectures"]}[wc.model],
        training={
            k: v
            for k, v in config["training"].items()
            if k not in RUN_ONLY_TRAINING_KEYS
        },
        settings=shap_settings,
        seed=config["seed"],
    script:
        "../workflow_scripts/shap_shuffled.py"


rule shap_table:
    input:
        per_image=expand(
            f"{RESULTS}/shap/{{model}}/{{dataset}}/per_image.parquet",
            model=SHAP_MODELS,
            dataset=SHAP_DATASETS,
        ),
        occlusion=expand(
            f"{RESULTS}/shap/{{model}}/{{dataset}}/occlusion.parquet",
            model=SHAP_MODELS,
            dataset=SHAP_DATASETS,
        ),
        shuffled=expand(
            f"{RESULTS}/shap/{{model}}/{{dataset}}/shuffled/per_image.parquet",
            model=SHAP_SHUFFLED,
            dataset=SHAP_DATASETS,
        ),
        catalogs=[processed(d) for d in SHAP_DATASETS],
    output:
        table=report(
            f"{RESULTS}/tables/shap_localization.csv",
            category="SHAP localization",
            labels={"table": "localization per model and test set"},
        ),
        provenance=f"{RESULTS}/tables/shap_localization.provenance.json",
    log:
        "logs/shap/table.log",
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        per_image=[
            [
                m,
                d,
                f"{shap_dir(m, d)}/per_image.parquet",
                f"{shap_dir(m, d)}/occlusion.parquet",
                (
                    f"{shap_dir(m, d)}/shuffled/per_image.parquet"
                    if m in SHAP_SHUFFLED
                    else None
                ),
            ]
            for m in SHAP_MODELS
            for d in SHAP_DATASETS
        ],
        processed={d: f"{DATA}/processed/{d}" for d in SHAP_DATASETS},
        # rerun trigger: the test sets' queries, the scoring options and the bootstrap
        depends_on={
            "test_sets": config["test_sets"],
            "shap": {
                k: config["shap"][k]
                for k in ("hq_snr", "pointing_tolerance", "reliance_threshold")
            },
            "bootstrap": [
                config["metrics"][k] for k in ("bootstrap_resamples", "ci_level")
            ],
            "seed": config["seed"],
        },
    script:
        "../workflow_scripts/shap_table.py"


rule shap_figures:
    input:
        explained=lambda wc: [
            f"{shap_dir(m, config['test_sets'][wc.test_set]['dataset'])}/{f}"
            for m in SHAP_MODELS
            for f in SHAP_FILES
        ],
        catalog=lambda wc: processed(config["test_sets"][wc.test_set]["dataset"]),
        shards=lambda wc: processed(
            config["test_sets"][wc.test_set]["dataset"], "shards"
        ),
    output:
        snr=report(
            f"{RESULTS}/figures/shap/{{test_set}}/accuracy_vs_snr.png",
            category="SHAP localization",
            subcategory="{test_set}",
            labels={"test set": "{test_set}", "figure": "accuracy vs S/N"},
        ),
        examples=[
            report(
                f"{RESULTS}/figures/shap/{{test_set}}/examples_{m}.png",
                category="SHAP localization",
                subcategory="{test_set}",
                labels={"test set": "{test_set}", "figure": f"examples {m}"},
            )
            for m in SHAP_MODELS
        ],
    log:
        "logs/shap/figures_{test_set}.log",
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        shap_dirs=lambda wc: {
            m: shap_dir(m, config["test_sets"][wc.test_set]["dataset"])
            for m in SHAP_MODELS
        },
        processed=lambda wc: f"{DATA}/processed/{config['test_sets'][wc.test_set]['dataset']}",
        example_pngs=lambda wc: {
            m: f"{RESULTS}/figures/shap/{wc.test_set}/examples_{m}.png"
            for m in SHAP_MODELS
        },
        # rerun trigger: the test set's query and the figure options
        depends_on=lambda wc: {
            "test_set": config["test_sets"][wc.test_set],
            "shap": {
                k: config["shap"][k] for k in ("hq_snr", "snr_bins", "n_examples")
            },
        },
    script:
        "../workflow_scripts/shap_figures.py"
