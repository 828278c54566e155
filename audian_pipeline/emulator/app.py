"""The emulator's two HTTP listeners: the Audian API and its storage host.

The API host answers every endpoint of Audian's page and of `api-contract.md`; a download is a
302 to the storage host, which serves the audio from signed, 24-hour URLs and knows nothing of
API keys. Both are Starlette apps on uvicorn (see `server.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from audian_pipeline.client.models import FILE_FORMATS, PARTICIPANTS, MalformedResponse, parse_timestamp
from audian_pipeline.emulator.account import Account, CallRecord, RecordingRecord, iso, stable_hash
from audian_pipeline.emulator.audio import AudioCache, content_type
from audian_pipeline.emulator.faults import MALFORMED_KINDS, FaultConfig, Faults
from audian_pipeline.emulator.variations import Variations

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
URL_LIFETIME = timedelta(hours=24)
EXTENSIONS = {"mp3": "mp3", "wav": "wav", "opus": "opus"}
CHUNK = 256 * 1024


def error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, "code": status}, status, headers=headers)


def not_found(what: str = "Recording") -> JSONResponse:
    return error(404, "not_found", f"{what} not found")


def quota_exceeded() -> JSONResponse:
    return error(429, "quota_exceeded", "Recording storage quota exceeded")


class Emulator:
    """Shared state of both listeners: the account, faults, the audio cache and URL signing."""

    def __init__(
        self,
        account: Account,
        api_key: str,
        faults: Faults,
        audio_cache: AudioCache,
        storage_base_url: str,
        signing_key: bytes | None = None,
        quota_bytes: int | None = None,
        variations: Variations | None = None,
    ) -> None:
        self.account = account
        self.variations = variations or Variations()
        self.api_key = api_key
        self.faults = faults
        self.audio_cache = audio_cache
        self.storage_base_url = storage_base_url.rstrip("/")
        self.signing_key = signing_key or hashlib.sha256(f"storage-{account.seed}".encode()).digest()
        self.requests_served = 0
        self.in_flight = 0
        self.max_in_flight = 0
        """Requests to the API and the storage host being answered at once, and the most ever."""
        self.requests_by_kind: Counter[str] = Counter()
        """Requests received per kind (`request_kind`), retries included: what the account paid."""
        self.quota_bytes = quota_bytes
        self.issued_signatures: set[str] = set()
        """Every signature handed out, so tests can search logs and files for them."""
        self.expired_signatures: set[str] = set()
        """URLs expired early: cut mid-download while the `expire_after_cut` variation is on."""

    def quota_full(self) -> bool:
        """Audian's quota is not reported by its API; the emulator enforces one if given."""
        if self.quota_bytes is None:
            return False
        now = self.account.now()
        held = sum(r.file_size for r in self.account.visible(now) if r.status_at(now) == "completed")
        return held >= self.quota_bytes

    # ---- signed storage URLs -------------------------------------------------------------
    def _signature(self, recording_id: str, expires: int, issue: str = "") -> str:
        message = f"{recording_id}|{expires}" + (f"|{issue}" if issue else "")
        return hmac.new(self.signing_key, message.encode(), hashlib.sha256).hexdigest()

    def signed_url(self, rec: RecordingRecord) -> str:
        """With `expire_after_cut`, each URL also carries its issue number, so a renewed URL is a
        new one even on a frozen clock and the expired one stays expired."""
        expires = int((self.account.now() + URL_LIFETIME).timestamp())
        params: dict = {"expires": expires}
        if self.variations.expire_after_cut:
            params["issue"] = str(len(self.issued_signatures))
        signature = self._signature(rec.recording_id, expires, params.get("issue", ""))
        self.issued_signatures.add(signature)
        query = urlencode({**params, "signature": signature})
        return f"{self.storage_base_url}/files/{rec.recording_id}.{EXTENSIONS[rec.file_format]}?{query}"

    def check_signature(self, recording_id: str, expires: str, signature: str, issue: str = "") -> str | None:
        """None if valid, else why not."""
        if not expires.isdigit():
            return "malformed expiry"
        expected = self._signature(recording_id, int(expires), issue)
        if not hmac.compare_digest(expected, signature):
            return "signature does not match"
        if int(expires) < self.account.now().timestamp() or signature in self.expired_signatures:
            return "URL expired"
        return None

    def expire_if_cut(self, signature: str) -> None:
        """A cut download's URL expires before the client can resume it (`expire_after_cut`)."""
        if self.variations.expire_after_cut:
            self.expired_signatures.add(signature)
            self.faults.count("expired_after_cut")

    # ---- API -----------------------------------------------------------------------------
    def authorized(self, request: Request) -> bool:
        token = request.headers.get("x-auth-token")
        if token is None:
            auth = request.headers.get("authorization", "")
            token = auth[7:] if auth.lower().startswith("bearer ") else None
        return token is not None and hmac.compare_digest(token.encode(), self.api_key.encode())

    async def injected_fault(self, request: Request) -> Response | None:
        if self.faults.config.latency_ms:
            await asyncio.sleep(self.faults.config.latency_ms / 1000)
        key = f"{request.method} {request.url.path}?{request.url.query}"
        if self.faults.in_outage():
            return error(503, "server_error", "Service unavailable, retry")
        if self.faults.should("rate_limited", key):
            retry = str(self.faults.config.retry_after_seconds)
            return error(429, "rate_limited", "Too many requests", {"Retry-After": retry})
        if self.faults.should("server_error", key):
            status = (500, 502, 503)[stable_hash(key) % 3]
            return error(status, "server_error", "Transient server error, retry")
        return None


_KINDS = (
    ("GET", re.compile(r"^/v2/recordings/?$"), "list"),
    ("GET", re.compile(r"^/v2/recordings/[^/]+/download$"), "download"),
    ("GET", re.compile(r"^/v2/recordings/[^/]+$"), "detail"),
    ("GET", re.compile(r"^/v2/calls/[^/]+$"), "call"),
    ("GET", re.compile(r"^/files/"), "storage"),
)


def request_kind(method: str, path: str) -> str:
    """The client's names for what a request asks (`AudianClient.stats`), `other` for the rest."""
    for kind_method, pattern, kind in _KINDS:
        if method == kind_method and pattern.match(path):
            return kind
    return "other"


class CountInFlight:
    """ASGI middleware counting Audian requests (API and storage host together) being answered.

    A request stops counting just before its last bytes are sent (by Content-Length: a streamed
    file's client is done before the empty closing message), so a client that has read its
    answer and starts the next request is never counted twice: the emulator's figure is at most
    what the clients had open, and a test of their limit cannot fail on the server's timing."""

    def __init__(self, app, emu: Emulator) -> None:
        self.app, self.emu = app, emu

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_emulator"):
            return await self.app(scope, receive, send)
        emu, counted, unsent = self.emu, [True], [-1]
        emu.requests_by_kind[request_kind(scope["method"], scope["path"])] += 1
        emu.in_flight += 1
        emu.max_in_flight = max(emu.max_in_flight, emu.in_flight)

        def done() -> None:
            if counted[0]:
                counted[0] = False
                emu.in_flight -= 1

        async def send_counted(message) -> None:
            if message["type"] == "http.response.start":
                unsent[0] = int(dict(message.get("headers", [])).get(b"content-length", -1))
            elif message["type"] == "http.response.body":
                if unsent[0] >= 0:
                    unsent[0] -= len(message.get("body", b""))
                if unsent[0] == 0 or not message.get("more_body", False):
                    done()
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            done()


def api_app(emu: Emulator) -> Starlette:
    async def guard(request: Request) -> Response | None:
        emu.requests_served += 1
        if not emu.authorized(request):
            return error(401, "unauthorized", "Missing or invalid API key")
        if request.url.path.startswith("/_emulator"):  # the control plane never fails on purpose
            return None
        return await emu.injected_fault(request)

    def endpoint(handler):
        async def wrapped(request: Request) -> Response:
            early = await guard(request)
            if early is not None:
                return early
            answer = await handler(request)
            key = f"{request.method} {request.url.path}?{request.url.query}"
            if (answer.status_code == 200 and isinstance(answer, JSONResponse) and request.url.path.startswith("/v2/")
                    and emu.faults.should("malformed", key)):
                kind = emu.faults.config.malformed_kind
                return _malformed(answer,
                                  kind or MALFORMED_KINDS[stable_hash(emu.account.seed, key) % len(MALFORMED_KINDS)])
            return answer

        return wrapped

    async def list_recordings(request: Request) -> Response:
        params = request.query_params
        try:
            limit = int(params.get("limit", DEFAULT_LIMIT))
            offset = int(params.get("offset", 0))
        except ValueError:
            return error(400, "invalid_request", "limit and offset must be integers")
        if limit < 1 or offset < 0:
            return error(400, "invalid_request", "limit must be >= 1 and offset >= 0")
        since = None
        if "since" in params:
            try:
                since = parse_timestamp(params["since"], "since")
            except MalformedResponse:
                return error(400, "invalid_request", "since must be an ISO-8601 timestamp such as 2024-01-08T10:30:00Z")
        limit = min(limit, MAX_LIMIT)
        if offset and emu.faults.should("drift", f"list {params.get('since')} {offset}"):
            emu.account.create_recordings(1 + stable_hash(offset) % 3)
        answer = await run_in_threadpool(_list_page, emu.account, emu.variations, since, params.get("call_id"), limit,
                                         offset)
        return JSONResponse(answer)

    async def get_recording(request: Request) -> Response:
        rec = emu.account.get_recording(request.path_params["recording_id"])
        if rec is None:
            return not_found()
        return JSONResponse(emu.variations.detail(rec.to_detail(emu.account.now()), rec.participant))

    async def delete_recording(request: Request) -> Response:
        rec = emu.account.delete(request.path_params["recording_id"])
        if rec is None:
            return not_found()
        return JSONResponse({"recording_id": rec.recording_id, "deleted_at": iso(rec.deleted_at)})

    async def download(request: Request) -> Response:
        rec = emu.account.get_recording(request.path_params["recording_id"])
        if rec is None or rec.status_at(emu.account.now()) != "completed":
            return not_found()
        return RedirectResponse(emu.signed_url(rec), status_code=302)

    async def get_call(request: Request) -> Response:
        call = emu.account.calls.get(request.path_params["call_id"])
        now = emu.account.now()
        if call is None or call.started_at > now or now - call.started_at > timedelta(days=30):
            return not_found("Call")
        return JSONResponse(emu.variations.call(call.to_api(now)))

    async def create_call(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body.get("from"), str) or not isinstance(body.get("to"), str):
            return error(400, "invalid_request", "from and to are required phone numbers")
        recording = body.get("recording") or {}
        bad = _bad_recording_options(recording)
        if bad:
            return bad
        call_id = f"call_{stable_hash(emu.account.seed, 'api-call', body['from'], body['to'], time.time_ns()):016x}"
        now = emu.account.now()
        call = CallRecord(call_id, body["from"], body["to"], "outbound", "completed", None, now, now, None, 0)
        emu.account.calls[call_id] = call
        answer = {"call_id": call_id, "status": "in-progress", "from": body["from"], "to": body["to"]}
        if recording.get("enabled") and emu.quota_full():
            return quota_exceeded()
        if recording.get("enabled"):
            rec = emu.account.start_live_recording(call_id, recording.get("format", "mp3"))
            answer["recording_id"] = rec.recording_id
        return JSONResponse(answer, 201)

    async def record_action(request: Request) -> Response:
        call_id = request.path_params["call_id"]
        action = request.path_params["action"]
        if call_id not in emu.account.calls:
            return not_found("Call")
        if action not in ("start", "stop", "pause", "resume"):
            return not_found("Endpoint")
        live = [
            r for r in emu.account.recordings.values()
            if r.call_id == call_id and r.stopped_by_api and r.stopped_by_api > emu.account.now()
        ]
        now = emu.account.now()
        if action == "start":
            body = await _json_body(request, required=False)
            if isinstance(body, Response):
                return body
            bad = _bad_recording_options(body)
            if bad:
                return bad
            if emu.quota_full():
                return quota_exceeded()
            rec = emu.account.start_live_recording(call_id, body.get("format", "mp3"))
            return JSONResponse({"call_id": call_id, "recording_id": rec.recording_id, "status": "recording",
                                 "started_at": iso(rec.created_at), "format": rec.file_format})
        if not live:
            return error(400, "invalid_request", "No active recording on this call")
        rec = live[-1]
        if action == "stop":
            emu.account.stop_live_recording(rec)
            return JSONResponse({"call_id": call_id, "recording_id": rec.recording_id, "status": "stopped",
                                 "stopped_at": iso(now), "duration": rec.duration})
        rec.paused_by_api = action == "pause"
        status = rec.status_at(now)
        return JSONResponse({"call_id": call_id, "recording_id": rec.recording_id, "status": status})

    async def create_call_flow(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body.get("phone_number"), str):
            return error(400, "invalid_request", "phone_number is required")
        bad = _bad_recording_options(body.get("recording") or {})
        if bad:
            return bad
        flow_id = f"cf_{stable_hash(emu.account.seed, 'flow', body['phone_number']):016x}"
        return JSONResponse({"call_flow_id": flow_id, **body}, 201)

    routes = [
        Route("/v2/recordings", endpoint(list_recordings), methods=["GET"]),
        Route("/v2/recordings/{recording_id}", endpoint(get_recording), methods=["GET"]),
        Route("/v2/recordings/{recording_id}", endpoint(delete_recording), methods=["DELETE"]),
        Route("/v2/recordings/{recording_id}/download", endpoint(download), methods=["GET"]),
        Route("/v2/calls", endpoint(create_call), methods=["POST"]),
        Route("/v2/calls/{call_id}", endpoint(get_call), methods=["GET"]),
        Route("/v2/calls/{call_id}/record/{action}", endpoint(record_action), methods=["POST"]),
        Route("/v2/call-flows", endpoint(create_call_flow), methods=["POST"]),
        *control_routes(emu, endpoint),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(CountInFlight, emu=emu)
    app.add_exception_handler(404, lambda r, e: not_found("Endpoint"))
    app.add_exception_handler(405, lambda r, e: error(405, "invalid_request", "Method not allowed"))
    return app


def _malformed(answer: JSONResponse, kind: str) -> Response:
    """A 200 whose body breaks the contract in one of the ways a real API sometimes does."""
    if kind == "invalid_json":
        return Response(answer.body[: len(answer.body) // 2], media_type="application/json")
    body = json.loads(answer.body)
    target = body["data"][0] if isinstance(body.get("data"), list) and body["data"] else body
    if kind == "missing_field":
        target.pop("created_at", target.pop("call_id", None))
    elif kind == "wrong_type":
        target["duration"] = "three hundred"
    else:
        target["status"] = "archived"
    return JSONResponse(body)


def _list_page(account: Account, variations: Variations, since: datetime | None, call_id: str | None, limit: int,
               offset: int) -> dict:
    now = account.now()
    if call_id is None:
        page, total = account.page(now, since, offset, limit)
    else:
        matching = [r for r in account.visible(now, since) if r.call_id == call_id]
        page, total = matching[offset: offset + limit], len(matching)
    return variations.list_answer({
        "data": [variations.list_item(r.to_list_item(now), r.participant) for r in page],
        "pagination": {"total": total, "limit": limit, "offset": offset, "has_more": offset + len(page) < total},
    })


async def _json_body(request: Request, required: bool = True) -> dict | Response:
    raw = await request.body()
    if not raw and not required:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return error(400, "invalid_request", "Body must be JSON")
    if not isinstance(body, dict):
        return error(400, "invalid_request", "Body must be a JSON object")
    return body


def _bad_recording_options(options: dict) -> Response | None:
    if "format" in options and options["format"] not in FILE_FORMATS:
        return error(400, "invalid_format", "Recording format is not supported")
    if "participant" in options and options["participant"] not in PARTICIPANTS:
        return error(400, "invalid_request", "participant must be all, caller or callee")
    return None


def control_routes(emu: Emulator, endpoint) -> list[Route]:
    """`/_emulator/*`: not Audian's; lets tests and the benchmark steer and inspect the emulator."""

    async def state(request: Request) -> Response:
        now = emu.account.now()
        return JSONResponse({"now": iso(now), "recordings": len(emu.account.visible(now)),
                             "faults": emu.faults.snapshot(), "variations": emu.variations.to_dict(),
                             "requests_served": emu.requests_served, "max_in_flight": emu.max_in_flight,
                             "requests_by_kind": dict(sorted(emu.requests_by_kind.items()))})

    async def advance_clock(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        now = emu.account.clock.advance(float(body.get("seconds", 0)))
        return JSONResponse({"now": iso(now)})

    async def create(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        allowed = {"file_format", "duration", "sample_rate", "channels", "outcome", "recording_id"}
        overrides = {k: v for k, v in body.items() if k in allowed}
        made = emu.account.create_recordings(int(body.get("count", 1)), rng_key="control", **overrides)
        return JSONResponse({"recording_ids": [r.recording_id for r in made]}, 201)

    async def set_faults(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        try:
            emu.faults.replace(FaultConfig(**body))
        except (TypeError, ValueError) as exc:
            return error(400, "invalid_request", str(exc))
        return JSONResponse(emu.faults.snapshot())

    return [
        Route("/_emulator/state", state, methods=["GET"]),
        Route("/_emulator/faults", endpoint(set_faults), methods=["POST"]),
        Route("/_emulator/clock", endpoint(advance_clock), methods=["POST"]),
        Route("/_emulator/recordings", endpoint(create), methods=["POST"]),
    ]


# ---- storage host ------------------------------------------------------------------------
_FILE = re.compile(r"^(?P<rid>[A-Za-z0-9_\-]+)\.(?P<ext>mp3|wav|opus)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def storage_app(emu: Emulator) -> Starlette:
    async def serve_file(request: Request) -> Response:
        match = _FILE.match(request.path_params["name"])
        if not match:
            return error(404, "not_found", "No such file")
        rid, query = match["rid"], request.query_params
        why = emu.check_signature(rid, query.get("expires", ""), query.get("signature", ""), query.get("issue", ""))
        if why is None and emu.faults.should("forbidden", f"{rid} {query.get('signature')}"):
            why = "URL expired"
        if why:
            return error(403, "forbidden", f"Access denied: {why}")
        rec = emu.account.get_recording(rid)
        if rec is None or rec.status_at(emu.account.now()) != "completed":
            return error(404, "not_found", "Recording not found")
        path, _ = await run_in_threadpool(emu.audio_cache.ensure, rec.spec)
        size = rec.file_size
        start, end = 0, size - 1
        status = 200
        headers = {"Accept-Ranges": "bytes", "Content-Type": content_type(rec.file_format)}
        if "range" in request.headers:
            parsed = _parse_range(request.headers["range"], size)
            if parsed is None:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(end - start + 1)
        key = f"{rid} {start}"
        cut_after = (end - start + 1) // 2 if emu.faults.should("cut", key) else None
        if cut_after is not None:
            emu.expire_if_cut(query.get("signature", ""))
        corrupt_at = size // 3 if emu.faults.is_corrupted(rid) else None
        body = _file_chunks(path, start, end, cut_after, corrupt_at)
        return StreamingResponse(body, status_code=status, headers=headers)

    app = Starlette(routes=[Route("/files/{name}", serve_file, methods=["GET"])])
    app.add_middleware(CountInFlight, emu=emu)
    return app


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    match = _RANGE.match(header.strip())
    if not match or (not match[1] and not match[2]):
        return None
    if not match[1]:
        start = max(0, size - int(match[2]))
        return start, size - 1
    start = int(match[1])
    end = min(int(match[2]), size - 1) if match[2] else size - 1
    if start >= size or end < start:
        return None
    return start, end


def _file_chunks(path: Path, start: int, end: int, cut_after: int | None, corrupt_at: int | None) -> Iterator[bytes]:
    """Stream bytes [start, end] of a cached file; cut or corrupt them when a fault says so."""
    sent = 0
    with open(path, "rb") as handle:
        handle.seek(start)
        position = start
        while position <= end:
            chunk = handle.read(min(CHUNK, end - position + 1))
            if not chunk:
                break
            if corrupt_at is not None and position <= corrupt_at < position + len(chunk):
                index = corrupt_at - position
                chunk = chunk[:index] + bytes([chunk[index] ^ 0xFF]) + chunk[index + 1:]
            if cut_after is not None and sent + len(chunk) > cut_after:
                yield chunk[: cut_after - sent]
                raise ConnectionAbortedError("emulator fault: connection cut mid-download")
            yield chunk
            sent += len(chunk)
            position += len(chunk)
