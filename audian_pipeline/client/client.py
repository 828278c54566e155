"""The Audian API client: the one module that knows HTTP and Audian's endpoints.

One pooled connection manager, a timeout on every call, and one retry policy (urllib3's
`Retry`): exponential back-off with jitter on connection errors and 5xx, `Retry-After` on
429 `rate_limited`, nothing else retried. Answers become typed models or typed errors.

It speaks urllib3 directly (the pool `requests` itself runs on) rather than through a
`requests.Session`: requests spends about 0.5 ms of CPU per call (a quarter of it re-reading
proxy settings from the environment), which on a 2-core machine capped concurrent detail
calls below a plain sequential loop; urllib3 costs half that. Downloads follow the 302 by
hand on a second pool that carries no Audian header, so the key never reaches the storage
host (requests, for one, forwards custom headers such as `X-Auth-Token` across hosts).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Callable, Mapping, Sequence, TypeVar
from urllib.parse import urlencode, urlsplit

import urllib3
from urllib3.util.retry import Retry

from audian_pipeline import __version__
from audian_pipeline.client import errors
from audian_pipeline.client.limits import RequestLimiter
from audian_pipeline.client.models import Call, Page, Recording, format_timestamp, parse_timestamp
from audian_pipeline.settings import check_api_key, check_api_url

RETRY_STATUSES = (429, 500, 502, 503, 504)
T = TypeVar("T")
_QUERY = re.compile(r"\?[^\s'\"]*")


class RedactQueryStrings(logging.Filter):
    """urllib3 logs each retry with the request's path and query; on the storage host the
    query is the signature of a URL that is a credential for 24 hours. Keep the line, drop it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = _QUERY.sub("?<redacted>", message), None
        return True


logging.getLogger("urllib3.connectionpool").addFilter(RedactQueryStrings())
DOWNLOAD_CHUNK = 1024 * 1024
ERROR_BODY_LIMIT = 64 * 1024


class _AudianRetry(Retry):
    """urllib3's Retry, except that a 429 without Retry-After (quota_exceeded) is final, and a
    Retry-After pauses every request sharing the limiter, not only this one."""

    limiter: RequestLimiter | None = None

    def new(self, **kw: Any) -> "_AudianRetry":
        retry = super().new(**kw)
        retry.limiter = self.limiter
        return retry

    def sleep_for_retry(self, response: urllib3.BaseHTTPResponse) -> bool:
        retry_after = self.get_retry_after(response)
        if retry_after and self.limiter is not None:
            self.limiter.pause(retry_after)
        return super().sleep_for_retry(response)

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if status_code == 429 and not has_retry_after:
            return False
        return super().is_retry(method, status_code, has_retry_after)


def retry_policy(retries: int, backoff: float) -> _AudianRetry:
    return _AudianRetry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        backoff_jitter=backoff,
        backoff_max=30,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD", "DELETE"}),
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
    )


def _pool(pool_size: int, retry: Retry, timeout: urllib3.Timeout, headers: dict[str, str]) -> urllib3.PoolManager:
    return urllib3.PoolManager(num_pools=4, maxsize=pool_size, retries=retry, timeout=timeout,
                               headers={"User-Agent": f"audian-pipeline/{__version__}", **headers})


MAX_INTERRUPTIONS = 64
"""Cuts and refusals one download may survive in all, however much each made progress."""


@dataclass(frozen=True)
class DownloadResult:
    bytes_written: int
    resumed: int
    """How many times a cut connection was resumed with Range."""


class AudianClient:
    """Typed access to Audian's recordings, calls and downloads.

    `stats` counts logical calls by kind (`list`, `detail`, `call`, `download`, ...) and the
    retries urllib3 made under them, so assets can report the requests a run cost.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 6,
        backoff: float = 0.25,
        pool_size: int = 32,
        limiter: RequestLimiter | None = None,
    ) -> None:
        """`limiter`: AUDIAN_API_MAX_CONCURRENCY's slots, held by each request to the API or the
        storage host until its answer is read; None for no limit beyond `pool_size`."""
        self.base_url = check_api_url(base_url)
        self._host = urlsplit(self.base_url).netloc.rsplit("@", 1)[-1]
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._retries = retries
        self.retry = retry_policy(retries, backoff)
        self.retry.limiter = limiter
        self._slot = limiter.slot if limiter is not None else contextlib.nullcontext
        self._api = _pool(pool_size, self.retry, self.timeout,
                          {"X-Auth-Token": check_api_key(api_key), "Accept": "application/json"})
        self._storage = _pool(pool_size, self.retry, self.timeout, {})
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AudianClient({self.base_url!r}, api_key=<redacted>)"

    def close(self) -> None:
        """Also closes the limiter handed in (its Redis connection, if any)."""
        self._api.clear()
        self._storage.clear()
        if self.retry.limiter is not None:
            self.retry.limiter.close()

    def __enter__(self) -> "AudianClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing --------------------------------------------------------------------------
    def _count(self, kind: str, response: urllib3.BaseHTTPResponse | None = None) -> None:
        retried = len(response.retries.history) if response is not None and response.retries else 0
        with self._lock:
            self.stats[kind] += 1
            self.stats["retries"] += retried

    def _request(self, method: str, path: str, kind: str, params: Mapping | None = None,
                 json_body: Any = None) -> urllib3.BaseHTTPResponse:
        url = self.base_url + path + (f"?{urlencode(params)}" if params else "")
        body = headers = None
        if json_body is not None:
            # urllib3 replaces (does not merge) the pool's headers when a request passes its own
            body, headers = json.dumps(json_body).encode(), {**self._api.headers, "Content-Type": "application/json"}
        try:
            with self._slot():
                response = self._api.request(method, url, body=body, headers=headers, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            self._count(kind)
            raise errors.Unreachable(
                f"could not reach Audian at {self._host} for {method} {path} after {self._retries} retries "
                f"({_reason(exc)}); check AUDIAN_API_URL and that the API is up."
            ) from None
        self._count(kind, response)
        if response.status >= 400:
            raise _error_for(response, f"{method} {path}", self._retries)
        return response

    def _json(self, response: urllib3.BaseHTTPResponse, what: str) -> dict:
        try:
            body = json.loads(response.data)
        except ValueError:
            raise errors.MalformedResponse(
                f"{what}: Audian answered {response.status} with a body that is not JSON. {BROKEN_CONTRACT}"
            ) from None
        if not isinstance(body, dict):
            raise errors.MalformedResponse(f"{what}: Audian answered with JSON that is not an object")
        return body

    # ---- recordings --------------------------------------------------------------------------
    def list_page(
        self,
        *,
        since: datetime | None = None,
        call_id: str | None = None,
        limit: int = 200,
        offset: int = 0,
    ) -> Page:
        params: dict = {"limit": limit, "offset": offset}
        if since is not None:
            params["since"] = format_timestamp(since)
        if call_id is not None:
            params["call_id"] = call_id
        response = self._request("GET", "/v2/recordings", "list", params)
        return _parse(Page, self._json(response, "GET /v2/recordings"), "GET /v2/recordings")

    def get_recording(self, recording_id: str) -> Recording:
        path = f"/v2/recordings/{_segment(recording_id)}"
        return _parse(Recording, self._json(self._request("GET", path, "detail"), f"GET {path}"), f"GET {path}")

    def delete_recording(self, recording_id: str) -> datetime:
        path = f"/v2/recordings/{_segment(recording_id)}"
        body = self._json(self._request("DELETE", path, "delete"), f"DELETE {path}")
        return parse_timestamp(body.get("deleted_at"), "deleted_at")

    def get_call(self, call_id: str) -> Call:
        path = f"/v2/calls/{_segment(call_id)}"
        return _parse(Call, self._json(self._request("GET", path, "call"), f"GET {path}"), f"GET {path}")

    # ---- downloads ---------------------------------------------------------------------------
    def download_location(self, recording_id: str) -> str:
        """The signed, temporary storage URL. It is a credential: never log or store it."""
        path = f"/v2/recordings/{_segment(recording_id)}/download"
        response = self._request("GET", path, "download")
        location = response.headers.get("Location")
        if response.status not in (301, 302, 303, 307, 308) or not location:
            raise errors.MalformedResponse(f"GET {path}: expected a 302 to the storage host, got {response.status}")
        return location

    def download(
        self,
        recording_id: str,
        sink: IO[bytes],
        on_chunk: Callable[[bytes], None] | None = None,
        max_resumes: int = 5,
        max_renewals: int = 3,
    ) -> DownloadResult:
        """Stream a recording into `sink`; a cut connection resumes with Range where it stopped.

        A refused URL (403: expired, or refused by a storage host having a bad moment) is
        renewed through the API. The limits count interruptions in a row that brought no new
        byte: a long download over a flaky link, cut (and its URL expired) many times while it
        keeps making progress, still finishes; `MAX_INTERRUPTIONS` bounds the whole. Raises
        `NotFound` when the recording is gone, `StorageError` when the storage host keeps failing.
        """
        url = self.download_location(recording_id)
        written, resumed, renewed = 0, 0, 0
        stalled_cuts, stalled_renewals, progress_at_refusal = 0, 0, -1
        while True:
            try:
                written += self._stream(url, written, sink, on_chunk)
                return DownloadResult(written, resumed)
            except _Cut as cut:
                written += cut.received
                resumed += 1
                stalled_cuts = 0 if cut.received else stalled_cuts + 1
                if stalled_cuts > max_resumes or resumed + renewed > MAX_INTERRUPTIONS:
                    raise errors.StorageError(
                        f"download of {recording_id} was cut {resumed} times; it will be retried on the next run"
                    ) from None
            except _Expired:
                stalled_renewals = 0 if written > progress_at_refusal else stalled_renewals + 1
                progress_at_refusal = written
                if stalled_renewals >= max_renewals or resumed + renewed > MAX_INTERRUPTIONS:
                    raise errors.StorageError(
                        f"the storage host refused the download of {recording_id} (403) {stalled_renewals + 1} "
                        "times, each with a fresh temporary URL; it will be retried on the next run"
                    ) from None
                renewed += 1
                url = self.download_location(recording_id)

    def _stream(self, url: str, start: int, sink: IO[bytes], on_chunk: Callable[[bytes], None] | None) -> int:
        headers = {**self._storage.headers, "Range": f"bytes={start}-"} if start else None
        with self._slot():
            return self._stream_in_slot(url, headers, start, sink, on_chunk)

    def _stream_in_slot(self, url: str, headers: dict | None, start: int, sink: IO[bytes],
                        on_chunk: Callable[[bytes], None] | None) -> int:
        received = 0
        response = None
        try:
            response = self._storage.request("GET", url, headers=headers, preload_content=False, redirect=False)
            self._count("storage", response)
            _check_storage_answer(response, start)
            for chunk in response.stream(DOWNLOAD_CHUNK):
                sink.write(chunk)
                if on_chunk:
                    on_chunk(chunk)
                received += len(chunk)
        except urllib3.exceptions.HTTPError:  # refused, reset, cut short (IncompleteRead), timed out
            raise _Cut(received) from None
        finally:
            if response is not None:
                _hand_back(response)
        return received


BROKEN_CONTRACT = ("Nothing from this answer was stored; run again later, and report it to Audian if it "
                   "persists.")


def _parse(model, body: dict, what: str):
    """A payload that breaks the contract fails with what is wrong, where, and what to do."""
    try:
        return model.from_api(body)
    except errors.MalformedResponse as exc:
        raise errors.MalformedResponse(
            f"{what}: Audian's answer breaks its API contract: {exc}. {BROKEN_CONTRACT}") from None


def fetch_each(
    fetch: Callable[[str], T], ids: Sequence[str], concurrency: int, tolerate: tuple[type[Exception], ...] = ()
) -> dict[str, T | Exception]:
    """`fetch(id)` for every id, `concurrency` at a time over the client's pooled connections.

    An exception of a `tolerate`d kind (say NotFound) stands in for that id's answer, so one
    bad id does not cost the others; any other error fails the whole batch."""

    def one(identifier: str) -> tuple[str, T | Exception]:
        try:
            return identifier, fetch(identifier)
        except tolerate as exc:
            return identifier, exc

    if not ids:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(ids))), thread_name_prefix="fetch") as pool:
        return dict(pool.map(one, ids))


class _Cut(Exception):
    def __init__(self, received: int) -> None:
        self.received = received


class _Expired(Exception):
    pass


def _hand_back(response: urllib3.BaseHTTPResponse) -> None:
    """Return a storage connection to the pool only with its body read to the end.

    A pooled connection whose body was left unread (a 403 or 404 page, a stream abandoned
    because the sink failed) hands those bytes to its next request, which then fails with
    ResponseNotReady and is sent again by urllib3: 504 refused URLs cost 670 storage
    requests. A short error page is read so the connection stays reusable; anything longer,
    or of unknown length, costs the connection instead."""
    remaining = response.length_remaining
    if remaining is not None and remaining <= ERROR_BODY_LIMIT:
        response.drain_conn()
    else:
        response.close()
    response.release_conn()


def _check_storage_answer(response: urllib3.BaseHTTPResponse, start: int) -> None:
    if response.status == 403:
        raise _Expired()
    if response.status == 404:
        raise errors.NotFound("the recording's file is gone from Audian's storage (404)")
    expected = 206 if start else 200
    if response.status != expected:
        raise errors.StorageError(f"the storage host answered {response.status} (expected {expected})")


def _reason(exc: urllib3.exceptions.HTTPError) -> str:
    """The kind of failure, never its text: urllib3 puts the full URL in its messages."""
    inner = getattr(exc, "reason", None)
    return type(inner).__name__ if inner is not None else type(exc).__name__


def _segment(identifier: str) -> str:
    """IDs are opaque: refuse anything that would change the URL's path."""
    if not identifier or any(c in identifier for c in "/?#%\\") or identifier in (".", ".."):
        raise errors.InvalidRequest(f"refusing an Audian ID that is not a plain path segment: {identifier!r}")
    return identifier


def _error_for(response: urllib3.BaseHTTPResponse, what: str, retries: int) -> errors.AudianError:
    status = response.status
    try:
        code = json.loads(response.data).get("error", "")
    except (ValueError, AttributeError):
        code = ""
    if status == 401:
        return errors.Unauthorized(
            f"{what}: Audian rejected the API key (401). Set AUDIAN_API_KEY to a current key of this account.", status
        )
    if status == 404:
        return errors.NotFound(f"{what}: not found (404): deleted, past 30-day retention, or never existed.", status)
    if status == 429 and code == "quota_exceeded":
        return errors.QuotaExceeded(
            f"{what}: the account's recording storage quota is full (429 quota_exceeded); delete archived "
            "recordings or raise the quota with Audian. Retrying does not help.", status
        )
    if status == 429:
        return errors.RateLimited(
            f"{what}: still rate limited after {retries} retries; lower the concurrency or run later.", status)
    if status == 400:
        return errors.InvalidRequest(f"{what}: Audian rejected the request (400 {code or 'invalid_request'}).", status)
    if status >= 500:
        return errors.ServerError(f"{what}: Audian answered {status} after {retries} retries; run again later.", status)
    return errors.AudianError(f"{what}: unexpected answer {status} {code}".strip(), status)
