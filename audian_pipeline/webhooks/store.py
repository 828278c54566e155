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

The same store on Postgres (`postgres_store.py`) keeps these promises for receivers, sensors and
workers on several machines; `open_event_store` picks the engine from AUDIAN_EVENTS_DB, a path
or a `postgresql://` URL, and is the one place every reader and writer opens the store.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit, urlunsplit

from audian_pipeline.client.models import RecordingEvent

BUSY_TIMEOUT_MS = 30_000
"""How long a write waits for another process's write lock before failing."""

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
CREATE INDEX IF NOT EXISTS events_occurred_at ON events (occurred_at);
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


class EventStoreError(Exception):
    """The store could not take or give events (disk full, database unreachable): the receiver
    answers 503 and Audian retries; a sensor tick or a step fails and runs again."""


class BaseEventStore:
    """The store's queries, written once for both engines.

    A subclass gives `_query` (rows of a read) and `_insert` (one committed append); the SQL
    here uses `?` placeholders and `{table}` for the table's name, which each engine adapts.
    """

    table = "events"
    location = ""
    """Where the store is, as shown to people: a path, or a URL without its password."""

    def _query(self, sql: str, params: Iterable = ()) -> list[tuple]:
        raise NotImplementedError

    def _insert(self, row: tuple) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "BaseEventStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(
        self, webhook_id: str, event: RecordingEvent, payload: bytes, received_at: datetime
    ) -> bool:
        """Store one event; True if new, False if this webhook-id is already stored.

        The row is committed durably when this returns, so the caller may acknowledge the
        delivery. A retry of a stored event changes nothing: the first copy wins, as Audian
        resends the same body under the same id. Raises `EventStoreError` when it cannot.
        """
        row = (
            webhook_id, event.event, event.recording_id, event.call_id,
            utc_text(event.occurred_at), utc_text(received_at), event.reason,
            event.checksum_sha256, event.download_url, payload.decode("utf-8"),
        )
        return self._insert(row)

    def _insert_sql(self) -> str:
        return (
            f"INSERT INTO {self.table} (webhook_id, event, recording_id, call_id, occurred_at, "
            "received_at, reason, checksum_sha256, download_url, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (webhook_id) DO NOTHING"
        )

    def events_after(
        self, seq: int, event_type: str | None = None, limit: int | None = None
    ) -> list[StoredEvent]:
        """Events with `seq` greater than the cursor, oldest first: the sensor's next batch."""
        sql = f"SELECT {_COLUMNS} FROM {self.table} WHERE seq > ?"
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
            f"SELECT {_COLUMNS} FROM {self.table} WHERE occurred_at >= ? AND occurred_at < ? "
            "ORDER BY occurred_at, seq",
            (utc_text(start), utc_text(end)),
        )
        return [_row_to_event(row) for row in rows]

    def _any_recording_id(self, recording_ids: list[str]) -> tuple[str, object]:
        """A condition matching `recording_id` against the whole set, bound as ONE parameter, so a
        day's lookup is one query however many recordings it has (no bound-variable limit)."""
        raise NotImplementedError

    def _latest(self, columns: str, event_type: str, recording_ids: Iterable[str],
                extra_condition: str = "") -> list[tuple]:
        """`columns` of every `event_type` event of these recordings, oldest first (by occurred_at,
        then seq), so that building a dict from the rows keeps each recording's latest. One query.

        Audian should send one completed or failed event per recording; if it sends two that
        differ, the latest one is taken as the current state."""
        unique = sorted(set(recording_ids))
        if not unique:
            return []
        condition, ids = self._any_recording_id(unique)
        return self._query(
            f"SELECT {columns} FROM {self.table} WHERE event = ? AND {condition}{extra_condition} "
            "ORDER BY occurred_at, seq",
            [event_type, ids],
        )

    def _latest_field(self, field: str, event_type: str, recording_ids: Iterable[str]) -> dict[str, str]:
        """recording_id -> `field` of its latest event of this type that carries it."""
        return dict(self._latest(f"recording_id, {field}", event_type, recording_ids, f" AND {field} IS NOT NULL"))

    def latest_events(self, event: str, recording_ids: Iterable[str]) -> dict[str, StoredEvent]:
        """recording_id -> its latest `event`. For `recording.completed` that is the event whose
        checksum `checksums` gives, so a recordings row filled from it and the archive's check
        against it agree. Recordings without one are absent."""
        return {stored.recording_id: stored
                for stored in map(_row_to_event, self._latest(_COLUMNS, event, recording_ids))}

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
        return int(self._query(f"SELECT COALESCE(MAX(seq), 0) FROM {self.table}")[0][0])

    def count(self) -> int:
        """How many events are stored, for the health check."""
        return int(self._query(f"SELECT COUNT(*) FROM {self.table}")[0][0])


class EventStore(BaseEventStore):
    """The SQLite store (the default): the events table behind one connection and a lock.

    One connection shared under a lock, rather than one per thread: SQLite serialises writers
    anyway, and a lock queues threads fairly where SQLite's busy handler would make them sleep
    and retry. Other processes open their own `EventStore`; WAL lets them read while this one
    writes, and `busy_timeout` makes a second writer wait instead of failing at once.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.location = str(self.path)
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

    def _query(self, sql: str, params: Iterable = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def _any_recording_id(self, recording_ids: list[str]) -> tuple[str, object]:
        return "recording_id IN (SELECT value FROM json_each(?))", json.dumps(recording_ids)

    def _insert(self, row: tuple) -> bool:
        """Committed and fsynced (`synchronous=FULL`) when this returns."""
        try:
            with self._lock:
                return self._conn.execute(self._insert_sql(), row).rowcount == 1
        except sqlite3.Error as exc:
            raise EventStoreError(f"events store {self.location}: {exc}") from None


def is_postgres_url(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def shown_location(location: str) -> str:
    """The location as logs and messages may show it: a URL loses its password."""
    if not is_postgres_url(location):
        return location
    parts = urlsplit(location)
    host = parts.hostname or ""
    netloc = (f"{parts.username}@" if parts.username else "") + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def open_event_store(location: str | Path) -> BaseEventStore:
    """The store at AUDIAN_EVENTS_DB's value, created if new: for the receiver, which decides
    where and when the store comes to life. A path is SQLite, `postgresql://` is Postgres."""
    location = str(location)
    if is_postgres_url(location):
        from audian_pipeline.webhooks.postgres_store import PostgresEventStore

        return PostgresEventStore(location)
    return EventStore(Path(location))


def open_existing_event_store(location: str | Path) -> BaseEventStore | None:
    """The store for a reader (assets, sensor), or None while the receiver has stored nothing:
    a reader never creates it, so a wrong setting shows as "no store" rather than a new one."""
    location = str(location)
    if is_postgres_url(location):
        from audian_pipeline.webhooks.postgres_store import PostgresEventStore

        return PostgresEventStore.open_existing(location)
    return EventStore(Path(location)) if Path(location).exists() else None
