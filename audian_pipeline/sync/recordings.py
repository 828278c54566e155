"""The recordings index: one UTC day of Audian's list, merged into the day's stored partition.

Only recordings that are new or whose listed fields changed need their detail; the others keep
the detail already stored. For a recording listed as `completed`, its `recording.completed`
webhook already carries the detail's file format, size, duration and completed_at, so where the
events store holds one that agrees with the list, the row is filled from it and the detail call
is saved (one request of about four per archived recording). bitrate, sample_rate and channels
then stay null (`detail_source = 'webhook'`): the archive's probe of the file measures them. A
recording listed as `failed` whose `recording.failed` event is stored needs no detail either: it
has no file, and the event holds its reason.
Rows Audian no longer lists are kept and marked `deleted_at`: past retention the lake is the
only copy left.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from audian_pipeline.client.client import AudianClient, fetch_each
from audian_pipeline.client.errors import InvalidRequest, NotFound
from audian_pipeline.client.models import FILE_FORMATS, Recording, RecordingEvent, RecordingSummary
from audian_pipeline.client.paging import WindowListing, list_window
from audian_pipeline.lake.days import day_bounds
from audian_pipeline.lake.parquet import read_rows, to_table, write_partition
from audian_pipeline.lake.tables import RECORDINGS
from audian_pipeline.settings import RETENTION_DAYS
from audian_pipeline.storage import Store
from audian_pipeline.webhooks.store import StoredEvent, open_existing_event_store

TABLE = RECORDINGS
LISTED_FIELDS = ("recording_id", "call_id", "duration", "file_size", "status", "created_at")


@dataclass
class DaySync:
    """What syncing one day did, for metadata and tests."""

    day: date
    path: str
    """The partition's local path or s3:// URL."""
    rows: int
    bytes_written: int
    new: int
    changed: int
    marked_deleted: int
    detail_calls: int
    listing: WindowListing
    details_from_webhook: int = 0
    """New or changed completed recordings filled from their recording.completed event instead."""
    rows_by_status: dict[str, int] = field(default_factory=dict)

    @property
    def list_calls(self) -> int:
        return self.listing.list_calls


def _listed(row: dict) -> tuple:
    return tuple(row[name] for name in LISTED_FIELDS)


def _without_file(summary: RecordingSummary) -> Recording:
    """The listed fields, and none of the file's: what a webhook-described detail starts from."""
    return Recording(**{f.name: getattr(summary, f.name) for f in fields(RecordingSummary)},
                     file_format=None, bitrate=None, sample_rate=None, channels=None, completed_at=None)


def _from_completed(summary: RecordingSummary, stored: StoredEvent) -> Recording | None:
    """The detail as the recording.completed event gives it, or None where the detail call is
    still needed: the event lacks a file field or disagrees with the list on a field both carry.
    Then neither is trusted and Audian's own detail decides, so a bad event can never stand in
    for the size the archive checks the download against."""
    try:
        event = RecordingEvent.from_api(json.loads(stored.payload))
    except ValueError:
        return None
    if event.file_format not in FILE_FORMATS or event.file_size is None or event.duration is None:
        return None
    if (event.file_size, event.duration) != (summary.file_size, summary.duration):
        return None
    return replace(_without_file(summary), file_format=event.file_format, completed_at=event.occurred_at)


def _from_failed(summary: RecordingSummary, stored: StoredEvent) -> Recording:
    """A failed recording never gets a file: its detail adds only the format it would have had, so
    the list's fields and the recording.failed event (its reason stays in recording_events)
    describe it whole."""
    return _without_file(summary)


_FROM_EVENT = {"completed": ("recording.completed", _from_completed), "failed": ("recording.failed", _from_failed)}
"""A listed status whose detail its webhook can stand in for: the event to look for, and how."""


def _details_from_webhooks(events_db: str | None, stale: list[RecordingSummary]) -> dict[str, Recording]:
    """Details for the stale recordings listed as completed or failed whose stored event is of the
    same call, from the events store (one query per status)."""
    settled = [s for s in stale if s.status in _FROM_EVENT]
    store = open_existing_event_store(events_db) if events_db and settled else None
    if store is None:
        return {}
    found: dict[str, Recording] = {}
    with store:
        for status, (event_type, describe) in _FROM_EVENT.items():
            listed = {s.recording_id: s for s in settled if s.status == status}
            events = store.latest_events(event_type, list(listed)) if listed else {}
            for rid, summary in listed.items():
                stored = events.get(rid)
                detail = describe(summary, stored) if stored and stored.call_id == summary.call_id else None
                if detail is not None:
                    found[rid] = detail
    return found


def _row(summary: RecordingSummary, detail: Recording | None, previous: dict | None, now: datetime,
         source: str = "api") -> dict:
    row = dict(previous or {})
    row.update({name: getattr(summary, name) for name in LISTED_FIELDS})
    if detail is not None:
        row.update(
            status=detail.status, duration=detail.duration, file_size=detail.file_size,
            file_format=detail.file_format, bitrate=detail.bitrate, sample_rate=detail.sample_rate,
            channels=detail.channels, completed_at=detail.completed_at, detail_fetched_at=now,
            detail_source=source,
        )
    elif row.get("detail_fetched_at") is not None and row.get("detail_source") is None:
        row["detail_source"] = "api"  # stored before the column existed: only the API gave details then
    row["expires_at"] = summary.created_at + timedelta(days=RETENTION_DAYS)
    row.setdefault("first_seen_at", now)
    row["last_seen_at"] = now
    row["deleted_at"] = None
    return row


def sync_day(
    client: AudianClient,
    lake: Path | Store,
    day: date,
    *,
    now: datetime | None = None,
    concurrency: int = 16,
    list_limit: int = 200,
    events_db: str | None = None,
) -> DaySync:
    """`events_db` is AUDIAN_EVENTS_DB's value; None (or no store yet) makes every detail a call."""
    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    start, end = day_bounds(day)
    stored = {row["recording_id"]: row for row in read_rows(lake, TABLE, day)}
    listing = list_window(client, start, end, list_limit)

    stale = [s for s in listing.recordings
             if s.recording_id not in stored or _listed(stored[s.recording_id]) != s.listed_fields()]
    from_webhook = _details_from_webhooks(events_db, stale)
    # NotFound: deleted between the list and the detail call. InvalidRequest: an ID the client
    # will not put in a URL; the row keeps the listed fields and the archive calls it unsafe_id.
    calls = [r.recording_id for r in stale if r.recording_id not in from_webhook]
    details = fetch_each(client.get_recording, calls, concurrency, tolerate=(NotFound, InvalidRequest))

    rows: dict[str, dict] = {}
    for summary in listing.recordings:
        rid = summary.recording_id
        detail = details.get(rid)
        if rid in from_webhook:
            rows[rid] = _row(summary, from_webhook[rid], stored.get(rid), now, "webhook")
        else:
            rows[rid] = _row(summary, detail if isinstance(detail, Recording) else None, stored.get(rid), now)
        if isinstance(detail, NotFound):
            rows[rid]["deleted_at"] = now
    marked = 0
    for rid, previous in stored.items():
        if rid not in rows:
            kept = dict(previous)
            if kept.get("deleted_at") is None:
                kept["deleted_at"] = now
                marked += 1
            rows[rid] = kept

    ordered = sorted(rows.values(), key=lambda r: (r["created_at"], r["recording_id"]), reverse=True)
    path, size = write_partition(lake, TABLE, day, to_table(TABLE, ordered))
    new = sum(1 for s in stale if s.recording_id not in stored)
    return DaySync(
        day=day, path=path, rows=len(ordered), bytes_written=size, new=new, changed=len(stale) - new,
        marked_deleted=marked, detail_calls=len(calls), listing=listing, details_from_webhook=len(from_webhook),
        rows_by_status=dict(Counter("deleted" if r["deleted_at"] else r["status"] for r in ordered)),
    )

