"""Every command fails in one line naming the cause and the fix, with no traceback (that is for
--debug, or the run's log file)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from audian_pipeline.settings import DEMO_API_KEY

from servers import free_port

CLI = [sys.executable, "-m", "audian_pipeline.cli"]


def _fails_in_one_line(args: list[str], tmp_path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIAN_", "DAGSTER_"))}
    done = subprocess.run([*CLI, *args], env={**clean, "AUDIAN_DATA_DIR": str(tmp_path / "data"), **env},
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["run", "--start", "2026-13-01", "--end", "2026-11-02"], "'2026-13-01' is not a day: use YYYY-MM-DD"),
    (["run", "--start", "2026-11-05", "--end", "2026-11-02"], "--end 2026-11-02 is before --start 2026-11-05"),
    (["run", "--start", "2020-11-05", "--end", "2020-11-06"], "AUDIAN_PARTITIONS_START"),
    (["run", "--start", "2026-11-05"], "the following arguments are required: --end"),
    (["emulator", "--clock", "yesterday"], "'yesterday' is not an instant"),
    (["report", "nonsense"], "unknown report 'nonsense'"),
])
def test_usage_errors(tmp_path, args, expected):
    assert expected in _fails_in_one_line(args, tmp_path)


@pytest.mark.parametrize("env, expected", [
    ({"AUDIAN_API_URL": "ftp://x"}, "AUDIAN_API_URL must be an http(s) base URL"),
    ({"AUDIAN_STORAGE_QUOTA_BYTES": "lots"}, "AUDIAN_STORAGE_QUOTA_BYTES must be a whole number"),
])
def test_bad_settings(tmp_path, env, expected):
    line = _fails_in_one_line(["run", "--start", "2026-11-05", "--end", "2026-11-05"], tmp_path, **env)
    assert expected in line


def test_a_port_in_use(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _fails_in_one_line(["webhooks", "--port", str(port)], tmp_path)
    assert f"127.0.0.1:{port}" in line and "--port" in line


def test_a_wrong_key(emulator, tmp_path):
    day = (emulator.account.now() - timedelta(days=1)).date().isoformat()
    line = _fails_in_one_line(["run", "--start", day, "--end", day], tmp_path,
                              AUDIAN_API_URL=emulator.api_url, AUDIAN_API_KEY="sk_not_the_key_1")
    assert "AUDIAN_API_KEY" in line and "sk_not_the_key_1" not in line and "full log:" in line


@pytest.mark.slow
def test_an_unreachable_api(tmp_path):
    line = _fails_in_one_line(["run", "--start", "2026-11-05", "--end", "2026-11-05"], tmp_path,
                              AUDIAN_API_URL=f"http://127.0.0.1:{free_port()}", AUDIAN_API_KEY=DEMO_API_KEY)
    assert "could not reach Audian" in line and "AUDIAN_API_URL" in line
