"""One-release alias: `python -m deepred.download` runs `python -m deepred.fetch`, with a warning."""

import runpy
import warnings

if __name__ == "__main__":
    warnings.warn("python -m deepred.download is deprecated: use python -m deepred.fetch", DeprecationWarning,
                  stacklevel=1)
    runpy.run_module("deepred.fetch", run_name="__main__", alter_sys=True)
