"""Snakemake script: one `{table}_nmad` table from its own test sets' NMAD rows."""

from deepred.core.logs import start_job

start_job(snakemake)  # noqa: F821 (snakemake is injected)

from deepred.core.io import write_json  # noqa: E402
from deepred.core.provenance import provenance  # noqa: E402
from deepred.results.tables import write_nmad_table  # noqa: E402
from deepred.workflow.plan import table_test_sets  # noqa: E402
from deepred.workflow.stages import job_config  # noqa: E402

config = job_config(snakemake.config, snakemake.rule)  # noqa: F821 (only the sections the rule reads)
table = snakemake.wildcards.table  # noqa: F821
# the input list is in the table's test-set order (PLAN.nmad_table_inputs)
files = dict(zip(table_test_sets(config, table), snakemake.input.nmad))  # noqa: F821
write_nmad_table(config, table, files, snakemake.output.table)  # noqa: F821
write_json(snakemake.output.provenance, provenance(config, list(snakemake.input)))  # noqa: F821
