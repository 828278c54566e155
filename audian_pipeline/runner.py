"""`audian-pipeline run`: materialise every asset for a day range, in one process, one run.

The lake assets run as one single-run backfill over the range (their BackfillPolicy), then the
report assets, which are not partitioned, run once over the warehouse.
"""

from __future__ import annotations

import os
import sys
from datetime import date
from pathlib import Path
from typing import cast

import dagster as dg

from audian_pipeline import definitions
from audian_pipeline.defs.partitions import check_partitions_start, daily_partitions

LAKE_AND_WAREHOUSE = dg.AssetSelection.groups("lake", "warehouse")
REPORTS = dg.AssetSelection.groups("reports")


CONSOLE_INFO = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
"""Progress (one line per asset and day) without Dagster's step-by-step DEBUG events."""


def range_tags(first: date, last: date) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat()}


def instance() -> dg.DagsterInstance:
    """The instance in DAGSTER_HOME (default ./dagster_home), so runs show in `dagster dev`."""
    home = os.environ.get("DAGSTER_HOME") or str(Path("dagster_home").resolve())
    if Path(home, "dagster.yaml").exists():
        os.environ["DAGSTER_HOME"] = home
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def check_range(first: date, last: date) -> None:
    check_partitions_start()
    if last < first:
        raise ValueError(f"--end {last} is before --start {first}")
    keys = daily_partitions.get_partition_keys()
    if first.isoformat() < keys[0] or last.isoformat() > keys[-1]:
        raise ValueError(f"days must lie within the partitions {keys[0]}..{keys[-1]} "
                         "(set AUDIAN_PARTITIONS_START for an earlier start)")


def run_range(first: date, last: date, resources: dict | None = None,
              dagster_instance: dg.DagsterInstance | None = None) -> int:
    """Returns a process exit code: 0 when every step and blocking check succeeded."""
    check_range(first, last)
    defs = definitions.load()
    resources = {**(defs.resources or {}), **(resources or {})}
    dagster_instance = dagster_instance or instance()
    lake = dg.materialize(_materializable(defs), selection=LAKE_AND_WAREHOUSE, resources=resources,
                          instance=dagster_instance, tags=range_tags(first, last), run_config=CONSOLE_INFO,
                          raise_on_error=False)
    if not lake.success:
        return _explain(lake)
    reports = dg.materialize(_materializable(defs), selection=REPORTS, resources=resources,
                             instance=dagster_instance, run_config=CONSOLE_INFO, raise_on_error=False)
    return 0 if reports.success else _explain(reports)


def _materializable(defs: dg.Definitions) -> list[dg.AssetsDefinition | dg.AssetSpec | dg.SourceAsset]:
    """The code location's assets as `materialize` takes them: `Definitions.assets` also admits the
    legacy CacheableAssetsDefinition, which the defs folder never holds."""
    return cast(list[dg.AssetsDefinition | dg.AssetSpec | dg.SourceAsset], list(defs.assets or []))


def failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    """What failed, in the words of the error we raised (not Dagster's wrapper around it)."""
    messages = []
    for event in result.all_events:
        if not (event.is_step_failure or event.is_resource_init_failure):
            continue
        error = getattr(event.event_specific_data, "error", None)
        while error is not None and error.cause is not None and error.cls_name.startswith("Dagster"):
            error = error.cause
        if error is not None:
            message = f"{event.step_key or 'resources'} failed: {error.message.strip()}"
            if message not in messages:
                messages.append(message)
    return messages


def _explain(result: dg.ExecuteInProcessResult) -> int:
    for message in failure_messages(result):
        print(message, file=sys.stderr)
    return 1
