"""One-release alias: `python -m deepred.slurm` runs `python -m deepred.workflow.slurm`, with a warning."""

import runpy
import warnings

if __name__ == "__main__":
    warnings.warn("python -m deepred.slurm is deprecated: use python -m deepred.workflow.slurm", DeprecationWarning,
                  stacklevel=1)
    runpy.run_module("deepred.workflow.slurm", run_name="__main__", alter_sys=True)
