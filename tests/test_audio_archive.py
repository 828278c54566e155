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

from audian_pipeline.assets.audio import recording_audio
from audian_pipeline.assets.recordings import recordings
from audian_pipeline.audio.verify import Expected, verify
from audian_pipeline.client.resource import AudianResource
from audian_pipeline.emulator.faults import FaultConfig
from audian_pipeline.lake.parquet import read_rows
from audian_pipeline.lake.paths import events_db
from audian_pipeline.lake.resource import LakeResource
from audian_pipeline.recordings import day_bounds
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
    return {r["recording_id"]: r for r in read_rows(data_dir, "recording_audio", day)}


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
        audit = duckdb.sql(f"select action, outcome, count(*) from read_json('{data_dir}/audit/recording_access.jsonl') "
                           "group by all").fetchall()
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


@pytest.mark.parametrize("bad_id", ["../../../escape", "rec.evil", "rec_..%2F..%2Fx"])
def test_a_path_like_recording_id_never_writes_outside_the_archive(fresh_emulator, data_dir, tmp_path, bad_id):
    emu = fresh_emulator(seed=46, days=1, per_day=2)
    made = requests.post(f"{emu.api_url}/_emulator/recordings", headers={"X-Auth-Token": DEMO_API_KEY},
                         json={"recording_id": bad_id, "file_format": "mp3", "duration": 5, "outcome": "completed"},
                         timeout=5)
    assert made.status_code == 201
    emu.account.clock.advance(600)
    before = {p for p in tmp_path.rglob("*")}
    result = dg.materialize(
        [recordings, recording_audio],
        resources={"audian": AudianResource(api_url=emu.api_url, api_key=DEMO_API_KEY),
                   "lake": LakeResource(data_dir=str(data_dir))},
        partition_key=emu.account.now().date().isoformat(), raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "not safe as file names" in failure.event_specific_data.error.message
    assert "report the IDs to Audian" in failure.event_specific_data.error.message
    rows = manifest(data_dir, emu.account.now().date())
    assert rows[bad_id]["outcome"] == "unsafe_id"
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(data_dir in p.parents for p in created)
    assert not any("escape" in p.name or "evil" in p.name for p in created)


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
