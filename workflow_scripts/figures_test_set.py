"""Snakemake script: one test set's figures (density, NMAD vs z, PIT), PNG + PDF."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from deepred.results import figures as F  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)

inp, out = snakemake.input, snakemake.output  # noqa: F821
ts = snakemake.wildcards.test_set  # noqa: F821
preds = {k[len("pred_"):]: v for k, v in inp.items() if k.startswith("pred_")}
loaded = F.load_test_set_predictions(config, ts, preds, Path(inp.catalog).parent)
F.density_figure(config, ts, loaded, out.density, out.density_pdf)
F.nmad_vs_z_figure(config, ts, pd.read_csv(inp.binned), out.nmad_vs_z, out.nmad_vs_z_pdf)
F.pit_figure(config, ts, loaded, out.pit, out.pit_pdf)
