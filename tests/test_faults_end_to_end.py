"""End to end under faults: the same data, whatever Audian and the machine do.

A clean run and a run with every fault on at once must leave identical warehouse tables and
archive (compared by content), except the recordings the emulator corrupted; a run killed
at any point and run again equals an uninterrupted one; each failure of the world fails with
one clear message; and no secret reaches a log, an event, metadata or a file.
"""

from __future__ import annotations

import hashlib
import os
import resource as rlimit
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from audian_pipeline import definitions
from audian_pipeline.defs.resources import AudianResource, LakeResource, WarehouseResource
from audian_pipeline.defs.schedules import daily_job, daily_schedule
from audian_pipeline.emulator.faults import FaultConfig
from audian_pipeline.emulator.variations import Variations
from audian_pipeline.lake.paths import warehouse_path
from audian_pipeline.runner import LAKE_AND_WAREHOUSE, failure_messages, range_tags, run_range
from audian_pipeline.settings import DEMO_API_KEY
from audian_pipeline.storage import Store

from s3server import s3_locations
from test_audio_archive import account_with_webhooks

FAULTS = FaultConfig(server_error=0.1, rate_limited=0.03, latency_ms=2, drift=0.3, cut=0.2, corrupt=0.1,
                     webhook_duplicate=0.3, forbidden=0.1)
BOOKKEEPING = {
    "recordings": {"first_seen_at", "last_seen_at", "detail_fetched_at"},
    "recording_audio": {"attempts", "first_attempt_at", "last_attempt_at", "verified_at"},
    "recording_events": {"received_at"},
    "calls": {"fetched_at"},
}
"""When we saw something, not what it is: the only columns two correct runs may disagree on."""
ACCOUNT = dict(seed=91, days=12, per_day=14, max_duration=45)


def resources_for(emu, data_dir: Path, api_key=DEMO_API_KEY, **storage: str) -> dict:
    """Pages of 7 so that each day's window takes several pages for drift to shift; `storage`
    (lake_url, archive_url) puts the lake and the archive elsewhere, on S3 say."""
    return {
        "audian": AudianResource(api_url=emu.api_url, api_key=api_key, list_limit=7),
        "lake": LakeResource(data_dir=str(data_dir), **storage),
        "warehouse_settings": WarehouseResource(as_of=emu.account.now().isoformat()),
    }


def whole_pipeline(emu, data_dir: Path, instance: dg.DagsterInstance, **storage: str) -> list[str]:
    """A 6-day backfill (about 90 recordings: every fault is met), then the daily schedule's run;
    returns the run ids."""
    today = emu.account.now().date()
    assert run_range(today - timedelta(days=6), today - timedelta(days=1),
                     resources=resources_for(emu, data_dir, **storage), dagster_instance=instance) == 0
    tick = datetime.combine(today, datetime.min.time(), tzinfo=timezone.utc) + timedelta(minutes=15)
    request = daily_schedule(dg.build_schedule_context(scheduled_execution_time=tick))
    job = dg.Definitions(assets=definitions.load().assets, jobs=[daily_job],
                         resources=resources_for(emu, data_dir, **storage)).resolve_job_def("daily_job")
    assert job.execute_in_process(tags=request.tags, instance=instance).success
    return [run.run_id for run in instance.get_runs()]


def warehouse_content(data_dir: Path, api_url: str, archive_url: str | None = None) -> dict[str, list[dict]]:
    """Sorted rows without bookkeeping columns; the emulator's own address (it differs between
    the two emulators, and events carry it in download_url) and the archive's root (in the
    manifest's `path`: the data dir, or the s3:// prefix of AUDIAN_ARCHIVE_URL) by placeholders."""
    places = {api_url: "<API>", archive_url or str(data_dir.resolve()): "<ARCHIVE>"}
    tables = {}
    with duckdb.connect(str(warehouse_path(data_dir)), read_only=True) as con:
        for table, skip in BOOKKEEPING.items():
            columns = [c for (c,) in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                [table]).fetchall() if c not in skip]
            rows = con.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY ALL").fetchall()
            tables[table] = [{c: _placeholders(v, places) for c, v in zip(columns, row, strict=True)} for row in rows]
    return tables


def _placeholders(value, places: dict[str, str]):
    if isinstance(value, str):
        for place, placeholder in places.items():
            value = value.replace(place, placeholder)
    return value


def archived(data_dir: Path) -> list[Path]:
    """The archive as a reader sees it: hidden `.tmp-…partial` files of a killed writer are not
    recordings (no `*.mp3` glob matches them) and are swept by a later run once an hour old."""
    return [p for p in sorted((data_dir / "audio").rglob("*")) if p.is_file() and not p.name.startswith(".")]


def archive_content(where: Path | Store) -> dict[str, str]:
    """sha256 of every recording archived under a data dir's audio/, or an archive Store's."""
    if isinstance(where, Store):
        return {key.removeprefix("audio/"): hashlib.sha256(where.read_bytes(key) or b"").hexdigest()
                for key in where.keys_under("audio")}
    return {str(p.relative_to(where / "audio")): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in archived(where)}


def storage_for(request: pytest.FixtureRequest, storage: str) -> dict[str, str]:
    """LakeResource fields for a run: none for the local default; on S3, a fresh prefix in each
    of the test server's two buckets (the lake's and the archive's)."""
    if storage == "local":
        return {}
    request.getfixturevalue("s3_env")
    return s3_locations()


def archive_of(data_dir: Path, storage: dict[str, str]) -> Path | Store:
    return Store(storage["archive_url"], "AUDIAN_ARCHIVE_URL") if storage else data_dir


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["local", "s3"])
def test_every_fault_at_once_leaves_the_same_data_as_a_clean_run(fresh_emulator, tmp_path, request, storage):
    """The faulty run goes to `storage`; the clean one stays local, so on S3 this also shows
    that S3 storage keeps what a local run keeps."""
    clean_dir, faulty_dir = tmp_path / "clean", tmp_path / "faulty"
    where = storage_for(request, storage)
    with account_with_webhooks(fresh_emulator, clean_dir, **ACCOUNT) as clean:
        whole_pipeline(clean, clean_dir, dg.DagsterInstance.ephemeral())
    with account_with_webhooks(fresh_emulator, faulty_dir, faults=FAULTS, **ACCOUNT) as faulty:
        whole_pipeline(faulty, faulty_dir, dg.DagsterInstance.ephemeral(), **where)
        injected = faulty.faults.snapshot()["injected"]
        delivery = faulty.delivery.stats.to_dict()
    print("faults injected:", injected, "webhook delivery:", delivery)
    assert {"server_error", "rate_limited", "drift", "cut", "forbidden", "webhook_duplicate"} <= set(injected)

    want = warehouse_content(clean_dir, clean.api_url)
    got = warehouse_content(faulty_dir, faulty.api_url, where.get("archive_url"))
    corrupted = {r["recording_id"] for r in got["recording_audio"] if r["outcome"] == "checksum_mismatch"}
    assert corrupted and all(faulty.faults.is_corrupted(rid) for rid in corrupted)
    assert {r["recording_id"]: r["outcome"] for r in want["recording_audio"] if r["recording_id"] in corrupted} == {
        rid: "verified" for rid in corrupted}
    for table in ("recordings", "calls", "recording_events"):
        assert got[table] == want[table], table
    strip = lambda rows: [r for r in rows if r["recording_id"] not in corrupted]  # noqa: E731
    assert strip(got["recording_audio"]) == strip(want["recording_audio"])

    clean_files, faulty_files = archive_content(clean_dir), archive_content(archive_of(faulty_dir, where))
    assert {k: v for k, v in clean_files.items() if Path(k).stem not in corrupted} == faulty_files
    assert not {Path(k).stem for k in faulty_files} & corrupted


RUN = [sys.executable, "-m", "audian_pipeline.cli", "run"]


def _cli_env(emu, data_dir: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIAN_", "DAGSTER_"))}
    return {**env, "AUDIAN_API_URL": emu.api_url, "AUDIAN_API_KEY": DEMO_API_KEY, "AUDIAN_DATA_DIR": str(data_dir),
            **extra}


def _visible_state_is_whole(data_dir: Path, truth: dict[str, str], storage: dict[str, str]) -> None:
    """What a reader can see between kills: complete Parquet, verified audio, an openable warehouse.
    On S3 also: no object but partitions in the lake, and none but recordings and quarantined
    files in the archive (a killed upload never completes, so it is no object at all)."""
    if storage:
        lake = Store(storage["lake_url"], "AUDIAN_LAKE_URL")
        for key in lake.keys_under(""):
            assert key.endswith("/data.parquet"), key
            pq.read_table(pa.BufferReader(lake.read_bytes(key)))
        archive = archive_of(data_dir, storage)
        assert all(key.startswith(("audio/", "quarantine/")) for key in archive.keys_under("")), archive
        for name, digest in archive_content(archive).items():
            assert digest == truth[Path(name).stem], name
    for path in (data_dir / "lake").rglob("*.parquet"):
        pq.read_table(path)
    for path in archived(data_dir):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == truth[path.stem], path
    if warehouse_path(data_dir).exists():
        with duckdb.connect(str(warehouse_path(data_dir)), read_only=True) as con:
            con.execute("SELECT count(*) FROM recordings").fetchall()


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["local", "s3"])
def test_killed_backfills_then_rerun_equal_an_uninterrupted_run(fresh_emulator, tmp_path, request, storage):
    """The killed runs and their re-run use `storage`, the uninterrupted run the local default."""
    killed_dir, whole_dir = tmp_path / "killed", tmp_path / "whole"
    where = storage_for(request, storage)
    killed_env = {"AUDIAN_LAKE_URL": where["lake_url"], "AUDIAN_ARCHIVE_URL": where["archive_url"]} if where else {}
    emu = fresh_emulator(**ACCOUNT)
    truth = {rid: emu.emulator.audio_cache.sha256(r.spec) for rid, r in emu.account.recordings.items()
             if r.outcome == "completed"}
    today = emu.account.now().date()
    days = ["--start", (today - timedelta(days=10)).isoformat(), "--end", (today - timedelta(days=1)).isoformat()]
    for delay in (3.0, 4.5, 6.0, 7.5):
        proc = subprocess.Popen([*RUN, *days], env=_cli_env(emu, killed_dir, **killed_env), cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _visible_state_is_whole(killed_dir, truth, where)
    for data_dir, extra in ((killed_dir, killed_env), (whole_dir, {})):
        done = subprocess.run([*RUN, *days], env=_cli_env(emu, data_dir, **extra), cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    assert (warehouse_content(killed_dir, emu.api_url, where.get("archive_url"))
            == warehouse_content(whole_dir, emu.api_url))
    assert archive_content(archive_of(killed_dir, where)) == archive_content(whole_dir)


def _run_day(emu, data_dir: Path, **resource_overrides) -> dg.ExecuteInProcessResult:
    resources = {**resources_for(emu, data_dir), **resource_overrides}
    day = (emu.account.now().date() - timedelta(days=1)).isoformat()
    return dg.materialize(definitions.load().assets, selection=LAKE_AND_WAREHOUSE, resources=resources,
                          raise_on_error=False, tags=range_tags(*(datetime.fromisoformat(day).date(),) * 2))


def _lake_bytes(data_dir: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted((data_dir / "lake").rglob("*.parquet"))}


@pytest.mark.parametrize("break_it, expected", [
    ("bad_url", "AUDIAN_API_URL must be an http(s) base URL"),
    ("wrong_key", "AUDIAN_API_KEY"),
    ("unreachable", "AUDIAN_API_URL"),
    ("invalid_json", "not JSON"),
    ("missing_field", "has no field"),
    ("wrong_type", "wrong type"),
    ("unknown_status", "'archived', not one of"),
])
def test_a_broken_world_fails_with_one_clear_message_and_keeps_what_was_stored(
        fresh_emulator, data_dir, break_it, expected):
    emu = fresh_emulator(seed=92, days=3, per_day=10, max_duration=20)
    assert _run_day(emu, data_dir).success
    stored = _lake_bytes(data_dir)
    if break_it == "bad_url":
        result = _run_day(emu, data_dir, audian=AudianResource(api_url="api.audian.com:8443", api_key=DEMO_API_KEY))
    elif break_it == "wrong_key":
        result = _run_day(emu, data_dir, audian=AudianResource(api_url=emu.api_url, api_key="sk_wrong_key_x"))
    elif break_it == "unreachable":
        result = _run_day(emu, data_dir, audian=AudianResource(api_url="http://127.0.0.1:9", api_key=DEMO_API_KEY,
                                                               retries=1))
    else:
        requests.post(f"{emu.api_url}/_emulator/faults", json={"malformed": 1.0, "malformed_kind": break_it},
                      headers={"X-Auth-Token": DEMO_API_KEY}, timeout=5).raise_for_status()
        result = _run_day(emu, data_dir)
    assert not result.success
    (message,) = failure_messages(result)[:1]
    assert expected in message and "sk_wrong_key_x" not in message
    assert _lake_bytes(data_dir) == stored
    requests.post(f"{emu.api_url}/_emulator/faults", json={}, headers={"X-Auth-Token": DEMO_API_KEY},
                  timeout=5).raise_for_status()
    assert _run_day(emu, data_dir).success


def test_a_data_dir_that_is_a_file_names_the_setting(fresh_emulator, tmp_path):
    emu = fresh_emulator(seed=93, days=1, per_day=2)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = _run_day(emu, tmp_path, lake=LakeResource(data_dir=str(not_a_dir / "data")))
    assert not result.success
    assert "AUDIAN_DATA_DIR" in failure_messages(result)[0]


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    rlimit.setrlimit(rlimit.RLIMIT_FSIZE, (40_000, 40_000))


@pytest.mark.slow
def test_a_full_disk_fails_clearly_and_the_next_run_completes(fresh_emulator, tmp_path):
    emu = fresh_emulator(seed=94, days=3, per_day=12, max_duration=30)
    data_dir = tmp_path / "data"
    today = emu.account.now().date()
    days = ["--start", (today - timedelta(days=2)).isoformat(), "--end", (today - timedelta(days=1)).isoformat()]
    full = subprocess.run([*RUN, *days], env=_cli_env(emu, data_dir), cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, preexec_fn=_limit_file_size)
    assert full.returncode == 1
    assert "could not write" in full.stderr and "AUDIAN_DATA_DIR" in full.stderr, full.stderr[-2000:]
    for path in (data_dir / "lake").rglob("*.parquet"):
        pq.read_table(path)
    again = subprocess.run([*RUN, *days], env=_cli_env(emu, data_dir), cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]


SECRET_KEY = "sk_live_7f3a9c2e51d84b06a1e2"
SECRET_WEBHOOK = "whsec_" + "c2VjcmV0LXdlYmhvb2stc2lnbmluZy1rZXktMzI="


@pytest.mark.slow
def test_no_secret_reaches_logs_events_metadata_or_files(fresh_emulator, tmp_path, monkeypatch, capfd, caplog):
    from audian_pipeline.lake.paths import events_db
    from audian_pipeline.webhooks.receiver import create_app
    from audian_pipeline.webhooks.store import EventStore

    from servers import serve_app

    data_dir = tmp_path / "data"
    monkeypatch.setenv("AUDIAN_API_KEY", SECRET_KEY)
    faults = FaultConfig(server_error=0.1, forbidden=0.5, cut=0.2, max_consecutive=4)
    instance = dg.DagsterInstance.ephemeral()
    with EventStore(events_db(data_dir)) as store, serve_app(create_app(store, SECRET_WEBHOOK)) as url:
        # every URL renewed after a cut is a new credential, and must not leak either
        emu = fresh_emulator(seed=95, days=3, per_day=10, max_duration=20, api_key=SECRET_KEY,
                             webhook_url=url + "/webhooks/audian", webhook_secret=SECRET_WEBHOOK, faults=faults,
                             variations=Variations.realistic())
        assert emu.delivery.wait_idle(60)
        resources = {**resources_for(emu, data_dir), "audian": AudianResource(api_url=emu.api_url,
                                                                                 api_key=dg.EnvVar("AUDIAN_API_KEY"))}
        today = emu.account.now().date()
        run_range(today - timedelta(days=2), today, resources=resources, dagster_instance=instance)
        # one run where the storage host refuses everything: errors must still hold no URL
        requests.post(f"{emu.api_url}/_emulator/faults", json={"forbidden": 1.0, "max_consecutive": 99},
                      headers={"X-Auth-Token": SECRET_KEY}, timeout=5).raise_for_status()
        shutil.rmtree(data_dir / "audio", ignore_errors=True)  # so every recording is downloaded again
        run_range(today - timedelta(days=1), today - timedelta(days=1), resources=resources,
                  dagster_instance=instance)
    assert emu.faults.snapshot()["injected"]["forbidden"] > 0
    assert emu.faults.snapshot()["injected"]["expired_after_cut"] > 0
    secrets = [SECRET_KEY, SECRET_WEBHOOK, SECRET_WEBHOOK.removeprefix("whsec_"), *emu.emulator.issued_signatures]
    assert len(secrets) > 3

    haystacks = {"captured output": "".join(capfd.readouterr()), "log records": caplog.text}
    for run in instance.get_runs():
        haystacks[f"run config {run.run_id}"] = repr(run.run_config) + repr(run.tags)
        haystacks[f"event log {run.run_id}"] = "\n".join(
            dg.serialize_value(entry) for entry in instance.all_logs(run.run_id))
    for path in data_dir.rglob("*"):
        if path.is_file():
            haystacks[str(path)] = path.read_bytes().decode("latin-1")
    assert any("download_failed" in text for text in haystacks.values()), "the 403 run failed no download"
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"
