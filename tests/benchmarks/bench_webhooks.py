"""How many signed webhook deliveries per second the receiver acknowledges, and how fast.

Run: `.venv/bin/python tests/benchmarks/bench_webhooks.py [--events 2000] [--senders 1,4,16]`.
The receiver runs in its own process through `serve` (as deployed: uvicorn, access log on,
SQLite with WAL and synchronous=FULL, one fsync per event), on a fresh data directory per
sender count. Latency is from sending a request to reading its 2xx, i.e. what Audian waits
for an acknowledgement. The senders share this process, so at high counts the client's GIL
may be part of what is measured.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servers import free_port, serve_subprocess  # noqa: E402

SECRET = "whsec_" + base64.b64encode(b"benchmark-secret-0123456789abcd!").decode()
SERVE = (
    "import sys; from pathlib import Path; from audian_pipeline.lake.paths import events_db; "
    "from audian_pipeline.webhooks.receiver import serve; "
    "serve('127.0.0.1', int(sys.argv[1]), str(events_db(Path(sys.argv[2]))), sys.argv[3])"
)


def sign(msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def completed_event(n: int) -> bytes:
    """A realistic recording.completed body (~450 bytes), the largest of Audian's events."""
    rec = f"rec_{n:08d}"
    return json.dumps({"event": "recording.completed", "data": {
        "call_id": f"call_{n:08d}", "recording_id": rec, "duration": 305, "file_size": 1536000,
        "file_format": "mp3", "completed_at": "2024-01-15T10:36:00Z",
        "download_url": f"https://api.audian.com:8443/v2/recordings/{rec}/download",
        "checksum": {"algorithm": "sha256", "value": hashlib.sha256(rec.encode()).hexdigest()},
    }}).encode()


def send_share(url: str, numbers: range, latencies: list[float], failures: list[int]) -> None:
    with requests.Session() as session:
        for n in numbers:
            body, msg_id, ts = completed_event(n), f"msg_{n:08d}", int(time.time())
            headers = {
                "webhook-id": msg_id, "webhook-timestamp": str(ts),
                "webhook-signature": sign(msg_id, ts, body), "content-type": "application/json",
            }
            start = time.perf_counter()
            answer = session.post(url, data=body, headers=headers, timeout=30)
            elapsed = time.perf_counter() - start
            if 200 <= answer.status_code < 300:
                latencies.append(elapsed)
            else:
                failures.append(answer.status_code)


def run(senders: int, events: int) -> dict[str, float]:
    """One measurement on a fresh receiver process and data directory."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench_webhooks_") as data_dir:
        code = f"import sys; sys.argv = ['s', '{port}', {data_dir!r}, {SECRET!r}]; " + SERVE
        with serve_subprocess(code, port, quiet=True):
            latencies: list[float] = []
            failures: list[int] = []
            shares = [range(i, events, senders) for i in range(senders)]
            url = f"http://127.0.0.1:{port}/webhooks/audian"
            threads = [
                threading.Thread(target=send_share, args=(url, share, latencies, failures))
                for share in shares
            ]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - start
            stored = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()["events"]
    latencies.sort()
    return {
        "senders": senders, "accepted": len(latencies), "failed": len(failures), "stored": stored,
        "per_second": len(latencies) / wall,
        "median_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="deliveries per sender count")
    parser.add_argument("--senders", default="1,4,16", help="comma-separated concurrent sender counts")
    args = parser.parse_args()
    print(f"{'senders':>7} {'accepted':>8} {'failed':>6} {'stored':>6} {'events/s':>9} "
          f"{'median ms':>9} {'p99 ms':>7}")
    for senders in (int(k) for k in args.senders.split(",")):
        r = run(senders, args.events)
        print(f"{r['senders']:>7} {r['accepted']:>8} {r['failed']:>6} {r['stored']:>6} "
              f"{r['per_second']:>9.0f} {r['median_ms']:>9.2f} {r['p99_ms']:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
