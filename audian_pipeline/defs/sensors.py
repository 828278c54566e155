"""`recording_completed_sensor`: archive a recording minutes after Audian says it completed.

The daily schedule would archive it too, but up to a day later; a recording's file can only be
downloaded while Audian keeps it, and the sooner it is verified the sooner a bad file shows.
"""

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

import dagster as dg
import pyarrow.dataset as ds

from audian_pipeline.defs.partitions import daily_partitions
from audian_pipeline.defs.resources import LakeResource
from audian_pipeline.lake.paths import partitions_pattern
from audian_pipeline.lake.schemas import RECORDINGS
from audian_pipeline.settings import RETENTION_DAYS
from audian_pipeline.storage import Store, lake_at
from audian_pipeline.webhooks.store import BaseEventStore, StoredEvent, open_existing_event_store, shown_location

COMPLETED = "recording.completed"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
"""Tags of a run over a partition range (a single-run backfill), as the UI and `materialize` set them."""
BATCH = 5_000
"""Events read per tick: a backlog is worked through over several ticks, not in one huge one."""

audio_archive_job = dg.define_asset_job(
    "audio_archive_job",
    selection=dg.AssetSelection.assets("recordings", "recording_audio"),
    description=(
        "Refresh the day's recordings list, then archive its audio. The list comes first "
        "because a recording that completed minutes ago is usually not in the lake yet, and "
        "the archive only downloads what the lake lists."
    ),
)


def created_days(lake: Path | Store, recording_ids: Iterable[str]) -> dict[str, date]:
    """recording_id -> UTC day of created_at, for the ids the lake's `recordings` already holds.

    Reads only the two columns, filtered to the ids asked for, over every stored day: an id
    says nothing about its day, and 30-odd small files are cheap to scan, in place on S3 too.
    """
    store = lake_at(lake)
    wanted = sorted(set(recording_ids))
    files = [store.path(key) for key in store.keys(partitions_pattern("recordings"))]
    if not wanted or not files:
        return {}
    dataset = ds.dataset(files, schema=RECORDINGS, format="parquet", filesystem=store.fs if store.is_s3 else None)
    found = dataset.to_table(columns=["recording_id", "created_at"], filter=ds.field("recording_id").isin(wanted))
    return {
        rid: created.astimezone(timezone.utc).date()
        for rid, created in zip(found.column("recording_id").to_pylist(), found.column("created_at").to_pylist(),
                                strict=True)
    }


def candidate_days(event: StoredEvent, created: dict[str, date]) -> tuple[date, ...]:
    """The partition(s) that hold the event's recording.

    From the lake when it lists the recording. Otherwise the recording is newer than the last
    listing, and its day is guessed from the completion time: that day, and the day before,
    because a recording completes after its created_at by its duration plus processing (a
    few minutes, hours for a long call), so one that started before midnight completes after
    it. Recordings longer than a day are not expected; the daily schedule still catches them.
    Asking for one day too many costs a run that finds nothing new; one too few would leave
    the recording waiting for the schedule.
    """
    if event.recording_id in created:
        return (created[event.recording_id],)
    day = event.occurred_at.astimezone(timezone.utc).date()
    return (day, day - timedelta(days=1))


def audio_days(events: Iterable[StoredEvent], created: dict[str, date]) -> dict[date, int]:
    """day -> the highest seq of the events that asked for it (the run key's version)."""
    days: dict[date, int] = {}
    for event in events:
        for day in candidate_days(event, created):
            days[day] = max(days.get(day, 0), event.seq)
    return days


def runnable(day: date, newest: date, today: date) -> bool:
    """A partition that exists and whose recordings Audian may still hold.

    Retention is counted back from the day of the event stored last (`newest`), not from our
    own clock: in production the two are minutes apart, Audian's clock is the one that deletes,
    and a store replayed later (or the emulator's frozen clock) still gives the same runs.
    """
    if day > today or day < daily_partitions.start.date():
        return False
    return day >= newest - timedelta(days=RETENTION_DAYS)


def run_requests(days: dict[date, int], newest: date, today: date) -> list[dg.RunRequest]:
    """At most one run a tick: a single-run backfill over the first to the last day asked for.

    The job's assets have `BackfillPolicy.single_run()`, so a range costs one run, one process
    and one Dagster overhead whatever its length, where one run per day made the first tick of
    a fresh cursor launch a run for every retained day at once. Days in between that no event
    asked for are listed again too, which costs a page each and downloads nothing already
    archived. The run key carries the range and the highest seq, so a tick retried before its
    cursor was saved asks again under the same key and Dagster launches nothing twice."""
    wanted = {day: seq for day, seq in days.items() if runnable(day, newest, today)}
    if not wanted:
        return []
    first, last = min(wanted), max(wanted)
    key = f"audio-{first.isoformat()}-{last.isoformat()}-{max(wanted.values())}"
    tags = {"audian/trigger": COMPLETED}
    if first == last:
        return [dg.RunRequest(run_key=key, partition_key=first.isoformat(), tags=tags)]
    return [dg.RunRequest(run_key=key, tags={**tags, RANGE_START: first.isoformat(), RANGE_END: last.isoformat()})]


def newest_event_day(store: BaseEventStore) -> date:
    """The UTC day of the last event the receiver stored, of any type."""
    (last,) = store.events_after(store.max_seq() - 1)
    return last.occurred_at.astimezone(timezone.utc).date()


@dg.sensor(
    job=audio_archive_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Runs audio_archive_job for the days of newly received recording.completed webhooks.",
)
def recording_completed_sensor(
    context: dg.SensorEvaluationContext, lake: LakeResource
) -> dg.SensorResult | dg.SkipReason:
    """Each stored `recording.completed` event asks for its recording's day once.

    The cursor is the events store's `seq`, which never skips a committed row, so an event is
    seen by exactly one tick; a tick's events make one run over their days. A fresh cursor
    starts at 0: every completed event stored so far asks for its day, and the first tick runs
    one single-run backfill over that backlog, archiving whatever the receiver heard before
    the sensor was turned on.

    STOPPED by default: it launches downloads through the daemon, needs the receiver running
    to have anything to read, and its first tick covers the whole store, which an operator
    should choose to start (typically after the first backfill), not `dagster dev` by itself.
    """
    cursor = int(context.cursor or 0)
    location = lake.events_location()
    store = open_existing_event_store(location)
    if store is None:
        return dg.SkipReason(f"no events store at {shown_location(location)} yet: is the webhook receiver running?")
    with store:
        events = store.events_after(cursor, COMPLETED, limit=BATCH)
        if not events:
            return dg.SkipReason(f"no recording.completed event after seq {cursor}")
        newest = newest_event_day(store)
    created = created_days(lake.lake_store(), (e.recording_id for e in events))
    days = audio_days(events, created)
    requests = run_requests(days, newest, datetime.now(timezone.utc).date())
    context.log.info(
        "%d completed events (seq %d-%d), %d recordings found in the lake: %d day(s) asked for, %s",
        len(events), events[0].seq, events[-1].seq, len(created), len(days),
        "one run over them" if requests else "none retained",
    )
    new_cursor = str(events[-1].seq)
    if not requests:
        return dg.SensorResult(skip_reason="no day of these events is a retained partition", cursor=new_cursor)
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)
