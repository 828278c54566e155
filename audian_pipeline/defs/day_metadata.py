"""Each day's own figures on each day's materialisation, in runs of one day or of many.

A single-run backfill (`BackfillPolicy.single_run`) returns one `MaterializeResult` and Dagster
records one materialisation per partition from it, every one with the same metadata: a day's
page would show the whole run's totals as if they were that day's. `add_asset_metadata` with a
`partition_key` is Dagster's partition-scoped layer on top, merged into that partition's event
alone; so the days' figures go there under the plain names (`rows`, `bytes_written`, ...), which
also makes the UI's plots of them per day, and the result keeps only what is true of the run as
a whole, under `run_*` names that say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

import dagster as dg


def add_day_metadata(context: dg.AssetExecutionContext, day: date, metadata: Mapping[str, Any]) -> None:
    """`metadata` on that day's materialisation only, over the run's."""
    context.add_asset_metadata(dict(metadata), partition_key=day.isoformat())


def run_metadata(days: list[date], **totals: Any) -> dict[str, Any]:
    """What the run did as a whole: its days and totals, each key prefixed `run_`."""
    span = f"{days[0]}...{days[-1]}" if days else "none"
    return {"run_days": len(days), "run_range": span, **{f"run_{key}": value for key, value in totals.items()}}
