# Test-set PDFs as qp ensembles (deepred/qp_io.py), the format RAIL's evaluation stages read: per model and test
# set the rows the metrics rule evaluates, in its order, and per test set the truth table RAIL compares them with.
from deepred.tables import prediction_file


rule pdfs_qp:
    input:
        predictions=lambda wc: prediction_file(config, wc.model, test_set_dataset(wc)),
        catalog=lambda wc: processed(test_set_dataset(wc)),
    output:
        f"{RESULTS}/pdfs/{{model}}/{{test_set}}.hdf5",
    log:
        "logs/pdfs/{model}/{test_set}.log",
    wildcard_constraints:
        model="|".join(PDF_MODELS) or "(?!)",
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        test_set=lambda wc: config["test_sets"][wc.test_set],  # rerun trigger: its query
    script:
        "../workflow_scripts/pdfs_qp.py"


rule pdfs_truth:
    input:
        catalog=lambda wc: processed(test_set_dataset(wc)),
    output:
        f"{RESULTS}/pdfs/truth/{{test_set}}.hdf5",
    log:
        "logs/pdfs/truth/{test_set}.log",
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime="5m",
    params:
        test_set=lambda wc: config["test_sets"][wc.test_set],  # rerun trigger: its query
    script:
        "../workflow_scripts/pdfs_qp.py"
