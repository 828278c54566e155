"""Run ASGI apps over real HTTP on 127.0.0.1 for tests, in a thread or a subprocess.

Tests talk to our servers through a socket, as Audian and the pipeline do, so headers, body
streaming and status codes are exercised end to end rather than through a test client.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator

import requests
import uvicorn


def free_port() -> int:
    """A port free right now, for a server started in another process (a small race remains)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds; always reaped."""
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace)


def wait_until_answers(url: str, timeout: float = 15.0, process: subprocess.Popen | None = None) -> None:
    """Poll `url` until it gives any HTTP answer: the server is then accepting requests.

    With `process`, give up at once if that server process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server process exited with {process.returncode} before answering")
        try:
            requests.get(url, timeout=1)
            return
        except (requests.ConnectionError, requests.Timeout):  # Timeout: accepting, but still starting up
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answered at {url} within {timeout} s") from None
            time.sleep(0.05)


@contextlib.contextmanager
def serve_app(app, timeout: float = 15.0) -> Iterator[str]:
    """Serve `app` with uvicorn in a background thread; yields its base URL.

    The listening socket is bound here and handed to uvicorn, so there is no window in which
    another test could take the port. Signals stay with the main thread (uvicorn installs
    none outside it); the server is stopped through `should_exit` on leaving the block.
    """
    # IPPROTO_TCP for TCP_NODELAY, see emulator.server.bind
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base_url = f"http://{host}:{port}"
    try:
        _wait_started(server, thread, timeout)
        wait_until_answers(base_url + "/", timeout)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def _wait_started(server: uvicorn.Server, thread: threading.Thread, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn stopped before it started; see the log above")
        if time.monotonic() > deadline:
            raise TimeoutError(f"uvicorn did not start within {timeout} s")
        time.sleep(0.02)


@contextlib.contextmanager
def serve_subprocess(code: str, port: int, env: dict[str, str] | None = None,
                     timeout: float = 30.0, quiet: bool = False) -> Iterator[subprocess.Popen]:
    """Run `python -c code` (a server that listens on `port`) and wait until it answers.

    For what a thread cannot show: a crash (the test may SIGKILL `process.pid`) or a server
    measured without the test's own threads competing for its GIL. The process is killed on
    leaving the block if it is still running. Its output goes to ours unless `quiet`.
    """
    output = subprocess.DEVNULL if quiet else None
    process = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, **(env or {})}, stdout=output, stderr=output
    )
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/", timeout, process)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout)
