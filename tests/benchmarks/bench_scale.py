"""Costs that grow with the work: one day's run at 2,000, 10,000 and 50,000 recordings a day.

`run.py`'s section `scale` (`.venv/bin/python tests/benchmarks/run.py --only scale [--quick]`).
For each size, an account of that many recordings a day with 30 days retained:

- the emulator is a subprocess built in-process (`start_emulator`, not seeded over HTTP), frozen
  at 00:30 UTC the day after the measured day D, as the daily schedule finds it; recordings are
  3 s long (the emulator's shortest) so 50,000 files a day stay a few GB on disk;
- before the run, every webhook event since D 00:00 is delivered to the pipeline's receiver and
  events store (`WebhookReceiver`), so the run sees the steady state: checksums and the
  `recording.completed` fields are there before the index and the archive look;
- the other 29 retained days are already in the lake and the warehouse (bench_warehouse's
  synthetic days, loaded by `load_warehouse`), so the day's load meets a full warehouse;
- `audian-pipeline run --start D --end D` runs in a fresh interpreter with its own Dagster
  instance (SQLite, in-process executor, local lake and archive); each stage's wall seconds come
  from that instance's STEP_START / STEP_SUCCESS events, its CPU seconds from sampling the
  process's /proc/<pid>/stat at those instants, the API requests by kind from the emulator.

Baselines, from the same section: each per-recording figure beside the smallest size's (the
flatness ratio), and requests beside a run of the smallest size that finds no webhook in its
events store (a detail GET per recording: "about 4 per recording"). The one-day warehouse load
is also timed beside the same day loaded into a warehouse that holds only that day.

At the smallest size only, the same day runs once more as issue 15 deploys it (`measure_distributed`):
Dagster's instance and the events store on Postgres, AUDIAN_EXECUTOR=celery on Redis, two
`audian-pipeline worker` processes; the servers come from the suite's tests/dbservers.py, the workers
from tests/test_celery_executor.py. Its wall time, per-stage wall ms per recording and requests per
archived recording stand beside the in-process run of the same size. Where Postgres or Redis cannot
start, the section says the row was skipped and why, and goes on.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run alone: import the checkout
sys.path.append(str(Path(__file__).resolve().parents[1]))  # tests/: the suite's server and worker helpers
from audian_pipeline.lake.parquet import read_rows  # noqa: E402
from audian_pipeline.lake.paths import events_db, table_dir, warehouse_path  # noqa: E402
from audian_pipeline.lake.tables import RECORDING_AUDIO, TABLES  # noqa: E402
from audian_pipeline.settings import DEMO_API_KEY  # noqa: E402
from audian_pipeline.warehouse.load import COPY_BELOW_BYTES, load_warehouse  # noqa: E402
from audian_pipeline.webhooks.store import BaseEventStore, StoredEvent  # noqa: E402
from tests.benchmarks.bench_warehouse import write_synthetic_lake  # noqa: E402
from tests.benchmarks.run import (  # noqa: E402
    RESULTS,
    WEBHOOK_SECRET,
    EmulatorProcess,
    Goal,
    Profile,
    Row,
    Section,
    WebhookReceiver,
    mib,
    peak_rss,
    scoped_environ,
)

DAY = date(2026, 11, 19)
"""The measured day: the benchmark's usual day (the one before run.py's CLOCK)."""
CLOCK = datetime(2026, 11, 20, 0, 30, tzinfo=timezone.utc)
"""The emulator's frozen clock: half an hour after the day, when the daily schedule runs."""
RETAINED_DAYS = 30
DURATION_S = 3
SEED = 5
FULL_SIZES = (2_000, 10_000, 50_000)
QUICK_SIZES = (2_000, 5_000, 12_000)
"""--quick: 50,000 a day alone takes ~20 min here (150,000 webhooks to deliver, 50,000 files to
synthesise, download and analyse on 2 cores); the same 30 days retained, a 6-fold spread."""
STAGES = ("recordings", "calls", "recording_events", "recording_audio", "recording_speech", "warehouse")
"""The stages named in the issue, in the job's order; the day's other steps (disposals, deletions)
and the reports' run (one step per view, once per run whatever the size) are summed apart."""
OTHERS, REPORTS = "other steps of the day", "reports"
ALL_STAGES = (*STAGES, OTHERS, REPORTS)
KEY = 24
"""Width of the names in the printed tables."""
REQUEST_KINDS = ("list", "detail", "download", "storage", "call")
WEBHOOK_TIMEOUT_S = 3600.0
EMULATOR_BUILD_TIMEOUT_S = 1200.0
TARGET_PER_DAY = 1_000_000
REAL_RECORDING_BYTES = 1_000_000  # "1 TB a day" at a million recordings
REAL_RECORDING_SECONDS = 250  # what 1 MB holds at 32 kbps: speech analysis scales with audio seconds
HOURS = (8, 24)
QUOTA = 10**13
WARM_UP_LOADS = 3
"""Loads before a timed one: by then the loader has its three rotating builds, as after three days."""
WORKERS, WORKER_CONCURRENCY = 2, 1
"""The distributed row: two `audian-pipeline worker` processes of one pool process each."""
WORKER_START_TIMEOUT_S = 180.0
REDELIVERY_THREADS = 4
SHM = Path("/dev/shm")
"""Where the receiver's events store lives for the benchmark: delivering 150,000 events with an
fsync each would take longer than the run it prepares (the store's own speed is bench_webhooks.py's)."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# The emulator, built in its own process from its parameters (no HTTP seeding); once every event
# since `webhooks_since` is delivered, it writes its delivery figures to argv[2] and serves on.
_EMULATOR_CHILD = r"""
import json, sys, threading, time
from datetime import datetime
from pathlib import Path
from audian_pipeline.emulator.server import start_emulator

o = json.loads(sys.argv[1])
started = time.perf_counter()
running = start_emulator(
    seed=o["seed"], days=o["days"], per_day=o["per_day"], max_duration=o["max_duration"],
    clock=datetime.fromisoformat(o["clock"]), api_key=o["api_key"], webhook_url=o["webhook_url"],
    webhook_secret=o["webhook_secret"], port=o["port"], storage_port=o["storage_port"],
    cache_dir=Path(o["cache_dir"]), webhooks_since=datetime.fromisoformat(o["webhooks_since"]))
built = time.perf_counter() - started
idle = running.delivery.wait_idle(o["timeout"])
Path(sys.argv[2]).write_text(json.dumps({"built_seconds": built, "idle": idle,
                                         "delivery_seconds": time.perf_counter() - started - built,
                                         **running.delivery.stats.to_dict()}))
threading.Event().wait()
"""

# `audian-pipeline run --start D --end D` itself, then its own peak RSS (VmHWM) into argv[2].
_RUN_CHILD = r"""
import sys
from pathlib import Path
from audian_pipeline.cli import main
try:
    code = main(["run", "--start", sys.argv[1], "--end", sys.argv[1]])
finally:
    peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    Path(sys.argv[2]).write_text(str(peak))
sys.exit(code)
"""

_DAGSTER_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


# ---- one run -------------------------------------------------------------------------------------
class CpuSampler:
    """(time.time(), CPU seconds) of some process trees every `interval`, in a thread: Dagster's
    event timestamps then give each step's CPU as well as its wall time (steps run one at a time)."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1) -> None:
        self.pids, self.interval = pids, interval
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="cpu-sampler")

    def __enter__(self) -> "CpuSampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            try:
                self.samples[name].append((time.time(), tree_cpu(pid)))
            except (OSError, IndexError):
                pass  # the process has exited: its last sample stands

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def cpu_between(self, name: str, start: float, end: float) -> float:
        return _interpolate(self.samples[name], end) - _interpolate(self.samples[name], start)


def tree_cpu(pid: int) -> float:
    """utime + stime of a process and its live descendants, plus what its reaped children used
    (cutime + cstime): a step's worker processes count, before and after they exit."""
    total, stack, root = 0.0, [pid], True
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            if root:
                raise
            continue
        root = False
        total += sum(int(value) for value in fields[11:15]) / CLOCK_TICKS
        for task in tasks:
            try:
                stack += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
    return total


def _interpolate(samples: list[tuple[float, float]], when: float) -> float:
    if not samples:
        return 0.0
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        if t0 <= when <= t1:
            return c0 + (c1 - c0) * ((when - t0) / (t1 - t0) if t1 > t0 else 0.0)
    return samples[0][1] if when < samples[0][0] else samples[-1][1]


@dataclass
class Step:
    key: str
    start: float
    end: float
    cpu: float = 0.0
    emulator_cpu: float = 0.0

    @property
    def wall(self) -> float:
        return self.end - self.start


@dataclass
class RunFigures:
    """What one `audian-pipeline run` of day D cost."""

    steps: dict[str, Step]
    wall: float
    peak_rss: int | None
    requests: dict[str, int]
    completed: int
    verified: int
    archived_bytes: int
    outcomes: dict[str, int]
    listed: int
    materialized: dict[str, dict] = field(default_factory=dict)
    process_cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds of each sampled process (and its children) over the whole run."""

    def stage(self, name: str) -> Step | None:
        """A step by name, or the sum of the day's other steps, or of the reports' run."""
        if name in STAGES:
            return self.steps.get(name)
        suffix = " (reports)" if name == REPORTS else " (day)"
        found = [s for k, s in self.steps.items() if k.endswith(suffix)]
        if not found:
            return None
        return Step(name, 0.0, sum(s.wall for s in found), sum(s.cpu for s in found),
                    sum(s.emulator_cpu for s in found))

    @property
    def per_recording_requests(self) -> float:
        return sum(self.requests.get(k, 0) for k in REQUEST_KINDS) / max(1, self.completed)


def run_day(root: Path, data_dir: Path, emulator: EmulatorProcess, api_key: str, events: Path) -> RunFigures:
    """`audian-pipeline run --start D --end D` in a fresh interpreter on `data_dir`, measured; the
    process environment is the run's only input, as for a person running the command."""
    home = root / f"dagster-home-{data_dir.name}"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(_DAGSTER_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIAN_", "DAGSTER_"))}
    env.update(_run_settings(emulator, api_key, data_dir), AUDIAN_EVENTS_DB=str(events), DAGSTER_HOME=str(home))
    return measure_run(root, data_dir, emulator, env)


def _run_settings(emulator: EmulatorProcess, api_key: str, data_dir: Path) -> dict[str, str]:
    return {"AUDIAN_API_URL": emulator.api_url, "AUDIAN_API_KEY": api_key, "AUDIAN_DATA_DIR": str(data_dir),
            "AUDIAN_STORAGE_QUOTA_BYTES": str(QUOTA)}


def measure_run(root: Path, data_dir: Path, emulator: EmulatorProcess, env: dict[str, str],
                servers: dict[str, int] | None = None) -> RunFigures:
    """The run under `env`, timed by its instance's events (DAGSTER_HOME of `env`). `servers`: the
    processes its steps run in or talk to (Celery workers, Postgres, Redis), sampled as well; their
    steps overlap across workers, so a step's CPU is then left out and only each process's is kept."""
    home = Path(env["DAGSTER_HOME"])
    peak_file = root / f"peak-{data_dir.name}.txt"
    before = Counter(emulator.state()["requests_by_kind"])
    log = root / f"run-{data_dir.name}.log"
    started, started_at = time.perf_counter(), time.time()
    with open(log, "wb") as out:
        child = subprocess.Popen([sys.executable, "-c", _RUN_CHILD, DAY.isoformat(), str(peak_file)], env=env,
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            with CpuSampler({"run": child.pid, "emulator": emulator.pid, **(servers or {})}) as sampler:
                code = child.wait()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    wall, ended_at = time.perf_counter() - started, time.time()
    if code != 0:
        raise RuntimeError(f"audian-pipeline run exited with {code}:\n{log.read_text(errors='replace')[-3000:]}")
    after = Counter(emulator.state()["requests_by_kind"])
    with scoped_environ({k: v for k, v in env.items() if k == "DAGSTER_PG_URL"}):  # the instance's yaml reads it
        steps, materialized = _steps_from_instance(home)
    for step in steps.values():
        step.cpu = 0.0 if servers else sampler.cpu_between("run", step.start, step.end)
        step.emulator_cpu = sampler.cpu_between("emulator", step.start, step.end)
    by_kind = dict(after - before)
    manifest = read_rows(data_dir, RECORDING_AUDIO, DAY)
    verified = [r for r in manifest if r["outcome"] == "verified"]
    return RunFigures(
        steps=steps, wall=wall, peak_rss=int(peak_file.read_text()), requests=by_kind,
        completed=sum(1 for r in manifest if r["outcome"] != "not_completed"), verified=len(verified),
        archived_bytes=sum(r["bytes"] or 0 for r in verified), outcomes=dict(Counter(r["outcome"] for r in manifest)),
        listed=len(manifest), materialized=materialized,
        process_cpu={name: sampler.cpu_between(name, started_at, ended_at) for name in sampler.pids})


def _steps_from_instance(home: Path) -> tuple[dict[str, Step], dict[str, dict]]:
    """Every step of every run in the instance (the day's run, then the reports' run), timed by
    its STEP_START and STEP_SUCCESS events, and each asset's materialisation metadata."""
    types = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS,
             dg.DagsterEventType.ASSET_MATERIALIZATION}
    steps: dict[str, Step] = {}
    materialized: dict[str, dict] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for run in instance.get_runs():
            started: dict[str, float] = {}
            for entry in instance.all_logs(run.run_id, of_type=types):
                event = entry.dagster_event
                if event is None or entry.step_key is None:
                    continue
                if event.event_type == dg.DagsterEventType.STEP_START:
                    started[entry.step_key] = entry.timestamp
                elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
                    key = entry.step_key if entry.step_key in STAGES else f"{entry.step_key} ({_job_kind(run)})"
                    steps[key] = Step(key, started[entry.step_key], entry.timestamp)
                elif event.asset_key is not None and event.partition in (None, DAY.isoformat()):
                    metadata = event.event_specific_data.materialization.metadata  # type: ignore[union-attr]
                    materialized[event.asset_key.to_user_string()] = {k: getattr(v, "value", v)
                                                                      for k, v in metadata.items()}
    return steps, materialized


def _job_kind(run: dg.DagsterRun) -> str:
    return "reports" if "dagster/asset_partition_range_start" not in run.tags else "day"


# ---- the same day on two Celery workers ------------------------------------------------------------
@dataclass
class Distributed:
    """The day's run as issue 15 deploys it, or why it did not run (`skipped`: no servers here;
    `failed`: the run itself went wrong, which the section reports as a failed goal)."""

    run: RunFigures | None = None
    setup: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    failed: str | None = None


def measure_distributed(root: Path, data_dir: Path, emulator: EmulatorProcess, api_key: str,
                        events: BaseEventStore) -> Distributed:
    """The same day on `data_dir` (a copy of the retained days the in-process run found): Dagster
    instance and events store on one Postgres, AUDIAN_EXECUTOR=celery on Redis (which also holds
    AUDIAN_API_MAX_CONCURRENCY's slots), WORKERS workers each in its own directory; first, every event
    of `events` re-delivered to a receiver on the Postgres store. All started here is stopped on leaving."""
    try:
        import pytest

        from dbservers import run_postgres, run_redis
    except ImportError as exc:
        return _skipped(f"the suite's server helpers cannot be imported: {exc}")
    with contextlib.ExitStack() as stack:
        started = time.perf_counter()
        try:
            postgres = stack.enter_context(run_postgres())
            redis_url = stack.enter_context(run_redis())
        except (pytest.skip.Exception, RuntimeError, TimeoutError, OSError) as exc:
            return _skipped(f"Postgres or Redis could not start: {exc}")
        setup: dict[str, Any] = {"Postgres and Redis started (s)": round(time.perf_counter() - started, 1)}
        try:
            run = _run_distributed(stack, root, data_dir, emulator, api_key, events, postgres, redis_url, setup)
        except (RuntimeError, TimeoutError) as exc:
            return Distributed(setup=setup, failed=str(exc))
        return Distributed(run, setup)


def _skipped(reason: str) -> Distributed:
    print(f"scale: the distributed row is skipped: {reason}", file=sys.stderr, flush=True)
    return Distributed(skipped=reason)


def _run_distributed(stack: contextlib.ExitStack, root: Path, data_dir: Path, emulator: EmulatorProcess,
                     api_key: str, events: BaseEventStore, postgres: Any, redis_url: str,
                     setup: dict[str, Any]) -> RunFigures:
    import redis

    from dbservers import PRODUCTION_YAML
    from test_celery_executor import celery_workers, production_env

    database = postgres.create_database()
    home = root / "dagster-home-distributed"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PRODUCTION_YAML, home / "dagster.yaml")
    receiver = stack.enter_context(WebhookReceiver(root, events=database))
    setup["webhooks re-delivered"] = redeliver(events, receiver.url)
    setup["events stored"] = receiver.store.count()
    env = production_env(_run_settings(emulator, api_key, data_dir), home, database, redis_url)
    started = time.perf_counter()
    workers = stack.enter_context(celery_workers(WORKERS, env, root / "workers", WORKER_CONCURRENCY,
                                                 WORKER_START_TIMEOUT_S))
    setup["workers answered (s)"] = round(time.perf_counter() - started, 1)
    client = redis.Redis.from_url(redis_url)
    try:
        redis_pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    servers = {f"worker {n}": worker.pid for n, worker in enumerate(workers)}
    servers |= {"postgres": int((postgres.data_dir / "postmaster.pid").read_text().split()[0]), "redis": redis_pid}
    return measure_run(root, data_dir, emulator, env, servers)


def redeliver(store: BaseEventStore, url: str) -> dict[str, Any]:
    """Every event of `store` POSTed to `url` as Audian retries one (same webhook-id and body, signed
    anew), so a second store gets what the first got; each must be acknowledged or this raises."""
    from audian_pipeline.emulator.delivery import sign

    events = store.events_after(0)

    def post(event: StoredEvent) -> int:
        body, timestamp = event.payload.encode(), int(time.time())
        headers = {"content-type": "application/json", "webhook-id": event.webhook_id,
                   "webhook-timestamp": str(timestamp),
                   "webhook-signature": sign(WEBHOOK_SECRET, event.webhook_id, timestamp, body)}
        return requests.post(url, data=body, headers=headers, timeout=30).status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(REDELIVERY_THREADS) as pool:
        answers = Counter(pool.map(post, events))
    refused = {status: n for status, n in answers.items() if not 200 <= status < 300}
    if refused:
        raise RuntimeError(f"the receiver on Postgres refused re-delivered webhooks: {refused}")
    return {"events": len(events), "seconds": round(time.perf_counter() - started, 1)}


# ---- one size ------------------------------------------------------------------------------------
@dataclass
class SizeFigures:
    per_day: int
    run: RunFigures
    setup: dict[str, Any]
    warehouse_rows: int
    warehouse_bytes: int
    load_full_s: float
    load_alone_s: float
    load_details: dict[str, Any]
    detail_run: RunFigures | None = None
    distributed: Distributed | None = None

    @property
    def recordings(self) -> int:
        """What per-recording figures divide by: the day's recordings the run listed (`per_day` counts
        the emulator's calls a day, 8 % of which carry two recordings)."""
        return max(1, self.run.listed)


class ScaleEmulator(EmulatorProcess):
    """run.py's EmulatorProcess (start, wait, logs, stop) around `_EMULATOR_CHILD`: the account is
    built from its parameters inside the emulator's process, with webhooks from D 00:00 on."""

    def __init__(self, root: Path, per_day: int, api_key: str, webhook_url: str, status: Path, workdir: Path,
                 profile: Profile) -> None:
        super().__init__(profile, api_key, workdir, name=f"emulator-scale-{per_day}")
        options = {
            "seed": SEED, "days": RETAINED_DAYS, "per_day": per_day, "max_duration": DURATION_S,
            "clock": CLOCK.isoformat(), "api_key": api_key, "webhook_url": webhook_url,
            "webhook_secret": WEBHOOK_SECRET, "port": _port(self.api_url), "storage_port": _port(self.storage_url),
            "cache_dir": str(root / "emulator-audio"), "timeout": WEBHOOK_TIMEOUT_S,
            "webhooks_since": datetime.combine(DAY, datetime.min.time(), tzinfo=timezone.utc).isoformat(),
        }
        self.command = [sys.executable, "-c", _EMULATOR_CHILD, json.dumps(options), str(status)]

    def _wait_answers(self, url: str, timeout: float = EMULATOR_BUILD_TIMEOUT_S) -> None:
        """A 50,000-a-day account takes minutes to build before the emulator listens."""
        super()._wait_answers(url, timeout)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def wait_for_delivery(status: Path, emulator: EmulatorProcess) -> dict:
    deadline = time.monotonic() + WEBHOOK_TIMEOUT_S + 60
    while not status.exists():
        if emulator.process is None or emulator.process.poll() is not None:
            raise RuntimeError(f"the scale emulator exited while delivering webhooks:\n{emulator.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"webhooks not delivered within {WEBHOOK_TIMEOUT_S:.0f} s:\n{emulator.log_tail()}")
        time.sleep(0.5)
    found = json.loads(status.read_text())
    if not found["idle"] or found["given_up"]:
        raise RuntimeError(f"webhook delivery did not finish cleanly: {found}")
    return found


def seed_retained_days(data_dir: Path, per_day: int) -> dict[str, Any]:
    """The 29 days before D in the lake and the warehouse, as the daily runs would have left them."""
    days = [DAY - timedelta(days=i) for i in range(RETAINED_DAYS - 1, 0, -1)]
    started = time.perf_counter()
    rows = write_synthetic_lake(data_dir, days, per_day, seed=SEED, now=CLOCK)
    written = time.perf_counter() - started
    load_warehouse(data_dir, None, storage_quota_bytes=QUOTA, rebuild=True)
    return {"synthetic days": len(days), "rows written": rows, "lake seconds": round(written, 1),
            "warehouse build seconds": round(time.perf_counter() - started - written, 1)}


def time_day_load(data_dir: Path, rounds: int = 3, copy_below_bytes: int = COPY_BELOW_BYTES) -> tuple[float, Any]:
    """Median seconds of the daily load of D alone (what the run's warehouse step does), at steady
    state: after the loads a daily schedule has made by its third day, so that the rotating builds
    exist and a load publishes as every later one will (`copy_below_bytes=0`: by catch-up)."""
    for _ in range(WARM_UP_LOADS):
        load_warehouse(data_dir, [DAY], storage_quota_bytes=QUOTA, copy_below_bytes=copy_below_bytes)
    seconds, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = load_warehouse(data_dir, [DAY], storage_quota_bytes=QUOTA, copy_below_bytes=copy_below_bytes)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def day_alone(data_dir: Path, target: Path) -> Path:
    """A data directory whose lake holds only D's partitions (copied), its warehouse built from them."""
    for table in TABLES.values():
        source = table_dir(data_dir, table.name) / f"date={DAY.isoformat()}"
        if source.exists():
            shutil.copytree(source, table_dir(target, table.name) / source.name)
    load_warehouse(target, None, storage_quota_bytes=QUOTA, rebuild=True)
    return target


def measure_size(workdir: Path, profile: Profile, api_key: str, per_day: int, detail_baseline: bool,
                 distributed: bool = False) -> SizeFigures:
    root = workdir / f"scale-{per_day}"
    data_dir = root / "data"
    root.mkdir(parents=True, exist_ok=True)
    events_home = Path(tempfile.mkdtemp(prefix="audian-scale-events-", dir=SHM if SHM.is_dir() else root))
    try:
        started = time.perf_counter()
        setup: dict[str, Any] = {"retained days": seed_retained_days(data_dir, per_day)}
        if distributed:  # the retained days as the in-process run finds them, for the distributed one
            shutil.copytree(data_dir, root / "data-distributed")
        status = root / "emulator-status.json"
        with WebhookReceiver(events_home) as receiver, \
                ScaleEmulator(root, per_day, api_key, receiver.url, status, workdir, profile) as emulator:
            delivery = wait_for_delivery(status, emulator)
            setup["emulator"] = {"built (s)": round(delivery["built_seconds"], 1),
                                 "webhooks delivered": delivery["delivered"],
                                 "delivery (s)": round(delivery["delivery_seconds"], 1),
                                 "events stored": receiver.store.count(),
                                 "peak RSS": mib(peak_rss(emulator.pid))}
            setup["seconds before the run"] = round(time.perf_counter() - started, 1)
            run = run_day(root, data_dir, emulator, api_key, events_db(events_home))
            detail_run = None
            if detail_baseline:  # the same account, an events store that no webhook reached
                detail_run = run_day(root, root / "data-no-webhooks", emulator, api_key,
                                     root / "no-webhooks" / "events.sqlite3")
            on_workers = measure_distributed(root, root / "data-distributed", emulator, api_key,
                                             receiver.store) if distributed else None
        load_full, result = time_day_load(data_dir, copy_below_bytes=0)  # the path whose cost must follow the day
        rows = sum(result.rows_by_table.values())
        load_alone, _ = time_day_load(day_alone(data_dir, root / "day-alone"), copy_below_bytes=0)
        details = {"published_by": result.published_by, "bytes_copied": result.bytes_copied,
                   "full_rebuild": result.full_rebuild}
        return SizeFigures(per_day, run, setup, rows, warehouse_path(data_dir).stat().st_size, load_full, load_alone,
                           details, detail_run, on_workers)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(events_home, ignore_errors=True)


# ---- the section -----------------------------------------------------------------------------------
def bench_scale(workdir: Path, profile: Profile, api_key: str, sizes: tuple[int, ...] | None = None,
                raw: Path = RESULTS / "scale.json") -> Section:
    quick = profile.name == "quick"
    sizes = sizes or (QUICK_SIZES if quick else FULL_SIZES)
    section = Section("scale", f"7. Costs that grow with the work: one day's run ({DAY}) at "
                      + " / ".join(f"{n:,}" for n in sizes) + f" recordings a day, {RETAINED_DAYS} days retained",
                      ours_label="this size", baseline_label=f"at {sizes[0]:,}/day")
    measured = [measure_size(workdir, profile, api_key, n, detail_baseline=(n == sizes[0]), distributed=(n == sizes[0]))
                for n in sizes]
    _rows(section, measured)
    _goals(section, measured)
    _facts(section, measured)
    _distributed(section, measured[0])
    section.facts["capacity at 1,000,000 recordings a day"] = capacity(measured[-1], measured[0])
    save_raw(measured, raw)
    section.facts["raw figures"] = str(raw)
    section.notes += _notes(sizes, quick)
    return section


def ms_per_recording(step: Step | None, n: int) -> float | None:
    return None if step is None else step.wall * 1000 / max(1, n)


def _rows(section: Section, measured: list[SizeFigures]) -> None:
    small = measured[0]
    for stage in ALL_STAGES:
        for size in measured:
            ours = ms_per_recording(size.run.stage(stage), size.recordings)
            if ours is not None:
                section.rows.append(Row(f"{stage}, ms per recording at {size.per_day:,}/day", ours,
                                        ms_per_recording(small.run.stage(stage), small.recordings), "ms/rec", False, 3))
    for size in measured:
        section.rows.append(Row(f"whole run, ms per recording at {size.per_day:,}/day",
                                size.run.wall * 1000 / size.recordings, small.run.wall * 1000 / small.recordings,
                                "ms/rec", False, 3))
    detail = small.detail_run
    for size in measured:
        section.rows.append(Row(f"API requests per archived recording at {size.per_day:,}/day (baseline: no "
                                "webhooks, detail per recording)", size.run.per_recording_requests,
                                detail.per_recording_requests if detail else None, "req/rec", False, 2))
    for size in measured:
        section.rows.append(Row(f"one-day warehouse load at {size.per_day:,}/day, {size.warehouse_rows:,} rows "
                                "by catch-up (baseline: the day alone, by catch-up)",
                                size.load_full_s, size.load_alone_s, "s", False, 3))
    for size in measured:
        mbps = _archive_mb_per_s(size.run)
        section.rows.append(Row(f"audio archived at {size.per_day:,}/day", mbps, _archive_mb_per_s(small.run),
                                "MB/s", True, 2))
        section.rows.append(Row(f"peak RSS of the run at {size.per_day:,}/day", (size.run.peak_rss or 0) / 2**20,
                                (small.run.peak_rss or 0) / 2**20, "MiB", False, 0))


def _archive_mb_per_s(run: RunFigures) -> float:
    step = run.steps.get("recording_audio")
    return run.archived_bytes / 1e6 / step.wall if step and step.wall else 0.0


def _goals(section: Section, measured: list[SizeFigures]) -> None:
    small, large = measured[0], measured[-1]
    flat = (large.run.wall / large.recordings) / (small.run.wall / small.recordings)
    section.goals.append(Goal(f"a day's run costs the same per recording at {large.per_day:,} as at "
                              f"{small.per_day:,} a day (ratio <= 1.5)", flat <= 1.5, f"ratio {flat:.2f}"))
    for stage in STAGES:
        a, b = small.run.stage(stage), large.run.stage(stage)
        if a and b and a.cpu and stage != "warehouse":
            ratio = (b.cpu / large.recordings) / (a.cpu / small.recordings)
            section.goals.append(Goal(f"{stage}: CPU per recording flat across sizes (ratio <= 1.5)", ratio <= 1.5,
                                      f"ratio {ratio:.2f} ({a.cpu * 1000 / small.recordings:.2f} -> "
                                      f"{b.cpu * 1000 / large.recordings:.2f} ms)"))
    requests = large.run.per_recording_requests
    section.goals.append(Goal("API requests per archived recording <= 3 at steady state (webhooks delivered)",
                              requests <= 3, f"{requests:.2f} at {large.per_day:,}/day: {large.run.requests}; "
                                             f"{large.run.outcomes.get('not_completed', 0):,} recordings of the day "
                                             "not completed (failed: no recording.completed webhook)"))
    growth = large.load_full_s / large.load_alone_s if large.load_alone_s else math.inf
    section.goals.append(Goal(f"the one-day warehouse load grows with the day, not the warehouse: at "
                              f"{large.per_day:,}/day, against {RETAINED_DAYS} days <= 1.5 x against the day alone",
                              growth <= 1.5, f"{growth:.2f}x ({large.load_full_s:.2f} s vs {large.load_alone_s:.2f} s; "
                                             f"{large.load_details})"))
    section.goals.append(Goal("every completed recording of the day verified and archived",
                              all(s.run.verified == s.run.completed for s in measured),
                              "; ".join(f"{s.per_day:,}: {s.run.outcomes}" for s in measured)))


def _facts(section: Section, measured: list[SizeFigures]) -> None:
    cells = "".join(f"{s.per_day:>12,}/day" for s in measured)
    table = {f"{'stage':<{KEY}}": f"{cells}   (wall | CPU ms per recording)   ratio {measured[-1].per_day:,} / "
                                  f"{measured[0].per_day:,} (wall | CPU)"}
    for stage in ALL_STAGES:
        steps = [s.run.stage(stage) for s in measured]
        row = "".join(f"{'—':>16}" if step is None else
                      f"{step.wall * 1000 / s.recordings:>9.2f} | {step.cpu * 1000 / s.recordings:<4.2f}"
                      for step, s in zip(steps, measured, strict=True))
        first, last = steps[0], steps[-1]
        if first and last and first.wall and first.cpu:
            n0, n1 = measured[0].recordings, measured[-1].recordings
            row += f"   {(last.wall / n1) / (first.wall / n0):.2f} | {(last.cpu / n1) / (first.cpu / n0):.2f}"
        table[f"{stage:<{KEY}}"] = row
    section.facts["one day's run, per stage"] = table
    section.facts["per size"] = {f"{s.per_day:,}/day": _size_line(s) for s in measured}
    detail = measured[0].detail_run
    if detail:
        section.facts["baseline run without webhooks"] = (
            f"{measured[0].per_day:,}/day: requests {detail.requests} = {detail.per_recording_requests:.2f} per "
            f"recording; recordings index {ms_per_recording(detail.stage('recordings'), measured[0].recordings):.3f} "
            f"ms/rec; outcomes {detail.outcomes}")


def _size_line(s: SizeFigures) -> str:
    run = s.run
    steps = sum(step.wall for step in run.steps.values())
    per_listed = sum(run.requests.get(k, 0) for k in REQUEST_KINDS) / max(1, run.listed)
    return (f"run {run.wall:.1f} s ({run.wall - steps:.1f} s outside steps: interpreter, Dagster), "
            f"{run.listed:,} listed, {run.verified:,} archived ({run.archived_bytes / 1e6:,.0f} MB); requests "
            f"{run.requests} ({per_listed:.2f} per listed recording); peak RSS {mib(run.peak_rss)}; warehouse "
            f"{s.warehouse_rows:,} rows, {s.warehouse_bytes / 1e6:,.0f} MB, day load {s.load_full_s:.2f} s "
            f"({s.load_details}); before the run: {s.setup}")


def _distributed(section: Section, small: SizeFigures) -> None:
    """The distributed row beside the in-process run of the same size, or why there is none."""
    figures, name = small.distributed, f"on {WORKERS} Celery workers at {small.per_day:,}/day"
    if figures is None:
        return
    if figures.run is None:
        section.facts[name] = f"skipped: {figures.skipped}" if figures.skipped else f"failed ({figures.setup})"
        if figures.failed:
            section.goals.append(Goal(f"the day's run {name} succeeds", False, figures.failed[-3000:]))
        return
    run, n = figures.run, small.recordings
    section.rows.append(Row(f"whole run {name}, s (baseline: in-process)", run.wall, small.run.wall, "s", False, 1))
    for stage in ALL_STAGES:
        ours = ms_per_recording(run.stage(stage), n)
        if ours is not None:
            section.rows.append(Row(f"{stage}, ms per recording {name} (baseline: in-process)", ours,
                                    ms_per_recording(small.run.stage(stage), n), "ms/rec", False, 3))
    section.rows.append(Row(f"API requests per archived recording {name} (baseline: in-process)",
                            run.per_recording_requests, small.run.per_recording_requests, "req/rec", False, 2))
    steps = sum(step.wall for step in run.steps.values())
    section.facts[name] = {
        "run": f"{run.wall:.1f} s ({run.wall - steps:.1f} s outside steps); requests {run.requests}; "
               f"outcomes {run.outcomes}",
        "CPU s by process": _cpu_line(run), "CPU s by process, in-process": _cpu_line(small.run),
        "before the run": figures.setup,
    }
    section.goals.append(Goal(f"the day's run {name} archives what the in-process run archives",
                              run.outcomes == small.run.outcomes and run.archived_bytes == small.run.archived_bytes,
                              f"{run.outcomes}, {run.archived_bytes:,} bytes vs {small.run.outcomes}, "
                              f"{small.run.archived_bytes:,} bytes"))


def _cpu_line(run: RunFigures) -> str:
    return ", ".join(f"{name} {cpu:.1f}" for name, cpu in run.process_cpu.items()) + \
        f" = {sum(run.process_cpu.values()):.1f}"


def _raw_run(run: RunFigures | None) -> dict[str, Any] | None:
    return vars(run) | {"steps": {k: vars(v) for k, v in run.steps.items()}, "materialized": None} if run else None


def save_raw(measured: list[SizeFigures], path: Path) -> None:
    """Every figure of every size, for comparing runs (the report prints a digest)."""
    raw = {str(s.per_day): {
        "run": {**{k: v for k, v in vars(s.run).items() if k not in ("steps", "materialized")},
                "steps": {k: vars(v) for k, v in s.run.steps.items()},
                "metadata": {asset: {k: v for k, v in meta.items() if isinstance(v, (int, float, dict, list))}
                             for asset, meta in s.run.materialized.items() if asset in STAGES}},
        "detail_run": _raw_run(s.detail_run),
        "distributed": s.distributed and {"run": _raw_run(s.distributed.run), "setup": s.distributed.setup,
                                          "skipped": s.distributed.skipped, "failed": s.distributed.failed},
        "setup": s.setup, "warehouse_rows": s.warehouse_rows, "warehouse_bytes": s.warehouse_bytes,
        "load_full_s": s.load_full_s, "load_alone_s": s.load_alone_s, "load_details": s.load_details,
    } for s in measured}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw, indent=2, default=str) + "\n")


def capacity(large: SizeFigures, small: SizeFigures) -> dict[str, str]:
    """1,000,000 recordings a day from the largest size's per-recording figures (fixed costs of a
    run included, so a little pessimistic)."""
    n, run, per_s = large.recordings, large.run, TARGET_PER_DAY / 86400
    req = run.per_recording_requests
    lines = {f"{'API requests':<{KEY}}": f"{req:.2f} per archived recording -> {req * per_s:,.0f}/s over 24 h, "
                                         + ", ".join(f"{req * TARGET_PER_DAY / (h * 3600):,.0f}/s in {h} h"
                                                     for h in HOURS if h != 24)}
    if small.detail_run:
        detail = small.detail_run.per_recording_requests
        lines[f"{'  without webhooks':<{KEY}}"] = f"{detail:.2f} per recording -> {detail * per_s:,.0f}/s over 24 h"
    mean = run.archived_bytes / max(1, run.verified)
    lines[f"{'audio bytes':<{KEY}}"] = (
        f"{mean / 1e3:,.0f} kB per {DURATION_S} s recording here -> {mean * per_s / 1e6:,.2f} MB/s; real ~1 MB "
        f"recordings (1 TB/day): {REAL_RECORDING_BYTES * per_s / 1e6:,.1f} MB/s over 24 h, "
        f"{REAL_RECORDING_BYTES * TARGET_PER_DAY / (8 * 3600) / 1e6:,.1f} MB/s in 8 h")
    lines[f"{'stage':<{KEY}}"] = ("CPU ms/rec  wall ms/rec  CPU-h/day   processes for a day in "
                                  + " / ".join(f"{h} h" for h in HOURS) + " (by CPU | by wall)")
    for stage in ALL_STAGES:
        step = run.stage(stage)
        if step is None:
            continue
        cpu, wall = step.cpu / n, step.wall / n
        figures = f"{cpu * 1000:10.3f}  {wall * 1000:11.3f}  {cpu * TARGET_PER_DAY / 3600:9.1f}   "
        if stage == "warehouse":
            figures += (f"one writer: the day's load {large.load_full_s / n * TARGET_PER_DAY / 60:,.1f} min "
                        f"(scaled from {large.load_full_s:.2f} s at {n:,}/day)")
        else:
            figures += " / ".join(f"{math.ceil(cpu * TARGET_PER_DAY / (h * 3600))} | "
                                  f"{math.ceil(wall * TARGET_PER_DAY / (h * 3600))}" for h in HOURS)
        lines[f"{stage:<{KEY}}"] = figures
    speed = run.materialized.get("recording_speech", {}).get("times_real_time")
    if speed:
        cpu_h = TARGET_PER_DAY * REAL_RECORDING_SECONDS / speed / 3600
        lines[f"{'  speech, real length':<{KEY}}"] = (
            f"{speed:,.0f}x real time per CPU here; {REAL_RECORDING_SECONDS} s a recording (1 MB at 32 kbps) -> "
            f"{cpu_h:,.0f} CPU-h/day: " + ", ".join(f"{math.ceil(cpu_h / h)} cores in {h} h" for h in HOURS))
    total = sum(s.cpu for s in run.steps.values()) / n
    lines[f"{'all steps':<{KEY}}"] = (f"{total * 1000:10.3f} CPU ms/rec -> {total * TARGET_PER_DAY / 3600:,.0f} "
                                     "CPU-h/day: " + ", ".join(f"{math.ceil(total * TARGET_PER_DAY / (h * 3600))} "
                                                              f"cores in {h} h" for h in HOURS))
    return lines


def _notes(sizes: tuple[int, ...], quick: bool) -> list[str]:
    notes = [
        f"Each size: an account of {RETAINED_DAYS} retained days built inside the emulator's process (seed {SEED}, "
        f"every recording {DURATION_S} s long, clock frozen at {CLOCK:%Y-%m-%dT%H:%MZ}); every webhook event since "
        f"{DAY} 00:00 delivered to the pipeline's receiver and events store before the run; the {RETAINED_DAYS - 1} "
        "days before in the lake (synthetic, bench_warehouse.py) and loaded in the warehouse.",
        "The run is `audian-pipeline run --start D --end D` in a fresh interpreter (in-process executor, own SQLite "
        "Dagster instance): wall time per step from its STEP_START/STEP_SUCCESS events, CPU by sampling "
        "/proc/<pid>/stat every 0.1 s; requests counted by the emulator (API and storage host) by kind.",
        "A size is the emulator's `per_day` (calls a day; 8 % carry two recordings): per-recording figures divide "
        "by the recordings the run listed for the day, failed ones included; requests per archived recording divide "
        "every request of the run by the recordings it downloaded.",
        "Both processes share this machine's 2 cores: the emulator's CPU (serving lists and files) slows the "
        "pipeline's wall time; CPU per recording is the figure that travels to other machines.",
        "Audio stages scale with recording length: 3 s files here, so recording_audio and recording_speech cost "
        "less per recording than real calls (the archive's MB/s and speech's x-real-time, sections 3 and 4, "
        "carry them to ~1 MB recordings).",
        f"The rows 'on {WORKERS} Celery workers' (smallest size only): the same day on a copy of the retained days, "
        f"Postgres instance and events store (webhooks re-delivered to a receiver on it), Redis, {WORKERS} workers x "
        f"concurrency {WORKER_CONCURRENCY} on this same 2-core machine, so they show the overhead of the deployment, "
        "not a speed-up; each extra machine adds a worker's cores (steps of other days and runs in parallel, under "
        "the one AUDIAN_API_MAX_CONCURRENCY) and the bytes it downloads and writes.",
    ]
    if quick:
        notes.insert(0, f"--quick: sizes {', '.join(f'{n:,}' for n in sizes)} a day instead of "
                        f"{', '.join(f'{n:,}' for n in FULL_SIZES)}, to stay within ~12 minutes on 2 cores; "
                        f"still {RETAINED_DAYS} days retained.")
    return notes


def main(argv: list[str] | None = None) -> int:
    """Alone, at sizes of your choice: `.venv/bin/python tests/benchmarks/bench_scale.py --sizes 200,1000`."""
    import argparse
    import tempfile

    from tests.benchmarks.run import QUICK, print_section

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, QUICK_SIZES)), help="recordings a day, comma-separated")
    args = parser.parse_args(argv)
    sizes = tuple(int(n) for n in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="audian_scale_") as tmp:
        started = time.perf_counter()
        section = bench_scale(Path(tmp), QUICK, os.environ.get("AUDIAN_API_KEY") or DEMO_API_KEY, sizes,
                              raw=RESULTS / f"scale-{'-'.join(map(str, sizes))}.json")  # not the section's file
        section.seconds = time.perf_counter() - started
    print_section(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
