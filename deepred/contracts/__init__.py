"""The files stages exchange, each written and read in one place: the config, raw sources, the processed data
(Parquet catalogue + NPY shards), prediction files and model.json."""
