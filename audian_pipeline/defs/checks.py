"""What every lake asset shares: its unique-key check (blocking) and its freshness policy."""

from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from audian_pipeline.lake.parquet import read_partition
from audian_pipeline.lake.tables import Table
from audian_pipeline.storage import Store

lake_freshness = dg.FreshnessPolicy.cron(deadline_cron="0 2 * * *", lower_bound_delta=timedelta(hours=2))
"""Materialised between 00:00 and 02:00 UTC each day (the daily schedule runs at 00:15). Audian
deletes each recording 30 days after it was made, so a lake that goes stale is the one way to
lose recordings for good: the UI flags it the same night."""


def unique_key_spec(table: Table, name: str) -> dg.AssetCheckSpec:
    """Blocking: a day with a key twice never reaches the warehouse or the reports."""
    return dg.AssetCheckSpec(name, asset=table.name, blocking=True,
                             description=f"No {table.key} appears twice in a day's partition; blocks the warehouse.")


def unique_key_check(lake: Path | Store, table: Table, days: Iterable[date], check_name: str) -> dg.AssetCheckResult:
    """No key twice in a day's partition; reads back what is on disk, not what was meant to be written."""
    duplicates = {}
    for day in days:
        stored = read_partition(lake, table, day)
        ids = stored.column(table.key).to_pylist() if stored is not None else []
        if len(ids) != len(set(ids)):
            duplicates[str(day)] = len(ids) - len(set(ids))
    return dg.AssetCheckResult(check_name=check_name, passed=not duplicates,
                               metadata={"duplicates_by_day": dg.MetadataValue.json(duplicates)})
