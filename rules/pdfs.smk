# Test-set PDFs as qp ensembles (deepred/pdfs/qp_io.py), the format RAIL's evaluation stages read: per test set one job
# writes every PDF model's file (the rows the metrics rule evaluates, in its order) and the truth table RAIL compares
# them with. One job per test set, not per (model, test set): each job's start (Python, qp) costs more than its work.


rule pdfs_qp:
    input:
        predictions=lambda wc: PLAN.pdf_predictions(wc.test_set),
        catalog=lambda wc: P.processed(test_set_dataset(wc)),
    output:
        pdfs=[P.pdfs(m) for m in PDF_MODELS],
        truth=P.pdfs("truth"),
    log:
        "logs/pdfs/{test_set}.log",
        usage=P.benchmark("pdfs_qp", "{test_set}"),
    localrule: True
    conda:
        "../envs/deepred.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime="10m",
    params:
        **rule_params(config, "pdfs_qp"),  # the test set: its query
        models=PDF_MODELS,  # in the order of the predictions and pdfs lists
    script:
        "../workflow_scripts/pdfs_qp.py"
