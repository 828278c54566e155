"""The executor of every run the code location launches (UI, schedules, sensors, `run`):
AUDIAN_EXECUTOR, read when the run starts, in its own process.

One executor that chooses at launch, rather than one chosen when the definitions load, for the
same reason the resources read their settings at launch (see `resources.py`): the UI process
need not hold the workers' settings, and a bad value fails the run that uses it, naming the
setting, never the code location.
"""

from typing import Any, Mapping, cast

import dagster as dg
from dagster._core.execution.retries import RetryMode, get_retries_config

from audian_pipeline.settings import SettingError, executor_from_env


@dg.executor(name="audian_executor", config_schema={"retries": get_retries_config()})
def audian_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """in_process (default): every step in the run's process. celery: each step a task for the
    `audian-pipeline worker` processes, which must share this run's Dagster instance."""
    retries = RetryMode.from_config(cast(Mapping[str, Any], init_context.executor_config["retries"]))
    if executor_from_env() == "in_process":
        return dg.in_process_executor.executor_creation_fn(init_context)  # type: ignore[misc]
    if init_context.instance.is_ephemeral:
        raise SettingError("AUDIAN_EXECUTOR=celery needs a Dagster instance the workers share: set DAGSTER_HOME "
                           "(dagster_home/production, on Postgres, for workers on other machines).")
    from audian_pipeline.workers import celery_executor

    return celery_executor(retries or RetryMode.ENABLED)


@dg.definitions
def executor() -> dg.Definitions:
    return dg.Definitions(executor=audian_executor)
