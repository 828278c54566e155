"""Atomic file writes: the one helper every writer of the lake and the archive goes through.

A reader (DuckDB globbing `*.parquet`, an analyst listing the archive) must see the old file or
the new one, never half of one. So: write beside the target under a hidden name that no glob
of `*.parquet` or `*.mp3` matches, fsync, rename over the target, fsync the directory.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
from typing import IO, Iterator

TEMP_PREFIX = ".tmp-"


class DataDirError(RuntimeError):
    """Writing under AUDIAN_DATA_DIR failed (disk full, read-only, not a directory)."""


def data_dir_error(exc: OSError, target: Path) -> DataDirError:
    """One message naming the cause and the fix; what was stored before is untouched."""
    cause = exc.strerror or str(exc)
    return DataDirError(
        f"could not write {target}: {cause}. Free space on the disk holding AUDIAN_DATA_DIR, make it writable, "
        "or point AUDIAN_DATA_DIR at another directory, then run again: what was already stored is unchanged."
    )


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by name (a directory's fsync makes a rename in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_for(target: Path) -> Path:
    return target.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}-{target.name}.partial"


@contextlib.contextmanager
def atomic_writer(target: Path) -> Iterator[IO[bytes]]:
    """Yield a file to write; on success it replaces `target` atomically and durably.

    The one atomic write of the project: the lake's partitions and the emulator's audio cache
    both go through it (the archive streams through `temp_path_for` and `publish` itself)."""
    temp = temp_path_for(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        publish(temp, target)
    finally:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)


def publish(temp: Path, target: Path) -> None:
    """Move a complete, fsynced temporary file into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, target)
    fsync_path(target.parent)


def remove_stale_temporaries(directory: Path, older_than_seconds: float = 3600) -> int:
    """Delete what a killed writer left behind (hidden, never read by globs); returns the count.

    Only files older than an hour go, so a writer still running elsewhere keeps its file. That
    writer may also rename its file into place between our listing and our look at it: a file
    that vanished meanwhile is simply not stale."""
    if not directory.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - older_than_seconds
    for stale in directory.glob(f"{TEMP_PREFIX}*"):
        try:
            if stale.stat().st_mtime < cutoff:
                stale.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
