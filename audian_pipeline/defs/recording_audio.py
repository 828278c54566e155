"""`recording_audio`: the verified audio archive and its Parquet manifest."""

from collections import Counter
from datetime import datetime, timezone

import dagster as dg

from audian_pipeline.audio.archive import Archiver
from audian_pipeline.audio.audit import AuditLog
from audian_pipeline.audio.verify import OUTCOMES
from audian_pipeline.defs.checks import lake_freshness
from audian_pipeline.defs.day_metadata import add_day_metadata, run_metadata
from audian_pipeline.defs.external import webhook_events
from audian_pipeline.defs.partitions import backfill_policy, daily_partitions, partition_days
from audian_pipeline.defs.resources import AudianResource, LakeResource
from audian_pipeline.defs.retries import api_step_retry, retried_only_if_transient
from audian_pipeline.lake.tables import RECORDING_AUDIO, RECORDINGS
from audian_pipeline.sync.recording_audio import ArchiveDay, archive_day

AT_RISK = "no_unverified_recording_near_expiry"
UNSAFE_IDS = "no_unsafe_recording_ids"
DOWNLOADS = "downloads_succeed"
ENCRYPTED = "archive_encrypted_at_rest"


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=backfill_policy,
    deps=[RECORDINGS.name, webhook_events],
    group_name="lake",
    freshness_policy=lake_freshness,
    kinds={"parquet", "python"},
    pool="audian_api",
    retry_policy=api_step_retry,
    description=(
        "Each completed recording of the day downloaded once, verified (size, webhook sha256, real "
        "audio of the declared format, rate, channels and length) and archived under "
        "audio/YYYY/MM/DD/<recording_id>.<ext>; the manifest has one row per recording with the "
        "outcome: " + ", ".join(OUTCOMES) + "."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            AT_RISK, asset=RECORDING_AUDIO.name,
            description="Fails when a completed recording is unverified within 48 hours of Audian deleting it.",
        ),
        dg.AssetCheckSpec(
            UNSAFE_IDS, asset=RECORDING_AUDIO.name,
            description="Fails when Audian gave recording IDs that cannot be file names: they are kept in the "
                        "manifest as unsafe_id, never downloaded, and need reporting to Audian.",
        ),
        dg.AssetCheckSpec(
            DOWNLOADS, asset=RECORDING_AUDIO.name,
            description="Fails when every completed recording of a day failed to download (storage host "
                        "down, URLs refused): the run itself succeeds, so this is where it shows.",
        ),
        dg.AssetCheckSpec(
            ENCRYPTED, asset=RECORDING_AUDIO.name,
            description="Warns when AUDIAN_ARCHIVE_KEYSET is unset: recordings are then archived in plaintext.",
        ),
    ],
)
@retried_only_if_transient
def recording_audio(
    context: dg.AssetExecutionContext, audian: AudianResource, lake: LakeResource
) -> dg.MaterializeResult:
    lake.claim_account(audian)
    client = audian.get_client()
    before = Counter(client.stats)
    cipher = lake.archive_cipher()
    archiver = Archiver(client, lake.path, AuditLog(lake.path, run_id=context.run.run_id),
                        lake=lake.lake_store(), archive=lake.archive_store(), cipher=cipher)
    days: list[ArchiveDay] = []
    for day in partition_days(context):
        day_before = Counter(client.stats)
        result = archive_day(archiver, day, lake.events_location(), concurrency=audian.download_concurrency)
        context.log.info("recording_audio %s: %s; %d downloaded, %.1f MB at %.1f MB/s", day, result.outcomes,
                         result.downloaded, result.bytes_downloaded / 1e6, result.mb_per_second)
        days.append(result)
        add_day_metadata(context, day, _day_metadata(result, Counter(client.stats) - day_before))
    requests = Counter(client.stats) - before
    at_risk = [rid for d in days for rid in d.at_risk]
    return dg.MaterializeResult(
        metadata=_run_metadata(days, requests, lake),
        check_results=[
            dg.AssetCheckResult(
                check_name=AT_RISK, passed=not at_risk,
                metadata={"at_risk": len(at_risk), "recording_ids": dg.MetadataValue.json(at_risk[:50])},
                description=(f"{len(at_risk)} completed recording(s) unverified within 48 h of deletion"
                             if at_risk else None),
            ),
            _unsafe_ids_check(days),
            _downloads_check(days),
            _encryption_check(cipher is not None),
        ],
    )


def _unsafe_ids_check(days: list[ArchiveDay]) -> dg.AssetCheckResult:
    """An ID that cannot be a file name is a broken promise of the API. It fails this check, not
    the step: `unsafe_id` is final, so a failed step would fail every later run of those days and
    starve the warehouse and reports of everything else for good."""
    unsafe = [(d.day, rid) for d in days for rid in d.unsafe_ids]
    shown = ", ".join(f"{rid!r} ({day})" for day, rid in unsafe[:5])
    return dg.AssetCheckResult(
        check_name=UNSAFE_IDS, passed=not unsafe, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"unsafe_ids": len(unsafe), "recording_ids": dg.MetadataValue.json([rid for _, rid in unsafe[:50]])},
        description=(
            f"{len(unsafe)} recording ID(s) are not safe as file names and were not downloaded: {shown}. "
            "Nothing was written outside the archive; the manifest records them as unsafe_id. "
            "Report the IDs to Audian." if unsafe else None
        ),
    )


def _downloads_check(days: list[ArchiveDay]) -> dg.AssetCheckResult:
    """Failed downloads are retried by the next run, so the step succeeds; a day where not one
    completed recording could be fetched is still something a person must see today."""
    failed_days = {str(d.day): d.outcomes.get("download_failed", 0) for d in days if d.all_downloads_failed}
    return dg.AssetCheckResult(
        check_name=DOWNLOADS, passed=not failed_days, severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "days_with_every_download_failed": dg.MetadataValue.json(failed_days),
            "download_failed": sum(d.outcomes.get("download_failed", 0) for d in days),
        },
        description=(
            f"every completed recording failed to download on {len(failed_days)} day(s): "
            f"{', '.join(sorted(failed_days))}; see the manifest's reason column" if failed_days else None
        ),
    )


def _encryption_check(encrypted: bool) -> dg.AssetCheckResult:
    """A WARN, not an error: a plaintext archive is a choice a deployment may make, never a
    silent one. Names the setting, never the keyset's content."""
    return dg.AssetCheckResult(
        check_name=ENCRYPTED, passed=encrypted, severity=dg.AssetCheckSeverity.WARN,
        metadata={"encrypted": encrypted},
        description=None if encrypted else (
            "AUDIAN_ARCHIVE_KEYSET is not set: recordings are archived in plaintext. Create a keyset with "
            "`audian-pipeline keyset create PATH` and set AUDIAN_ARCHIVE_KEYSET=PATH to encrypt new ones."),
    )


def _day_metadata(day: ArchiveDay, requests: Counter) -> dict:
    """That day's own figures, for its partition's materialisation (see `day_metadata`)."""
    meta = {
        "rows": day.rows,
        "files_downloaded": day.downloaded,
        "bytes_downloaded": dg.MetadataValue.int(day.bytes_downloaded),
        "mb_per_second": dg.MetadataValue.float(round(day.mb_per_second, 2)),
        "outcomes": dg.MetadataValue.json(dict(sorted(day.outcomes.items()))),
        "api_requests": dg.MetadataValue.json(dict(sorted(requests.items()))),
        "path": dg.MetadataValue.path(str(day.path)),
    }
    oldest = day.oldest_unarchived
    if oldest:
        left = oldest["expires_at"] - datetime.now(timezone.utc)
        meta["oldest_unarchived"] = oldest["recording_id"]
        meta["oldest_unarchived_expires_at"] = oldest["expires_at"].isoformat()
        meta["hours_until_it_expires"] = dg.MetadataValue.float(round(left.total_seconds() / 3600, 1))
    return meta


def _run_metadata(days: list[ArchiveDay], requests: Counter, lake: LakeResource) -> dict:
    outcomes: Counter = Counter()
    for d in days:
        outcomes.update(d.outcomes)
    seconds = sum(d.seconds_downloading for d in days)
    downloaded = sum(d.bytes_downloaded for d in days)
    return run_metadata(
        [d.day for d in days], rows=sum(d.rows for d in days), files_downloaded=sum(d.downloaded for d in days),
        bytes_downloaded=dg.MetadataValue.int(downloaded),
        mb_per_second=dg.MetadataValue.float(round(downloaded / 1e6 / seconds, 2) if seconds else 0.0),
        outcomes=dg.MetadataValue.json(dict(sorted(outcomes.items()))),
        api_requests=dg.MetadataValue.json(dict(sorted(requests.items()))),
        path=dg.MetadataValue.path(lake.lake_store().url_of(RECORDING_AUDIO.name)),
    )
