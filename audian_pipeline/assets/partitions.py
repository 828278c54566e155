"""The one daily partitioning every lake asset shares: UTC days of `created_at`."""

from __future__ import annotations

import os
from datetime import date

import dagster as dg

DEFAULT_START = "2026-01-01"

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=os.getenv("AUDIAN_PARTITIONS_START") or DEFAULT_START,
    timezone="UTC",
    end_offset=1,  # today's partial day is a partition too
)
"""Start date from AUDIAN_PARTITIONS_START (YYYY-MM-DD), read when definitions load."""

backfill_policy = dg.BackfillPolicy.single_run()


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """The UTC days of this run: one partition, or a whole backfill range in one run."""
    return [date.fromisoformat(key) for key in context.partition_keys]
