"""Fault injection for the emulator: each fault a rate, each decision deterministic from the seed.

A decision depends on (seed, fault, request key, how many times that key was asked), never on
arrival order, so a concurrent client meets the same faults on every run. A key never fails
more than `max_consecutive` times in a row, so a client that retries as it should always
gets through, which is what lets a faulty run be compared with a clean one.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass, fields

from audian_pipeline.emulator.account import stable_hash

FAULT_NAMES = ("server_error", "rate_limited", "drift", "cut", "corrupt", "webhook_duplicate", "forbidden",
               "malformed")
MALFORMED_KINDS = ("invalid_json", "missing_field", "wrong_type", "unknown_status")


@dataclass(frozen=True)
class FaultConfig:
    """Rates in [0, 1]; `latency_ms` is added to every API answer."""

    server_error: float = 0.0
    rate_limited: float = 0.0
    latency_ms: int = 0
    drift: float = 0.0
    cut: float = 0.0
    corrupt: float = 0.0
    webhook_duplicate: float = 0.0
    forbidden: float = 0.0
    """The storage host answers 403 to a valid signed URL, as to an expired one."""
    malformed: float = 0.0
    """A 200 answer whose body breaks the contract (see MALFORMED_KINDS); not retryable."""
    malformed_kind: str | None = None
    """Always this kind of malformed answer; None picks one per request from the seed."""
    retry_after_seconds: int = 1
    max_consecutive: int = 2
    outage_requests: int = 0
    """A short outage: the next N API requests answer 503, whatever they ask, so that a client
    with fewer retries than N gives up, as one unlucky request does against a real Audian."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in FAULT_NAMES and not 0.0 <= value <= 1.0:
                raise ValueError(f"fault rate {f.name} must be between 0 and 1 (got {value})")
        if self.malformed_kind not in (None, *MALFORMED_KINDS):
            raise ValueError(f"malformed_kind must be one of {', '.join(MALFORMED_KINDS)}")

    @classmethod
    def everything(cls, rate: float = 0.1) -> "FaultConfig":
        """Every fault on at once, as the end-to-end fault test runs them."""
        return cls(
            server_error=rate,
            rate_limited=rate,
            latency_ms=2,
            drift=rate,
            cut=rate,
            corrupt=rate / 2,
            webhook_duplicate=rate * 2,
        )

    def to_dict(self) -> dict:
        return asdict(self)


class Faults:
    """Decides faults and counts the ones injected (`GET /_emulator/faults`)."""

    def __init__(self, config: FaultConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.injected: Counter[str] = Counter()
        self._attempts: Counter[tuple[str, str]] = Counter()
        self._streak: Counter[tuple[str, str]] = Counter()
        self._outage_left = config.outage_requests
        self._lock = threading.Lock()

    def _roll(self, fault: str, key: str, attempt: int) -> float:
        return (stable_hash(self.seed, fault, key, attempt) % 1_000_000) / 1_000_000

    def should(self, fault: str, key: str) -> bool:
        """True if this request (identified by `key`) gets `fault` now; counts it."""
        rate = getattr(self.config, fault)
        if rate <= 0:
            return False
        with self._lock:
            attempt = self._attempts[(fault, key)]
            self._attempts[(fault, key)] += 1
            hit = self._roll(fault, key, attempt) < rate and self._streak[(fault, key)] < self.config.max_consecutive
            self._streak[(fault, key)] = self._streak[(fault, key)] + 1 if hit else 0
            if hit:
                self.injected[fault] += 1
            return hit

    def in_outage(self) -> bool:
        """True for each of the `outage_requests` requests after the config was set; counts it."""
        with self._lock:
            if self._outage_left <= 0:
                return False
            self._outage_left -= 1
            self.injected["outage"] += 1
            return True

    def is_corrupted(self, recording_id: str) -> bool:
        """Corruption is a property of the stored file: the same recording is always corrupt."""
        return self.config.corrupt > 0 and self._roll("corrupt", recording_id, 0) < self.config.corrupt

    def count(self, fault: str, n: int = 1) -> None:
        with self._lock:
            self.injected[fault] += n

    def replace(self, config: FaultConfig) -> None:
        """Change the rates at run time (`POST /_emulator/faults`); counts are kept."""
        with self._lock:
            self.config = config
            self._outage_left = config.outage_requests

    def snapshot(self) -> dict:
        with self._lock:
            return {"config": self.config.to_dict(), "injected": dict(self.injected)}
