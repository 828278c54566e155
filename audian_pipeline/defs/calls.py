"""`calls`: the call behind each recording, one Parquet partition per UTC day of the recording."""

from collections import Counter

import dagster as dg

from audian_pipeline.defs.checks import lake_freshness, unique_key_check, unique_key_spec
from audian_pipeline.defs.day_metadata import add_day_metadata, run_metadata
from audian_pipeline.defs.partitions import backfill_policy, daily_partitions, partition_days
from audian_pipeline.defs.resources import AudianResource, LakeResource
from audian_pipeline.defs.retries import api_step_retry, retried_only_if_transient
from audian_pipeline.lake.tables import RECORDINGS
from audian_pipeline.sync.calls import TABLE, CallsDay, sync_calls_day

UNIQUE_CALL_IDS = "unique_call_id"


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=backfill_policy,
    deps=[RECORDINGS.name],
    group_name="lake",
    freshness_policy=lake_freshness,
    kinds={"parquet", "python"},
    pool="audian_api",
    retry_policy=api_step_retry,
    description=(
        "The call of every recording in the day's recordings partition (from and to numbers, "
        "direction, outcome, call flow, times), fetched once per call. Calls whose recordings "
        "are not final yet are left for a later run; calls Audian no longer has are skipped."
    ),
    check_specs=[
        unique_key_spec(TABLE, UNIQUE_CALL_IDS),
    ],
)
@retried_only_if_transient
def calls(context: dg.AssetExecutionContext, audian: AudianResource, lake: LakeResource) -> dg.MaterializeResult:
    lake.claim_account(audian)
    client = audian.get_client()
    before = Counter(client.stats)
    synced: list[CallsDay] = []
    for day in partition_days(context):
        day_before = Counter(client.stats)
        result = sync_calls_day(client, lake.lake_store(), day, concurrency=audian.detail_concurrency)
        context.log.info(
            "calls %s: %d rows, %d fetched, %d deferred, %d not found, %d unreadable",
            day, result.rows, result.fetched, result.deferred, result.not_found, len(result.unreadable),
        )
        synced.append(result)
        add_day_metadata(context, day, _day_metadata(result, Counter(client.stats) - day_before))
    requests = Counter(client.stats) - before
    return dg.MaterializeResult(
        metadata=_run_metadata(synced, requests, lake),
        check_results=[_check_unique(synced, lake)],
    )


def _day_metadata(result: CallsDay, requests: Counter) -> dict:
    """That day's own figures, for its partition's materialisation (see `day_metadata`)."""
    return {
        "rows": dg.MetadataValue.int(result.rows),
        "new_calls_fetched": result.fetched,
        "call_requests": requests["call"],
        "api_requests": dg.MetadataValue.json(dict(sorted(requests.items()))),
        "deferred": result.deferred,
        "not_found_skipped": result.not_found,
        "unreadable": dg.MetadataValue.json(dict(result.unreadable)),
        "bytes_written": dg.MetadataValue.int(result.bytes_written),
        "path": dg.MetadataValue.path(str(result.path)),
    }


def _run_metadata(synced: list[CallsDay], requests: Counter, lake: LakeResource) -> dict:
    unreadable = {cid: why for r in synced for cid, why in r.unreadable.items()}
    return run_metadata(
        [r.day for r in synced], rows=sum(r.rows for r in synced), new_calls_fetched=sum(r.fetched for r in synced),
        call_requests=requests["call"], deferred=sum(r.deferred for r in synced),
        not_found_skipped=sum(r.not_found for r in synced), unreadable=dg.MetadataValue.json(unreadable),
        api_requests=dg.MetadataValue.json(dict(sorted(requests.items()))),
        path=dg.MetadataValue.path(lake.lake_store().url_of(TABLE.name)),
    )


def _check_unique(synced: list[CallsDay], lake: LakeResource) -> dg.AssetCheckResult:
    return unique_key_check(lake.lake_store(), TABLE, [r.day for r in synced], UNIQUE_CALL_IDS)
