"""AUDIAN_DELETE_AT_AUDIAN: recordings deleted at Audian only after their archived copy was read
back and re-verified in the same run; against the emulator, with real Tink and real webhooks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import requests

from audian_pipeline.cli import main
from audian_pipeline.defs.audian_deletions import REVERIFIES, audian_deletions
from audian_pipeline.defs.recording_audio import recording_audio
from audian_pipeline.defs.recordings import recordings
from audian_pipeline.defs.resources import AudianResource, LakeResource, WarehouseResource
from audian_pipeline.defs.warehouse import warehouse
from audian_pipeline.emulator.faults import FaultConfig
from audian_pipeline.lake.parquet import read_rows
from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.lake.tables import AUDIAN_DELETIONS, RECORDING_AUDIO
from audian_pipeline.settings import DEMO_API_KEY

from conftest import CLOCK
from test_audio_archive import account_with_webhooks


def resources(emu, data_dir: Path, keyset: Path, delete: bool = True) -> dict:
    return {"audian": AudianResource(api_url=emu.api_url, api_key=DEMO_API_KEY),
            "lake": LakeResource(data_dir=str(data_dir), archive_keyset=str(keyset), delete_at_audian=delete),
            "warehouse_settings": WarehouseResource(as_of=(CLOCK + timedelta(hours=1)).isoformat())}


def materialize(assets: list, emu, data_dir: Path, keyset: Path, day, dry_run: bool = False,
                delete: bool = True) -> dg.ExecuteInProcessResult:
    config = {"ops": {AUDIAN_DELETIONS.name: {"config": {"dry_run": dry_run}}}} if audian_deletions in assets else None
    return dg.materialize(assets, resources=resources(emu, data_dir, keyset, delete), partition_key=day.isoformat(),
                          run_config=config, raise_on_error=True)


def deleted_at_audian(emu) -> set[str]:
    return {rid for rid, rec in emu.account.recordings.items() if rec.deleted_at is not None}


def audit(data_dir: Path, action: str) -> list[tuple]:
    return duckdb.sql(f"select recording_id, outcome from read_json('{data_dir}/audit/recording_access.jsonl') "
                      f"where action = '{action}'").fetchall()


def new_keyset(tmp_path: Path) -> Path:
    keyset = tmp_path / "archive.json"
    assert main(["keyset", "create", str(keyset)]) == 0
    return keyset


def test_only_reverified_recordings_are_deleted_and_the_quota_report_shows_the_bytes(fresh_emulator, data_dir,
                                                                                      tmp_path):
    keyset = new_keyset(tmp_path)
    with account_with_webhooks(fresh_emulator, data_dir, seed=61, days=2, per_day=16,
                               faults=FaultConfig(corrupt=0.3)) as emu:
        day = emu.account.now().date() - timedelta(days=1)
        assert materialize([recordings, recording_audio], emu, data_dir, keyset, day).success
        manifest = {r["recording_id"]: r for r in read_rows(data_dir, RECORDING_AUDIO, day)}
        verified = sorted(rid for rid, r in manifest.items() if r["outcome"] == "verified")
        corrupted = {rid for rid, r in manifest.items() if r["outcome"] == "checksum_mismatch"}
        assert len(verified) >= 3 and corrupted
        rotten = verified[0]  # its archived copy goes bad at rest after it was verified
        path = Path(manifest[rotten]["path"])
        path.write_bytes(path.read_bytes()[:-50])

        dry = materialize([audian_deletions], emu, data_dir, keyset, day, dry_run=True)
        assert dry.get_asset_materialization_events()[-1].materialization.metadata["run_would_delete"].value == \
            len(verified) - 1
        assert not deleted_at_audian(emu) and not read_rows(data_dir, AUDIAN_DELETIONS, day)

        result = materialize([audian_deletions, warehouse], emu, data_dir, keyset, day)
        intact = set(verified) - {rotten}
        assert deleted_at_audian(emu) == intact
        check = next(e for e in result.get_asset_check_evaluations() if e.check_name == REVERIFIES)
        assert not check.passed and check.metadata["failed"].value == 1
        rows = {r["recording_id"]: r for r in read_rows(data_dir, AUDIAN_DELETIONS, day)}
        assert set(rows) == intact and {r["outcome"] for r in rows.values()} == {"deleted"}
        assert all(rows[rid]["sha256"] == manifest[rid]["expected_sha256"] for rid in intact)
        assert sorted(a[0] for a in audit(data_dir, "delete_at_audian")) == sorted(intact)
        assert (rotten, "mismatch") in audit(data_dir, "readback")
        freed = sum(manifest[rid]["bytes"] for rid in intact)
        with duckdb.connect(str(warehouse_path(data_dir)), read_only=True) as con:
            shown = con.sql("select sum(bytes_freed_at_audian) from report_storage_quota").fetchall()[0][0]
            table = con.sql("select sum(bytes) from audian_deletions").fetchall()[0][0]
        assert shown == table == freed

        again = materialize([audian_deletions], emu, data_dir, keyset, day)
        assert again.get_asset_materialization_events()[-1].materialization.metadata["run_deleted"].value == 0
        assert deleted_at_audian(emu) == intact  # the rotten copy's recording is still at Audian


def test_nothing_is_deleted_without_a_checksum_or_when_the_setting_is_off(fresh_emulator, data_dir, tmp_path):
    keyset = new_keyset(tmp_path)
    emu = fresh_emulator(seed=62, days=2, per_day=8)  # no webhooks: every file is no_checksum_yet
    day = emu.account.now().date() - timedelta(days=1)
    assert materialize([recordings, recording_audio, audian_deletions], emu, data_dir, keyset, day).success
    outcomes = {r["outcome"] for r in read_rows(data_dir, RECORDING_AUDIO, day)}
    assert "no_checksum_yet" in outcomes and "verified" not in outcomes
    assert not deleted_at_audian(emu) and not audit(data_dir, "readback")
    with account_with_webhooks(fresh_emulator, data_dir / "other", seed=63, days=2, per_day=6) as emu2:
        assert materialize([recordings, recording_audio, audian_deletions], emu2, data_dir / "other", keyset, day,
                           delete=False).success
        assert not deleted_at_audian(emu2)


_CHILD = """
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from audian_pipeline.audio.audit import AuditLog
from audian_pipeline.audio.crypto import load_cipher
from audian_pipeline.client.client import AudianClient
from audian_pipeline.storage import lake_at
from audian_pipeline.sync.audian_deletions import delete_day
api, data_dir, day, keyset, key = sys.argv[1:6]
data_dir = Path(data_dir)
with AudianClient(api, key) as client:
    delete_day(client, lake_at(data_dir), date.fromisoformat(day), load_cipher(Path(keyset)), AuditLog(data_dir),
               datetime.now(timezone.utc))
"""


def test_a_sigkill_between_read_back_and_delete_deletes_nothing_unverified_and_the_next_run_completes(
        fresh_emulator, data_dir, tmp_path):
    keyset = new_keyset(tmp_path)
    with account_with_webhooks(fresh_emulator, data_dir, seed=64, days=2, per_day=10,
                               faults=FaultConfig(corrupt=0.3)) as emu:
        day = emu.account.now().date() - timedelta(days=1)
        assert materialize([recordings, recording_audio], emu, data_dir, keyset, day).success
        manifest = {r["recording_id"]: r for r in read_rows(data_dir, RECORDING_AUDIO, day)}
        verified = {rid for rid, r in manifest.items() if r["outcome"] == "verified"}
        assert len(verified) >= 2 and len(verified) < len(manifest)
        steer = {"X-Auth-Token": DEMO_API_KEY}
        requests.post(emu.api_url + "/_emulator/faults", json={"latency_ms": 3000}, headers=steer, timeout=10)
        log = data_dir / "audit" / "recording_access.jsonl"
        child = subprocess.Popen([sys.executable, "-c", _CHILD, emu.api_url, str(data_dir), day.isoformat(),
                                  str(keyset), DEMO_API_KEY], env={**os.environ})
        try:
            deadline = time.monotonic() + 120
            while not any(json.loads(line)["action"] == "readback" for line in log.read_text().splitlines()):
                assert child.poll() is None and time.monotonic() < deadline, "the child never read a copy back"
                time.sleep(0.02)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait(30)
        requests.post(emu.api_url + "/_emulator/faults", json={}, headers=steer, timeout=10)
        deadline = time.monotonic() + 30
        while emu.emulator.in_flight and time.monotonic() < deadline:  # a DELETE the child sent may still land
            time.sleep(0.05)
        landed = deleted_at_audian(emu)
        assert landed <= verified and len(landed) <= 1
        assert not read_rows(data_dir, AUDIAN_DELETIONS, day)

        assert materialize([audian_deletions], emu, data_dir, keyset, day).success
        assert deleted_at_audian(emu) == verified
        rows = read_rows(data_dir, AUDIAN_DELETIONS, day)
        assert sorted(r["recording_id"] for r in rows) == sorted(verified)
        assert {r["outcome"] for r in rows} <= {"deleted", "already_deleted"}
        assert [r["outcome"] for r in rows].count("already_deleted") == len(landed)  # the in-flight DELETE, if any
        assert {a[0] for a in audit(data_dir, "delete_at_audian")} == verified
