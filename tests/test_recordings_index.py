"""The recordings index: exact, incremental, atomic, over real HTTP and real Dagster runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest
import requests

from audian_pipeline.client.client import AudianClient
from audian_pipeline.client.models import Page, RecordingSummary
from audian_pipeline.client.paging import WindowPager, list_window
from audian_pipeline.defs.recordings import recordings
from audian_pipeline.defs.resources import AudianResource, LakeResource
from audian_pipeline.emulator.faults import FaultConfig
from audian_pipeline.lake.days import day_bounds
from audian_pipeline.lake.parquet import read_rows
from audian_pipeline.lake.tables import RECORDINGS
from audian_pipeline.settings import DEMO_API_KEY
from audian_pipeline.sync.recordings import sync_day

BOOKKEEPING = ("first_seen_at", "last_seen_at", "detail_fetched_at")


def materialize_range(emu, data_dir: Path, first: date, last: date) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [recordings],
        resources={"audian": AudianResource(api_url=emu.api_url, api_key=DEMO_API_KEY),
                   "lake": LakeResource(data_dir=str(data_dir))},
        tags={"dagster/asset_partition_range_start": first.isoformat(),
              "dagster/asset_partition_range_end": last.isoformat()},
    )


def expected_rows(emu, day: date) -> dict[str, dict]:
    """The emulator's own truth for a day, in the lake's columns."""
    now = emu.account.now()
    start, _ = day_bounds(day)
    truth = {}
    for rec in emu.account.recordings_of_day(start):
        if not rec.visible_at(now):
            continue
        detail = rec.to_detail(now)
        truth[rec.recording_id] = {
            "recording_id": rec.recording_id, "call_id": rec.call_id, "status": detail["status"],
            "duration": detail["duration"], "file_size": detail["file_size"], "created_at": rec.created_at,
            "file_format": rec.file_format, "bitrate": rec.bitrate, "sample_rate": rec.sample_rate,
            "channels": rec.channels, "completed_at": rec.finished_at if detail["completed_at"] else None,
            "expires_at": rec.expires_at, "deleted_at": None,
            "detail_source": "api",  # no events store here: every detail is Audian's answer
        }
    return truth


def stored(data_dir: Path, day: date, drop=BOOKKEEPING) -> dict[str, dict]:
    return {r["recording_id"]: {k: v for k, v in r.items() if k not in drop}
            for r in read_rows(data_dir, RECORDINGS, day)}


def days_of(emu, back: int) -> list[date]:
    today = emu.account.now().date()
    return [today - timedelta(days=n) for n in range(back, -1, -1)]


def test_backfill_of_35_days_matches_the_emulator_row_for_row_and_rerun_is_free(fresh_emulator, data_dir):
    emu = fresh_emulator(seed=31, days=35, per_day=30)
    days = days_of(emu, 35)
    first = materialize_range(emu, data_dir, days[0], days[-1])
    assert first.success
    for day in days:
        assert stored(data_dir, day) == expected_rows(emu, day), day
    per_day = [e.materialization.metadata for e in first.get_asset_materialization_events()]
    assert len(per_day) == len(days)  # one materialisation per day, each with that day's own figures
    assert sum(m["detail_calls"].value for m in per_day) == sum(len(expected_rows(emu, d)) for d in days)

    before = {d: read_rows(data_dir, RECORDINGS, d) for d in days}
    second = materialize_range(emu, data_dir, days[0], days[-1])
    for event in second.get_asset_materialization_events():
        meta2 = event.materialization.metadata
        assert meta2["detail_calls"].value == 0 and meta2["new_rows"].value == 0
    for day in days:
        after = read_rows(data_dir, RECORDINGS, day)
        strip = lambda rows: [{k: v for k, v in r.items() if k != "last_seen_at"} for r in rows]  # noqa: E731
        assert strip(after) == strip(before[day])
    checks = {c.check_name: c.passed for c in second.get_asset_check_evaluations()}
    assert checks == {"rows_match_api_count": True, "unique_recording_id": True}


def test_one_day_costs_its_own_pages_not_the_newer_days(fresh_emulator, data_dir):
    emu = fresh_emulator(seed=8, days=10, per_day=450)
    day = emu.account.now().date() - timedelta(days=8)
    with AudianClient(emu.api_url, DEMO_API_KEY) as client:
        result = sync_day(client, data_dir, day)
    rows = len(expected_rows(emu, day))
    assert result.rows == rows
    assert result.list_calls <= -(-rows // 200) + 3
    assert result.detail_calls == rows
    assert not result.listing.plain_scan and result.listing.corrections == 0


def test_status_changes_refetch_only_what_changed(fresh_emulator, data_dir):
    emu = fresh_emulator(seed=9, days=1, per_day=40)
    today = emu.account.now().date()
    with AudianClient(emu.api_url, DEMO_API_KEY) as client:
        sync_day(client, data_dir, today)
        emu.account.clock.advance(600)  # in-flight recordings finish processing
        again = sync_day(client, data_dir, today)
    assert 0 < again.changed <= 5 and again.new == 0
    assert again.detail_calls == again.changed
    assert stored(data_dir, today) == expected_rows(emu, today)


def test_drift_while_paging_loses_and_repeats_nothing(fresh_emulator, data_dir):
    emu = fresh_emulator(seed=12, days=6, per_day=900, faults=FaultConfig(drift=0.7))
    days = days_of(emu, 5)
    before = {day: set(expected_rows(emu, day)) for day in days}
    result = materialize_range(emu, data_dir, days[0], days[-1])
    assert result.success
    assert emu.faults.snapshot()["injected"]["drift"] > 0
    for day in days:
        lake = read_rows(data_dir, RECORDINGS, day)
        ids = [r["recording_id"] for r in lake]
        assert len(ids) == len(set(ids))
        listed_throughout = before[day] & set(expected_rows(emu, day))
        ever_created = {r.recording_id for r in emu.account.recordings_of_day(day_bounds(day)[0])}
        assert listed_throughout <= set(ids) <= ever_created, day


def test_the_count_check_holds_while_recordings_are_being_created(fresh_emulator, data_dir):
    """Audian keeps recording calls while a backfill runs: no day, today included, may be
    reported as differing from Audian's count because of them.

    The clock runs, as Audian's does: on a frozen clock every new recording shares one
    created_at, ties sort by random ID, and new ones land below the pager's place among
    recordings it already counted, which a real account sees only within one second."""
    emu = fresh_emulator(seed=15, days=12, per_day=25, clock=None)
    days = days_of(emu, 10)
    stop, created = threading.Event(), []

    def record_calls() -> None:
        with requests.Session() as http:
            for _ in range(20_000):
                if stop.is_set():
                    return
                answer = http.post(emu.api_url + "/v2/calls", headers={"X-Auth-Token": DEMO_API_KEY}, timeout=10,
                                   json={"from": "+14155550100", "to": "+14155550199", "recording": {"enabled": True}})
                created.append(answer.json()["recording_id"])

    recorder = threading.Thread(target=record_calls, daemon=True)
    recorder.start()
    try:
        result = materialize_range(emu, data_dir, days[0], days[-1])
    finally:
        stop.set()
        recorder.join(30)
    assert result.success and created
    check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "rows_match_api_count")
    assert check.metadata["days_compared"].value == len(days)
    assert check.passed, check.metadata["mismatches"].value


def test_a_day_past_retention_keeps_its_rows(fresh_emulator, data_dir):
    emu = fresh_emulator(seed=13, days=3, per_day=20)
    day = emu.account.now().date() - timedelta(days=2)
    with AudianClient(emu.api_url, DEMO_API_KEY) as client:
        first = sync_day(client, data_dir, day)
        emu.account.clock.advance(31 * 86400)
        later = sync_day(client, data_dir, day)
    assert first.rows == later.rows == later.marked_deleted > 0
    rows = read_rows(data_dir, RECORDINGS, day)
    assert all(r["deleted_at"] is not None for r in rows)
    assert {r["recording_id"] for r in rows} == {r.recording_id for r in first.listing.recordings}


KILLER = """
import sys
from datetime import date
from pathlib import Path
from audian_pipeline.client.client import AudianClient
from audian_pipeline.sync.recordings import sync_day
client = AudianClient(sys.argv[1], sys.argv[2])
days = [date.fromisoformat(d) for d in sys.argv[4:]]
while True:
    for day in days:
        sync_day(client, Path(sys.argv[3]), day)
        (Path(sys.argv[3]) / "lake" / "recordings" / "n").write_text("x")
"""


@pytest.mark.slow
def test_a_killed_run_leaves_readable_partitions(fresh_emulator, data_dir):
    emu = fresh_emulator(seed=14, days=4, per_day=600)
    days = [d.isoformat() for d in days_of(emu, 3)]
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", KILLER, emu.api_url, DEMO_API_KEY, str(data_dir), *days],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0 + attempt * 0.37)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        files = sorted((data_dir / "lake" / "recordings").glob("*/*.parquet"))
        for path in files:
            pq.read_table(path)  # every visible file is complete
        if files:
            glob = str(data_dir / "lake" / "recordings" / "*" / "*.parquet")
            duckdb.sql(f"select count(*) from read_parquet('{glob}')").fetchall()
    with AudianClient(emu.api_url, DEMO_API_KEY) as client:
        for day in days:
            sync_day(client, data_dir, date.fromisoformat(day))
    for day in days:
        assert stored(data_dir, date.fromisoformat(day)) == expected_rows(emu, date.fromisoformat(day))


# ---- the pager alone, against an in-memory list that drifts as it is read -------------------------
class DriftingList:
    """A list that obeys the contract's order, and inserts at the top / deletes above the
    reader between calls; `broken` serves pages out of order to force the plain scan."""

    def __init__(self, items: list[RecordingSummary], churn: list[tuple[int, int]], broken: bool = False,
                 page_limit: int = 50):
        self.items = sorted(items, key=lambda i: (i.created_at, i.recording_id), reverse=True)
        self.churn, self.broken, self.calls, self.page_limit = list(churn), broken, 0, page_limit

    def list_page(self, *, since=None, limit=200, offset=0) -> Page:
        self.calls += 1
        if self.churn:
            inserts, deletes = self.churn.pop(0)
            for n in range(inserts):
                now = datetime(2030, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=self.calls * 10 + n)
                self.items.insert(0, RecordingSummary(f"rec_new_{self.calls}_{n}", "c", 1, 1, "completed", now))
            for _ in range(deletes):
                del self.items[min(offset // 2, len(self.items) - 1)]
        matching = [i for i in self.items if since is None or i.created_at >= since]
        limit = min(limit, self.page_limit)
        page = matching[offset: offset + limit]
        if self.broken:
            page = list(reversed(page))
        return Page(page, len(matching), limit, offset, offset + len(page) < len(matching))


def _items(n: int, start: datetime) -> list[RecordingSummary]:
    return [RecordingSummary(f"rec_{i:05d}", "c", 1, 1, "completed", start + timedelta(minutes=3 * i))
            for i in range(n)]


STEADY = [(1, 1), (0, 2), (2, 1), (1, 3), (0, 1)] * 100
"""Five hundred calls of steady churn, deletions always above the reader."""


@pytest.mark.parametrize("page_limit, churn", [
    (50, []), (50, [(3, 0)] * 30), (50, [(0, 1)] * 30), (50, [(2, 1), (0, 2), (5, 0)] * 10),
    (7, STEADY), (13, STEADY), (25, STEADY), (7, [(4, 0)] * 500), (13, [(0, 4)] * 500),
], ids=["quiet", "inserts", "deletes", "mixed", "steady-7", "steady-13", "steady-25", "inserts-7", "deletes-13"])
def test_pager_is_exact_under_insertions_and_deletions(page_limit, churn):
    day = datetime(2026, 1, 10, tzinfo=timezone.utc)
    base = _items(2000, day - timedelta(days=2))
    source = DriftingList(base, churn, page_limit=page_limit)
    start, end = day, day + timedelta(days=1)
    listing = list_window(source, start, end)
    ids = [r.recording_id for r in listing.recordings]
    assert len(ids) == len(set(ids))
    still = {i.recording_id for i in source.items if start <= i.created_at < end}
    ever = {i.recording_id for i in base if start <= i.created_at < end}
    assert still <= set(ids) <= ever
    quiet_cost = 1 + -(-len(ever) // (page_limit - 1))
    assert listing.list_calls <= 2 * quiet_cost and not listing.plain_scan
    if not churn:
        assert listing.list_calls == quiet_cost and listing.api_total == len(ever)


def test_pager_falls_back_to_a_plain_scan_when_order_is_broken():
    day = datetime(2026, 1, 10, tzinfo=timezone.utc)
    source = DriftingList(_items(1500, day - timedelta(days=2)), [], broken=True)
    listing = WindowPager(source, day, day + timedelta(days=1)).run()
    assert listing.plain_scan
    assert {r.recording_id for r in listing.recordings} == {
        i.recording_id for i in source.items if day <= i.created_at < day + timedelta(days=1)}
