"""`audian-pipeline sql`: a read-only SQL prompt on the warehouse, with the DuckDB the pipeline
already installs, so an analyst needs no DuckDB CLI (nothing installs one, and one of another
major version may not read the file: see `load.STORAGE_VERSION`).

Each batch (the `-c` text, the whole piped input, or one entry at the interactive prompt) runs in
its own read-only session, closed once its results are printed. A prompt that kept a session
open while the analyst thinks would keep this process on the build it first opened (DuckDB caches
one database instance per path and process, see `reports`) and keep that build on disk; closed,
every entry reads the latest load. So session state (`SET`, temporary tables) lasts one batch.
Timestamps show in UTC, as the warehouse stores them.

Piped input and `-c` stop at the first failing statement and exit 1, so a script never runs on
past an error; the interactive prompt reports the error and waits for the next statement.
"""

from __future__ import annotations

import contextlib
import csv
import shutil
import sys
from pathlib import Path

import duckdb

from audian_pipeline.warehouse.reports import WarehouseLocked, WarehouseMissing, missing_warehouse, open_read_only

PROMPT = "warehouse> "
CONTINUATION = "       ...> "
QUIT = {".quit", ".exit", "\\q"}
_ERROR_PREFIX = "audian-pipeline sql: "
_UNLIMITED = 1_000_000
"""Width of a table written to a pipe: a file or a pager has no right edge to fit."""


def run_sql(path: Path, statements: str | None = None, *, csv_output: bool = False) -> int:
    """`statements` (`-c`), else stdin: a prompt on a terminal, else every statement piped in.
    0 when every statement ran, 1 otherwise (the error printed as one line on stderr)."""
    if not path.exists():
        return _fail(missing_warehouse(path))
    if statements is not None:
        return run_batch(path, statements, csv_output=csv_output)
    if sys.stdin.isatty():
        return prompt(path, csv_output=csv_output)
    return run_batch(path, sys.stdin.read(), csv_output=csv_output)


def run_batch(path: Path, text: str, *, csv_output: bool = False) -> int:
    """Every statement of `text`, in order, in one read-only session; stops at the first error."""
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as exc:
        return _fail(one_line(exc))
    if not statements:
        return 0
    try:
        with contextlib.closing(open_read_only(path)) as con:
            for number, statement in enumerate(statements, 1):
                try:
                    _show(con, statement, csv_output)
                except duckdb.Error as exc:
                    where = f"statement {number} of {len(statements)}: " if len(statements) > 1 else ""
                    return _fail(where + one_line(exc))
    except (WarehouseMissing, WarehouseLocked) as exc:
        return _fail(str(exc))
    return 0


def prompt(path: Path, *, csv_output: bool = False) -> int:
    """Read statements at a prompt until Ctrl-D; each entry ending in `;` runs as one batch."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 (line editing and history for input())
    print(f"{path}: read-only, timestamps in UTC. End each statement with ';'. "
          "SHOW TABLES; lists the tables and report views; Ctrl-D quits.", file=sys.stderr)
    entry = ""
    while True:
        try:
            line = input(CONTINUATION if entry else PROMPT)
        except EOFError:
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:  # as in a shell: drop the entry, prompt again
            entry = ""
            print(file=sys.stderr)
            continue
        if not entry and line.strip() in QUIT:
            return 0
        entry += line + "\n"
        if entry.rstrip().endswith(";"):
            try:
                run_batch(path, entry, csv_output=csv_output)
            except KeyboardInterrupt:
                _fail("interrupted")
            entry = ""


def one_line(exc: duckdb.Error) -> str:
    """DuckDB's message without the query excerpt and caret it appends on further lines."""
    kept = []
    for line in str(exc).splitlines():
        if line.startswith("LINE "):
            break
        if line.strip():
            kept.append(line.strip())
    return " ".join(kept)


def _show(con: duckdb.DuckDBPyConnection, statement: duckdb.Statement, csv_output: bool) -> None:
    """A statement's rows, as an aligned table (DuckDB's: the first and last rows, as many columns
    as the terminal holds, every column when piped) or as CSV (every row).

    Statements without rows (`SET`, `ATTACH`) answer DuckDB's `Success` marker, not printed."""
    relation = con.sql(statement.query)
    if relation is None:
        return
    if statement.type != duckdb.StatementType.SELECT and relation.columns == ["Success"]:
        return
    if csv_output:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(relation.columns)
        writer.writerows(relation.fetchall())
        return
    relation.show(max_width=shutil.get_terminal_size().columns if sys.stdout.isatty() else _UNLIMITED)


def _fail(message: str) -> int:
    print(_ERROR_PREFIX + message, file=sys.stderr)
    return 1
