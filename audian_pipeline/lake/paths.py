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


def partition_key(table: str, day: date) -> str:
    """The partition's key under the lake's root (AUDIAN_LAKE_URL), wherever that lives."""
    return f"{table}/date={day.isoformat()}/{PARTITION_FILE}"


def partitions_pattern(table: str) -> str:
    """A glob of every partition key of the table: hive `date=` folders, one file each."""
    return f"{table}/date=*/{PARTITION_FILE}"


def archive_key(day: date, recording_id: str, extension: str) -> str:
    """audio/YYYY/MM/DD/<recording_id>.<ext> under the archive's root (AUDIAN_ARCHIVE_URL).

    The ID is checked before the extension: an unsafe ID's detail call is refused, so its format
    is unknown too, and the reason a person reads must name the ID, the actual problem. The
    checked ID holds no '/' or '.', so the key cannot leave audio/."""
    name = safe_id(recording_id)
    if extension not in ("mp3", "wav", "opus"):
        raise UnsafeIdentifier(f"refusing unknown audio extension {extension!r}")
    return f"audio/{day:%Y}/{day:%m}/{day:%d}/{name}.{extension}"


def quarantine_key(day: date, recording_id: str, extension: str) -> str:
    return f"quarantine/{day.isoformat()}/{safe_id(recording_id)}.{extension}"


def audio_dir(data_dir: Path) -> Path:
    return data_dir / "audio"


def download_spool_dir(data_dir: Path) -> Path:
    """Where downloads for an S3 archive stream before they are judged: local, under
    AUDIAN_DATA_DIR, so nothing unverified is ever stored under the archive's prefix."""
    return data_dir / "spool"


def events_db(data_dir: Path) -> Path:
    return data_dir / "events" / "events.sqlite3"


def warehouse_path(data_dir: Path) -> Path:
    return data_dir / "warehouse.duckdb"
