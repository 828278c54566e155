"""`recording_speech`: who talked how much in each archived recording (voice activity per channel)."""

from collections import Counter

import dagster as dg

from audian_pipeline.audio.speech import DEFAULT_DETECTOR
from audian_pipeline.defs.checks import lake_freshness, unique_key_check, unique_key_spec
from audian_pipeline.defs.day_metadata import add_day_metadata, run_metadata
from audian_pipeline.defs.partitions import backfill_policy, daily_partitions, partition_days
from audian_pipeline.defs.resources import LakeResource
from audian_pipeline.lake.tables import RECORDING_AUDIO
from audian_pipeline.sync.recording_speech import TABLE, AnalysisPool, SpeechDay, analyse_day

UNIQUE_RECORDING_IDS = "unique_recording_id"
DECODES = "archived_audio_decodes"


@dg.asset(
    name=TABLE.name,
    partitions_def=daily_partitions,
    backfill_policy=backfill_policy,
    deps=[RECORDING_AUDIO.name],
    group_name="lake",
    freshness_policy=lake_freshness,
    kinds={"parquet", "python"},
    description=(
        "Each verified recording of the day decoded once from the archive and judged frame by frame by "
        f"WebRTC's voice activity detector ({DEFAULT_DETECTOR.settings}): speech seconds per channel (stereo: "
        "caller left, callee right), talk ratio, dead air and its longest stretch, overlap, turns and the longest "
        "monologue. Rows are kept while the file and the detector's settings stay the same; an undecodable file "
        "is recorded with its reason."
    ),
    check_specs=[
        unique_key_spec(TABLE, UNIQUE_RECORDING_IDS),
        dg.AssetCheckSpec(
            DECODES, asset=TABLE.name,
            description="Warns when a verified recording could not be decoded or read for analysis: its row says why.",
        ),
    ],
)
def recording_speech(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    days: list[SpeechDay] = []
    store, cipher = lake.lake_store(), lake.archive_cipher()  # once per run: the keyset is read from disk
    with AnalysisPool(lake.analysis_processes()) as pool:
        for day in partition_days(context):
            result = analyse_day(lake.path, day, lake=store, cipher=cipher, pool=pool)
            context.log.info("recording_speech %s: %s; %d analysed by %d process(es), %.0f s of audio at %.0fx "
                             "real time per CPU", day, result.outcomes, result.analysed, result.processes,
                             result.audio_seconds, result.times_real_time)
            days.append(result)
            add_day_metadata(context, day, _day_metadata(result))
    return dg.MaterializeResult(
        metadata=_run_metadata(days, lake),
        check_results=[
            unique_key_check(lake.lake_store(), TABLE, [d.day for d in days], UNIQUE_RECORDING_IDS),
            _decodes_check(days),
        ],
    )


def _day_metadata(day: SpeechDay) -> dict:
    """That day's own figures, for its partition's materialisation (see `day_metadata`)."""
    return {
        "rows": dg.MetadataValue.int(day.rows),
        "analysed": day.analysed,
        "speech_processes": dg.MetadataValue.int(day.processes),
        "kept": day.rows - day.analysed,
        "audio_seconds_analysed": dg.MetadataValue.float(round(day.audio_seconds, 1)),
        "times_real_time": dg.MetadataValue.float(round(day.times_real_time, 1)),
        "outcomes": dg.MetadataValue.json(dict(sorted(day.outcomes.items()))),
        "path": dg.MetadataValue.path(day.path),
    }


def _run_metadata(days: list[SpeechDay], lake: LakeResource) -> dict:
    audio = sum(d.audio_seconds for d in days)
    cpu = sum(d.seconds_analysing for d in days)
    outcomes: Counter[str] = Counter()
    for d in days:
        outcomes.update(d.outcomes)
    return run_metadata(
        [d.day for d in days], rows=sum(d.rows for d in days), analysed=sum(d.analysed for d in days),
        outcomes=dg.MetadataValue.json(dict(sorted(outcomes.items()))),
        speech_processes=dg.MetadataValue.int(max((d.processes for d in days), default=1)),
        audio_seconds_analysed=dg.MetadataValue.float(round(audio, 1)),
        times_real_time=dg.MetadataValue.float(round(audio / cpu, 1) if cpu else 0.0),
        detector=f"{DEFAULT_DETECTOR.name} ({DEFAULT_DETECTOR.settings})",
        path=dg.MetadataValue.path(lake.lake_store().url_of(TABLE.name)),
    )


def _decodes_check(days: list[SpeechDay]) -> dg.AssetCheckResult:
    """A file that verified as audio yet does not decode for analysis is rare and worth a look,
    but it is recorded with its reason and the rest of the day is analysed: a warning, not a block."""
    failed = {rid: reason for d in days for rid, reason in d.undecodable.items()}
    unreadable = sum(d.outcomes.get("unreadable", 0) for d in days)
    return dg.AssetCheckResult(
        check_name=DECODES, passed=not failed and not unreadable, severity=dg.AssetCheckSeverity.WARN,
        metadata={"undecodable": len(failed), "unreadable": unreadable,
                  "reasons": dg.MetadataValue.json(dict(list(failed.items())[:50]))},
        description=(f"{len(failed)} recording(s) undecodable, {unreadable} unreadable; see the reason column"
                     if failed or unreadable else None),
    )
