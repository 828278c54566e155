"""The warehouse: loading the lake by day, the four report views against figures computed here
in Python, analysts reading while loads run (in real second processes), a killed loader, the
CLI's report command and the Dagster assets."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from audian_pipeline.defs.reports import report_assets
from audian_pipeline.defs.resources import LakeResource, WarehouseResource
from audian_pipeline.defs.warehouse import warehouse
from audian_pipeline.lake import tables
from audian_pipeline.lake.parquet import to_table, write_partition
from audian_pipeline.lake.paths import partition_file, warehouse_path
from audian_pipeline.lake.tables import TABLES as LAKE_TABLES
from audian_pipeline.settings import Settings, show_phone_numbers_from_env
from audian_pipeline.warehouse.load import TABLES, builds_dir, load_warehouse
from audian_pipeline.warehouse.reports import print_report, read_report

UTC = timezone.utc
AS_OF = datetime(2026, 10, 28, 12, 0, tzinfo=UTC)
QUOTA = 30_000_000
DAYS = [date(2026, 9, 28), date(2026, 10, 1), date(2026, 10, 3), date(2026, 10, 24), date(2026, 10, 27)]
STOPPED = ("stopped", "processing", "completed", "failed")


def at(day: date, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=UTC)


# -- the hand-made lake ------------------------------------------------------------------
# (id, day, created hh:mm:ss, duration, status, format, channels, deleted_at)
D0, D1, D2, D3, D4 = DAYS
RECORDINGS = [
    ("r01", D0, (6, 0, 0), 100, "completed", "mp3", 1, at(date(2026, 10, 28), 6, 30)),  # expired, noticed
    ("r02", D0, (10, 0, 0), 200, "completed", "mp3", 1, None),  # expired 10:00, not noticed yet
    ("r03", D0, (14, 0, 0), 300, "completed", "wav", 2, None),  # expires 14:00 after as_of: verified
    ("r04", D0, (18, 0, 0), 50, "failed", "mp3", 1, None),
    ("r05", D0, (20, 0, 0), 400, "completed", "opus", 1, None),  # audio download failed: unverified
    ("r06", D1, (1, 0, 0), 10, "completed", "mp3", 1, None),
    ("r07", D1, (2, 0, 0), 20, "completed", "mp3", 1, None),  # its call has not ended: unknown
    ("r08", D1, (3, 0, 0), 30, "completed", "mp3", 1, None),  # no audio row at all: unverified
    ("r09", D1, (4, 0, 0), 40, "completed", "mp3", 1, None),
    ("r10", D1, (5, 0, 0), 1000, "failed", "mp3", 2, None),  # no recording.failed event: 'unknown'
    ("r11", D1, (23, 59, 59), 60, "completed", "opus", 1, None),  # no call row
    ("r12", D2, (8, 0, 0), 120, "completed", "mp3", 1, at(date(2026, 10, 10), 9)),  # DELETEd by a user
    ("r13", D2, (9, 0, 0), 240, "failed", "mp3", 1, None),  # recording.failed delivered twice
    ("r14", D2, (10, 0, 0), 360, "completed", "wav", 1, None),
    ("r15", D2, (11, 0, 0), 480, "failed", "wav", 1, None),  # two different reasons: the latest wins
    ("r17", D3, (0, 0, 0), 90, "completed", "mp3", 1, None),  # exactly midnight
    ("r18", D3, (13, 0, 0), 150, "completed", "opus", 2, None),
    ("r19", D3, (15, 0, 0), 75, "failed", "mp3", 1, None),
    ("r20", D4, (9, 0, 0), 600, "completed", "mp3", 1, None),
    ("r21", D4, (10, 0, 0), 700, "completed", None, None, None),  # detail not fetched: format unknown
    ("r22", D4, (23, 0, 0), 0, "recording", None, None, None),  # still recording: not in durations
    ("r23", D4, (23, 30, 0), 33, "processing", "mp3", 1, None),  # stopped: in durations, not finished
]
AUDIO = {"r01": "verified", "r02": "verified", "r03": "verified", "r05": "download_failed", "r06": "verified",
         "r07": "verified", "r09": "verified", "r11": "verified", "r14": "verified", "r17": "verified",
         "r18": "pending", "r20": "verified", "r21": "checksum_mismatch"}
# (recording, event, reason, occurred minutes after created_at, webhook id)
EVENTS = [
    ("r04", "recording.failed", "storage_error", 2, "msg_04"),
    ("r13", "recording.failed", "quota_exceeded", 5, "msg_13a"),
    ("r13", "recording.failed", "quota_exceeded", 5, "msg_13b"),
    ("r15", "recording.failed", "storage_error", 9, "msg_15a"),
    ("r15", "recording.failed", "encoding_error", 10, "msg_15b"),
    ("r19", "recording.failed", "no_audio", 3, "msg_19"),
    ("r03", "recording.completed", None, 6, "msg_03"),
    ("r14", "recording.completed", None, 7, "msg_14"),
]
CALL_NOT_ENDED = {"r07"}
NO_CALL = {"r11"}


def size_of(duration: int, status: str, fmt: str | None) -> int:
    return duration * (16000 if fmt == "wav" else 8000) if status == "completed" else 0


def recording_rows() -> list[dict]:
    rows = []
    for rid, day, hms, duration, status, fmt, channels, deleted_at in RECORDINGS:
        created = at(day, *hms)
        rows.append({
            "recording_id": rid, "call_id": "c" + rid[1:], "status": status, "duration": duration,
            "file_size": size_of(duration, status, fmt), "created_at": created, "file_format": fmt,
            "bitrate": 64 if fmt else None, "sample_rate": 8000 if fmt else None, "channels": channels,
            "completed_at": created + timedelta(seconds=duration + 60) if status == "completed" else None,
            "expires_at": created + timedelta(days=30), "first_seen_at": created + timedelta(minutes=2),
            "last_seen_at": AS_OF - timedelta(hours=1), "detail_fetched_at": created if fmt else None,
            "deleted_at": deleted_at,
        })
    return rows


def call_rows() -> list[dict]:
    rows = []
    for r in recording_rows():
        if r["recording_id"] in NO_CALL:
            continue
        ended = r["recording_id"] not in CALL_NOT_ENDED
        number = r["recording_id"][1:]
        rows.append({
            "call_id": r["call_id"], "from_number": f"+1555010{number}", "to_number": f"+1555020{number}",
            "direction": "inbound", "status": "completed" if ended else "in-progress", "call_flow_id": None,
            "started_at": r["created_at"] - timedelta(seconds=5), "answered_at": r["created_at"],
            "ended_at": r["created_at"] + timedelta(seconds=r["duration"] + 15) if ended else None,
            "duration": r["duration"] + 15 if ended else 0, "fetched_at": AS_OF - timedelta(hours=1),
        })
    return rows


def audio_rows() -> list[dict]:
    by_id = {r["recording_id"]: r for r in recording_rows()}
    return [{
        "recording_id": rid, "created_at": by_id[rid]["created_at"], "outcome": outcome,
        "reason": None if outcome == "verified" else outcome, "bytes": by_id[rid]["file_size"],
        "attempts": 1, "verified_at": by_id[rid]["created_at"] + timedelta(hours=1) if outcome == "verified" else None,
    } for rid, outcome in AUDIO.items()]


STEREO_TALK_RATIO = {"r01": 0.3, "r02": 0.5, "r03": 0.7}
UNDECODABLE = {"r20"}


def speech_rows() -> list[dict]:
    """recording_speech of each verified recording: 70% speech, 30% dead air; three stereo ones."""
    by_id = {r["recording_id"]: r for r in recording_rows()}
    rows = []
    for n, rid in enumerate(r for r, outcome in AUDIO.items() if outcome == "verified"):
        created, duration = by_id[rid]["created_at"], float(by_id[rid]["duration"])
        row = {"recording_id": rid, "created_at": created, "outcome": "analysed", "channels": 1,
               "duration_seconds": duration, "speech_seconds": 0.7 * duration, "silence_seconds": 0.3 * duration,
               "silence_share": 0.3, "longest_silence_seconds": 5.0 + n, "longest_monologue_seconds": 20.0}
        if rid in STEREO_TALK_RATIO:
            row.update(channels=2, talk_ratio=STEREO_TALK_RATIO[rid], overlap_seconds=2.0, turns=10)
        if rid in UNDECODABLE:
            row = {"recording_id": rid, "created_at": created, "outcome": "undecodable",
                   "reason": "not decodable audio"}
        rows.append(row)
    return rows


def event_rows() -> list[dict]:
    by_id = {r["recording_id"]: r for r in recording_rows()}
    rows = []
    for n, (rid, event, reason, minutes, webhook_id) in enumerate(EVENTS):
        occurred = by_id[rid]["created_at"] + timedelta(minutes=minutes)
        rows.append({
            "webhook_id": webhook_id, "event": event, "recording_id": rid, "call_id": by_id[rid]["call_id"],
            "occurred_at": occurred, "received_at": occurred + timedelta(seconds=1 + n), "reason": reason,
            "payload": json.dumps({"event": event, "data": {"recording_id": rid}}),
        })
    return rows


def day_of(row: dict, column: str = "created_at") -> date:
    return row[column].astimezone(UTC).date()


def write_lake(data_dir: Path, days: list[date] = DAYS) -> None:
    """Each table's rows into the partition of their recording's UTC day."""
    recordings = {r["recording_id"]: r for r in recording_rows()}
    call_day = {r["call_id"]: day_of(r) for r in recordings.values()}
    tables = {
        "recordings": (recording_rows(), lambda row: day_of(row)),
        "calls": (call_rows(), lambda row: call_day[row["call_id"]]),
        "recording_audio": (audio_rows(), lambda row: day_of(row)),
        "recording_speech": (speech_rows(), lambda row: day_of(row)),
        "recording_events": (event_rows(), lambda row: day_of(recordings[row["recording_id"]])),
    }
    for table, (rows, day_fn) in tables.items():
        by_day = defaultdict(list)
        for row in rows:
            by_day[day_fn(row)].append(row)
        for day in days:
            if by_day.get(day):
                write_partition(data_dir, LAKE_TABLES[table], day, to_table(LAKE_TABLES[table], by_day[day]))


def load(data_dir: Path, days=None, **options):
    options.setdefault("storage_quota_bytes", QUOTA)
    options.setdefault("as_of", AS_OF)
    return load_warehouse(data_dir, days, **options)


def query(data_dir: Path, sql: str, params=None) -> list[tuple]:
    with duckdb.connect(str(warehouse_path(data_dir)), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def counts(data_dir: Path) -> tuple:
    return query(data_dir, "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES)
                 + ", (SELECT count(*) FROM warehouse_partitions), (SELECT as_of FROM pipeline_settings)")[0]


@pytest.fixture(name="lake")
def lake_fixture(data_dir: Path) -> Path:
    write_lake(data_dir)
    return data_dir


# -- independent figures ------------------------------------------------------------------

def percentile_linear(values: list[float], q: float) -> float:
    """DuckDB's quantile_cont: linear interpolation between the closest ranks (numpy 'linear')."""
    ordered = sorted(values)
    h = (len(ordered) - 1) * q
    lo, hi = math.floor(h), math.ceil(h)
    return ordered[lo] + (h - lo) * (ordered[hi] - ordered[lo])


def held(t: datetime) -> tuple[int, int]:
    """(recordings, bytes) Audian holds at instant t."""
    rows = [r for r in recording_rows()
            if r["created_at"] < t < r["expires_at"] and (r["deleted_at"] is None or r["deleted_at"] > t)]
    return len(rows), sum(r["file_size"] for r in rows)


# -- tests --------------------------------------------------------------------------------

DUCKDB_TYPES = {"string": "VARCHAR", "int32": "INTEGER", "int64": "BIGINT", "int16": "SMALLINT",
                "double": "DOUBLE", "timestamp[us, tz=UTC]": "TIMESTAMP WITH TIME ZONE"}


def test_empty_lake_gives_every_table_with_the_lake_schema_and_working_views(data_dir):
    result = load(data_dir, [D0])
    assert result.full_rebuild and result.rows_by_table == dict.fromkeys(TABLES, 0)
    for table, schema in ((t.name, t.schema) for t in LAKE_TABLES.values()):
        described = query(data_dir, "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                                    "WHERE table_name = ? ORDER BY ordinal_position", [table])
        expected = [(f.name, DUCKDB_TYPES[str(f.type)], "YES" if f.nullable else "NO") for f in schema]
        assert described == expected + [("partition_date", "DATE", "NO")], table
    assert read_report(warehouse_path(data_dir), "durations").rows == []
    assert read_report(warehouse_path(data_dir), "failure_reasons").rows == []
    expiry = read_report(warehouse_path(data_dir), "retention_expiry")
    assert [r["expiry_day"] for r in expiry.records()] == [AS_OF.date() + timedelta(days=i) for i in range(8)]
    assert all(r["recordings"] == 0 and r["next_unverified_deadline"] is None for r in expiry.records())
    assert len(read_report(warehouse_path(data_dir), "storage_quota").rows) == 30


def test_load_matches_the_lake_and_records_partitions(lake):
    result = load(lake)  # no days: everything in the lake
    assert result.full_rebuild and result.days == DAYS
    assert result.rows_by_table == {"recordings": len(RECORDINGS), "calls": len(call_rows()),
                                    "recording_audio": len(AUDIO), "recording_speech": len(speech_rows()),
                                    "audian_deletions": 0, "archive_disposals": 0,
                                        "recording_events": len(EVENTS)}
    per_day = query(lake, "SELECT partition_date, count(*) FROM recordings GROUP BY ALL ORDER BY 1")
    assert per_day == sorted((d, sum(1 for r in RECORDINGS if r[1] == d)) for d in DAYS)
    settings = query(lake, "SELECT as_of, storage_quota_bytes, show_phone_numbers FROM pipeline_settings")
    assert settings == [(AS_OF, QUOTA, False)]
    # timestamps stay UTC instants whatever the reader's time zone
    assert query(lake, "SELECT created_at FROM recordings WHERE recording_id = 'r17'") == [(at(D3, 0),)]


def test_report_durations(lake):
    load(lake)
    calls = {c["call_id"]: c for c in call_rows()}
    groups: dict[tuple, list[tuple[int, int | None]]] = defaultdict(list)
    for r in recording_rows():
        if r["status"] in STOPPED:
            call = calls.get(r["call_id"])
            known = call["duration"] if call and call["ended_at"] is not None else None
            groups[(day_of(r), r["file_format"] or "unknown", r["channels"])].append((r["duration"], known))
    got = {(x["day"], x["file_format"], x["channels"]): x
           for x in read_report(warehouse_path(lake), "durations").records()}
    assert set(got) == set(groups)
    for key, items in groups.items():
        durations = [d for d, _ in items]
        known = [(d, c) for d, c in items if c is not None]
        row = got[key]
        assert row["recordings"] == len(durations), key
        assert row["total_duration_s"] == sum(durations)
        assert float(row["mean_duration_s"]) == pytest.approx(sum(durations) / len(durations), abs=0.051)
        assert float(row["p50_duration_s"]) == pytest.approx(percentile_linear(durations, 0.5), abs=0.051)
        assert float(row["p90_duration_s"]) == pytest.approx(percentile_linear(durations, 0.9), abs=0.051)
        assert row["max_duration_s"] == max(durations)
        assert row["calls_known"] == len(known)
        assert row["total_call_duration_s"] == (sum(c for _, c in known) if known else None)
        if known:
            assert float(row["recorded_pct_of_call"]) == pytest.approx(
                100 * sum(d for d, _ in known) / sum(c for _, c in known), abs=0.051)
    # the percentile method, spelled out: 10, 20, 30, 40 -> p50 25 (quantile_cont), not 20 (quantile_disc)
    four = got[(D1, "mp3", 1)]
    assert (four["recordings"], float(four["p50_duration_s"]), float(four["p90_duration_s"])) == (4, 25.0, 37.0)
    assert four["calls_known"] == 3  # r07's call has not ended
    assert got[(D4, "unknown", None)]["recordings"] == 1  # r21, detail never fetched; r22 still recording


def test_report_failure_reasons(lake):
    load(lake)
    latest: dict[str, tuple] = {}
    for e in event_rows():
        if e["event"] == "recording.failed":
            key = (e["occurred_at"], e["received_at"])
            if e["recording_id"] not in latest or key > latest[e["recording_id"]][0]:
                latest[e["recording_id"]] = (key, e["reason"])
    finished = defaultdict(int)
    failed: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in recording_rows():
        if r["status"] in ("completed", "failed"):
            finished[day_of(r)] += 1
        if r["status"] == "failed":
            failed[day_of(r)][latest.get(r["recording_id"], (None, "unknown"))[1]] += 1
    expected = []
    for day in sorted(finished):
        all_reasons = sum(failed[day].values())
        for reason, n in sorted(failed[day].items(), key=lambda kv: (-kv[1], kv[0])) or [(None, 0)]:
            expected.append((day, reason, n, finished[day], round(100 * n / finished[day], 2), all_reasons,
                             round(100 * all_reasons / finished[day], 2)))
    got = [(r["day"], r["reason"], r["failed_recordings"], r["finished_recordings"], float(r["failure_rate_pct"]),
            r["failed_all_reasons"], float(r["day_failure_rate_pct"]))
           for r in read_report(warehouse_path(lake), "failure_reasons").records()]
    assert got == expected
    reasons = {(r[0], r[1]) for r in got}
    assert (D1, "unknown") in reasons and (D2, "encoding_error") in reasons and (D2, "storage_error") not in reasons
    assert [r for r in got if r[0] == D2 and r[1] == "quota_exceeded"][0][2] == 1  # duplicate webhook counted once
    assert (D4, None) in reasons  # a day without failures still shows


def test_report_storage_quota(lake):
    load(lake)
    rows = read_report(warehouse_path(lake), "storage_quota").records()
    assert [r["day"] for r in rows] == [AS_OF.date() - timedelta(days=29 - i) for i in range(30)]
    for r in rows:
        start = at(r["day"], 0)
        end = min(start + timedelta(days=1), AS_OF)
        n_end, b_end = held(end)
        _, b_start = held(start)
        _, b_week = held(end - timedelta(days=7))
        added = sum(x["file_size"] for x in recording_rows() if start <= x["created_at"] < end)
        assert r["measured_at"] == end
        assert (r["recordings_held"], r["bytes_held"]) == (n_end, b_end), r["day"]
        assert r["bytes_added"] == added
        assert r["net_growth_bytes"] == b_end - b_start
        assert r["bytes_removed"] == b_start + added - b_end
        assert r["quota_bytes"] == QUOTA
        assert float(r["pct_of_quota"]) == pytest.approx(100 * b_end / QUOTA, abs=0.006)
        week_of_history = end - timedelta(days=7) >= at(DAYS[0], 0)
        assert r["recent_daily_growth_bytes"] == (round((b_end - b_week) / 7) if week_of_history else None)
    now = rows[-1]
    n_now, b_now = held(AS_OF)
    rate = (b_now - held(AS_OF - timedelta(days=7))[1]) / 7
    assert rate > 0 and b_now < QUOTA  # the data is built so the projection is a real date
    days_left = (QUOTA - b_now) / rate
    assert float(now["days_until_full"]) == pytest.approx(days_left, abs=0.051)
    assert now["projected_full_on"] == (AS_OF + timedelta(days=days_left)).date()
    # r01 (expired, deleted), r02 (expired, not yet noticed) and r12 (deleted) are not held
    held_ids = {x["recording_id"] for x in recording_rows()
                if x["created_at"] < AS_OF < x["expires_at"] and not (x["deleted_at"] and x["deleted_at"] <= AS_OF)}
    assert not {"r01", "r02", "r12"} & held_ids and now["recordings_held"] == len(held_ids)
    # a shrinking account has no projection; an account over quota is full today
    load(lake, [D0], storage_quota_bytes=1_000)
    over = read_report(warehouse_path(lake), "storage_quota").records()[-1]
    assert (float(over["days_until_full"]), over["projected_full_on"]) == (0.0, AS_OF.date())
    first_with_drop = next(r for r in rows if (r["recent_daily_growth_bytes"] or 0) < 0)
    assert first_with_drop["projected_full_on"] is None and first_with_drop["days_until_full"] is None


def test_report_retention_expiry(lake):
    load(lake)
    window_end = AS_OF + timedelta(days=7)
    per_day: dict[date, list[dict]] = defaultdict(list)
    for r in recording_rows():
        if r["deleted_at"] is None and AS_OF < r["expires_at"] <= window_end:
            per_day[day_of(r, "expires_at")].append(r)
    got = read_report(warehouse_path(lake), "retention_expiry").records()
    assert [r["expiry_day"] for r in got] == [AS_OF.date() + timedelta(days=i) for i in range(8)]
    deadlines = []
    for row in got:
        items = per_day.get(row["expiry_day"], [])
        unverified = [r for r in items if r["status"] == "completed" and AUDIO.get(r["recording_id"]) != "verified"]
        assert row["recordings"] == len(items)
        assert row["bytes"] == sum(r["file_size"] for r in items)
        assert row["not_verified"] == len(unverified)
        assert row["bytes_not_verified"] == sum(r["file_size"] for r in unverified)
        earliest = min((r["expires_at"] for r in unverified), default=None)
        assert row["earliest_unverified_expires_at"] == earliest
        deadlines += [earliest] if earliest else []
    assert {r["next_unverified_deadline"] for r in got} == {min(deadlines)}
    # the figures, by hand: r05 (download failed) then r08 (no audio row); r12 was deleted, r04 failed
    assert min(deadlines) == at(date(2026, 10, 28), 20)
    assert sum(r["not_verified"] for r in got) == 2
    assert sum(r["bytes_not_verified"] for r in got) == 400 * 8000 + 30 * 8000


def test_reloading_a_day_replaces_exactly_its_rows(lake):
    load(lake)
    before = counts(lake)
    for _ in range(2):
        result = load(lake, [D1])
        assert not result.full_rebuild and result.loaded_rows["recordings"] == {D1: 6}
        assert counts(lake) == before
    # the day changes in the lake: one recording gone, one new; the other days stay as they were
    rows = [r for r in recording_rows() if day_of(r) == D1 and r["recording_id"] != "r06"]
    rows.append(dict(rows[0], recording_id="r99", created_at=at(D1, 12)))
    write_partition(lake, tables.RECORDINGS, D1, to_table(tables.RECORDINGS, rows))
    load(lake, [D1])
    ids = {r[0] for r in query(lake, "SELECT recording_id FROM recordings WHERE partition_date = ?", [D1])}
    assert ids == {"r07", "r08", "r09", "r10", "r11", "r99"}
    assert counts(lake)[0] == before[0]
    assert query(lake, "SELECT count(*), count(DISTINCT recording_id) FROM recordings") == [(before[0], before[0])]
    # a day whose partition disappeared is emptied, not kept stale
    partition_file(lake, "recording_events", D2).unlink()
    load(lake, [D2])
    assert query(lake, "SELECT count(*) FROM recording_events WHERE partition_date = ?", [D2]) == [(0,)]
    assert query(lake, "SELECT row_count FROM warehouse_partitions WHERE table_name = 'recording_events' "
                       "AND partition_date = ?", [D2]) == [(0,)]


def test_phone_numbers_masked_unless_allowed(lake):
    load(lake)
    numbers = query(lake, "SELECT from_number, to_number FROM calls WHERE call_id = 'c03'")
    assert numbers == [("***-***-1003", "***-***-2003")]
    assert query(lake, "SELECT count(*) FROM calls WHERE from_number LIKE '+%' OR to_number LIKE '+%'") == [(0,)]
    result = load(lake, [D0], show_phone_numbers=True)
    assert result.full_rebuild and "PHONE" in result.rebuild_reason  # never a mix of masked and full
    assert query(lake, "SELECT from_number FROM calls WHERE call_id = 'c03'") == [("+155501003",)]
    assert query(lake, "SELECT count(*) FROM calls WHERE from_number LIKE '***%'") == [(0,)]
    assert show_phone_numbers_from_env({"AUDIAN_SHOW_PHONE_NUMBERS": "1"}) is True
    assert show_phone_numbers_from_env({}) is False
    with pytest.raises(ValueError, match="AUDIAN_SHOW_PHONE_NUMBERS"):
        show_phone_numbers_from_env({"AUDIAN_SHOW_PHONE_NUMBERS": "maybe"})


ANALYST = r"""
import duckdb, json, os, sys
path, stop, mode = sys.argv[1:4]
QUERY = ("SELECT (SELECT count(*) FROM recordings), (SELECT count(*) FROM calls), "
         "(SELECT count(*) FROM recording_audio), (SELECT count(*) FROM recording_events), "
         "(SELECT count(*) FROM warehouse_partitions), (SELECT epoch(as_of) FROM pipeline_settings)")
held = duckdb.connect(path, read_only=True) if mode == "held" else None
print(json.dumps({"ready": True}), flush=True)
seen, errors, queries = set(), [], 0
while not os.path.exists(stop):
    try:
        if held is not None:
            seen.add(held.execute(QUERY).fetchone())
        else:
            con = duckdb.connect(path, read_only=True)
            try:
                seen.add(con.execute(QUERY).fetchone())
            finally:
                con.close()
        queries += 1
    except Exception as exc:
        errors.append(repr(exc))
print(json.dumps({"seen": sorted(seen), "errors": errors[:5], "queries": queries}), flush=True)
"""


def state(data_dir: Path) -> list:
    """The reader's QUERY: four tables' counts, the partitions recorded, as_of."""
    c = counts(data_dir)
    tables = [c[TABLES.index(t)] for t in ("recordings", "calls", "recording_audio", "recording_events")]
    return [*tables, c[-2], c[-1].timestamp()]


def test_analysts_reading_never_block_a_load_nor_see_half_of_one(data_dir, tmp_path):
    """Two real analyst processes: one keeps one read-only connection open the whole time, the
    other reconnects in a loop. Five loads run meanwhile, each adding a day to the lake."""
    days = [date(2026, 10, 1) + timedelta(days=i) for i in range(6)]
    rows = recording_rows()
    _write_day_copy(data_dir, days[0], rows, 0)
    load(data_dir, [days[0]], as_of=AS_OF)
    states = [state(data_dir)]
    stop = tmp_path / "stop"
    analysts = {mode: subprocess.Popen([sys.executable, "-c", ANALYST, str(warehouse_path(data_dir)), str(stop), mode],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for mode in ("held", "reconnecting")}
    try:
        for proc in analysts.values():
            assert json.loads(proc.stdout.readline()) == {"ready": True}
        for i, day in enumerate(days[1:], start=1):
            _write_day_copy(data_dir, day, rows, i)
            started = time.monotonic()
            load(data_dir, [day], as_of=AS_OF + timedelta(hours=i))
            assert time.monotonic() - started < 10, "the load waited on the analysts"
            states.append(state(data_dir))
            time.sleep(0.3)
    finally:
        stop.touch()
        outputs = {mode: proc.communicate(timeout=30) for mode, proc in analysts.items()}
    assert len({tuple(s) for s in states}) == len(states)  # every load changed every figure
    for mode, (out, err) in outputs.items():
        assert analysts[mode].returncode == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        assert report["errors"] == [], (mode, report["errors"])
        seen = [list(s) for s in report["seen"]]
        assert seen and all(s in states for s in seen), (mode, seen, states)
        if mode == "held":
            assert seen == [states[0]]  # an open session keeps the warehouse it opened, whole
        else:
            assert len(seen) >= 3 and states[-1] in seen, seen  # new sessions see each whole load


def _write_day_copy(data_dir: Path, day: date, rows: list[dict], n: int) -> None:
    """Day `day` gets the first 5+n recordings (renamed), calls for all but one, audio for half
    and an event for each failed one: every table's total changes with every day added."""
    picked = []
    for k, r in enumerate(rows[: 5 + n]):
        created = at(day, k % 24, k)
        picked.append(dict(r, recording_id=f"{r['recording_id']}_{day:%m%d}", call_id=f"{r['call_id']}_{day:%m%d}",
                           created_at=created, expires_at=created + timedelta(days=30), deleted_at=None))
    write_partition(data_dir, tables.RECORDINGS, day, to_table(tables.RECORDINGS, picked))
    calls = [{"call_id": r["call_id"], "from_number": "+15550000000", "to_number": "+15550000001",
              "direction": "inbound", "status": "completed", "started_at": r["created_at"], "duration": 1,
              "fetched_at": r["created_at"]} for r in picked[:-1]]
    write_partition(data_dir, tables.CALLS, day, to_table(tables.CALLS, calls))
    audio = [{"recording_id": r["recording_id"], "created_at": r["created_at"], "outcome": "verified", "attempts": 1}
             for r in picked[: 1 + n // 2]]
    write_partition(data_dir, tables.RECORDING_AUDIO, day, to_table(tables.RECORDING_AUDIO, audio))
    events = [{"webhook_id": f"msg_{r['recording_id']}_{j}", "event": "recording.failed",
               "recording_id": r["recording_id"], "call_id": r["call_id"], "occurred_at": r["created_at"],
               "received_at": r["created_at"], "payload": "{}"}
              for j, r in enumerate(picked[: 2 + n * 2])]
    write_partition(data_dir, tables.RECORDING_EVENTS, day, to_table(tables.RECORDING_EVENTS, events))


KILLED_LOADER = r"""
import sys
from datetime import datetime, timezone
from pathlib import Path
from audian_pipeline.warehouse.load import load_warehouse
load_warehouse(Path(sys.argv[1]), None, storage_quota_bytes=10**9, rebuild=True,
               as_of=datetime(2030, 1, 1, tzinfo=timezone.utc))
print("finished", flush=True)
"""


def test_a_loader_killed_mid_load_leaves_the_previous_warehouse(data_dir):
    from benchmarks.bench_warehouse import write_synthetic_lake

    write_lake(data_dir)
    load(data_dir)
    before = counts(data_dir)
    write_synthetic_lake(data_dir, [date(2026, 11, 1) + timedelta(days=i) for i in range(8)], 2000)
    temporaries = lambda: list(data_dir.glob(".tmp-*")) + list(builds_dir(data_dir).glob(".tmp-*"))  # noqa: E731
    for delay in (0.0, 0.05, 0.12):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_LOADER, str(data_dir)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not temporaries() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)
        time.sleep(delay)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        assert alive and proc.returncode == -signal.SIGKILL, (delay, out, err)
        assert counts(data_dir) == before, delay  # whole and readable: the old warehouse, untouched
        assert read_report(warehouse_path(data_dir), "durations").rows
    result = load(data_dir, [D1])  # the next load cleans up and publishes (the lock died with the loader)
    assert not temporaries()
    assert counts(data_dir)[-1] == AS_OF and result.rows_by_table["recordings"] == before[0]


def test_concurrent_loads_take_turns(lake):
    from concurrent.futures import ThreadPoolExecutor

    load(lake)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda d: load(lake, [d]), DAYS[:4]))
    assert all(not r.full_rebuild for r in results)
    assert counts(lake)[0] == len(RECORDINGS)


def test_cli_report(lake, capsys, monkeypatch):
    monkeypatch.setenv("AUDIAN_DATA_DIR", str(lake))
    settings = Settings.from_env()
    assert print_report(settings, "durations") == 1
    assert "audian-pipeline run" in capsys.readouterr().err
    assert print_report(settings, "nonsense") == 2
    assert "durations, failure_reasons, storage_quota, retention_expiry" in capsys.readouterr().err
    load(lake)
    for name in ("durations", "failure_reasons", "storage_quota", "retention_expiry"):
        assert print_report(settings, name) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"report_{name}: ") and "as of 2026-10-28 12:00:00 UTC" in out
    assert print_report(settings, "report_retention_expiry") == 0
    out = capsys.readouterr().out
    assert "the first gone at 2026-10-28 20:00 UTC" in out and "3.05 MiB" in out
    assert print_report(settings, "report_retention_expiry", full=True) == 0
    out = capsys.readouterr().out
    assert "next_unverified_deadline" in out and "2026-10-28 20:00:00 UTC" in out and "3.05 MiB" in out


def test_dagster_materialises_the_warehouse_and_the_reports(lake):
    resources = {"lake": LakeResource(data_dir=str(lake)),
                 "warehouse_settings": WarehouseResource(storage_quota_bytes=QUOTA)}
    result = dg.materialize([warehouse], partition_key=D4.isoformat(), resources=resources)
    assert result.success
    meta = result.asset_materializations_for_node("warehouse")[0].metadata
    assert meta["warehouse_rows_recordings"].value == len(RECORDINGS) and meta["full_rebuild"].value is True
    assert meta["rows_recordings"].value == sum(1 for r in RECORDINGS if r[1] == D4)  # the day's own
    result = dg.materialize([warehouse], partition_key=D4.isoformat(), resources=resources)
    meta = result.asset_materializations_for_node("warehouse")[0].metadata
    assert meta["full_rebuild"].value is False and meta["warehouse_rows_recordings"].value == len(RECORDINGS)

    result = dg.materialize(report_assets, resources=resources)
    assert result.success
    for asset in report_assets:
        name = asset.key.path[-1]
        meta = result.asset_materializations_for_node(name)[0].metadata
        view = read_report(warehouse_path(lake), name)
        assert meta["rows"].value == len(view.rows)
        assert meta["chart"].value.startswith("![chart of ") and meta["as_of"].value
    durations = result.asset_materializations_for_node("report_durations")[0].metadata
    assert durations["recordings"].value == sum(1 for r in RECORDINGS if r[4] in STOPPED)
