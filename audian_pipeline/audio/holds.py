"""Legal holds: recordings that no disposal may touch, whatever the retention policy says.

One small JSON object per held recording, `holds/<recording_id>.json` under the lake
(AUDIAN_LAKE_URL), so every process that reads the lake (the CLI, each run, each Celery worker)
sees the same holds, on a local disk or on S3 alike. One object per hold rather than one file of
all holds, because S3 has no lock and no rename: two people placing holds at the same moment
would each read the list, add theirs and PUT it back, and one hold would silently vanish. With
one object each, placing a hold is a single PUT (atomic on S3, a rename locally) and lifting it
a single DELETE; no change ever reads and rewrites another's hold. The disposal reads the holds
again right before it deletes each day's objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from audian_pipeline.audio.audit import AuditLog
from audian_pipeline.lake.paths import safe_id
from audian_pipeline.settings import SettingError
from audian_pipeline.storage import Store

PREFIX = "holds"


@dataclass(frozen=True)
class Hold:
    recording_id: str
    reason: str
    placed_at: datetime
    placed_by: str


def _key(recording_id: str) -> str:
    try:
        return f"{PREFIX}/{safe_id(recording_id)}.json"
    except ValueError as exc:
        raise SettingError(str(exc)) from None


def place_hold(lake: Store, recording_id: str, reason: str, audit: AuditLog) -> Hold:
    """Hold the recording (replacing the reason of an existing hold); audited."""
    if not reason.strip():
        raise SettingError("a hold needs a reason: pass --reason TEXT (e.g. the case or request it serves)")
    hold = Hold(recording_id, reason.strip(), datetime.now(timezone.utc), audit.actor)
    lake.write_bytes(_key(recording_id), json.dumps({
        "recording_id": hold.recording_id, "reason": hold.reason,
        "placed_at": hold.placed_at.isoformat(), "placed_by": hold.placed_by,
    }).encode())
    audit.record("hold_add", recording_id, "held", hold.reason)
    return hold


def lift_hold(lake: Store, recording_id: str, audit: AuditLog) -> bool:
    """Lift the recording's hold; False when it had none (audited either way)."""
    key = _key(recording_id)
    held = lake.exists(key)
    if held:
        lake.delete(key)
    audit.record("hold_remove", recording_id, "lifted" if held else "not_held")
    return held


def holds(lake: Store) -> dict[str, Hold]:
    """Every hold now in force, by recording id."""
    found: dict[str, Hold] = {}
    for key in lake.keys(f"{PREFIX}/*.json"):
        data = lake.read_bytes(key)
        if data is None:  # lifted between the listing and the read
            continue
        raw = json.loads(data)
        found[raw["recording_id"]] = Hold(raw["recording_id"], raw["reason"],
                                          datetime.fromisoformat(raw["placed_at"]), raw["placed_by"])
    return found
