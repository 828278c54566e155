"""`audian-pipeline run`: materialise every asset for a day range, in one process, one run.

The lake assets run as one single-run backfill over the range (their BackfillPolicy), then the
report assets, which are not partitioned, run once over the warehouse. The terminal gets one
line per asset and range (see `progress`); Dagster's full log goes to a file under
AUDIAN_DATA_DIR/logs, whose path is printed.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from datetime import date
from pathlib import Path
from typing import cast

import dagster as dg

from audian_pipeline import definitions
from audian_pipeline.defs.partitions import check_partitions_start, daily_partitions
from audian_pipeline.defs.resources import LakeResource
from audian_pipeline.progress import error_line, log_path, progress_logger, python_logs_to
from audian_pipeline.settings import RangeError, SettingError, check_dagster_pg_url, executor_from_env

LAKE_AND_WAREHOUSE = dg.AssetSelection.groups("lake", "warehouse")
REPORTS = dg.AssetSelection.groups("reports")


def range_tags(first: date, last: date) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat()}


def instance() -> dg.DagsterInstance:
    """The instance in DAGSTER_HOME (default ./dagster_home), so runs show in `dagster dev`."""
    check_dagster_pg_url()
    home = os.environ.get("DAGSTER_HOME") or str(Path("dagster_home").resolve())
    if Path(home, "dagster.yaml").exists():
        os.environ["DAGSTER_HOME"] = home
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def check_range(first: date, last: date) -> None:
    check_partitions_start()
    if last < first:
        raise RangeError(f"--end {last} is before --start {first}: give the earlier day as --start")
    keys = daily_partitions.get_partition_keys()
    if first.isoformat() < keys[0] or last.isoformat() > keys[-1]:
        raise RangeError(f"days must lie within the partitions {keys[0]}..{keys[-1]} "
                         "(set AUDIAN_PARTITIONS_START for an earlier start)")


def run_range(first: date, last: date, resources: dict | None = None,
              dagster_instance: dg.DagsterInstance | None = None, debug: bool = False) -> int:
    """Returns a process exit code: 0 when every step and blocking check succeeded."""
    check_range(first, last)
    if executor_from_env() == "celery":
        return run_on_workers(first, last, resources, dagster_instance)
    defs = definitions.load()
    resources = {**(defs.resources or {}), **(resources or {})}
    dagster_instance = dagster_instance or instance()
    lake = resources.get("lake")
    log_file = log_path(lake.path if isinstance(lake, LakeResource) else LakeResource().path)
    span = f"{first}" if first == last else f"{first}..{last}"
    started = time.monotonic()
    print(f"audian-pipeline: days {span}; Dagster's log: {log_file}", flush=True)
    with python_logs_to(log_file, mute_terminal=not debug):
        result = _execute(defs, LAKE_AND_WAREHOUSE, resources, dagster_instance, progress_logger(log_file, span),
                          range_tags(first, last))
        if result.success:
            result = _execute(defs, REPORTS, resources, dagster_instance, progress_logger(log_file, "(all days)"))
    if not result.success:
        return _explain(result, log_file)
    print(f"audian-pipeline: done in {time.monotonic() - started:.1f} s", flush=True)
    return 0


def _execute(defs: dg.Definitions, selection: dg.AssetSelection, resources: dict, dagster_instance: dg.DagsterInstance,
             logger: dg.LoggerDefinition, tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    """Like dg.materialize, with our logger as the run's console logger."""
    job = dg.define_asset_job("audian_pipeline_run", selection=selection)
    job_defs = dg.Definitions(assets=_materializable(defs), jobs=[job], resources=resources,
                              loggers={"console": logger})
    return job_defs.resolve_job_def(job.name).execute_in_process(
        run_config={"loggers": {"console": {}}},  # a logger runs only when the run config names it
        instance=dagster_instance, tags=tags, raise_on_error=False)


def _workers_job(selection: dg.AssetSelection) -> dg.JobDefinition:
    """The code location's assets, resources and executor, as a job over `selection`."""
    defs = definitions.load()
    job = dg.define_asset_job("audian_pipeline_run", selection=selection)
    return dg.Definitions(assets=_materializable(defs), jobs=[job], resources=defs.resources,
                          executor=defs.executor).resolve_job_def(job.name)


def lake_and_warehouse_job() -> dg.JobDefinition:
    """What `run` executes over a day range; each Celery worker rebuilds it from this function."""
    return _workers_job(LAKE_AND_WAREHOUSE)


def reports_job() -> dg.JobDefinition:
    return _workers_job(REPORTS)


_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""Dagster's console logger at WARNING: its every event is in the instance's log, which the UI shows."""


def run_on_workers(first: date, last: date, resources: dict | None = None,
                   dagster_instance: dg.DagsterInstance | None = None) -> int:
    """AUDIAN_EXECUTOR=celery: the same two runs, each step a task for `audian-pipeline worker`.

    The workers read their settings from their own environment, so resources cannot be handed
    in from here; the runs and their logs are in the shared Dagster instance (the UI shows them)."""
    if resources:
        raise SettingError("AUDIAN_EXECUTOR=celery: the workers read their settings from their environment; "
                           "unset AUDIAN_EXECUTOR to run with resources given in process.")
    dagster_instance = dagster_instance or instance()
    if dagster_instance.is_ephemeral:
        raise SettingError("AUDIAN_EXECUTOR=celery needs a Dagster instance the workers share: set DAGSTER_HOME "
                           "(dagster_home/production, on Postgres, for workers on other machines).")
    started = time.monotonic()
    span = f"{first}" if first == last else f"{first}..{last}"
    print(f"audian-pipeline: days {span} on Celery workers; Dagster's log: the instance at "
          f"{dagster_instance.root_directory}", flush=True)
    # dagster-celery registers its step task again for every step it submits, which Celery 5.7 warns about each time
    warnings.filterwarnings("ignore", message="Task name 'execute_plan' is already registered")
    for job, tags in ((lake_and_warehouse_job, range_tags(first, last)), (reports_job, None)):
        with dg.execute_job(dg.reconstructable(job), dagster_instance, run_config=_QUIET, tags=tags,
                            raise_on_error=False) as result:
            if not result.success:
                for message in failure_messages(result) or [f"run {result.run_id} failed"]:
                    print(f"audian-pipeline: {message} (run {result.run_id})", file=sys.stderr)
                return 1
    print(f"audian-pipeline: done in {time.monotonic() - started:.1f} s", flush=True)
    return 0


def _materializable(defs: dg.Definitions) -> list[dg.AssetsDefinition | dg.AssetSpec | dg.SourceAsset]:
    """The code location's assets as `materialize` takes them: `Definitions.assets` also admits the
    legacy CacheableAssetsDefinition, which the defs folder never holds."""
    return cast(list[dg.AssetsDefinition | dg.AssetSpec | dg.SourceAsset], list(defs.assets or []))


def failure_messages(result: dg.ExecuteInProcessResult | dg.ExecuteJobResult) -> list[str]:
    """What failed, one line each, in the words of the error we raised (not Dagster's wrapper)."""
    messages = []
    for event in result.all_events:
        if not (event.is_step_failure or event.is_resource_init_failure):
            continue
        line = error_line(getattr(event.event_specific_data, "error", None))
        if line is not None:
            message = f"{event.step_key or 'resources'} failed: {line}"
            if message not in messages:
                messages.append(message)
    return messages


def _explain(result: dg.ExecuteInProcessResult, log_file: Path) -> int:
    """One line per failure, the cause in our own words; the last says where the tracebacks are."""
    messages = failure_messages(result) or ["the run failed"]
    for i, message in enumerate(messages, 1):
        suffix = f" (full log: {log_file})" if i == len(messages) else ""
        print(f"audian-pipeline: {message}{suffix}", file=sys.stderr)
    return 1
