"""The HTTP service Audian posts its Standard-Webhooks-signed recording events to.

It only verifies, de-duplicates and appends: a 2xx means the event is committed to the
events store, so Audian's retries (at least once, unordered) cover every other failure. The
checks run cheapest first, so an unsigned flood costs no body reads and no disk:

    Content-Length > limit -> 413, headers missing/malformed or timestamp outside the
    tolerance -> 401, body over the limit while streaming -> 413, no matching signature -> 401,
    not JSON (nesting too deep included) or not an Audian event -> 400, store failure -> 503
    (Audian retries).

Nothing is stored for a rejection, and each one is logged on one line with its reason and the
webhook-id, never the secret or the body; so is a client that leaves before its body arrived.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import json
import logging
import time
from collections import Counter
from datetime import datetime, timezone

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from audian_pipeline.client.models import MalformedResponse, RecordingEvent
from audian_pipeline.settings import check_webhook_secret
from audian_pipeline.sockets import bind
from audian_pipeline.webhooks.server import receiver_server
from audian_pipeline.webhooks.store import BaseEventStore, EventStoreError, open_event_store

log = logging.getLogger("audian_pipeline.webhooks")

LIBRARY_TOLERANCE_SECONDS = 300
"""`standardwebhooks` hard-codes a 5-minute timestamp tolerance inside `verify`."""

MAX_WEBHOOK_ID_LENGTH = 256
_LOGGED_DETAIL_CHARS = 200


class Rejected(Exception):
    """A delivery refused before anything was stored; carries the HTTP answer."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status)


def _check_content_length(request: Request, max_body_bytes: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise Rejected(413, "payload_too_large", f"body is larger than {max_body_bytes} bytes")


def _check_headers(request: Request, tolerance_seconds: int) -> str:
    """Presence and shape of the three headers, and the timestamp window; returns the id.

    The timestamp is checked here, not only by the library, because the library's window is
    fixed at 5 minutes and accepts fractional or exponent forms the spec does not allow.
    """
    webhook_id = request.headers.get("webhook-id", "")
    timestamp = request.headers.get("webhook-timestamp", "")
    if not (webhook_id and timestamp and request.headers.get("webhook-signature")):
        raise Rejected(
            401, "missing_headers", "webhook-id, webhook-timestamp and webhook-signature are required"
        )
    printable = webhook_id.isascii() and webhook_id.isprintable()
    if len(webhook_id) > MAX_WEBHOOK_ID_LENGTH or not printable:
        raise Rejected(401, "bad_headers", "webhook-id is not a short printable ASCII string")
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise Rejected(401, "bad_headers", "webhook-timestamp is not whole Unix seconds")
    skew = int(timestamp) - time.time()
    if abs(skew) > tolerance_seconds:
        which = "in the future" if skew > 0 else "too old"
        message = f"webhook-timestamp is {which} (tolerance {tolerance_seconds} s)"
        raise Rejected(401, "bad_timestamp", message)
    return webhook_id


async def _read_body(request: Request, max_body_bytes: int) -> bytes:
    """The body, refusing to buffer past the limit whatever Content-Length claimed."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:
            raise Rejected(413, "payload_too_large", f"body is larger than {max_body_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _well_formed_signatures(header: str) -> str:
    """Drop entries the library would crash on instead of skipping.

    `Webhook.verify` unpacks `version,signature` and base64-decodes each entry as it goes, so
    one malformed entry (or a double space) raises before a valid entry later in the list is
    tried; keeping only well-formed entries keeps key rotation working.
    """
    kept = []
    for entry in header.split(" "):
        version, comma, signature = entry.partition(",")
        if not (version and comma) or "," in signature:
            continue
        try:
            base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            continue
        kept.append(entry)
    return " ".join(kept)


def _verify_signature(webhook: Webhook, request: Request, body: bytes) -> None:
    signatures = _well_formed_signatures(request.headers["webhook-signature"])
    if not signatures:
        raise Rejected(401, "bad_signature", "webhook-signature has no well-formed entry")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "bad_body", "body is not UTF-8 JSON") from None
    headers = {
        "webhook-id": request.headers["webhook-id"],
        "webhook-timestamp": request.headers["webhook-timestamp"],
        "webhook-signature": signatures,
    }
    try:
        webhook.verify(body, headers, json_parse=False)
    except (WebhookVerificationError, ValueError) as exc:
        raise Rejected(401, "bad_signature", f"signature verification failed: {exc}") from None


def _parse_event(body: bytes) -> RecordingEvent:
    try:
        payload = json.loads(body)
    except ValueError:
        raise Rejected(400, "bad_body", "body is not valid JSON") from None
    except RecursionError:
        raise Rejected(400, "bad_body", "body is JSON nested too deeply to be an Audian event") from None
    try:
        return RecordingEvent.from_api(payload)
    except MalformedResponse as exc:
        raise Rejected(400, "bad_event", f"not a valid Audian event: {exc}") from None


def _log_rejection(rejected: Rejected, webhook_id: str) -> None:
    """Reason and webhook-id only: the message may quote a field, so it is cut short."""
    detail = rejected.message[:_LOGGED_DETAIL_CHARS]
    log.warning(
        "webhook rejected: status=%d error=%s webhook_id=%r detail=%s",
        rejected.status, rejected.error, webhook_id[:MAX_WEBHOOK_ID_LENGTH], detail,
    )


def _abandoned(webhook_id: str) -> Response:
    """The connection closed before the whole body arrived (the client left, or the server cut
    it off at its receipt deadline): an ordinary event on the internet, worth one line."""
    log.info("webhook abandoned: connection closed before the whole body arrived, webhook_id=%r",
             webhook_id[:MAX_WEBHOOK_ID_LENGTH])
    return _error(400, "incomplete_body", "the connection closed before the whole body arrived")


def _check_tolerance(tolerance_seconds: int) -> None:
    if not 0 < tolerance_seconds <= LIBRARY_TOLERANCE_SECONDS:
        raise ValueError(
            f"tolerance_seconds must be between 1 and {LIBRARY_TOLERANCE_SECONDS}: the "
            "standardwebhooks library rejects anything older than 5 minutes regardless"
        )


def create_app(
    store: BaseEventStore,
    secret: str,
    tolerance_seconds: int = 300,
    max_body_bytes: int = 256 * 1024,
) -> Starlette:
    """The receiver app: `POST /webhooks/audian` and `GET /healthz`.

    The secret is validated here (whsec_<base64>, at least 16 bytes) so a wrong one fails at
    start rather than as a 401 on every delivery.
    """
    _check_tolerance(tolerance_seconds)
    webhook = Webhook(check_webhook_secret(secret))
    duplicates: Counter[str] = Counter()

    async def receive(request: Request) -> Response:
        webhook_id = request.headers.get("webhook-id", "")
        try:
            _check_content_length(request, max_body_bytes)
            _check_headers(request, tolerance_seconds)
            body = await _read_body(request, max_body_bytes)
            _verify_signature(webhook, request, body)
            event = _parse_event(body)
        except Rejected as rejected:
            _log_rejection(rejected, webhook_id)
            return _error(rejected.status, rejected.error, rejected.message)
        except ClientDisconnect:
            return _abandoned(webhook_id)
        return await _store(store, webhook_id, event, body, duplicates)

    async def healthz(request: Request) -> Response:
        count = await run_in_threadpool(store.count)
        return JSONResponse({"status": "ok", "events": count, "duplicates": duplicates["duplicates"]})

    return Starlette(
        routes=[
            Route("/webhooks/audian", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 in the same JSON shape as every other error answer."""
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": f"http_{exc.status_code}", "message": str(exc.detail)},
        status_code=exc.status_code, headers=exc.headers,
    )


async def _store(
    store: BaseEventStore, webhook_id: str, event: RecordingEvent, body: bytes, duplicates: Counter[str]
) -> Response:
    """Append in a worker thread (the store blocks) and answer only once it is committed.

    A duplicate is the normal at-least-once delivery at work: counted (`GET /healthz`) and
    logged at DEBUG, not a line per retry on the terminal."""
    received_at = datetime.now(timezone.utc)
    try:
        new = await run_in_threadpool(store.append, webhook_id, event, body, received_at)
    except EventStoreError as exc:
        log.error("webhook not stored: webhook_id=%r store error: %s", webhook_id, exc)
        return _error(503, "store_unavailable", "the event could not be stored; retry later")
    if not new:
        duplicates["duplicates"] += 1
        log.debug("webhook duplicate: webhook_id=%r already stored", webhook_id)
    return JSONResponse({"status": "stored" if new else "duplicate"})


def _log_config() -> dict:
    """uvicorn's logging, extended to this package's logger so its lines reach the console."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["audian_pipeline"] = {
        "handlers": ["default"], "level": "INFO", "propagate": False,
    }
    return config


def serve(host: str, port: int, events_db: str, secret: str) -> None:
    """Run the receiver until stopped, storing events at `events_db` (AUDIAN_EVENTS_DB: a path
    for SQLite, a postgresql:// URL for a store that several receivers share).

    uvicorn's access log names method, path and status only, never a body or a header.
    """
    sock = bind(host, port)  # a port in use fails here, in one line
    store = open_event_store(events_db)
    try:
        app = create_app(store, secret)
        server = receiver_server(app, log_level="info", log_config=_log_config())
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C once shut down
            server.run(sockets=[sock])
    finally:
        store.close()
        sock.close()
