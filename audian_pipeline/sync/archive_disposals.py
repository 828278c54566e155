"""`archive_disposals`: archived recordings past AUDIAN_ARCHIVE_RETENTION_DAYS, disposed of.

A recording is due once `created_at + retention` has passed at the run's horizon: the end of the
run's last day, or now if that is earlier, so a backfill of old days applies the policy as it stood
then and never disposes ahead of time. Due and not on hold, its archived object is deleted through
the storage layer; a disposition row (recording id, plaintext sha256, policy, reason, when) goes
to the partition of the run's last day, and its manifest row in recording_audio is kept and marked
`disposed_at`, never removed. Nothing is deleted, written or marked in a dry run.

Order, one manifest day at a time: read the holds again (a hold placed during a run protects the
recordings of every day not yet reached), delete the objects, write the disposition rows, then
mark the manifest. Killed before the rows are written, the next run finds the manifest unmarked,
deletes nothing more (the object is already gone) and records the recording as `already_missing`:
every disposal ends in the table, the manifest and the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from audian_pipeline.audio.audit import AuditLog
from audian_pipeline.audio.holds import holds
from audian_pipeline.lake.parquet import read_rows, to_table, write_partition
from audian_pipeline.lake.paths import partitions_pattern
from audian_pipeline.lake.tables import ARCHIVE_DISPOSALS, RECORDING_AUDIO
from audian_pipeline.storage import ARCHIVE_SETTING, Store

TABLE = ARCHIVE_DISPOSALS


@dataclass
class Disposals:
    policy_day: date
    horizon: datetime
    disposed: list[str] = field(default_factory=list)
    already_missing: list[str] = field(default_factory=list)
    would_dispose: list[str] = field(default_factory=list)
    """Dry run: due and not held, left in place."""
    held: list[str] = field(default_factory=list)
    """Due, but under a legal hold: left in place."""
    stored_bytes_freed: int = 0


def horizon_of(policy_day: date, now: datetime) -> datetime:
    """The instant the policy is applied as of: the end of the run's last day, never later than now."""
    return min(now, datetime.combine(policy_day + timedelta(days=1), time(), tzinfo=timezone.utc))


def due(row: dict, cutoff: datetime) -> bool:
    """A verified archived object, not yet disposed of, created at or before the cutoff."""
    return (row["outcome"] == "verified" and bool(row["path"]) and row.get("disposed_at") is None
            and row["created_at"] <= cutoff)


def dispose(lake: Store, policy_day: date, now: datetime, retention_days: int, audit: AuditLog, *,
            dry_run: bool = False, run_id: str | None = None) -> Disposals:
    result = Disposals(policy_day, horizon_of(policy_day, now))
    cutoff = result.horizon - timedelta(days=retention_days)
    recorded = {r["recording_id"]: r for r in read_rows(lake, TABLE, policy_day)}
    for day in _manifest_days(lake, until=cutoff.date()):
        manifest = read_rows(lake, RECORDING_AUDIO, day)
        candidates = [r for r in manifest if due(r, cutoff)]
        if not candidates:
            continue
        on_hold = holds(lake)
        result.held += [r["recording_id"] for r in candidates if r["recording_id"] in on_hold]
        ready = [r for r in candidates if r["recording_id"] not in on_hold]
        if dry_run:
            result.would_dispose += [r["recording_id"] for r in ready]
            continue
        if not ready:
            continue
        policy = f"AUDIAN_ARCHIVE_RETENTION_DAYS={retention_days}"
        for row in ready:
            if row["recording_id"] not in recorded:  # else recorded by a run killed before it marked the manifest
                recorded[row["recording_id"]] = _dispose_one(row, result, policy, retention_days, audit, run_id)
        write_partition(lake, TABLE, policy_day, to_table(TABLE, _newest_first(recorded.values())))
        _mark(lake, day, manifest, {r["recording_id"]: recorded[r["recording_id"]]["disposed_at"] for r in ready})
    return result


def _dispose_one(row: dict, result: Disposals, policy: str, retention_days: int, audit: AuditLog,
                 run_id: str | None) -> dict:
    """Delete the row's archived object; the disposition row for it."""
    rid, location = row["recording_id"], row["path"]
    stored = Store(location, ARCHIVE_SETTING)
    existed = stored.exists("")
    stored.delete("")
    disposed_at = datetime.now(timezone.utc)
    due_at = row["created_at"] + timedelta(days=retention_days)
    outcome = "disposed" if existed else "already_missing"
    reason = f"past the retention of {retention_days} days on {due_at:%Y-%m-%d %H:%M}Z and not on hold"
    audit.record("dispose", rid, outcome, f"{policy}: {reason}" if existed else
                 f"{policy}: the archived object was already gone (an interrupted disposal)")
    if existed:
        result.disposed.append(rid)
        result.stored_bytes_freed += row.get("stored_bytes") or row["bytes"] or 0
    else:
        result.already_missing.append(rid)
    return {"recording_id": rid, "created_at": row["created_at"], "outcome": outcome, "sha256": row["sha256"],
            "bytes": row["bytes"], "stored_bytes": row.get("stored_bytes"), "path": location, "policy": policy,
            "reason": reason, "due_at": due_at, "disposed_at": disposed_at, "run_id": run_id}


def _mark(lake: Store, day: date, manifest: list[dict], disposed_at: dict[str, datetime]) -> None:
    """Rewrite the manifest's day with the disposed rows marked; every row stays."""
    rows = [{**r, "disposed_at": disposed_at.get(r["recording_id"], r.get("disposed_at"))} for r in manifest]
    write_partition(lake, RECORDING_AUDIO, day, to_table(RECORDING_AUDIO, rows))


def _manifest_days(lake: Store, until: date) -> list[date]:
    prefix = f"{RECORDING_AUDIO.name}/date="
    keys = lake.keys(partitions_pattern(RECORDING_AUDIO.name))
    days = (date.fromisoformat(k[len(prefix):len(prefix) + 10]) for k in keys)
    return sorted(d for d in days if d <= until)


def _newest_first(rows) -> list[dict]:
    return sorted(rows, key=lambda r: (r["disposed_at"], r["recording_id"]), reverse=True)
