"""One-release alias: `python -m deepred.archive` runs `python -m deepred.results.archive`, with a warning."""

import runpy
import warnings

if __name__ == "__main__":
    warnings.warn("python -m deepred.archive is deprecated: use python -m deepred.results.archive", DeprecationWarning,
                  stacklevel=1)
    runpy.run_module("deepred.results.archive", run_name="__main__", alter_sys=True)
