"""Stored webhook events to the lake: one `recording_events` partition per UTC day of the event.

The day is the event's own time (`occurred_at`), not its arrival: Audian delivers late and
unordered, so a retry that lands tomorrow still belongs to the day it happened, and rewriting
a day later picks it up. A partition is the whole day read again from the store, so writing
it twice gives the same rows, whatever arrived in between for other days.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Iterable

from audian_pipeline.lake.days import day_bounds
from audian_pipeline.lake.parquet import to_table, write_partition
from audian_pipeline.lake.tables import RECORDING_EVENTS
from audian_pipeline.storage import Store
from audian_pipeline.webhooks.store import StoredEvent, open_existing_event_store

TABLE = RECORDING_EVENTS


@dataclass
class EventsDay:
    """What writing one day did, for metadata and tests."""

    day: date
    path: str
    """The partition's local path or s3:// URL."""
    rows: int
    bytes_written: int
    store_found: bool
    """False when the receiver has never stored an event: the partition is written empty."""
    rows_by_event: dict[str, int] = field(default_factory=dict)
    recording_ids: set[str] = field(default_factory=set)
    latest_received_at: datetime | None = None


def event_rows(events: Iterable[StoredEvent]) -> list[dict]:
    """One row per webhook_id, ordered by (occurred_at, webhook_id) so the bytes are stable.

    The store is already unique on webhook_id; de-duplicating again here keeps the lake's
    promise even if rows ever come from more than one store. The first copy wins, as in the
    store.
    """
    rows: dict[str, dict] = {}
    for event in events:
        rows.setdefault(event.webhook_id, {
            "webhook_id": event.webhook_id,
            "event": event.event,
            "recording_id": event.recording_id,
            "call_id": event.call_id,
            "occurred_at": event.occurred_at,
            "received_at": event.received_at,
            "reason": event.reason,
            "checksum_sha256": event.checksum_sha256,
            "download_url": event.download_url,
            "payload": event.payload,
        })
    return sorted(rows.values(), key=lambda row: (row["occurred_at"], row["webhook_id"]))


def read_day(events_db: str, day: date) -> list[StoredEvent] | None:
    """The day's stored events, or None when there is no store yet.

    None rather than creating it: only the receiver should decide where and when its store
    comes to life (`open_existing_event_store`).
    """
    store = open_existing_event_store(events_db)
    if store is None:
        return None
    start, end = day_bounds(day)
    with store:
        return store.events_between(start, end)


def write_events_day(lake: Path | Store, day: date, events_db: str) -> EventsDay:
    """Rewrite the day's `recording_events` partition from the events store at `events_db`
    (AUDIAN_EVENTS_DB: a path or a postgresql:// URL)."""
    events = read_day(events_db, day)
    rows = event_rows(events or [])
    path, size = write_partition(lake, TABLE, day, to_table(TABLE, rows))
    return EventsDay(
        day=day,
        path=path,
        rows=len(rows),
        bytes_written=size,
        store_found=events is not None,
        rows_by_event=dict(sorted(Counter(row["event"] for row in rows).items())),
        recording_ids={row["recording_id"] for row in rows},
        latest_received_at=max((row["received_at"] for row in rows), default=None),
    )
