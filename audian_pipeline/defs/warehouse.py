"""`warehouse`: the lake's days loaded into warehouse.duckdb.

The warehouse is built beside the published file and swapped in (see
`audian_pipeline.warehouse.load`), so analysts can keep it open while this runs.
"""

from datetime import date

import dagster as dg

from audian_pipeline.defs.day_metadata import add_day_metadata, run_metadata
from audian_pipeline.defs.partitions import backfill_policy, daily_partitions, partition_days
from audian_pipeline.defs.resources import LakeResource, WarehouseResource
from audian_pipeline.lake.tables import TABLES as LAKE_TABLES
from audian_pipeline.warehouse.load import TABLES, LoadResult, load_warehouse


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=backfill_policy,
    deps=list(LAKE_TABLES),
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
        lake.path, days, lake=lake.lake_store(),
        storage_quota_bytes=warehouse_settings.quota_bytes(),
        show_phone_numbers=warehouse_settings.phone_numbers_shown(),
        as_of=warehouse_settings.as_of_datetime(),
        archive_retention_days=lake.retention_days(),
    )
    if result.full_rebuild:
        context.log.info("warehouse rebuilt in full from the lake (%s): %d day(s)",
                         result.rebuild_reason, len(result.days))
    context.log.info("warehouse published in %.2f s: %s", result.seconds, result.rows_by_table)
    for day in days:
        add_day_metadata(context, day, {f"rows_{table}": result.loaded_rows[table].get(day, 0) for table in TABLES})
    return dg.MaterializeResult(metadata=_load_metadata(result, days))


def _load_metadata(result: LoadResult, run_days: list[date]) -> dict:
    """The load as a whole; each day's rows go on its own partition (see `day_metadata`), and the
    warehouse's table sizes are named as the whole file's, not a day's."""
    meta: dict = {
        **run_metadata(run_days),
        "path": dg.MetadataValue.path(str(result.path)),
        "full_rebuild": result.full_rebuild,
        "published_by": result.published_by,  # catch-up (O(days loaded)) or copy (O(warehouse), copy_reason)
        "bytes_copied": dg.MetadataValue.int(result.bytes_copied),
        "seconds": round(result.seconds, 3),
        "file_bytes": dg.MetadataValue.int(result.bytes),
        "as_of": result.as_of.isoformat() if result.as_of else None,
    }
    if result.rebuild_reason:
        meta["rebuild_reason"] = result.rebuild_reason
    if result.copy_reason:
        meta["copy_reason"] = result.copy_reason
    for table in TABLES:
        meta[f"warehouse_rows_{table}"] = dg.MetadataValue.int(result.rows_by_table[table])
    loaded_days = sorted({d for per_day in result.loaded_rows.values() for d in per_day})
    if loaded_days and len(loaded_days) <= 62:
        lines = ["| day | " + " | ".join(TABLES) + " |", "|---|" + "---:|" * len(TABLES)]
        for day in loaded_days:
            lines.append(f"| {day} | " + " | ".join(f"{result.loaded_rows[t].get(day, 0):,}" for t in TABLES) + " |")
        meta["run_rows_loaded_per_day"] = dg.MetadataValue.md("\n".join(lines))
    return meta
