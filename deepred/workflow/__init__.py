"""The Snakemake layer, torch-free: the SLURM preflight (and the rules' path patterns, targets and rerun triggers)."""
