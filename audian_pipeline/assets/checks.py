"""Data-quality checks shared by the lake assets."""

from collections.abc import Iterable
from datetime import date
from pathlib import Path

import dagster as dg

from audian_pipeline.lake.parquet import read_partition


def unique_key_check(data_dir: Path, table: str, column: str, days: Iterable[date], check_name: str) -> dg.AssetCheckResult:
    """No key twice in a day's partition; reads back what is on disk, not what was meant to be written."""
    duplicates = {}
    for day in days:
        stored = read_partition(data_dir, table, day)
        ids = stored.column(column).to_pylist() if stored is not None else []
        if len(ids) != len(set(ids)):
            duplicates[str(day)] = len(ids) - len(set(ids))
    return dg.AssetCheckResult(check_name=check_name, passed=not duplicates,
                               metadata={"duplicates_by_day": dg.MetadataValue.json(duplicates)})
