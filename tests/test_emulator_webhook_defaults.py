"""The emulator and the receiver work together when started by hand, in either order.

Real emulator, real receiver over HTTP on 127.0.0.1; the receiver's socket is bound first and
only starts listening later, so "nothing listens yet" is a real refused connection.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from audian_pipeline.cli import build_parser
from audian_pipeline.emulator.delivery import WebhookDelivery
from audian_pipeline.lake.paths import events_db
from audian_pipeline.settings import DEFAULT_WEBHOOKS_PORT, DEMO_WEBHOOK_SECRET
from audian_pipeline.webhooks.receiver import create_app
from audian_pipeline.webhooks.server import receiver_server
from audian_pipeline.webhooks.store import EventStore


def test_the_emulator_delivers_to_where_the_receiver_listens_by_default():
    parser = build_parser()
    emulator, receiver = parser.parse_args(["emulator"]), parser.parse_args(["webhooks"])
    assert emulator.webhook_url == f"http://{receiver.host}:{receiver.port}/webhooks/audian"
    assert receiver.port == DEFAULT_WEBHOOKS_PORT and not emulator.no_webhooks
    assert parser.parse_args(["emulator", "--no-webhooks"]).no_webhooks


def test_webhooks_wait_quietly_while_nothing_listens_then_all_arrive(fresh_emulator, data_dir, caplog):
    emu = fresh_emulator(seed=61, days=2, per_day=3, max_duration=60)
    sock = bound_not_listening()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/webhooks/audian"
    delivery = WebhookDelivery(emu.account, url, DEMO_WEBHOOK_SECRET, emu.faults, emu.api_url,
                               emu.emulator.audio_cache, workers=2, max_attempts=2)
    caplog.set_level(logging.INFO, logger="audian_pipeline.emulator.webhooks")
    delivery.start()
    try:
        deadline = time.monotonic() + 60
        while delivery.stats.retries < 3 * 2 and time.monotonic() < deadline:  # every worker past max_attempts
            time.sleep(0.1)
        assert delivery.stats.retries >= 6
        assert delivery.stats.given_up == 0, "an event was dropped because the receiver was not started yet"

        with EventStore(events_db(data_dir)) as store:
            server = receiver_server(create_app(store, DEMO_WEBHOOK_SECRET), log_level="warning", access_log=False)
            sock.listen(128)
            thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
            thread.start()
            try:
                assert delivery.wait_idle(120), "the held webhooks were not delivered once the receiver listened"
                stored = store.count()
            finally:
                server.should_exit = True
                thread.join(15)
    finally:
        delivery.stop()
        sock.close()

    assert delivery.stats.given_up == 0 and delivery.stats.delivered == delivery.stats.queued == stored > 0
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "audian_pipeline.emulator.webhooks"]
    assert [level for level, _ in said] == ["WARNING", "INFO"], said
    assert said[0][1].startswith(f"nothing listens at {url} yet") and "audian-pipeline webhooks" in said[0][1]


def bound_not_listening() -> socket.socket:
    """A free port held by a socket that refuses connections until `listen()` is called on it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    return sock
