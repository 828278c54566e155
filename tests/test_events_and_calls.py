"""recording_events, the recording_completed sensor and calls, against real parts only.

The emulator delivers signed webhooks (duplicated and shuffled) over HTTP to the real receiver,
which stores them in the real events store under the test's data directory; the assets run
through `dg.materialize` with resources pointed at that directory and at the emulator. The
emulator's account is the ground truth every result is compared with.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from audian_pipeline.defs.calls import calls
from audian_pipeline.defs.partitions import backfill_policy, daily_partitions
from audian_pipeline.defs.recording_audio import recording_audio
from audian_pipeline.defs.recording_events import recording_events
from audian_pipeline.defs.recordings import recordings
from audian_pipeline.defs.resources import AudianResource, LakeResource
from audian_pipeline.defs.sensors import (
    RANGE_END,
    RANGE_START,
    audio_archive_job,
    recording_completed_sensor,
    run_requests,
)
from audian_pipeline.emulator.delivery import webhook_id
from audian_pipeline.emulator.faults import FaultConfig
from audian_pipeline.emulator.server import RunningEmulator
from audian_pipeline.lake.parquet import read_rows, to_table, write_partition
from audian_pipeline.lake.paths import events_db, partition_file
from audian_pipeline.lake.tables import CALLS, RECORDING_AUDIO, RECORDING_EVENTS, RECORDINGS
from audian_pipeline.settings import DEMO_API_KEY, DEMO_WEBHOOK_SECRET
from audian_pipeline.webhooks.receiver import create_app
from audian_pipeline.webhooks.store import EventStore

from servers import serve_app

FIRST, LAST = date(2026, 11, 17), date(2026, 11, 20)
"""days=3 before CLOCK (2026-11-20): every recording and event of the account is in here."""
SMALL = dict(days=3, per_day=6, max_duration=90)


def lake(data_dir: Path) -> dict:
    return {"lake": LakeResource(data_dir=str(data_dir))}


def with_api(data_dir: Path, running: RunningEmulator) -> dict:
    return {**lake(data_dir), "audian": AudianResource(api_url=running.api_url, api_key=DEMO_API_KEY)}


def day_range(first: date, last: date) -> dict:
    return {"dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat()}


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    """The first partition's metadata: its own day's figures, and the whole run's as run_*."""
    materialization = result.asset_materializations_for_node(asset)[0]
    return {key: value.value for key, value in materialization.metadata.items()}


def due_events(running: RunningEmulator, since: datetime | None = None) -> list[tuple]:
    return list(running.account.events_due(running.account.now(), since))


@pytest.fixture
def delivered(fresh_emulator, data_dir):
    """An emulator whose every due webhook reached the receiver, half of them twice."""
    store = EventStore(events_db(data_dir))
    with serve_app(create_app(store, DEMO_WEBHOOK_SECRET)) as receiver_url:
        running = fresh_emulator(seed=31, webhook_url=receiver_url + "/webhooks/audian",
                                 faults=FaultConfig(webhook_duplicate=0.5), **SMALL)
        assert running.delivery.wait_idle(), "the emulator did not deliver every due webhook"
        yield running
        running.delivery.stop()
    store.close()


# ---- recording_events --------------------------------------------------------------------

def test_every_delivered_event_lands_once_on_the_day_it_happened(delivered, data_dir):
    running = delivered
    assert running.delivery.stats.duplicates > 0, "the fault was meant to duplicate deliveries"
    expected = {webhook_id(rec, kind): (when.date(), kind, rec) for when, kind, rec in due_events(running)}

    result = dg.materialize([recording_events], resources=lake(data_dir), tags=day_range(FIRST, LAST))

    assert result.success
    stored: dict[str, list[tuple[date, dict]]] = defaultdict(list)
    for day in days(FIRST, LAST):
        rows = read_rows(data_dir, RECORDING_EVENTS, day)
        assert rows == sorted(rows, key=lambda r: (r["occurred_at"], r["webhook_id"]))
        for row in rows:
            stored[row["webhook_id"]].append((day, row))
    assert set(stored) == set(expected)
    for wid, copies in stored.items():
        assert len(copies) == 1, f"{wid} stored {len(copies)} times"
        (day, row), (want_day, kind, rec) = copies[0], expected[wid]
        assert (day, row["event"], row["recording_id"], row["call_id"]) == (
            want_day, kind, rec.recording_id, rec.call_id)
        assert (row["checksum_sha256"] is not None) == (kind == "recording.completed")
        assert row["reason"] == (rec.failure_reason if kind == "recording.failed" else None)

    meta = metadata(result, "recording_events")
    assert meta["run_rows"] == len(expected)
    assert meta["run_rows_by_event"] == dict(sorted(Counter(kind for _, kind, _ in expected.values()).items()))
    assert meta["run_distinct_recordings"] == len({rec.recording_id for _, _, rec in expected.values()})
    assert meta["events_store_found"] is True
    assert [c.passed for c in result.get_asset_check_evaluations()] == [True]


def test_events_arrive_shuffled_and_a_rewrite_gives_the_same_bytes(delivered, data_dir):
    with EventStore(events_db(data_dir)) as store:
        arrival = [e.occurred_at for e in store.events_after(0)]
    assert arrival != sorted(arrival), "delivery was meant to be unordered"

    resources, tags = lake(data_dir), day_range(FIRST, LAST)
    assert dg.materialize([recording_events], resources=resources, tags=tags).success
    first = {day: partition_file(data_dir, "recording_events", day).read_bytes() for day in days(FIRST, LAST)}
    assert dg.materialize([recording_events], resources=resources, tags=tags).success
    assert first == {day: partition_file(data_dir, "recording_events", day).read_bytes() for day in days(FIRST, LAST)}


def test_no_events_store_yet_writes_an_empty_partition_and_says_so(data_dir):
    result = dg.materialize([recording_events], resources=lake(data_dir), partition_key="2026-11-18")

    assert result.success
    assert read_rows(data_dir, RECORDING_EVENTS, date(2026, 11, 18)) == []
    assert partition_file(data_dir, "recording_events", date(2026, 11, 18)).exists()
    assert not events_db(data_dir).exists(), "the asset must not create the receiver's store"
    meta = metadata(result, "recording_events")
    assert meta["events_store_found"] is False and "no events store" in meta["note"]


# ---- recording_completed_sensor ----------------------------------------------------------

def evaluate(data_dir: Path, cursor: str | None):
    context = dg.build_sensor_context(cursor=cursor, resources=lake(data_dir))
    return recording_completed_sensor(context)


def expected_days(completed: list[tuple], in_lake: dict[str, date]) -> set[str]:
    """The lake's day for a listed recording; else the completion day and the one before."""
    wanted: set[date] = set()
    for when, _, rec in completed:
        if rec.recording_id in in_lake:
            wanted |= {in_lake[rec.recording_id]}
        else:
            wanted |= {when.date(), when.date() - timedelta(days=1)}
    return {day.isoformat() for day in wanted}


def requested_days(request: dg.RunRequest) -> tuple[str, str]:
    """(first, last) day of a run request: its range tags, or its one partition."""
    if request.partition_key is not None:
        return request.partition_key, request.partition_key
    return request.tags[RANGE_START], request.tags[RANGE_END]


def test_sensor_first_tick_is_one_run_over_the_backlog_then_only_new_work(delivered, data_dir):
    running = delivered
    listed_day = date(2026, 11, 18)
    assert dg.materialize([recordings], resources=with_api(data_dir, running),
                          partition_key=listed_day.isoformat()).success
    in_lake = {r["recording_id"]: r["created_at"].date() for r in read_rows(data_dir, RECORDINGS, listed_day)}
    completed = [e for e in due_events(running) if e[1] == "recording.completed"]

    first = evaluate(data_dir, None)

    (request,) = first.run_requests  # one single-run backfill, not one run per day
    wanted = expected_days(completed, in_lake)
    assert requested_days(request) == (min(wanted), max(wanted))
    assert request.partition_key is None and request.run_key.startswith(f"audio-{min(wanted)}-{max(wanted)}-")
    assert {rec.created_at.date().isoformat() for _, _, rec in completed} <= wanted

    assert isinstance(evaluate(data_dir, first.cursor), dg.SkipReason), "no new event, no run"

    before = running.account.now()
    running.account.clock.advance(2 * 3600)  # the in-flight recordings of CLOCK's day complete
    assert running.delivery.wait_idle()
    newly = [e for e in due_events(running, before) if e[1] == "recording.completed"]
    assert newly, "the account was meant to have recordings in flight at CLOCK"

    later = evaluate(data_dir, first.cursor)

    (again,) = later.run_requests
    newly_wanted = expected_days(newly, in_lake)
    assert requested_days(again) == (min(newly_wanted), max(newly_wanted))
    assert int(later.cursor) > int(first.cursor)
    assert not set(r.run_key for r in later.run_requests) & set(r.run_key for r in first.run_requests)


def test_sensor_skips_without_a_store_and_creates_none(data_dir):
    assert isinstance(evaluate(data_dir, None), dg.SkipReason)
    assert not events_db(data_dir).exists()


def test_days_past_retention_or_before_the_partitions_are_not_requested():
    newest, today = date(2026, 11, 20), date(2026, 11, 25)
    asked = {date(2025, 12, 31): 1, date(2026, 10, 20): 2, date(2026, 10, 21): 3, date(2026, 11, 20): 4,
             date(2026, 11, 26): 5}
    (request,) = run_requests(asked, newest, today)
    assert requested_days(request) == ("2026-10-21", "2026-11-20")
    assert run_requests({date(2026, 11, 19): 7}, newest, today)[0].partition_key == "2026-11-19"
    assert run_requests({date(2026, 11, 26): 8}, newest, today) == []


def test_the_first_tick_run_archives_every_backlog_day_in_one_run(delivered, data_dir):
    """The sensor's range request, executed as the daemon would launch it: one run, every day."""
    (request,) = evaluate(data_dir, None).run_requests
    defs = dg.Definitions(assets=[recordings, recording_audio], jobs=[audio_archive_job],
                          resources=with_api(data_dir, delivered))

    result = defs.resolve_job_def("audio_archive_job").execute_in_process(tags=request.tags)

    assert result.success
    first, last = (date.fromisoformat(d) for d in requested_days(request))
    for day in days(first, last):
        outcomes = {row["outcome"] for row in read_rows(data_dir, RECORDING_AUDIO, day)}
        created = [rec for rec in delivered.account.recordings.values() if rec.created_at.date() == day]
        assert ("verified" in outcomes) == any(rec.status_at(delivered.account.now()) == "completed"
                                               for rec in created), day
        assert "no_checksum_yet" not in outcomes, f"{day}: the webhooks were delivered before the run"


def test_audio_job_resolves_with_the_audio_asset():
    """The job names `recording_audio` by key; here a stand-in of it proves the wiring loads."""

    @dg.asset(name="recording_audio", partitions_def=daily_partitions, backfill_policy=backfill_policy,
              deps=["recordings"])
    def stand_in() -> None:
        return None

    defs = dg.Definitions(
        assets=[recordings, stand_in, recording_events, calls],
        jobs=[audio_archive_job],
        sensors=[recording_completed_sensor],
        resources={**lake(Path("unused")),
                   "audian": AudianResource(api_url="http://127.0.0.1:1", api_key=DEMO_API_KEY)},
    )
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("audio_archive_job")
    assert job.partitions_def == daily_partitions
    assert set(job.asset_layer.executable_asset_keys) == {dg.AssetKey("recordings"), dg.AssetKey("recording_audio")}


# ---- calls --------------------------------------------------------------------------------

def final_calls(data_dir: Path, day: date) -> tuple[set[str], set[str]]:
    """(ready, deferred) call_ids of the day, by the recordings partition's statuses."""
    settled: dict[str, bool] = defaultdict(lambda: True)
    for rec in read_rows(data_dir, RECORDINGS, day):
        settled[rec["call_id"]] &= rec["status"] in ("completed", "failed") or rec["deleted_at"] is not None
    return {c for c, ok in settled.items() if ok}, {c for c, ok in settled.items() if not ok}


def test_calls_are_fetched_once_and_never_again(fresh_emulator, data_dir):
    running = fresh_emulator(seed=41, **SMALL)
    resources, tags = with_api(data_dir, running), day_range(date(2026, 11, 19), LAST)
    assert dg.materialize([recordings], resources=resources, tags=tags).success

    first = dg.materialize([calls], resources=resources, tags=tags)

    assert first.success
    meta = metadata(first, "calls")
    ready, deferred = set(), set()
    stored: dict[str, dict] = {}
    for day in (date(2026, 11, 19), LAST):
        day_ready, day_deferred = final_calls(data_dir, day)
        ready, deferred = ready | day_ready, deferred | day_deferred
        stored.update({row["call_id"]: row for row in read_rows(data_dir, CALLS, day)})
    assert deferred, "CLOCK's day was meant to hold recordings still in flight"
    assert meta["run_deferred"] == len(deferred)
    assert meta["run_call_requests"] == len(ready), "each ready call asked for exactly once"
    assert set(stored) == ready - set(meta["run_unreadable"])
    assert meta["run_new_calls_fetched"] == len(stored) == meta["run_rows"]
    for call_id, row in stored.items():
        truth = running.account.calls[call_id]
        assert (row["from_number"], row["to_number"], row["direction"], row["status"], row["call_flow_id"]) == (
            truth.from_number, truth.to_number, truth.direction, truth.status, truth.call_flow_id)
        assert (row["started_at"], row["ended_at"], row["duration"]) == (
            truth.started_at, truth.ended_at, truth.duration)

    second = dg.materialize([calls], resources=resources, tags=tags)

    again = metadata(second, "calls")
    assert again["run_call_requests"] == len(meta["run_unreadable"]), "stored calls are never asked for again"
    assert again["run_new_calls_fetched"] == 0 and again["run_rows"] == meta["run_rows"]


def test_a_call_past_retention_is_skipped_and_a_stored_one_kept(fresh_emulator, data_dir):
    running = fresh_emulator(seed=43, days=1, per_day=1, max_duration=30)
    day = date(2026, 10, 1)
    now = datetime(2026, 10, 2, tzinfo=timezone.utc)
    start = datetime(2026, 10, 1, 12, tzinfo=timezone.utc)
    recs = [
        {"recording_id": f"rec_{name}", "call_id": f"call_{name}", "status": "completed", "duration": 60,
         "file_size": 1000, "created_at": start, "expires_at": start + timedelta(days=30),
         "first_seen_at": now, "last_seen_at": now}
        for name in ("gone", "kept")
    ]
    write_partition(data_dir, RECORDINGS, day, to_table(RECORDINGS, recs))
    kept = {"call_id": "call_kept", "from_number": "+14155550100", "to_number": "+12125550100",
            "direction": "inbound", "status": "completed", "started_at": start, "ended_at": start,
            "duration": 60, "fetched_at": now}
    write_partition(data_dir, CALLS, day, to_table(CALLS, [kept]))

    result = dg.materialize([calls], resources=with_api(data_dir, running), partition_key=day.isoformat())

    meta = metadata(result, "calls")
    assert (meta["call_requests"], meta["not_found_skipped"], meta["rows"]) == (1, 1, 1)
    assert [row["call_id"] for row in read_rows(data_dir, CALLS, day)] == ["call_kept"]
