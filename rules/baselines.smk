# The feature baselines: HOG+SVR (deepred/baselines/hogsvr.py) and photometry (deepred/baselines/photometry.py), whose
# features (deepred/features/) are measured once per dataset by photometry_features and read by the hybrids too. The neural
# baselines (photoz, netz, a1, a3) are trained and predicted by the generic `train`/`predict` rules
# (rules/train.smk) through NEURAL_MODELS.


rule hogsvr:
    input:
        catalog=P.processed(),
        stats=P.processed(name="stats.json"),
        shards=shards_of("dataset"),
    output:
        model=P.model_file("model.npz", "hogsvr"),
        meta=P.model_file("model.json", "hogsvr"),
        provenance=P.model_file("provenance.json", "hogsvr"),
        predictions=P.predictions("hogsvr"),
    log:
        "logs/hogsvr/{dataset}.log",
        usage=P.benchmark("hogsvr", "{dataset}"),
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime="30m",
    params:
        **rule_params(config, "hogsvr"),
    script:
        "../workflow_scripts/hogsvr.py"


rule photometry_features:
    input:
        catalog=P.processed(),
        stats=P.processed(name="stats.json"),
        shards=shards_of("dataset"),
    output:
        features=P.features(),
    log:
        "logs/photometry_features/{dataset}.log",
        usage=P.benchmark("photometry_features", "{dataset}"),
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime="1h",
    params:
        **rule_params(config, "photometry_features"),
    script:
        "../workflow_scripts/photometry_features.py"


rule photometry:
    input:
        catalog=P.processed(),
        stats=P.processed(name="stats.json"),
        shards=shards_of("dataset"),
        features=P.features(),
    output:
        model=P.model_file("model.npz", "photometry"),
        meta=P.model_file("model.json", "photometry"),
        provenance=P.model_file("provenance.json", "photometry"),
        oof=P.model_file(OOF_FILE, "photometry"),  # what the residual hybrids train on
        predictions=P.predictions("photometry"),
    log:
        "logs/photometry/{dataset}.log",
        usage=P.benchmark("photometry", "{dataset}"),
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime="30m",
    params:
        **rule_params(config, "photometry"),
    script:
        "../workflow_scripts/photometry.py"
