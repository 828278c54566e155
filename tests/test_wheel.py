"""The package as someone deploys it: a wheel built from the checkout, installed in a fresh
virtualenv outside it, loads its definitions and runs a day against the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest

from audian_pipeline.settings import DEMO_API_KEY

CHECKOUT = Path(__file__).resolve().parents[1]


def _run(*args: str | Path, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """The venv's bin folder, with the wheel and its [emulator] extra installed."""
    root = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", root / "dist", CHECKOUT, cwd=root)
    (wheel,) = (root / "dist").glob("audian_pipeline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "audian_pipeline/sql/reports/report_durations.sql" in names
    assert not any(name.startswith(("tests/", "sql/")) for name in names)
    _run(sys.executable, "-m", "venv", root / "venv", cwd=root)
    bin_dir = root / "venv" / "bin"
    _run(bin_dir / "python", "-m", "pip", "install", "--quiet", f"{wheel}[emulator]", cwd=root)
    return bin_dir


def _env(bin_dir: Path, **extra: str) -> dict:
    """No trace of the checkout: not on PYTHONPATH, not the working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIAN_", "DAGSTER_", "PYTHON"))}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", **extra}


@pytest.mark.slow
def test_the_installed_wheel_loads_and_runs_a_day(installed_wheel, emulator, tmp_path):
    bin_dir = installed_wheel
    where = _run(bin_dir / "python", "-c", "import audian_pipeline, sys; print(audian_pipeline.__file__)",
                 cwd=tmp_path, env=_env(bin_dir)).stdout
    assert str(CHECKOUT) not in where and "site-packages" in where
    _run(bin_dir / "dagster", "definitions", "validate", "-m", "audian_pipeline.definitions", cwd=tmp_path,
         env=_env(bin_dir, DAGSTER_HOME=str(tmp_path)))
    day = (emulator.account.now() - timedelta(days=1)).date().isoformat()
    data_dir = tmp_path / "data"
    _run(bin_dir / "audian-pipeline", "run", "--start", day, "--end", day, cwd=tmp_path,
         env=_env(bin_dir, AUDIAN_API_URL=emulator.api_url, AUDIAN_API_KEY=DEMO_API_KEY, AUDIAN_DATA_DIR=str(data_dir),
                  DAGSTER_HOME=str(tmp_path)))
    assert (data_dir / "warehouse.duckdb").is_file()
    assert list((data_dir / "lake" / "recordings").glob(f"date={day}/*.parquet"))
    report = _run(bin_dir / "audian-pipeline", "report", "durations", cwd=tmp_path,
                  env=_env(bin_dir, AUDIAN_DATA_DIR=str(data_dir))).stdout
    assert "report_durations" in report
