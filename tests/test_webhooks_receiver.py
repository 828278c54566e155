"""The webhook receiver over real HTTP: signatures, rejections, de-duplication, durability.

Requests are signed by `sign` below, written from the Standard Webhooks spec and checked
against its published example, so the receiver (which verifies with the `standardwebhooks`
library) is tested against an implementation that shares no code with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from audian_pipeline.client.models import RecordingEvent
from audian_pipeline.webhooks.receiver import create_app
from audian_pipeline.webhooks.store import EventStore

from servers import free_port, serve_app, serve_subprocess

SECRET = "whsec_" + base64.b64encode(b"receiver-test-secret-0123456789!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"some-other-endpoint-secret-99999").decode()
PATH = "/webhooks/audian"
LIMIT = 256 * 1024


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks v1: base64 HMAC-SHA256 of "{id}.{timestamp}.{body}" under the key."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def event_body(kind: str = "recording.completed", recording_id: str = "rec_1", **extra) -> bytes:
    data = {"call_id": "call_1", "recording_id": recording_id}
    if kind == "recording.started":
        data["started_at"] = "2024-01-15T10:30:05Z"
    elif kind == "recording.stopped":
        data.update(stopped_at="2024-01-15T10:35:10Z", duration=305)
    elif kind == "recording.completed":
        data.update(
            completed_at="2024-01-15T10:36:00Z", duration=305, file_size=1536000, file_format="mp3",
            download_url=f"https://api.audian.com:8443/v2/recordings/{recording_id}/download",
            checksum={"algorithm": "sha256", "value": hashlib.sha256(recording_id.encode()).hexdigest()},
        )
    elif kind == "recording.failed":
        data.update(failed_at="2024-01-15T10:36:00Z", reason="storage_error")
    data.update(extra)
    return json.dumps({"event": kind, "data": data}).encode()


def headers(body: bytes, msg_id: str = "msg_1", timestamp: int | None = None,
            secret: str = SECRET) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def deliver(base_url: str, body: bytes, session: requests.Session | None = None,
            **header_args) -> requests.Response:
    post = (session or requests).post
    return post(base_url + PATH, data=body, headers=headers(body, **header_args), timeout=10)


@pytest.fixture
def store(tmp_path: Path):
    with EventStore(tmp_path / "events" / "events.sqlite3") as events:
        yield events


@pytest.fixture
def base_url(store: EventStore):
    with serve_app(create_app(store, SECRET)) as url:
        yield url


def test_signer_matches_the_spec_example():
    # The Standard Webhooks spec's example, also in the standardwebhooks library's own tests
    # (libraries/python/tests/test_webhooks.py, test_sign_function).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id, timestamp, body = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, msg_id, timestamp, body.encode()) == expected
    library_time = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    assert Webhook(secret).sign(msg_id, library_time, body) == expected


def test_valid_event_is_stored_once_and_acknowledged(base_url, store):
    body = event_body("recording.completed", "rec_abc")
    answer = deliver(base_url, body, msg_id="msg_valid")
    assert answer.status_code == 200
    assert answer.json() == {"status": "stored"}
    [stored] = store.events_after(0)
    assert stored.webhook_id == "msg_valid"
    assert (stored.event, stored.recording_id) == ("recording.completed", "rec_abc")
    assert stored.occurred_at == datetime(2024, 1, 15, 10, 36, tzinfo=timezone.utc)
    assert stored.payload == body.decode()
    assert stored.download_url.endswith("/v2/recordings/rec_abc/download")
    assert store.checksums(["rec_abc"]) == {"rec_abc": hashlib.sha256(b"rec_abc").hexdigest()}
    assert requests.get(base_url + "/healthz", timeout=5).json() == {"status": "ok", "events": 1, "duplicates": 0}


def test_a_redelivered_webhook_id_is_stored_once(base_url, store, caplog):
    body = event_body("recording.failed", "rec_f")
    first = deliver(base_url, body, msg_id="msg_dup")
    with caplog.at_level(logging.INFO, logger="audian_pipeline"):
        second = deliver(base_url, body, msg_id="msg_dup", timestamp=int(time.time()) - 60)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == {"status": "duplicate"}
    assert store.count() == 1
    assert "duplicate" not in caplog.text  # counted, not a line per redelivery
    assert requests.get(base_url + "/healthz", timeout=5).json()["duplicates"] == 1
    assert store.failure_reasons(["rec_f"]) == {"rec_f": "storage_error"}


@pytest.mark.parametrize("first", ["wrong", "malformed"])
def test_key_rotation_accepts_a_later_valid_signature(base_url, store, first):
    body = event_body("recording.started")
    timestamp = int(time.time())
    valid = sign(SECRET, "msg_rot", timestamp, body)
    other = sign(OTHER_SECRET, "msg_rot", timestamp, body) if first == "wrong" else "v1,not*base64"
    answer = requests.post(base_url + PATH, data=body, timeout=10, headers={
        "webhook-id": "msg_rot", "webhook-timestamp": str(timestamp),
        "webhook-signature": f"{other} {valid}",
    })
    assert answer.status_code == 200
    assert store.count() == 1


def _unauthenticated_cases() -> dict[str, dict[str, str]]:
    body = event_body()
    now = int(time.time())
    good = headers(body, msg_id="msg_401")
    return {
        "wrong secret": headers(body, msg_id="msg_401", secret=OTHER_SECRET),
        "signature of another body": {**good, "webhook-signature": sign(SECRET, "msg_401", now, b"{}")},
        "signature of another id": {**good, "webhook-id": "msg_other"},
        "no webhook-id": {k: v for k, v in good.items() if k != "webhook-id"},
        "no webhook-timestamp": {k: v for k, v in good.items() if k != "webhook-timestamp"},
        "no webhook-signature": {k: v for k, v in good.items() if k != "webhook-signature"},
        "stale timestamp": headers(body, msg_id="msg_401", timestamp=now - 301),
        "future timestamp": headers(body, msg_id="msg_401", timestamp=now + 301),
        "fractional timestamp": {**good, "webhook-timestamp": f"{now}.0"},
        "signature without version": {**good, "webhook-signature": good["webhook-signature"][3:]},
    }


@pytest.mark.parametrize("case", list(_unauthenticated_cases()))
def test_unauthenticated_deliveries_are_refused_with_401(base_url, store, case):
    sent = _unauthenticated_cases()[case]
    answer = requests.post(base_url + PATH, data=event_body(), headers=sent, timeout=10)
    assert answer.status_code == 401
    assert set(answer.json()) == {"error", "message"}
    assert store.count() == 0


@pytest.mark.parametrize("body", [
    b'{"event": "recording.completed", "data": ',
    b"\xff\xfe not utf-8",
    b'[{"event": "recording.started"}]',
    event_body("recording.deleted"),
    json.dumps({"event": "recording.completed", "data": {
        "call_id": "c", "recording_id": "r", "completed_at": "2024-01-15T10:36:00Z"}}).encode(),
    event_body("recording.completed", checksum={"algorithm": "md5", "value": "0" * 32}),
    event_body("recording.started", started_at="yesterday"),
], ids=["truncated json", "not utf-8", "json list", "unknown event", "completed without checksum",
        "md5 checksum", "bad timestamp"])
def test_signed_bodies_that_are_not_audian_events_get_400(base_url, store, body):
    answer = deliver(base_url, body, msg_id="msg_400")
    assert answer.status_code == 400
    assert set(answer.json()) == {"error", "message"}
    assert store.count() == 0


def test_a_body_over_the_limit_gets_413_by_content_length(base_url, store):
    body = event_body(padding="x" * LIMIT)
    answer = deliver(base_url, body, msg_id="msg_big")
    assert answer.status_code == 413
    assert answer.json()["error"] == "payload_too_large"
    assert store.count() == 0


def test_a_chunked_body_is_cut_off_at_the_limit(base_url, store):
    """No Content-Length to check first: the limit must hold while the body streams in."""
    body = event_body(padding="x" * LIMIT)
    chunks = (body[i:i + 16384] for i in range(0, len(body), 16384))
    sent = headers(body, msg_id="msg_chunked")
    answer = requests.post(base_url + PATH, data=chunks, headers=sent, timeout=10)
    assert answer.status_code == 413
    assert store.count() == 0


def test_a_body_just_under_the_limit_is_accepted(store):
    body = event_body()
    with serve_app(create_app(store, SECRET, max_body_bytes=len(body))) as url:
        assert deliver(url, body).status_code == 200
        assert deliver(url, body + b" ", msg_id="msg_2").status_code == 413
    assert store.count() == 1


def test_rejections_are_logged_without_secret_or_body(base_url, store, caplog):
    caplog.set_level(logging.INFO, logger="audian_pipeline.webhooks")
    body = event_body("recording.completed", "rec_secret_body_marker")
    deliver(base_url, body, msg_id="msg_log_1", secret=OTHER_SECRET)
    deliver(base_url, body, msg_id="msg_log_2", timestamp=int(time.time()) - 400)
    deliver(base_url, b'{"event": "recording.nope", "data": {"body_marker": 1}}', msg_id="msg_log_3")
    deliver(base_url, event_body(padding="y" * LIMIT), msg_id="msg_log_4")
    rejections = [r for r in caplog.records if r.name == "audian_pipeline.webhooks"]
    assert [r.levelno for r in rejections] == [logging.WARNING] * 4
    text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for msg_id in ("msg_log_1", "msg_log_2", "msg_log_3", "msg_log_4"):
        assert msg_id in text
    for secret_part in (SECRET, SECRET.removeprefix("whsec_"), OTHER_SECRET.removeprefix("whsec_")):
        assert secret_part not in text
    assert "rec_secret_body_marker" not in text and "body_marker" not in text
    assert store.count() == 0


def test_concurrent_deliveries_are_each_stored_once(base_url, store):
    threads, per_thread = 8, 100
    statuses: list[int] = []

    def sender(worker: int) -> None:
        with requests.Session() as session:
            for n in range(per_thread):
                body = event_body("recording.started", f"rec_{worker}_{n}")
                statuses.append(deliver(base_url, body, session, msg_id=f"msg_{worker}_{n}").status_code)

    workers = [threading.Thread(target=sender, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert statuses == [200] * threads * per_thread
    stored = store.events_after(0)
    assert len(stored) == threads * per_thread
    expected = {f"msg_{w}_{n}" for w in range(threads) for n in range(per_thread)}
    assert {e.webhook_id for e in stored} == expected
    assert [e.seq for e in stored] == list(range(1, threads * per_thread + 1))


_SERVE = (
    "import os, sys; from pathlib import Path; "
    "from audian_pipeline.webhooks.receiver import serve; "
    "serve('127.0.0.1', int(sys.argv[1]), str(Path(sys.argv[2]) / 'events' / 'events.sqlite3'), "
    "os.environ['AUDIAN_WEBHOOK_SECRET'])"
)


def _serve_code(port: int, data_dir: Path) -> str:
    return f"import sys; sys.argv = ['serve', {str(port)!r}, {str(data_dir)!r}]; " + _SERVE


def test_acknowledged_events_survive_a_sigkill(tmp_path: Path):
    events, acknowledged = 100, []
    port = free_port()
    env = {"AUDIAN_WEBHOOK_SECRET": SECRET}
    with serve_subprocess(_serve_code(port, tmp_path), port, env) as process:
        with requests.Session() as session:
            for n in range(events):
                answer = deliver(f"http://127.0.0.1:{port}", event_body("recording.started", f"rec_{n}"),
                                 session, msg_id=f"msg_kill_{n}")
                assert answer.status_code == 200
                acknowledged.append(f"msg_kill_{n}")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    port = free_port()
    with serve_subprocess(_serve_code(port, tmp_path), port, env):
        health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
        assert health == {"status": "ok", "events": events, "duplicates": 0}
        with EventStore(tmp_path / "events" / "events.sqlite3") as reader:  # a second process reads
            assert [e.webhook_id for e in reader.events_after(0)] == acknowledged


def test_healthz_and_unknown_routes_answer_json(base_url):
    assert requests.get(base_url + "/healthz", timeout=5).json() == {"status": "ok", "events": 0, "duplicates": 0}
    wrong_method = requests.get(base_url + PATH, timeout=5)
    assert wrong_method.status_code == 405 and set(wrong_method.json()) == {"error", "message"}


def test_a_shorter_tolerance_is_enforced_beyond_the_library(store):
    """The library's window is fixed at 5 minutes; a tighter one must be the receiver's own."""
    with serve_app(create_app(store, SECRET, tolerance_seconds=60)) as url:
        assert deliver(url, event_body(), timestamp=int(time.time()) - 120).status_code == 401
        assert deliver(url, event_body(), timestamp=int(time.time()) - 30).status_code == 200
    assert store.count() == 1


def test_create_app_refuses_bad_settings(store):
    with pytest.raises(ValueError, match="whsec_"):
        create_app(store, "not-a-secret")
    with pytest.raises(ValueError, match="tolerance_seconds"):
        create_app(store, SECRET, tolerance_seconds=600)


def _stored(store: EventStore, msg_id: str, body: bytes) -> None:
    event = RecordingEvent.from_api(json.loads(body))
    store.append(msg_id, event, body, datetime.now(timezone.utc))


def test_store_queries_for_sensors_and_partitions(store):
    _stored(store, "m1", event_body("recording.started", "rec_a", started_at="2024-01-15T23:59:59Z"))
    _stored(store, "m2", event_body("recording.completed", "rec_a", completed_at="2024-01-16T00:00:00Z"))
    _stored(store, "m3", event_body("recording.failed", "rec_b", failed_at="2024-01-16T12:00:00Z",
                                    reason="quota_exceeded"))
    _stored(store, "m4", event_body("recording.completed", "rec_a", completed_at="2024-01-16T00:05:00Z",
                                    checksum={"algorithm": "SHA256", "value": "AB" * 32}))
    day = datetime(2024, 1, 16, tzinfo=timezone.utc)
    between = store.events_between(day, day + timedelta(days=1))
    assert [e.webhook_id for e in between] == ["m2", "m4", "m3"]
    assert [e.webhook_id for e in store.events_after(1, "recording.completed", limit=1)] == ["m2"]
    assert store.checksums(["rec_a", "rec_b", "rec_none"]) == {"rec_a": "ab" * 32}
    assert store.failure_reasons(["rec_a", "rec_b"]) == {"rec_b": "quota_exceeded"}
    assert store.max_seq() == 4
    with pytest.raises(ValueError, match="time zone"):
        store.events_between(datetime(2024, 1, 16), datetime(2024, 1, 17))
