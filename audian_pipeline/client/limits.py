"""AUDIAN_API_MAX_CONCURRENCY: the most requests in flight to Audian (its API and its storage host)
from every thread of every worker together, and one pause for all after a 429.

Dagster's pools cap concurrent steps, not requests: each step fans out to many threads, so two
workers running two steps each could have dozens of calls open. With a Celery broker configured,
the slots live in Redis (the broker's), shared by every worker; otherwise in this process.

A 429 with Retry-After anywhere pauses everyone: the client that got it records the pause
before it sleeps, and every request waits it out before taking a slot, rather than each thread
and worker finding the limit again by itself.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from typing import Iterator

import redis

DEFAULT_MAX_CONCURRENCY = 16
"""As many as one step's detail calls (AudianResource.detail_concurrency), so a single process
runs as fast as before, while several workers together stay under one account's limit."""

LEASE_SECONDS = 300
"""A slot held by a process that died frees itself after this long (a request never takes as long)."""

_WAIT = (0.005, 0.03)
"""Seconds between tries for a slot, drawn at random so waiting threads do not move in step."""


class RequestLimiter:
    """In-process: one semaphore for every thread of this process."""

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._paused_until = 0.0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Held for one request, its retries and its body read to the end."""
        self._wait_out_pause()
        with self._slots:
            yield

    def pause(self, seconds: float) -> None:
        """Audian said 429 with Retry-After: nobody starts a request for `seconds`."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def paused_for(self) -> float:
        with self._lock:
            return max(0.0, self._paused_until - time.monotonic())

    def _wait_out_pause(self) -> None:
        while (left := self.paused_for()) > 0:
            time.sleep(left)

    def close(self) -> None:
        """Nothing held outside this process."""


_ACQUIRE = """
local pause = redis.call('PTTL', KEYS[2])
if pause > 0 then return -pause end
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - ARGV[2])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now_ms, ARGV[3])
  return 1
end
return 0
"""
"""Take a slot if one is free, in one step on the server (and by the server's clock, so
machines whose clocks differ agree on leases): 1 taken, 0 all busy, -N paused N ms more."""


class RedisRequestLimiter(RequestLimiter):
    """The same limit shared through Redis by every worker: a sorted set of slot holders.

    Each holder is a random token scored by when it took the slot; a holder killed mid-request
    never gives its slot back, so slots older than `LEASE_SECONDS` are swept on each try.
    """

    def __init__(self, max_in_flight: int, redis_url: str, key: str = "audian:api") -> None:
        super().__init__(max_in_flight)
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=10)
        self._holders, self._pause_key = f"{key}:in_flight", f"{key}:paused"
        self._acquire = self._redis.register_script(_ACQUIRE)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        token = uuid.uuid4().hex
        while True:
            taken = int(self._acquire(keys=[self._holders, self._pause_key],
                                      args=[self.max_in_flight, LEASE_SECONDS * 1000, token]))
            if taken == 1:
                break
            time.sleep(-taken / 1000 if taken < 0 else random.uniform(*_WAIT))
        try:
            yield
        finally:
            self._redis.zrem(self._holders, token)

    def pause(self, seconds: float) -> None:
        milliseconds = max(1, int(seconds * 1000))
        if self._redis.pttl(self._pause_key) < milliseconds:
            self._redis.set(self._pause_key, b"429", px=milliseconds)

    def paused_for(self) -> float:
        return max(0, int(self._redis.pttl(self._pause_key))) / 1000

    def close(self) -> None:
        self._redis.close()
