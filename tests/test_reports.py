"""Reports people look at: the views' edge definitions, the summaries, the charts (real PNGs
decoded here), the CLI's text / CSV / HTML output, the report assets' metadata, and each lake
asset's per-day metadata in a single-run backfill. All over real Parquet and DuckDB files built
by tests/test_warehouse.py's hand-made lake."""

from __future__ import annotations

import base64
import csv
import html
import io
import re
import struct
import zlib
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from audian_pipeline import cli
from audian_pipeline.defs.calls import calls
from audian_pipeline.defs.recording_audio import recording_audio
from audian_pipeline.defs.recording_events import recording_events
from audian_pipeline.defs.recordings import recordings
from audian_pipeline.defs.reports import report_assets
from audian_pipeline.defs.resources import AudianResource, LakeResource, WarehouseResource
from audian_pipeline.defs.warehouse import warehouse
from audian_pipeline.lake.parquet import read_rows, to_table, write_partition
from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.lake.tables import RECORDINGS as RECORDINGS_TABLE, TABLES as LAKE_TABLES
from audian_pipeline.settings import DEMO_API_KEY
from audian_pipeline.warehouse.charts import HEIGHT, SCALE, WIDTH
from audian_pipeline.warehouse.reports import REPORTS, read_report
from audian_pipeline.warehouse.summaries import MAX_ROWS

from test_audio_archive import account_with_webhooks
from test_warehouse import AS_OF, D1, D4, DAYS, QUOTA, load, recording_rows, write_lake


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


# -- summaries, charts, the CLI ------------------------------------------------------------

def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, unfiltered-row bytes) of a PNG, every chunk's CRC checked: an image a
    viewer can open, not bytes that merely start like one."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    chunks, at = {}, 8
    while at < len(data):
        (length,), kind = struct.unpack(">I", data[at:at + 4]), data[at + 4:at + 8]
        body, crc = data[at + 8:at + 8 + length], data[at + 8 + length:at + 12 + length]
        assert struct.unpack(">I", crc)[0] == zlib.crc32(kind + body), f"bad CRC in {kind!r}"
        chunks.setdefault(kind, []).append(body)
        at += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][0][:10])
    assert depth == 8 and colour in (2, 6) and b"IEND" in chunks
    raw = zlib.decompress(b"".join(chunks[b"IDAT"]))
    stride = 1 + width * (4 if colour == 6 else 3)
    assert len(raw) == height * stride and all(raw[row * stride] <= 4 for row in range(height))
    return width, height, raw


def assert_a_drawn_chart(png: bytes, scale: int = SCALE) -> None:
    width, height, raw = decode_png(png)
    assert width >= WIDTH * scale and height >= HEIGHT * scale  # the plot area alone is that big
    assert len(set(raw)) > 32, "a blank image"


@pytest.fixture(name="loaded")
def loaded_fixture(data_dir: Path) -> Path:
    write_lake(data_dir)
    load(data_dir, archive_retention_days=30)  # so report_disposals has rows to summarise and draw
    return data_dir


def test_each_report_has_a_short_summary_in_human_units_and_a_drawn_chart(loaded):
    for name in REPORTS:
        report = read_report(warehouse_path(loaded), name)
        summary = report.summary()
        assert 0 < len(summary.table) <= MAX_ROWS and summary.omitted == 0, name
        assert all(str(c).strip() for c in summary.table.columns), f"{name}: an empty header"
        assert all(isinstance(v, str) for v in summary.table.to_numpy().ravel())
        assert summary.headline.endswith(".")
        assert_a_drawn_chart(report.chart())
    quota = read_report(warehouse_path(loaded), "storage_quota").summary()
    assert quota.table["held"].str.endswith(("KiB", "MiB")).all() and quota.table["of quota"].str.endswith("%").all()
    assert "full on 2026-10" in quota.headline
    durations = read_report(warehouse_path(loaded), "durations").summary()
    assert durations.table["mean"].str.endswith((" s", " min")).all()
    assert list(durations.table["day"]) == [d.isoformat() for d in DAYS]  # one row per day, not per format


def test_a_long_history_shows_the_latest_thirty_days(data_dir):
    template = next(r for r in recording_rows() if r["recording_id"] == "r06")
    first = AS_OF.date() - timedelta(days=34)
    for n in range(35):
        day = first + timedelta(days=n)
        created = template["created_at"].replace(year=day.year, month=day.month, day=day.day)
        row = {**template, "recording_id": f"x{n:02}", "created_at": created,
               "expires_at": created + timedelta(days=30)}
        write_partition(data_dir, RECORDINGS_TABLE, day, to_table(RECORDINGS_TABLE, [row]))
    load(data_dir)
    summary = read_report(warehouse_path(data_dir), "durations").summary()
    assert (len(summary.table), summary.omitted) == (MAX_ROWS, 5)
    assert summary.table["day"].iloc[-1] == AS_OF.date().isoformat()


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["report", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_report_summary_fits_100_columns_with_full_csv_and_html(loaded, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("AUDIAN_DATA_DIR", str(loaded))
    for name in REPORTS:
        code, out, err = run_cli(capsys, name)
        assert code == 0 and not err, err
        assert max(len(line) for line in out.splitlines()) <= 100, name
        assert "--full" in out and "``" not in out

        code, out, _ = run_cli(capsys, name, "--csv")
        rows = list(csv.DictReader(io.StringIO(out)))
        view = read_report(warehouse_path(loaded), name)
        assert code == 0 and len(rows) == len(view.rows) and list(rows[0]) == view.columns

        code, out, _ = run_cli(capsys, name, "--full")
        assert code == 0 and all(column in out for column in view.columns)

        page = tmp_path / f"{name}.html"
        code, out, _ = run_cli(capsys, name, "--html", str(page))
        assert code == 0 and str(page) in out
        text = page.read_text()
        assert "<table" in text and "http://" not in text and "https://" not in text.replace(
            "https://vega.github.io", "")  # nothing fetched: the page stands alone
        image = re.search(r'src="data:image/png;base64,([^"]+)"', text)
        assert image, "no inline chart"
        assert_a_drawn_chart(base64.b64decode(image.group(1)))
        for cell in view.summary().table.iloc[0]:
            assert html.escape(cell) in text
    # the durations CSV keeps whole numbers whole beside NULLs (channels of an unknown format)
    _, out, _ = run_cli(capsys, "durations", "--csv")
    assert {row["channels"] for row in csv.DictReader(io.StringIO(out))} == {"1", "2", ""}


def test_cli_report_refuses_two_forms_at_once(loaded, capsys, monkeypatch):
    monkeypatch.setenv("AUDIAN_DATA_DIR", str(loaded))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", "durations", "--csv", "--full"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--full: not allowed with argument --csv" in err


def test_report_assets_attach_a_png_chart_and_a_summary_table(loaded):
    resources = {"lake": LakeResource(data_dir=str(loaded)),
                 "warehouse_settings": WarehouseResource(storage_quota_bytes=QUOTA)}
    result = dg.materialize(report_assets, resources=resources)
    assert result.success
    for asset in report_assets:
        name = asset.key.path[-1]
        meta = result.asset_materializations_for_node(name)[0].metadata
        chart = meta["chart"].value
        assert "``" not in chart and "| |" not in chart
        found = re.fullmatch(r"!\[chart of report_\w+\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", chart)
        assert found, chart[:80]
        assert_a_drawn_chart(base64.b64decode(found.group(1)), scale=1)  # the UI shows it pixel for pixel
        table = meta["summary"].value
        assert 0 < len(table.records) <= MAX_ROWS
        assert all(c.name.strip() for c in table.schema.columns)
        assert meta["headline"].value and meta["rows"].value == len(read_report(warehouse_path(loaded), name).rows)
    quota = result.asset_materializations_for_node("report_storage_quota")[0].metadata["summary"].value
    assert quota.records[-1].data["held"].endswith("MiB")


# -- per-partition metadata of the lake and the warehouse ----------------------------------

def test_each_partition_of_a_single_run_backfill_shows_its_own_days_figures(fresh_emulator, data_dir):
    """One run over three days: each day's materialisation carries that day's rows (as read back
    from its Parquet partition), not the run's total; the total is there as run_rows."""
    lake_assets = {"recordings": recordings, "calls": calls, "recording_events": recording_events,
                   "recording_audio": recording_audio}
    with account_with_webhooks(fresh_emulator, data_dir, seed=63, days=5, per_day=4, max_duration=20) as emu:
        today = emu.account.now().date()
        days = [today - timedelta(days=n) for n in (3, 2, 1)]
        result = dg.materialize(
            [*lake_assets.values(), warehouse],
            resources={"audian": AudianResource(api_url=emu.api_url, api_key=DEMO_API_KEY),
                       "lake": LakeResource(data_dir=str(data_dir)),
                       "warehouse_settings": WarehouseResource(storage_quota_bytes=QUOTA)},
            tags={"dagster/asset_partition_range_start": days[0].isoformat(),
                  "dagster/asset_partition_range_end": days[-1].isoformat()},
        )
    assert result.success
    for name in [*lake_assets, "warehouse"]:
        events = {m.partition: m.metadata for m in result.asset_materializations_for_node(name)}
        assert sorted(events) == [d.isoformat() for d in days], name
        per_day = {d: len(read_rows(data_dir, LAKE_TABLES[name if name != "warehouse" else "recordings"], d))
                   for d in days}
        assert sum(per_day.values()) > max(per_day.values()), "the test needs rows on more than one day"
        for day in days:
            meta = events[day.isoformat()]
            rows = meta["rows" if name != "warehouse" else "rows_recordings"].value
            assert rows == per_day[day], (name, day)
            if name != "warehouse":
                assert meta["run_rows"].value == sum(per_day.values()) and meta["run_days"].value == 3
                assert f"date={day}" in meta["path"].value


def test_every_report_draws_on_a_warehouse_with_no_rows_yet(tmp_path):
    """A fresh warehouse (an empty lake: no recording, no speech row yet) still draws each chart."""
    from audian_pipeline.warehouse.charts import png_size

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    load(data_dir, [D1])
    for short in REPORTS:
        report = read_report(warehouse_path(data_dir), short)
        assert report.rows == [] or short == "storage_quota" or short == "retention_expiry", short
        assert png_size(report.chart(scale=1))[0] > 0, short
