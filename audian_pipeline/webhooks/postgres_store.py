"""The webhook events store on Postgres: one table shared by receivers, sensors and workers on
several machines, with the SQLite store's promises (see `store.py`).

Durable before a 2xx: `append` returns once its transaction has committed, with
`synchronous_commit=on` forced on the connection whatever the server's default, so the
receiver's answer never outruns the write-ahead log.

`seq` as a cursor needs more care than on SQLite. A `BIGSERIAL` hands out numbers when rows
are inserted, not when they commit: with two receivers, the row numbered 6 can commit before
the row numbered 5, and a sensor that read 6 and moved its cursor there would never see 5.
So every append takes one transaction-scoped advisory lock before it inserts, and holds it
until it commits: numbers are handed out and made visible in the same order. The lock costs
one commit at a time across all receivers, some hundreds a second, against the ~50 events
a second of a million recordings a day.
"""

from __future__ import annotations

import threading
from typing import Iterable

import psycopg2
import psycopg2.extensions

from audian_pipeline.webhooks.store import BaseEventStore, EventStoreError, shown_location

TABLE = "webhook_events"
"""Named for what it holds, so the store can share a database with other tables (Dagster's)."""

APPEND_LOCK = 7_236_846_213_042_106_707
"""The advisory lock key that orders appends (any fixed bigint no other code uses)."""

APPEND_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s)"

CONNECT_TIMEOUT_SECONDS = 10

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq BIGSERIAL PRIMARY KEY,
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
CREATE INDEX IF NOT EXISTS {TABLE}_recording_id ON {TABLE} (recording_id);
CREATE INDEX IF NOT EXISTS {TABLE}_event ON {TABLE} (event);
CREATE INDEX IF NOT EXISTS {TABLE}_occurred_at ON {TABLE} (occurred_at);
"""


class PostgresEventStore(BaseEventStore):
    """The events table behind one connection and a lock, reconnecting after a lost connection.

    Timestamps stay fixed-width UTC text, as on SQLite, so both engines compare and order them
    the same way and one set of queries serves both.
    """

    table = TABLE

    def __init__(self, url: str, create: bool = True) -> None:
        self._url = url
        self.location = shown_location(url)
        self._lock = threading.Lock()
        self._conn: psycopg2.extensions.connection | None = None
        if create:
            self._create_schema()

    @classmethod
    def open_existing(cls, url: str) -> "PostgresEventStore | None":
        """The store if its table exists; None while no receiver has created it."""
        store = cls(url, create=False)
        if store._query("SELECT to_regclass(?)", (TABLE,))[0][0] is None:
            store.close()
            return None
        return store

    def _connect(self) -> psycopg2.extensions.connection:
        try:
            conn = psycopg2.connect(
                self._url, connect_timeout=CONNECT_TIMEOUT_SECONDS, application_name="audian-events",
                options="-c synchronous_commit=on",
            )
        except psycopg2.Error as exc:
            raise EventStoreError(f"events store {self.location} cannot be reached: {_first_line(exc)}") from None
        conn.autocommit = True  # reads see every committed row; appends open their own transaction
        return conn

    def _connection(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _run(self, statements: list[tuple[str, tuple]], transaction: bool = False) -> tuple[list[tuple], int]:
        """Run statements under the lock; returns the last one's rows and row count.

        A broken connection is dropped, so the next call reconnects (Postgres restarted, a
        failover), and the error is ours, one line without the URL's password."""
        conn = self._connection()
        try:
            with conn.cursor() as cursor:
                if transaction:
                    cursor.execute("BEGIN")
                for sql, params in statements:
                    cursor.execute(sql, params)
                rows, count = (cursor.fetchall() if cursor.description else []), cursor.rowcount
                if transaction:
                    cursor.execute("COMMIT")
            return rows, count
        except psycopg2.Error as exc:
            self._discard(conn)
            raise EventStoreError(f"events store {self.location}: {_first_line(exc)}") from None

    def _discard(self, conn: psycopg2.extensions.connection) -> None:
        """Close the connection: a failed transaction is rolled back by Postgres when it goes."""
        self._conn = None
        if not conn.closed:
            conn.close()

    def _create_schema(self) -> None:
        """Under the append lock, so receivers starting together do not race on CREATE TABLE."""
        with self._lock:
            self._run([(APPEND_LOCK_SQL, (APPEND_LOCK,)), (_SCHEMA, ())], transaction=True)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._discard(self._conn)

    def _query(self, sql: str, params: Iterable = ()) -> list[tuple]:
        with self._lock:
            return self._run([(sql.replace("?", "%s"), tuple(params))])[0]

    def _any_recording_id(self, recording_ids: list[str]) -> tuple[str, object]:
        return "recording_id = ANY(?)", list(recording_ids)  # psycopg2 sends a list as a text[]

    def _insert(self, row: tuple) -> bool:
        """Lock, insert, commit: see the module's docstring for why the lock comes first."""
        with self._lock:
            _, inserted = self._run(
                [(APPEND_LOCK_SQL, (APPEND_LOCK,)), (self._insert_sql().replace("?", "%s"), row)],
                transaction=True,
            )
            return inserted == 1


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
