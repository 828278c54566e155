"""Load the lake into `warehouse.duckdb`, the DuckDB file analysts keep open.

DuckDB lets a process write a database file only when no other process holds it open, even
read-only ("Could not set lock"), and analysts keep the warehouse open in the DuckDB CLI or a
notebook while the schedule runs. So the loader never opens what it publishes. The layout:

    warehouse.duckdb -> .warehouse/<build>/warehouse.duckdb   a symlink, the path analysts open
    .warehouse/<build>/warehouse.duckdb                       a build: ~3 rotate, named when last published
    .warehouse/base.duckdb                                    the loader's own copy, opened by no one else
    .warehouse.lock                                           loads take turns on this flock

Why a directory per build: DuckDB names a database's write-ahead log `<file>.wal` after the
symlink's *target* (and names the catalog after its file name, hence `warehouse.duckdb` in every
build directory). An analyst who opened the file read-write (the DuckDB CLI's default) keeps
writing the WAL of the build they opened, by name, even after a load has swapped a new one in,
and a killed session leaves that WAL behind. Seen with DuckDB 2.0.1: one file name renamed over
pairs the new file with the old WAL, and every reader then fails with "WAL does not match
database file" or "WAL checkpoint iteration does not match" until someone deletes the WAL. With a
new directory per build, a WAL only ever sits beside the build it belongs to.

Each load:
1. takes an exclusive `flock` on `.warehouse.lock`, so two loads (two runs) take turns;
2. in ONE explicit transaction on `base.duckdb` (or on a fresh file when a full rebuild is due),
   for every table: `DELETE ... WHERE partition_date IN (the run's days)` then `INSERT ... SELECT`
   from each day's Parquet file, then the settings row and the views from `sql/reports/` that
   changed, and in base's ledger (schema `loader`, base's alone) the load's sequence number and
   the days it replaced; COMMIT, which checkpoints straight into the file and fdatasyncs it
   (`checkpoint_threshold` 0: the day's rows are written once, compressed, not first into the WAL);
3. picks a spare build: not the one the link points at, not the one it pointed at before (a reader
   may have resolved the link a moment before the last swap), not one a DuckDB session holds (DuckDB
   holds an fcntl lock on a file for as long as a session has it open), and unchanged since the loader
   closed it (see below). It ATTACHes the spare to base's connection and, in one transaction,
   replaces every day the ledger logged since the spare was last published with base's rows of those
   days (each table and `warehouse_partitions`), then the settings row and the changed views;
   COMMIT (fdatasynced, as every checkpoint is), CHECKPOINT, DETACH. That is the catch-up: its cost
   is the days of the last ~3 loads, not the warehouse. Without a fit spare it copies `base.duckdb`
   into a new build instead (and drops the ledger from the copy);
4. renames the build's directory to a fresh name (when it is published), points a new symlink at it
   and renames that over `warehouse.duckdb`, then fsyncs the directory;
5. keeps the new build, the one it replaced and one spare (the most recent); removes the other
   builds nobody holds; records in base's ledger each kept build's load and the identity of its file
   as the loader left it (inode, size, mtime and a hash of DuckDB's headers, which every checkpoint
   rewrites), and drops the log no kept build needs any more.

A spare is copied afresh, not caught up (rare, O(warehouse)): while fewer than three builds exist
(the first loads), after a full rebuild (a fresh `base.duckdb` has an empty ledger, so it knows no
build of the warehouse it replaced: the generation is the file, and the table DDL, the phone-number
masking and the storage version change only through one), when the spare cannot be opened, when
anyone wrote into it since the loader closed it (its file's identity differs or a `.wal` lies beside
it), and while `base.duckdb` is smaller than `COPY_BELOW_BYTES`, where copying is cheaper (the
`copy_below_bytes` keyword overrides it). `LoadResult.published_by` says which (`catch-up` or `copy`,
with `copy_reason` and `bytes_copied`), as does the asset's metadata.

What that buys:
- An analyst's open session keeps the build it opened, whole, read-only or read-write; a session
  opened after the swap sees the whole new load. The load is never blocked by an analyst, and
  never breaks their session, even one that writes after the swap or is killed.
- Whatever an analyst writes, even checkpointed into the file, never reaches the next load: the
  loader builds on its own copy, and a build anyone wrote into is never caught up, only replaced
  by a copy, so the warehouse stays a function of the lake.
- A re-run of a day replaces exactly that day's rows (no doubles, no losses); a crash or a
  SIGKILL at any point leaves the published warehouse untouched; DuckDB's own recovery rolls an
  unfinished transaction on `base.duckdb` back at the next load. A spare killed half caught up is
  never published: the link moves only after its COMMIT and CHECKPOINT (both fdatasync it), and its
  changed identity makes the next load discard it.
- A full disk fails the load with the lake's one-line `DataDirError`, the warehouse unchanged.
- The warehouse is a pure function of the lake: a full rebuild (a fresh file, each table one
  `INSERT ... SELECT` over `read_parquet('lake/<table>/date=*/data.parquet')`) happens when
  there is no loader copy yet, when `sql/tables/*.sql` changed (schema_version), when the
  phone-number setting changed (the stored numbers are masked or not), when the copy is in
  another storage version than `STORAGE_VERSION`, when the copy does not open cleanly, or on
  request. The benchmark shows a full rebuild of 30 days x 2,000 recordings takes well under a
  second, so the fallback is cheap.

Costs, measured (`bench_warehouse.py --history`, see `COPY_BELOW_BYTES`): a one-day load opens
DuckDB once (`base.duckdb`; the spare and a fresh copy are ATTACHed to it), replaces the day with one
DELETE per table and one INSERT per table and day, re-runs a report view's DDL only when its file
changed (each view's comment holds the hash of the file it was made from), and writes the day once
into each file (every COMMIT checkpoints; no WAL copy of the rows). Publishing then costs, above
`COPY_BELOW_BYTES`, the catch-up: the last ~3 loads' days written again into the spare, whatever
the warehouse's size (195 ms a whole load at 18 MB, 240 ms at 99 MB, before the COMMIT checkpointed);
below it, copying base whole (127 ms at 18 MB, 190 ms at 99 MB; the copy alone is ~0.8 ms a MB),
which is cheaper there. Copies also happen in the cases above. The disk holds about four warehouses:
the loader's copy and up to three builds, plus any build an analyst holds open (kept, never written,
until they close it). Whatever an analyst writes into the file is lost at the next load: open it with
`duckdb -readonly`, which also lets the pipeline's report steps read the build at the same time (a
read-write session locks every other process out of the build it holds).

Phone numbers in `calls` are personal data: the load stores them masked with the warehouse
macro `mask_phone` ('***-***-' || last four digits) unless `show_phone_numbers` is set
(`AUDIAN_SHOW_PHONE_NUMBERS=1`), so a masked warehouse never holds a full number at all.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import duckdb

from audian_pipeline.lake.files import TEMP_PREFIX, data_dir_error, fsync_path, publish, temp_path_for
from audian_pipeline.lake.paths import partition_key, partitions_pattern, warehouse_path
from audian_pipeline.lake.tables import CALLS, TABLES as LAKE_TABLES
from audian_pipeline.storage import Store, lake_at

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
"""sql/: tables/*.sql (DDL, run in name order) and reports/*.sql. Reached through the package
(audian_pipeline/sql links to the top-level folder), so an installed wheel, which ships the
files as package data, finds them as the checkout does."""

TABLES = tuple(LAKE_TABLES)
"""The lake tables the warehouse holds, each with a partition_date column added."""

LOCK_NAME = ".warehouse.lock"
BUILDS_DIR = ".warehouse"
BASE_NAME = "base.duckdb"
BASE_CATALOG = "base"
"""The catalog DuckDB names after `base.duckdb` (its file name without the extension), the loader's one
connection's own: a catch-up USEs the spare and reads base's rows from here."""
_BUILD = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{8}$")
"""A build directory's name: when it was published, then a random part."""
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
_PARTITION_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")

STORAGE_VERSION = "v1.4.0"
"""The DuckDB storage format of every file the loader writes: the oldest DuckDB that must read the
warehouse. DuckDB 2.0 writes `v2.0.0+` files by default, which every DuckDB 1.x (the CLI, drivers
and BI tools most analysts run) refuses ("Trying to read a database file with version number
999"); `v1.4.0` files open in DuckDB 1.4 and later, 2.x included. DuckDB applies the setting when
it creates a file and keeps an existing file's format when it reopens it, so a loader copy written
in another format is rebuilt once (`_rebuild_reason`) rather than patched."""

COPY_BELOW_BYTES = 128 * 2**20
"""Publish by copying `base.duckdb` whole while it is smaller than this; catch a spare build up above it.

Measured with `bench_warehouse.py --history 30,90,180` (2,000 recordings a day, one run, medians of
nine one-day loads, page cache warm): whole loads took 127/170/190 ms by copy and 195/222/240 ms by
catch-up at 18/45/99 MB. The catch-up's fixed part (a second transaction, COMMIT and CHECKPOINT in
the spare, three days of rows) costs ~70 ms more than copying an 18 MB file; copying adds ~0.8 ms
a MB, the catch-up ~0.5. Copying was cheaper across the measured range and the lines meet near
300 MB; 128 MiB keeps the copy's O(warehouse) writes small and leaves larger accounts (30 days at
10,000 a day and up) on the catch-up, whose cost follows the day."""

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
    copy_reason: str | None = None
    """Why the loader's copy was copied whole into a new build (O(warehouse)); None: a spare build was
    caught up in place (O(days loaded))."""

    @property
    def published_by(self) -> str:
        """"catch-up" or "copy" (for `copy_reason`)."""
        return "catch-up" if self.copy_reason is None else "copy"

    @property
    def bytes_copied(self) -> int:
        """A copy writes the published file whole; a catch-up copies nothing."""
        return 0 if self.copy_reason is None else self.bytes


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


def lake_days(lake: Path | Store, tables: Iterable[str] = TABLES) -> list[date]:
    """Every UTC day that has a partition file in any of the tables (`lake`: a Store, or a data
    directory whose lake/ is the default lake)."""
    store = lake_at(lake)
    days: set[date] = set()
    for table in tables:
        for key in store.keys(partitions_pattern(table)):
            match = _PARTITION_DIR.match(key.split("/")[-2])
            if match:
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
    lake: Store | None = None,
    archive_retention_days: int | None = None,
    copy_below_bytes: int = COPY_BELOW_BYTES,
) -> LoadResult:
    """Replace the given days' rows of every table from the lake, and publish the warehouse.

    `days=None` (or `rebuild=True`) rebuilds every table from the whole lake. `as_of` is the
    "now" the report views use (default: the wall clock at load time). `lake` is where the lake
    lives (AUDIAN_LAKE_URL), default `data_dir/lake`; an S3 lake is read in place through
    DuckDB's `register_filesystem`, never copied to local disk first. `copy_below_bytes`: publish
    by copying `base.duckdb` whole while it is smaller than this (see `COPY_BELOW_BYTES`); 0 always
    catches a spare build up where one fits."""
    started = time.monotonic()
    data_dir = Path(data_dir)
    store = lake_at(lake or data_dir)
    target = warehouse_path(data_dir)
    wanted_days = sorted(set(days)) if days is not None else None
    as_of = (as_of or datetime.now(timezone.utc)).astimezone(timezone.utc)
    version = schema_version(sql_dir)
    settings = [as_of, storage_quota_bytes, show_phone_numbers, archive_retention_days]
    with _disk_errors(target), _loader_lock(data_dir, lock_timeout):
        _remove_stale_builds(data_dir, target)
        base = builds_dir(data_dir) / BASE_NAME
        con: duckdb.DuckDBPyConnection | None = None
        reason: str | None = "full rebuild requested"
        if not rebuild and wanted_days is not None:
            con, reason = _open_base(base, version, show_phone_numbers)
        if con is None:
            loaded_days = lake_days(store)
            loaded, ledger, counts = _rebuild_base(base, store, loaded_days, settings, version, sql_dir)
            con = _connect(base)
            con.execute("SET TimeZone = 'UTC'")
        with contextlib.closing(con):
            if reason is None:
                loaded_days = wanted_days or []
                if store.is_s3:
                    con.register_filesystem(store.fs)
                loaded = _load_days(con, store, loaded_days, show_phone_numbers)
                ledger = _log_load(con, loaded_days)
                counts = _finish(con, settings, version, sql_dir)
            why_copy = _publish_build(con, base, target, ledger, sql_dir, copy_below_bytes)
            con.execute("CHECKPOINT")
    return LoadResult(
        path=target, days=loaded_days, full_rebuild=reason is not None, rebuild_reason=reason,
        rows_by_table=counts, loaded_rows=loaded, seconds=time.monotonic() - started,
        bytes=target.stat().st_size, as_of=as_of, copy_reason=why_copy,
    )


def builds_dir(data_dir: Path) -> Path:
    """Hidden beside the link: the loader's copy and every published build (see the module doc)."""
    return Path(data_dir) / BUILDS_DIR


def _open_base(base: Path, version: str,
               show_phone_numbers: bool) -> tuple[duckdb.DuckDBPyConnection | None, str | None]:
    """`base.duckdb` opened once for the whole load, in UTC, inside the transaction that `_finish`
    commits; or (None, why a full rebuild is due). Each DuckDB open costs ~20 ms: the load, the
    catch-up (the spare is ATTACHed) and the ledger all go through this one connection."""
    if not base.exists():
        return None, "no warehouse yet"
    try:
        con = _connect(base)
    except duckdb.Error as exc:
        if _disk_errno(exc) is not None:
            raise
        return None, f"previous warehouse unreadable ({type(exc).__name__})"
    try:
        reason = _rebuild_reason(con, version, show_phone_numbers)
        if reason is None:
            con.execute("SET TimeZone = 'UTC'")
            con.execute("BEGIN TRANSACTION")
            return con, None
    except BaseException:
        con.close()
        raise
    con.close()
    return None, reason


def _rebuild_base(base: Path, store: Store, days: list[date], settings: list, version: str,
                  sql_dir: Path) -> tuple[dict[str, dict[date, int]], _Ledger, dict[str, int]]:
    """A fresh file from the whole lake, renamed over `base.duckdb` once whole (the old one stays
    until then). Its ledger is empty: no build of the warehouse it replaces can be caught up."""
    work = temp_path_for(base)
    work.parent.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.closing(_connect(work)) as con:
            con.execute("SET TimeZone = 'UTC'")
            con.execute("BEGIN TRANSACTION")
            if store.is_s3:
                con.register_filesystem(store.fs)
            for ddl in table_ddl_files(sql_dir):
                con.execute(ddl.read_text())
            loaded = _load_everything(con, store, days, settings[2])
            ledger = _log_load(con, [])
            counts = _finish(con, settings, version, sql_dir)
            con.execute("CHECKPOINT")  # fdatasyncs the file: whole on disk before it is renamed over base
        _wal(base).unlink(missing_ok=True)  # a killed loader's: it would not match the new file
        publish(work, base)
    finally:
        work.unlink(missing_ok=True)
        _wal(work).unlink(missing_ok=True)
    return loaded, ledger, counts


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    """Read-write, creating the file in `STORAGE_VERSION`. One configuration for every connection the
    loader makes: DuckDB refuses a second connection to a file it holds under another one.

    `checkpoint_threshold` 0: every COMMIT checkpoints straight into the file (base's and the spare's)
    instead of logging the day's rows in the WAL first, uncompressed, and writing them again at the
    CHECKPOINT after it. At 12,000 recordings a day that wrote 26 MB for a 4 MB day (now 8 MB) and took
~20% of a one-day load (per-statement timings, 30 retained days or the day alone alike)."""
    return duckdb.connect(str(path), config={"storage_compatibility_version": STORAGE_VERSION,
                                             "checkpoint_threshold": "0KB"})


def _storage_tag(con: duckdb.DuckDBPyConnection) -> str | None:
    """The storage format of the connection's file as DuckDB names it: `v1.4.0+` for a file that
    DuckDB 1.4 and later read (None on a DuckDB that does not report it)."""
    row = con.execute("SELECT tags FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    return row[0].get("storage_version") if row and isinstance(row[0], dict) else None


@functools.cache
def _wanted_storage_tag() -> str | None:
    """The tag of a file written in `STORAGE_VERSION` (several versions share one format: v1.4.3
    writes `v1.4.0+`), read from a scratch file since DuckDB has no function that maps the two."""
    with tempfile.TemporaryDirectory(prefix="audian-storage-") as scratch:
        with contextlib.closing(_connect(Path(scratch) / "probe.duckdb")) as con:
            return _storage_tag(con)


def _finish(con: duckdb.DuckDBPyConnection, settings: list, version: str, sql_dir: Path) -> dict[str, int]:
    """Settings row and changed views, COMMIT (which checkpoints, see `_connect`); rows per table.

    A failure before COMMIT leaves the transaction open: closing the connection rolls it back."""
    con.execute("DELETE FROM pipeline_settings")
    as_of, quota, show_numbers, retention = settings
    con.execute("INSERT INTO pipeline_settings VALUES (?, ?, ?, ?, ?, ?)",
                [as_of, quota, show_numbers, datetime.now(timezone.utc), version, retention])
    _refresh_views(con, sql_dir)
    con.execute("COMMIT")
    row = con.execute("SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES)).fetchone()
    assert row is not None
    return dict(zip(TABLES, row, strict=True))


def _refresh_views(con: duckdb.DuckDBPyConnection, sql_dir: Path) -> None:
    """Run the DDL of each report view whose file changed since it was made, in the current database.

    Each view's comment names the hash of the file it was made from: re-running all the DDL on every
    load (and into the spare) cost ~30 ms of a ~300 ms load, for views that almost never change."""
    made = dict(con.execute("SELECT view_name, comment FROM duckdb_views() "
                            "WHERE database_name = current_database() AND NOT internal").fetchall())
    for view in report_files(sql_dir):
        text = view.read_text()
        tag = f"made from sql/reports/{view.name} sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]}"
        if made.get(view.stem) != tag:
            con.execute(text)
            con.execute(f"COMMENT ON VIEW {view.stem} IS '{tag}'")


def _single_value(con: duckdb.DuckDBPyConnection, sql: str, parameters: list | None = None) -> Any:
    """The value of a statement that always answers one row (a count, an INSERT's row count)."""
    row = con.execute(sql, parameters).fetchone()
    assert row is not None, f"no row from {sql}"
    return row[0]


def _rebuild_reason(con: duckdb.DuckDBPyConnection, version: str, show_phone_numbers: bool) -> str | None:
    """Why `base` (open on `con`) cannot take this load's days in place (a full rebuild is due), or None."""
    try:
        row = con.execute("SELECT schema_version, show_phone_numbers FROM pipeline_settings").fetchone()
        storage = _storage_tag(con)
    except duckdb.Error as exc:
        if _disk_errno(exc) is not None:
            raise
        return f"previous warehouse unreadable ({type(exc).__name__})"
    if row is None or row[0] != version:
        return "table DDL in sql/tables changed"
    if row[1] != show_phone_numbers:
        return "AUDIAN_SHOW_PHONE_NUMBERS changed"
    if storage != _wanted_storage_tag():
        return f"storage version {storage}, not {_wanted_storage_tag()} (what DuckDB {STORAGE_VERSION} and later read)"
    return None


@dataclass(frozen=True)
class _BuildRecord:
    """What the ledger in `base.duckdb` knows of one build directory."""

    seq: int
    """The last load the build reflects (for the current build of a crashed load: when it was linked)."""
    identity: str | None
    """`_identity` of its file right after the loader closed it; None: never to be reused."""


@dataclass
class _Ledger:
    """The loader's bookkeeping in `base.duckdb`, read inside the load's own transaction."""

    seq: int
    """This load's sequence number."""
    logged_after: int
    """`loader.loads` holds the days of every load after this one: a build of an older seq cannot catch up."""
    builds: dict[str, _BuildRecord]


LEDGER_DDL = """
CREATE SCHEMA IF NOT EXISTS loader;
CREATE TABLE IF NOT EXISTS loader.state (load_seq BIGINT NOT NULL, logged_after BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS loader.loads (load_seq BIGINT NOT NULL, partition_date DATE NOT NULL);
CREATE TABLE IF NOT EXISTS loader.builds (build VARCHAR NOT NULL, load_seq BIGINT NOT NULL, identity VARCHAR);
"""
"""Only in `base.duckdb` (dropped from every copy): so a full rebuild, a fresh file, forgets every build of
the warehouse it replaces, and no build of another generation is ever caught up from it."""


def _log_load(con: duckdb.DuckDBPyConnection, days: list[date]) -> _Ledger:
    """Number this load and log the days it replaced, in the load's transaction: a build can be caught
    up exactly when the data and the log say the same thing."""
    con.execute(LEDGER_DDL)
    row = con.execute("SELECT load_seq, logged_after FROM loader.state").fetchone()
    if row is None:  # a fresh file: nothing before it can be caught up
        seq, logged_after = 1, 1
        con.execute("INSERT INTO loader.state VALUES (?, ?)", [seq, logged_after])
    else:
        seq, logged_after = row[0] + 1, row[1]
        con.execute("UPDATE loader.state SET load_seq = ?", [seq])
    if days:
        con.executemany("INSERT INTO loader.loads VALUES (?, ?)", [[seq, day] for day in days])
    builds = {name: _BuildRecord(build_seq, identity)
              for name, build_seq, identity in con.execute("SELECT * FROM loader.builds").fetchall()}
    return _Ledger(seq, logged_after, builds)


def _publish_build(con: duckdb.DuckDBPyConnection, base: Path, target: Path, ledger: _Ledger,
                   sql_dir: Path, copy_below_bytes: int) -> str | None:
    """Bring a spare build up to date (or copy `base` into a new one), then swap the link onto it; why
    it copied, or None after a catch-up.

    Never written: the build the link points at, the one it pointed at before, and any build a
    session holds. The new build is renamed to a fresh name before the swap, so a reader who resolved
    the link to a spare long ago finds no file rather than a changed one."""
    directory = base.parent
    current = _current_build(target)
    spares, junk = _sort_builds(directory, target.name, ledger.builds, ledger.logged_after,
                                exclude={current, _previous_build(directory, ledger.builds, current)})
    _discard(junk, target.name)
    build = directory / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    published = build / target.name  # DuckDB names the catalog after the file: `warehouse`, as before
    why_copy = _copy_policy(base, spares, copy_below_bytes)
    if why_copy is None:
        why_copy = _catch_up_spare(con, spares[0], build, published, ledger, sql_dir)
    try:
        if why_copy is not None:
            build.mkdir()
            con.execute("CHECKPOINT")  # every COMMIT checkpoints already; the copy takes the file alone, no WAL
            shutil.copyfile(base, published)
            _strip_ledger(con, published)
            fsync_path(published)  # written by copyfile, not by DuckDB (a caught-up spare's COMMIT fdatasynced it)
        fsync_path(build)
        fsync_path(directory)
        identity = _identity(published)
        link = temp_path_for(target)
        os.symlink(published.relative_to(target.parent), link)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)  # frees the space a full disk needs back; never linked
        raise
    publish(link, target)
    _wal(target).unlink(missing_ok=True)  # only a plain-file warehouse of before the link had one
    _keep_one_spare(con, base, target.name, ledger, build, current, identity)
    if why_copy is not None:
        log.info("warehouse published by copying the loader's copy: %s", why_copy)
    return why_copy


def _copy_policy(base: Path, spares: list[Path], copy_below_bytes: int) -> str | None:
    """Why this load publishes by copy whatever the spares (see `COPY_BELOW_BYTES`), or None."""
    if base.stat().st_size < copy_below_bytes:
        return f"smaller than {copy_below_bytes / 2**20:g} MiB: copying is cheaper"
    if not spares:
        return "no spare build to catch up yet"
    return None


def _catch_up_spare(con: duckdb.DuckDBPyConnection, spare: Path, build: Path, published: Path, ledger: _Ledger,
                    sql_dir: Path) -> str | None:
    """Catch `spare` up and rename it to `build`; or why it could not be (it is then discarded)."""
    database = spare / published.name
    try:
        why = _catch_up(con, database, ledger.builds[spare.name].seq, sql_dir)
    except BaseException:
        _discard([spare], published.name)  # half caught up (DuckDB rolls the transaction back): never published
        raise
    if why is not None:
        _discard([spare], published.name)
        return why
    os.rename(spare, build)
    return None


def _catch_up(con: duckdb.DuckDBPyConnection, database: Path, since: int, sql_dir: Path) -> str | None:
    """Replace in `database` every day logged after load `since` with base's rows of those days, in one
    transaction, then the settings row and any changed view; COMMIT, CHECKPOINT. Or why it cannot be opened.

    No check that the spare was built from the same DDL, phone-number masking and storage version: the
    ledger, base's alone, only knows builds published from this very `base.duckdb`, and any of those three
    changing makes a full rebuild, a fresh base with an empty ledger (`_rebuild_base`).

    The spare is ATTACHed to base's connection (one DuckDB open fewer, ~20 ms), and each table's
    days go in one DELETE and one INSERT: `partition_date IN (...)` still skips row groups by their
    zonemaps (EXPLAIN ANALYZE: "Row Groups Scanned: 1 / 3" at 180 days), as `=` did per day."""
    days = [day for (day,) in con.execute("SELECT DISTINCT partition_date FROM loader.loads WHERE load_seq > ? "
                                          "ORDER BY 1", [since]).fetchall()]
    try:  # fails if a session took the build since `_held` looked
        con.execute(f"ATTACH {_quoted(database)} AS {SPARE}")
    except duckdb.Error as exc:
        if _disk_errno(exc) is not None:
            raise
        return f"the spare build could not be opened ({type(exc).__name__})"
    try:
        _replace_days(con, days, sql_dir)
    finally:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")  # only if a statement failed inside the transaction
        con.execute(f"USE {BASE_CATALOG}")
        con.execute(f"DETACH {SPARE}")
    return None


SPARE = "spare"
"""The name the spare build is ATTACHed under on base's connection while it is caught up."""


def _replace_days(con: duckdb.DuckDBPyConnection, days: list[date], sql_dir: Path) -> None:
    """In the spare (USE'd, so the view DDL lands there), base's rows of `days`; COMMIT, CHECKPOINT."""
    con.execute(f"USE {SPARE}")
    con.execute("BEGIN TRANSACTION")
    if days:
        marks = ", ".join("?" for _ in days)
        for table in (*TABLES, "warehouse_partitions"):
            con.execute(f"DELETE FROM {table} WHERE partition_date IN ({marks})", days)
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {BASE_CATALOG}.main.{table} "
                        f"WHERE partition_date IN ({marks})", days)
    con.execute("DELETE FROM pipeline_settings")
    con.execute(f"INSERT INTO pipeline_settings BY NAME SELECT * FROM {BASE_CATALOG}.main.pipeline_settings")
    _refresh_views(con, sql_dir)
    con.execute("COMMIT")
    con.execute(f"CHECKPOINT {SPARE}")


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _strip_ledger(con: duckdb.DuckDBPyConnection, database: Path) -> None:
    """The loader's bookkeeping is base's alone: analysts never see it, and no build carries a stale one."""
    con.execute(f"ATTACH {_quoted(database)} AS {SPARE}")
    try:
        con.execute(f"DROP SCHEMA IF EXISTS {SPARE}.loader CASCADE")
        con.execute(f"CHECKPOINT {SPARE}")
    finally:
        con.execute(f"DETACH {SPARE}")


def _identity(database: Path) -> str | None:
    """The file as the loader left it: inode, size, mtime and a hash of DuckDB's headers (every
    checkpoint rewrites one with a new iteration count, whatever the clock's resolution). A session
    that wrote since changed one of them or left a WAL (`_sort_builds` checks that). None: no file."""
    try:
        stat = database.stat()
        with database.open("rb") as file:
            headers = hashlib.sha256(file.read(3 * 4096)).hexdigest()[:16]
    except FileNotFoundError:
        return None
    return f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{headers}"


def _previous_build(directory: Path, records: dict[str, _BuildRecord], current: Path | None) -> Path | None:
    """The build the link pointed at before `current`: the newest the ledger knows but the current one."""
    known = [(record.seq, name) for name, record in records.items() if directory / name != current]
    return directory / max(known)[1] if known else None


def _sort_builds(directory: Path, file_name: str, records: dict[str, _BuildRecord], logged_after: int,
                 exclude: set[Path | None]) -> tuple[list[Path], list[Path]]:
    """(builds that can be caught up, newest first; builds to remove). Held builds are in neither:
    never written, removed once released."""
    reusable: list[Path] = []
    junk: list[Path] = []
    for build in sorted(directory.iterdir()):
        if not _BUILD.match(build.name) or build in exclude or _held(build / file_name):
            continue
        record = records.get(build.name)
        fit = (record is not None and record.identity is not None and record.seq >= logged_after
               and not _wal(build / file_name).exists() and _identity(build / file_name) == record.identity)
        (reusable if fit else junk).append(build)
    reusable.sort(key=lambda build: records[build.name].seq, reverse=True)
    return reusable, junk


def _discard(builds: list[Path], file_name: str) -> None:
    """Remove builds no session holds (an analyst's killed session's WAL goes with its build)."""
    for build in builds:
        if not _held(build / file_name):
            shutil.rmtree(build, ignore_errors=True)


def _keep_one_spare(con: duckdb.DuckDBPyConnection, base: Path, file_name: str, ledger: _Ledger, build: Path,
                    previous: Path | None, identity: str | None) -> None:
    """After the swap: keep the new build, the one it replaced and the best spare; remove the rest
    nobody holds; record what is kept in base's ledger, and drop the log no kept build needs."""
    directory = base.parent
    records = dict(ledger.builds)
    records[build.name] = _BuildRecord(ledger.seq, identity)
    if previous is not None and previous.name not in records:  # linked by a load killed before it recorded it
        records[previous.name] = _BuildRecord(ledger.seq - 1, None)
    spares, junk = _sort_builds(directory, file_name, records, ledger.logged_after, exclude={build, previous})
    _discard(junk + spares[1:], file_name)
    kept = {build.name, *(b.name for b in (previous, *spares[:1]) if b is not None)}
    kept_records = {name: record for name, record in records.items() if name in kept}
    floor = min((record.seq for record in kept_records.values() if record.identity is not None), default=ledger.seq)
    con.execute("BEGIN TRANSACTION")
    con.execute("DELETE FROM loader.builds")
    con.executemany("INSERT INTO loader.builds VALUES (?, ?, ?)",
                    [[name, record.seq, record.identity] for name, record in kept_records.items()])
    con.execute("UPDATE loader.state SET logged_after = ?", [floor])
    con.execute("DELETE FROM loader.loads WHERE load_seq <= ?", [floor])
    con.execute("COMMIT")


def _current_build(target: Path) -> Path | None:
    """The build directory the link points at (None before the first linked load)."""
    if not target.is_symlink():
        return None
    return (target.parent / os.readlink(target)).parent


def _held(database: Path) -> bool:
    """Whether a DuckDB session has the file open: each holds an fcntl lock on it for its lifetime.

    Probing with an exclusive lock of our own cannot make a session fail: this runs only on
    builds the link no longer points at, which no session opens any more. (Closing the probe
    also drops a lock this very process's DuckDB holds on the file, POSIX-style: such a build
    may then be removed while read, which its open descriptor survives.)"""
    try:
        fd = os.open(database, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)  # releases our probe lock
    return False


@contextlib.contextmanager
def _disk_errors(target: Path) -> Iterator[None]:
    """A full or read-only disk as the lake and the archive report it, whoever hit it.

    DuckDB reports the system's error only in its message text ("Could not write file ...:
    No space left on device"), as an IOException, a TransactionException or a FatalException."""
    try:
        yield
    except OSError as exc:
        raise data_dir_error(exc, target) from None
    except duckdb.Error as exc:
        code = _disk_errno(exc)
        if code is None:
            raise
        raise data_dir_error(OSError(code, os.strerror(code)), target) from None


def _disk_errno(exc: duckdb.Error) -> int | None:
    text = str(exc)
    return next((code for code in _DISK_ERRNOS if os.strerror(code) in text), None)


def _select(table: str, show_phone_numbers: bool, *, hive: bool = False) -> str:
    """The lake columns as stored: `*`, without the hive `date` column, phone numbers masked."""
    star = "SELECT * EXCLUDE (date)" if hive else "SELECT *"
    if table == CALLS.name and not show_phone_numbers:
        star += " REPLACE (mask_phone(from_number) AS from_number, mask_phone(to_number) AS to_number)"
    return star


def _load_days(
    con: duckdb.DuckDBPyConnection, lake: Store, days: list[date], show_phone_numbers: bool
) -> dict[str, dict[date, int]]:
    """Per table: delete the days' rows in one statement, insert each day's partition (if any)."""
    loaded: dict[str, dict[date, int]] = {t: {} for t in TABLES}
    if not days:
        return loaded
    marks = ", ".join("?" for _ in days)
    con.execute(f"DELETE FROM warehouse_partitions WHERE partition_date IN ({marks})", days)
    for table in TABLES:
        con.execute(f"DELETE FROM {table} WHERE partition_date IN ({marks})", days)
        for day in days:
            key = partition_key(table, day)
            loaded[table][day] = _single_value(
                con,
                f"INSERT INTO {table} BY NAME {_select(table, show_phone_numbers)}, ?::DATE AS partition_date "
                "FROM read_parquet(?, hive_partitioning = false)",  # else DuckDB adds `date` from the folder
                [day, lake.url_of(key)],
            ) if lake.exists(key) else 0
    _record_partitions(con, loaded)
    return loaded


def _record_partitions(con: duckdb.DuckDBPyConnection, loaded: dict[str, dict[date, int]]) -> None:
    """`warehouse_partitions`' rows for what was just loaded, in one statement."""
    rows = [(table, day, n) for table, by_day in loaded.items() for day, n in by_day.items()]
    if rows:
        tables, days, counts = (list(column) for column in zip(*rows, strict=True))
        con.execute("INSERT INTO warehouse_partitions SELECT unnest(?::VARCHAR[]), unnest(?::DATE[]), "
                    "unnest(?::BIGINT[]), ?", [tables, days, counts, datetime.now(timezone.utc)])


def _load_everything(
    con: duckdb.DuckDBPyConnection, lake: Store, days: list[date], show_phone_numbers: bool
) -> dict[str, dict[date, int]]:
    """Each table in one statement over all its partitions (the hive `date=` folder is the day).

    Every day any table has is recorded for all four, with 0 rows where a table has no file,
    as a per-day load of that day would."""
    loaded: dict[str, dict[date, int]] = {t: {} for t in TABLES}
    for table in TABLES:
        if lake_days(lake, [table]):  # else the DDL's empty table of the right schema stays
            pattern = lake.url_of(partitions_pattern(table))
            con.execute(
                f"INSERT INTO {table} BY NAME {_select(table, show_phone_numbers, hive=True)}, date AS partition_date "
                "FROM read_parquet(?, hive_partitioning = true, hive_types = {'date': DATE}, union_by_name = true)",
                [pattern],
            )
        counts = dict(con.execute(f"SELECT partition_date, count(*) FROM {table} GROUP BY ALL").fetchall())
        loaded[table] = {day: counts.get(day, 0) for day in days}
    _record_partitions(con, loaded)
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


def _remove_stale_builds(data_dir: Path, target: Path) -> None:
    """What a dead load left (we hold the lock, so no load is writing them): its fresh-rebuild
    file, its link not yet renamed; and a plain-file warehouse's temporaries of before the link."""
    stale = [*data_dir.glob(f"{TEMP_PREFIX}*-{target.name}.partial*"),
             *builds_dir(data_dir).glob(f"{TEMP_PREFIX}*-{BASE_NAME}.partial*")]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary file(s) left by an interrupted load", len(stale))


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")
