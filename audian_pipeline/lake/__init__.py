"""The lake: Parquet partitions by UTC day under AUDIAN_DATA_DIR/lake, written atomically."""
