"""The one daily partitioning every lake asset shares: UTC days of `created_at`."""

from __future__ import annotations

import os
import warnings
from datetime import date

import dagster as dg

# BackfillPolicy is marked beta in Dagster 1.13; we pin 1.13 and test single-run backfills,
# so the warning on every import would only hide the warnings that matter.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

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
