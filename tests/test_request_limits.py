"""AUDIAN_API_MAX_CONCURRENCY: requests in flight to Audian, counted by the emulator itself, stay
under the limit across threads and processes sharing a real Redis; a 429 pauses them all."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from audian_pipeline.client.client import AudianClient
from audian_pipeline.client.limits import RedisRequestLimiter, RequestLimiter
from audian_pipeline.emulator.faults import FaultConfig
from audian_pipeline.settings import DEMO_API_KEY

SLOW = FaultConfig(latency_ms=40)
"""Every answer takes 40 ms, so requests sent together are in flight together."""

_HAMMER = """
import sys
from concurrent.futures import ThreadPoolExecutor
from audian_pipeline.client.client import AudianClient
from audian_pipeline.client.limits import RedisRequestLimiter
api_url, redis_url, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
with AudianClient(api_url, "%s", limiter=RedisRequestLimiter(limit, redis_url)) as client:
    ids = [r.recording_id for r in client.list_page(limit=200).items]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(client.get_recording, ids * 3))
""" % DEMO_API_KEY


def max_in_flight(emu) -> int:
    return requests.get(emu.api_url + "/_emulator/state", timeout=10).json()["max_in_flight"]


def details(client: AudianClient, threads: int = 16) -> None:
    ids = [r.recording_id for r in client.list_page(limit=200).items]
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(client.get_recording, ids))


def test_the_emulator_sees_every_thread_without_a_limit_and_at_most_the_limit_with_one(fresh_emulator):
    emu = fresh_emulator(seed=3, days=2, per_day=20, faults=SLOW, webhook_url=None)
    with AudianClient(emu.api_url, DEMO_API_KEY) as unlimited:
        details(unlimited)
    assert max_in_flight(emu) > 4, "the emulator must count concurrent requests for the limit to mean anything"
    emu = fresh_emulator(seed=3, days=2, per_day=20, faults=SLOW, webhook_url=None)
    with AudianClient(emu.api_url, DEMO_API_KEY, limiter=RequestLimiter(4)) as limited:
        details(limited)
    assert max_in_flight(emu) == 4


def test_two_worker_processes_sharing_redis_stay_under_the_limit_together(fresh_emulator, redis_url):
    """Each process alone would stay under 4 with a limiter of its own; only a shared one holds for both."""
    emu = fresh_emulator(seed=3, days=2, per_day=20, faults=SLOW, webhook_url=None)
    workers = [subprocess.Popen([sys.executable, "-c", _HAMMER, emu.api_url, redis_url, "4"]) for _ in range(2)]
    assert [worker.wait(300) for worker in workers] == [0, 0]
    assert 2 <= max_in_flight(emu) <= 4


def test_a_429_in_one_worker_pauses_the_others(fresh_emulator, redis_url):
    emu = fresh_emulator(seed=3, days=1, per_day=2, webhook_url=None,
                         faults=FaultConfig(rate_limited=1.0, max_consecutive=1, retry_after_seconds=2))
    one, other = RedisRequestLimiter(4, redis_url), RedisRequestLimiter(4, redis_url)
    with AudianClient(emu.api_url, DEMO_API_KEY, limiter=one) as client, ThreadPoolExecutor(1) as pool:
        answered = pool.submit(client.list_page)  # 429 Retry-After: 2, then answered
        paused = 0.0
        for _ in range(400):  # until the other worker sees the pause, or the request is over
            paused = other.paused_for()
            if paused or answered.done():
                break
            time.sleep(0.01)
        answered.result()
    assert 0 < paused <= 2, "another worker must wait out the Retry-After too"
    assert client.stats["retries"] == 1
    other.close()
