"""Run the emulator: the API and the storage host on uvicorn, and webhook delivery.

`start_emulator(...)` runs it in a background thread of the calling process (tests, demo,
benchmark); `serve(...)` runs it in the foreground for `audian-pipeline emulator`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse

from audian_pipeline.emulator.account import Account, Clock, utc
from audian_pipeline.emulator.app import Emulator, api_app, storage_app
from audian_pipeline.emulator.audio import AudioCache
from audian_pipeline.emulator.delivery import WebhookDelivery
from audian_pipeline.emulator.demo_account import (
    DEMO_DAYS,
    DEMO_MAX_DURATION,
    DEMO_PER_DAY,
    DEMO_SEED,
    account_parameters,
)
from audian_pipeline.emulator.faults import FaultConfig, Faults
from audian_pipeline.emulator.variations import Variations
from audian_pipeline.settings import DEMO_API_KEY, DEMO_WEBHOOK_SECRET
from audian_pipeline.sockets import bind

log = logging.getLogger("audian_pipeline.emulator")


class _QuietInjectedCuts(logging.Filter):
    """A connection the emulator cuts on purpose is not an error worth a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionAbortedError))


logging.getLogger("uvicorn.error").addFilter(_QuietInjectedCuts())


@dataclass
class RunningEmulator:
    api_url: str
    storage_url: str
    emulator: Emulator
    parameters: dict[str, Any]
    """What regenerates this account (`GET /_emulator/account` answers them)."""
    delivery: WebhookDelivery | None
    _servers: list[uvicorn.Server]
    _thread: threading.Thread | None

    @property
    def account(self) -> Account:
        return self.emulator.account

    @property
    def faults(self) -> Faults:
        return self.emulator.faults

    def stop(self) -> None:
        if self.delivery:
            self.delivery.stop()
        for server in self._servers:
            server.should_exit = True
        if self._thread:
            self._thread.join(timeout=10)

    def __enter__(self) -> "RunningEmulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build(
    *,
    seed: int = DEMO_SEED,
    days: int = DEMO_DAYS,
    per_day: int = DEMO_PER_DAY,
    clock: datetime | None = None,
    epoch: datetime | None = None,
    api_key: str = DEMO_API_KEY,
    webhook_url: str | None = None,
    webhook_secret: str = DEMO_WEBHOOK_SECRET,
    faults: FaultConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    storage_port: int = 0,
    cache_dir: Path | None = None,
    max_duration: int = DEMO_MAX_DURATION,
    quota_bytes: int | None = None,
    variations: Variations | None = None,
    webhooks_since: datetime | None = None,
) -> tuple[RunningEmulator, list[tuple[uvicorn.Server, socket.socket]]]:
    """`clock` freezes the emulator at that instant; otherwise it runs with the wall clock, and
    `epoch` (default: now) is the instant its history is generated from (see `demo_account`).
    `webhooks_since` delivers only the events after it (default: the whole history's)."""
    if clock is not None and epoch is not None:
        raise ValueError("give the emulator a frozen clock or an epoch, not both")
    generated_at = utc(clock or epoch or datetime.now(timezone.utc))
    account = Account(seed=seed, days=days, per_day=per_day, clock=Clock(generated_at), max_duration=max_duration,
                      variations=variations)
    if clock is None:
        account.clock = Clock()  # the history stands as generated; time runs on from the wall clock
    parameters = account_parameters(seed=seed, days=days, per_day=per_day, max_duration=max_duration,
                                    variations=variations.to_dict() if variations else None, epoch=generated_at)
    api_sock, storage_sock = bind(host, port), bind(host, storage_port)
    api_url = f"http://{host}:{api_sock.getsockname()[1]}"
    storage_url = f"http://{host}:{storage_sock.getsockname()[1]}"
    cache = AudioCache(cache_dir or Path(tempfile.gettempdir()) / "audian-emulator-audio")
    emulator = Emulator(account, api_key, Faults(faults or FaultConfig(), seed), cache, storage_url,
                        quota_bytes=quota_bytes, variations=variations)
    delivery = None
    if webhook_url:
        delivery = WebhookDelivery(account, webhook_url, webhook_secret, emulator.faults, api_url, cache,
                                   since=webhooks_since)
    api = api_app(emulator)
    api.add_route("/_emulator/account", _account_endpoint(parameters), methods=["GET"])
    servers = []
    for app, sock in ((api, api_sock), (storage_app(emulator), storage_sock)):
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=30)
        servers.append((uvicorn.Server(config), sock))
    running = RunningEmulator(api_url, storage_url, emulator, parameters, delivery, [s for s, _ in servers], None)
    return running, servers


def _account_endpoint(parameters: dict[str, Any]):
    """Which generated account this is, so a data directory can tell it from another. Open to
    anyone, like the rest of `/_emulator/`: the parameters are no secret, and a client probing
    whether it talks to an emulator need not send its key to a path Audian does not have."""

    async def account(request: Request) -> JSONResponse:
        return JSONResponse({"emulator_account": parameters})

    return account


async def _serve_all(servers: list[tuple[uvicorn.Server, socket.socket]]) -> None:
    await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in servers))


def start_emulator(**options) -> RunningEmulator:
    """Start in a background thread; returns once both listeners accept connections."""
    running, servers = build(**options)
    thread = threading.Thread(target=asyncio.run, args=(_serve_all(servers),), daemon=True, name="emulator")
    thread.start()
    running._thread = thread
    for server, _ in servers:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the emulator failed to start; see the log above")
            threading.Event().wait(0.01)
    if running.delivery:
        running.delivery.start()
    return running


def serve(**options) -> None:
    """Serve in the foreground until interrupted (Ctrl-C stops both listeners)."""
    running, servers = build(**options)
    webhooks = (f"webhooks to {running.delivery.url} (retried until something listens; --no-webhooks: none)"
                if running.delivery else "no webhooks")
    print(f"Audian emulator: API {running.api_url}, storage {running.storage_url}, "
          f"{len(running.account.visible())} recordings listed, seed {running.account.seed}, "
          f"generated at {running.parameters['epoch']}; {webhooks}; Ctrl-C stops it", flush=True)
    if running.delivery:
        running.delivery.start()
    try:
        asyncio.run(_serve_all(servers))
    finally:
        running.stop()
