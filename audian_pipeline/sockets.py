"""Listening sockets for our servers (the emulator's two listeners and the webhook receiver)."""

from __future__ import annotations

import errno
import socket


class PortInUse(OSError):
    """The address is taken: the message names it and the fix."""


def bind(host: str, port: int) -> socket.socket:
    """Bind before serving, so port 0 gives a known free port before any URL is built, and a
    port in use fails here with one line rather than deep inside uvicorn.

    The protocol must be IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets
    whose proto says TCP, and without it every keep-alive answer waits ~40 ms for the
    client's delayed ACK (Nagle), which would make the emulator 80 times slower than it is."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise PortInUse(exc.errno, f"cannot listen on {host}:{port} ({exc.strerror}): stop what holds "
                                       "the port or choose another with --port") from None
        raise
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock
