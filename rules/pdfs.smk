# Test-set PDFs as qp ensembles (deepred/qp_io.py), the format RAIL's evaluation stages read: per test set one job
# writes every PDF model's file (the rows the metrics rule evaluates, in its order) and the truth table RAIL compares
# them with. One job per test set, not per (model, test set): each job's start (Python, qp) costs more than its work.
from deepred.tables import prediction_file


rule pdfs_qp:
    input:
        predictions=lambda wc: [
            prediction_file(config, m, test_set_dataset(wc)) for m in PDF_MODELS
        ],
        catalog=lambda wc: processed(test_set_dataset(wc)),
    output:
        pdfs=expand(f"{RESULTS}/pdfs/{{model}}/{{{{test_set}}}}.hdf5", model=PDF_MODELS),
        truth=f"{RESULTS}/pdfs/truth/{{test_set}}.hdf5",
    log:
        "logs/pdfs/{test_set}.log",
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        test_set=lambda wc: config["test_sets"][wc.test_set],  # rerun trigger: its query
        models=PDF_MODELS,  # in the order of the predictions and pdfs lists
    script:
        "../workflow_scripts/pdfs_qp.py"
