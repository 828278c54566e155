"""`report_*`: one asset per report view of the warehouse, each showing its chart and summary."""

import dagster as dg
import pandas as pd

from audian_pipeline.defs.resources import LakeResource
from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.warehouse.charts import markdown_image
from audian_pipeline.warehouse.reports import REPORTS, Report, description, read_report, sql_file
from audian_pipeline.warehouse.summaries import key_figures


def _summary_table(table: pd.DataFrame) -> dg.MetadataValue:
    """The summary in human units (MiB, minutes, %): every cell a display string, every column named."""
    columns = [dg.TableColumn(str(name), "string") for name in table.columns]
    records = [dg.TableRecord({str(k): v for k, v in row.items()}) for row in table.to_dict("records")]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


def _metadata(short: str, report: Report) -> dict[str, dg.MetadataValue | int | float | str | None]:
    summary = report.summary()
    metadata: dict[str, dg.MetadataValue | int | float | str | None] = {
        "headline": dg.MetadataValue.text(summary.headline),
        "chart": dg.MetadataValue.md(markdown_image(report.chart(scale=1), f"chart of {report.view}")),
        "summary": _summary_table(summary.table),
        "rows": len(report.rows),
        "as_of": report.as_of.isoformat() if report.as_of else None,
        "every_row": dg.MetadataValue.text(
            f"audian-pipeline report {short} --full (or --csv, or --html {short}.html)"),
        "sql": dg.MetadataValue.path(str(sql_file(short))),
        "query": dg.MetadataValue.md(f"```sql\nSELECT * FROM {report.view};\n```"),
    }
    if summary.omitted:
        metadata["summary_note"] = f"the latest {len(summary.table)} rows; {summary.omitted} earlier in --full"
    for key, value in key_figures(report.view, report.frame()).items():
        if value is not None:
            metadata[key] = value
    return metadata


def _report_asset(short: str, view: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=view,
        deps=["warehouse"],
        group_name="reports",
        kinds={"duckdb"},
        description=description(short),
    )
    def _report(lake: LakeResource) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata=_metadata(short, read_report(warehouse_path(lake.path), short)))

    return _report


report_assets = [_report_asset(short, view) for short, view in REPORTS.items()]
"""One asset per view in the registry `warehouse.reports.REPORTS` (and sql/reports/<view>.sql)."""
