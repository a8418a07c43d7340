# SLURM pre-flight: under `--profile slurm`, check sbatch, the controller, partition and account before the
# first submission (deepred/workflow/slurm.py), so a broken setup fails in seconds with a clear message.
# Local runs, dry runs and the SLURM job steps (executor slurm-jobstep, --no-hooks) skip it.
import os

from snakemake.logging import logger

from deepred.workflow.slurm import SlurmPreflightError, preflight


def _slurm_setting(resource, env):
    """The one value of `resource` among the jobs to run (CLI --default-resources included), else $env."""
    values = set()
    for job in workflow.dag.needrun_jobs():
        value = job.resources.get(resource)
        if value:
            values.add(str(value))
    return values.pop() if len(values) == 1 else os.environ.get(env)


onstart:
    plugin = workflow.executor_plugin
    if plugin is not None and plugin.name == "slurm":
        try:
            info = preflight(
                account=_slurm_setting("slurm_account", "SLURM_ACCOUNT"),
                partition=_slurm_setting("slurm_partition", "SLURM_PARTITION"),
            )
        except SlurmPreflightError as exc:
            raise WorkflowError(str(exc)) from None
        logger.info("SLURM pre-flight ok: " + "; ".join(info))
