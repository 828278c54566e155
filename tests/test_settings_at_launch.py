"""Settings are read when a run or command starts, and only by what uses them: loading the code
location never fails on a bad value, and a variable set only where runs launch counts."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from audian_pipeline import definitions
from audian_pipeline.runner import run_range
from audian_pipeline.settings import DEMO_API_KEY

CHECKOUT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "audian_pipeline.cli"]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIAN_", "DAGSTER_"))}
    return {**env, **extra}


def test_a_bad_receiver_secret_leaves_the_code_location_loading(tmp_path):
    env = _env(AUDIAN_WEBHOOK_SECRET="bogus", DAGSTER_HOME=str(tmp_path))
    validate = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-m",
                               "audian_pipeline.definitions"], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
    assert validate.returncode == 0, validate.stderr[-2000:]
    receiver = subprocess.run([*CLI, "webhooks", "--port", "0"], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
    assert receiver.returncode == 2
    assert receiver.stderr.count("\n") == 1 and "AUDIAN_WEBHOOK_SECRET" in receiver.stderr, receiver.stderr


def test_a_bad_partitions_start_loads_and_fails_runs_naming_it(tmp_path):
    env = _env(AUDIAN_PARTITIONS_START="2026-13-45", DAGSTER_HOME=str(tmp_path), AUDIAN_DATA_DIR=str(tmp_path / "d"))
    validate = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-m",
                               "audian_pipeline.definitions"], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
    assert validate.returncode == 0, validate.stderr[-2000:]
    run = subprocess.run([*CLI, "run", "--start", "2026-11-01", "--end", "2026-11-01"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "AUDIAN_PARTITIONS_START" in run.stderr and "YYYY-MM-DD" in run.stderr


@pytest.mark.parametrize("value", ["lots", "0"])
def test_a_bad_speech_processes_fails_the_run_in_one_line_naming_it(tmp_path, value):
    env = _env(AUDIAN_SPEECH_PROCESSES=value, AUDIAN_API_URL="http://127.0.0.1:9", DAGSTER_HOME=str(tmp_path),
               AUDIAN_DATA_DIR=str(tmp_path / "d"))
    run = subprocess.run([*CLI, "run", "--start", "2026-11-01", "--end", "2026-11-01"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "AUDIAN_SPEECH_PROCESSES" in run.stderr, run.stderr
    assert "unset it for one per CPU" in run.stderr


def test_settings_set_only_at_launch_are_the_ones_used(emulator, tmp_path, monkeypatch):
    for name in ("AUDIAN_API_URL", "AUDIAN_API_KEY", "AUDIAN_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    defs = definitions.load()  # loaded before any of them is set, as a code server would
    monkeypatch.setenv("AUDIAN_API_URL", emulator.api_url)
    monkeypatch.setenv("AUDIAN_API_KEY", DEMO_API_KEY)
    monkeypatch.setenv("AUDIAN_DATA_DIR", str(tmp_path / "launched"))
    day = emulator.account.now().date() - timedelta(days=1)
    assert run_range(day, day, dagster_instance=dg.DagsterInstance.ephemeral()) == 0
    assert list((tmp_path / "launched" / "lake" / "recordings").glob("date=*/data.parquet"))
    assert "launched" not in repr(defs.resources)  # nothing was frozen into the definitions


def test_the_packaged_dg_config_matches_the_projects():
    """`dg` reads [tool.dg] at the project root; the loader reads the dg.toml shipped in the package."""
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["dg"]
    packaged = tomllib.loads((CHECKOUT / "audian_pipeline" / "dg.toml").read_text())
    assert packaged == project
