"""Webhook delivery as Audian does it: signed, at least once, out of order, retried.

Signing is written here from the Standard Webhooks spec on purpose, independently of the
`standardwebhooks` package the receiver verifies with, so each side checks the other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import requests
import urllib3

from audian_pipeline.emulator.account import Account, RecordingRecord, iso, stable_hash
from audian_pipeline.emulator.audio import AudioCache
from audian_pipeline.emulator.faults import Faults

log = logging.getLogger("audian_pipeline.emulator.webhooks")


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` under a `whsec_` secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    message = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def webhook_id(rec: RecordingRecord, event: str) -> str:
    return f"msg_{stable_hash('webhook', rec.recording_id, event):016x}"


def event_payload(rec: RecordingRecord, event: str, when: datetime, api_url: str, checksum: str | None) -> dict:
    data: dict = {"call_id": rec.call_id, "recording_id": rec.recording_id}
    if event == "recording.started":
        data["started_at"] = iso(when)
    elif event == "recording.stopped":
        data.update(duration=rec.duration, stopped_at=iso(when))
    elif event == "recording.completed":
        data.update(
            duration=rec.duration,
            file_size=rec.file_size,
            file_format=rec.file_format,
            download_url=f"{api_url}/v2/recordings/{rec.recording_id}/download",
            completed_at=iso(when),
            checksum={"algorithm": "sha256", "value": checksum},
        )
    else:
        data.update(reason=rec.failure_reason, failed_at=iso(when))
    return {"event": event, "data": data}


@dataclass
class DeliveryStats:
    queued: int = 0
    delivered: int = 0
    duplicates: int = 0
    retries: int = 0
    given_up: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("queued", "delivered", "duplicates", "retries", "given_up")}


class WebhookDelivery:
    """Finds events that became due at the emulator's clock and POSTs them to `url`."""

    def __init__(
        self,
        account: Account,
        url: str,
        secret: str,
        faults: Faults,
        api_url: str,
        audio_cache: AudioCache,
        workers: int = 4,
        max_attempts: int = 8,
        poll_seconds: float = 0.5,
        since: datetime | None = None,
    ) -> None:
        """`since`: only events after that instant are delivered, as if the account's webhook URL
        had been set then; a large account's whole history would otherwise be synthesised and
        sent first (the scale benchmark's accounts hold 1.5 million recordings)."""
        self.account, self.url, self.secret, self.faults = account, url, secret, faults
        self.api_url, self.audio_cache = api_url, audio_cache
        self.max_attempts, self.poll_seconds = max_attempts, poll_seconds
        self.stats = DeliveryStats()
        self._unreachable = False
        self._gave_up_before = False
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._delivered_until: datetime | None = since
        self._session = requests.Session()
        self._rng = random.Random(stable_hash(account.seed, "delivery"))
        self._threads = [threading.Thread(target=self._scan_loop, daemon=True, name="webhook-scan")]
        self._threads += [threading.Thread(target=self._send_loop, daemon=True, name=f"webhook-send-{i}")
                          for i in range(workers)]

    def start(self) -> "WebhookDelivery":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """True once every event due so far was delivered or given up on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.scan()
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.05)
        return False

    def scan(self) -> None:
        """Queue the events that became due since the last scan. Walking the account costs
        O(recordings), so a clock that has not moved (a frozen emulator) costs nothing."""
        with self.stats.lock:
            now = self.account.now()
            if self._delivered_until is not None and now <= self._delivered_until:
                return
            since, self._delivered_until = self._delivered_until, now
        due = sorted(self.account.events_due(now, since), key=lambda e: (e[0], e[2].recording_id, e[1]))
        batch = []
        for when, event, rec in due:
            checksum = self.audio_cache.sha256(rec.spec) if event == "recording.completed" else None
            body = json.dumps(event_payload(rec, event, when, self.api_url, checksum), separators=(",", ":")).encode()
            batch.append((webhook_id(rec, event), body))
            if self.faults.should("webhook_duplicate", webhook_id(rec, event)):
                batch.append((webhook_id(rec, event), body))
                self.stats.add(duplicates=1)
        self._rng.shuffle(batch)  # unordered delivery, as the contract says
        for item in batch:
            self._queue.put(item)
        self.stats.add(queued=len(batch))

    def _scan_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.scan()
            except Exception:  # keep delivering; a scan error must not kill the thread
                log.exception("webhook scan failed")

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                wid, body = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._deliver(wid, body)
            finally:
                self._queue.task_done()

    def _deliver(self, wid: str, body: bytes) -> None:
        """Up to `max_attempts` answers that are not 2xx (or time out), then give up. While nothing
        listens at the URL at all (a receiver not started yet), the event waits instead, retried
        with back-off up to `UNREACHABLE_BACKOFF_CAP` seconds, however long that takes: the
        webhooks are the only source of checksums, and the emulator and receiver are often
        started by hand one after the other. One log line when that starts, one when it ends."""
        attempt, waits = 0, 0
        while attempt < self.max_attempts:
            status = self._post(wid, body)
            if status is not None and 200 <= status < 300:
                self.stats.add(delivered=1)
                self._set_unreachable(False)
                return
            self.stats.add(retries=1)
            if status is None:
                waits += 1
                delay = min(UNREACHABLE_BACKOFF_CAP, 0.5 * 2 ** min(waits, 8))
            else:
                attempt += 1
                delay = min(5.0, 0.1 * 2**attempt)
            if self._stop.wait(delay):
                return
        self.stats.add(given_up=1)
        self._log_given_up(wid)

    def _post(self, wid: str, body: bytes) -> int | None:
        """The answer's status; 0 for a timeout or a dropped connection; None when nothing listens."""
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": wid,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.secret, wid, timestamp, body),
        }
        try:
            return self._session.post(self.url, data=body, headers=headers, timeout=10).status_code
        except requests.RequestException as exc:
            if _nothing_listens(exc):
                self._set_unreachable(True)
                return None
            return 0

    def _set_unreachable(self, unreachable: bool) -> None:
        with self.stats.lock:
            changed, self._unreachable = self._unreachable != unreachable, unreachable
        if changed and unreachable:
            log.warning("nothing listens at %s yet: holding the webhooks and retrying every %.0f s at most "
                        "(start the receiver: audian-pipeline webhooks)", self.url, UNREACHABLE_BACKOFF_CAP)
        elif changed:
            log.info("%s answers: delivering the held webhooks", self.url)

    def _log_given_up(self, wid: str) -> None:
        """The first give-up says why; the rest are counted in `stats`, not logged one by one."""
        with self.stats.lock:
            first, self._gave_up_before = not self._gave_up_before, True
        if first:
            log.warning("gave up delivering webhook %s to %s after %d attempts (is AUDIAN_WEBHOOK_SECRET the "
                        "receiver's?); later ones are counted, not logged", wid, self.url, self.max_attempts)


UNREACHABLE_BACKOFF_CAP = 10.0


def _nothing_listens(exc: requests.RequestException) -> bool:
    """Connection refused or never established, as opposed to a receiver that answered badly."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, urllib3.exceptions.NewConnectionError)
