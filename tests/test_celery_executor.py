"""AUDIAN_EXECUTOR and `audian-pipeline worker`: runs whose steps are Celery tasks, taken by worker
processes (each in its own working directory) that share the run's Dagster instance on Postgres,
the events store and a Redis broker, all real and started by the suite."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import dagster as dg
import pytest

from audian_pipeline import definitions
from audian_pipeline.cli import main
from audian_pipeline.defs.executor import audian_executor
from audian_pipeline.emulator.faults import FaultConfig
from audian_pipeline.settings import DEMO_API_KEY
from audian_pipeline.workers import celery_app

from test_request_limits import max_in_flight

WORKER = [sys.executable, "-m", "audian_pipeline.cli", "worker"]


def production_env(base: dict[str, str], dagster_home: Path, postgres_url: str, redis_url: str) -> dict[str, str]:
    """The environment runs and workers share: the Postgres instance and events store, Celery on Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIAN_", "DAGSTER_"))}
    return {**env, "DAGSTER_HOME": str(dagster_home), "AUDIAN_EXECUTOR": "celery",
            "DAGSTER_PG_URL": postgres_url.replace("postgresql://", "postgresql+psycopg2://"),
            "AUDIAN_EVENTS_DB": postgres_url, "AUDIAN_CELERY_BROKER_URL": redis_url, **base}


@contextlib.contextmanager
def celery_workers(count: int, env: dict[str, str], root: Path, concurrency: int = 1,
                   timeout: float = 60.0) -> Iterator[list[subprocess.Popen]]:
    """`count` workers, each with `concurrency` pool processes, killed (whole group) on leaving."""
    workers = [start_worker(env, root / f"worker-{n}", concurrency) for n in range(count)]
    try:
        wait_for_workers(env, count, workers, timeout)
        yield workers
    finally:
        for worker in workers:
            stop_worker(worker)


def start_worker(env: dict[str, str], workdir: Path, concurrency: int = 1) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "worker.log", "ab") as log:  # the worker keeps its own copy of the descriptor
        return subprocess.Popen([*WORKER, f"--concurrency={concurrency}"], env=env, cwd=workdir,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_workers(env: dict[str, str], count: int, workers: list[subprocess.Popen], timeout: float) -> None:
    app = celery_app(env)
    deadline = time.monotonic() + timeout
    try:
        while len(app.control.ping(timeout=1.0)) < count:
            if any(w.poll() is not None for w in workers):
                raise RuntimeError("a Celery worker exited before it answered; see worker.log in its directory")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} Celery workers did not answer within {timeout} s")
    finally:
        app.close()


def kill_worker(worker: subprocess.Popen) -> None:
    """SIGKILL the worker and its pool processes at once, as a machine that dies would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(30)


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            kill_worker(worker)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)  # pool children a warm shutdown left behind


def shared_env(production: dict, emu, data_dir: Path, **extra: str) -> dict[str, str]:
    return production_env({"AUDIAN_API_URL": emu.api_url, "AUDIAN_API_KEY": DEMO_API_KEY,
                           "AUDIAN_DATA_DIR": str(data_dir), **extra},
                          production["home"], production["postgres_url"], production["redis_url"])


def test_every_job_of_the_code_location_runs_on_the_executor_the_setting_names():
    defs = definitions.load()
    jobs = [defs.resolve_implicit_global_asset_job_def(), defs.resolve_job_def("daily_job"),
            defs.resolve_job_def("audio_archive_job")]
    assert {job.executor_def.name for job in jobs} == {audian_executor.name}


@pytest.mark.parametrize(("env", "expected"), [
    ({"AUDIAN_EXECUTOR": "dask"}, "AUDIAN_EXECUTOR must be in_process (the default) or celery"),
    ({"AUDIAN_EXECUTOR": "celery"}, "AUDIAN_EXECUTOR=celery needs AUDIAN_CELERY_BROKER_URL"),
    ({"AUDIAN_EXECUTOR": "celery", "AUDIAN_CELERY_BROKER_URL": "amqp://u:hunter2@mq//"},
     "AUDIAN_CELERY_BROKER_URL must be a redis:// or rediss:// URL"),
    ({"AUDIAN_EXECUTOR": "celery", "AUDIAN_CELERY_BROKER_URL": "redis://127.0.0.1:9/0",
      "DAGSTER_PG_URL": "postgresql://dagster:hunter2@db/dagster"}, "DAGSTER_PG_URL must name its driver"),
])
def test_a_wrong_executor_setting_fails_run_and_worker_in_one_line(env, expected, monkeypatch, capsys, tmp_path):
    for name, value in {"AUDIAN_DATA_DIR": str(tmp_path), **env}.items():
        monkeypatch.setenv(name, value)
    commands = [["run", "--start", "2026-11-18", "--end", "2026-11-18"]]
    if env["AUDIAN_EXECUTOR"] == "celery":
        commands.append(["worker"])
    for command in commands:
        assert main(command) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and expected in error and "hunter2" not in error


@pytest.mark.slow
def test_a_run_on_two_workers_executes_its_steps_there_under_one_request_limit(fresh_emulator, tmp_path, production):
    """`audian-pipeline run` with AUDIAN_EXECUTOR=celery: every step ran in a worker process, and
    the two workers together never had more than AUDIAN_API_MAX_CONCURRENCY requests in flight."""
    emu = fresh_emulator(seed=5, days=3, per_day=8, max_duration=30, webhook_url=None,
                         faults=FaultConfig(latency_ms=20))
    data_dir = tmp_path / "data"
    env = shared_env(production, emu, data_dir, AUDIAN_API_MAX_CONCURRENCY="4")
    today = emu.account.now().date()
    days = ["--start", (today - timedelta(days=2)).isoformat(), "--end", (today - timedelta(days=1)).isoformat()]
    with celery_workers(2, env, tmp_path) as workers:
        done = subprocess.run([sys.executable, "-m", "audian_pipeline.cli", "run", *days], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
    assert 1 <= max_in_flight(emu) <= 4
    assert done.returncode == 0, done.stderr[-3000:]
    instance = dg.DagsterInstance.from_config(str(production["home"]))
    runs = instance.get_runs()
    assert len(runs) == 2 and all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
    hosts = {event.dagster_event.engine_event_data.metadata["Celery worker"].value
             for run in runs for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
             if "in celery worker" in (event.message or "")}
    assert hosts and hosts <= {f"audian-{worker.pid}@{os.uname().nodename}" for worker in workers}
