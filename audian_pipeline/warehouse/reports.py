"""Read the report views from the published warehouse, and `audian-pipeline report NAME`: a
summary that fits 100 columns, `--full` and `--csv` for every row, `--html` for a page with the
chart.

Every read opens `warehouse.duckdb` read-only and closes it straight after. Closing matters
beyond politeness: DuckDB caches one database instance per path and process, so a connection
left open would keep this process on the file it first opened, never the one a later load
swapped in.
"""

from __future__ import annotations

import base64
import contextlib
import html
import sys
import textwrap
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import duckdb
import pandas as pd

from audian_pipeline.lake.files import atomic_writer, data_dir_error
from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.settings import Settings
from audian_pipeline.warehouse.charts import SCALE, chart_png, png_size
from audian_pipeline.warehouse.load import SQL_DIR
from audian_pipeline.warehouse.summaries import Summary, format_value, summarise

REPORTS = {
    "durations": "report_durations",
    "failure_reasons": "report_failure_reasons",
    "storage_quota": "report_storage_quota",
    "retention_expiry": "report_retention_expiry",
    "conversation": "report_conversation",
    "disposals": "report_disposals",
}
"""CLI name -> view name in the warehouse (and sql/reports/<view>.sql)."""


class UnknownReport(KeyError):
    def __str__(self) -> str:
        return f"unknown report {self.args[0]!r}; choose one of: {', '.join(REPORTS)}"


class WarehouseMissing(FileNotFoundError):
    pass


class WarehouseLocked(RuntimeError):
    pass


@dataclass(frozen=True)
class Report:
    name: str
    view: str
    columns: list[str]
    rows: list[tuple]
    as_of: datetime | None

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def frame(self) -> pd.DataFrame:
        """The rows as pandas, DECIMAL columns as floats (pandas does no arithmetic on Decimal)."""
        rows = [tuple(float(v) if isinstance(v, Decimal) else v for v in row) for row in self.rows]
        return pd.DataFrame.from_records(rows, columns=self.columns)

    def summary(self) -> Summary:
        return summarise(self.view, self.frame())

    def chart(self, scale: int = SCALE) -> bytes:
        """The report's chart as PNG bytes, `scale` pixels per CSS pixel."""
        return chart_png(self.view, self.frame(), scale)


def view_name(name: str) -> str:
    """`durations` or `report_durations` -> `report_durations`."""
    short = name.removeprefix("report_")
    if short not in REPORTS:
        raise UnknownReport(name)
    return REPORTS[short]


def sql_file(name: str) -> Path:
    return SQL_DIR / "reports" / f"{view_name(name)}.sql"


def description(name: str) -> str:
    """The view's header comment: what the report answers, as its SQL file says it."""
    lines = []
    for line in sql_file(name).read_text().splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].strip())
    text = "\n".join(lines).strip()
    prefix = f"{view_name(name)}:"
    return text.removeprefix(prefix).strip()


def open_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    """A read-only session on the published warehouse, in UTC."""
    if not path.exists():
        raise WarehouseMissing(missing_warehouse(path))
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseLocked(
                f"{path} is open read-write in another process (the DuckDB CLI opens files read-write unless "
                "started with -readonly); close that session or reopen it read-only") from None
        raise
    con.execute("SET TimeZone = 'UTC'")
    return con


def missing_warehouse(path: Path) -> str:
    return (f"no warehouse at {path} yet: run `audian-pipeline run --start YYYY-MM-DD --end YYYY-MM-DD` "
            "(or `audian-pipeline demo`) first, with the same AUDIAN_DATA_DIR")


def read_report(path: Path, name: str) -> Report:
    view = view_name(name)
    con = open_read_only(path)
    with contextlib.closing(con):
        cursor = con.execute(f"SELECT * FROM {view}")
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
        as_of = con.execute("SELECT as_of FROM pipeline_settings").fetchone()
    return Report(name=view.removeprefix("report_"), view=view, columns=columns, rows=rows,
                  as_of=as_of[0] if as_of else None)


WIDTH_COLUMNS = 100
"""`report NAME` prints a summary no wider than this; `--full` prints every column however wide."""


def print_report(settings: Settings, name: str, out: IO[str] | None = None, *, full: bool = False,
                 csv: bool = False, html_path: Path | None = None) -> int:
    """`audian-pipeline report NAME`: 0 printed, 1 no warehouse (or locked, or the page could not
    be written), 2 unknown name. Errors are one line on stderr."""
    out = out or sys.stdout
    try:
        view_name(name)
    except UnknownReport as exc:
        return _fail(str(exc), 2)
    path = warehouse_path(settings.data_dir)
    try:
        report = read_report(path, name)
    except (WarehouseMissing, WarehouseLocked) as exc:
        return _fail(str(exc))
    if html_path is not None:
        try:
            write_html(report, html_path)
        except OSError as exc:
            return _fail(str(data_dir_error(exc, html_path)).replace("AUDIAN_DATA_DIR", "--html"))
        print(f"wrote {html_path}: the chart and {len(report.rows):,} rows of {report.view}", file=out)
    elif csv:
        report.frame().convert_dtypes().to_csv(out, index=False)  # whole numbers stay whole beside NULLs
    else:
        print(full_text(report) if full else summary_text(report), file=out)
    return 0


def _fail(message: str, code: int = 1) -> int:
    print(f"audian-pipeline: {message}", file=sys.stderr)
    return code


def title(report: Report) -> str:
    return f"{report.view}: {description(report.name).splitlines()[0]}"


def as_of(report: Report) -> str:
    return f"(as of {format_value(report.as_of)})" if report.as_of else "(no load recorded)"


def _title_lines(report: Report) -> list[str]:
    """The title with its as-of, the as-of on a line of its own when both do not fit."""
    line = f"{title(report)} {as_of(report)}"
    return [line] if len(line) <= WIDTH_COLUMNS else [*_wrap(title(report)), as_of(report)]


def summary_text(report: Report) -> str:
    """Title, headline and the summary table, every line at most WIDTH_COLUMNS wide."""
    summary = report.summary()
    lines = [*_title_lines(report), "", *_wrap(summary.headline), ""]
    if summary.omitted:
        lines.append(f"(the latest {len(summary.table)} rows; {summary.omitted} earlier in --full)")
    lines.append(_aligned(list(summary.table.columns), summary.table.to_numpy().tolist()) if len(summary.table)
                 else "(no rows)")
    lines += ["", "Every row and column: --full (or --csv); a page with the chart: --html FILE.html"]
    return "\n".join(lines)


def full_text(report: Report) -> str:
    """Every row and column of the view, bytes in KiB/MiB/GiB: as wide as the view is."""
    cells = [[format_value(v, c) for v, c in zip(row, report.columns, strict=True)] for row in report.rows]
    return f"{title(report)} {as_of(report)}\n\n" + _aligned(report.columns, cells)


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH_COLUMNS, break_on_hyphens=False) or [""]


def _aligned(columns: list[str], cells: list[list[str]]) -> str:
    """A plain-text table: figures right-aligned, words left; no trailing spaces."""
    figures = [all(_is_figure(row[i]) for row in cells) for i in range(len(columns))]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        parts = zip(values, widths, figures, strict=True)
        return "  ".join(v.rjust(w) if right else v.ljust(w) for v, w, right in parts).rstrip()

    rows = [line(columns), line(["-" * w for w in widths])] + [line(row) for row in cells]
    return "\n".join(rows if cells else rows + ["(no rows)"])


def _is_figure(text: str) -> bool:
    return text == "" or text.lstrip("-")[:1].isdigit()


# -- the HTML page -------------------------------------------------------------------------

PAGE_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.3em; } p.as-of { color: #666; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
pre { white-space: pre-wrap; color: #444; } details { margin: 1em 0; } .scroll { overflow-x: auto; }
"""


def write_html(report: Report, target: Path) -> None:
    """One page, nothing linked: the chart inline as PNG, the summary and every row. Written whole
    or not at all, so a reader never opens half a page."""
    page = html_page(report).encode()
    with atomic_writer(target) as handle:
        handle.write(page)


def html_page(report: Report) -> str:
    summary = report.summary()
    png = report.chart()
    width, height = (pixels // SCALE for pixels in png_size(png))
    full = pd.DataFrame([[format_value(v, c) for v, c in zip(row, report.columns, strict=True)]
                         for row in report.rows], columns=report.columns)
    omitted = (f"<p>The latest {len(summary.table)} rows; {summary.omitted} earlier below.</p>"
               if summary.omitted else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{report.view}</title><style>{PAGE_STYLE}</style></head>
<body>
<h1>{html.escape(title(report))}</h1>
<p class="as-of">{html.escape(as_of(report))} from warehouse.duckdb, view {report.view}.</p>
<p>{html.escape(summary.headline)}</p>
<img alt="chart of {report.view}" width="{width}" height="{height}"
 src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Summary</h2>
{omitted}{summary.table.to_html(index=False, border=0) if len(summary.table) else "<p>(no rows)</p>"}
<details><summary>Every row of {report.view} ({len(report.rows):,})</summary>
<div class="scroll">{full.to_html(index=False, border=0)}</div></details>
<details><summary>What the view counts</summary><pre>{html.escape(description(report.name))}</pre></details>
</body></html>
"""
