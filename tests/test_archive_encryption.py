"""Encryption at rest (AUDIAN_ARCHIVE_KEYSET) and `audian-pipeline restore`: real Tink, real
downloads from the emulator, real webhooks' checksums, a local archive and SeaweedFS."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from audian_pipeline.audio.crypto import load_cipher
from audian_pipeline.cli import main
from audian_pipeline.defs.recording_audio import ENCRYPTED, recording_audio
from audian_pipeline.defs.recordings import recordings
from audian_pipeline.defs.resources import AudianResource, LakeResource
from audian_pipeline.lake.parquet import read_rows
from audian_pipeline.lake.tables import RECORDING_AUDIO
from audian_pipeline.settings import DEMO_API_KEY
from audian_pipeline.storage import Store

from s3server import s3_locations
from test_audio_archive import account_with_webhooks

MAGIC = {"wav": (b"RIFF", b"WAVE"), "opus": (b"OggS", b"OpusHead"), "mp3": ()}


def archive_run(emu, data_dir: Path, day, keyset: Path | None, **locations: str) -> dg.ExecuteInProcessResult:
    lake = LakeResource(data_dir=str(data_dir), archive_keyset=str(keyset) if keyset else "", **locations)
    return dg.materialize(
        [recordings, recording_audio],
        resources={"audian": AudianResource(api_url=emu.api_url, api_key=DEMO_API_KEY), "lake": lake},
        partition_key=day.isoformat(),
    )


def verified_rows(data_dir: Path, day, lake_url: str | None = None) -> dict[str, dict]:
    lake = Store(lake_url, "AUDIAN_LAKE_URL") if lake_url else data_dir
    return {r["recording_id"]: r for r in read_rows(lake, RECORDING_AUDIO, day) if r["outcome"] == "verified"}


def stored_bytes(location: str) -> bytes:
    store = Store(location, "AUDIAN_ARCHIVE_URL")
    data = store.read_bytes("")
    assert data is not None, location
    return data


def check_result(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == name)


def restore_cli(recording_id: str, out: Path, capsys) -> tuple[int, str, str]:
    code = main(["restore", recording_id, "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def key_material(keyset: Path) -> list[str]:
    """The secret parts of a keyset file: each key's serialized value (base64)."""
    return [k["keyData"]["value"] for k in json.loads(keyset.read_text())["key"]]


def audit_rows(data_dir: Path, action: str) -> list[tuple]:
    return duckdb.sql(f"select recording_id, outcome, detail from read_json('{data_dir}/audit/recording_access.jsonl') "
                      f"where action = '{action}'").fetchall()


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_an_encrypted_archive_holds_only_ciphertext_and_restores_every_format(
        storage, fresh_emulator, data_dir, tmp_path, request, monkeypatch, capsys):
    locations = {}
    if storage == "s3":
        request.getfixturevalue("s3_env")
        locations = s3_locations()
    keyset = tmp_path / "keys" / "archive.json"
    assert main(["keyset", "create", str(keyset)]) == 0
    assert f"keyset written to {keyset}" in capsys.readouterr().out
    cipher = load_cipher(keyset)
    with account_with_webhooks(fresh_emulator, data_dir, seed=51, days=2, per_day=40) as emu:
        day = emu.account.now().date() - timedelta(days=1)
        result = archive_run(emu, data_dir, day, keyset, **locations)
        assert result.success and check_result(result, ENCRYPTED).passed
        rows = verified_rows(data_dir, day, locations.get("lake_url"))
        assert {r["declared_format"] for r in rows.values()} == {"mp3", "wav", "opus"}
        monkeypatch.setenv("AUDIAN_DATA_DIR", str(data_dir))
        monkeypatch.setenv("AUDIAN_ARCHIVE_KEYSET", str(keyset))
        if locations:
            monkeypatch.setenv("AUDIAN_LAKE_URL", locations["lake_url"])
        for rid, row in rows.items():
            spec = emu.account.recordings[rid].spec
            plain = emu.emulator.audio_cache.path(spec).read_bytes()
            sealed = stored_bytes(row["path"])
            assert row["path"].endswith(f"{rid}.{row['declared_format']}.tink")
            assert row["key_id"] == cipher.key_id and row["stored_bytes"] == len(sealed) > row["bytes"]
            assert row["sha256"] == row["expected_sha256"] == hashlib.sha256(plain).hexdigest()
            assert hashlib.sha256(sealed).hexdigest() != row["expected_sha256"]
            assert plain[:16] not in sealed and not any(m in sealed for m in MAGIC[row["declared_format"]])
            out = tmp_path / "restored" / f"{rid}.{row['declared_format']}"
            code, said, _ = restore_cli(rid, out, capsys)
            assert code == 0 and "matches the manifest" in said
            assert out.read_bytes() == plain
        restored = audit_rows(data_dir, "restore")
        assert sorted(r[0] for r in restored) == sorted(rows) and {r[1] for r in restored} == {"restored"}
    secrets = key_material(keyset)
    audit_text = (data_dir / "audit" / "recording_access.jsonl").read_text()
    events = json.dumps([str(e) for e in result.all_events])
    assert not any(s in audit_text or s in events for s in secrets)


def test_without_a_keyset_the_archive_is_plaintext_and_the_check_warns(fresh_emulator, data_dir, tmp_path,
                                                                       monkeypatch, capsys):
    with account_with_webhooks(fresh_emulator, data_dir, seed=52, days=2, per_day=6) as emu:
        day = emu.account.now().date() - timedelta(days=1)
        result = archive_run(emu, data_dir, day, None)
        assert result.success
        check = check_result(result, ENCRYPTED)
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert "AUDIAN_ARCHIVE_KEYSET is not set" in (check.description or "")
        rows = verified_rows(data_dir, day)
        assert rows
        monkeypatch.setenv("AUDIAN_DATA_DIR", str(data_dir))
        for rid, row in rows.items():
            assert row["key_id"] is None and not row["path"].endswith(".tink")
            assert hashlib.sha256(stored_bytes(row["path"])).hexdigest() == row["expected_sha256"]
            out = tmp_path / f"{rid}.audio"
            assert restore_cli(rid, out, capsys)[0] == 0
            assert hashlib.sha256(out.read_bytes()).hexdigest() == row["sha256"]


def test_keyset_create_is_private_and_never_overwrites(tmp_path, capsys):
    keyset = tmp_path / "archive.json"
    assert main(["keyset", "create", str(keyset)]) == 0
    assert stat.S_IMODE(keyset.stat().st_mode) == 0o600
    before = keyset.read_bytes()
    capsys.readouterr()
    assert main(["keyset", "create", str(keyset)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "keyset rotate" in err
    assert keyset.read_bytes() == before
    assert not any(s in err for s in key_material(keyset))


def test_a_keyset_that_is_missing_or_not_a_keyset_fails_in_one_line(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("AUDIAN_DATA_DIR", str(data_dir))
    for bad, says in ((tmp_path / "absent.json", "no such file"), (tmp_path / "junk.json", "not a Tink keyset")):
        if bad.name == "junk.json":
            bad.write_text('{"primaryKeyId": 1, "key": "nope"}')
        monkeypatch.setenv("AUDIAN_ARCHIVE_KEYSET", str(bad))
        code, _, err = restore_cli("rec_x", tmp_path / "out.wav", capsys)
        assert code == 2 and err.count("\n") == 1 and "AUDIAN_ARCHIVE_KEYSET" in err and says in err


def test_restore_refuses_tampered_truncated_swapped_wrong_key_and_unknown(fresh_emulator, data_dir, tmp_path,
                                                                          monkeypatch, capsys):
    keyset, other = tmp_path / "archive.json", tmp_path / "other.json"
    assert main(["keyset", "create", str(keyset)]) == 0 and main(["keyset", "create", str(other)]) == 0
    with account_with_webhooks(fresh_emulator, data_dir, seed=53, days=2, per_day=12) as emu:
        day = emu.account.now().date() - timedelta(days=1)
        assert archive_run(emu, data_dir, day, keyset).success
    rows = list(verified_rows(data_dir, day).values())
    assert len(rows) >= 4
    tampered, truncated, swapped, intact = (Path(r["path"]) for r in rows[:4])
    sealed = bytearray(tampered.read_bytes())
    sealed[len(sealed) // 2] ^= 0x01
    tampered.write_bytes(bytes(sealed))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    swapped.write_bytes(intact.read_bytes())  # another recording's ciphertext under this one's name
    monkeypatch.setenv("AUDIAN_DATA_DIR", str(data_dir))
    monkeypatch.setenv("AUDIAN_ARCHIVE_KEYSET", str(keyset))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    capsys.readouterr()  # the run's own log lines
    for row in rows[:3]:
        code, _, err = restore_cli(row["recording_id"], out_dir / "audio", capsys)
        assert code == 1 and err.count("\n") == 1 and "does not decrypt" in err
    code, _, err = restore_cli("rec_never_archived", out_dir / "audio", capsys)
    assert code == 1 and err.count("\n") == 1 and "not in the archive's manifest" in err
    monkeypatch.setenv("AUDIAN_ARCHIVE_KEYSET", str(other))
    code, _, err = restore_cli(rows[3]["recording_id"], out_dir / "audio", capsys)
    assert code == 1 and "does not decrypt" in err
    assert list(out_dir.iterdir()) == []  # no FILE, no temporary left beside it
    failed = audit_rows(data_dir, "restore")
    assert len(failed) == 5 and {r[1] for r in failed} == {"failed"}
    secrets = key_material(keyset) + key_material(other)
    assert not any(s in json.dumps(failed) for s in secrets)


def test_after_rotation_old_and_new_objects_restore(fresh_emulator, data_dir, tmp_path, monkeypatch, capsys):
    keyset = tmp_path / "archive.json"
    assert main(["keyset", "create", str(keyset)]) == 0
    first_key = load_cipher(keyset).key_id
    with account_with_webhooks(fresh_emulator, data_dir, seed=54, days=3, per_day=6) as emu:
        old_day = emu.account.now().date() - timedelta(days=2)
        new_day = old_day + timedelta(days=1)
        assert archive_run(emu, data_dir, old_day, keyset).success
        assert main(["keyset", "rotate", str(keyset)]) == 0
        assert "new primary key" in capsys.readouterr().out
        assert stat.S_IMODE(keyset.stat().st_mode) == 0o600
        second_key = load_cipher(keyset).key_id
        assert second_key != first_key and len(key_material(keyset)) == 2
        assert archive_run(emu, data_dir, new_day, keyset).success
    old, new = verified_rows(data_dir, old_day), verified_rows(data_dir, new_day)
    assert old and new
    assert {r["key_id"] for r in old.values()} == {first_key} and {r["key_id"] for r in new.values()} == {second_key}
    monkeypatch.setenv("AUDIAN_DATA_DIR", str(data_dir))
    monkeypatch.setenv("AUDIAN_ARCHIVE_KEYSET", str(keyset))
    for rid, row in {**old, **new}.items():
        out = tmp_path / "out" / rid
        assert restore_cli(rid, out, capsys)[0] == 0
        assert hashlib.sha256(out.read_bytes()).hexdigest() == row["expected_sha256"]


def test_speech_analysis_reads_an_encrypted_archive(fresh_emulator, data_dir, tmp_path):
    from audian_pipeline.defs.recording_speech import recording_speech
    from audian_pipeline.lake.tables import RECORDING_SPEECH

    keyset = tmp_path / "archive.json"
    assert main(["keyset", "create", str(keyset)]) == 0
    with account_with_webhooks(fresh_emulator, data_dir, seed=55, days=2, per_day=6) as emu:
        day = emu.account.now().date() - timedelta(days=1)
        lake = LakeResource(data_dir=str(data_dir), archive_keyset=str(keyset))
        assert dg.materialize([recordings, recording_audio, recording_speech], partition_key=day.isoformat(),
                              resources={"audian": AudianResource(api_url=emu.api_url, api_key=DEMO_API_KEY),
                                         "lake": lake}).success
    verified = verified_rows(data_dir, day)
    speech = {r["recording_id"]: r for r in read_rows(data_dir, RECORDING_SPEECH, day)}
    assert verified and set(speech) == set(verified)
    assert {r["outcome"] for r in speech.values()} == {"analysed"}
    assert all(speech[rid]["sha256"] == row["sha256"] for rid, row in verified.items())
    assert not list((data_dir / "spool").glob("*"))  # the decrypted spool files are gone


def test_the_demo_encrypts_under_its_own_keyset_and_restores_one_recording(tmp_path):
    import os
    import subprocess
    import sys

    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIAN_")} | {"AUDIAN_DATA_DIR": str(data)}
    done = subprocess.run([sys.executable, "-m", "audian_pipeline.cli", "demo", "--days", "2", "--per-day", "3"],
                          env=env, capture_output=True, text=True, timeout=600)
    keyset = data / "keys" / "demo-archive-keyset.json"
    assert f"encrypted under the demo keyset {keyset} (created under the data directory" in done.stdout
    assert stat.S_IMODE(keyset.stat().st_mode) == 0o600
    assert all(p.name.endswith(".tink") for p in (data / "audio").rglob("*") if p.is_file())
    restored = [line for line in done.stdout.splitlines() if line.startswith("  manifest ")]
    assert len(restored) == 1 and restored[0].endswith(": match")
    assert not any(s in done.stdout + done.stderr for s in key_material(keyset))
