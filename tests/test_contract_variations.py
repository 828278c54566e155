"""What Audian's contract allows beyond the friendliest answer: nulls before a recording is
completed, extra fields, recordings that settle later, URLs that expire between a cut download
and its resume, unsafe IDs. The emulator serves each as an option (all off by default); the
client, the lake and the warehouse must take each in their stride."""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from datetime import date, datetime, timedelta, timezone

import duckdb
import pytest
import requests

from audian_pipeline.client.client import AudianClient
from audian_pipeline.client.errors import InvalidRequest
from audian_pipeline.client.models import MalformedResponse, Recording, RecordingSummary
from audian_pipeline.emulator.faults import FaultConfig
from audian_pipeline.emulator.variations import Variations
from audian_pipeline.lake.parquet import read_rows, to_table, write_partition
from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.lake.tables import RECORDINGS
from audian_pipeline.settings import DEMO_API_KEY
from audian_pipeline.warehouse.load import load_warehouse

H = {"X-Auth-Token": DEMO_API_KEY}
LISTED = {"recording_id": "rec_1", "call_id": "call_1", "created_at": "2026-11-19T10:00:00Z"}


def client_for(emu) -> AudianClient:
    return AudianClient(emu.api_url, DEMO_API_KEY, backoff=0.01)


# ---- the client ----------------------------------------------------------------------------
@pytest.mark.parametrize("status, duration", [("processing", 60), ("recording", None), ("failed", 42)])
def test_null_sizes_before_completion_are_read_as_unknown(status, duration):
    item = {**LISTED, "status": status, "duration": duration, "file_size": None}
    summary = RecordingSummary.from_api(item)
    assert (summary.file_size, summary.duration) == (None, duration)
    detail = Recording.from_api({**item, "file_format": None, "bitrate": None, "sample_rate": None, "channels": None,
                                 "completed_at": None})
    assert (detail.file_format, detail.bitrate, detail.sample_rate, detail.channels) == (None,) * 4


@pytest.mark.parametrize("item, broken", [
    ({"status": "processing", "duration": 60, "file_size": "1024"}, "file_size has the wrong type: str"),
    ({"status": "completed", "duration": 60, "file_size": None}, "file_size has the wrong type: NoneType"),
    ({"status": "completed", "duration": None, "file_size": 1024}, "duration has the wrong type: NoneType"),
    ({"status": "processing", "duration": 60}, "has no field 'file_size'"),
])
def test_a_wrong_type_or_a_completed_recording_without_a_file_is_still_broken(item, broken):
    with pytest.raises(MalformedResponse, match=broken):
        RecordingSummary.from_api({**LISTED, **item})


def test_the_emulator_sends_nulls_until_completed_and_the_client_reads_them(fresh_emulator):
    emu = fresh_emulator(seed=31, days=3, per_day=12, variations=Variations(nulls=True))
    raw = requests.get(f"{emu.api_url}/v2/recordings", params={"limit": 200}, headers=H, timeout=5).json()["data"]
    by_status = {item["status"]: item for item in raw}
    assert by_status["processing"]["file_size"] is None and by_status["processing"]["duration"] == 60
    assert by_status["recording"]["file_size"] is None and by_status["recording"]["duration"] is None
    assert isinstance(by_status["completed"]["file_size"], int)
    with client_for(emu) as client:
        page = client.list_page(limit=200)
        assert {s.status for s in page.items if s.file_size is None} >= {"processing", "recording", "failed"}
        processing = client.get_recording(by_status["processing"]["recording_id"])
        assert (processing.file_size, processing.file_format, processing.sample_rate) == (None, None, None)
        completed = client.get_recording(by_status["completed"]["recording_id"])
        assert completed.file_size == emu.account.recordings[completed.recording_id].file_size > 0


def test_extra_fields_change_nothing_the_client_reads(fresh_emulator):
    plain = fresh_emulator(seed=32, days=2, per_day=8)
    extra = fresh_emulator(seed=32, days=2, per_day=8, variations=Variations(extra_fields=True))
    raw = requests.get(f"{extra.api_url}/v2/recordings", headers=H, timeout=5).json()
    assert "request_id" in raw and "next_offset" in raw["pagination"] and "participant" in raw["data"][0]
    with client_for(plain) as a, client_for(extra) as b:
        assert a.list_page(limit=200) == b.list_page(limit=200)
        rid = next(s.recording_id for s in a.list_page(limit=200).items if s.status == "completed")
        assert a.get_recording(rid) == b.get_recording(rid)
        call_id = a.get_recording(rid).call_id
        assert a.get_call(call_id) == b.get_call(call_id)


def test_variations_off_leave_every_answer_as_before(fresh_emulator):
    """Default off: an emulator given Variations() answers byte for byte like one given none."""
    none, off = fresh_emulator(seed=33, days=2, per_day=6), fresh_emulator(seed=33, days=2, per_day=6,
                                                                          variations=Variations())
    for path in ("/v2/recordings?limit=200", f"/v2/recordings/{next(iter(none.account.recordings))}"):
        assert requests.get(none.api_url + path, headers=H, timeout=5).content == requests.get(
            off.api_url + path, headers=H, timeout=5).content


# ---- settling, unsafe IDs, expiring URLs -----------------------------------------------------
def test_settling_and_unsafe_ids_are_deterministic_from_the_seed(fresh_emulator):
    options = dict(seed=34, days=8, per_day=10, variations=Variations(nulls=True, settling=0.1, unsafe_ids=0.5))
    one, two = fresh_emulator(**options), fresh_emulator(**options)
    plain = fresh_emulator(seed=34, days=8, per_day=10)
    assert sorted(one.account.recordings) == sorted(two.account.recordings)
    unsafe = set(one.account.recordings) - set(plain.account.recordings)
    assert unsafe and all("/" in rid or "." in rid or "%" in rid for rid in unsafe)
    now = one.account.now()
    today = datetime.combine(now.date(), datetime.min.time(), tzinfo=timezone.utc)
    settling = [r for r in one.account.recordings.values() if r.created_at < today and r.status_at(now) == "processing"]
    assert settling and all(r.outcome == "completed" for r in settling)
    with client_for(one) as client:
        listed = {s.recording_id: s for s in client.list_page(limit=200).items}
        assert all(listed[r.recording_id].file_size is None for r in settling)
        assert unsafe <= set(listed)
        slashed = next(rid for rid in unsafe if "/" in rid or "%" in rid)
        with pytest.raises(InvalidRequest, match="not a plain path segment"):
            client.get_recording(slashed)
        requests.post(f"{one.api_url}/_emulator/clock", json={"seconds": 601}, headers=H, timeout=5).raise_for_status()
        for rec in settling:
            detail = client.get_recording(rec.recording_id)
            assert (detail.status, detail.file_size) == ("completed", rec.file_size)


def test_a_url_expired_after_a_cut_is_renewed_and_the_download_resumes(fresh_emulator):
    emu = fresh_emulator(seed=35, days=1, per_day=12, faults=FaultConfig(cut=0.3),
                         variations=Variations(expire_after_cut=True))
    now = emu.account.now()
    completed = [r for r in emu.account.visible(now) if r.status_at(now) == "completed"]
    with client_for(emu) as client:
        for rec in completed:
            sink = io.BytesIO()
            client.download(rec.recording_id, sink)
            assert hashlib.sha256(sink.getvalue()).hexdigest() == emu.emulator.audio_cache.sha256(rec.spec)
        renewed = client.stats["download"] - len(completed)
    expired = emu.faults.snapshot()["injected"].get("expired_after_cut", 0)
    assert expired > 0 and renewed == expired, "each resume after a cut needed a fresh URL"
    assert len(emu.emulator.issued_signatures) == client.stats["download"], "every URL handed out is a new one"


# ---- lake and warehouse ----------------------------------------------------------------------
AS_OF = datetime(2026, 10, 28, 12, 0, tzinfo=timezone.utc)


def _recording(rid: str, day: date, status: str, duration: int | None, file_size: int | None) -> dict:
    created = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=9)
    return {"recording_id": rid, "call_id": "call_" + rid, "status": status, "duration": duration,
            "file_size": file_size, "created_at": created, "expires_at": created + timedelta(days=30),
            "first_seen_at": created, "last_seen_at": created, "file_format": "mp3" if file_size else None}


def test_unknown_sizes_reach_the_warehouse_as_unknown_not_zero(data_dir):
    early, late = date(2026, 10, 2), date(2026, 10, 27)
    days = {
        early: [_recording("r1", early, "completed", 100, 1_000), _recording("r2", early, "processing", 50, None),
                _recording("r3", early, "failed", 20, None)],
        late: [_recording("r4", late, "completed", 200, 2_000), _recording("r5", late, "recording", None, None),
               _recording("r6", late, "stopped", None, None)],
    }
    for day, rows in days.items():
        write_partition(data_dir, RECORDINGS, day, to_table(RECORDINGS, rows))
        assert read_rows(data_dir, RECORDINGS, day) and None in [r["file_size"] for r in read_rows(
            data_dir, RECORDINGS, day)]
    load_warehouse(data_dir, None, storage_quota_bytes=10_000, as_of=AS_OF)

    def view(name: str) -> list[dict]:
        with duckdb.connect(str(warehouse_path(data_dir)), read_only=True) as con:
            cursor = con.execute(f"SELECT * FROM {name}")
            return [dict(zip([d[0] for d in cursor.description], row, strict=True)) for row in cursor.fetchall()]

    now = view("report_storage_quota")[-1]
    # held: r1, r2 (unknown), r3 (failed: no file), r4, r5 and r6 (unknown)
    assert (now["recordings_held"], now["recordings_size_unknown"], now["bytes_held"]) == (6, 3, 3_000)
    expiring = [r for r in view("report_retention_expiry") if r["recordings"]]
    assert [(r["recordings"], r["recordings_size_unknown"], r["bytes"]) for r in expiring] == [(3, 1, 1_000)]
    durations = {(r["day"], r["file_format"]): r for r in view("report_durations")}
    assert durations[(early, "unknown")]["recordings"] == 2  # r2 processing and r3 failed: no file yet
    stopped = durations[(late, "unknown")]  # r6 stopped without a duration; r5 still recording is not counted
    assert (stopped["recordings"], stopped["durations_unknown"], stopped["total_duration_s"]) == (1, 1, None)
    assert Counter(r["durations_unknown"] for r in durations.values()) == Counter({0: len(durations) - 1, 1: 1})
    with duckdb.connect(str(warehouse_path(data_dir)), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM recordings WHERE file_size IS NULL").fetchone() == (4,)


def test_a_download_cut_and_expired_again_and_again_while_progressing_still_finishes(fresh_emulator):
    """Each connection cut half-way and its URL expired: the renewal limit counts only refusals
    that came with no new byte since the last one, so a long download that keeps making progress
    finishes; the old count (every renewal, progress or not) gave up after the third."""
    emu = fresh_emulator(seed=36, days=1, per_day=16, max_duration=900, faults=FaultConfig(cut=1.0),
                         variations=Variations(expire_after_cut=True))
    now = emu.account.now()
    rec = max((r for r in emu.account.visible(now) if r.status_at(now) == "completed"), key=lambda r: r.file_size)
    with client_for(emu) as client:
        sink = io.BytesIO()
        client.download(rec.recording_id, sink)
    assert hashlib.sha256(sink.getvalue()).hexdigest() == emu.emulator.audio_cache.sha256(rec.spec)
    assert emu.faults.snapshot()["injected"]["expired_after_cut"] > 3
