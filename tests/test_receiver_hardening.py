"""The webhook receiver against idle connections, partial requests and hostile bodies.

Each test runs the real `audian-pipeline webhooks` command in a subprocess on 127.0.0.1 and
reads its log, so the limits are the ones the command builds and the log is what an operator
sees. Requests are signed with the helpers of test_webhooks_receiver.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import requests

from audian_pipeline.webhooks.server import REQUEST_RECEIPT_SECONDS

from servers import free_port, stop_process, wait_until_answers
from test_webhooks_receiver import PATH, SECRET, event_body, headers

COMMAND = Path(sys.executable).with_name("audian-pipeline")
CLOSE_BOUND = REQUEST_RECEIPT_SECONDS * 3
"""How long a test waits for the server to drop a stalled connection before failing."""


@contextlib.contextmanager
def receiver(tmp_path: Path, max_open_files: int | None = None) -> Iterator[tuple[str, Path]]:
    """`audian-pipeline webhooks` on a free port; yields its URL and the file its log goes to.

    `max_open_files` lowers the process's descriptor limit, so a few hundred connections
    exhaust it as ~20,000 exhaust a default one."""
    port, log_path = free_port(), tmp_path / "receiver.log"
    env = {**os.environ, "AUDIAN_DATA_DIR": str(tmp_path / "data"), "AUDIAN_WEBHOOK_SECRET": SECRET}

    def limit_files() -> None:
        if max_open_files is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, hard))

    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(COMMAND), "webhooks", "--port", str(port)], env=env,
                                   stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit_files)
        try:
            wait_until_answers(f"http://127.0.0.1:{port}/healthz", process=process)
            yield f"http://127.0.0.1:{port}", log_path
        finally:
            stop_process(process)


def _connect(base_url: str, sent: bytes = b"") -> socket.socket:
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=CLOSE_BOUND)
    sock.sendall(sent)
    return sock


def _signed_request_head(msg_id: str, body: bytes) -> bytes:
    lines = [f"POST {PATH} HTTP/1.1", "host: 127.0.0.1", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers(body, msg_id=msg_id).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _partial_requests(base_url: str) -> dict[str, socket.socket]:
    """One connection stalled at each stage of a request: nothing sent, half the headers,
    the headers and part of the body (shorter than its Content-Length)."""
    body = event_body("recording.started", "rec_slow")
    return {
        "nothing sent": _connect(base_url),
        "half the headers": _connect(base_url, f"POST {PATH} HTTP/1.1\r\nhost: x\r\n".encode()),
        "part of the body": _connect(base_url, _signed_request_head("msg_slow", body) + body[:10]),
    }


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed the connection; False if it was still open at CLOSE_BOUND."""
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _deliver_like_audian(base_url: str, msg_id: str, attempts: int = 6) -> int | None:
    """Deliver one signed event, retrying with back-off as Audian does (last try ~15 s after
    the first); the final status, None if no attempt got an answer."""
    body = event_body("recording.started", f"rec_{msg_id}")
    status = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(0.5 * 2 ** (attempt - 1))
        try:
            status = requests.post(base_url + PATH, data=body, headers=headers(body, msg_id=msg_id),
                                   timeout=5).status_code
        except requests.RequestException:
            continue
        if status < 500:
            break
    return status


def _log_lines(log_path: Path, marker: str, bound: float = 15.0) -> list[str]:
    """The log's lines once `marker` (or a traceback) has appeared in it, waiting at most `bound`."""
    deadline = time.monotonic() + bound
    while True:
        text = log_path.read_text(errors="replace")
        if marker in text or "Traceback" in text or time.monotonic() > deadline:
            return text.splitlines()
        time.sleep(0.1)


def test_stalled_connections_are_cut_off_and_deliveries_get_through(tmp_path: Path):
    """Idle connections past the descriptor limit once lost every delivery for as long as
    they were held; now each is closed within the receipt deadline and Audian's retries land."""
    with receiver(tmp_path, max_open_files=128) as (base_url, _):
        stalled = _partial_requests(base_url)
        idle = [_connect(base_url) for _ in range(200)]
        try:
            for n in range(15):
                assert _deliver_like_audian(base_url, f"msg_flood_{n}") == 200
            still_open = [kind for kind, sock in stalled.items() if not _closed_by_server(sock)]
            assert still_open == []
            assert all(_closed_by_server(sock) for sock in idle)
        finally:
            for sock in [*stalled.values(), *idle]:
                sock.close()
        assert requests.get(base_url + "/healthz", timeout=5).json()["events"] == 15


def test_a_deeply_nested_signed_body_gets_400_and_one_log_line(tmp_path: Path):
    body = b"[" * 100_000 + b"]" * 100_000
    with receiver(tmp_path) as (base_url, log_path):
        answer = requests.post(base_url + PATH, data=body, headers=headers(body, msg_id="msg_deep"),
                               timeout=10)
        assert answer.status_code == 400
        assert answer.json()["error"] == "bad_body"
        lines = _log_lines(log_path, "msg_deep")
    assert "Traceback" not in "\n".join(lines)
    [line] = [line for line in lines if "msg_deep" in line]
    assert "status=400" in line and "nested too deeply" in line


def test_a_client_leaving_mid_body_logs_one_line_and_no_traceback(tmp_path: Path):
    body = event_body("recording.started", "rec_cut")
    with receiver(tmp_path) as (base_url, log_path):
        with _connect(base_url, _signed_request_head("msg_cut", body) + body[:10]):
            pass
        lines = _log_lines(log_path, "msg_cut")
        assert requests.get(base_url + "/healthz", timeout=5).json()["events"] == 0
    assert "Traceback" not in "\n".join(lines)
    [line] = [line for line in lines if "msg_cut" in line]
    assert "ERROR" not in line
