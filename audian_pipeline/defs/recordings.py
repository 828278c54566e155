"""`recordings`: Audian's recordings list, one Parquet partition per UTC day."""

from collections import Counter

import dagster as dg

from audian_pipeline.defs.checks import lake_freshness, unique_key_check, unique_key_spec
from audian_pipeline.defs.day_metadata import add_day_metadata, run_metadata
from audian_pipeline.defs.external import webhook_events
from audian_pipeline.defs.partitions import backfill_policy, daily_partitions, partition_days
from audian_pipeline.defs.resources import AudianResource, LakeResource
from audian_pipeline.defs.retries import api_step_retry, retried_only_if_transient
from audian_pipeline.sync.recordings import TABLE, DaySync, sync_day

MATCHES_API = "rows_match_api_count"
UNIQUE_IDS = "unique_recording_id"


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=backfill_policy,
    deps=[webhook_events],
    group_name="lake",
    freshness_policy=lake_freshness,
    kinds={"parquet", "python"},
    pool="audian_api",
    retry_policy=api_step_retry,
    description=(
        "Every recording Audian lists for the UTC day of its created_at, with the detail fields "
        "(format, bitrate, sample rate, channels, completed_at), expires_at and when it was first "
        "and last seen. Rows Audian stops listing are kept with deleted_at set. A completed "
        "recording whose recording.completed webhook is stored and agrees with the list is filled "
        "from it instead of a detail call (detail_source 'webhook': bitrate, sample rate and "
        "channels null, measured by recording_audio's probe); a failed one whose recording.failed "
        "webhook is stored needs no detail call either (it has no file)."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            MATCHES_API, asset=TABLE.name,
            description="Each day's listed rows equal Audian's own count of that day while it was paged."),
        unique_key_spec(TABLE, UNIQUE_IDS),
    ],
)
@retried_only_if_transient
def recordings(context: dg.AssetExecutionContext, audian: AudianResource, lake: LakeResource) -> dg.MaterializeResult:
    lake.claim_account(audian)
    client = audian.get_client()
    before = Counter(client.stats)
    synced: list[DaySync] = []
    for day in partition_days(context):
        day_before = Counter(client.stats)
        result = sync_day(client, lake.lake_store(), day, concurrency=audian.detail_concurrency,
                          list_limit=audian.list_limit, events_db=lake.events_location())
        context.log.info(
            "recordings %s: %d rows (%d new, %d changed, %d marked deleted), %d list + %d detail calls, "
            "%d details from webhooks",
            day, result.rows, result.new, result.changed, result.marked_deleted, result.list_calls, result.detail_calls,
            result.details_from_webhook,
        )
        synced.append(result)
        add_day_metadata(context, day, _day_metadata(result, Counter(client.stats) - day_before))
    requests = Counter(client.stats) - before
    return dg.MaterializeResult(
        metadata=_run_metadata(synced, requests, lake),
        check_results=[_check_api_counts(synced), _check_unique(synced, lake)],
    )


def _day_metadata(result: DaySync, requests: Counter) -> dict:
    """That day's own figures, for its partition's materialisation (see `day_metadata`)."""
    return {
        "rows": dg.MetadataValue.int(result.rows),
        "rows_by_status": dg.MetadataValue.json(dict(sorted(result.rows_by_status.items()))),
        "new_rows": result.new,
        "changed_rows": result.changed,
        "marked_deleted": result.marked_deleted,
        "api_requests": dg.MetadataValue.json(dict(sorted(requests.items()))),
        "list_calls": result.list_calls,
        "detail_calls": result.detail_calls,
        "details_from_webhook": result.details_from_webhook,
        "paging_corrections": result.listing.corrections,
        "bytes_written": dg.MetadataValue.int(result.bytes_written),
        "path": dg.MetadataValue.path(str(result.path)),
    }


def _run_metadata(synced: list[DaySync], requests: Counter, lake: LakeResource) -> dict:
    meta = run_metadata(
        [r.day for r in synced], rows=sum(r.rows for r in synced),
        api_requests=dg.MetadataValue.json(dict(sorted(requests.items()))),
        details_from_webhook=sum(r.details_from_webhook for r in synced),
        path=dg.MetadataValue.path(lake.lake_store().url_of(TABLE.name)),
    )
    if len(synced) > 1:
        meta["run_per_day"] = dg.MetadataValue.md(_per_day_table(synced))
    return meta


def _per_day_table(synced: list[DaySync]) -> str:
    lines = ["| day | rows | new | changed | deleted | list calls | detail calls | details from webhook |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in synced:
        lines.append(f"| {r.day} | {r.rows} | {r.new} | {r.changed} | {r.marked_deleted} "
                     f"| {r.list_calls} | {r.detail_calls} | {r.details_from_webhook} |")
    return "\n".join(lines)


def _check_api_counts(synced: list[DaySync]) -> dg.AssetCheckResult:
    """Each day's listing against Audian's own count of that day, read by the pager from the one
    answer that first reached the day. Two counting calls made one after the other disagree
    whenever a recording is created between them; one answer cannot. Recordings created later
    land above the pager's place, so neither side holds them: every day compares, today too.
    Only a recording of that day deleted while the pager read it, or one created within the
    same second as recordings already read (ties sort by ID), can still differ."""
    compared, mismatches = {}, {}
    for result in synced:
        day = str(result.day)
        compared[day] = {"stored": len(result.listing.recordings), "api": result.listing.api_total}
        if compared[day]["stored"] != compared[day]["api"]:
            mismatches[day] = compared[day]
    return dg.AssetCheckResult(
        check_name=MATCHES_API,
        passed=not mismatches,
        metadata={"days_compared": len(compared), "mismatches": dg.MetadataValue.json(mismatches)},
        description=None if not mismatches else f"{len(mismatches)} day(s) differ from Audian's count",
    )


def _check_unique(synced: list[DaySync], lake: LakeResource) -> dg.AssetCheckResult:
    return unique_key_check(lake.lake_store(), TABLE, [r.day for r in synced], UNIQUE_IDS)
