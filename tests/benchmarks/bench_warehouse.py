"""How long the warehouse load and each report take, beside DuckDB reading the lake directly.

Run: `.venv/bin/python tests/benchmarks/bench_warehouse.py [--days 30] [--per-day 2000] [--repeat 3]`.
It writes a synthetic lake (recordings, calls, the audio manifest and webhook events, one
Parquet partition per UTC day, through the lake's own `write_partition`) into a temporary
directory, then times:
- a full rebuild of warehouse.duckdb from the whole lake;
- an incremental load of the last 3 days (what the daily schedule does: copy, replace the
  days in one transaction, swap);
- each report view, read from the published warehouse through `read_report` (open read-only,
  query, close), and the same durations aggregate run by DuckDB straight over
  `read_parquet('lake/recordings/*/*.parquet')` with no warehouse at all.
Figures are the best of `--repeat` runs.

`--history 30,90,180` instead times a one-day load on warehouses of growing history (same rows a
day): the lake grows to each size in turn, then one-day loads cycle over its last three days (what
the daily schedule does), once publishing by catching a spare build up and once by copying
`base.duckdb` into a new build (`copy_below_bytes` forces each): the two sides of
`COPY_BELOW_BYTES`. Beside them, copying `base.duckdb` whole and fsyncing it alone.
`--quick` is a short sanity run (10, 30, 60 days x 500 recordings).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from audian_pipeline.lake.files import fsync_path  # noqa: E402
from audian_pipeline.lake.parquet import write_partition  # noqa: E402
from audian_pipeline.lake.paths import warehouse_path  # noqa: E402
from audian_pipeline.lake.tables import TABLES  # noqa: E402
from audian_pipeline.warehouse.load import BASE_NAME, builds_dir, load_warehouse  # noqa: E402
from audian_pipeline.warehouse.reports import REPORTS, read_report  # noqa: E402

FORMATS = np.array(["mp3", "wav", "opus"])
REASONS = np.array(["storage_error", "quota_exceeded", "encoding_error", "no_audio"])
OUTCOMES = np.array(["verified", "verified", "verified", "verified", "download_failed", "checksum_mismatch"])


def _ts(values: np.ndarray) -> pa.Array:
    """Epoch microseconds -> UTC timestamps."""
    return pa.array(values.astype("int64"), type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def synthetic_day(day: date, per_day: int, rng: np.random.Generator, now: datetime) -> dict[str, pa.Table]:
    """One day's partitions of the four lake tables, with Audian-like mixes of every column."""
    start_us = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1e6)
    now_us = int(now.timestamp() * 1e6)
    n = per_day
    ids = np.array([f"rec_{day:%Y%m%d}_{i:06d}" for i in range(n)])
    call_ids = np.array([f"call_{day:%Y%m%d}_{i:06d}" for i in range(n)])
    created = start_us + np.sort(rng.integers(0, 86_400_000_000, n))
    duration = rng.integers(3, 1800, n).astype("int32")
    failed = rng.random(n) < 0.06
    fmt = FORMATS[rng.choice(3, n, p=[0.6, 0.15, 0.25])]
    channels = rng.choice([1, 2], n).astype("int16")
    file_size = np.where(failed, 0, duration.astype("int64") * np.where(fmt == "wav", 16000, 8000) * channels)
    expires = created + 30 * 86_400_000_000
    deleted = np.where((expires < now_us) | (rng.random(n) < 0.01), now_us, -1)
    completed = created + (duration.astype("int64") + 60) * 1_000_000
    recordings = pa.table({
        "recording_id": ids, "call_id": call_ids, "status": np.where(failed, "failed", "completed"),
        "duration": duration, "file_size": file_size, "created_at": _ts(created), "file_format": fmt,
        "bitrate": np.where(fmt == "mp3", 64, np.where(fmt == "opus", 32, 256)).astype("int32"),
        "sample_rate": np.where(fmt == "opus", 48000, 8000).astype("int32"), "channels": channels,
        "completed_at": pa.array(np.where(failed, None, completed).tolist(), type=pa.int64())
                          .cast(TABLES["recordings"].schema.field("completed_at").type),
        "expires_at": _ts(expires), "first_seen_at": _ts(created + 120_000_000),
        "last_seen_at": _ts(np.full(n, now_us)), "detail_fetched_at": _ts(created + 120_000_000),
        "deleted_at": pa.array(np.where(deleted < 0, None, deleted).tolist(), type=pa.int64())
                        .cast(TABLES["recordings"].schema.field("deleted_at").type),
    })
    numbers = rng.integers(2_000_000, 9_999_999, (n, 2))
    calls = pa.table({
        "call_id": call_ids,
        "from_number": [f"+1555{a:07d}" for a in numbers[:, 0]], "to_number": [f"+1555{b:07d}" for b in numbers[:, 1]],
        "direction": np.where(rng.random(n) < 0.5, "inbound", "outbound"), "status": np.full(n, "completed"),
        "call_flow_id": np.full(n, "flow_1"),
        "started_at": _ts(created - 5_000_000), "answered_at": _ts(created - 2_000_000),
        "ended_at": _ts(created + duration.astype("int64") * 1_000_000 + 10_000_000),
        "duration": (duration + rng.integers(5, 120, n)).astype("int32"), "fetched_at": _ts(np.full(n, now_us)),
    })
    ok = ~failed
    outcome = OUTCOMES[rng.integers(0, len(OUTCOMES), n)][ok]
    m = int(ok.sum())
    verified = outcome == "verified"
    audio = pa.table({
        "recording_id": ids[ok], "created_at": _ts(created[ok]), "outcome": outcome,
        "reason": np.where(verified, None, outcome).tolist(),
        "path": [f"audio/{day:%Y/%m/%d}/{i}.{f}" for i, f in zip(ids[ok], fmt[ok], strict=True)],
        "bytes": file_size[ok], "expected_bytes": file_size[ok], "sha256": np.full(m, "0" * 64),
        "expected_sha256": np.full(m, "0" * 64), "declared_format": fmt[ok], "probed_format": fmt[ok],
        "probed_duration": duration[ok].astype("float64"), "probed_sample_rate": np.full(m, 8000, dtype="int32"),
        "probed_channels": channels[ok], "attempts": np.ones(m, dtype="int32"),
        "first_attempt_at": _ts(completed[ok] + 60_000_000), "last_attempt_at": _ts(completed[ok] + 60_000_000),
        "verified_at": pa.array(np.where(verified, completed[ok] + 61_000_000, None).tolist(), type=pa.int64())
                         .cast(TABLES["recording_audio"].schema.field("verified_at").type),
    })
    event = np.where(failed, "recording.failed", "recording.completed")
    events = pa.table({
        "webhook_id": [f"msg_{i}" for i in ids], "event": event, "recording_id": ids, "call_id": call_ids,
        "occurred_at": _ts(completed), "received_at": _ts(completed + 1_000_000),
        "reason": np.where(failed, REASONS[rng.integers(0, 4, n)], None).tolist(),
        "checksum_sha256": np.where(failed, None, "0" * 64).tolist(),
        "download_url": np.where(failed, None, "https://storage.example/x").tolist(),
        "payload": np.full(n, "{}"),
    })
    return {"recordings": recordings, "calls": calls, "recording_audio": audio, "recording_events": events}


def _conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """Columns the synthetic day does not model (added to the lake later) are null, as in old partitions."""
    for field in schema:
        if field.name not in data.column_names:
            data = data.append_column(field.name, pa.nulls(data.num_rows, field.type))
    return data.select(schema.names).cast(schema)


def write_synthetic_lake(data_dir: Path, days: list[date], per_day: int, seed: int = 1,
                         now: datetime | None = None) -> dict[str, int]:
    """Write the days' partitions of all four tables; returns rows written per table."""
    rng = np.random.default_rng(seed)
    now = now or datetime.combine(max(days) + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    totals = dict.fromkeys(TABLES, 0)
    for day in days:
        for table, data in synthetic_day(day, per_day, rng, now).items():
            write_partition(data_dir, TABLES[table], day, _conform(data, TABLES[table].schema))
            totals[table] += data.num_rows
    return totals


DIRECT_DURATIONS = """
SELECT (created_at AT TIME ZONE 'UTC')::DATE AS day, coalesce(file_format, 'unknown') AS file_format, channels,
       count(*) AS recordings, sum(duration) AS total, avg(duration) AS mean,
       quantile_cont(duration, 0.5) AS p50, quantile_cont(duration, 0.9) AS p90, max(duration) AS max
FROM read_parquet(?)
WHERE status IN ('stopped', 'processing', 'completed', 'failed')
GROUP BY ALL ORDER BY ALL
"""


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - started)
    return best, value


def one_day_load_by_history(histories: list[int], per_day: int, repeat: int = 3) -> list[dict]:
    """For each history (days in the warehouse, growing in one lake): the one-day load's time (median
    of `3 * repeat` loads cycling over the last three days), publishing by catch-up and by copy (forced
    either way through `copy_below_bytes`), beside copying `base.duckdb` whole."""
    as_of = datetime(2027, 1, 1, tzinfo=timezone.utc)
    first = date(2026, 1, 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        written = 0
        for history in sorted(histories):
            days = [first + timedelta(days=i) for i in range(history)]
            write_synthetic_lake(data_dir, days[written:], per_day, seed=written + 1, now=as_of)
            load_warehouse(data_dir, days[written:] if written else None, storage_quota_bytes=10**12, as_of=as_of)
            written = history
            row: dict = {"days": history, "rows_per_day": per_day}
            for policy, copy_below in (("catch-up", 0), ("copy", 2**62)):
                for day in days[-3:]:  # three builds in rotation before timing
                    load_warehouse(data_dir, [day], storage_quota_bytes=10**12, as_of=as_of,
                                   copy_below_bytes=copy_below)
                loads, ways = [], set()
                for n in range(3 * repeat):
                    started = time.perf_counter()
                    result = load_warehouse(data_dir, [days[-3 + n % 3]], storage_quota_bytes=10**12, as_of=as_of,
                                            copy_below_bytes=copy_below)
                    loads.append(time.perf_counter() - started)
                    ways.add(result.published_by)
                assert ways == {policy}, (policy, ways, result.copy_reason)
                row[f"{policy}_s"] = statistics.median(loads)
            row["file_mb"] = result.bytes / 1e6
            row["copy_base_s"] = statistics.median(_copy_base(data_dir) for _ in range(repeat))
            rows.append(row)
    return rows


def _copy_base(data_dir: Path) -> float:
    """Seconds to copy the loader's copy whole into a new file and fsync it (the old publish step)."""
    copy = builds_dir(data_dir) / "bench-copy.duckdb"
    started = time.perf_counter()
    shutil.copyfile(builds_dir(data_dir) / BASE_NAME, copy)
    fsync_path(copy)
    seconds = time.perf_counter() - started
    os.unlink(copy)
    return seconds


def print_history(rows: list[dict]) -> None:
    print(f"one-day load by history ({rows[0]['rows_per_day']:,} recordings a day; median of the loads)")
    print(f"  {'days':>5} {'warehouse':>10} {'by catch-up':>12} {'by copy':>10} {'copy base alone':>16}")
    for row in rows:
        print(f"  {row['days']:>5} {row['file_mb']:>7.1f} MB {row['catch-up_s'] * 1000:>9.1f} ms "
              f"{row['copy_s'] * 1000:>7.1f} ms {row['copy_base_s'] * 1000:>13.1f} ms")
    for policy in ("catch-up", "copy"):
        ratio = rows[-1][f"{policy}_s"] / rows[0][f"{policy}_s"]
        print(f"  warehouse grew {rows[-1]['file_mb'] / rows[0]['file_mb']:.1f}x, the load by {policy} {ratio:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30, help="days of lake partitions (default 30)")
    parser.add_argument("--per-day", type=int, default=2000, help="recordings per day (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure, best kept (default 3)")
    parser.add_argument("--history", type=lambda text: [int(n) for n in text.split(",")],
                        help="time a one-day load on warehouses of these many days, e.g. 30,90,180")
    parser.add_argument("--quick", action="store_true", help="with --history: 10,30,60 days x 500 recordings")
    args = parser.parse_args(argv)
    if args.history or args.quick:
        print_history(one_day_load_by_history(args.history or [10, 30, 60], 500 if args.quick else args.per_day,
                                              args.repeat))
        return 0

    last = date(2026, 11, 20)
    days = [last - timedelta(days=i) for i in range(args.days)][::-1]
    as_of = datetime(2026, 11, 21, 12, tzinfo=timezone.utc)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        started = time.perf_counter()
        totals = write_synthetic_lake(data_dir, days, args.per_day, now=as_of)
        print(f"synthetic lake: {args.days} days x {args.per_day:,} recordings -> "
              + ", ".join(f"{t} {n:,}" for t, n in totals.items())
              + f" rows ({time.perf_counter() - started:.1f} s to write)")
        quota = 50 * 1024**3

        full, result = best_of(args.repeat, lambda: load_warehouse(
            data_dir, None, storage_quota_bytes=quota, as_of=as_of, rebuild=True))
        size = warehouse_path(data_dir).stat().st_size
        print(f"\nfull rebuild from the lake       {full * 1000:8.1f} ms   ({size / 1e6:.1f} MB warehouse.duckdb)")
        incr, _ = best_of(args.repeat, lambda: load_warehouse(
            data_dir, days[-3:], storage_quota_bytes=quota, as_of=as_of))
        print(f"incremental load of 3 days       {incr * 1000:8.1f} ms   "
              "(copy, replace 3 days in one transaction, swap)")
        one, _ = best_of(args.repeat, lambda: load_warehouse(
            data_dir, days[-1:], storage_quota_bytes=quota, as_of=as_of))
        print(f"incremental load of 1 day        {one * 1000:8.1f} ms")

        print("\nreport (open read-only, query, close)")
        path = warehouse_path(data_dir)
        for name in REPORTS:
            seconds, report = best_of(args.repeat, lambda name=name: read_report(path, name))
            print(f"  report_{name:<24} {seconds * 1000:8.1f} ms   {len(report.rows):>5} rows")

        glob = str(data_dir / "lake" / "recordings" / "*" / "*.parquet")
        with duckdb.connect() as con:
            con.execute("SET TimeZone = 'UTC'")
            direct, rows = best_of(args.repeat, lambda: con.execute(DIRECT_DURATIONS, [glob]).fetchall())
        with duckdb.connect(str(path), read_only=True) as con:
            same = con.execute(
                "SELECT day, file_format, channels, recordings, total_duration_s, max_duration_s FROM report_durations"
            ).fetchall()
            warehouse_agg, _ = best_of(args.repeat, lambda: con.execute("SELECT * FROM report_durations").fetchall())
        assert [(r[0], r[1], r[2], r[3], r[4], r[8]) for r in rows] == same, "direct aggregate differs from the view"
        print("\ndurations aggregate, same figures (view also joins calls)")
        print(f"  DuckDB over lake Parquet       {direct * 1000:8.1f} ms   read_parquet('lake/recordings/*/*.parquet')")
        print(f"  warehouse view, open conn      {warehouse_agg * 1000:8.1f} ms   SELECT * FROM report_durations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
