"""`archive_disposals`: with AUDIAN_ARCHIVE_RETENTION_DAYS set, archived recordings past it disposed of."""

from datetime import datetime, timezone

import dagster as dg

from audian_pipeline.audio.audit import AuditLog
from audian_pipeline.defs.day_metadata import run_metadata
from audian_pipeline.defs.partitions import backfill_policy, daily_partitions, partition_days
from audian_pipeline.defs.resources import LakeResource
from audian_pipeline.lake.tables import ARCHIVE_DISPOSALS, AUDIAN_DELETIONS, RECORDING_AUDIO, RECORDING_SPEECH
from audian_pipeline.settings import SettingError
from audian_pipeline.sync.archive_disposals import Disposals, dispose


class DisposalConfig(dg.Config):
    dry_run: bool = False
    """List what is due and not on hold; delete, write and mark nothing."""
    as_of: str | None = None
    """ISO instant to apply the policy as of, when earlier than the end of the run's last day; None: now."""


@dg.asset(
    name=ARCHIVE_DISPOSALS.name,
    partitions_def=daily_partitions,
    backfill_policy=backfill_policy,
    deps=[RECORDING_AUDIO.name, RECORDING_SPEECH.name, AUDIAN_DELETIONS.name],
    group_name="lake",
    kinds={"parquet", "python"},
    description=(
        "With AUDIAN_ARCHIVE_RETENTION_DAYS set (unset: kept forever): every archived recording whose created_at "
        "plus the retention has passed by the end of the run's last day, and that is not under a legal hold "
        "(`audian-pipeline hold add`), has its archived object deleted; one row per disposal in this table, in the "
        "run's last day's partition, its manifest row marked disposed_at (never removed), each disposal audited. "
        "dry_run lists what would go and touches nothing."
    ),
)
def archive_disposals(context: dg.AssetExecutionContext, config: DisposalConfig,
                      lake: LakeResource) -> dg.MaterializeResult:
    days = partition_days(context)
    retention = lake.retention_days()
    if retention is None:
        return dg.MaterializeResult(metadata={**run_metadata(days), "enabled": False,
                                            "retention": "forever (AUDIAN_ARCHIVE_RETENTION_DAYS unset)"})
    result = dispose(lake.lake_store(), max(days), _now(config), retention,
                     AuditLog(lake.path, run_id=context.run.run_id), dry_run=config.dry_run,
                     run_id=context.run.run_id)
    context.log.info("archive_disposals as of %s: %d disposed, %d already missing, %d would be (dry run), "
                     "%d held", result.horizon.isoformat(), len(result.disposed), len(result.already_missing),
                     len(result.would_dispose), len(result.held))
    return dg.MaterializeResult(metadata=_metadata(result, days, retention, config.dry_run))


def _now(config: DisposalConfig) -> datetime:
    if config.as_of is None:
        return datetime.now(timezone.utc)
    value = datetime.fromisoformat(config.as_of.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise SettingError(f"archive_disposals' as_of needs a time zone, e.g. {config.as_of}Z")
    return value


def _metadata(result: Disposals, days: list, retention: int, dry_run: bool) -> dict:
    return {
        **run_metadata(days, dry_run=dry_run, disposed=len(result.disposed),
                       already_missing=len(result.already_missing), would_dispose=len(result.would_dispose),
                       held=len(result.held), stored_bytes_freed=dg.MetadataValue.int(result.stored_bytes_freed)),
        "retention_days": retention,
        "horizon": result.horizon.isoformat(),
        "held_recordings": dg.MetadataValue.json(sorted(result.held)[:50]),
        "would_dispose_recordings": dg.MetadataValue.json(sorted(result.would_dispose)[:50]),
    }
