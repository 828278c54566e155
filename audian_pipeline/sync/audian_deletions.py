"""A day of `audian_deletions`: verified recordings deleted at Audian, each only when it is safe.

Deleting at Audian frees its storage quota, and it is the one step that cannot be undone: after
it, the archive holds the only copy. So a recording is deleted only when, in this same run, its
archived object was read back from storage, decrypted, and its plaintext matched the webhook's
sha256 and Audian's size. Never for a recording whose manifest outcome is anything but
`verified` (no_checksum_yet, quarantined, failed downloads), never without a webhook checksum,
never in a dry run.

Order per recording: read back, re-verify, DELETE, then the lake partition is rewritten with its
row. A process killed before the DELETE has deleted nothing; killed after it, the next run reads
the copy back again, meets Audian's 404 and records `already_deleted`: the work completes and
every deletion ends in the lake and the audit trail.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from audian_pipeline.audio.audit import AuditLog
from audian_pipeline.audio.crypto import ArchiveCipher
from audian_pipeline.audio.retrieve import RestoreError, read_plaintext
from audian_pipeline.client.client import AudianClient
from audian_pipeline.client.errors import AudianError, NotFound
from audian_pipeline.lake.parquet import read_rows, to_table, write_partition
from audian_pipeline.lake.tables import AUDIAN_DELETIONS, RECORDING_AUDIO, RECORDINGS
from audian_pipeline.storage import Store

TABLE = AUDIAN_DELETIONS


@dataclass
class DeletionDay:
    day: date
    deleted: list[str] = field(default_factory=list)
    already_deleted: list[str] = field(default_factory=list)
    would_delete: list[str] = field(default_factory=list)
    """Dry run: re-verified and deletable, not deleted."""
    bytes_freed: int = 0
    failed_readback: dict[str, str] = field(default_factory=dict)
    """recording_id -> why its archived copy did not re-verify: the archive itself needs a look."""
    kept: dict[str, int] = field(default_factory=dict)
    """Why recordings were not deleted (reason -> count)."""

    def keep(self, reason: str) -> None:
        self.kept[reason] = self.kept.get(reason, 0) + 1


def delete_day(client: AudianClient, lake: Store, day: date, cipher: ArchiveCipher | None, audit: AuditLog,
               now: datetime, *, dry_run: bool = False, run_id: str | None = None) -> DeletionDay:
    result = DeletionDay(day)
    done = {r["recording_id"]: r for r in read_rows(lake, TABLE, day)}
    listed = {r["recording_id"]: r for r in read_rows(lake, RECORDINGS, day)}
    for row in read_rows(lake, RECORDING_AUDIO, day):
        rid = row["recording_id"]
        if rid in done:
            continue
        reason = not_deletable(row, listed.get(rid), now)
        if reason:
            result.keep(reason)
            continue
        problem = reverify(row, cipher)
        audit.record("readback", rid, "mismatch" if problem else "verified", problem)
        if problem:
            result.failed_readback[rid] = problem
            continue
        reverified_at = datetime.now(timezone.utc)
        if dry_run:
            result.would_delete.append(rid)
            continue
        outcome, deleted_at = _delete(client, rid, audit)
        if outcome is None:
            result.keep("the DELETE failed; tried again next run")
            continue
        done[rid] = {"recording_id": rid, "created_at": row["created_at"], "outcome": outcome, "bytes": row["bytes"],
                     "sha256": row["sha256"], "reverified_at": reverified_at, "deleted_at": deleted_at or now,
                     "run_id": run_id}
        _write(lake, day, done)
        (result.deleted if outcome == "deleted" else result.already_deleted).append(rid)
        result.bytes_freed += row["bytes"]
    return result


def not_deletable(row: dict, listed: dict | None, now: datetime) -> str | None:
    """Why this recording must stay at Audian, or None when its copy may be re-verified and it deleted."""
    if row["outcome"] != "verified":
        return f"outcome {row['outcome']}"
    if row.get("disposed_at") is not None:
        return "its archived copy was disposed of"
    if not row["expected_sha256"] or row["sha256"] != row["expected_sha256"]:
        return "no webhook checksum to re-verify against"
    if listed is None:
        return "not in the day's recordings partition"
    if listed["expires_at"] <= now:
        return "past Audian's 30 days: Audian deletes it itself"
    return None


def reverify(row: dict, cipher: ArchiveCipher | None) -> str | None:
    """Read the archived object back (decrypting it) and compare its plaintext with the webhook's
    sha256 and Audian's size; the problem in one line, or None when it matches."""
    try:
        with open(os.devnull, "wb") as discard:
            found = read_plaintext(row, discard, cipher)
    except RestoreError as exc:
        return str(exc)
    if found.sha256 != row["expected_sha256"] or found.bytes != row["expected_bytes"]:
        return (f"read back {found.bytes} bytes, sha256 {found.sha256[:12]}…; the webhook says "
                f"{row['expected_sha256'][:12]}…, Audian {row['expected_bytes']} bytes")
    return None


def _delete(client: AudianClient, rid: str, audit: AuditLog) -> tuple[str | None, datetime | None]:
    try:
        deleted_at = client.delete_recording(rid)
    except NotFound:
        audit.record("delete_at_audian", rid, "already_deleted", "Audian answered 404 to the DELETE")
        return "already_deleted", None
    except AudianError as exc:
        audit.record("delete_at_audian", rid, "failed", str(exc))
        return None, None
    audit.record("delete_at_audian", rid, "deleted", "after the archived copy was read back and re-verified")
    return "deleted", deleted_at


def _write(lake: Store, day: date, done: dict[str, dict]) -> None:
    rows = sorted(done.values(), key=lambda r: (r["created_at"], r["recording_id"]), reverse=True)
    write_partition(lake, TABLE, day, to_table(TABLE, rows))
