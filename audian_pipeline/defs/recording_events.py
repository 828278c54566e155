"""`recording_events`: the webhook events the receiver stored, one Parquet partition per UTC day.

Unlike the other lake tables, the day is the event's own time (`occurred_at`), not the
recording's `created_at`: an event is a fact about a moment, and a recording that completes
after midnight has its `recording.completed` on the next day.
"""


from collections import Counter

import dagster as dg

from audian_pipeline.defs.checks import lake_freshness, unique_key_check, unique_key_spec
from audian_pipeline.defs.day_metadata import add_day_metadata, run_metadata
from audian_pipeline.defs.external import webhook_events
from audian_pipeline.defs.partitions import backfill_policy, daily_partitions, partition_days
from audian_pipeline.defs.resources import LakeResource
from audian_pipeline.sync.recording_events import TABLE, EventsDay, write_events_day
from audian_pipeline.webhooks.store import shown_location

UNIQUE_WEBHOOK_IDS = "one_row_per_webhook_id"


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=backfill_policy,
    deps=[webhook_events],
    group_name="lake",
    freshness_policy=lake_freshness,
    kinds={"parquet"},
    description=(
        "Every webhook event Audian delivered (recording.started, stopped, completed, failed), "
        "once each however often it was delivered, partitioned by the UTC day the event "
        "happened (occurred_at). The only table with the file checksum and the failure reason."
    ),
    check_specs=[
        unique_key_spec(TABLE, UNIQUE_WEBHOOK_IDS),
    ],
)
def recording_events(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    written: list[EventsDay] = []
    for day in partition_days(context):
        result = write_events_day(lake.lake_store(), day, lake.events_location())
        context.log.info("recording_events %s: %d rows %s", day, result.rows, result.rows_by_event)
        written.append(result)
        add_day_metadata(context, day, _day_metadata(result))
    if not all(result.store_found for result in written):
        context.log.warning("no events store at %s yet: wrote empty partitions", shown_location(lake.events_location()))
    return dg.MaterializeResult(
        metadata=_run_metadata(written, lake),
        check_results=[_check_unique(written, lake)],
    )


def _day_metadata(result: EventsDay) -> dict:
    """That day's own figures, for its partition's materialisation (see `day_metadata`)."""
    return {
        "rows": dg.MetadataValue.int(result.rows),
        "rows_by_event": dg.MetadataValue.json(dict(sorted(result.rows_by_event.items()))),
        "distinct_recordings": len(result.recording_ids),
        "bytes_written": dg.MetadataValue.int(result.bytes_written),
        "latest_received_at": result.latest_received_at.isoformat() if result.latest_received_at else "none",
        "path": dg.MetadataValue.path(str(result.path)),
    }


def _run_metadata(written: list[EventsDay], lake: LakeResource) -> dict:
    by_event: Counter = Counter()
    for result in written:
        by_event.update(result.rows_by_event)
    meta = run_metadata(
        [r.day for r in written], rows=sum(r.rows for r in written),
        rows_by_event=dg.MetadataValue.json(dict(sorted(by_event.items()))),
        distinct_recordings=len(set().union(*(r.recording_ids for r in written))),
        path=dg.MetadataValue.path(lake.lake_store().url_of(TABLE.name)),
    )
    meta["events_store_found"] = all(r.store_found for r in written)
    if not meta["events_store_found"]:
        meta["note"] = (f"no events store at {shown_location(lake.events_location())}: "
                        "the receiver has stored nothing yet")
    return meta


def _check_unique(written: list[EventsDay], lake: LakeResource) -> dg.AssetCheckResult:
    return unique_key_check(lake.lake_store(), TABLE, [r.day for r in written], UNIQUE_WEBHOOK_IDS)
