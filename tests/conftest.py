"""Shared fixtures: a real emulator on 127.0.0.1, a clean data directory, a client."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from audian_pipeline.client.client import AudianClient
from audian_pipeline.emulator.server import RunningEmulator, start_emulator
from audian_pipeline.settings import DEMO_API_KEY

from dbservers import postgres_server, postgres_url, production, redis_server, redis_url  # noqa: F401
from s3server import s3_env, s3_server  # noqa: F401  (shared fixtures)

CLOCK = datetime(2026, 11, 20, 15, 30, 0, tzinfo=timezone.utc)
"""Tests freeze the emulator's clock here, so the same seed gives the same account."""


@pytest.fixture(scope="session")
def audio_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("emulator-audio")


@pytest.fixture(scope="session")
def emulator(audio_cache_dir) -> RunningEmulator:
    """A small account shared by read-only tests: 35 days of 12 recordings."""
    with start_emulator(seed=11, days=35, per_day=12, clock=CLOCK, cache_dir=audio_cache_dir) as running:
        yield running


@pytest.fixture
def fresh_emulator(audio_cache_dir):
    """A factory of private emulators, for tests that change state or turn faults on."""
    started: list[RunningEmulator] = []

    def make(**options) -> RunningEmulator:
        options.setdefault("clock", CLOCK)
        options.setdefault("cache_dir", audio_cache_dir)
        running = start_emulator(**options)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


@pytest.fixture
def client(emulator) -> AudianClient:
    with AudianClient(emulator.api_url, DEMO_API_KEY, backoff=0.01) as c:
        yield c


@pytest.fixture
def data_dir(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path
