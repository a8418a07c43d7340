# DeepRed networks (backbones, neural baselines, hybrids and their controls): one training job per (model, dataset),
# which also calibrates the network's PDFs on the validation split (deepred/pdfs/calibration.py) and writes its
# predictions on the val and test splits, from one pass over them (deepred.predict.splits.calibrate_and_predict);
# and the two ensembles (deepred/predict/ensemble.py).


rule train:
    input:
        unpack(lambda wc: PLAN.features_inputs(wc.model, wc.dataset)),  # a hybrid's photometry
        catalog=P.processed(),
        stats=P.processed(name="stats.json"),
        shards=shards_of("dataset"),
    output:
        weights=P.model_file("model.safetensors"),
        meta=P.model_file("model.json"),
        history=P.model_file("history.csv"),
        predictions=P.predictions(),
    log:
        "logs/train/{model}/{dataset}.log",
        usage=P.benchmark("train", "{model}", "{dataset}"),
    wildcard_constraints:
        model=choices(NEURAL_MODELS),  # no network enabled: no model matches
    conda:
        "../envs/deepred.yaml"
    threads: config["training"]["threads"]
    resources:
        mem_mb=4000,
        runtime="4h",
        gpu=1,
    params:
        **rule_params(config, "train"),
    script:
        "../workflow_scripts/train.py"


rule ensemble:
    input:
        predictions=[P.predictions(m) for m in ENSEMBLE_MEMBERS],
        models=[P.model_file("model.json", m) for m in ENSEMBLE_MEMBERS],
    output:
        stacked=P.predictions("ensemble_stacked"),
        mean=P.predictions("ensemble_mean"),
        stacked_model=P.model_file("model.json", "ensemble_stacked"),
        mean_model=P.model_file("model.json", "ensemble_mean"),
    log:
        "logs/ensemble/{dataset}.log",
        usage=P.benchmark("ensemble", "{dataset}"),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="15m",
    params:
        **rule_params(config, "ensemble"),
    script:
        "../workflow_scripts/ensemble.py"
