"""One-release alias: `python -m deepred.download` is now `python -m deepred.fetch` (this module warns and runs it)."""

import runpy
import warnings

if __name__ == "__main__":
    warnings.warn("python -m deepred.download is deprecated: use python -m deepred.fetch", DeprecationWarning, stacklevel=1)
    runpy.run_module("deepred.fetch", run_name="__main__", alter_sys=True)
