"""Reports people look at: the views' edge definitions, the summaries, the charts (real PNGs
decoded here), the CLI's text / CSV / HTML output, the report assets' metadata, and each lake
asset's per-day metadata in a single-run backfill. All over real Parquet and DuckDB files built
by tests/test_warehouse.py's hand-made lake."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from audian_pipeline.lake.parquet import to_table, write_partition
from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.lake.tables import RECORDINGS as RECORDINGS_TABLE
from audian_pipeline.warehouse.reports import read_report

from test_warehouse import AS_OF, D1, D4, DAYS, load, recording_rows, write_lake


def _rewrite_recordings(data_dir: Path, change: dict[str, dict]) -> None:
    """Rewrite the recordings partitions with some rows changed (by recording_id)."""
    rows = [{**r, **change.get(r["recording_id"], {})} for r in recording_rows()]
    for day in DAYS:
        of_day = [r for r in rows if r["created_at"].date() == day]
        write_partition(data_dir, RECORDINGS_TABLE, day, to_table(RECORDINGS_TABLE, of_day))


# -- the views -----------------------------------------------------------------------------

def test_recorded_pct_of_call_is_over_recordings_and_calls_both_known(data_dir):
    """r09's call ended and is known, but Audian gave no duration for r09: its call must leave
    the denominator as its recording leaves the numerator."""
    write_lake(data_dir)
    _rewrite_recordings(data_dir, {"r09": {"duration": None}})
    load(data_dir)
    row = next(r for r in read_report(warehouse_path(data_dir), "durations").records()
               if (r["day"], r["file_format"], r["channels"]) == (D1, "mp3", 1))
    # r06 (10 s of a 25 s call) and r08 (30 s of 45 s); r07's call has not ended, r09 has no duration
    assert float(row["recorded_pct_of_call"]) == pytest.approx(100 * (10 + 30) / (25 + 45), abs=0.051)
    header = (Path(__file__).parents[1] / "sql" / "reports" / "report_durations.sql").read_text()
    assert "both known" in header


def test_storage_quota_projects_only_from_seven_days_of_history(data_dir):
    write_lake(data_dir, [D4])  # one day of history before as_of
    load(data_dir)
    now = read_report(warehouse_path(data_dir), "storage_quota").records()[-1]
    assert now["bytes_held"] > 0 and now["history_days"] == 1
    assert now["recent_daily_growth_bytes"] is None
    assert now["days_until_full"] is None and now["projected_full_on"] is None
    assert now["projection"] == "needs 7 days of history, has 1"

    write_lake(data_dir)  # the whole lake: a month of history
    load(data_dir)
    rows = read_report(warehouse_path(data_dir), "storage_quota").records()
    assert rows[-1]["history_days"] == (AS_OF.date() - DAYS[0]).days
    assert rows[-1]["projected_full_on"] is not None and rows[-1]["projection"] == "projected"
    first_projectable = next(r for r in rows if r["history_days"] >= 7)
    assert first_projectable["day"] == DAYS[0] + timedelta(days=6)  # its end is 7 days after the first start
    assert all(r["recent_daily_growth_bytes"] is None for r in rows if r["history_days"] < 7)
    header = (Path(__file__).parents[1] / "sql" / "reports" / "report_storage_quota.sql").read_text()
    assert "7 days of history" in header
