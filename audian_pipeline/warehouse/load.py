"""Load the lake into `warehouse.duckdb`, the DuckDB file analysts keep open.

DuckDB lets a process write a database file only when no other process holds it open, even
read-only ("Could not set lock"), and analysts keep the warehouse open in the DuckDB CLI or a
notebook while the schedule runs. So the loader never opens the published file. Each load:

1. takes an exclusive `flock` on `.warehouse.lock`, so two loads (two runs) take turns;
2. copies the published `warehouse.duckdb` to a hidden `.tmp-<uuid>-warehouse.duckdb.partial`
   beside it (a plain read: it needs no DuckDB lock, so an analyst's session, read-only or not,
   does not block it), or starts an empty file when a full rebuild is due;
3. in ONE explicit transaction on that private copy, for every day of the run and every table:
   `DELETE ... WHERE partition_date = day` then `INSERT ... SELECT` from that day's Parquet file,
   then the settings row and the views from `sql/reports/`; COMMIT, CHECKPOINT, close, fsync;
4. `os.replace`s the copy onto `warehouse.duckdb` and fsyncs the directory.

What that buys:
- An analyst's open connection keeps reading the old inode (POSIX rename semantics) and never
  sees half a load; a connection opened after the rename sees the whole new load. The load is
  never blocked by an analyst, and never breaks their session.
- A re-run of a day replaces exactly that day's rows (no doubles, no losses); a crash or a
  SIGKILL at any point leaves the previous warehouse untouched, plus a hidden temporary that
  the next load deletes (it holds the lock, so no other load can be writing it).
- The warehouse is a pure function of the lake: a full rebuild (a fresh file, each table one
  `INSERT ... SELECT` over `read_parquet('lake/<table>/date=*/data.parquet')`) happens when
  there is no warehouse yet, when `sql/tables/*.sql` changed (schema_version), when the
  phone-number setting changed (the stored numbers are masked or not), when the copied file
  does not open cleanly, or on request. The benchmark shows a full rebuild of 30 days x 2,000
  recordings takes well under a second, so the fallback is cheap.

Costs, on purpose: each load copies the file (a few MB per 100k recordings), and an analyst
holding a connection open for days keeps the old file's blocks allocated until they close it.
An analyst who opens the file read-WRITE (the DuckDB CLI's default) does not stop loads, but
whatever they write is lost at the next swap: open it with `duckdb -readonly`.

Phone numbers in `calls` are personal data: the load stores them masked with the warehouse
macro `mask_phone` ('***-***-' || last four digits) unless `show_phone_numbers` is set
(`AUDIAN_SHOW_PHONE_NUMBERS=1`), so a masked warehouse never holds a full number at all.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import duckdb

from audian_pipeline.lake.files import TEMP_PREFIX, fsync_path, publish, temp_path_for
from audian_pipeline.lake.paths import PARTITION_FILE, partition_file, table_dir, warehouse_path
from audian_pipeline.lake.schemas import SCHEMAS

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
"""The repository's sql/ folder: tables/*.sql (DDL, run in name order) and reports/*.sql."""

TABLES = tuple(SCHEMAS)
"""The lake tables the warehouse holds, each with a partition_date column added."""

LOCK_NAME = ".warehouse.lock"
_PARTITION_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")

log = logging.getLogger(__name__)


class WarehouseBusy(RuntimeError):
    """Another load held the loader lock for longer than the timeout."""


@dataclass
class LoadResult:
    """What one load did, for Dagster metadata and tests."""

    path: Path
    days: list[date]
    full_rebuild: bool
    rebuild_reason: str | None
    rows_by_table: dict[str, int]
    """Rows of each table in the published warehouse, after the load."""
    loaded_rows: dict[str, dict[date, int]] = field(default_factory=dict)
    """Rows inserted per table and day by this load."""
    seconds: float = 0.0
    bytes: int = 0
    as_of: datetime | None = None


def table_ddl_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    return sorted((sql_dir / "tables").glob("*.sql"))


def report_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    return sorted((sql_dir / "reports").glob("*.sql"))


def schema_version(sql_dir: Path = SQL_DIR) -> str:
    """A hash of the table DDL: a warehouse built from other DDL is rebuilt, never patched."""
    digest = hashlib.sha256()
    for path in table_ddl_files(sql_dir):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def lake_days(data_dir: Path, tables: Iterable[str] = TABLES) -> list[date]:
    """Every UTC day that has a partition file in any of the tables."""
    days: set[date] = set()
    for table in tables:
        directory = table_dir(data_dir, table)
        if not directory.is_dir():
            continue
        for child in directory.iterdir():
            match = _PARTITION_DIR.match(child.name)
            if match and (child / PARTITION_FILE).is_file():
                days.add(date.fromisoformat(match.group(1)))
    return sorted(days)


def load_warehouse(
    data_dir: Path,
    days: Iterable[date] | None = None,
    *,
    storage_quota_bytes: int,
    show_phone_numbers: bool = False,
    as_of: datetime | None = None,
    rebuild: bool = False,
    lock_timeout: float = 600.0,
    sql_dir: Path = SQL_DIR,
) -> LoadResult:
    """Replace the given days' rows of every table from the lake, and publish the warehouse.

    `days=None` (or `rebuild=True`) rebuilds every table from the whole lake. `as_of` is the
    "now" the report views use (default: the wall clock at load time)."""
    started = time.monotonic()
    data_dir = Path(data_dir)
    target = warehouse_path(data_dir)
    wanted_days = sorted(set(days)) if days is not None else None
    as_of = (as_of or datetime.now(timezone.utc)).astimezone(timezone.utc)
    version = schema_version(sql_dir)
    with _loader_lock(data_dir, lock_timeout):
        removed = _remove_stale_builds(data_dir, target)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted load", removed)
        temp = temp_path_for(target)
        try:
            reason = "full rebuild requested" if rebuild or wanted_days is None else _copy_previous(target, temp, version, show_phone_numbers)
            con = duckdb.connect(str(temp))
            try:
                con.execute("SET TimeZone = 'UTC'")
                con.execute("BEGIN TRANSACTION")
                if reason is not None:
                    for ddl in table_ddl_files(sql_dir):
                        con.execute(ddl.read_text())
                    loaded_days = lake_days(data_dir)
                    loaded = _load_everything(con, data_dir, loaded_days, show_phone_numbers)
                else:
                    loaded_days = wanted_days or []
                    loaded = _load_days(con, data_dir, loaded_days, show_phone_numbers)
                con.execute("DELETE FROM pipeline_settings")
                con.execute(
                    "INSERT INTO pipeline_settings VALUES (?, ?, ?, ?, ?)",
                    [as_of, storage_quota_bytes, show_phone_numbers, datetime.now(timezone.utc), version],
                )
                for view in report_files(sql_dir):
                    con.execute(view.read_text())
                con.execute("COMMIT")
                con.execute("CHECKPOINT")
                counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
            finally:
                con.close()
            fsync_path(temp)
            publish(temp, target)
        finally:
            temp.unlink(missing_ok=True)
            _wal(temp).unlink(missing_ok=True)
    return LoadResult(
        path=target, days=loaded_days, full_rebuild=reason is not None, rebuild_reason=reason,
        rows_by_table=counts, loaded_rows=loaded, seconds=time.monotonic() - started,
        bytes=target.stat().st_size, as_of=as_of,
    )


def _copy_previous(target: Path, temp: Path, version: str, show_phone_numbers: bool) -> str | None:
    """Copy the published warehouse to `temp`; returns why a full rebuild is due instead, or None."""
    if not target.exists():
        return "no warehouse yet"
    shutil.copyfile(target, temp)
    try:
        with contextlib.closing(duckdb.connect(str(temp))) as con:
            row = con.execute("SELECT schema_version, show_phone_numbers FROM pipeline_settings").fetchone()
    except duckdb.Error as exc:
        reason = f"previous warehouse unreadable ({type(exc).__name__})"
    else:
        if row is None or row[0] != version:
            reason = "table DDL in sql/tables changed"
        elif row[1] != show_phone_numbers:
            reason = "AUDIAN_SHOW_PHONE_NUMBERS changed"
        else:
            return None
    temp.unlink(missing_ok=True)
    _wal(temp).unlink(missing_ok=True)
    return reason


def _select(table: str, show_phone_numbers: bool, *, hive: bool = False) -> str:
    """The lake columns as stored: `*`, without the hive `date` column, phone numbers masked."""
    star = "SELECT * EXCLUDE (date)" if hive else "SELECT *"
    if table == "calls" and not show_phone_numbers:
        star += " REPLACE (mask_phone(from_number) AS from_number, mask_phone(to_number) AS to_number)"
    return star


def _load_days(
    con: duckdb.DuckDBPyConnection, data_dir: Path, days: list[date], show_phone_numbers: bool
) -> dict[str, dict[date, int]]:
    """Per table and day: delete the day's rows, insert the day's partition (if any)."""
    loaded: dict[str, dict[date, int]] = {t: {} for t in TABLES}
    now = datetime.now(timezone.utc)
    for day in days:
        for table in TABLES:
            con.execute(f"DELETE FROM {table} WHERE partition_date = ?", [day])
            con.execute("DELETE FROM warehouse_partitions WHERE table_name = ? AND partition_date = ?", [table, day])
            source = partition_file(data_dir, table, day)
            rows = 0
            if source.is_file():
                rows = con.execute(
                    f"INSERT INTO {table} BY NAME {_select(table, show_phone_numbers)}, ?::DATE AS partition_date "
                    "FROM read_parquet(?, hive_partitioning = false)",  # else DuckDB adds `date` from the folder
                    [day, str(source)],
                ).fetchone()[0]
            loaded[table][day] = rows
            con.execute("INSERT INTO warehouse_partitions VALUES (?, ?, ?, ?)", [table, day, rows, now])
    return loaded


def _load_everything(
    con: duckdb.DuckDBPyConnection, data_dir: Path, days: list[date], show_phone_numbers: bool
) -> dict[str, dict[date, int]]:
    """Each table in one statement over all its partitions (the hive `date=` folder is the day).

    Every day any table has is recorded for all four, with 0 rows where a table has no file,
    as a per-day load of that day would."""
    loaded: dict[str, dict[date, int]] = {t: {} for t in TABLES}
    now = datetime.now(timezone.utc)
    for table in TABLES:
        if lake_days(data_dir, [table]):  # else the DDL's empty table of the right schema stays
            pattern = str(table_dir(data_dir, table) / "date=*" / PARTITION_FILE)
            con.execute(
                f"INSERT INTO {table} BY NAME {_select(table, show_phone_numbers, hive=True)}, date AS partition_date "
                "FROM read_parquet(?, hive_partitioning = true, hive_types = {'date': DATE}, union_by_name = true)",
                [pattern],
            )
        counts = dict(con.execute(f"SELECT partition_date, count(*) FROM {table} GROUP BY ALL").fetchall())
        for day in days:
            loaded[table][day] = counts.get(day, 0)
            con.execute("INSERT INTO warehouse_partitions VALUES (?, ?, ?, ?)", [table, day, counts.get(day, 0), now])
    return loaded


@contextlib.contextmanager
def _loader_lock(data_dir: Path, timeout: float) -> Iterator[None]:
    """An exclusive flock: released by the kernel if the holder dies, so a SIGKILL never wedges it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise WarehouseBusy(
                        f"another warehouse load has held {data_dir / LOCK_NAME} for over {timeout:.0f} s"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _remove_stale_builds(data_dir: Path, target: Path) -> int:
    """Temporaries of earlier loads: only a dead load leaves one, since we hold the lock."""
    removed = 0
    for stale in data_dir.glob(f"{TEMP_PREFIX}*-{target.name}.partial*"):
        stale.unlink(missing_ok=True)
        removed += 1
    return removed


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")
