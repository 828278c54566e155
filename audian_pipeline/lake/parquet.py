"""Reading and writing one day's partition of a lake table."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from audian_pipeline.lake.files import atomic_writer, data_dir_error, remove_stale_temporaries
from audian_pipeline.lake.paths import partition_file
from audian_pipeline.lake.tables import Table


def to_table(table: Table, rows: Iterable[Mapping]) -> pa.Table:
    """Rows (dicts) to an Arrow table of the table's declared schema; a wrong type fails here."""
    schema = table.schema
    rows = list(rows)
    return pa.Table.from_pydict({f.name: [row.get(f.name) for row in rows] for f in schema}, schema=schema)


def write_partition(data_dir: Path, table: Table, day: date, data: pa.Table) -> tuple[Path, int]:
    """Replace the day's partition atomically; returns (path, bytes written)."""
    schema = table.schema
    if not data.schema.equals(schema, check_metadata=False):
        data = data.cast(schema)
    target = partition_file(data_dir, table.name, day)
    remove_stale_temporaries(target.parent)
    try:
        with atomic_writer(target) as handle:
            pq.write_table(data.replace_schema_metadata(schema.metadata), handle, compression="zstd")
    except OSError as exc:
        raise data_dir_error(exc, target) from None
    return target, target.stat().st_size


def read_partition(data_dir: Path, table: Table, day: date) -> pa.Table | None:
    """The stored partition, or None if the day was never written.

    Read with ParquetFile rather than pq.read_table: the latter goes through pyarrow.dataset,
    which imports pandas (+50 MiB, 0.15 s) for a file we wrote ourselves with this schema."""
    path = partition_file(data_dir, table.name, day)
    if not path.exists():
        return None
    stored = pq.ParquetFile(path).read()
    schema = table.schema
    if stored.schema.equals(schema, check_metadata=False):
        return stored
    return pq.read_table(path, schema=schema)  # an older layout: let the dataset reader conform it


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _python_values(column: pa.ChunkedArray, kind: pa.DataType) -> list:
    """Like to_pylist, but UTC timestamps are built from integers: pyarrow builds each one
    through zoneinfo, which made reading a partition the slowest part of a warm re-run."""
    if pa.types.is_timestamp(kind) and kind.unit == "us" and kind.tz in ("UTC", "+00:00"):
        return [None if v is None else _EPOCH + timedelta(microseconds=v) for v in column.cast(pa.int64()).to_pylist()]
    return column.to_pylist()


def read_rows(data_dir: Path, table: Table, day: date) -> list[dict]:
    stored = read_partition(data_dir, table, day)
    if stored is None:
        return []
    names = stored.schema.names
    columns = [_python_values(column, field.type) for column, field in zip(stored.columns, stored.schema, strict=True)]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
