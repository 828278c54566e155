"""AUDIAN_ARCHIVE_RETENTION_DAYS, legal holds and the archive_disposals asset: real emulator,
real webhooks, real Tink, real Dagster materialisations, on a local archive and on SeaweedFS."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from audian_pipeline.cli import main
from audian_pipeline.defs.archive_disposals import archive_disposals
from audian_pipeline.defs.recording_audio import recording_audio
from audian_pipeline.defs.recordings import recordings
from audian_pipeline.defs.resources import AudianResource, LakeResource, WarehouseResource
from audian_pipeline.defs.warehouse import warehouse
from audian_pipeline.lake.parquet import read_rows
from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.lake.tables import ARCHIVE_DISPOSALS, RECORDING_AUDIO
from audian_pipeline.settings import DEMO_API_KEY, SettingError
from audian_pipeline.storage import Store
from audian_pipeline.warehouse.reports import read_report

from s3server import s3_locations
from test_audio_archive import account_with_webhooks

RETENTION_DAYS = 2


def lake_resource(data_dir: Path, keyset: Path, locations: dict,
                  retention: int | None = RETENTION_DAYS) -> LakeResource:
    return LakeResource(data_dir=str(data_dir), archive_keyset=str(keyset), archive_retention_days=retention,
                        **locations)


def archive(emu, lake: LakeResource, day) -> None:
    audian = AudianResource(api_url=emu.api_url, api_key=DEMO_API_KEY)
    assert dg.materialize([recordings, recording_audio], resources={"audian": audian, "lake": lake},
                          partition_key=day.isoformat()).success


def dispose(emu, lake: LakeResource, dry_run: bool = False) -> dict:
    """archive_disposals for the emulator's today, as of its clock; the run's metadata."""
    config = {"dry_run": dry_run, "as_of": emu.account.now().isoformat()}
    result = dg.materialize([archive_disposals], resources={"lake": lake},
                            partition_key=emu.account.now().date().isoformat(),
                            run_config={"ops": {ARCHIVE_DISPOSALS.name: {"config": config}}})
    assert result.success
    return {k: v.value for k, v in result.get_asset_materialization_events()[-1].materialization.metadata.items()}


def manifest(lake: Store, days) -> dict[str, dict]:
    return {r["recording_id"]: r for day in days for r in read_rows(lake, RECORDING_AUDIO, day)}


def exists(location: str) -> bool:
    return Store(location, "AUDIAN_ARCHIVE_URL").exists("")


def audit_rows(data_dir: Path, action: str) -> list[tuple]:
    return duckdb.sql(f"select recording_id, outcome from read_json('{data_dir}/audit/recording_access.jsonl') "
                      f"where action = '{action}'").fetchall()


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_retention_disposes_what_is_due_spares_holds_and_a_dry_run_touches_nothing(
        storage, fresh_emulator, data_dir, tmp_path, request, monkeypatch, capsys):
    locations: dict = {}
    if storage == "s3":
        request.getfixturevalue("s3_env")
        locations = s3_locations()
        monkeypatch.setenv("AUDIAN_LAKE_URL", locations["lake_url"])
    keyset = tmp_path / "archive.json"
    assert main(["keyset", "create", str(keyset)]) == 0
    monkeypatch.setenv("AUDIAN_DATA_DIR", str(data_dir))
    monkeypatch.setenv("AUDIAN_ARCHIVE_KEYSET", str(keyset))
    lake = lake_resource(data_dir, keyset, locations)
    store = lake.lake_store()
    with account_with_webhooks(fresh_emulator, data_dir, seed=71, days=3, per_day=6) as emu:
        today = emu.account.now().date()
        days = [today - timedelta(days=2), today - timedelta(days=1)]
        for day in days:
            archive(emu, lake, day)
        rows = {rid: r for rid, r in manifest(store, days).items() if r["outcome"] == "verified"}
        due = sorted(rid for rid, r in rows.items()
                     if r["created_at"] <= emu.account.now() - timedelta(days=RETENTION_DAYS))
        assert 2 <= len(due) < len(rows)
        held = due[0]
        assert main(["hold", "add", held, "--reason", "case 7: dispute"]) == 0
        assert "is on hold" in capsys.readouterr().out

        dry = dispose(emu, lake, dry_run=True)
        assert (dry["run_would_dispose"], dry["run_held"], dry["run_disposed"]) == (len(due) - 1, 1, 0)
        assert all(exists(r["path"]) for r in rows.values())
        assert not read_rows(store, ARCHIVE_DISPOSALS, today)
        assert all(r["disposed_at"] is None for r in manifest(store, days).values())

        done = dispose(emu, lake)
        assert (done["run_disposed"], done["run_held"]) == (len(due) - 1, 1)
        gone = set(due) - {held}
        records = {r["recording_id"]: r for r in read_rows(store, ARCHIVE_DISPOSALS, today)}
        assert set(records) == gone
        for rid, record in records.items():
            assert (record["outcome"], record["sha256"], record["path"]) == \
                ("disposed", rows[rid]["sha256"], rows[rid]["path"])
            assert record["policy"] == f"AUDIAN_ARCHIVE_RETENTION_DAYS={RETENTION_DAYS}" and "not on hold" in \
                record["reason"]
            assert record["due_at"] == rows[rid]["created_at"] + timedelta(days=RETENTION_DAYS)
        assert {rid for rid, r in rows.items() if not exists(r["path"])} == gone
        after = manifest(store, days)
        assert len(after) == len(manifest(store, days)) and set(rows) <= set(after)
        assert {rid for rid, r in after.items() if r["disposed_at"] is not None} == gone

        victim = sorted(gone)[0]
        assert main(["restore", victim, "--out", str(tmp_path / "gone.wav")]) == 1
        assert "disposed of under the retention policy" in capsys.readouterr().err
        assert not (tmp_path / "gone.wav").exists()
        assert main(["restore", held, "--out", str(tmp_path / "held.audio")]) == 0
        assert sorted(r[0] for r in audit_rows(data_dir, "dispose")) == sorted(gone)
        assert audit_rows(data_dir, "hold_add") == [(held, "held")]

        assert dispose(emu, lake)["run_disposed"] == 0  # a second run finds nothing more due
        emu.account.clock.advance(86400)
        assert main(["hold", "remove", held]) == 0
        assert audit_rows(data_dir, "hold_remove") == [(held, "lifted")]
        later = sorted(rid for rid, r in rows.items()
                       if r["created_at"] <= emu.account.now() - timedelta(days=RETENTION_DAYS))
        again = dispose(emu, lake)
        assert again["run_disposed"] == len(later) - len(gone) and held in later
        assert not exists(rows[held]["path"])

        load = dg.materialize(
            [warehouse], resources={"lake": lake, "warehouse_settings": WarehouseResource(
                as_of=emu.account.now().isoformat())},
            tags={"dagster/asset_partition_range_start": days[0].isoformat(),
                  "dagster/asset_partition_range_end": emu.account.now().date().isoformat()})
        assert load.success
    report = read_report(warehouse_path(data_dir), "disposals").records()
    by_state: dict[str, set] = {}
    for row in report:
        by_state.setdefault(row["state"], set()).add(row["recording_id"])
    assert by_state.pop("disposed") == set(later)
    assert by_state == {"upcoming": set(rows) - set(later)}
    assert report[0]["day"] <= report[-1]["day"]
    assert "disposed of" in read_report(warehouse_path(data_dir), "disposals").summary().headline


def test_retention_unset_keeps_everything_and_a_bad_value_fails_at_launch_naming_it(fresh_emulator, data_dir,
                                                                                     tmp_path, monkeypatch):
    keyset = tmp_path / "archive.json"
    assert main(["keyset", "create", str(keyset)]) == 0
    lake = lake_resource(data_dir, keyset, {}, retention=None)
    emu = fresh_emulator(seed=72, days=4, per_day=4)
    day = emu.account.now().date() - timedelta(days=3)
    archive(emu, lake, day)
    before = manifest(lake.lake_store(), [day])
    assert dispose(emu, lake)["enabled"] is False
    assert manifest(lake.lake_store(), [day]) == before
    for bad in ("ninety", "0", "-3"):
        monkeypatch.setenv("AUDIAN_ARCHIVE_RETENTION_DAYS", bad)
        with pytest.raises(SettingError, match="AUDIAN_ARCHIVE_RETENTION_DAYS") as caught:
            LakeResource(data_dir=str(data_dir)).setup_for_execution(dg.build_init_resource_context())
        assert "\n" not in str(caught.value) and "unset it" in str(caught.value)


def test_a_hold_needs_a_reason_and_a_safe_id(data_dir, monkeypatch, capsys):
    monkeypatch.setenv("AUDIAN_DATA_DIR", str(data_dir))
    assert main(["hold", "add", "rec_1", "--reason", "  "]) == 2
    assert "needs a reason" in capsys.readouterr().err
    assert main(["hold", "add", "../etc", "--reason", "x"]) == 2
    assert "refusing" in capsys.readouterr().err
    assert main(["hold", "remove", "rec_1"]) == 0
    assert "was not on hold" in capsys.readouterr().out


def test_a_disposal_killed_after_deleting_the_object_is_completed_by_the_next_run(fresh_emulator, data_dir, tmp_path):
    keyset = tmp_path / "archive.json"
    assert main(["keyset", "create", str(keyset)]) == 0
    lake = lake_resource(data_dir, keyset, {})
    with account_with_webhooks(fresh_emulator, data_dir, seed=73, days=4, per_day=4) as emu:
        day = emu.account.now().date() - timedelta(days=3)
        archive(emu, lake, day)
        rows = {rid: r for rid, r in manifest(lake.lake_store(), [day]).items() if r["outcome"] == "verified"}
        assert len(rows) >= 2
        interrupted = sorted(rows)[0]
        Store(rows[interrupted]["path"], "AUDIAN_ARCHIVE_URL").delete("")  # deleted, then the process was killed
        assert dispose(emu, lake)["run_already_missing"] == 1
    records = {r["recording_id"]: r["outcome"] for r in read_rows(lake.lake_store(), ARCHIVE_DISPOSALS,
                                                                   emu.account.now().date())}
    assert records == {rid: "already_missing" if rid == interrupted else "disposed" for rid in rows}
    assert all(r["disposed_at"] is not None for rid, r in manifest(lake.lake_store(), [day]).items() if rid in rows)
    assert (interrupted, "already_missing") in audit_rows(data_dir, "dispose")
