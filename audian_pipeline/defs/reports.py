"""`report_*`: one asset per report view of the warehouse, each showing its table and a chart."""

from datetime import date, datetime
from decimal import Decimal

import dagster as dg

from audian_pipeline.defs.resources import LakeResource
from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.warehouse.reports import (
    REPORTS,
    Report,
    chart_markdown,
    description,
    headline,
    read_report,
    sql_file,
)


def _table_metadata(report: Report) -> dg.MetadataValue:
    types = []
    for i in range(len(report.columns)):
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
        dg.TableRecord({name: _cell(value) for name, value in zip(report.columns, row, strict=True)})
        for row in report.rows
    ]
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, kind) for name, kind in zip(report.columns, types, strict=True)])
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
        metadata: dict[str, dg.MetadataValue | int | float | str | None] = {
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


report_assets = [_report_asset(short, view) for short, view in REPORTS.items()]
"""One asset per view in the registry `warehouse.reports.REPORTS` (and sql/reports/<view>.sql)."""
