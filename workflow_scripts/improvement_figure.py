"""Snakemake script: bar chart of R per test set with the paper's values."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

import pandas as pd  # noqa: E402

from deepred.results.figures import improvement_figure  # noqa: E402

improvement_figure(pd.read_csv(snakemake.input.improvement), snakemake.output.png, snakemake.output.pdf)  # noqa: F821
