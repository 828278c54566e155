"""`audian_deletions`: with AUDIAN_DELETE_AT_AUDIAN=1, recordings deleted at Audian once safe."""

from datetime import datetime, timezone

import dagster as dg

from audian_pipeline.audio.audit import AuditLog
from audian_pipeline.defs.day_metadata import add_day_metadata, run_metadata
from audian_pipeline.defs.partitions import backfill_policy, daily_partitions, partition_days
from audian_pipeline.defs.resources import AudianResource, LakeResource
from audian_pipeline.lake.tables import AUDIAN_DELETIONS, RECORDING_AUDIO, RECORDINGS
from audian_pipeline.sync.audian_deletions import DeletionDay, delete_day

REVERIFIES = "archived_copies_reverify"


class DeletionConfig(dg.Config):
    dry_run: bool = False
    """Read back and re-verify every deletable recording, delete nothing, record nothing."""


@dg.asset(
    name=AUDIAN_DELETIONS.name,
    partitions_def=daily_partitions,
    backfill_policy=backfill_policy,
    deps=[RECORDING_AUDIO.name, RECORDINGS.name],
    group_name="lake",
    kinds={"parquet", "python"},
    pool="audian_api",
    description=(
        "With AUDIAN_DELETE_AT_AUDIAN=1 (off by default): each verified recording of the day deleted at Audian "
        "(DELETE /v2/recordings/{id}) to free its storage quota, only after its archived copy was read back from "
        "storage, decrypted and matched the webhook's sha256 in the same run; never a no_checksum_yet, "
        "quarantined or otherwise unverified one, never in a dry run. One row per deletion, audited."
    ),
    check_specs=[dg.AssetCheckSpec(
        REVERIFIES, asset=AUDIAN_DELETIONS.name,
        description="Fails when an archived copy read back for deletion did not match the webhook's sha256: "
                    "the recording stays at Audian, and the archive needs a look.",
    )],
)
def audian_deletions(context: dg.AssetExecutionContext, config: DeletionConfig, audian: AudianResource,
                     lake: LakeResource) -> dg.MaterializeResult:
    if not lake.deletes_at_audian():
        return dg.MaterializeResult(
            metadata={**run_metadata(partition_days(context)), "enabled": False},
            check_results=[dg.AssetCheckResult(check_name=REVERIFIES, passed=True, metadata={"enabled": False})])
    client, store, cipher = audian.get_client(), lake.lake_store(), lake.archive_cipher()
    audit = AuditLog(lake.path, run_id=context.run.run_id)
    now = datetime.now(timezone.utc)
    days: list[DeletionDay] = []
    for day in partition_days(context):
        result = delete_day(client, store, day, cipher, audit, now, dry_run=config.dry_run, run_id=context.run.run_id)
        context.log.info("audian_deletions %s: %d deleted, %d already deleted, %d would be (dry run), %d kept",
                         day, len(result.deleted), len(result.already_deleted), len(result.would_delete),
                         sum(result.kept.values()))
        days.append(result)
        add_day_metadata(context, day, _metadata(result))
    failed = {rid: why for d in days for rid, why in d.failed_readback.items()}
    return dg.MaterializeResult(
        metadata=run_metadata([d.day for d in days], dry_run=config.dry_run,
                              deleted=sum(len(d.deleted) for d in days),
                              already_deleted=sum(len(d.already_deleted) for d in days),
                              would_delete=sum(len(d.would_delete) for d in days),
                              bytes_freed=dg.MetadataValue.int(sum(d.bytes_freed for d in days))),
        check_results=[dg.AssetCheckResult(
            check_name=REVERIFIES, passed=not failed, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"failed": len(failed), "recordings": dg.MetadataValue.json(dict(list(failed.items())[:20]))},
            description=f"{len(failed)} archived copies did not re-verify; they stay at Audian" if failed else None,
        )],
    )


def _metadata(day: DeletionDay) -> dict:
    return {
        "deleted": len(day.deleted), "already_deleted": len(day.already_deleted),
        "would_delete": len(day.would_delete), "bytes_freed": dg.MetadataValue.int(day.bytes_freed),
        "kept": dg.MetadataValue.json(dict(sorted(day.kept.items()))),
        "failed_readback": len(day.failed_readback),
    }
