"""API requests per archived recording: the `recording.completed` webhook stands in for the
detail call, and every check the archive promises still holds.

Real parts only: the emulator delivers its signed webhooks over HTTP to the real receiver,
which writes the real events store (SQLite, or Postgres from the suite's server); the assets
run through `dg.materialize`; the emulator counts what it was asked, per kind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import dagster as dg
import pytest
import requests

from audian_pipeline.client.models import RecordingEvent
from audian_pipeline.defs.calls import calls
from audian_pipeline.defs.recording_audio import recording_audio
from audian_pipeline.defs.recording_events import recording_events
from audian_pipeline.defs.recordings import recordings
from audian_pipeline.defs.resources import AudianResource, LakeResource
from audian_pipeline.emulator.account import RecordingRecord, iso
from audian_pipeline.emulator.server import RunningEmulator
from audian_pipeline.lake.parquet import read_rows
from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.lake.tables import RECORDING_AUDIO, RECORDING_EVENTS, RECORDINGS
from audian_pipeline.settings import DEMO_API_KEY, DEMO_WEBHOOK_SECRET
from audian_pipeline.warehouse.load import load_warehouse
from audian_pipeline.warehouse.reports import read_report
from audian_pipeline.webhooks.receiver import create_app
from audian_pipeline.webhooks.store import open_event_store

from servers import serve_app
from test_webhooks_receiver import deliver, event_body

DAY = date(2026, 11, 19)
ACCOUNT = dict(seed=42, days=2, per_day=30, max_duration=20)
"""At the suite's CLOCK this account's DAY holds 33 recordings, all completed, on 30 calls."""
MOST_PER_ARCHIVED = 3


@pytest.fixture(params=["sqlite", "postgres"])
def events_location(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "events" / "events.sqlite3")
    return request.getfixturevalue("postgres_url")


@contextlib.contextmanager
def delivered_account(fresh_emulator, location: str) -> Iterator[tuple[RunningEmulator, str]]:
    """The account with every due webhook stored by a real receiver; yields it and the receiver's URL."""
    with open_event_store(location) as store, serve_app(create_app(store, DEMO_WEBHOOK_SECRET)) as receiver:
        running = fresh_emulator(webhook_url=receiver + "/webhooks/audian", **ACCOUNT)
        assert running.delivery.wait_idle(60), "the emulator did not deliver every due webhook"
        yield running, receiver


def day_recordings(running: RunningEmulator) -> dict[str, RecordingRecord]:
    now = running.account.now()
    listed = {r.recording_id: r for r in running.account.visible(now) if r.created_at.date() == DAY}
    assert listed and all(r.status_at(now) == "completed" for r in listed.values()), \
        "the account was chosen so that every recording of DAY is completed"
    return listed


def requests_by_kind(running: RunningEmulator) -> Counter:
    state = requests.get(running.api_url + "/_emulator/state", timeout=10).json()
    return Counter(state["requests_by_kind"])


def run_day(running: RunningEmulator, data_dir: Path, location: str,
            assets=(recordings, calls, recording_events, recording_audio)) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        list(assets),
        resources={"audian": AudianResource(api_url=running.api_url, api_key=DEMO_API_KEY),
                   "lake": LakeResource(data_dir=str(data_dir), events_db=location)},
        partition_key=DAY.isoformat(),
    )
    assert result.success
    return result


def recordings_metadata(result: dg.ExecuteInProcessResult) -> dict:
    materialization = result.asset_materializations_for_node("recordings")[0]
    return {key: value.value for key, value in materialization.metadata.items()}


def archived(data_dir: Path) -> set[str]:
    """Recording ids with a file in the archive (not in quarantine)."""
    return {p.stem for p in (data_dir / "audio").rglob("*") if p.is_file()}


def completed_event(rec: RecordingRecord, sha256: str, **changes) -> bytes:
    """A recording.completed body for `rec`, one minute after Audian's own, with `changes`."""
    fields = dict(call_id=rec.call_id, duration=rec.duration, file_size=rec.file_size,
                  file_format=rec.file_format, completed_at=iso(rec.finished_at + timedelta(minutes=1)),
                  checksum={"algorithm": "sha256", "value": sha256})
    fields.update(changes)
    return event_body("recording.completed", rec.recording_id, **fields)


# ---- one day, every webhook delivered ----------------------------------------------------

def test_a_day_with_every_webhook_costs_no_detail_call_and_at_most_three_requests_per_recording(
        fresh_emulator, data_dir, events_location):
    with delivered_account(fresh_emulator, events_location) as (running, _):
        listed = day_recordings(running)
        before = requests_by_kind(running)

        result = run_day(running, data_dir, events_location)

        made = requests_by_kind(running) - before
    verified = {r["recording_id"]: r for r in read_rows(data_dir, RECORDING_AUDIO, DAY) if r["outcome"] == "verified"}
    assert set(verified) == set(listed) == archived(data_dir), "every completed recording verified and archived"
    assert made["detail"] == 0, made
    per_archived = sum(made.values()) / len(verified)
    print(f"\nAPI requests per archived recording: {per_archived:.3f} {dict(made)} over {len(verified)}")
    assert per_archived <= MOST_PER_ARCHIVED, made
    assert made["list"] < len(verified) / 10 and made["other"] == 0, made

    for row in read_rows(data_dir, RECORDINGS, DAY):
        rec = listed[row["recording_id"]]
        assert row["detail_source"] == "webhook"
        assert (row["file_format"], row["completed_at"], row["file_size"], row["duration"]) == (
            rec.file_format, rec.finished_at, rec.file_size, rec.duration)
        assert (row["bitrate"], row["sample_rate"], row["channels"]) == (None, None, None)
        probed = verified[row["recording_id"]]
        assert (probed["probed_sample_rate"], probed["probed_channels"]) == (rec.sample_rate, rec.channels)
        assert probed["sha256"] == probed["expected_sha256"] and probed["bytes"] == rec.file_size

    meta = recordings_metadata(result)
    assert (meta["detail_calls"], meta["details_from_webhook"]) == (0, len(listed))


# ---- failed recordings ---------------------------------------------------------------------

FAILING_ACCOUNT = {**ACCOUNT, "seed": 48}
"""At the suite's CLOCK this account's DAY holds 27 completed and 4 failed recordings."""


def test_a_failed_recording_with_its_webhook_costs_no_detail_call_and_keeps_its_reason(fresh_emulator, data_dir):
    """A failed recording has no file: the list and its recording.failed event say all the detail
    would. Without the event (not delivered yet) it still gets its detail call."""
    location = str(data_dir / "events" / "events.sqlite3")
    with open_event_store(location) as store, serve_app(create_app(store, DEMO_WEBHOOK_SECRET)) as receiver:
        running = fresh_emulator(webhook_url=receiver + "/webhooks/audian", **FAILING_ACCOUNT)
        assert running.delivery.wait_idle(60), "the emulator did not deliver every due webhook"
    now = running.account.now()
    failed = sorted(r.recording_id for r in running.account.visible(now)
                    if r.created_at.date() == DAY and r.status_at(now) == "failed")
    assert len(failed) == 4, "the account was chosen for failed recordings on DAY"
    undelivered = failed[0]
    with contextlib.closing(sqlite3.connect(location)) as conn, conn:  # as if not delivered yet
        conn.execute("DELETE FROM events WHERE event = 'recording.failed' AND recording_id = ?", [undelivered])
    before = requests_by_kind(running)

    result = run_day(running, data_dir, location, assets=(recordings, recording_events))

    made = requests_by_kind(running) - before
    assert made["detail"] == 1, made
    rows = {r["recording_id"]: r for r in read_rows(data_dir, RECORDINGS, DAY)}
    assert {rid: (rows[rid]["status"], rows[rid]["detail_source"]) for rid in failed} == {
        rid: ("failed", "api" if rid == undelivered else "webhook") for rid in failed}
    assert all(rows[rid]["file_format"] is None and rows[rid]["completed_at"] is None
               for rid in failed if rid != undelivered)
    reasons = {e["recording_id"]: e["reason"] for e in read_rows(data_dir, RECORDING_EVENTS, DAY)
               if e["event"] == "recording.failed"}
    assert set(reasons) == set(failed) - {undelivered} and all(reasons.values())
    assert recordings_metadata(result)["details_from_webhook"] == len(rows) - 1


# ---- webhooks missing for some recordings ------------------------------------------------

def test_recordings_whose_webhook_has_not_arrived_get_a_detail_call_and_only_they(fresh_emulator, data_dir):
    location = str(data_dir / "events" / "events.sqlite3")
    with delivered_account(fresh_emulator, location) as (running, _):
        listed = day_recordings(running)
        missing = sorted(listed)[:5]
        with contextlib.closing(sqlite3.connect(location)) as conn, conn:  # as if never delivered
            conn.executemany("DELETE FROM events WHERE event = 'recording.completed' AND recording_id = ?",
                             [(rid,) for rid in missing])
        before = requests_by_kind(running)

        result = run_day(running, data_dir, location, assets=(recordings, recording_audio))

        made = requests_by_kind(running) - before
    assert made["detail"] == len(missing), made
    rows = {r["recording_id"]: r for r in read_rows(data_dir, RECORDINGS, DAY)}
    for rid, rec in listed.items():
        row = rows[rid]
        if rid in missing:
            assert row["detail_source"] == "api"
            assert (row["sample_rate"], row["channels"], row["bitrate"]) == (rec.sample_rate, rec.channels, rec.bitrate)
        else:
            assert row["detail_source"] == "webhook" and row["sample_rate"] is None
    outcomes = {r["recording_id"]: r["outcome"] for r in read_rows(data_dir, RECORDING_AUDIO, DAY)}
    assert {rid: outcomes[rid] for rid in missing} == dict.fromkeys(missing, "no_checksum_yet")
    assert archived(data_dir) == set(listed) - set(missing)
    meta = recordings_metadata(result)
    assert (meta["detail_calls"], meta["details_from_webhook"]) == (len(missing), len(listed) - len(missing))

    # report_durations groups by channels: Audian's where the detail call gave them, else the verified file's
    load_warehouse(data_dir, [DAY], storage_quota_bytes=10**12)
    by_group = {(r["file_format"], r["channels"]): r["recordings"]
                for r in read_report(warehouse_path(data_dir), "durations").records()}
    assert by_group == dict(Counter((rec.file_format, rec.channels) for rec in listed.values()))


# ---- an event that disagrees with the list, or lacks what the detail gives ----------------

def test_an_event_the_list_contradicts_or_that_lacks_a_field_costs_a_detail_call_and_verification_holds(
        fresh_emulator, data_dir):
    location = str(data_dir / "events" / "events.sqlite3")
    with delivered_account(fresh_emulator, location) as (running, receiver):
        listed = day_recordings(running)
        wrong_size, no_size, wrong_format = (listed[rid] for rid in sorted(listed)[:3])
        real = {rec.recording_id: running.emulator.audio_cache.sha256(rec.spec)
                for rec in (wrong_size, no_size, wrong_format)}
        other_format = next(f for f in ("mp3", "wav", "opus") if f != wrong_format.file_format)
        bodies = {
            # a later event says another size and another checksum: the list disagrees, so neither is trusted
            wrong_size.recording_id: completed_event(wrong_size, hashlib.sha256(b"other bytes").hexdigest(),
                                                     file_size=wrong_size.file_size + 1),
            # a later event without the file's size and length: the detail call fills them
            no_size.recording_id: completed_event(no_size, real[no_size.recording_id], file_size=None, duration=None),
            # a later event that agrees with the list but names another format: the probe catches it
            wrong_format.recording_id: completed_event(wrong_format, real[wrong_format.recording_id],
                                                       file_format=other_format),
        }
        for n, body in enumerate(bodies.values()):
            RecordingEvent.from_api(json.loads(body))
            answer = deliver(receiver, body, msg_id=f"msg_bad_{n}", secret=DEMO_WEBHOOK_SECRET)
            assert answer.status_code == 200, answer.text
        before = requests_by_kind(running)

        run_day(running, data_dir, location, assets=(recordings, recording_audio))

        made = requests_by_kind(running) - before
    assert made["detail"] == 2, made
    rows = {r["recording_id"]: r for r in read_rows(data_dir, RECORDINGS, DAY)}
    assert {rid: rows[rid]["detail_source"] for rid in bodies} == {
        wrong_size.recording_id: "api", no_size.recording_id: "api", wrong_format.recording_id: "webhook"}
    assert rows[wrong_size.recording_id]["file_size"] == wrong_size.file_size, "the size is Audian's detail's"
    audio = {r["recording_id"]: r for r in read_rows(data_dir, RECORDING_AUDIO, DAY)}
    assert audio[wrong_size.recording_id]["outcome"] == "checksum_mismatch"
    assert audio[no_size.recording_id]["outcome"] == "verified"
    assert audio[wrong_format.recording_id]["outcome"] == "format_mismatch"
    assert archived(data_dir) == {rid for rid, row in audio.items() if row["outcome"] == "verified"}
    assert archived(data_dir) == set(listed) - {wrong_size.recording_id, wrong_format.recording_id}


# ---- the store's query, on both engines --------------------------------------------------

def test_the_store_gives_each_recordings_latest_completed_event_in_one_query(events_location):
    ids = [f"rec_{n:05d}" for n in range(1200)]  # more than one IN-list chunk of the other queries
    received = datetime(2026, 11, 19, 12, tzinfo=timezone.utc)

    def append(store, msg_id: str, body: bytes) -> None:
        assert store.append(msg_id, RecordingEvent.from_api(json.loads(body)), body, received)

    with open_event_store(events_location) as store:
        for n, rid in enumerate(ids[:1000]):
            append(store, f"m{n}", event_body("recording.completed", rid, completed_at="2026-11-19T10:00:00Z"))
        append(store, "later", event_body("recording.completed", ids[0], completed_at="2026-11-19T11:00:00Z",
                                          file_size=7))
        append(store, "earlier", event_body("recording.completed", ids[1], completed_at="2026-11-19T09:00:00Z",
                                            file_size=7))
        append(store, "failed", event_body("recording.failed", ids[1100]))

        if isinstance(getattr(store, "_conn", None), sqlite3.Connection):
            statements: list[str] = []
            store._conn.set_trace_callback(statements.append)
            found = store.latest_events("recording.completed", ids)
            store._conn.set_trace_callback(None)
            assert len(statements) == 1, statements
        else:
            found = store.latest_events("recording.completed", ids)

        assert set(found) == set(ids[:1000])
        assert all(event.event == "recording.completed" for event in found.values())
        sizes = {rid: json.loads(event.payload)["data"]["file_size"] for rid, event in found.items()}
        assert (sizes[ids[0]], sizes[ids[1]], sizes[ids[2]]) == (7, 1536000, 1536000), "the latest event wins"
        assert store.latest_events("recording.completed", []) == {}
