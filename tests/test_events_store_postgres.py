"""AUDIAN_EVENTS_DB on Postgres: the webhook events store shared by receivers, assets and the
sensor on several machines, with the SQLite store's promises (durable before 2xx, one row per
webhook-id, several receivers at once), against a real Postgres started by the suite."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import requests

from audian_pipeline.client.models import RecordingEvent
from audian_pipeline.defs.recording_audio import recording_audio
from audian_pipeline.defs.recording_events import recording_events
from audian_pipeline.defs.recordings import recordings
from audian_pipeline.defs.resources import AudianResource, LakeResource
from audian_pipeline.defs.sensors import recording_completed_sensor
from audian_pipeline.lake.parquet import read_rows
from audian_pipeline.lake.paths import events_db
from audian_pipeline.lake.tables import RECORDING_AUDIO, RECORDING_EVENTS
from audian_pipeline.settings import DEMO_API_KEY, DEMO_WEBHOOK_SECRET, SettingError, Settings
from audian_pipeline.webhooks.postgres_store import APPEND_LOCK, APPEND_LOCK_SQL, TABLE
from audian_pipeline.webhooks.receiver import create_app
from audian_pipeline.webhooks.store import open_event_store, open_existing_event_store

from servers import free_port, serve_app, serve_subprocess
from test_webhooks_receiver import SECRET, deliver, event_body


@pytest.fixture(params=["sqlite", "postgres"])
def store_location(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "events" / "events.sqlite3")
    return request.getfixturevalue("postgres_url")


def _append(store, msg_id: str, body: bytes) -> bool:
    return store.append(msg_id, RecordingEvent.from_api(json.loads(body)), body, datetime.now(timezone.utc))


def test_the_store_answers_alike_on_both_engines(store_location: str):
    assert open_existing_event_store(store_location) is None, "a reader must not create the store"
    with open_event_store(store_location) as store:
        assert _append(store, "m1", event_body("recording.started", "rec_a", started_at="2024-01-15T23:59:59Z"))
        assert _append(store, "m2", event_body("recording.completed", "rec_a", completed_at="2024-01-16T00:00:00Z"))
        assert not _append(store, "m2", event_body("recording.completed", "rec_a"))  # a retry: first copy wins
        assert _append(store, "m3", event_body("recording.failed", "rec_b", failed_at="2024-01-16T12:00:00Z",
                                                reason="quota_exceeded"))
        assert _append(store, "m4", event_body("recording.completed", "rec_a", completed_at="2024-01-16T00:05:00Z",
                                                checksum={"algorithm": "SHA256", "value": "AB" * 32}))
        reader = open_existing_event_store(store_location)  # as another process would
        assert reader is not None
        with reader:
            day = datetime(2024, 1, 16, tzinfo=timezone.utc)
            assert [e.webhook_id for e in reader.events_between(day, day + timedelta(days=1))] == ["m2", "m4", "m3"]
            after = reader.events_after(0)
            assert [e.webhook_id for e in after] == ["m1", "m2", "m3", "m4"]
            assert after[1].occurred_at == datetime(2024, 1, 16, tzinfo=timezone.utc)
            assert [e.webhook_id for e in reader.events_after(after[0].seq, "recording.completed", limit=1)] == ["m2"]
            assert reader.checksums(["rec_a", "rec_b", "rec_none"]) == {"rec_a": "ab" * 32}
            assert reader.failure_reasons(["rec_a", "rec_b"]) == {"rec_b": "quota_exceeded"}
            assert (reader.count(), reader.max_seq()) == (4, after[-1].seq)


def _waiting_on_a_lock(admin, thread: threading.Thread) -> None:
    """Until the appending thread is done or its connection waits on a lock (bounded)."""
    for _ in range(400):
        if not thread.is_alive():
            return
        with admin.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity "
                           "WHERE application_name = 'audian-events' AND wait_event_type = 'Lock'")
            if cursor.fetchone()[0]:
                return
        time.sleep(0.05)
    raise AssertionError("the append neither finished nor waited")


def test_a_sensor_cursor_never_skips_a_row_another_receiver_commits_late(postgres_url: str):
    """Postgres numbers rows at insert, not at commit: without ordering appends, a row numbered
    after one still uncommitted becomes visible first, the sensor's cursor passes it, and the
    earlier row is never seen."""
    with open_event_store(postgres_url) as store, open_existing_event_store(postgres_url) as reader:
        slow = psycopg2.connect(postgres_url)  # another receiver, mid-append
        slow.autocommit = True
        admin = psycopg2.connect(postgres_url)
        admin.autocommit = True
        try:
            with slow.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute(APPEND_LOCK_SQL, (APPEND_LOCK,))
                cursor.execute(f"INSERT INTO {TABLE} (webhook_id, event, recording_id, call_id, occurred_at, "
                               "received_at, payload) VALUES ('slow', 'recording.started', 'rec_s', 'call_s', "
                               "'2024-01-15T10:30:05.000000Z', '2024-01-15T10:30:06.000000Z', '{}')")
            appending = threading.Thread(target=_append, args=(store, "fast", event_body("recording.started")))
            appending.start()
            _waiting_on_a_lock(admin, appending)
            seen_meanwhile = [e.webhook_id for e in reader.events_after(0)]
            with slow.cursor() as cursor:
                cursor.execute("COMMIT")
            appending.join(30)
        finally:
            slow.close()
            admin.close()
        assert seen_meanwhile == [], "a later row was visible while an earlier one was uncommitted"
        assert [e.webhook_id for e in reader.events_after(0)] == ["slow", "fast"]


def test_several_receivers_share_one_store_and_store_each_event_once(postgres_url: str):
    events, statuses = 40, {}
    stores = [open_event_store(postgres_url), open_event_store(postgres_url)]
    with serve_app(create_app(stores[0], SECRET)) as first, serve_app(create_app(stores[1], SECRET)) as second:

        def sender(url: str, name: str) -> None:
            with requests.Session() as session:
                for n in range(events):  # Audian's retry of each event reaches the other receiver
                    answer = deliver(url, event_body("recording.started", f"rec_{n}"), session, msg_id=f"msg_{n}")
                    statuses[(name, n)] = (answer.status_code, answer.json()["status"])

        senders = [threading.Thread(target=sender, args=(url, name)) for url, name in ((first, "a"), (second, "b"))]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(120)
    for store in stores:
        store.close()
    assert {code for code, _ in statuses.values()} == {200}
    for n in range(events):
        assert sorted(statuses[(name, n)][1] for name in "ab") == ["duplicate", "stored"]
    with open_existing_event_store(postgres_url) as reader:
        stored = reader.events_after(0)
    assert sorted(e.webhook_id for e in stored) == sorted(f"msg_{n}" for n in range(events))
    assert [e.seq for e in stored] == sorted(e.seq for e in stored)


def test_a_lost_connection_answers_503_then_the_receiver_reconnects(postgres_url: str):
    with open_event_store(postgres_url) as store, serve_app(create_app(store, SECRET)) as url:
        assert deliver(url, event_body(), msg_id="before").status_code == 200
        admin = psycopg2.connect(postgres_url)
        admin.autocommit = True
        with admin.cursor() as cursor:  # what a Postgres restart or failover does to open connections
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = 'audian-events'")
        admin.close()
        lost = deliver(url, event_body(), msg_id="during")
        assert (lost.status_code, lost.json()["error"]) == (503, "store_unavailable")
        assert deliver(url, event_body(), msg_id="during").status_code == 200  # Audian's retry
        assert [e.webhook_id for e in store.events_after(0)] == ["before", "during"]


def test_events_db_setting_refuses_other_urls_without_showing_the_password(tmp_path: Path):
    for value, expected in (("mysql://user:hunter2@db/audian", "postgresql://"),
                            ("postgresql://user:hunter2@db", "host and a database")):
        with pytest.raises(SettingError, match="AUDIAN_EVENTS_DB") as caught:
            _ = Settings({"AUDIAN_EVENTS_DB": value}).events_db
        assert expected in str(caught.value) and "hunter2" not in str(caught.value)
    assert Settings({"AUDIAN_DATA_DIR": str(tmp_path)}).events_db == str(events_db(tmp_path))
    result = dg.materialize([recording_events], partition_key="2026-11-18", raise_on_error=False, resources={
        "lake": LakeResource(data_dir=str(tmp_path), events_db="mysql://user:hunter2@db/audian")})
    assert not result.success


DAY = date(2026, 11, 19)


def test_receiver_assets_and_sensor_share_the_postgres_store(fresh_emulator, data_dir, postgres_url, monkeypatch):
    """The emulator's webhooks reach a receiver on Postgres; with AUDIAN_EVENTS_DB set where runs
    launch, the events table, the archive's checksums and the sensor all read that store."""
    with open_event_store(postgres_url) as store, serve_app(create_app(store, DEMO_WEBHOOK_SECRET)) as receiver:
        running = fresh_emulator(seed=31, days=3, per_day=4, max_duration=60,
                                 webhook_url=receiver + "/webhooks/audian")
        assert running.delivery.wait_idle(), "the emulator did not deliver every due webhook"
        running.delivery.stop()
        stored = store.count()
    monkeypatch.setenv("AUDIAN_EVENTS_DB", postgres_url)
    resources = {"lake": LakeResource(data_dir=str(data_dir)),
                 "audian": AudianResource(api_url=running.api_url, api_key=DEMO_API_KEY)}
    result = dg.materialize([recordings, recording_audio, recording_events], resources=resources,
                            partition_key=DAY.isoformat())
    assert result.success
    assert not events_db(data_dir).exists(), "nothing may fall back to the SQLite file"
    with open_existing_event_store(postgres_url) as reader:
        start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=timezone.utc)
        expected = {e.webhook_id for e in reader.events_between(start, start + timedelta(days=1))}
    assert stored and expected
    assert {row["webhook_id"] for row in read_rows(data_dir, RECORDING_EVENTS, DAY)} == expected
    verified = [row for row in read_rows(data_dir, RECORDING_AUDIO, DAY) if row["outcome"] == "verified"]
    assert verified and all(row["expected_sha256"] == row["sha256"] for row in verified)
    tick = recording_completed_sensor(dg.build_sensor_context(cursor=None, resources={"lake": resources["lake"]}))
    assert tick.run_requests, "the sensor found no recording.completed event in the Postgres store"


_SERVE = "import sys; from audian_pipeline.cli import main; sys.exit(main(['webhooks', '--port', sys.argv[1]]))"


def test_the_receiver_on_postgres_loses_no_acknowledged_event_when_killed(postgres_url: str, tmp_path: Path):
    acknowledged, port = [], free_port()
    env = {"AUDIAN_EVENTS_DB": postgres_url, "AUDIAN_WEBHOOK_SECRET": SECRET, "AUDIAN_DATA_DIR": str(tmp_path)}
    code = f"import sys; sys.argv = ['x', {str(port)!r}]; " + _SERVE
    with serve_subprocess(code, port, env, quiet=True) as process, requests.Session() as session:
        for n in range(60):
            answer = deliver(f"http://127.0.0.1:{port}", event_body("recording.started", f"rec_{n}"), session,
                             msg_id=f"msg_kill_{n}")
            assert answer.status_code == 200
            acknowledged.append(f"msg_kill_{n}")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    with open_existing_event_store(postgres_url) as reader:
        assert [e.webhook_id for e in reader.events_after(0)] == acknowledged
    assert not events_db(tmp_path).exists()
