"""Real survey files, fetched and verified: downloads (stream, resume, retry, check), Zenodo archives and their
members, lock files (`deepred pins`), checksums. `python -m deepred.fetch` runs it without Snakemake."""
