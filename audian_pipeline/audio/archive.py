"""The audio archive: download each completed recording once, verify it, keep it.

A download streams to a hidden temporary file in `audio/.downloads/` (the archive's own file
system), hashing as it goes; the file is fsynced and then either renamed to
`audio/YYYY/MM/DD/<id>.<ext>` (verified) or moved aside to `quarantine/` with its reason. So a
file under the recording's name is always a verified one, memory stays flat whatever the size,
and a killed run leaves nothing a reader could mistake for a recording: only a temporary in the
one staging folder, which the next run removes whatever day it archives.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from datetime import date, datetime, timezone
from pathlib import Path

from audian_pipeline.audio.audit import AuditLog
from audian_pipeline.audio.verify import Expected, Verification, verify
from audian_pipeline.client.client import AudianClient
from audian_pipeline.client.errors import AudianError, NotFound
from audian_pipeline.lake.files import data_dir_error, fsync_path, publish, remove_stale_temporaries, temp_path_for
from audian_pipeline.lake.paths import (
    UnsafeIdentifier,
    archive_path,
    audio_dir,
    download_staging_dir,
    quarantine_path,
)

HASH_CHUNK = 4 * 1024 * 1024


class Archiver:
    """Archives recordings one at a time, from many threads: `client` and the audit log are shared."""

    def __init__(self, client: AudianClient, data_dir: Path, audit: AuditLog, now: datetime | None = None) -> None:
        self.client, self.data_dir, self.audit = client, data_dir, audit
        self.now = now or datetime.now(timezone.utc)
        self._downloaded: list[int] = []
        """Bytes of each file this archiver downloaded (verified or not); appended from threads."""
        self._lock = threading.Lock()

    def take_downloads(self) -> list[int]:
        """Bytes of each download since the last call (verified or not), and start counting anew."""
        with self._lock:
            taken, self._downloaded = self._downloaded, []
        return taken

    # ---- one recording -------------------------------------------------------------------------
    def archive_one(self, rec: dict, previous: dict | None, checksum: str | None) -> dict:
        row = _base_row(rec, previous, checksum)
        if previous and self._is_final(previous):
            return previous
        if rec.get("deleted_at") is not None:
            return self._finish(row, Verification("gone", "Audian no longer lists it"), None, count=False)
        if rec["status"] != "completed":
            return self._finish(row, Verification("not_completed", f"status is {rec['status']}"), None, count=False)
        try:
            final = archive_path(self.data_dir, rec["created_at"].date(), rec["recording_id"], rec["file_format"])
        except UnsafeIdentifier as exc:
            return self._finish(row, Verification("unsafe_id", str(exc)), None, count=False)
        pending = self._pending_file(rec)
        if previous and previous["outcome"] == "no_checksum_yet" and pending.exists():
            if not checksum:
                return previous  # still waiting: the kept file is judged once the checksum comes
            return self._reverify(row, rec, pending, final)
        return self._download(row, rec, final)

    def _is_final(self, previous: dict) -> bool:
        """Verified (and still on disk: a file someone removed is fetched again), gone or unsafe."""
        if previous["outcome"] == "verified":
            return bool(previous["path"]) and (self.data_dir / previous["path"]).is_file()
        return previous["outcome"] in ("gone", "unsafe_id")

    def _download(self, row: dict, rec: dict, final: Path) -> dict:
        temp = temp_path_for(download_staging_dir(self.data_dir) / final.name)
        digest = hashlib.sha256()
        try:
            temp.parent.mkdir(parents=True, exist_ok=True)
            with open(temp, "wb") as sink:
                result = self.client.download(rec["recording_id"], sink, digest.update)
                sink.flush()
                os.fsync(sink.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            raise data_dir_error(exc, final) from None
        except NotFound:
            temp.unlink(missing_ok=True)
            return self._finish(row, Verification("gone", "Audian answered 404 for the download"), None)
        except AudianError as exc:
            temp.unlink(missing_ok=True)
            return self._finish(row, Verification("download_failed", str(exc)), None)
        row["bytes"], row["sha256"] = result.bytes_written, digest.hexdigest()
        with self._lock:
            self._downloaded.append(result.bytes_written)
        verdict = verify(temp, result.bytes_written, row["sha256"], _expected(rec, row["expected_sha256"]))
        self._place(temp, final, rec, verdict)
        return self._finish(row, verdict, final)

    def _reverify(self, row: dict, rec: dict, pending: Path, final: Path) -> dict:
        """A file kept aside for want of a checksum: the checksum has come, judge it again."""
        row["sha256"] = _sha256_of(pending)
        row["bytes"] = pending.stat().st_size
        verdict = verify(pending, row["bytes"], row["sha256"], _expected(rec, row["expected_sha256"]))
        self._place(pending, final, rec, verdict)
        return self._finish(row, verdict, final, action="reverify")

    def _place(self, source: Path, final: Path, rec: dict, verdict: Verification) -> None:
        if verdict.verified:
            publish(source, final)
            return
        aside = self._pending_file(rec)
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, aside)
        fsync_path(aside.parent)

    def _pending_file(self, rec: dict) -> Path:
        return quarantine_path(self.data_dir, rec["created_at"].date(), rec["recording_id"], rec["file_format"])

    def _finish(self, row: dict, verdict: Verification, final: Path | None, *, count: bool = True,
                action: str = "download") -> dict:
        row["outcome"], row["reason"] = verdict.outcome, verdict.reason or None
        if verdict.probe is not None:
            row.update(probed_format=verdict.probe.file_format, probed_duration=verdict.probe.duration,
                       probed_sample_rate=verdict.probe.sample_rate, probed_channels=verdict.probe.channels)
        if verdict.verified:
            assert final is not None, "only a download or a reverify is verified, and both have a final path"
            row["path"], row["verified_at"] = str(final.relative_to(self.data_dir)), self.now
        if count:
            row["attempts"] += 1
            row["first_attempt_at"] = row["first_attempt_at"] or self.now
            row["last_attempt_at"] = self.now
            self.audit.record(action, row["recording_id"], verdict.outcome, verdict.reason)
        return row


def _base_row(rec: dict, previous: dict | None, checksum: str | None) -> dict:
    return {
        "recording_id": rec["recording_id"], "created_at": rec["created_at"], "outcome": "",
        "reason": None, "path": None, "bytes": None, "expected_bytes": rec["file_size"],
        "sha256": None, "expected_sha256": checksum, "declared_format": rec.get("file_format"),
        "probed_format": None, "probed_duration": None, "probed_sample_rate": None, "probed_channels": None,
        "attempts": (previous or {}).get("attempts", 0),
        "first_attempt_at": (previous or {}).get("first_attempt_at"),
        "last_attempt_at": (previous or {}).get("last_attempt_at"), "verified_at": None,
    }


def _expected(rec: dict, sha256: str | None) -> Expected:
    return Expected(file_size=rec["file_size"], sha256=sha256, file_format=rec["file_format"],
                    duration=rec["duration"], sample_rate=rec.get("sample_rate"), channels=rec.get("channels"))


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def clean_stale_downloads(data_dir: Path, day: date) -> int:
    """Hidden temporaries a killed run left: every day's in the staging folder, and in the day's
    own folder those of versions that downloaded beside the final name."""
    legacy = audio_dir(data_dir) / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
    return remove_stale_temporaries(download_staging_dir(data_dir)) + remove_stale_temporaries(legacy)
