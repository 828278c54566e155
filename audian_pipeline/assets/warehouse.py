"""`warehouse`: the lake's days loaded into warehouse.duckdb; `report_*`: its four report views.

The warehouse is built beside the published file and swapped in (see
`audian_pipeline.warehouse.load`), so analysts can keep it open while this runs.
"""

from datetime import date, datetime
from decimal import Decimal

import dagster as dg

from audian_pipeline.assets.partitions import backfill_policy, daily_partitions, partition_days
from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.lake.resource import LakeResource
from audian_pipeline.warehouse.load import TABLES, LoadResult, load_warehouse
from audian_pipeline.warehouse.reports import REPORTS, Report, chart_markdown, description, headline, read_report, sql_file
from audian_pipeline.warehouse.resource import WarehouseResource


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=backfill_policy,
    deps=["recordings", "calls", "recording_audio", "recording_events"],
    group_name="warehouse",
    kinds={"duckdb"},
    pool="warehouse",
    description=(
        "warehouse.duckdb: tables recordings, calls, recording_audio and recording_events loaded from the lake, each "
        "run's days replacing exactly those days' rows in one transaction, on a copy that is then swapped in "
        "atomically, so an analyst's open session never blocks the load nor sees half of it. Also the report views "
        "of sql/reports and pipeline_settings (as_of, quota, phone-number masking)."
    ),
)
def warehouse(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse_settings: WarehouseResource
) -> dg.MaterializeResult:
    days = partition_days(context)
    result = load_warehouse(
        lake.path, days,
        storage_quota_bytes=warehouse_settings.storage_quota_bytes,
        show_phone_numbers=warehouse_settings.show_phone_numbers,
        as_of=warehouse_settings.as_of_datetime(),
    )
    if result.full_rebuild:
        context.log.info("warehouse rebuilt in full from the lake (%s): %d day(s)", result.rebuild_reason, len(result.days))
    context.log.info("warehouse published in %.2f s: %s", result.seconds, result.rows_by_table)
    return dg.MaterializeResult(metadata=_load_metadata(result, days))


def _load_metadata(result: LoadResult, run_days: list[date]) -> dict:
    meta: dict = {
        "path": dg.MetadataValue.path(str(result.path)),
        "run_days": len(run_days),
        "full_rebuild": result.full_rebuild,
        "seconds": round(result.seconds, 3),
        "file_bytes": dg.MetadataValue.int(result.bytes),
        "as_of": result.as_of.isoformat() if result.as_of else None,
    }
    if result.rebuild_reason:
        meta["rebuild_reason"] = result.rebuild_reason
    for table in TABLES:
        meta[f"rows_{table}"] = dg.MetadataValue.int(result.rows_by_table[table])
    loaded_days = sorted({d for per_day in result.loaded_rows.values() for d in per_day})
    if loaded_days and len(loaded_days) <= 62:
        lines = ["| day | " + " | ".join(TABLES) + " |", "|---|" + "---:|" * len(TABLES)]
        for day in loaded_days:
            lines.append(f"| {day} | " + " | ".join(f"{result.loaded_rows[t].get(day, 0):,}" for t in TABLES) + " |")
        meta["rows_loaded_per_day"] = dg.MetadataValue.md("\n".join(lines))
    return meta


def _table_metadata(report: Report) -> dg.MetadataValue:
    types = []
    for i, name in enumerate(report.columns):
        values = [row[i] for row in report.rows if row[i] is not None]
        sample = values[0] if values else None
        if isinstance(sample, bool):
            types.append("bool")
        elif isinstance(sample, int):
            types.append("int")
        elif isinstance(sample, (float, Decimal)):
            types.append("float")
        elif isinstance(sample, (date, datetime)):
            types.append("date" if not isinstance(sample, datetime) else "datetime")
        else:
            types.append("string")
    records = [
        dg.TableRecord({name: _cell(value) for name, value in zip(report.columns, row)}) for row in report.rows
    ]
    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in zip(report.columns, types)])
    return dg.MetadataValue.table(records=records, schema=schema)


def _cell(value):
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def _report_asset(short: str, view: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=view,
        deps=["warehouse"],
        group_name="reports",
        kinds={"duckdb"},
        description=description(short),
    )
    def _report(lake: LakeResource) -> dg.MaterializeResult:
        report = read_report(warehouse_path(lake.path), short)
        metadata = {
            "report": _table_metadata(report),
            "chart": dg.MetadataValue.md(chart_markdown(report)),
            "rows": len(report.rows),
            "as_of": report.as_of.isoformat() if report.as_of else None,
            "sql": dg.MetadataValue.path(str(sql_file(short))),
            "query": dg.MetadataValue.md(f"```sql\nSELECT * FROM {view};\n```"),
        }
        for key, value in headline(report).items():
            if value is not None:
                metadata[key] = value
        return dg.MaterializeResult(metadata=metadata)

    return _report


report_durations = _report_asset("durations", REPORTS["durations"])
report_failure_reasons = _report_asset("failure_reasons", REPORTS["failure_reasons"])
report_storage_quota = _report_asset("storage_quota", REPORTS["storage_quota"])
report_retention_expiry = _report_asset("retention_expiry", REPORTS["retention_expiry"])

report_assets = [report_durations, report_failure_reasons, report_storage_quota, report_retention_expiry]
