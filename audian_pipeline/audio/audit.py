"""The audit trail: every access to a recording, appended as one JSON line, queryable by DuckDB.

Audian's page asks users to "log all recording access". One line per access (download,
re-verification, later delete) with who, when, what and the outcome, appended with O_APPEND in
a single write so concurrent writers never interleave, and fsynced so a crash keeps what was
logged. Query it with `read_json('audit/recording_access.jsonl')`.
"""

from __future__ import annotations

import getpass
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path


def audit_path(data_dir: Path) -> Path:
    return data_dir / "audit" / "recording_access.jsonl"


class AuditLog:
    def __init__(self, data_dir: Path, actor: str | None = None, run_id: str | None = None) -> None:
        self.path = audit_path(data_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.actor = actor or f"audian_pipeline ({getpass.getuser()})"
        self.run_id = run_id
        self._lock = threading.Lock()

    def record(self, action: str, recording_id: str, outcome: str, detail: str | None = None) -> None:
        line = json.dumps({
            "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "actor": self.actor, "action": action, "recording_id": recording_id,
            "outcome": outcome, "detail": detail or None, "run_id": self.run_id,
        }, separators=(",", ":")) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
