"""`dagster dev -w workspace.yaml` serves everything, and headless Chromium renders it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from servers import free_port, wait_until_answers

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1600,1000", "--virtual-time-budget=20000"]

LOCATION_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


@pytest.fixture(scope="module")
def dagster_webserver(tmp_path_factory, emulator):
    """`dagster dev` over an instance in which `audian-pipeline run` has already materialised
    two days, so the report page has a materialisation (table and chart) to show."""
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "AUDIAN_DATA_DIR": str(home / "data"),
           "AUDIAN_API_URL": emulator.api_url}
    today = emulator.account.now().date()
    subprocess.run([str(Path(sys.executable).with_name("audian-pipeline")), "run", "--start",
                    (today - timedelta(days=2)).isoformat(), "--end", (today - timedelta(days=1)).isoformat()],
                   cwd=home, env=env, check=True, capture_output=True, timeout=300)
    dagster = Path(sys.executable).with_name("dagster")
    log = open(home / "dagster-dev.log", "wb")  # a file, not a pipe nobody reads while it runs
    proc = subprocess.Popen([str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_answers(url + "/server_info", 120, proc)
        except (RuntimeError, TimeoutError) as exc:
            tail = (home / "dagster-dev.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"dagster dev did not come up ({exc}):\n{tail}")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _graphql(url: str, query: str) -> dict:
    answer = requests.post(url + "/graphql", json={"query": query}, timeout=30)
    answer.raise_for_status()
    return answer.json()["data"]


def _render(url: str, name: str) -> str:
    """Screenshot the page into tests/artifacts/ and return its rendered DOM."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (make test installs it as root with apt-get); "
                    "the UI is not rendered on this machine")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    profile = ARTIFACTS / f".profile-{name}"
    common = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    subprocess.run([*common, f"--screenshot={ARTIFACTS / (name + '.png')}", url],
                   capture_output=True, timeout=120, check=True)
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, timeout=120, check=True)
    shutil.rmtree(profile, ignore_errors=True)
    return dom.stdout.decode(errors="replace")


CLI_BACKFILL = ["asset", "materialize", "-m", "audian_pipeline.definitions", "--select", "recordings",
                "--partition-range"]


@pytest.mark.slow
def test_a_backfill_range_from_the_dagster_cli_runs_once(emulator, tmp_path):
    """`dagster asset materialize --partition-range` backfills a range in one run (single_run policy)."""
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "AUDIAN_DATA_DIR": str(tmp_path / "data"),
           "AUDIAN_API_URL": emulator.api_url}
    today = emulator.account.now().date()
    first, last = today - timedelta(days=4), today - timedelta(days=1)
    done = subprocess.run([str(Path(sys.executable).with_name("dagster")), *CLI_BACKFILL, f"{first}...{last}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("RUN_SUCCESS") == 1
    partitions = sorted(p.name for p in (tmp_path / "data" / "lake" / "recordings").iterdir())
    assert partitions == [f"date={first + timedelta(days=n)}" for n in range(4)]


@pytest.mark.slow
def test_the_code_location_loads_without_errors(dagster_webserver):
    data = _graphql(dagster_webserver, LOCATION_QUERY)
    entries = data["workspaceOrError"]["locationEntries"]
    assert [e["name"] for e in entries] == ["audian_pipeline"]
    assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation", entries[0]


@pytest.mark.slow
def test_chromium_renders_the_asset_graph_and_a_report_asset(dagster_webserver):
    graph = _render(dagster_webserver + "/asset-groups", "asset_graph")
    assert all(group in graph for group in (">lake<", ">warehouse<", ">reports<"))
    report = _render(dagster_webserver + "/assets/report_durations", "report_durations")
    assert "report_durations" in report and "Never materialized" not in report
    for dom in (graph, report):
        assert "Something went wrong" not in dom and "PythonError" not in dom
        assert "No assets were found" not in dom and "Join the Dagster community" not in dom
    assert (ARTIFACTS / "asset_graph.png").stat().st_size > 10_000
