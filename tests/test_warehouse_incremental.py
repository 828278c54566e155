"""A one-day warehouse load costs one day, not the whole warehouse: the loader brings a spare build
up to date in place (catch-up) instead of copying its private copy into a new build each time.

Real DuckDB files, a real Parquet lake, analysts in real second processes. Each published warehouse
is compared, table by table and view by view, with a full rebuild of the same lake in another
directory: reusing builds must never make the warehouse anything but a function of the lake."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from benchmarks.bench_warehouse import write_synthetic_lake

from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.storage import lake_at
from audian_pipeline.warehouse.load import COPY_BELOW_BYTES, SQL_DIR, TABLES, report_files

from test_warehouse import AS_OF, QUOTA, load as load_all_tables
from test_warehouse_hardening import Analyst

DAYS = [date(2026, 11, 1) + timedelta(days=i) for i in range(10)]
PER_DAY = 40


def snapshot(path: Path) -> dict[str, list]:
    """Every table and report view of a warehouse file, rows sorted; the wall-clock `loaded_at` left out."""
    with duckdb.connect(str(path), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        names = con.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables() "
                            "WHERE database_name = current_database() ORDER BY 1").fetchall()
        rows = {"tables": names}
        for table in [*TABLES, "warehouse_partitions", "pipeline_settings"]:
            exclude = " EXCLUDE (loaded_at)" if table in ("warehouse_partitions", "pipeline_settings") else ""
            rows[table] = con.execute(f"SELECT *{exclude} FROM {table} ORDER BY ALL").fetchall()
        for view in report_files():
            rows[view.stem] = con.execute(f"SELECT * FROM {view.stem} ORDER BY ALL").fetchall()
    return rows


def rebuilt_from_the_lake(data_dir: Path, scratch: Path, **options) -> dict[str, list]:
    """What a full rebuild of the same lake, in a warehouse of its own, holds."""
    scratch.mkdir()
    load(scratch, None, lake=lake_at(data_dir), **options)
    return snapshot(warehouse_path(scratch))


def published_identity(data_dir: Path) -> tuple[int, int]:
    stat = os.stat(warehouse_path(data_dir))  # follows the link to the published build's file
    return stat.st_dev, stat.st_ino


def one_day(data_dir: Path, day: date, seed: int, **options):
    write_synthetic_lake(data_dir, [day], PER_DAY, seed=seed)
    return load(data_dir, [day], **options)


def load(data_dir: Path, days=None, **options):
    """These warehouses are far below COPY_BELOW_BYTES: catch spares up anyway, the path under test."""
    options.setdefault("copy_below_bytes", 0)
    return load_all_tables(data_dir, days, **options)


@pytest.fixture(name="history")
def history_fixture(data_dir: Path) -> Path:
    """Three days of lake, loaded in full: the first published build."""
    write_synthetic_lake(data_dir, DAYS[:3], PER_DAY)
    assert load(data_dir).full_rebuild
    return data_dir


def test_from_the_third_one_day_load_on_a_spare_build_is_caught_up_and_equals_a_full_rebuild(history, tmp_path):
    files = {published_identity(history)}
    for n, day in enumerate(DAYS[3:8]):
        as_of = AS_OF + timedelta(hours=n)
        result = one_day(history, day, seed=10 + n, as_of=as_of)
        identity = published_identity(history)
        if n < 2:  # the current and the previous build may be read: no spare to reuse yet
            assert result.published_by == "copy" and result.bytes_copied > 0
            assert identity not in files
        else:
            assert result.published_by == "catch-up" and result.bytes_copied == 0, result.copy_reason
            assert identity in files  # the same file as a build published before, brought up to date
        files.add(identity)
        assert snapshot(warehouse_path(history)) == rebuilt_from_the_lake(history, tmp_path / f"rebuild-{n}",
                                                                          as_of=as_of)
    write_synthetic_lake(history, [DAYS[1]], PER_DAY + 7, seed=99)  # a re-run of an old day changes it
    write_synthetic_lake(history, [DAYS[8]], PER_DAY, seed=98)
    result = load(history, [DAYS[1], DAYS[8]], as_of=AS_OF)
    assert result.published_by == "catch-up"
    assert snapshot(warehouse_path(history)) == rebuilt_from_the_lake(history, tmp_path / "rebuild-rerun")


@pytest.mark.parametrize("analyst_leaves", ["closed", "killed"])
def test_a_build_an_analyst_wrote_into_is_not_reused(history, tmp_path, analyst_leaves):
    written = warehouse_path(history).resolve()
    analyst = Analyst(warehouse_path(history))  # read-write, the DuckDB CLI's default
    analyst.run("DELETE FROM recordings WHERE duration > 100")
    analyst.run("CREATE TABLE my_notes AS SELECT 42 AS answer")
    if analyst_leaves == "closed":
        analyst.close()  # checkpoints the changes into the build's file
    else:
        analyst.kill()  # leaves the changes in the build's WAL
    for n, day in enumerate(DAYS[3:6]):
        result = one_day(history, day, seed=10 + n)
    assert result.published_by == "copy", "the written build was the only spare: it must be copied afresh"
    assert not written.exists()
    assert snapshot(warehouse_path(history)) == rebuilt_from_the_lake(history, tmp_path / "rebuild")
    assert one_day(history, DAYS[6], seed=20).published_by == "catch-up"
    assert snapshot(warehouse_path(history)) == rebuilt_from_the_lake(history, tmp_path / "rebuild-next")


def test_a_spare_build_held_open_read_only_is_skipped_and_never_written(history, tmp_path):
    held = warehouse_path(history).resolve()
    reader = Analyst(warehouse_path(history), "read_only")
    try:
        before = reader.run("SELECT count(*), sum(duration) FROM recordings")
        stat = held.stat()
        for n, day in enumerate(DAYS[3:6]):
            result = one_day(history, day, seed=10 + n)
        assert result.published_by == "copy"  # the only spare is held
        assert (held.stat().st_size, held.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
        assert reader.run("SELECT count(*), sum(duration) FROM recordings") == before
    finally:
        reader.close()
    assert one_day(history, DAYS[6], seed=20).published_by == "catch-up"
    assert snapshot(warehouse_path(history)) == rebuilt_from_the_lake(history, tmp_path / "rebuild")


def test_after_a_full_rebuild_the_spares_of_the_old_warehouse_are_not_reused(history, tmp_path):
    for n, day in enumerate(DAYS[3:6]):
        assert one_day(history, day, seed=10 + n).published_by == ("catch-up" if n == 2 else "copy")
    rebuilt = one_day(history, DAYS[6], seed=20, show_phone_numbers=True)  # AUDIAN_SHOW_PHONE_NUMBERS changed
    assert rebuilt.full_rebuild and rebuilt.published_by == "copy"
    for n, day in enumerate(DAYS[7:10]):
        result = one_day(history, day, seed=30 + n, show_phone_numbers=True)
        assert result.published_by == ("catch-up" if n == 2 else "copy"), (n, result.copy_reason)
        assert snapshot(warehouse_path(history)) == rebuilt_from_the_lake(
            history, tmp_path / f"rebuild-{n}", show_phone_numbers=True)
    shown = snapshot(warehouse_path(history))["calls"]
    assert shown and all(row[1].startswith("+1555") for row in shown)


KILLED_LOADER = r"""
import os, signal, sys
from datetime import date, datetime
from pathlib import Path
from audian_pipeline.warehouse import load

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

def die_in_transaction_on(catalog):
    # The views are refreshed last in a transaction, its rows already replaced, right before its COMMIT.
    refresh_views = load._refresh_views
    def refresh_then_die(con, sql_dir):
        refresh_views(con, sql_dir)
        if con.execute("SELECT current_database()").fetchone()[0] == catalog:
            die()
    return refresh_then_die

def die_renaming_a_build(source, destination):
    if Path(source).parent.name == load.BUILDS_DIR:
        die()
    return rename(source, destination)

data_dir, point, as_of, quota, *days = sys.argv[1:]
rename = os.rename
if point == "base's transaction":
    load._refresh_views = die_in_transaction_on(load.BASE_CATALOG)
elif point == "the spare's transaction":
    load._refresh_views = die_in_transaction_on(load.SPARE)
elif point == "after the spare's COMMIT, before its rename":
    os.rename = die_renaming_a_build
elif point == "after the link swap, before the ledger":
    load._keep_one_spare = die
load.load_warehouse(Path(data_dir), [date.fromisoformat(day) for day in days], storage_quota_bytes=int(quota),
                    as_of=datetime.fromisoformat(as_of), copy_below_bytes=0)
"""


@pytest.mark.parametrize("point", ["base's transaction", "the spare's transaction",
                                   "after the spare's COMMIT, before its rename",
                                   "after the link swap, before the ledger"])
def test_a_loader_killed_while_catching_a_spare_up_never_publishes_half_of_it(history, tmp_path, point):
    """The loader SIGKILLs itself at a fixed point of a load that catches a spare up (fault injection
    in a real subprocess: the loader, DuckDB and the files stay real). Readers then see the previous
    load whole, or the whole new one once the link moved; the next load publishes what a full
    rebuild of the lake gives."""
    for n, day in enumerate(DAYS[3:6]):
        one_day(history, day, seed=10 + n)
    write_synthetic_lake(history, DAYS[:8], PER_DAY + 5, seed=7)  # every day rewritten: the catch-up has work
    before = snapshot(warehouse_path(history))
    child = subprocess.run([sys.executable, "-c", KILLED_LOADER, str(history), point, AS_OF.isoformat(),
                            str(QUOTA), *map(str, DAYS[:8])], capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    after = rebuilt_from_the_lake(history, tmp_path / "rebuild")
    assert before != after
    linked = point == "after the link swap, before the ledger"
    assert snapshot(warehouse_path(history)) == (after if linked else before)
    load(history, DAYS[:8])
    assert snapshot(warehouse_path(history)) == after


def test_a_small_warehouse_is_published_by_copy_since_copying_is_cheaper(history, tmp_path):
    for n, day in enumerate(DAYS[3:7]):
        write_synthetic_lake(history, [day], PER_DAY, seed=10 + n)
        result = load_all_tables(history, [day])
        assert result.published_by == "copy" and result.bytes_copied > 0
        assert result.copy_reason == f"smaller than {COPY_BELOW_BYTES // 2**20} MiB: copying is cheaper"
    assert snapshot(warehouse_path(history)) == rebuilt_from_the_lake(history, tmp_path / "rebuild")


def test_a_report_view_changed_since_a_spare_was_built_is_made_again_when_it_is_caught_up(history, tmp_path):
    """The loader skips a view's DDL when the view was made from the same file: a spare made from the
    old file must still get the new one."""
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    for n, day in enumerate(DAYS[3:6]):
        one_day(history, day, seed=10 + n, sql_dir=sql_dir)
    (sql_dir / "reports" / "report_durations.sql").write_text(
        "-- report_durations: changed\nCREATE OR REPLACE VIEW report_durations AS SELECT 42 AS answer;\n")
    for n, day in enumerate(DAYS[6:9]):
        result = one_day(history, day, seed=20 + n, sql_dir=sql_dir)
        assert result.published_by == "catch-up", result.copy_reason
        with duckdb.connect(str(warehouse_path(history)), read_only=True) as con:
            assert con.execute("SELECT * FROM report_durations").fetchall() == [(42,)]


def bytes_written_by_this_process() -> int:
    """Bytes this process (all its threads, DuckDB's included) handed to write calls so far."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux's /proc/self/io")
def test_a_one_day_load_writes_the_day_once_into_base_and_once_into_the_spare_not_through_the_wal_too(data_dir):
    """A COMMIT logged the day's rows in the WAL, uncompressed, and the CHECKPOINT after it wrote them
    again: 7x the day's bytes at 12,000 recordings a day. The warehouse here holds that one day alone,
    so its file is the day's size; base and the caught-up spare each take it once."""
    day = DAYS[0]
    write_synthetic_lake(data_dir, [day], 6000)
    load(data_dir)
    for _ in range(3):  # three builds in rotation: the next load catches a spare up
        load(data_dir, [day])
    before = bytes_written_by_this_process()
    result = load(data_dir, [day])
    written = bytes_written_by_this_process() - before
    assert result.published_by == "catch-up", result.copy_reason
    assert written < 3 * result.bytes, (written, result.bytes)
