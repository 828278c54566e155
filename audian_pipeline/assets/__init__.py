"""Dagster assets, one module per lake table, plus the shared partitions."""
