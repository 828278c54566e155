"""Read the report views from the published warehouse: rows, pandas, a text table, a chart.

Every read opens `warehouse.duckdb` read-only and closes it straight after. Closing matters
beyond politeness: DuckDB caches one database instance per path and process, so a connection
left open would keep this process on the file it first opened, never the one a later load
swapped in.
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import duckdb

from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.settings import Settings
from audian_pipeline.warehouse.load import SQL_DIR

REPORTS = {
    "durations": "report_durations",
    "failure_reasons": "report_failure_reasons",
    "storage_quota": "report_storage_quota",
    "retention_expiry": "report_retention_expiry",
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


def read_report(path: Path, name: str) -> Report:
    view = view_name(name)
    if not path.exists():
        raise WarehouseMissing(
            f"no warehouse at {path} yet: materialise the `warehouse` asset (`audian-pipeline run`) first"
        )
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseLocked(
                f"{path} is open read-write in another process (the DuckDB CLI opens files read-write unless "
                "started with -readonly); close that session or reopen it with `duckdb -readonly`."
            ) from None
        raise
    with contextlib.closing(con):
        cursor = con.execute(f"SELECT * FROM {view}")
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
        as_of = con.execute("SELECT as_of FROM pipeline_settings").fetchone()
    return Report(name=view.removeprefix("report_"), view=view, columns=columns, rows=rows,
                  as_of=as_of[0] if as_of else None)


def print_report(settings: Settings, name: str, out: IO[str] | None = None) -> int:
    """`audian-pipeline report NAME`: 0 printed, 1 no warehouse (or locked), 2 unknown name."""
    out = out or sys.stdout
    try:
        view_name(name)
    except UnknownReport as exc:
        print(f"audian-pipeline: {exc}", file=sys.stderr)
        return 2
    path = warehouse_path(settings.data_dir)
    try:
        report = read_report(path, name)
    except WarehouseMissing:
        print(
            f"audian-pipeline: no warehouse at {path} yet: run `audian-pipeline run --start YYYY-MM-DD "
            "--end YYYY-MM-DD` (or `audian-pipeline demo`) first, with the same AUDIAN_DATA_DIR.",
            file=sys.stderr,
        )
        return 1
    except WarehouseLocked as exc:
        print(f"audian-pipeline: {exc}", file=sys.stderr)
        return 1
    first_line = description(name).splitlines()[0]
    as_of = f" (as of {format_value(report.as_of)})" if report.as_of else ""
    print(f"{report.view}: {first_line}{as_of}\n", file=out)
    print(text_table(report), file=out)
    return 0


# -- presentation ------------------------------------------------------------------------

def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_value(value: Any, column: str = "") -> str:
    if is_missing(value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, date):
        return value.isoformat()
    if "bytes" in column and isinstance(value, (int, float, Decimal)):
        return human_bytes(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (float, Decimal)):
        return f"{float(value):,.2f}".rstrip("0").rstrip(".")
    return str(value)


def human_bytes(value: float | Decimal) -> str:
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def text_table(report: Report) -> str:
    """An aligned plain-text table: numbers right, text left; bytes in KiB/MiB/GiB."""
    cells = [[format_value(v, c) for v, c in zip(row, report.columns, strict=True)] for row in report.rows]
    numeric = [
        all(is_missing(row[i]) or isinstance(row[i], (int, float, Decimal)) for row in report.rows)
        for i in range(len(report.columns))
    ]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(report.columns)]

    def line(values: list[str]) -> str:
        columns = zip(values, widths, numeric, strict=True)
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in columns).rstrip()

    out = [line(report.columns), line(["-" * w for w in widths])]
    out += [line(r) for r in cells] or ["(no rows)"]
    return "\n".join(out)


BLOCKS = " ▏▎▍▌▋▊▉█"


def bar(value: float, largest: float, width: int = 24) -> str:
    """A horizontal bar of unicode eighth-blocks, `width` characters at `largest`."""
    if largest <= 0 or is_missing(value) or value <= 0:
        return ""
    eighths = max(1, round(8 * width * float(value) / float(largest)))
    return "█" * (eighths // 8) + (BLOCKS[eighths % 8] if eighths % 8 else "")


def bar_chart(title: str, items: list[tuple[str, float, str]], full_scale: float = 0) -> str:
    """Markdown: one row per (label, value, shown value), with a bar; the longest bar is the
    largest value, or `full_scale` when that is larger (e.g. the quota)."""
    largest = max([float(v) for _, v, _ in items if not is_missing(v)] + [float(full_scale)], default=0)
    lines = [f"**{title}**", "", "| | | |", "|---|---|---:|"]
    lines += [f"| {label} | `{bar(value, largest)}` | {shown} |" for label, value, shown in items]
    if not items:
        lines.append("| (no rows) | | |")
    return "\n".join(lines)


def chart_markdown(report: Report) -> str:
    """A small chart of the report's headline figure, as markdown for the Dagster UI."""
    rows = report.records()
    if report.view == "report_durations":
        per_day: dict[date, list[float]] = {}
        for r in rows:
            entry = per_day.setdefault(r["day"], [0, 0])
            entry[0] += r["recordings"]
            entry[1] += r["total_duration_s"] or 0
        items = [(d.isoformat(), s / 3600, f"{n:,} recordings, {s / 3600:,.1f} h")
                 for d, (n, s) in sorted(per_day.items())]
        return bar_chart("Recorded hours per day", items)
    if report.view == "report_failure_reasons":
        per_reason: dict[str, int] = {}
        for r in rows:
            if r["reason"] is not None:
                per_reason[r["reason"]] = per_reason.get(r["reason"], 0) + r["failed_recordings"]
        finished = sum({r["day"]: r["finished_recordings"] for r in rows}.values())
        items = [(reason, n, f"{n:,} ({100 * n / finished:.1f}% of {finished:,} finished)")
                 for reason, n in sorted(per_reason.items(), key=lambda kv: (-kv[1], kv[0]))]
        return bar_chart("Failed recordings by reason, all days", items)
    if report.view == "report_storage_quota":
        items = [(r["day"].isoformat(), r["bytes_held"],
                  f"{human_bytes(r['bytes_held'])} ({float(r['pct_of_quota']):.1f}%)")
                 for r in rows]
        summary = ""
        if rows:
            now = rows[-1]
            rate = now["recent_daily_growth_bytes"]
            when = (f"projected to reach the quota on **{now['projected_full_on']}** "
                    f"({float(now['days_until_full']):,.1f} days)"
                    if now["projected_full_on"] else "not projected to reach the quota at this rate")
            summary = (f"Held at Audian now: **{human_bytes(now['bytes_held'])}** of {human_bytes(now['quota_bytes'])} "
                       f"({float(now['pct_of_quota']):.2f}%); recent growth {human_bytes(rate)}/day; {when}.\n\n")
        quota = rows[-1]["quota_bytes"] if rows else 0
        return summary + bar_chart("Bytes held at Audian, end of each day (full bar: the quota)", items, quota)
    if report.view == "report_retention_expiry":
        items = [(r["expiry_day"].isoformat(), r["bytes_not_verified"],
                  f"{r['not_verified']:,} of {r['recordings']:,} not verified, {human_bytes(r['bytes_not_verified'])}")
                 for r in rows]
        deadline = rows[0]["next_unverified_deadline"] if rows else None
        summary = (f"Next deadline for unverified audio: **{format_value(deadline)}**\n\n" if deadline
                   else "Every recording expiring in the next 7 days is verified in the archive.\n\n")
        return summary + bar_chart("Bytes expiring and not verified, by day", items)
    raise UnknownReport(report.view)


def headline(report: Report) -> dict[str, int | float | str | None]:
    """A few numbers per report worth plotting across materialisations in Dagster."""
    rows = report.records()
    if report.view == "report_durations":
        return {"recordings": sum(r["recordings"] for r in rows),
                "total_duration_s": sum(r["total_duration_s"] or 0 for r in rows)}
    if report.view == "report_failure_reasons":
        per_day = {r["day"]: (r["failed_all_reasons"], r["finished_recordings"]) for r in rows}
        failed = sum(f for f, _ in per_day.values())
        finished = sum(n for _, n in per_day.values())
        return {"failed_recordings": failed, "failure_rate_pct": round(100 * failed / finished, 2) if finished else 0.0}
    if report.view == "report_storage_quota":
        now = rows[-1] if rows else {}
        return {"bytes_held": now.get("bytes_held"), "pct_of_quota": _float(now.get("pct_of_quota")),
                "projected_full_on": str(now["projected_full_on"]) if now.get("projected_full_on") else None}
    if report.view == "report_retention_expiry":
        return {"recordings_expiring_7d": sum(r["recordings"] for r in rows),
                "not_verified_7d": sum(r["not_verified"] for r in rows),
                "bytes_not_verified_7d": sum(r["bytes_not_verified"] for r in rows)}
    raise UnknownReport(report.view)


def _float(value: Any) -> float | None:
    return None if is_missing(value) else float(value)
