"""The recordings index: one UTC day of Audian's list, merged into the day's stored partition.

Only recordings that are new or whose listed fields changed cost a detail call; the others
keep the detail already stored. Rows Audian no longer lists are kept and marked `deleted_at`:
past retention the lake is the only copy left.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from audian_pipeline.client.client import AudianClient, fetch_each
from audian_pipeline.client.errors import InvalidRequest, NotFound
from audian_pipeline.client.models import Recording, RecordingSummary
from audian_pipeline.client.paging import WindowListing, list_window
from audian_pipeline.lake.days import day_bounds
from audian_pipeline.lake.parquet import read_rows, to_table, write_partition
from audian_pipeline.lake.tables import RECORDINGS
from audian_pipeline.settings import RETENTION_DAYS
from audian_pipeline.storage import Store

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
    rows_by_status: dict[str, int] = field(default_factory=dict)

    @property
    def list_calls(self) -> int:
        return self.listing.list_calls


def _listed(row: dict) -> tuple:
    return tuple(row[name] for name in LISTED_FIELDS)


def _row(summary: RecordingSummary, detail: Recording | None, previous: dict | None, now: datetime) -> dict:
    row = dict(previous or {})
    row.update({name: getattr(summary, name) for name in LISTED_FIELDS})
    if detail is not None:
        row.update(
            status=detail.status, duration=detail.duration, file_size=detail.file_size,
            file_format=detail.file_format, bitrate=detail.bitrate, sample_rate=detail.sample_rate,
            channels=detail.channels, completed_at=detail.completed_at, detail_fetched_at=now,
        )
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
) -> DaySync:
    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    start, end = day_bounds(day)
    stored = {row["recording_id"]: row for row in read_rows(lake, TABLE, day)}
    listing = list_window(client, start, end, list_limit)

    stale = [s for s in listing.recordings
             if s.recording_id not in stored or _listed(stored[s.recording_id]) != s.listed_fields()]
    # NotFound: deleted between the list and the detail call. InvalidRequest: an ID the client
    # will not put in a URL; the row keeps the listed fields and the archive calls it unsafe_id.
    details = fetch_each(client.get_recording, [r.recording_id for r in stale], concurrency,
                         tolerate=(NotFound, InvalidRequest))

    rows: dict[str, dict] = {}
    for summary in listing.recordings:
        rid = summary.recording_id
        detail = details.get(rid)
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
        marked_deleted=marked, detail_calls=len(stale), listing=listing,
        rows_by_status=dict(Counter("deleted" if r["deleted_at"] else r["status"] for r in ordered)),
    )

