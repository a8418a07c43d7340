"""Snakemake script: the cross-survey transfer NMAD matrix and its heat map."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from deepred.results.figures import transfer_figure  # noqa: E402
from deepred.results.transfer import transfer_table  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

inp, out = snakemake.input, snakemake.output  # noqa: F821
diag = {tuple(k.split("__")[1:]): v for k, v in inp.items() if k.startswith("diag__")}
off = {tuple(k.split("__")[1:]): v for k, v in inp.items() if k.startswith("off__")}
table = transfer_table(config, diag, off, out.table)  # noqa: F821
transfer_figure(table, out.png, out.pdf)
