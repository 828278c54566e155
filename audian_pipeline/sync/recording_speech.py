"""A day of `recording_speech`: each verified recording of the day's `recording_audio` manifest
analysed once (who talked how much, dead air, overlap, turns), and the partition rewritten whole
with one row per recording.

A row is kept, not redone, while its recording's archived file (by sha256) and the detector's
settings are the ones it was made from; a new file or new settings are analysed again. A file
that is not audio the detector takes is `undecodable` with its reason, and stays so (decoding
the same bytes again gives the same answer); a file the archive could not hand over is
`unreadable`, and is tried again on the next run.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import BinaryIO

from audian_pipeline.audio.crypto import ArchiveCipher
from audian_pipeline.audio.retrieve import RestoreError, read_plaintext
from audian_pipeline.audio.speech import DEFAULT_DETECTOR, Analysis, Detector, Undecodable, analyse
from audian_pipeline.lake.parquet import read_rows, to_table, write_partition
from audian_pipeline.lake.paths import download_spool_dir
from audian_pipeline.lake.tables import RECORDING_AUDIO, RECORDING_SPEECH
from audian_pipeline.storage import ARCHIVE_SETTING, Store, lake_at

TABLE = RECORDING_SPEECH


@dataclass
class SpeechDay:
    day: date
    path: str
    rows: int
    analysed: int
    """Recordings analysed by this run (the others were kept from an earlier one)."""
    audio_seconds: float
    """Seconds of audio this run decoded and judged."""
    seconds_analysing: float
    outcomes: dict[str, int]
    undecodable: dict[str, str]
    """recording_id -> reason, for every undecodable recording of the day."""

    @property
    def times_real_time(self) -> float:
        return self.audio_seconds / self.seconds_analysing if self.seconds_analysing else 0.0


def open_archived(manifest_row: dict, data_dir: Path, cipher: ArchiveCipher | None = None) -> BinaryIO:
    """The archived file of a verified manifest row, open for reading (and seeking: the decoder seeks).

    The one place that knows how the archive is read: through the storage layer (a local or
    s3:// archive), and, for an object stored encrypted (the row has a key id), decrypted with
    AUDIAN_ARCHIVE_KEYSET's cipher into an anonymous local spool file whose plaintext is checked
    against the manifest's sha256 first. The manifest's `path` is relative to the data directory
    in manifests written before full locations, a full path or URL after. Failures are OSError
    (the row is then `unreadable` and tried again next run)."""
    location = manifest_row["path"]
    row = {**manifest_row, "path": location if "://" in location else str(data_dir / location)}
    if row.get("key_id") is None:
        store = Store(row["path"], ARCHIVE_SETTING)
        return store.fs.open(store.path(""), "rb")
    spool = download_spool_dir(data_dir)
    spool.mkdir(parents=True, exist_ok=True)
    plain = tempfile.TemporaryFile(dir=spool)
    try:
        found = read_plaintext(row, plain, cipher)
    except RestoreError as exc:
        plain.close()
        raise OSError(str(exc)) from None
    if found.sha256 != row["sha256"]:
        plain.close()
        raise OSError(f"the decrypted copy's sha256 {found.sha256[:12]}… is not the manifest's {row['sha256'][:12]}…")
    plain.seek(0)
    return plain


def analyse_day(data_dir: Path, day: date, detector: Detector = DEFAULT_DETECTOR,
                now: datetime | None = None, *, lake: Store | None = None,
                cipher: ArchiveCipher | None = None) -> SpeechDay:
    """`lake` is AUDIAN_LAKE_URL's Store (default: data_dir's lake/); `cipher` decrypts an
    encrypted archive (AUDIAN_ARCHIVE_KEYSET)."""
    now = now or datetime.now(timezone.utc)
    store = lake_at(lake or data_dir)
    verified = [r for r in read_rows(store, RECORDING_AUDIO, day) if r["outcome"] == "verified"]
    rows = {row["recording_id"]: row for row in read_rows(store, TABLE, day)}
    analysed, audio_seconds, started = 0, 0.0, time.process_time()
    for manifest_row in verified:
        kept = rows.get(manifest_row["recording_id"])
        if kept is not None and _still_current(kept, manifest_row, detector):
            continue
        rows[manifest_row["recording_id"]] = row = _analyse_one(manifest_row, data_dir, detector, now, cipher)
        analysed += 1
        audio_seconds += row.get("duration_seconds") or 0.0
    elapsed = time.process_time() - started
    ordered = sorted(rows.values(), key=lambda r: (r["created_at"], r["recording_id"]), reverse=True)
    path, _ = write_partition(store, TABLE, day, to_table(TABLE, ordered))
    return SpeechDay(
        day=day, path=str(path), rows=len(ordered), analysed=analysed, audio_seconds=audio_seconds,
        seconds_analysing=elapsed, outcomes=dict(Counter(r["outcome"] for r in ordered)),
        undecodable={r["recording_id"]: r["reason"] for r in ordered if r["outcome"] == "undecodable"},
    )


def _still_current(row: dict, manifest_row: dict, detector: Detector) -> bool:
    return (row["outcome"] != "unreadable" and row["sha256"] == manifest_row["sha256"]
            and row["detector"] == detector.name and row["detector_settings"] == detector.settings)


def _analyse_one(manifest_row: dict, data_dir: Path, detector: Detector, now: datetime,
                 cipher: ArchiveCipher | None) -> dict:
    row = {
        "recording_id": manifest_row["recording_id"], "created_at": manifest_row["created_at"],
        "sha256": manifest_row["sha256"], "file_format": manifest_row["probed_format"],
        "detector": detector.name, "detector_settings": detector.settings, "analysed_at": now,
    }
    try:
        with open_archived(manifest_row, data_dir, cipher) as audio:
            result = analyse(audio, detector)
    except Undecodable as exc:
        return {**row, "outcome": "undecodable", "reason": str(exc)}
    except OSError as exc:
        return {**row, "outcome": "unreadable", "reason": f"the archived file could not be read: {exc.strerror or exc}"}
    return {**row, "outcome": "analysed", "reason": None, **_columns(result)}


def _columns(result: Analysis) -> dict:
    m = result.measures
    stereo = result.channels == 2
    return {
        "sample_rate": result.sample_rate, "channels": result.channels,
        "duration_seconds": round(result.duration_seconds, 3), "speech_seconds": m.speech_seconds,
        "caller_speech_seconds": m.channel_speech_seconds[0] if stereo else None,
        "callee_speech_seconds": m.channel_speech_seconds[1] if stereo else None,
        "talk_ratio": m.talk_ratio, "silence_seconds": m.silence_seconds, "silence_share": m.silence_share,
        "longest_silence_seconds": m.longest_silence_seconds, "overlap_seconds": m.overlap_seconds,
        "turns": m.turns, "longest_monologue_seconds": m.longest_monologue_seconds,
    }
