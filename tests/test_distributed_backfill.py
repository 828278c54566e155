"""Past one machine, end to end: a multi-day backfill on the Postgres Dagster instance with two
Celery workers (separate processes, each in its own working directory), the events store on
Postgres and the lake and archive on S3 (SeaweedFS), gives the same lake, archive and warehouse
as the in-process run on local disk, also when a worker is SIGKILLed mid-backfill and the
backfill is run again."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from audian_pipeline.settings import DEMO_WEBHOOK_SECRET
from audian_pipeline.webhooks.receiver import create_app
from audian_pipeline.webhooks.store import open_event_store
from audian_pipeline.workers import celery_app

from s3server import s3_locations
from servers import serve_app
from test_celery_executor import celery_workers, kill_worker, shared_env, start_worker, wait_for_workers
from test_faults_end_to_end import archive_content, warehouse_content
from test_s3_storage import lake_content, stores

ACCOUNT = dict(seed=41, days=9, per_day=6, max_duration=30)
RUN = [sys.executable, "-m", "audian_pipeline.cli", "run"]


def _run(env: dict[str, str], cwd: Path, days: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([*RUN, *days], env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


def _steps_started(instance: dg.DagsterInstance) -> int:
    return sum(len(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START))
               for run in instance.get_runs())


def _until(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.2)


def _idle(env: dict[str, str]) -> bool:
    """Every worker that answers runs no task. No answer at all (a busy machine can be slower than
    the inspect timeout) is not idle: the interrupted run's step may still be writing."""
    app = celery_app(env)
    try:
        active = app.control.inspect(timeout=2.0).active()
        return bool(active) and all(not tasks for tasks in active.values())
    finally:
        app.close()


@pytest.mark.slow
@pytest.mark.timeout(900)  # three runs of 8 days: ~100 s on a quiet machine, over 300 s on a busy one
def test_a_backfill_on_two_workers_equals_the_in_process_one_after_a_worker_is_killed(
    fresh_emulator, tmp_path, production, s3_env
):
    with open_event_store(production["postgres_url"]) as store, \
            serve_app(create_app(store, DEMO_WEBHOOK_SECRET)) as receiver:
        emu = fresh_emulator(webhook_url=receiver + "/webhooks/audian", **ACCOUNT)
        assert emu.delivery.wait_idle(120), "the emulator did not deliver every webhook to the Postgres store"
        emu.delivery.stop()
    today = emu.account.now().date()
    days = ["--start", (today - timedelta(days=8)).isoformat(), "--end", (today - timedelta(days=1)).isoformat()]
    local_dir, distributed_dir = tmp_path / "local", tmp_path / "distributed"

    local_env = shared_env(production, emu, local_dir, AUDIAN_EXECUTOR="in_process", DAGSTER_HOME=str(tmp_path))
    done = _run(local_env, tmp_path, days)
    assert done.returncode == 0, done.stderr[-3000:]

    on_s3 = s3_locations()
    env = shared_env(production, emu, distributed_dir,
                     AUDIAN_LAKE_URL=on_s3["lake_url"], AUDIAN_ARCHIVE_URL=on_s3["archive_url"])
    instance = dg.DagsterInstance.from_config(str(production["home"]))
    with celery_workers(2, env, tmp_path) as workers:
        with open(tmp_path / "backfill.log", "wb") as log:
            backfill = subprocess.Popen([*RUN, *days], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        _until(lambda: _steps_started(instance) >= 2 or backfill.poll() is not None, "two steps starting")
        assert backfill.poll() is None, (tmp_path / "backfill.log").read_text()[-3000:]
        kill_worker(workers[0])  # mid-backfill: its step never finishes, its run waits for it
        backfill.send_signal(signal.SIGINT)  # the operator stops the stuck run; Dagster revokes its tasks
        backfill.wait(120)
        _until(lambda: _idle(env), "the surviving worker finishing its step")
        workers[0] = start_worker(env, tmp_path / "worker-2")
        wait_for_workers(env, 2, workers, 60)
        done = _run(env, tmp_path, days)
        assert done.returncode == 0, done.stderr[-3000:]

    lake, archive = stores(on_s3)
    assert (lake_content(lake, archive.url, emu.api_url)
            == lake_content(local_dir, str(local_dir.resolve()), emu.api_url))
    assert (warehouse_content(distributed_dir, emu.api_url, archive.url)
            == warehouse_content(local_dir, emu.api_url))
    assert archive_content(archive) == archive_content(local_dir)
    assert archive_content(local_dir), "the backfill archived nothing: the comparison would prove nothing"
