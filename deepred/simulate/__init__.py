"""Survey simulator: survey-realistic cutouts with known redshifts (the pipeline's embedded default data).

`simulate_dataset(preset, n_systems, seed, out_dir, bands, cutout, class_fractions)` writes, into out_dir,
images.npy (float32 N,B,H,W, nanomaggies/pixel, AB zero point 22.5), masks.npy (uint8 N,H,W, footprint of
the central object incl. arcs and SN images), truth.parquet and meta.json (docs/contracts.md). Everything is
written into a temporary sibling folder and renamed into place at the end; images stream through
np.lib.format.open_memmap in batches, so memory is bounded by one batch.
"""

import importlib

# The package face, resolved on first use (PEP 562): `import deepred.simulate.surveys` (the presets, read at
# Snakemake parse time to check a config's bands) must not pay the simulator's 2.4 s of imports.
_FACE = {"OUTPUT_FILES": "simulator", "dataset_seed": "simulator", "draw_catalog": "simulator",
         "simulate_dataset": "simulator", "SimulationError": "surveys", "get_preset": "surveys", "presets": "surveys",
         "lensing": None, "sed": None}

__all__ = sorted(_FACE)


def __getattr__(name: str):
    if name not in _FACE:
        raise AttributeError(f"module 'deepred.simulate' has no attribute '{name}'")
    module = importlib.import_module(f"deepred.simulate.{_FACE[name] or name}")
    return module if _FACE[name] is None else getattr(module, name)
