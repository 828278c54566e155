"""The audio archive: real downloads from the emulator, real checksums from real webhooks."""

from __future__ import annotations

import contextlib
import hashlib
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import requests
import soundfile

from audian_pipeline.audio.verify import Expected, verify
from audian_pipeline.defs.recording_audio import recording_audio
from audian_pipeline.defs.recordings import recordings
from audian_pipeline.defs.resources import AudianResource, LakeResource
from audian_pipeline.emulator.faults import FaultConfig
from audian_pipeline.lake.days import day_bounds
from audian_pipeline.lake.parquet import read_rows
from audian_pipeline.lake.paths import events_db
from audian_pipeline.lake.tables import RECORDING_AUDIO
from audian_pipeline.settings import DEMO_API_KEY, DEMO_WEBHOOK_SECRET
from audian_pipeline.webhooks.receiver import create_app
from audian_pipeline.webhooks.store import EventStore

from servers import serve_app


@contextlib.contextmanager
def account_with_webhooks(fresh_emulator, data_dir: Path, **options):
    """An emulator delivering its webhooks to a real receiver writing the pipeline's events store."""
    with EventStore(events_db(data_dir)) as store, serve_app(create_app(store, DEMO_WEBHOOK_SECRET)) as url:
        emu = fresh_emulator(webhook_url=url + "/webhooks/audian", **options)
        assert emu.delivery.wait_idle(60)
        yield emu


def run(emu, data_dir: Path, day, assets=(recordings, recording_audio)) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(assets),
        resources={"audian": AudianResource(api_url=emu.api_url, api_key=DEMO_API_KEY, download_concurrency=4),
                   "lake": LakeResource(data_dir=str(data_dir))},
        partition_key=day.isoformat(),
    )


def manifest(data_dir: Path, day) -> dict[str, dict]:
    return {r["recording_id"]: r for r in read_rows(data_dir, RECORDING_AUDIO, day)}


def archived_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "audio").rglob("*") if p.is_file())


def test_every_format_verifies_and_a_second_run_downloads_nothing(fresh_emulator, data_dir):
    with account_with_webhooks(fresh_emulator, data_dir, seed=41, days=3, per_day=40) as emu:
        day = emu.account.now().date() - timedelta(days=1)
        first = run(emu, data_dir, day)
        assert first.success
        rows = manifest(data_dir, day)
        truth = emu.account.recordings_of_day(day_bounds(day)[0])
        assert set(rows) == {r.recording_id for r in truth}
        verified = {rid for rid, r in rows.items() if r["outcome"] == "verified"}
        completed = {r.recording_id for r in truth if r.outcome == "completed"}
        assert verified == completed and verified
        assert {rows[rid]["declared_format"] for rid in verified} == {"mp3", "wav", "opus"}
        assert all(rows[r.recording_id]["outcome"] == "not_completed" for r in truth if r.outcome == "failed")
        for rid in verified:
            path = data_dir / rows[rid]["path"]
            rec = emu.account.recordings[rid]
            assert path.name == f"{rid}.{rec.file_format}"
            assert hashlib.sha256(path.read_bytes()).hexdigest() == emu.emulator.audio_cache.sha256(rec.spec)
            info = soundfile.info(str(path))
            assert info.channels == rec.channels and abs(info.duration - rec.duration) <= 1.5
        meta = first.get_asset_materialization_events()[-1].materialization.metadata
        assert meta["files_downloaded"].value == len(verified)

        second = run(emu, data_dir, day, assets=(recording_audio,))
        meta2 = second.get_asset_materialization_events()[-1].materialization.metadata
        assert meta2["files_downloaded"].value == 0 and meta2["api_requests"].value == {}
        assert manifest(data_dir, day) == rows
        audit = duckdb.sql("select action, outcome, count(*) "
                           f"from read_json('{data_dir}/audit/recording_access.jsonl') group by all").fetchall()
        assert ("download", "verified", len(verified)) in audit


def test_corrupted_bytes_never_reach_the_archive(fresh_emulator, data_dir):
    with account_with_webhooks(fresh_emulator, data_dir, seed=42, days=2, per_day=30,
                               faults=FaultConfig(corrupt=0.5)) as emu:
        day = emu.account.now().date() - timedelta(days=1)
        assert run(emu, data_dir, day).success
        rows = manifest(data_dir, day)
        corrupted = {rid for rid in rows if emu.faults.is_corrupted(rid)
                     and emu.account.recordings[rid].outcome == "completed"}
        assert corrupted
        for rid in corrupted:
            assert rows[rid]["outcome"] == "checksum_mismatch" and rows[rid]["path"] is None
        names = {p.stem for p in archived_files(data_dir)}
        assert not names & corrupted
        assert all((data_dir / "quarantine" / day.isoformat()).glob(f"{rid}.*") for rid in corrupted)


def test_cut_connections_resume_and_verify(fresh_emulator, data_dir):
    with account_with_webhooks(fresh_emulator, data_dir, seed=43, days=2, per_day=20,
                               faults=FaultConfig(cut=0.8)) as emu:
        day = emu.account.now().date() - timedelta(days=1)
        assert run(emu, data_dir, day).success
        rows = manifest(data_dir, day).values()
        assert emu.faults.snapshot()["injected"]["cut"] > 0
        assert {r["outcome"] for r in rows} <= {"verified", "not_completed"}


def test_no_checksum_yet_then_verified_without_downloading_again(fresh_emulator, data_dir):
    emu = fresh_emulator(seed=44, days=2, per_day=10)  # no webhooks delivered yet
    day = emu.account.now().date() - timedelta(days=1)
    assert run(emu, data_dir, day).success
    pending = {rid for rid, r in manifest(data_dir, day).items() if r["outcome"] == "no_checksum_yet"}
    assert pending and not archived_files(data_dir)
    with EventStore(events_db(data_dir)) as store, serve_app(create_app(store, DEMO_WEBHOOK_SECRET)) as url:
        from audian_pipeline.emulator.delivery import WebhookDelivery

        delivery = WebhookDelivery(emu.account, url + "/webhooks/audian", DEMO_WEBHOOK_SECRET, emu.faults,
                                   emu.api_url, emu.emulator.audio_cache).start()
        assert delivery.wait_idle(60)
        delivery.stop()
    again = run(emu, data_dir, day, assets=(recording_audio,))
    rows = manifest(data_dir, day)
    assert {rows[rid]["outcome"] for rid in pending} == {"verified"}
    meta = again.get_asset_materialization_events()[-1].materialization.metadata
    assert meta["api_requests"].value == {}  # verified from the kept file, not downloaded again
    assert meta["files_downloaded"].value == 0 and meta["bytes_downloaded"].value == 0


def test_deleted_between_listing_and_download_is_gone(fresh_emulator, data_dir):
    with account_with_webhooks(fresh_emulator, data_dir, seed=45, days=2, per_day=10) as emu:
        day = emu.account.now().date() - timedelta(days=1)
        assert run(emu, data_dir, day, assets=(recordings,)).success
        victim = next(rid for rid, r in emu.account.recordings.items()
                      if r.created_at.date() == day and r.outcome == "completed")
        requests.delete(f"{emu.api_url}/v2/recordings/{victim}", headers={"X-Auth-Token": DEMO_API_KEY}, timeout=5)
        assert run(emu, data_dir, day, assets=(recording_audio,)).success
        assert manifest(data_dir, day)[victim]["outcome"] == "gone"


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.event_specific_data.check_name: e.event_specific_data
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


@pytest.mark.parametrize("bad_id", ["../../../escape", "rec.evil", "rec_..%2F..%2Fx"])
def test_a_path_like_recording_id_never_writes_outside_the_archive(fresh_emulator, data_dir, tmp_path, bad_id):
    emu = fresh_emulator(seed=46, days=1, per_day=2)
    made = requests.post(f"{emu.api_url}/_emulator/recordings", headers={"X-Auth-Token": DEMO_API_KEY},
                         json={"recording_id": bad_id, "file_format": "mp3", "duration": 5, "outcome": "completed"},
                         timeout=5)
    assert made.status_code == 201
    emu.account.clock.advance(600)
    before = {p for p in tmp_path.rglob("*")}
    for _ in range(2):  # unsafe_id is final: a second run of the day must not fail either
        result = run(emu, data_dir, emu.account.now().date())
        assert result.success
        check = check_results(result)["no_unsafe_recording_ids"]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
        assert "not safe as file names" in check.description and "Report the IDs to Audian" in check.description
    row = manifest(data_dir, emu.account.now().date())[bad_id]
    assert row["outcome"] == "unsafe_id" and "refusing to use the ID" in row["reason"]
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(data_dir in p.parents for p in created)
    assert not any("escape" in p.name or "evil" in p.name for p in created)


def test_unsafe_ids_fail_a_check_and_the_warehouse_is_still_built(fresh_emulator, tmp_path):
    from audian_pipeline.defs.resources import WarehouseResource
    from audian_pipeline.lake.paths import warehouse_path
    from audian_pipeline.runner import run_range

    emu = fresh_emulator(seed=47, days=2, per_day=6)
    for bad_id in ("../x", "rec evil"):
        requests.post(f"{emu.api_url}/_emulator/recordings", headers={"X-Auth-Token": DEMO_API_KEY},
                      json={"recording_id": bad_id, "file_format": "wav", "duration": 3, "outcome": "completed"},
                      timeout=5).raise_for_status()
    emu.account.clock.advance(600)
    data_dir, today = tmp_path / "data", emu.account.now().date()
    instance = dg.DagsterInstance.ephemeral()
    resources = {"audian": AudianResource(api_url=emu.api_url, api_key=DEMO_API_KEY),
                 "lake": LakeResource(data_dir=str(data_dir)),
                 "warehouse_settings": WarehouseResource(as_of=emu.account.now().isoformat())}
    assert run_range(today - timedelta(days=1), today, resources=resources, dagster_instance=instance) == 0
    with duckdb.connect(str(warehouse_path(data_dir)), read_only=True) as con:
        unsafe = con.sql("select count(*) from recording_audio where outcome = 'unsafe_id'").fetchall()[0][0]
        assert unsafe == 2 and con.sql("select count(*) from report_durations").fetchall()[0][0] > 0
    evaluations = [entry.dagster_event.event_specific_data for run_ in instance.get_runs()
                   for entry in instance.all_logs(run_.run_id)
                   if entry.dagster_event and entry.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"]
    (unsafe_check,) = [e for e in evaluations if e.check_name == "no_unsafe_recording_ids"]
    assert not unsafe_check.passed and "'../x'" in unsafe_check.description


def test_a_day_where_every_download_failed_fails_a_check(fresh_emulator, data_dir):
    with account_with_webhooks(fresh_emulator, data_dir, seed=48, days=2, per_day=6) as emu:
        requests.post(f"{emu.api_url}/_emulator/faults", json={"forbidden": 1.0, "max_consecutive": 99},
                      headers={"X-Auth-Token": DEMO_API_KEY}, timeout=5).raise_for_status()
        day = emu.account.now().date() - timedelta(days=1)
        result = run(emu, data_dir, day)
        assert result.success  # failed downloads are retried by the next run...
        check = check_results(result)["downloads_succeed"]
        assert not check.passed and day.isoformat() in check.description  # ...and a person sees them now
        assert {r["outcome"] for r in manifest(data_dir, day).values()} <= {"download_failed", "not_completed"}
        requests.post(f"{emu.api_url}/_emulator/faults", json={}, headers={"X-Auth-Token": DEMO_API_KEY},
                      timeout=5).raise_for_status()
        again = run(emu, data_dir, day, assets=(recording_audio,))
        assert check_results(again)["downloads_succeed"].passed


@pytest.mark.parametrize("outcome, change", [
    ("size_mismatch", {"file_size": 1}),
    ("checksum_mismatch", {"sha256": "0" * 64}),
    ("format_mismatch", {"file_format": "wav"}),
    ("duration_mismatch", {"duration": 999}),
    ("no_checksum_yet", {"sha256": None}),
])
def test_verify_names_what_is_wrong(emulator, tmp_path, outcome, change):
    rec = next(r for r in emulator.account.visible() if r.file_format == "mp3"
               and r.status_at(emulator.account.now()) == "completed")
    path, digest = emulator.emulator.audio_cache.ensure(rec.spec)
    expected = dict(file_size=rec.file_size, sha256=digest, file_format="mp3", duration=rec.duration,
                    sample_rate=rec.sample_rate, channels=rec.channels)
    assert verify(path, rec.file_size, digest, Expected(**expected)).outcome == "verified"
    expected.update(change)
    assert verify(path, rec.file_size, digest, Expected(**expected)).outcome == outcome


def test_an_html_error_page_is_not_audio(tmp_path):
    page = tmp_path / "x.mp3"
    page.write_bytes(b"<html><body>Access denied</body></html>")
    digest = hashlib.sha256(page.read_bytes()).hexdigest()
    result = verify(page, page.stat().st_size, digest, Expected(page.stat().st_size, digest, "mp3", 1, 16000, 1))
    assert result.outcome == "not_audio" and result.reason


@pytest.mark.slow
def test_a_killed_download_is_cleaned_up_by_a_run_of_another_day(fresh_emulator, tmp_path):
    """What a SIGKILLed download leaves (a hidden temporary) is swept by the next run once stale,
    even when that run archives a different day and the killed day is never archived again."""
    import os
    import signal
    import subprocess
    import time

    from test_faults_end_to_end import RUN, _cli_env

    emu = fresh_emulator(seed=49, days=3, per_day=8, max_duration=600)
    data_dir, today = tmp_path / "data", emu.account.now().date()
    killed_day, other_day = today - timedelta(days=2), today - timedelta(days=1)
    leftovers: list[Path] = []
    for _ in range(3):  # bounded: a download is under way for most of the run, so one try nearly always hits
        proc = subprocess.Popen([*RUN, "--start", killed_day.isoformat(), "--end", killed_day.isoformat()],
                                env=_cli_env(emu, data_dir), cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if any((data_dir / "audio").rglob(".tmp-*")):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.kill()
        proc.wait()
        leftovers = list((data_dir / "audio").rglob(".tmp-*"))
        if leftovers:
            break
    assert leftovers, "no run was caught mid-download"
    an_hour_ago = time.time() - 3700
    for path in leftovers:
        os.utime(path, (an_hour_ago, an_hour_ago))
    assert run(emu, data_dir, other_day).success
    assert not list((data_dir / "audio").rglob(".tmp-*"))


def test_a_recording_waiting_for_its_checksum_is_not_downloaded_again(fresh_emulator, data_dir):
    emu = fresh_emulator(seed=50, days=2, per_day=8)  # no webhooks: nothing brings a checksum
    day = emu.account.now().date() - timedelta(days=1)
    assert run(emu, data_dir, day).success
    waiting = manifest(data_dir, day)
    assert {r["outcome"] for r in waiting.values()} >= {"no_checksum_yet"}
    again = run(emu, data_dir, day, assets=(recording_audio,))
    meta = again.get_asset_materialization_events()[-1].materialization.metadata
    assert meta["files_downloaded"].value == 0 and meta["api_requests"].value == {}
    assert manifest(data_dir, day) == waiting
