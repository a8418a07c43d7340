"""Snakemake script: results/tables/hybrid_controls.csv, each hybrid and its controls against photometry per test set
(deepred.results.hybrid_controls)."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from pathlib import Path  # noqa: E402

from deepred.core.io import write_csv, write_json  # noqa: E402
from deepred.core.provenance import provenance  # noqa: E402
from deepred.results.hybrid_controls import controls_table  # noqa: E402
from deepred.results.tables import FLOAT_FORMAT  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)
inputs = dict(snakemake.input.items())  # noqa: F821 (names from PLAN.hybrid_controls_inputs)
pred = {tuple(k.split("__")[1:]): v for k, v in inputs.items() if k.startswith("pred__")}
processed = {k.split("__")[1]: str(Path(v).parent) for k, v in inputs.items() if k.startswith("cat__")}
write_csv(snakemake.output.table, controls_table(config, pred, processed), float_format=FLOAT_FORMAT)  # noqa: F821
write_json(snakemake.output.provenance, provenance(config, list(snakemake.input)))  # noqa: F821
