# DeepRed networks (backbones and neural baselines): one training job per (model, dataset), which also calibrates
# the network's PDFs on the validation split (deepred/calibration.py), its predictions on the val and test splits,
# and the two ensembles over the backbones (deepred/ensemble.py).


rule train:
    input:
        catalog=processed("{dataset}"),
        stats=processed("{dataset}", "stats.json"),
        shards=shards_of("dataset"),
    output:
        weights=f"{RESULTS}/models/{{model}}/{{dataset}}/model.safetensors",
        meta=f"{RESULTS}/models/{{model}}/{{dataset}}/model.json",
        history=f"{RESULTS}/models/{{model}}/{{dataset}}/history.csv",
    log:
        "logs/train/{model}/{dataset}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{model}}/{{dataset}}.tsv"
    wildcard_constraints:
        model="|".join(NEURAL_MODELS) or "(?!)",  # no network enabled: no model matches
    conda:
        "../envs/deepred.yaml"
    threads: config["training"]["threads"]
    resources:
        mem_mb=4000,
        runtime="4h",
        gpu=1,
    params:
        # what the weights depend on, for the `params` rerun trigger: editing one model's section reruns
        # only that model's jobs; run-only keys (deepred.catalog.RUN_ONLY_TRAINING_KEYS) rerun nothing
        section=model_config_section,
        training=TRAINING_RECIPE,
        seed=config["seed"],
        calibration=config["calibration"],  # fitted on the validation split after training (weights unchanged)
    script:
        "../workflow_scripts/train.py"


rule predict:
    input:
        weights=f"{RESULTS}/models/{{model}}/{{dataset}}/model.safetensors",
        meta=f"{RESULTS}/models/{{model}}/{{dataset}}/model.json",
        catalog=processed("{dataset}"),
        stats=processed("{dataset}", "stats.json"),
        shards=shards_of("dataset"),
    output:
        predictions=f"{RESULTS}/predictions/{{model}}/{{dataset}}.parquet",
    log:
        "logs/predict/{model}/{dataset}.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict/{{model}}/{{dataset}}.tsv"
    wildcard_constraints:
        model="|".join(NEURAL_MODELS) or "(?!)",  # no network enabled: no model matches
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime="1h",
    script:
        "../workflow_scripts/predict.py"


rule ensemble:
    input:
        predictions=expand(
            f"{RESULTS}/predictions/{{member}}/{{{{dataset}}}}.parquet",
            member=ENSEMBLE_MEMBERS,
        ),
        models=expand(
            f"{RESULTS}/models/{{member}}/{{{{dataset}}}}/model.json",
            member=ENSEMBLE_MEMBERS,
        ),
    output:
        stacked=f"{RESULTS}/predictions/ensemble_stacked/{{dataset}}.parquet",
        mean=f"{RESULTS}/predictions/ensemble_mean/{{dataset}}.parquet",
        stacked_model=f"{RESULTS}/models/ensemble_stacked/{{dataset}}/model.json",
        mean_model=f"{RESULTS}/models/ensemble_mean/{{dataset}}/model.json",
    log:
        "logs/ensemble/{dataset}.log",
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="15m",
    params:
        members=ENSEMBLE_MEMBERS,
        positive=config["ensemble"]["positive"],
        convex=config["ensemble"]["convex"],
        cv_folds=config["ensemble"]["cv_folds"],
        seed=config["seed"],  # the cross-validation folds
        calibration=config["calibration"],  # the mixture PDF's calibration
    script:
        "../workflow_scripts/ensemble.py"
