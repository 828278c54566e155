"""Reading and writing one day's partition of a lake table."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from audian_pipeline.lake.files import atomic_writer, remove_stale_temporaries
from audian_pipeline.lake.paths import partition_file
from audian_pipeline.lake.schemas import SCHEMAS


def to_table(table: str, rows: Iterable[Mapping]) -> pa.Table:
    """Rows (dicts) to an Arrow table of the table's declared schema; a wrong type fails here."""
    schema = SCHEMAS[table]
    rows = list(rows)
    return pa.Table.from_pydict({f.name: [row.get(f.name) for row in rows] for f in schema}, schema=schema)


def write_partition(data_dir: Path, table: str, day: date, data: pa.Table) -> tuple[Path, int]:
    """Replace the day's partition atomically; returns (path, bytes written)."""
    schema = SCHEMAS[table]
    if not data.schema.equals(schema, check_metadata=False):
        data = data.cast(schema)
    target = partition_file(data_dir, table, day)
    remove_stale_temporaries(target.parent)
    with atomic_writer(target) as handle:
        pq.write_table(data.replace_schema_metadata(schema.metadata), handle, compression="zstd")
    return target, target.stat().st_size


def read_partition(data_dir: Path, table: str, day: date) -> pa.Table | None:
    """The stored partition, or None if the day was never written."""
    path = partition_file(data_dir, table, day)
    if not path.exists():
        return None
    return pq.read_table(path, schema=SCHEMAS[table])


def read_rows(data_dir: Path, table: str, day: date) -> list[dict]:
    stored = read_partition(data_dir, table, day)
    return stored.to_pylist() if stored is not None else []
