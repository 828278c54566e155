"""Reading and writing one day's partition of a lake table, wherever the lake lives.

`lake` is a `Store` (AUDIAN_LAKE_URL, a directory or s3://…) or, for local callers, the data
directory whose `lake/` folder is the default lake."""

from __future__ import annotations

import io
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from audian_pipeline.lake.files import atomic_writer, data_dir_error, remove_stale_temporaries
from audian_pipeline.lake.paths import partition_key
from audian_pipeline.lake.tables import Table
from audian_pipeline.storage import Store, lake_at


def to_table(table: Table, rows: Iterable[Mapping]) -> pa.Table:
    """Rows (dicts) to an Arrow table of the table's declared schema; a wrong type fails here."""
    schema = table.schema
    rows = list(rows)
    return pa.Table.from_pydict({f.name: [row.get(f.name) for row in rows] for f in schema}, schema=schema)


def write_partition(lake: Path | Store, table: Table, day: date, data: pa.Table) -> tuple[str, int]:
    """Replace the day's partition atomically; returns (its path or URL, bytes written).

    On S3 the file is built in memory (a day of one table is a few MB at most) and sent as one
    PUT under the final key: readers see the old object or the new one, never neither."""
    store, key = lake_at(lake), partition_key(table.name, day)
    schema = table.schema
    if not data.schema.equals(schema, check_metadata=False):
        data = data.cast(schema)
    data = data.replace_schema_metadata(schema.metadata)
    if store.is_s3:
        buffer = io.BytesIO()
        pq.write_table(data, buffer, compression="zstd")
        store.write_bytes(key, buffer.getvalue())
        return store.url_of(key), buffer.tell()
    target = store.local(key)
    remove_stale_temporaries(target.parent)
    try:
        with atomic_writer(target) as handle:
            pq.write_table(data, handle, compression="zstd")
    except OSError as exc:
        raise data_dir_error(exc, target) from None
    return str(target), target.stat().st_size


def read_partition(lake: Path | Store, table: Table, day: date) -> pa.Table | None:
    """The stored partition, or None if the day was never written.

    Read with ParquetFile rather than pq.read_table: the latter goes through pyarrow.dataset,
    which imports pandas (+50 MiB, 0.15 s) for a file we wrote ourselves with this schema."""
    store, key = lake_at(lake), partition_key(table.name, day)
    source: str | pa.BufferReader
    if store.is_s3:
        stored_bytes = store.read_bytes(key)
        if stored_bytes is None:
            return None
        source = pa.BufferReader(stored_bytes)
    else:
        if not store.exists(key):
            return None
        source = str(store.local(key))
    stored = pq.ParquetFile(source).read()
    schema = table.schema
    if stored.schema.equals(schema, check_metadata=False):
        return stored
    if isinstance(source, pa.BufferReader):
        source.seek(0)
    return pq.read_table(source, schema=schema)  # an older layout: let the dataset reader conform it


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _python_values(column: pa.ChunkedArray, kind: pa.DataType) -> list:
    """Like to_pylist, but UTC timestamps are built from integers: pyarrow builds each one
    through zoneinfo, which made reading a partition the slowest part of a warm re-run."""
    if pa.types.is_timestamp(kind) and kind.unit == "us" and kind.tz in ("UTC", "+00:00"):
        return [None if v is None else _EPOCH + timedelta(microseconds=v) for v in column.cast(pa.int64()).to_pylist()]
    return column.to_pylist()


def read_rows(lake: Path | Store, table: Table, day: date) -> list[dict]:
    stored = read_partition(lake, table, day)
    if stored is None:
        return []
    names = stored.schema.names
    columns = [_python_values(column, field.type) for column, field in zip(stored.columns, stored.schema, strict=True)]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
