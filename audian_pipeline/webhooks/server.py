"""The receiver's uvicorn server, with the limits that keep idle or stalled clients from
holding it: built here once for `audian-pipeline webhooks` and for the demo.

A legitimate delivery is a few kilobytes sent at once, and Audian retries any delivery that
gets no 2xx with back-off; so cutting a slow or silent client off early costs an honest
sender one retry at most, while leaving it open lets a few thousand idle sockets use up the
process's file descriptors and lose every delivery for as long as they are held.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("audian_pipeline.webhooks")

REQUEST_RECEIPT_SECONDS = 10.0
"""Time a connection has to deliver a whole request (headers and body), counted from its
opening or from the previous answer. A delivery of at most `max_body_bytes` (256 KiB) crosses
any working link in well under a second; ten seconds leaves room for a slow one."""

KEEP_ALIVE_SECONDS = 5
"""Idle time allowed between requests on a kept-alive connection (uvicorn's default, named)."""

MAX_CONNECTIONS = 256
"""Open connections and requests in flight before uvicorn answers 503 at once (Audian retries
it). Audian sends a handful of deliveries at a time; the cap bounds the work a flood can start
and stays well below the common 1024 open-files limit."""

MAX_HEADER_BYTES = 8 * 1024
"""Largest request head h11 buffers; Audian's headers, several rotated signatures included,
take well under one kilobyte."""


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for receiving each request whole.

    uvicorn (0.54) has no header or body read timeout: `timeout_keep_alive` runs only between
    requests and any byte received cancels it, so a client that sends nothing, or half a
    request, keeps its connection for ever. The deadline is armed when the connection opens
    and again after each answer; when it passes, the connection is closed unless a request has
    arrived whole and is being answered. Closing mid-body reaches the app as a disconnect.
    """

    _receipt_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_receipt_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_receipt_deadline()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_receipt_deadline()

    def _arm_receipt_deadline(self) -> None:
        self._cancel_receipt_deadline()
        self._receipt_deadline = self.loop.call_later(REQUEST_RECEIPT_SECONDS, self._receipt_overdue)

    def _cancel_receipt_deadline(self) -> None:
        if self._receipt_deadline is not None:
            self._receipt_deadline.cancel()
            self._receipt_deadline = None

    def _receipt_overdue(self) -> None:
        self._receipt_deadline = None
        cycle = self.cycle
        answering = cycle is not None and not cycle.more_body and not cycle.response_complete
        if answering or self.transport.is_closing():
            return
        client = "%s:%d" % self.client if self.client else "unknown client"
        log.info("connection from %s closed: no whole request within %g s",
                 client, REQUEST_RECEIPT_SECONDS)
        self.transport.close()


def receiver_server(app: Any, **options: Any) -> uvicorn.Server:
    """The receiver's uvicorn server with the limits above; `options` are uvicorn.Config's
    address and logging options (host, port, log_level, log_config, access_log)."""
    config = uvicorn.Config(
        app, http=DeadlineH11Protocol, timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=MAX_CONNECTIONS, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        **options,
    )
    return uvicorn.Server(config)
