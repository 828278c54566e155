"""The emulator serves the contract, and the client meets it: all over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests
import soundfile

from audian_pipeline.audio.probe import probe
from audian_pipeline.client import errors
from audian_pipeline.client.client import AudianClient
from audian_pipeline.client.models import RECORDING_STATUSES, Page, RecordingEvent
from audian_pipeline.emulator.delivery import event_payload, sign, webhook_id
from audian_pipeline.emulator.faults import FaultConfig
from audian_pipeline.settings import DEMO_API_KEY, DEMO_WEBHOOK_SECRET, SettingError, Settings

H = {"X-Auth-Token": DEMO_API_KEY}


def get(emulator, path: str, **params) -> requests.Response:
    return requests.get(emulator.api_url + path, headers=H, params=params, allow_redirects=False, timeout=10)


# ---- the contract, endpoint by endpoint ---------------------------------------------------------
def test_list_is_newest_first_with_ties_by_id_and_pagination(emulator):
    body = get(emulator, "/v2/recordings", limit=1000).json()
    assert body["pagination"]["limit"] == 200  # clamped
    keys = [(i["created_at"], i["recording_id"]) for i in body["data"]]
    assert keys == sorted(keys, reverse=True)
    assert set(body["data"][0]) == {"recording_id", "call_id", "duration", "file_size", "status", "created_at"}
    assert body["pagination"]["total"] == len(emulator.account.visible())
    assert body["pagination"]["has_more"] is True
    default = get(emulator, "/v2/recordings").json()
    assert default["pagination"]["limit"] == 50 and len(default["data"]) == 50


def test_since_is_inclusive_and_call_id_filters(emulator):
    first = get(emulator, "/v2/recordings", limit=5).json()["data"][3]
    since = get(emulator, "/v2/recordings", since=first["created_at"], limit=200).json()
    assert all(i["created_at"] >= first["created_at"] for i in since["data"])
    assert first["recording_id"] in {i["recording_id"] for i in since["data"]}
    by_call = get(emulator, "/v2/recordings", call_id=first["call_id"]).json()
    assert {i["call_id"] for i in by_call["data"]} == {first["call_id"]}


def test_every_state_format_and_deletion_at_retention(emulator):
    now = emulator.account.now()
    listed = emulator.account.visible()
    assert {r.status_at(now) for r in listed} == set(RECORDING_STATUSES)
    assert {r.file_format for r in listed} == {"mp3", "wav", "opus"}
    assert {r.participant for r in listed} == {"all", "caller", "callee"}
    old = [r for r in emulator.account.recordings.values() if r.created_at < now - timedelta(days=30)]
    assert old, "a 35-day account has recordings past retention"
    assert get(emulator, f"/v2/recordings/{old[0].recording_id}").status_code == 404
    assert all(i.created_at >= now - timedelta(days=30) for i in listed)


def test_detail_has_file_fields(emulator, client):
    rec = next(r for r in emulator.account.visible() if r.status_at(emulator.account.now()) == "completed")
    detail = client.get_recording(rec.recording_id)
    assert (detail.file_format, detail.sample_rate, detail.channels, detail.bitrate) == (
        rec.file_format, rec.sample_rate, rec.channels, rec.bitrate)
    assert detail.completed_at is not None and detail.file_size == rec.file_size > 0
    processing = next(r for r in emulator.account.visible() if r.status_at(emulator.account.now()) == "processing")
    assert client.get_recording(processing.recording_id).completed_at is None


@pytest.mark.parametrize(
    "path, params, status, code",
    [
        ("/v2/recordings", {"limit": "abc"}, 400, "invalid_request"),
        ("/v2/recordings", {"offset": "-1"}, 400, "invalid_request"),
        ("/v2/recordings", {"since": "yesterday"}, 400, "invalid_request"),
        ("/v2/recordings/rec_doesnotexist", {}, 404, "not_found"),
        ("/v2/calls/call_doesnotexist", {}, 404, "not_found"),
    ],
)
def test_errors_have_the_contract_shape(emulator, path, params, status, code):
    answer = get(emulator, path, **params)
    assert answer.status_code == status
    assert answer.json() == {"error": code, "message": answer.json()["message"], "code": status}


def test_auth_accepts_both_headers_and_rejects_others(emulator):
    url = emulator.api_url + "/v2/recordings"
    assert requests.get(url, headers={"Authorization": f"Bearer {DEMO_API_KEY}"}, timeout=5).status_code == 200
    for headers in ({}, {"X-Auth-Token": "wrong"}, {"Authorization": "Bearer wrong"}):
        answer = requests.get(url, headers=headers, timeout=5)
        assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"


def test_calls_and_recording_control_endpoints(fresh_emulator):
    emu = fresh_emulator(seed=5, days=1, per_day=4)
    post = lambda path, body=None: requests.post(emu.api_url + path, headers=H, json=body, timeout=5)  # noqa: E731
    bad = post("/v2/calls", {"from": "+1", "to": "+2", "recording": {"enabled": True, "format": "flac"}})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_format"
    call = post("/v2/calls", {"from": "+14155552671", "to": "+14155552672"}).json()
    started = post(f"/v2/calls/{call['call_id']}/record/start", {"format": "wav", "participant": "all"}).json()
    assert started["status"] == "recording" and started["format"] == "wav"
    assert post(f"/v2/calls/{call['call_id']}/record/pause").json()["status"] == "paused"
    assert post(f"/v2/calls/{call['call_id']}/record/resume").json()["status"] == "recording"
    emu.account.clock.advance(42)
    stopped = post(f"/v2/calls/{call['call_id']}/record/stop").json()
    assert stopped["status"] == "stopped" and stopped["duration"] > 30
    flow = post("/v2/call-flows", {"name": "Support", "phone_number": "+14155552671",
                                   "recording": {"enabled": True, "format": "mp3", "participant": "all"}})
    assert flow.status_code == 201
    deleted = requests.delete(emu.api_url + f"/v2/recordings/{started['recording_id']}", headers=H, timeout=5)
    assert deleted.json()["recording_id"] == started["recording_id"]
    assert get(emu, f"/v2/recordings/{started['recording_id']}").status_code == 404


# ---- downloads ------------------------------------------------------------------------------------
class _Recorder(BaseHTTPRequestHandler):
    """A stand-in storage host that only records the headers it is sent."""

    seen: list[dict] = []

    def do_GET(self):  # noqa: N802
        _Recorder.seen.append(dict(self.headers))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_download_redirect_and_storage_host_never_sees_the_key(emulator, client):
    rec = next(r for r in emulator.account.visible() if r.status_at(emulator.account.now()) == "completed")
    answer = get(emulator, f"/v2/recordings/{rec.recording_id}/download")
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert urlsplit(location).netloc != urlsplit(emulator.api_url).netloc
    # Point the client at a storage host that records what it receives.
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        parts = urlsplit(location)
        spy = urlunsplit((parts.scheme, f"127.0.0.1:{server.server_port}", parts.path, parts.query, ""))
        client._stream(spy, 0, io.BytesIO(), None)
    finally:
        server.shutdown()
    headers = {k.lower(): v for k, v in _Recorder.seen[-1].items()}
    assert "x-auth-token" not in headers and "authorization" not in headers
    assert DEMO_API_KEY not in json.dumps(headers)


def test_signed_url_range_expiry_and_tampering(emulator):
    rec = next(r for r in emulator.account.visible() if r.status_at(emulator.account.now()) == "completed")
    location = get(emulator, f"/v2/recordings/{rec.recording_id}/download").headers["Location"]
    whole = requests.get(location, timeout=10)
    assert whole.status_code == 200 and len(whole.content) == rec.file_size
    assert whole.headers["Content-Type"] in ("audio/mpeg", "audio/wav", "audio/ogg")
    part = requests.get(location, headers={"Range": "bytes=10-19"}, timeout=10)
    assert part.status_code == 206 and part.content == whole.content[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{rec.file_size}"
    parts = urlsplit(location)
    query = parse_qs(parts.query)
    tampered = dict(expires=str(int(query["expires"][0]) + 3600), signature=query["signature"][0])
    assert requests.get(urlunsplit(parts._replace(query=urlencode(tampered))), timeout=5).status_code == 403
    emulator.account.clock.advance(25 * 3600)
    try:
        assert requests.get(location, timeout=5).status_code == 403
    finally:
        emulator.account.clock.advance(-25 * 3600)


@pytest.mark.parametrize("file_format", ["mp3", "wav", "opus"])
def test_audio_is_real_and_matches_the_webhook_checksum(emulator, client, tmp_path, file_format):
    now = emulator.account.now()
    rec = next(r for r in emulator.account.visible()
               if r.file_format == file_format and r.status_at(now) == "completed")
    target = tmp_path / f"{rec.recording_id}.{file_format}"
    digest = hashlib.sha256()
    with open(target, "wb") as sink:
        client.download(rec.recording_id, sink, digest.update)
    payload = event_payload(rec, "recording.completed", rec.finished_at, emulator.api_url,
                            emulator.emulator.audio_cache.sha256(rec.spec))
    assert RecordingEvent.from_api(payload).checksum_sha256 == digest.hexdigest()
    info = soundfile.info(str(target))
    assert info.channels == rec.channels
    assert abs(info.frames / info.samplerate - rec.duration) <= 1.0
    probed = probe(target)
    assert (probed.file_format, probed.sample_rate, probed.channels) == (file_format, rec.sample_rate, rec.channels)


def test_different_recordings_have_different_bytes(emulator):
    now = emulator.account.now()
    completed = [r for r in emulator.account.visible() if r.status_at(now) == "completed"][:20]
    digests = {emulator.emulator.audio_cache.sha256(r.spec) for r in completed}
    assert len(digests) == len(completed)


# ---- webhooks: signed so that an independent Standard Webhooks implementation verifies them ------
def test_emulator_signatures_verify_with_the_reference_implementation():
    from standardwebhooks.webhooks import Webhook

    body = b'{"event":"recording.started","data":{}}'
    ts = int(datetime.now(timezone.utc).timestamp())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts),
               "webhook-signature": sign(DEMO_WEBHOOK_SECRET, "msg_1", ts, body)}
    assert Webhook(DEMO_WEBHOOK_SECRET).verify(body, headers) == json.loads(body)
    # and the spec's published example, by hand
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    expected = base64.b64encode(hmac.new(key, b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}',
                                         hashlib.sha256).digest()).decode()
    assert sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                b'{"test": 2432232314}') == "v1," + expected


def test_webhook_ids_are_stable_per_event(emulator):
    rec = emulator.account.visible()[-1]
    assert webhook_id(rec, "recording.started") == webhook_id(rec, "recording.started")
    assert webhook_id(rec, "recording.started") != webhook_id(rec, "recording.completed")


# ---- client: typed errors, retries, faults --------------------------------------------------------
def test_wrong_key_is_a_typed_error_without_the_key(emulator):
    secret = "sk_live_this_must_never_leak"
    with AudianClient(emulator.api_url, secret, backoff=0.01) as bad:
        with pytest.raises(errors.Unauthorized) as caught:
            bad.list_page()
    assert "AUDIAN_API_KEY" in str(caught.value) and secret not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_not_found_and_unsafe_ids(client):
    with pytest.raises(errors.NotFound):
        client.get_recording("rec_missing")
    with pytest.raises(errors.InvalidRequest):
        client.get_recording("../../etc/passwd")


def test_unreachable_api_is_a_clear_error():
    with AudianClient("http://127.0.0.1:9", DEMO_API_KEY, retries=1, backoff=0.01) as offline:
        with pytest.raises(errors.Unreachable, match="AUDIAN_API_URL"):
            offline.list_page()


def test_client_pages_by_the_applied_limit(client, emulator):
    page = client.list_page(limit=10_000)
    assert isinstance(page, Page) and page.limit == 200 and len(page.items) == 200


def test_every_fault_is_survived_by_the_client(fresh_emulator, tmp_path):
    faults = FaultConfig(server_error=0.3, rate_limited=0.2, latency_ms=5, cut=0.5, retry_after_seconds=1)
    emu = fresh_emulator(seed=21, days=2, per_day=10, faults=faults)
    with AudianClient(emu.api_url, DEMO_API_KEY, backoff=0.01) as c:
        items = []
        offset = 0
        while True:
            page = c.list_page(limit=7, offset=offset)
            items += page.items
            offset += page.limit
            if not page.has_more:
                break
        now = emu.account.now()
        completed = [r for r in emu.account.visible() if r.status_at(now) == "completed"][:6]
        for rec in completed:
            digest = hashlib.sha256()
            result = c.download(rec.recording_id, io.BytesIO(), digest.update)
            assert digest.hexdigest() == emu.emulator.audio_cache.sha256(rec.spec)
            assert result.bytes_written == rec.file_size
    injected = emu.faults.snapshot()["injected"]
    assert injected.get("server_error") and injected.get("rate_limited") and injected.get("cut")
    assert len(items) == len(emu.account.visible()) and c.stats["retries"] > 0


def test_quota_exceeded_is_final_and_typed(fresh_emulator):
    """A full account answers record/start with 429 quota_exceeded and no Retry-After: the
    client must not retry it, and raises QuotaExceeded."""
    emu = fresh_emulator(seed=2, days=1, per_day=2, quota_bytes=1)
    call_id = next(iter(emu.account.calls))
    with AudianClient(emu.api_url, DEMO_API_KEY, backoff=0.01) as c:
        with pytest.raises(errors.QuotaExceeded, match="quota"):
            c._request("POST", f"/v2/calls/{call_id}/record/start", "control", json_body={"format": "mp3"})
        assert c.stats["retries"] == 0


def test_corrupted_bytes_change_the_checksum(fresh_emulator):
    emu = fresh_emulator(seed=4, days=1, per_day=20, faults=FaultConfig(corrupt=1.0))
    rec = next(r for r in emu.account.visible() if r.status_at(emu.account.now()) == "completed")
    with AudianClient(emu.api_url, DEMO_API_KEY) as c:
        digest = hashlib.sha256()
        c.download(rec.recording_id, io.BytesIO(), digest.update)
    assert digest.hexdigest() != emu.emulator.audio_cache.sha256(rec.spec)


# ---- settings -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "env, names",
    [
        ({"AUDIAN_API_URL": "ftp://x"}, "AUDIAN_API_URL"),
        ({"AUDIAN_API_URL": "http://h:1/v2"}, "AUDIAN_API_URL"),
        ({"AUDIAN_API_KEY": "key with space"}, "AUDIAN_API_KEY"),
        ({"AUDIAN_WEBHOOK_SECRET": "plain"}, "AUDIAN_WEBHOOK_SECRET"),
        ({"AUDIAN_STORAGE_QUOTA_BYTES": "lots"}, "AUDIAN_STORAGE_QUOTA_BYTES"),
    ],
)
def test_bad_settings_name_the_setting(env, names):
    settings = Settings.from_env(env)  # nothing is read until a command uses it
    with pytest.raises(SettingError, match=names) as caught:
        for name in ("api_url", "api_key", "webhook_secret", "storage_quota_bytes"):
            getattr(settings, name)
    assert "key with space" not in str(caught.value)
