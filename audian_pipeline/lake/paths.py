"""Where things live under AUDIAN_DATA_DIR. Every path is built here and nowhere else."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

PARTITION_FILE = "data.parquet"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,127}$")


class UnsafeIdentifier(ValueError):
    """An ID from Audian that would not be a plain file name (path traversal, odd bytes)."""


def safe_id(identifier: str) -> str:
    """Audian's IDs are opaque strings: only letters, digits, `_` and `-` may become a file name."""
    if not isinstance(identifier, str) or not _SAFE_ID.match(identifier):
        raise UnsafeIdentifier(
            f"refusing to use the ID {identifier!r} as a file name: only letters, digits, '_' and '-' "
            "are allowed, so that no ID can write outside the archive"
        )
    return identifier


def table_dir(data_dir: Path, table: str) -> Path:
    return data_dir / "lake" / table


def partition_dir(data_dir: Path, table: str, day: date) -> Path:
    return table_dir(data_dir, table) / f"date={day.isoformat()}"


def partition_file(data_dir: Path, table: str, day: date) -> Path:
    return partition_dir(data_dir, table, day) / PARTITION_FILE


def audio_dir(data_dir: Path) -> Path:
    return data_dir / "audio"


def archive_path(data_dir: Path, day: date, recording_id: str, extension: str) -> Path:
    """audio/YYYY/MM/DD/<recording_id>.<ext>; the ID is checked, the result stays inside audio/.

    The ID is checked before the extension: an unsafe ID's detail call is refused, so its format
    is unknown too, and the reason a person reads must name the ID, the actual problem."""
    base = audio_dir(data_dir)
    name = safe_id(recording_id)
    if extension not in ("mp3", "wav", "opus"):
        raise UnsafeIdentifier(f"refusing unknown audio extension {extension!r}")
    path = base / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / f"{name}.{extension}"
    if base.resolve() not in path.resolve().parents:
        raise UnsafeIdentifier(f"refusing {recording_id!r}: its path would leave the archive")
    return path


def download_staging_dir(data_dir: Path) -> Path:
    """Where downloads stream before they are judged: one folder for every day, so that what a
    killed run leaves is found by listing one folder, whatever day it was archiving. Inside
    audio/ so that publishing is a rename on the same file system; hidden from archive globs."""
    return audio_dir(data_dir) / ".downloads"


def quarantine_path(data_dir: Path, day: date, recording_id: str, extension: str) -> Path:
    return data_dir / "quarantine" / day.isoformat() / f"{safe_id(recording_id)}.{extension}"


def events_db(data_dir: Path) -> Path:
    return data_dir / "events" / "events.sqlite3"


def warehouse_path(data_dir: Path) -> Path:
    return data_dir / "warehouse.duckdb"
