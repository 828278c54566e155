"""The warehouse against the people and disks around it: an analyst who opens the file
read-write (the DuckDB CLI's default), writes, and is killed before, during or after a load;
old builds nobody holds any more; a disk that fills during the load. Analysts and full disks
are real processes (RLIMIT_FSIZE makes the kernel refuse writes past a size, as a full disk does)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.warehouse.reports import REPORTS, read_report

from test_warehouse import DAYS, RECORDINGS, counts, lake_fixture, load, write_lake  # noqa: F401 (the `lake` fixture)

ANALYST = r"""
import json, sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "read_only")
print(json.dumps("ready"), flush=True)
for sql in sys.stdin:
    try:
        print(json.dumps(con.execute(sql).fetchall(), default=str), flush=True)
    except Exception as exc:
        print(json.dumps(f"ERROR {type(exc).__name__}: {exc}"), flush=True)
"""


class Analyst:
    """A real DuckDB session in another process, sent one statement per line."""

    def __init__(self, path: Path, mode: str = "read_write") -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", ANALYST, str(path), mode], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self._answer() == "ready", self.proc.stderr.read()

    def run(self, sql: str):
        self.proc.stdin.write(sql + "\n")
        self.proc.stdin.flush()
        answer = self._answer()
        assert not (isinstance(answer, str) and answer.startswith("ERROR")), (sql, answer)
        return answer

    def _answer(self):
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        return json.loads(line)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=10)

    def close(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0, self.proc.stderr.read()


def assert_every_reader_works(data_dir: Path, expected: tuple) -> None:
    """A new read-only session, each report, and a new process all read the published load."""
    assert counts(data_dir) == expected
    for name in REPORTS:
        assert read_report(warehouse_path(data_dir), name).view == REPORTS[name]
    fresh = subprocess.run(
        [sys.executable, "-c", "import sys, duckdb; con = duckdb.connect(sys.argv[1], read_only=True); "
         "print(con.execute('SELECT count(*) FROM recordings').fetchone()[0])", str(warehouse_path(data_dir))],
        capture_output=True, text=True, timeout=60)
    assert fresh.returncode == 0 and int(fresh.stdout) == expected[0], fresh.stderr


@pytest.mark.parametrize("when", ["before_the_load", "during_the_load", "after_writing_past_the_swap"])
def test_a_read_write_analyst_killed_around_a_load_breaks_nothing(lake, when):
    load(lake)
    expected = counts(lake)
    analyst = Analyst(warehouse_path(lake))
    analyst.run("CREATE TABLE my_notes AS SELECT 42 AS answer")  # committed: the session now has a WAL
    if when == "before_the_load":
        analyst.kill()
        load(lake, [DAYS[1]])
    elif when == "during_the_load":
        loader = threading.Thread(target=load, args=(lake, [DAYS[1]]))
        loader.start()
        analyst.run("INSERT INTO my_notes VALUES (43)")
        analyst.kill()
        loader.join(timeout=120)
        assert not loader.is_alive()
    else:
        load(lake, [DAYS[1]])  # neither blocked by the session nor breaking it
        assert analyst.run("SELECT count(*) FROM my_notes") == [[1]]
        analyst.run("INSERT INTO my_notes VALUES (43)")  # written after the swap
        analyst.run("CHECKPOINT")
        analyst.run("INSERT INTO my_notes VALUES (44)")  # a WAL created by name after the swap
        analyst.kill()
    assert_every_reader_works(lake, expected)
    load(lake, [DAYS[2]])
    assert_every_reader_works(lake, expected)
    assert not any(lake.glob("*.wal"))


def test_an_analysts_writes_never_reach_the_next_load(lake):
    """The warehouse stays a function of the lake: what a read-write session deleted or added is
    gone at the next load, even when it was checkpointed into the file."""
    load(lake)
    expected = counts(lake)
    analyst = Analyst(warehouse_path(lake))
    analyst.run("DELETE FROM recordings")
    analyst.run("CREATE TABLE my_notes AS SELECT 42 AS answer")
    analyst.close()  # closing checkpoints the changes into the file
    load(lake, [DAYS[1]])
    assert counts(lake)[:5] == expected[:5]
    with duckdb.connect(str(warehouse_path(lake)), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'my_notes'").fetchone() == (0,)


def test_old_builds_go_once_nobody_holds_them(lake):
    load(lake)
    builds = lambda: sorted(p for p in lake.rglob("*.duckdb") if p != warehouse_path(lake))  # noqa: E731
    held_build = warehouse_path(lake).resolve()
    reader = Analyst(warehouse_path(lake), "read_only")
    writer = None
    try:
        for day in DAYS:
            load(lake, [day])
            if writer is None:
                writer = Analyst(warehouse_path(lake))  # the second build, held read-write
                writer_build = warehouse_path(lake).resolve()
        assert held_build.exists() and writer_build.exists()
        assert reader.run("SELECT count(*) FROM recordings") == [[len(RECORDINGS)]]  # still whole
        writer.run("CREATE TABLE my_notes AS SELECT 1 AS x")  # its session still works
    finally:
        reader.close()
        writer.kill()
    load(lake, [DAYS[0]])
    load(lake, [DAYS[1]])
    assert not held_build.exists() and not writer_build.exists()
    assert len(builds()) <= 4, builds()  # the current build, the one before it, one spare, the loader's own


FULL_DISK_LOADER = r"""
import resource, signal, sys
from datetime import datetime, timezone
from pathlib import Path
from audian_pipeline.warehouse.load import load_warehouse
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
try:
    load_warehouse(Path(sys.argv[1]), None if sys.argv[3] == "all" else [datetime.fromisoformat(sys.argv[3]).date()],
                   storage_quota_bytes=10**9, as_of=datetime(2030, 1, 1, tzinfo=timezone.utc))
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(1)
"""


@pytest.mark.parametrize("limit", [4_096, 200_000, 600_000])
@pytest.mark.parametrize("days", ["all", "one"])
def test_a_full_disk_during_the_load_names_the_data_dir_and_keeps_the_warehouse(data_dir, limit, days):
    from benchmarks.bench_warehouse import write_synthetic_lake

    write_lake(data_dir)
    load(data_dir)
    before = counts(data_dir)
    new_day = date(2026, 11, 1)
    write_synthetic_lake(data_dir, [new_day + timedelta(days=i) for i in range(3)], 1000)
    run = subprocess.run([sys.executable, "-c", FULL_DISK_LOADER, str(data_dir), str(limit),
                          "all" if days == "all" else new_day.isoformat()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    message = run.stderr.strip()
    assert message.startswith("DataDirError: could not write ") and "\n" not in message, message
    assert str(data_dir) in message and "AUDIAN_DATA_DIR" in message, message
    assert counts(data_dir) == before  # the published warehouse is untouched and readable
    result = load(data_dir, [new_day])
    assert result.rows_by_table["recordings"] > before[0]
    assert_every_reader_works(data_dir, counts(data_dir))


def load_killed_after(delay: float, script: str, *args: str) -> None:
    """Run a loader script that prints "loading" when it starts; SIGKILL it `delay` s later if it
    has not finished by then."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "loading\n"
    try:
        proc.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)


KILLED_INCREMENTAL_LOADER = r"""
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from audian_pipeline.warehouse.load import load_warehouse
days = [date(2026, 11, 1) + timedelta(days=i) for i in range(8)]
print("loading", flush=True)
load_warehouse(Path(sys.argv[1]), days, storage_quota_bytes=10**9, as_of=datetime(2030, 1, 1, tzinfo=timezone.utc))
print("finished", flush=True)
"""


def test_a_loader_killed_mid_way_through_its_own_copy_recovers_at_the_next_load(data_dir):
    """The loader changes its private copy in place: DuckDB's recovery undoes a killed load's
    open transaction, readers meanwhile see the previous load or the whole killed one (killed
    after its swap), and running the load again publishes what a full rebuild would."""
    from benchmarks.bench_warehouse import write_synthetic_lake

    write_lake(data_dir)
    load(data_dir)
    before = counts(data_dir)[:5]
    new_days = [date(2026, 11, 1) + timedelta(days=i) for i in range(8)]
    write_synthetic_lake(data_dir, new_days, 2000)
    seen = set()
    for delay in (0.05, 0.15, 0.3):
        load_killed_after(delay, KILLED_INCREMENTAL_LOADER, str(data_dir))
        seen.add(counts(data_dir)[:5])
    load(data_dir, new_days)
    again = counts(data_dir)[:5]
    load(data_dir, None)
    assert counts(data_dir)[:5] == again
    assert seen <= {before, again}, (seen, before, again)
