"""`audian-pipeline demo`: the whole pipeline on a laptop, against the embedded emulator.

Starts the emulator (running with the real clock) and the webhook receiver in this process,
waits for the webhook backlog, backfills every retained day in one run and prints every
report. Everything lands under AUDIAN_DATA_DIR (default ./data), so `dagster dev` and the
DuckDB CLI can look at the result afterwards. Unless AUDIAN_ARCHIVE_KEYSET names one, the
archive is encrypted under a keyset the demo creates under the data directory; at the end one
recording is restored from it and its sha256 checked against the manifest.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import requests
import uvicorn

from audian_pipeline.audio.audit import AuditLog
from audian_pipeline.audio.crypto import KEYSET_SETTING, create_keyset
from audian_pipeline.audio.retrieve import find_verified_row, restore
from audian_pipeline.defs.resources import AudianResource, LakeResource
from audian_pipeline.emulator.demo_account import demo_emulator_options
from audian_pipeline.emulator.server import start_emulator
from audian_pipeline.runner import run_range
from audian_pipeline.settings import RETENTION_DAYS, Settings, env_value
from audian_pipeline.sockets import bind
from audian_pipeline.warehouse.reports import REPORTS, print_report
from audian_pipeline.webhooks.receiver import create_app
from audian_pipeline.webhooks.server import receiver_server
from audian_pipeline.webhooks.store import open_event_store


def start_receiver(settings: Settings) -> tuple[str, uvicorn.Server]:
    sock = bind("127.0.0.1", 0)
    store = open_event_store(settings.events_db)
    server = receiver_server(create_app(store, settings.webhook_secret), log_level="warning", access_log=False)
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="receiver").start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server


def demo_keyset(settings: Settings) -> Path:
    """AUDIAN_ARCHIVE_KEYSET if set, else the demo's own keyset under the data directory (made once)."""
    configured = env_value(KEYSET_SETTING, "")
    if configured:
        print(f"archive: encrypted under {KEYSET_SETTING}={configured}")
        return Path(configured)
    path = settings.data_dir / "keys" / "demo-archive-keyset.json"
    if not path.exists():
        create_keyset(path)
    print(f"archive: encrypted under the demo keyset {path} (created under the data directory for this demo; "
          f"a deployment sets {KEYSET_SETTING} to a keyset kept apart from the data)")
    return path


def restore_one(settings: Settings, lake: LakeResource) -> None:
    """Restore one archived recording, as `audian-pipeline restore` does, and show its sha256 check."""
    row = find_verified_row(lake.lake_store())
    if row is None:
        print("restore: no verified recording to restore")
        return
    out = settings.data_dir / "restored" / f"{row['recording_id']}.{row['declared_format']}"
    result = restore(row["recording_id"], out, lake=lake.lake_store(), cipher=lake.archive_cipher(),
                     audit=AuditLog(settings.data_dir, run_id="demo"))
    print(f"restore: {row['recording_id']} decrypted to {out} ({result.bytes:,} bytes)")
    print(f"  sha256 {result.sha256}")
    print(f"  manifest {row['sha256']} (the webhook's {row['expected_sha256']}): "
          f"{'match' if result.sha256 == row['sha256'] == row['expected_sha256'] else 'MISMATCH'}")


def run_demo(days: int, per_day: int, seed: int, settings: Settings) -> int:
    receiver_url, receiver = start_receiver(settings)
    emulator = start_emulator(**demo_emulator_options(settings.data_dir, seed=seed, days=days, per_day=per_day),
                              api_key=settings.api_key, webhook_secret=settings.webhook_secret,
                              webhook_url=receiver_url + "/webhooks/audian")
    try:
        print(f"emulator: API {emulator.api_url}, storage {emulator.storage_url}; "
              f"{len(emulator.account.visible())} recordings listed over {RETENTION_DAYS} retained days")
        print(f"receiver: {receiver_url}/webhooks/audian; data: {settings.data_dir}")
        emulator.delivery.wait_idle(300)
        stored = requests.get(f"{receiver_url}/healthz", timeout=10).json()
        print(f"webhooks: {emulator.delivery.stats.delivered:,} delivered; the events store holds "
              f"{stored['events']:,}, {stored['duplicates']:,} were already there (counted, not stored twice)")
        today = emulator.account.now().date()
        lake = LakeResource(archive_keyset=str(demo_keyset(settings)))
        resources = {"audian": AudianResource(api_url=emulator.api_url), "lake": lake}
        code = run_range(today - timedelta(days=RETENTION_DAYS), today, resources=resources)
        for name in REPORTS:
            print()
            print_report(settings, name)
        print()
        restore_one(settings, lake)
        return code
    finally:
        emulator.stop()
        receiver.should_exit = True
