"""The calls behind one day's recordings: `GET /v2/calls/{id}`, each call fetched once.

The day is the recording's `created_at` day, read from the stored `recordings` partition, so
a call with recordings on two days (one that crosses midnight) has a row in both days.

A finished call does not change, so a call already stored is never asked for again: a second
run over the same day costs no request. A call is only asked for once every recording of it
that day is final (completed, failed) or deleted: until then the call may still be running,
and Audian answers `status: in-progress`, which is not a call status the API promises (the
client refuses it as malformed). Such calls are deferred to a later run and counted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from audian_pipeline.client.client import AudianClient, fetch_each
from audian_pipeline.client.errors import NotFound
from audian_pipeline.client.models import Call, MalformedResponse
from audian_pipeline.lake.parquet import read_rows, to_table, write_partition
from audian_pipeline.lake.tables import CALLS, RECORDINGS
from audian_pipeline.storage import Store

log = logging.getLogger(__name__)

TABLE = CALLS
FINAL_RECORDING_STATUSES = frozenset({"completed", "failed"})


@dataclass
class CallsDay:
    """What syncing one day's calls did, for metadata and tests."""

    day: date
    path: str
    """The partition's local path or s3:// URL."""
    rows: int
    bytes_written: int
    fetched: int
    """New rows: calls fetched for the first time."""
    requested: int
    """Calls asked for (fetched + not found + unreadable)."""
    deferred: int
    """Calls with a recording not final yet: not asked for, asked again on a later run."""
    not_found: int
    """Calls Audian no longer has (404, past retention) and that were never stored: skipped."""
    unreadable: dict[str, str] = field(default_factory=dict)
    """call_id -> why Audian's answer was refused (an in-progress call, a malformed body):
    left out of the partition and asked for again on the next run."""


def call_row(call: Call, fetched_at: datetime) -> dict:
    """A `calls` row; phone numbers are stored as Audian gives them (masked in the warehouse)."""
    return {
        "call_id": call.call_id,
        "from_number": call.from_number,
        "to_number": call.to_number,
        "direction": call.direction,
        "status": call.status,
        "call_flow_id": call.call_flow_id,
        "started_at": call.started_at,
        "answered_at": call.answered_at,
        "ended_at": call.ended_at,
        "duration": call.duration,
        "fetched_at": fetched_at,
    }


def calls_to_fetch(recordings: list[dict], stored: set[str]) -> tuple[list[str], list[str]]:
    """(ready, deferred) call_ids of the day's recordings that are not stored yet.

    Ready means every recording of the call that day is final or deleted; sorted, so the
    order of requests does not depend on the order of the partition.
    """
    settled: dict[str, bool] = defaultdict(lambda: True)
    for rec in recordings:
        if rec["call_id"] in stored:
            continue
        final = rec.get("deleted_at") is not None or rec["status"] in FINAL_RECORDING_STATUSES
        settled[rec["call_id"]] &= final
    ready = sorted(cid for cid, ok in settled.items() if ok)
    deferred = sorted(cid for cid, ok in settled.items() if not ok)
    return ready, deferred


def sync_calls_day(
    client: AudianClient,
    lake: Path | Store,
    day: date,
    *,
    concurrency: int = 16,
    now: datetime | None = None,
) -> CallsDay:
    """Add the day's missing calls to its `calls` partition, rewritten whole and atomically."""
    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    rows = {row["call_id"]: row for row in read_rows(lake, TABLE, day)}
    ready, deferred = calls_to_fetch(read_rows(lake, RECORDINGS, day), set(rows))
    # A 404 or a refused answer (an in-progress call) is kept in place of the call, so one bad
    # call does not cost the others; any other error (401, Audian down) fails the run.
    answers = fetch_each(client.get_call, ready, concurrency, tolerate=(NotFound, MalformedResponse))

    not_found, unreadable = 0, {}
    for call_id, answer in answers.items():
        if isinstance(answer, Call):
            rows[call_id] = call_row(answer, now)
        elif isinstance(answer, NotFound):
            not_found += 1
        else:
            unreadable[call_id] = str(answer)
            log.warning("call %s on %s not stored this run: %s", call_id, day, answer)

    ordered = sorted(rows.values(), key=lambda row: (row["started_at"], row["call_id"]))
    path, size = write_partition(lake, TABLE, day, to_table(TABLE, ordered))
    return CallsDay(
        day=day, path=path, rows=len(ordered), bytes_written=size,
        fetched=len(ready) - not_found - len(unreadable), requested=len(ready),
        deferred=len(deferred), not_found=not_found, unreadable=unreadable,
    )
