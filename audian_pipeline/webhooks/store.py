"""The durable store of Audian's webhook events: one SQLite file, appended to by the receiver.

Audian delivers at least once and retries until it gets a 2xx, so the receiver must only
acknowledge an event once it is on disk: `append` commits (WAL, `synchronous=FULL`) before it
returns, and de-duplicates on the Standard Webhooks `webhook-id`, which is the same on every
retry. Readers (a Dagster sensor or asset, in another process) see committed rows only.

`seq` is a safe cursor: SQLite serialises writers, so a row with a lower `seq` is always
committed before one with a higher `seq` becomes visible; a reader that remembers the last
`seq` it saw never skips a row.

Timestamps are stored as fixed-width ISO-8601 UTC text (`2024-01-15T10:36:00.000000Z`), so
comparing the text compares the instants and the `occurred_at` range query can use SQL.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from audian_pipeline.client.models import RecordingEvent

BUSY_TIMEOUT_MS = 30_000
"""How long a write waits for another process's write lock before failing."""

_IN_CHUNK = 500
"""Ids per `IN (...)` query: stays under every SQLite build's bound-variable limit."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id TEXT UNIQUE NOT NULL,
    event TEXT,
    recording_id TEXT,
    call_id TEXT,
    occurred_at TEXT,
    received_at TEXT,
    reason TEXT,
    checksum_sha256 TEXT,
    download_url TEXT,
    payload TEXT
);
CREATE INDEX IF NOT EXISTS events_recording_id ON events (recording_id);
CREATE INDEX IF NOT EXISTS events_event ON events (event);
"""

_COLUMNS = (
    "seq, webhook_id, event, recording_id, call_id, occurred_at, received_at, reason, "
    "checksum_sha256, download_url, payload"
)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One stored webhook event; `payload` is the raw JSON body exactly as Audian sent it."""

    seq: int
    webhook_id: str
    event: str
    recording_id: str
    call_id: str
    occurred_at: datetime
    received_at: datetime
    reason: str | None
    checksum_sha256: str | None
    download_url: str | None
    payload: str


def utc_text(value: datetime) -> str:
    """Fixed-width ISO UTC text; a naive datetime is refused rather than guessed at."""
    if value.tzinfo is None:
        raise ValueError(f"datetime without a time zone: {value!r}; pass an aware UTC datetime")
    text = value.astimezone(timezone.utc).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


def _from_text(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _row_to_event(row: tuple) -> StoredEvent:
    values = list(row)
    values[5] = _from_text(values[5])
    values[6] = _from_text(values[6])
    return StoredEvent(*values)


def _chunks(items: Iterable[str]) -> Iterator[list[str]]:
    unique = sorted(set(items))
    for start in range(0, len(unique), _IN_CHUNK):
        yield unique[start:start + _IN_CHUNK]


class EventStore:
    """The events table behind one connection and a lock.

    One connection shared under a lock, rather than one per thread: SQLite serialises writers
    anyway, and a lock queues threads fairly where SQLite's busy handler would make them sleep
    and retry. Other processes open their own `EventStore`; WAL lets them read while this one
    writes, and `busy_timeout` makes a second writer wait instead of failing at once.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.executescript(_SCHEMA)
        return conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "EventStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, params: Iterable = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def append(
        self, webhook_id: str, event: RecordingEvent, payload: bytes, received_at: datetime
    ) -> bool:
        """Store one event; True if new, False if this webhook-id is already stored.

        The row is committed (and fsynced, `synchronous=FULL`) when this returns, so the
        caller may acknowledge the delivery. A retry of a stored event changes nothing: the
        first copy wins, as Audian resends the same body under the same id.
        """
        row = (
            webhook_id, event.event, event.recording_id, event.call_id,
            utc_text(event.occurred_at), utc_text(received_at), event.reason,
            event.checksum_sha256, event.download_url, payload.decode("utf-8"),
        )
        with self._lock:
            cursor = self._conn.execute(
                "INSERT INTO events (webhook_id, event, recording_id, call_id, occurred_at, "
                "received_at, reason, checksum_sha256, download_url, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (webhook_id) DO NOTHING",
                row,
            )
            return cursor.rowcount == 1

    def events_after(
        self, seq: int, event_type: str | None = None, limit: int | None = None
    ) -> list[StoredEvent]:
        """Events with `seq` greater than the cursor, oldest first: the sensor's next batch."""
        sql = f"SELECT {_COLUMNS} FROM events WHERE seq > ?"
        params: list = [seq]
        if event_type is not None:
            sql += " AND event = ?"
            params.append(event_type)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_row_to_event(row) for row in self._query(sql, params)]

    def events_between(self, start: datetime, end: datetime) -> list[StoredEvent]:
        """Events whose own time (`occurred_at`) is in [start, end), for a day partition.

        By occurred_at rather than arrival, because delivery is late and unordered: a retry
        that arrives tomorrow still belongs to the day it happened.
        """
        rows = self._query(
            f"SELECT {_COLUMNS} FROM events WHERE occurred_at >= ? AND occurred_at < ? "
            "ORDER BY occurred_at, seq",
            (utc_text(start), utc_text(end)),
        )
        return [_row_to_event(row) for row in rows]

    def _latest_field(
        self, field: str, event_type: str, recording_ids: Iterable[str]
    ) -> dict[str, str]:
        """recording_id -> `field` of its latest event of this type (by occurred_at, then seq).

        Audian should send one completed or failed event per recording; if it sends two that
        differ, the latest one is taken as the current state.
        """
        result: dict[str, str] = {}
        for chunk in _chunks(recording_ids):
            marks = ", ".join("?" * len(chunk))
            rows = self._query(
                f"SELECT recording_id, {field} FROM events WHERE event = ? "
                f"AND recording_id IN ({marks}) AND {field} IS NOT NULL "
                "ORDER BY occurred_at, seq",
                [event_type, *chunk],
            )
            result.update(rows)
        return result

    def checksums(self, recording_ids: Iterable[str]) -> dict[str, str]:
        """recording_id -> sha256 hex, from recording.completed: the only place Audian gives it.

        A recording without a stored completed event is absent from the result.
        """
        return self._latest_field("checksum_sha256", "recording.completed", recording_ids)

    def failure_reasons(self, recording_ids: Iterable[str]) -> dict[str, str]:
        """recording_id -> failure reason (e.g. `quota_exceeded`), from recording.failed."""
        return self._latest_field("reason", "recording.failed", recording_ids)

    def max_seq(self) -> int:
        """The highest stored seq, 0 when empty: where a new sensor cursor may start."""
        return self._query("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0]

    def count(self) -> int:
        """How many events are stored, for the health check."""
        return self._query("SELECT COUNT(*) FROM events")[0][0]
