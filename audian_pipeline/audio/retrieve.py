"""Reading an archived recording back: found through the lake, decrypted, checked, written whole.

Three readers share this: `audian-pipeline restore`, the read-back that must re-verify a
recording before it may be deleted at Audian, and the speech analysis. Each reads the object
named by the manifest's `path` (a local path or an s3:// URL, so the lake alone finds it),
decrypts it when the manifest gives a key id, and hashes the plaintext as it streams, so a
result is only ever trusted against the manifest's plaintext sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import BinaryIO, Iterator

from audian_pipeline.audio.audit import AuditLog
from audian_pipeline.audio.crypto import CHUNK, KEYSET_SETTING, ArchiveCipher, DecryptionFailed
from audian_pipeline.lake.files import publish, temp_path_for
from audian_pipeline.lake.parquet import read_rows
from audian_pipeline.lake.paths import partitions_pattern
from audian_pipeline.lake.tables import RECORDING_AUDIO
from audian_pipeline.storage import ARCHIVE_SETTING, StorageError, Store


class RestoreError(RuntimeError):
    """The recording cannot be handed over whole and checked; the message says why, in one line."""


@dataclass(frozen=True)
class Plaintext:
    bytes: int
    sha256: str


def _manifest_rows_newest_first(lake: Store) -> Iterator[dict]:
    """Every manifest row, a day's partition at a time, newest day first: an id does not say its day."""
    prefix = f"{RECORDING_AUDIO.name}/date="
    for key in reversed(lake.keys(partitions_pattern(RECORDING_AUDIO.name))):
        yield from read_rows(lake, RECORDING_AUDIO, date.fromisoformat(key[len(prefix):len(prefix) + 10]))


def find_manifest_row(lake: Store, recording_id: str) -> dict | None:
    return next((r for r in _manifest_rows_newest_first(lake) if r["recording_id"] == recording_id), None)


def find_verified_row(lake: Store) -> dict | None:
    """A verified, not disposed recording of the newest day that has one (for the demo's restore)."""
    return next((r for r in _manifest_rows_newest_first(lake)
                 if r["outcome"] == "verified" and r.get("disposed_at") is None), None)


@contextlib.contextmanager
def open_stored(location: str) -> Iterator[BinaryIO]:
    """The stored object at a manifest `path`, raw (ciphertext when encrypted), through the
    storage layer: the standard AWS variables for s3://, errors in one line naming the setting."""
    store = Store(location, ARCHIVE_SETTING)
    if not store.exists(""):
        raise FileNotFoundError(location)
    with store.errors(location):
        handle = store.fs.open(store.path(""), "rb")
    try:
        yield handle
    finally:
        handle.close()


def read_plaintext(row: dict, sink: BinaryIO, cipher: ArchiveCipher | None) -> Plaintext:
    """Copy (or decrypt) the row's archived object into `sink`, hashing the plaintext as it goes.
    Raises RestoreError (wrong or missing keyset, tampered or truncated object, missing object)."""
    digest, size = hashlib.sha256(), 0
    encrypted = row.get("key_id") is not None
    if encrypted and cipher is None:
        raise RestoreError(f"the archived object of {row['recording_id']} is encrypted (key id {row['key_id']}): "
                           f"set {KEYSET_SETTING} to the archive's keyset")
    try:
        with open_stored(row["path"]) as stored:
            if encrypted:
                assert cipher is not None
                size = cipher.decrypt(stored, sink, row["recording_id"], digest.update)
            else:
                while chunk := stored.read(CHUNK):
                    sink.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
    except DecryptionFailed as exc:
        raise RestoreError(str(exc)) from None
    except FileNotFoundError:
        raise RestoreError(f"the archived object of {row['recording_id']} is missing from {row['path']}") from None
    except StorageError as exc:
        raise RestoreError(str(exc)) from None
    return Plaintext(size, digest.hexdigest())


def restore(recording_id: str, out: Path, *, lake: Store, cipher: ArchiveCipher | None, audit: AuditLog) -> Plaintext:
    """Write the recording's plaintext to `out`, whole and checked or not at all, and audit it.

    The plaintext goes to a hidden temporary beside `out` (a failed decryption may already have
    written part of it), is checked against the manifest's size and sha256, and only then is
    renamed to `out`."""
    try:
        row = _restorable(lake, recording_id)
        result = _restore_row(row, out, cipher)
    except RestoreError as exc:
        audit.record("restore", recording_id, "failed", str(exc))
        raise
    audit.record("restore", recording_id, "restored", f"sha256 {result.sha256} matches the manifest")
    return result


def _restorable(lake: Store, recording_id: str) -> dict:
    row = find_manifest_row(lake, recording_id)
    if row is None:
        raise RestoreError(f"{recording_id!r} is not in the archive's manifest (recording_audio under {lake.url}): "
                           "check the id, or that AUDIAN_LAKE_URL names the lake it was archived into")
    if row.get("disposed_at") is not None:
        raise RestoreError(f"{recording_id} was disposed of under the retention policy on "
                           f"{row['disposed_at']:%Y-%m-%d}; see report_disposals")
    if row["outcome"] != "verified" or not row["path"]:
        raise RestoreError(f"{recording_id} has no verified archived copy (outcome {row['outcome']}"
                           f"{': ' + row['reason'] if row['reason'] else ''})")
    return row


def _restore_row(row: dict, out: Path, cipher: ArchiveCipher | None) -> Plaintext:
    out = out.expanduser().absolute()
    temp = temp_path_for(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as sink:
            result = read_plaintext(row, sink, cipher)
            sink.flush()
            os.fsync(sink.fileno())
        if (result.sha256, result.bytes) != (row["sha256"], row["bytes"]):
            raise RestoreError(f"the archived object of {row['recording_id']} does not match its manifest "
                               f"(sha256 {result.sha256[:12]}…, {result.bytes} bytes; the manifest says "
                               f"{row['sha256'][:12]}…, {row['bytes']} bytes): it was altered at rest")
        publish(temp, out)
    except OSError as exc:
        raise RestoreError(f"could not copy the archived object to {out}: {exc.strerror or exc}") from None
    finally:
        temp.unlink(missing_ok=True)
    return result
