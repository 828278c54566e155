"""The Celery side of AUDIAN_EXECUTOR=celery: the app every run and every worker build alike.

A run submits each step as a `dagster-celery` task to the broker (AUDIAN_CELERY_BROKER_URL);
`audian-pipeline worker` processes, on any machine with the same settings, take the tasks and
run the steps against the shared Dagster instance (DAGSTER_HOME, on Postgres for several
machines). Both ends build their Celery app here from the same settings, or they would not
meet on the same queue.
"""

from __future__ import annotations

import os
import socket
from typing import Mapping

from celery import Celery
from dagster._core.execution.retries import RetryMode
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from audian_pipeline.settings import celery_urls, check_dagster_pg_url

CELERY_CONFIG: dict[str, object] = {
    "broker_connection_retry_on_startup": True,
    "worker_hijack_root_logger": False,
}
"""Beside dagster-celery's own defaults (one task prefetched per worker process, its queue)."""


def celery_executor(retries: RetryMode, environ: Mapping[str, str] | None = None) -> CeleryExecutor:
    """The executor a run uses when AUDIAN_EXECUTOR=celery, from the settings at launch."""
    broker, backend = celery_urls(environ)
    return CeleryExecutor(retries=retries, broker=broker, backend=backend, config_source=CELERY_CONFIG)


def celery_app(environ: Mapping[str, str] | None = None) -> Celery:
    """The workers' app: the executor's broker, backend and settings, with Dagster's step task."""
    app = make_app(celery_executor(RetryMode.DISABLED, environ).app_args())
    create_task(app)
    return app


def run_worker(concurrency: int, environ: Mapping[str, str] | None = None) -> None:
    """Serve steps until stopped: `concurrency` steps at once, each in its own worker process.

    Each worker takes one task at a time per process (no prefetching), so a long backfill step
    never waits behind a busy process while another worker idles. The node name carries the
    process id, so several workers on one host are told apart in Dagster's event log."""
    check_dagster_pg_url(environ)
    app = celery_app(environ)
    app.worker_main([
        "worker", f"--concurrency={concurrency}", "--prefetch-multiplier=1", "--queues=dagster",
        "--loglevel=INFO", f"--hostname=audian-{os.getpid()}@{socket.gethostname()}",
    ])
