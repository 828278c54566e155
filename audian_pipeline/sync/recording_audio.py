"""A day of `recording_audio`: each recording of the day's `recordings` partition archived (or
judged again), and the manifest partition rewritten whole with one row per recording."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta

from audian_pipeline.audio.archive import Archiver
from audian_pipeline.lake.parquet import read_rows, to_table, write_partition
from audian_pipeline.lake.tables import RECORDING_AUDIO, RECORDINGS
from audian_pipeline.webhooks.store import open_existing_event_store

TABLE = RECORDING_AUDIO


@dataclass
class ArchiveDay:
    day: date
    path: str
    """The partition's local path or s3:// URL."""
    rows: int
    downloaded: int
    bytes_downloaded: int
    seconds_downloading: float
    outcomes: dict[str, int]
    oldest_unarchived: dict | None
    at_risk: list[str] = field(default_factory=list)
    """Completed recordings not verified and within 48 hours of Audian's deletion."""
    unsafe_ids: list[str] = field(default_factory=list)
    all_downloads_failed: bool = False
    """The day has completed recordings still listed and every one of them ended download_failed."""

    @property
    def mb_per_second(self) -> float:
        return self.bytes_downloaded / 1e6 / self.seconds_downloading if self.seconds_downloading else 0.0


def load_checksums(events_db: str, recording_ids: list[str]) -> dict[str, str]:
    """sha256 of each recording from its `recording.completed` webhook, where one arrived."""
    store = open_existing_event_store(events_db) if recording_ids else None
    if store is None:
        return {}
    with store:
        return store.checksums(recording_ids)


def archive_day(archiver: Archiver, day: date, events_db: str, concurrency: int = 4) -> ArchiveDay:
    """`events_db` is AUDIAN_EVENTS_DB's value (a path or a postgresql:// URL): the checksums."""
    recordings = read_rows(archiver.lake, RECORDINGS, day)
    previous = {row["recording_id"]: row for row in read_rows(archiver.lake, TABLE, day)}
    checksums = load_checksums(events_db, [r["recording_id"] for r in recordings])
    archiver.clean_stale_downloads(day)
    archiver.take_downloads()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="download") as pool:
        rows = list(pool.map(lambda r: archiver.archive_one(r, previous.get(r["recording_id"]),
                                                         checksums.get(r["recording_id"])), recordings))
    elapsed = time.perf_counter() - started
    rows.sort(key=lambda r: (r["created_at"], r["recording_id"]), reverse=True)
    path, _ = write_partition(archiver.lake, TABLE, day, to_table(TABLE, rows))
    waiting = _unarchived(recordings, rows)
    horizon = archiver.now + timedelta(hours=48)
    oldest = min(waiting, key=lambda r: r["created_at"], default=None)
    downloads = archiver.take_downloads()
    return ArchiveDay(
        day=day, path=path, rows=len(rows), downloaded=len(downloads),
        bytes_downloaded=sum(downloads), seconds_downloading=elapsed,
        outcomes=dict(Counter(r["outcome"] for r in rows)),
        oldest_unarchived={k: oldest[k] for k in ("recording_id", "created_at", "expires_at")} if oldest else None,
        at_risk=[r["recording_id"] for r in waiting if r["expires_at"] <= horizon],
        unsafe_ids=[r["recording_id"] for r in rows if r["outcome"] == "unsafe_id"],
        all_downloads_failed=_all_downloads_failed(recordings, rows),
    )


def _unarchived(recordings: list[dict], rows: list[dict]) -> list[dict]:
    """Completed recordings Audian still lists that have no verified copy yet."""
    verified = {r["recording_id"] for r in rows if r["outcome"] == "verified"}
    return [r for r in recordings if r["status"] == "completed" and r.get("deleted_at") is None
            and r["recording_id"] not in verified]


def _all_downloads_failed(recordings: list[dict], rows: list[dict]) -> bool:
    completed = {r["recording_id"] for r in recordings if r["status"] == "completed" and r.get("deleted_at") is None}
    failed = {r["recording_id"] for r in rows if r["outcome"] == "download_failed"}
    return bool(completed) and completed <= failed
