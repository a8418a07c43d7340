"""Survey simulator: survey-realistic cutouts with known redshifts (the pipeline's embedded default data).

`simulate_dataset(preset, n_systems, seed, out_dir, bands, cutout, class_fractions)` writes, into out_dir,
images.npy (float32 N,B,H,W, nanomaggies/pixel, AB zero point 22.5), masks.npy (uint8 N,H,W, footprint of
the central object incl. arcs and SN images), truth.parquet and meta.json (docs/contracts.md). Everything is
written into a temporary sibling folder and renamed into place at the end; images stream through
np.lib.format.open_memmap in batches, so memory is bounded by one batch.
"""

from deepred.simulate import lensing, sed  # noqa: F401 (submodules of the package face)
from deepred.simulate.simulator import OUTPUT_FILES, dataset_seed, draw_catalog, simulate_dataset
from deepred.simulate.surveys import SimulationError, get_preset, presets

__all__ = ["OUTPUT_FILES", "SimulationError", "dataset_seed", "draw_catalog", "get_preset", "lensing", "presets", "sed",
           "simulate_dataset"]
