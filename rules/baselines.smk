# The feature baselines: HOG+SVR (deepred/hogsvr.py) and photometry (deepred/photometry.py). The neural
# baselines (photoz, netz, a1, a3) are trained and predicted by the generic `train`/`predict` rules
# (rules/train.smk) through NEURAL_MODELS.


rule hogsvr:
    input:
        catalog=processed("{dataset}"),
        stats=processed("{dataset}", "stats.json"),
        shards=shards_of("dataset"),
    output:
        model=f"{RESULTS}/models/hogsvr/{{dataset}}/model.npz",
        meta=f"{RESULTS}/models/hogsvr/{{dataset}}/model.json",
        provenance=f"{RESULTS}/models/hogsvr/{{dataset}}/provenance.json",
        predictions=f"{RESULTS}/predictions/hogsvr/{{dataset}}.parquet",
    log:
        "logs/hogsvr/{dataset}.log",
    benchmark:
        f"{RESULTS}/benchmarks/hogsvr/{{dataset}}.tsv"
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime="30m",
    params:
        section=config["baselines"]["hogsvr"],  # rerun trigger: editing the HOG or SVR grid refits
        seed=config["seed"],  # the training-row subsample
        calibration=config["calibration"],  # the PDF calibration fitted after the SVR
    script:
        "../workflow_scripts/hogsvr.py"


rule photometry:
    input:
        catalog=processed("{dataset}"),
        stats=processed("{dataset}", "stats.json"),
        shards=shards_of("dataset"),
    output:
        model=f"{RESULTS}/models/photometry/{{dataset}}/model.npz",
        meta=f"{RESULTS}/models/photometry/{{dataset}}/model.json",
        provenance=f"{RESULTS}/models/photometry/{{dataset}}/provenance.json",
        predictions=f"{RESULTS}/predictions/photometry/{{dataset}}.parquet",
    log:
        "logs/photometry/{dataset}.log",
    benchmark:
        f"{RESULTS}/benchmarks/photometry/{{dataset}}.tsv"
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime="30m",
    params:
        section=config["baselines"]["photometry"],  # rerun trigger: editing the apertures or the grid refits
        seed=config["seed"],  # the regressor's random_state (catalog.derive_seed)
        calibration=config["calibration"],  # the PDF calibration fitted after the trees
    script:
        "../workflow_scripts/photometry.py"
