"""An analyst opens the warehouse with what they have: `audian-pipeline sql` (the DuckDB the
pipeline installs, no CLI needed), or their own DuckDB 1.4+ CLI or driver, which refuses the
files DuckDB 2.0 writes by default. DuckDB 1.x runs for real, from a scratch venv."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import venv
from pathlib import Path

import duckdb
import pytest

from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.warehouse.load import BASE_NAME, STORAGE_VERSION, TABLES, _held, builds_dir
from audian_pipeline.warehouse.reports import REPORTS

from test_warehouse import DAYS, RECORDINGS as RECORDING_ROWS, lake_fixture, load, query  # noqa: F401 (the `lake` fixture)

STORAGE_TAG = "v1.4.0+"
"""What DuckDB reports for a file written with STORAGE_VERSION v1.4.0 (`duckdb_databases().tags`)."""
RECORDINGS = len(RECORDING_ROWS)


def storage_tag(path: Path) -> str:
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute("SELECT tags['storage_version'] FROM duckdb_databases() "
                          "WHERE database_name = current_database()").fetchone()
    assert row is not None
    return row[0]


def rewrite_in_storage(path: Path, version: str) -> None:
    """The same database in another storage version, as an older loader would have left it."""
    copy = path.with_name(path.name + ".rewrite")
    with duckdb.connect() as con:
        con.execute(f"ATTACH '{path}' AS old (READ_ONLY)")
        con.execute(f"ATTACH '{copy}' AS new (STORAGE_VERSION '{version}')")
        con.execute("COPY FROM DATABASE old TO new")
    os.replace(copy, path)
    assert storage_tag(path) == f"{version}+"


# -- the storage version ------------------------------------------------------------------

def test_every_file_the_loader_writes_opens_in_duckdb_1_4(lake):
    assert STORAGE_VERSION == "v1.4.0"
    first = load(lake)
    assert first.full_rebuild
    assert storage_tag(warehouse_path(lake)) == STORAGE_TAG
    assert storage_tag(builds_dir(lake) / BASE_NAME) == STORAGE_TAG

    again = load(lake, [DAYS[0]])  # the loader reopens its copy in place
    assert not again.full_rebuild
    assert storage_tag(warehouse_path(lake)) == STORAGE_TAG
    assert storage_tag(builds_dir(lake) / BASE_NAME) == STORAGE_TAG


def test_a_loader_copy_in_another_storage_version_is_rebuilt_once(lake):
    load(lake)
    expected = query(lake, "SELECT count(*) FROM recordings")
    rewrite_in_storage(builds_dir(lake) / BASE_NAME, "v2.0.0")

    result = load(lake, [DAYS[0]])
    assert result.full_rebuild
    assert result.rebuild_reason is not None and "storage version" in result.rebuild_reason
    assert storage_tag(warehouse_path(lake)) == STORAGE_TAG
    assert query(lake, "SELECT count(*) FROM recordings") == expected

    assert not load(lake, [DAYS[0]]).full_rebuild


# -- a real DuckDB 1.x --------------------------------------------------------------------

READER = r"""
import json, sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("SET TimeZone = 'UTC'")
names = [r[0] for r in con.execute(
    "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
    "UNION ALL SELECT view_name FROM duckdb_views() WHERE database_name = current_database() AND NOT internal "
    "ORDER BY 1").fetchall()]
rows = {n: con.execute(f'SELECT COLUMNS(*)::VARCHAR FROM "{n}" ORDER BY ALL').fetchall() for n in names}
print(json.dumps({"version": duckdb.__version__, "rows": rows}))
"""
"""Every table and view, every value as text (so the driver needs no pytz for TIMESTAMPTZ)."""


@pytest.fixture(scope="module", params=["1.4", "1.5"], ids=lambda minor: f"duckdb-{minor}")
def duckdb_1x(request, tmp_path_factory) -> Path:
    """The bin/ of a scratch venv holding a DuckDB 1.x driver (python) and CLI (duckdb): the oldest
    supported release and the newest 1.x."""
    home = tmp_path_factory.mktemp(f"duckdb-{request.param}")
    venv.create(home, with_pip=True)
    minor = request.param
    wanted = [f"duckdb=={minor}.*", f"duckdb-cli=={minor}.*"]
    installed = subprocess.run([str(home / "bin" / "python"), "-m", "pip", "install", "-q", *wanted],
                               capture_output=True, text=True, timeout=600)
    if installed.returncode != 0:
        pytest.skip(f"pip could not install {wanted} into a scratch venv: {installed.stderr.strip()[-300:]}")
    return home / "bin"


@pytest.mark.slow
def test_duckdb_1x_reads_every_table_and_report_view(lake, duckdb_1x):
    load(lake)
    read = subprocess.run([str(duckdb_1x / "python"), "-c", READER, str(warehouse_path(lake))],
                          capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr
    answer = json.loads(read.stdout)
    assert answer["version"].startswith("1.")

    with duckdb.connect(str(warehouse_path(lake)), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        ours = {n: [list(r) for r in con.execute(f'SELECT COLUMNS(*)::VARCHAR FROM "{n}" ORDER BY ALL').fetchall()]
                for n in answer["rows"]}
    assert {*TABLES, *REPORTS.values(), "pipeline_settings", "warehouse_partitions"} <= set(answer["rows"])
    assert len(answer["rows"]["recordings"]) == RECORDINGS
    assert answer["rows"] == ours


@pytest.mark.slow
def test_the_readme_command_opens_the_warehouse_in_the_duckdb_1x_cli(lake, duckdb_1x):
    load(lake)
    views = " UNION ALL ".join(f"SELECT '{v}', count(*) FROM {v}" for v in REPORTS.values())
    done = subprocess.run([str(duckdb_1x / "duckdb"), "-readonly", "-csv", "-noheader", str(warehouse_path(lake)),
                           f"SELECT version(); SELECT count(*) FROM recordings; {views};"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and not done.stderr, done.stderr
    version, recordings, *per_view = done.stdout.splitlines()
    assert version.startswith("v1.") and int(recordings) == RECORDINGS
    assert [line.split(",")[0] for line in per_view] == list(REPORTS.values())


# -- audian-pipeline sql ------------------------------------------------------------------

def sql(data_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "AUDIAN_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "audian_pipeline.cli", "sql", *args], input=stdin,
                          capture_output=True, text=True, timeout=120, env=env)


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 1, done
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_sql_runs_one_statement(lake):
    load(lake)
    done = sql(lake, "-c", "select count(*) as recordings_held from recordings")
    assert done.returncode == 0, done.stderr
    assert "recordings_held" in done.stdout and re.search(rf"│\s+{RECORDINGS}\s+│", done.stdout), done.stdout


def test_sql_reads_piped_statements_in_order(lake):
    load(lake)
    done = sql(lake, stdin="select 'first' as which;\nselect count(*) as calls_held from calls;\n"
                           "select ';' as semicolon_in_a_string;\n")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.index("first") < out.index("calls_held") < out.index("semicolon_in_a_string"), out


def test_sql_csv_prints_every_row(lake):
    load(lake)
    done = sql(lake, "--csv", "-c", "select recording_id from recordings order by 1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "recording_id" and len(lines) == RECORDINGS + 1
    assert lines[1:] == [r[0] for r in query(lake, "SELECT recording_id FROM recordings ORDER BY 1")]


def test_sql_a_bad_statement_is_one_line_and_stops_the_input(lake):
    load(lake)
    done = sql(lake, stdin="select 'ran' as before_the_error;\nselect * from no_such_table;\n"
                           "select 'never' as after;\n")
    assert_one_line_error(done, "statement 2 of 3", "no_such_table")
    assert "before_the_error" in done.stdout and "never" not in done.stdout

    assert_one_line_error(sql(lake, "-c", "select from where"), "syntax error")


def test_sql_opens_the_warehouse_read_only(lake):
    load(lake)
    assert_one_line_error(sql(lake, "-c", "create table mine as select 1 as x"), "read-only")
    assert query(lake, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'mine'") == [(0,)]


def test_sql_without_a_warehouse_says_how_to_make_one(data_dir):
    assert_one_line_error(sql(data_dir, "-c", "select 1"), "no warehouse", "audian-pipeline run")


class Terminal:
    """The far side of a pseudo-terminal: what a person at the prompt would type and read."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = b""

    def type(self, text: bytes) -> None:
        os.write(self.fd, text)

    def read_until(self, text: str) -> str:
        """Output up to and including `text`, consumed (bounded: fails after 60 s of silence)."""
        while text.encode() not in self.pending:
            ready, _, _ = select.select([self.fd], [], [], 60)
            assert ready, f"no {text!r} in {self.pending.decode(errors='replace')!r}"
            self.pending += os.read(self.fd, 4096)
        head, _, self.pending = self.pending.partition(text.encode())
        return (head + text.encode()).decode(errors="replace")


def test_sql_prompt_holds_no_file_while_it_waits(lake):
    load(lake)
    build = warehouse_path(lake).resolve()
    main, terminal = pty.openpty()
    env = {**os.environ, "AUDIAN_DATA_DIR": str(lake), "TERM": "dumb"}
    proc = subprocess.Popen([sys.executable, "-m", "audian_pipeline.cli", "sql"], stdin=terminal, stdout=terminal,
                            stderr=terminal, env=env, close_fds=True)
    os.close(terminal)
    screen = Terminal(main)
    try:
        screen.read_until("warehouse> ")
        screen.type(b"select 40 + 2\n")
        screen.read_until("...> ")
        screen.type(b"  as answer;\n")
        assert "42" in screen.read_until("warehouse> ")
        assert not _held(build)  # waiting for the next statement, it has the file closed

        screen.type(b"select * from nope;\n")
        answer = screen.read_until("warehouse> ")
        assert "nope" in answer and "Traceback" not in answer
        screen.type(b"\x04")  # Ctrl-D
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait(timeout=30)
        os.close(main)
