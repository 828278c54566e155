"""`audian-pipeline demo`: the whole pipeline on a laptop, against the embedded emulator.

Starts the emulator (running with the real clock) and the webhook receiver in this process,
waits for the webhook backlog, backfills every retained day in one run and prints every
report. Everything lands under AUDIAN_DATA_DIR (default ./data), so `dagster dev` and the
DuckDB CLI can look at the result afterwards.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import requests
import uvicorn

from audian_pipeline.defs.resources import AudianResource
from audian_pipeline.emulator.demo_account import demo_emulator_options
from audian_pipeline.emulator.server import start_emulator
from audian_pipeline.runner import run_range
from audian_pipeline.settings import RETENTION_DAYS, Settings
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
        resources = {"audian": AudianResource(api_url=emulator.api_url)}
        code = run_range(today - timedelta(days=RETENTION_DAYS), today, resources=resources)
        for name in REPORTS:
            print()
            print_report(settings, name)
        return code
    finally:
        emulator.stop()
        receiver.should_exit = True
