"""Raw sources, validation and the normalized data contract (Parquet catalogue + NPY shards)."""
