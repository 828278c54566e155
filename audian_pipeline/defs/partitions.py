"""The one daily partitioning every lake asset shares: UTC days of `created_at`."""

from __future__ import annotations

import os
import warnings
from datetime import date

import dagster as dg

from audian_pipeline.settings import SettingError

# BackfillPolicy is marked beta in Dagster 1.13; we pin 1.13 and test single-run backfills,
# so the warning on every import would only hide the warnings that matter.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")

DEFAULT_START = "2026-01-01"


def _start_date() -> tuple[str, str | None]:
    """AUDIAN_PARTITIONS_START, or the default and why the variable could not be used.

    The partitions must exist when the code location loads, so this is the one setting read at
    import. A bad value must not take the UI down with it: the default stands in, and every
    partitioned run fails at start naming the variable (see `check_partitions_start`)."""
    raw = os.environ.get("AUDIAN_PARTITIONS_START") or DEFAULT_START
    try:
        date.fromisoformat(raw)
    except ValueError:
        return DEFAULT_START, (f"AUDIAN_PARTITIONS_START must be a day as YYYY-MM-DD, e.g. {DEFAULT_START} "
                               f"(got {raw!r}); fix or unset it and reload the code location.")
    return raw, None


_START, _START_ERROR = _start_date()

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=_START,
    timezone="UTC",
    end_offset=1,  # today's partial day is a partition too
)
"""Start date from AUDIAN_PARTITIONS_START (YYYY-MM-DD), read when definitions load."""

backfill_policy = dg.BackfillPolicy.single_run()


def check_partitions_start() -> None:
    """Raise the one-line error for a bad AUDIAN_PARTITIONS_START, if the definitions saw one."""
    if _START_ERROR:
        raise SettingError(_START_ERROR)


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """The UTC days of this run: one partition, or a whole backfill range in one run."""
    return [date.fromisoformat(key) for key in context.partition_keys]
