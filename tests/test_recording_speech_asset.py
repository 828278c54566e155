"""`recording_speech` end to end: real downloads from the emulator, a real Dagster materialisation,
the lake rows checked against the emulator's scripts, and the warehouse's report_conversation."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from audian_pipeline.audio.speech import DEFAULT_DETECTOR, measure
from audian_pipeline.defs.calls import calls
from audian_pipeline.defs.recording_audio import recording_audio
from audian_pipeline.defs.recording_events import recording_events
from audian_pipeline.defs.recording_speech import DECODES, recording_speech
from audian_pipeline.defs.recordings import recordings
from audian_pipeline.defs.reports import report_assets
from audian_pipeline.defs.resources import AudianResource, LakeResource, WarehouseResource
from audian_pipeline.defs.warehouse import warehouse
from audian_pipeline.lake.parquet import read_rows, to_table, write_partition
from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.lake.tables import RECORDING_AUDIO, RECORDING_SPEECH
from audian_pipeline.settings import DEMO_API_KEY

from test_audio_archive import account_with_webhooks

CONVERSATION = next(a for a in report_assets if a.key.path[-1] == "report_conversation")


def _materialise(emu, data_dir: Path, first, last, assets) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        resources={"audian": AudianResource(api_url=emu.api_url, api_key=DEMO_API_KEY),
                   "lake": LakeResource(data_dir=str(data_dir)),
                   "warehouse_settings": WarehouseResource(storage_quota_bytes=1 << 30,
                                                           as_of=emu.account.now().isoformat())},
        tags={"dagster/asset_partition_range_start": first.isoformat(),
              "dagster/asset_partition_range_end": last.isoformat()},
    )


def _speech_rows(data_dir: Path, days) -> dict[str, dict]:
    return {r["recording_id"]: r for day in days for r in read_rows(data_dir, RECORDING_SPEECH, day)}


def _archived(data_dir: Path, row: dict) -> Path:
    location = Path(row["path"])
    return location if location.is_absolute() else data_dir / location


def test_each_verified_recording_is_analysed_once_and_matches_its_script(fresh_emulator, data_dir):
    with account_with_webhooks(fresh_emulator, data_dir, seed=161, days=3, per_day=10, max_duration=80) as emu:
        last = emu.account.now().date() - timedelta(days=1)
        first, days = last - timedelta(days=1), [last - timedelta(days=1), last]
        everything = [recordings, calls, recording_audio, recording_events, recording_speech, warehouse, CONVERSATION]
        assert _materialise(emu, data_dir, first, last, everything).success

        verified = [r for day in days for r in read_rows(data_dir, RECORDING_AUDIO, day) if r["outcome"] == "verified"]
        rows = _speech_rows(data_dir, days)
        assert verified and set(rows) == {r["recording_id"] for r in verified}
        layouts = set()
        for rid, row in rows.items():
            spec = emu.account.recordings[rid].spec
            layouts.add((spec.channels, spec.content))
            truth_segments: list[list[tuple[float, float]]] = [[] for _ in range(spec.channels)]
            for segment in spec.talk_segments():
                truth_segments[segment.channel].append((segment.start, segment.end))
            truth = measure(truth_segments, spec.duration, DEFAULT_DETECTOR.min_silence_ms / 1000)
            assert row["outcome"] == "analysed" and row["channels"] == spec.channels
            assert abs(row["speech_seconds"] - truth.speech_seconds) <= max(1.0, 0.1 * truth.speech_seconds), rid
            assert abs(row["silence_seconds"] - truth.silence_seconds) <= max(1.0, 0.1 * truth.silence_seconds), rid
            if spec.channels == 2:
                assert abs(row["caller_speech_seconds"] - truth.channel_speech_seconds[0]) <= max(
                    1.0, 0.1 * truth.channel_speech_seconds[0]), rid
                assert abs(row["turns"] - truth.turns) <= max(1, 0.2 * truth.turns), rid
            else:
                assert row["caller_speech_seconds"] is row["turns"] is row["talk_ratio"] is None
            assert row["detector"].startswith("webrtcvad ") and "mode=2" in row["detector_settings"]
        assert {(2, "conversation"), (1, "conversation")} <= layouts

        with duckdb.connect(str(warehouse_path(data_dir)), read_only=True) as con:
            view = con.execute("SELECT sum(recordings_analysed), sum(not_analysed), count(DISTINCT day) "
                               "FROM report_conversation").fetchone()
            directions = {d for (d,) in con.execute("SELECT DISTINCT direction FROM report_conversation").fetchall()}
        assert view == (len(rows), 0, 2)
        assert directions <= {"inbound", "outbound"}

        # A re-run analyses nothing again; a file that changed under the same row is analysed again,
        # and an undecodable one is recorded with its reason (the rest of the day is kept).
        victim = verified[0]
        _archived(data_dir, victim).write_bytes(random.Random(3).randbytes(20_000))
        day = victim["created_at"].date()
        kept = [r for r in read_rows(data_dir, RECORDING_SPEECH, day) if r["recording_id"] != victim["recording_id"]]
        write_partition(data_dir, RECORDING_SPEECH, day, to_table(RECORDING_SPEECH, kept))
        again = _materialise(emu, data_dir, first, last, [recording_speech])
        assert again.success
        metadata = again.get_asset_materialization_events()[0].materialization.metadata
        assert metadata["run_analysed"].value == 1
        after = _speech_rows(data_dir, days)
        assert after[victim["recording_id"]]["outcome"] == "undecodable"
        assert after[victim["recording_id"]]["reason"].startswith("not decodable audio")
        assert {rid: r for rid, r in after.items() if rid != victim["recording_id"]} == {
            rid: r for rid, r in rows.items() if rid != victim["recording_id"]}
        (check,) = [c for c in again.get_asset_check_evaluations() if c.check_name == DECODES]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN


def test_report_conversation_figures_from_a_hand_made_lake(data_dir):
    from collections import defaultdict

    import numpy as np

    from test_warehouse import NO_CALL, load, speech_rows, write_lake

    write_lake(data_dir)
    load(data_dir)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in speech_rows():
        direction = "unknown" if row["recording_id"] in NO_CALL else "inbound"
        groups[(row["created_at"].date(), direction)].append(row)
    with duckdb.connect(str(warehouse_path(data_dir)), read_only=True) as con:
        cursor = con.execute("SELECT * FROM report_conversation")
        names = [d[0] for d in cursor.description]
        got = {(r["day"], r["direction"]): r for r in (dict(zip(names, v, strict=True)) for v in cursor.fetchall())}
    assert set(got) == set(groups)
    for key, rows in groups.items():
        view, analysed = got[key], [r for r in rows if r["outcome"] == "analysed"]
        ratios = [r["talk_ratio"] for r in analysed if r.get("talk_ratio") is not None]
        assert (view["recordings_analysed"], view["not_analysed"]) == (len(analysed), len(rows) - len(analysed))
        assert view["stereo_recordings"] == len(ratios)
        if ratios:
            assert float(view["p50_talk_ratio"]) == pytest.approx(np.percentile(ratios, 50), abs=0.006)
            assert float(view["p90_talk_ratio"]) == pytest.approx(np.percentile(ratios, 90), abs=0.006)
        if analysed:
            assert float(view["dead_air_pct"]) == pytest.approx(30.0, abs=0.01)
            longest = max(analysed, key=lambda r: r["longest_silence_seconds"])
            assert view["longest_silence_recording_id"] == longest["recording_id"]
