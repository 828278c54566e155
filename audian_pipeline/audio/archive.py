"""The audio archive: download each completed recording once, verify it, keep it.

A download streams to a hidden temporary file in a local staging folder, hashing as it goes;
the file is fsynced, judged, and then either published under `audio/YYYY/MM/DD/<id>.<ext>` of
the archive (AUDIAN_ARCHIVE_URL) or put aside under `quarantine/` with its reason. So an object
under the recording's name is always a verified one, memory stays flat whatever the size, and a
killed run leaves nothing a reader could mistake for a recording: only a temporary in the one
staging folder, which the next run removes whatever day it archives.

A local archive stages in its own `audio/.downloads/` (publishing is then a rename on the same
file system); an S3 archive stages in AUDIAN_DATA_DIR's `spool/` and publishes with a
conditional create (see `storage.Store.publish_file`), so no staging object is ever made on S3.

With a keyset (AUDIAN_ARCHIVE_KEYSET, see `crypto.py`) every stored object, verified or put aside,
is the Tink ciphertext of the file, under its key plus `.tink`. Verification is always of the
plaintext: size and sha256 measured while it streamed, the probe on the staged file; encryption
comes after the verdict, into a second staged file that is what gets published. The manifest
records the plaintext sha256, the stored (ciphertext) size and the key id, which is null for a
plaintext object.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from datetime import date, datetime, timezone
from pathlib import Path

from audian_pipeline.audio.audit import AuditLog
from audian_pipeline.audio.crypto import ENCRYPTED_SUFFIX, ArchiveCipher
from audian_pipeline.audio.verify import Expected, Verification, verify
from audian_pipeline.client.client import AudianClient
from audian_pipeline.client.errors import AudianError, NotFound
from audian_pipeline.lake.files import data_dir_error, remove_stale_temporaries, temp_path_for
from audian_pipeline.lake.paths import UnsafeIdentifier, archive_key, download_spool_dir, quarantine_key
from audian_pipeline.storage import Store, archive_at, lake_at

HASH_CHUNK = 4 * 1024 * 1024


class Archiver:
    """Archives recordings one at a time, from many threads: `client` and the audit log are shared."""

    def __init__(self, client: AudianClient, data_dir: Path, audit: AuditLog, now: datetime | None = None, *,
                 lake: Store | None = None, archive: Store | None = None, cipher: ArchiveCipher | None = None) -> None:
        """`lake` and `archive` default to their places under `data_dir`, which also holds the
        S3 archive's local spool; `cipher` (AUDIAN_ARCHIVE_KEYSET's) encrypts what is stored."""
        self.client, self.data_dir, self.audit, self.cipher = client, data_dir, audit, cipher
        self.lake, self.archive = lake_at(lake or data_dir), archive_at(archive or data_dir)
        self.staging = download_spool_dir(data_dir) if self.archive.is_s3 else self.archive.local("audio/.downloads")
        self.now = now or datetime.now(timezone.utc)
        self._downloaded: list[int] = []
        """Bytes of each file this archiver downloaded (verified or not); appended from threads."""
        self._lock = threading.Lock()

    def take_downloads(self) -> list[int]:
        """Bytes of each download since the last call (verified or not), and start counting anew."""
        with self._lock:
            taken, self._downloaded = self._downloaded, []
        return taken

    def clean_stale_downloads(self, day: date) -> int:
        """Hidden temporaries a killed run left: every day's in the staging folder, and in a local
        archive's day folder those of versions that downloaded beside the final name."""
        removed = remove_stale_temporaries(self.staging)
        if not self.archive.is_s3:
            removed += remove_stale_temporaries(self.archive.local(f"audio/{day:%Y}/{day:%m}/{day:%d}"))
        return removed

    # ---- one recording -------------------------------------------------------------------------
    def archive_one(self, rec: dict, previous: dict | None, checksum: str | None) -> dict:
        row = _base_row(rec, previous, checksum)
        if previous and self._is_final(previous):
            if previous["outcome"] == "verified" and previous.get("disposed_at") is None:
                # a manifest from before full URLs held a relative path
                return {**previous, "path": self.archive.url_of(stored_key(previous))}
            return previous
        if rec.get("deleted_at") is not None:
            return self._finish(row, Verification("gone", "Audian no longer lists it"), None, count=False)
        if rec["status"] != "completed":
            return self._finish(row, Verification("not_completed", f"status is {rec['status']}"), None, count=False)
        try:
            final = archive_key(rec["created_at"].date(), rec["recording_id"], rec["file_format"]) + self._suffix
        except UnsafeIdentifier as exc:
            return self._finish(row, Verification("unsafe_id", str(exc)), None, count=False)
        if previous and previous["outcome"] == "no_checksum_yet":
            pending = self._pending_key(rec, encrypted=previous.get("key_id") is not None)
            readable = previous.get("key_id") is None or self.cipher is not None
            if readable and self.archive.exists(pending):
                if not checksum:
                    return previous  # still waiting: the kept file is judged once the checksum comes
                return self._reverify(row, rec, previous, pending, final)
        return self._download(row, rec, final)

    @property
    def _suffix(self) -> str:
        return ENCRYPTED_SUFFIX if self.cipher is not None else ""

    def _is_final(self, previous: dict) -> bool:
        """Verified (and still in this archive: an object someone removed, or one kept in an
        archive AUDIAN_ARCHIVE_URL no longer names, is fetched again), disposed of, gone or unsafe."""
        if previous.get("disposed_at") is not None:
            return True
        if previous["outcome"] == "verified":
            return bool(previous["path"]) and self.archive.exists(stored_key(previous))
        return previous["outcome"] in ("gone", "unsafe_id")

    def _download(self, row: dict, rec: dict, final: str) -> dict:
        temp = temp_path_for(self.staging / Path(final).name)
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
            raise data_dir_error(exc, temp if self.archive.is_s3 else self.archive.local(final)) from None
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
        self._place(temp, final, rec, verdict, row)
        return self._finish(row, verdict, final)

    def _reverify(self, row: dict, rec: dict, previous: dict, pending: str, final: str) -> dict:
        """A file kept aside for want of a checksum: the checksum has come, judge it again.

        A kept object that is on S3 or encrypted is fetched (and decrypted) to the spool and
        judged there; if it is verified now, it is published from the spool and the kept object
        deleted, else it stays as it was. A local plaintext one is judged where it lies."""
        copied = self.archive.is_s3 or previous.get("key_id") is not None
        source = self._local_copy(pending, rec["recording_id"], previous) if copied else self.archive.local(pending)
        try:
            row["sha256"] = _sha256_of(source)
            row["bytes"] = source.stat().st_size
            verdict = verify(source, row["bytes"], row["sha256"], _expected(rec, row["expected_sha256"]))
            if verdict.verified or not copied:
                self._place(source, final, rec, verdict, row)
            else:
                row["key_id"], row["stored_bytes"] = previous.get("key_id"), previous.get("stored_bytes")
            if verdict.verified and copied:
                self.archive.delete(pending)
        finally:
            if copied:
                source.unlink(missing_ok=True)
        return self._finish(row, verdict, final, action="reverify")

    def _local_copy(self, key: str, recording_id: str, previous: dict) -> Path:
        """The kept object as a local plaintext spool file (decrypted when it was stored encrypted)."""
        spool = temp_path_for(self.staging / Path(key).name)
        spool.parent.mkdir(parents=True, exist_ok=True)
        if previous.get("key_id") is None:
            self.archive.download(key, spool)
            return spool
        assert self.cipher is not None, "an encrypted kept object is re-judged only with a keyset"
        try:
            with self.archive.fs.open(self.archive.path(key), "rb") as sealed, open(spool, "wb") as sink:
                self.cipher.decrypt(sealed, sink, recording_id)
        except BaseException:
            spool.unlink(missing_ok=True)
            raise
        return spool

    def _place(self, source: Path, final: str, rec: dict, verdict: Verification, row: dict) -> None:
        """Publish a verified file, or put it aside, encrypted first when there is a keyset; a
        failing store leaves no spool file behind, and no plaintext is left once encrypted."""
        stored, sealed = source, None
        try:
            if self.cipher is not None:
                sealed = temp_path_for(self.staging / (Path(final).name))
                row["stored_bytes"] = self.cipher.encrypt_file(source, sealed, rec["recording_id"])
                row["key_id"], stored = self.cipher.key_id, sealed
                source.unlink()
            else:
                row["stored_bytes"], row["key_id"] = source.stat().st_size, None
            if verdict.verified:
                self.archive.publish_file(stored, final)
            else:
                self.archive.put_aside(stored, self._pending_key(rec, encrypted=self.cipher is not None))
        finally:
            if self.archive.is_s3 or sealed is not None:
                source.unlink(missing_ok=True)
            if sealed is not None:
                sealed.unlink(missing_ok=True)

    @staticmethod
    def _pending_key(rec: dict, *, encrypted: bool) -> str:
        suffix = ENCRYPTED_SUFFIX if encrypted else ""
        return quarantine_key(rec["created_at"].date(), rec["recording_id"], rec["file_format"]) + suffix

    def _finish(self, row: dict, verdict: Verification, final: str | None, *, count: bool = True,
                action: str = "download") -> dict:
        row["outcome"], row["reason"] = verdict.outcome, verdict.reason or None
        if verdict.probe is not None:
            row.update(probed_format=verdict.probe.file_format, probed_duration=verdict.probe.duration,
                       probed_sample_rate=verdict.probe.sample_rate, probed_channels=verdict.probe.channels)
        if verdict.verified:
            assert final is not None, "only a download or a reverify is verified, and both have a final path"
            row["path"], row["verified_at"] = self.archive.url_of(final), self.now
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
        "stored_bytes": None, "key_id": None, "disposed_at": None,
    }


def stored_key(row: dict) -> str:
    """The archive key of a manifest row's object: `.tink` when it was stored encrypted."""
    suffix = ENCRYPTED_SUFFIX if row.get("key_id") is not None else ""
    return archive_key(row["created_at"].date(), row["recording_id"], row["declared_format"]) + suffix


def _expected(rec: dict, sha256: str | None) -> Expected:
    return Expected(file_size=rec["file_size"], sha256=sha256, file_format=rec["file_format"],
                    duration=rec["duration"], sample_rate=rec.get("sample_rate"), channels=rec.get("channels"))


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
