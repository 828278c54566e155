"""A day of `recording_speech`: each verified recording of the day's `recording_audio` manifest
analysed once (who talked how much, dead air, overlap, turns), and the partition rewritten whole
with one row per recording.

A row is kept, not redone, while its recording's archived file (by sha256) and the detector's
settings are the ones it was made from; a new file or new settings are analysed again. A file
that is not audio the detector takes is `undecodable` with its reason, and stays so (decoding
the same bytes again gives the same answer); a file the archive could not hand over is
`unreadable`, and is tried again on the next run.

The analysis is CPU-bound and one recording is independent of the next, so a day with more than
a handful to analyse runs them on an `AnalysisPool` of spawned processes, one recording per task:
each opens (and decrypts) its archived file itself and sends back only the row, and the day's
partition is still written once, by the caller. Spawned, not forked: the step's process has
threads (Dagster's, the client's), and a fork copies their locks in whatever state they are in.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import BinaryIO

from audian_pipeline.audio.crypto import ArchiveCipher, load_cipher
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
    """CPU seconds, summed over the processes that analysed."""
    outcomes: dict[str, int]
    undecodable: dict[str, str]
    """recording_id -> reason, for every undecodable recording of the day."""
    processes: int = 1
    """Processes that analysed the day: 1 when it was analysed in the caller's own process."""

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


MIN_AUDIO_SECONDS_PER_PROCESS = 3000.0
"""A day is analysed on the pool only when each process gets at least this much audio: ~5 s of
CPU at the detector's ~600x real time, against ~1-2 s to spawn an analyser and import numpy,
soundfile and webrtcvad. A day of a few dozen short calls is quicker in the step's own process."""


class AnalysisPool:
    """Up to `processes` spawned processes that analyse recordings, started by the first day with
    enough audio to analyse (`min_audio_seconds` per process) and shared by the run's later days;
    a smaller day, or `processes` 1, is analysed in the caller's own process and pays no start-up."""

    def __init__(self, processes: int = 1, min_audio_seconds: float | None = None) -> None:
        self.processes = processes
        self.min_audio_seconds = MIN_AUDIO_SECONDS_PER_PROCESS if min_audio_seconds is None else min_audio_seconds
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> AnalysisPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def takes(self, manifest_rows: list[dict]) -> bool:
        audio_seconds = sum(row.get("probed_duration") or 0.0 for row in manifest_rows)
        return (self.processes > 1 and len(manifest_rows) > 2 * self.processes
                and audio_seconds >= self.min_audio_seconds * self.processes)

    def analyse(self, manifest_rows: list[dict], data_dir: Path, detector: Detector, now: datetime,
                keyset: Path | None) -> list[tuple[dict, float]]:
        """(row, CPU seconds) per manifest row, in order. The keyset goes by path: each process
        loads its own cipher, and no key material crosses a pipe."""
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_exit_with_parent, initargs=(os.getpid(),))
        with _children_allowed():  # the processes start as the tasks are submitted, all of them here
            results = self._executor.map(_analyse_in_child, manifest_rows, repeat(data_dir), repeat(detector),
                                         repeat(now), repeat(keyset))
        return list(results)


@contextmanager
def _children_allowed() -> Iterator[None]:
    """Under Celery's prefork pool a task runs in a billiard process, which stands in for
    multiprocessing's current process: a daemonic one, which multiprocessing refuses children
    (lest they outlive it: ours end with it, see `_exit_with_parent`), with an authkey that only
    billiard may pickle, and spawning sends it to each child. Both are made plain while the
    analysers start, then put back; in any other process this changes nothing."""
    config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    saved = dict(config)
    config["daemon"] = False
    config["authkey"] = multiprocessing.process.AuthenticationString(config["authkey"])  # type: ignore[attr-defined]
    try:
        yield
    finally:
        config.clear()
        config.update(saved)


def _exit_with_parent(parent: int) -> None:
    """In each analysing process: exit once the step's process is gone (SIGKILLed, say), rather
    than wait forever on a task queue whose write end it holds itself."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def analyse_day(data_dir: Path, day: date, detector: Detector = DEFAULT_DETECTOR,
                now: datetime | None = None, *, lake: Store | None = None,
                cipher: ArchiveCipher | None = None, pool: AnalysisPool | None = None) -> SpeechDay:
    """`lake` is AUDIAN_LAKE_URL's Store (default: data_dir's lake/); `cipher` decrypts an
    encrypted archive (AUDIAN_ARCHIVE_KEYSET); `pool` analyses a large day on several processes."""
    now = now or datetime.now(timezone.utc)
    store = lake_at(lake or data_dir)
    verified = [r for r in read_rows(store, RECORDING_AUDIO, day) if r["outcome"] == "verified"]
    rows = {row["recording_id"]: row for row in read_rows(store, TABLE, day)}
    todo = [m for m in verified
            if (kept := rows.get(m["recording_id"])) is None or not _still_current(kept, m, detector)]
    if pool is not None and pool.takes(todo):
        processes = pool.processes
        results = pool.analyse(todo, data_dir, detector, now, cipher.keyset_path if cipher else None)
    else:
        processes, results = 1, [_timed(m, data_dir, detector, now, cipher) for m in todo]
    for row, _ in results:
        rows[row["recording_id"]] = row
    ordered = sorted(rows.values(), key=lambda r: (r["created_at"], r["recording_id"]), reverse=True)
    path, _ = write_partition(store, TABLE, day, to_table(TABLE, ordered))
    return SpeechDay(
        day=day, path=str(path), rows=len(ordered), analysed=len(results),
        audio_seconds=sum((row.get("duration_seconds") or 0.0 for row, _ in results), 0.0),
        seconds_analysing=sum((cpu for _, cpu in results), 0.0), outcomes=dict(Counter(r["outcome"] for r in ordered)),
        undecodable={r["recording_id"]: r["reason"] for r in ordered if r["outcome"] == "undecodable"},
        processes=processes,
    )


def _still_current(row: dict, manifest_row: dict, detector: Detector) -> bool:
    return (row["outcome"] != "unreadable" and row["sha256"] == manifest_row["sha256"]
            and row["detector"] == detector.name and row["detector_settings"] == detector.settings)


def _analyse_in_child(manifest_row: dict, data_dir: Path, detector: Detector, now: datetime,
                      keyset: Path | None) -> tuple[dict, float]:
    return _timed(manifest_row, data_dir, detector, now, _cipher_at(keyset) if keyset else None)


@lru_cache(maxsize=2)
def _cipher_at(keyset: Path) -> ArchiveCipher:
    """Loaded once per analysing process, the way the step's own process loaded it."""
    return load_cipher(keyset)


def _timed(manifest_row: dict, data_dir: Path, detector: Detector, now: datetime,
           cipher: ArchiveCipher | None) -> tuple[dict, float]:
    """The row and the CPU seconds of this process it took (per CPU, whichever process ran it)."""
    started = time.process_time()
    row = _analyse_one(manifest_row, data_dir, detector, now, cipher)
    return row, time.process_time() - started


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
