"""The lake and the archive on a real S3 server (SeaweedFS), against the emulator.

A run on S3 keeps what a local run keeps, byte for byte where it matters; a broken S3 set-up
fails at start in one line naming the setting, with nothing stored lost; and a reader never
sees a partition missing or half written while it is being rewritten.
"""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from audian_pipeline.defs.resources import LakeResource
from audian_pipeline.defs.sensors import created_days
from audian_pipeline.lake.parquet import read_partition, read_rows, write_partition
from audian_pipeline.lake.paths import partitions_pattern
from audian_pipeline.lake.tables import RECORDINGS, TABLES
from audian_pipeline.runner import failure_messages, run_range
from audian_pipeline.storage import Store
from audian_pipeline.warehouse.load import lake_days

from s3server import LAKE_ONLY_ACCESS_KEY, LAKE_ONLY_SECRET_KEY, SECRET_KEY, s3_locations
from servers import free_port
from test_audio_archive import account_with_webhooks
from test_faults_end_to_end import (
    BOOKKEEPING,
    _run_day,
    archive_content,
    resources_for,
    warehouse_content,
)

ACCOUNT = dict(seed=96, days=5, per_day=10, max_duration=30)
DAY = date(2026, 11, 19)


def lake_content(lake: Path | Store, archive_root: str, api_url: str) -> dict[str, list[str]]:
    """Every partition's rows without bookkeeping columns; the archive's root and the emulator's
    address (in the events' download_url) as placeholders."""
    content = {}
    for table in TABLES.values():
        rows = [row for day in lake_days(lake, [table.name]) for row in read_rows(lake, table, day)]
        skip = {**BOOKKEEPING, "recording_speech": {"analysed_at"}}.get(table.name, set())
        content[table.name] = sorted(
            (repr({k: v.replace(archive_root, "<ARCHIVE>").replace(api_url, "<API>") if isinstance(v, str) else v
                   for k, v in row.items() if k not in skip}) for row in rows))
    return content


def stores(where: dict[str, str]) -> tuple[Store, Store]:
    return Store(where["lake_url"], "AUDIAN_LAKE_URL"), Store(where["archive_url"], "AUDIAN_ARCHIVE_URL")


def backfill(emu, data_dir: Path, instance: dg.DagsterInstance, **storage: str) -> None:
    today = emu.account.now().date()
    assert run_range(today - timedelta(days=4), today - timedelta(days=1),
                     resources=resources_for(emu, data_dir, **storage), dagster_instance=instance) == 0


@pytest.mark.slow
def test_a_run_on_s3_keeps_what_a_local_run_keeps(fresh_emulator, tmp_path, s3_env):
    local_dir, s3_dir, where = tmp_path / "local", tmp_path / "s3", s3_locations()
    with account_with_webhooks(fresh_emulator, local_dir, **ACCOUNT) as local:
        backfill(local, local_dir, dg.DagsterInstance.ephemeral())
    instance = dg.DagsterInstance.ephemeral()
    with account_with_webhooks(fresh_emulator, s3_dir, **ACCOUNT) as remote:
        backfill(remote, s3_dir, instance, **where)
    lake, archive = stores(where)

    assert not (s3_dir / "lake").exists() and not (s3_dir / "audio").exists(), "nothing of the lake stayed local"
    assert (lake_content(lake, archive.url, remote.api_url)
            == lake_content(local_dir, str(local_dir.resolve()), local.api_url))
    assert (warehouse_content(s3_dir, remote.api_url, archive.url)
            == warehouse_content(local_dir, local.api_url))
    local_files = archive_content(local_dir)
    assert local_files and archive_content(archive) == local_files
    verified = [r for day in lake_days(lake) for r in read_rows(lake, TABLES["recording_audio"], day)
                if r["outcome"] == "verified"]
    assert verified and all(r["path"] == f"{archive.url}/audio/{r['created_at']:%Y/%m/%d}/{r['recording_id']}."
                            f"{r['declared_format']}" for r in verified), "the manifest names each object's URL"
    assert all(key.startswith("audio/") for key in archive.keys_under("")), "no staging object is left"
    ids = [r["recording_id"] for r in verified]
    assert created_days(lake, ids) == created_days(local_dir, ids) != {}, "the sensor finds recordings in place"
    log = "\n".join(dg.serialize_value(e) for run in instance.get_runs() for e in instance.all_logs(run.run_id))
    assert SECRET_KEY not in log and where["lake_url"] in log


def _objects(store: Store) -> dict[str, bytes]:
    return {key: store.read_bytes(key) or b"" for key in store.keys_under("")}


@pytest.mark.parametrize("break_it, setting", [
    ("missing_bucket", "AUDIAN_LAKE_URL"),
    ("wrong_credentials", "AUDIAN_LAKE_URL"),
    ("unreachable_endpoint", "AUDIAN_LAKE_URL"),
    ("archive_denied", "AUDIAN_ARCHIVE_URL"),
])
def test_a_broken_s3_set_up_fails_in_one_line_naming_the_setting(fresh_emulator, data_dir, s3_env, monkeypatch,
                                                                  break_it, setting):
    emu = fresh_emulator(seed=97, days=2, per_day=6, max_duration=20)
    where = s3_locations()
    assert _run_day(emu, data_dir, lake=LakeResource(data_dir=str(data_dir), **where)).success
    lake, archive = stores(where)
    stored, archived = _objects(lake), _objects(archive)
    assert stored and archived, "a day of the lake and its audio (kept aside until a checksum comes)"

    broken = dict(where)
    if break_it == "missing_bucket":
        broken["lake_url"] = "s3://no-such-bucket/lake"
    elif break_it == "wrong_credentials":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-key-at-all")
    elif break_it == "unreachable_endpoint":
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", LAKE_ONLY_ACCESS_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", LAKE_ONLY_SECRET_KEY)
    result = _run_day(emu, data_dir, lake=LakeResource(data_dir=str(data_dir), **broken))
    assert not result.success
    (message,) = failure_messages(result)[:1]
    assert setting in message and "\n" not in message, message
    assert SECRET_KEY not in message and LAKE_ONLY_SECRET_KEY not in message

    for name, value in s3_env.env().items():
        monkeypatch.setenv(name, value)
    assert _objects(lake) == stored and _objects(archive) == archived, "nothing stored was lost"


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_a_reader_always_sees_exactly_one_whole_version_of_a_partition(tmp_path, request, storage):
    """While a writer rewrites one day's partition over and over, a reader listing the lake and
    reading it finds exactly one partition object, always a complete one, old or new."""
    lake = Store(tmp_path / "lake", "AUDIAN_LAKE_URL")
    if storage == "s3":
        request.getfixturevalue("s3_env")
        lake = Store(s3_locations()["lake_url"], "AUDIAN_LAKE_URL")
    day = DAY
    versions = [_recordings(n) for n in (3, 700)]
    write_partition(lake, RECORDINGS, day, versions[0])
    done = threading.Event()

    def rewrite() -> None:
        try:
            for i in range(40):
                write_partition(lake, RECORDINGS, day, versions[(i + 1) % 2])
        finally:
            done.set()

    writer = threading.Thread(target=rewrite)
    writer.start()
    reads = 0
    while not done.is_set() or reads == 0:
        assert lake.keys(partitions_pattern(RECORDINGS.name)) == [f"recordings/date={day}/data.parquet"]
        if lake.is_s3:  # locally a writer's hidden temporary sits beside it, matched by no reader's glob
            assert lake.keys_under("") == [f"recordings/date={day}/data.parquet"], "nothing but the partition"
        stored = read_partition(lake, RECORDINGS, day)
        assert stored is not None and stored.num_rows in (3, 700)
        assert stored.equals(versions[0 if stored.num_rows == 3 else 1])
        reads += 1
    writer.join()
    assert reads > 1


def _recordings(n: int) -> pa.Table:
    created = datetime(2026, 11, 19, 12, tzinfo=timezone.utc)
    rows = [{"recording_id": f"rec_{i:05d}", "call_id": f"call_{i:05d}", "created_at": created, "status": "completed",
             "expires_at": created + timedelta(days=30), "first_seen_at": created, "last_seen_at": created}
            for i in range(n)]
    return pa.Table.from_pydict({f.name: [r.get(f.name) for r in rows] for f in RECORDINGS.schema},
                                schema=RECORDINGS.schema)


def test_publishing_creates_only_where_nothing_is_and_keeps_a_published_recording(tmp_path, s3_env):
    """A run killed after publishing but before writing its manifest downloads the recording
    again: the conditional create finds the object, keeps it (same size), and says nothing."""
    archive = Store(s3_locations()["archive_url"], "AUDIAN_ARCHIVE_URL")
    key = "audio/2026/11/19/rec_a.wav"
    for attempt, content in enumerate((b"first-verified-copy", b"later-same-length!!", b"a longer replacement copy")):
        spool = tmp_path / f"spool-{attempt}"
        spool.write_bytes(content)
        archive.publish_file(spool, key)
        assert not spool.exists(), "the spool file goes once published"
    assert archive.keys_under("") == [key]
    assert archive.read_bytes(key) == b"a longer replacement copy", "only a copy of another size replaces it"
    big = tmp_path / "big.wav"
    big.write_bytes(bytes(range(256)) * (20 * 1024 * 1024 // 256))  # several parts: a multipart upload
    archive.publish_file(big, "audio/2026/11/19/rec_big.wav")
    assert archive.size("audio/2026/11/19/rec_big.wav") == 20 * 1024 * 1024
