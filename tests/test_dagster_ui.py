"""`dagster dev -w workspace.yaml` serves everything, and headless Chromium renders it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
import websockets

from audian_pipeline.lake.parquet import read_rows
from audian_pipeline.lake.paths import events_db
from audian_pipeline.lake.tables import RECORDING_AUDIO, RECORDING_EVENTS
from audian_pipeline.settings import DEMO_API_KEY
from audian_pipeline.warehouse.charts import WIDTH
from audian_pipeline.warehouse.reports import REPORTS
from audian_pipeline.webhooks.store import EventStore

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


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    answer = requests.post(url + "/graphql", json={"query": query, "variables": variables or {}}, timeout=30)
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


# ---- `make dev`: the launcher wires the emulator, the receiver and the UI -----------------

BACKFILL = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
  ... on PartitionKeysNotFoundError { message } ... on UnauthorizedError { message } } }"""
BACKFILL_STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status runIds: runs(limit: 10) { runId status } } ... on PythonError { message } } }"""
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def _launcher_api_url(log: Path, process: subprocess.Popen, timeout: float = 60) -> str:
    """The emulator's address, from the launcher's first line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"emulator: API (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"the launcher printed no emulator address:\n{log.read_text(errors='replace')[-3000:]}")


def _completed_recordings(api_url: str, days: set[str]) -> set[str]:
    ids, offset = set(), 0
    while True:
        page = requests.get(f"{api_url}/v2/recordings", params={"limit": 200, "offset": offset},
                            headers={"X-Auth-Token": DEMO_API_KEY}, timeout=30).json()
        ids |= {r["recording_id"] for r in page["data"] if r["status"] == "completed" and r["created_at"][:10] in days}
        if not page["pagination"]["has_more"]:
            return ids
        offset += page["pagination"]["limit"]


def _wait_for_checksums(data_dir: Path, wanted: set[str], timeout: float = 120) -> None:
    """The webhooks of these recordings reached the receiver: the backfill can verify them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events_db(data_dir).exists():
            with EventStore(events_db(data_dir)) as store:
                if wanted <= {e.recording_id for e in store.events_after(0, "recording.completed")}:
                    return
        time.sleep(0.5)
    pytest.fail("the emulator's recording.completed webhooks did not reach the launcher's receiver")


def _wait_for_backfill(url: str, backfill_id: str, timeout: float = 420) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backfill = _graphql(url, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if backfill.get("status") in BACKFILL_DONE:
            return backfill
        time.sleep(2)
    pytest.fail(f"backfill {backfill_id} did not finish within {timeout} s")


@pytest.mark.slow
def test_make_dev_wires_a_ui_backfill_that_archives_audio_and_stops_on_ctrl_c(tmp_path):
    """`audian-pipeline dev` (what `make dev` runs): a backfill launched through the UI's GraphQL
    API archives verified audio and brings the receiver's events into the lake; Ctrl-C stops
    the UI, the emulator and the receiver."""
    home, data_dir = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIAN_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(home), AUDIAN_DATA_DIR=str(data_dir))
    port, log_path = free_port(), tmp_path / "dev.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        command = [str(Path(sys.executable).with_name("audian-pipeline")), "dev", "--port", str(port)]
        launcher = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    try:
        api_url = _launcher_api_url(log_path, launcher)
        try:
            wait_until_answers(url + "/server_info", 180, launcher)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"the launcher's UI did not come up ({exc}):\n{log_path.read_text(errors='replace')[-3000:]}")
        today = datetime.now(timezone.utc).date()
        days = [(today - timedelta(days=n)).isoformat() for n in (3, 2, 1)]
        _wait_for_checksums(data_dir, _completed_recordings(api_url, set(days)))

        launched = _graphql(url, BACKFILL, {"params": {
            "partitionNames": days,
            "assetSelection": [{"path": [name]} for name in ("recordings", "recording_audio", "recording_events")],
        }})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill = _wait_for_backfill(url, launched["backfillId"])

        assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (backfill, log_path.read_text()[-3000:])
        assert len(backfill["runIds"]) == 1, "a single-run backfill"
        manifest = [row for day in days for row in read_rows(data_dir, RECORDING_AUDIO, date.fromisoformat(day))]
        outcomes = Counter(row["outcome"] for row in manifest)
        assert outcomes["verified"] > 0 and outcomes["no_checksum_yet"] == 0, outcomes
        assert len(list((data_dir / "audio").rglob("*.*"))) >= outcomes["verified"]
        assert sum(len(read_rows(data_dir, RECORDING_EVENTS, date.fromisoformat(day))) for day in days) > 0
        assert json.loads((data_dir / "account.json").read_text())["kind"] == "emulator"
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in make dev's terminal sends
        try:
            code = launcher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            raise
    assert code == 0, log_path.read_text(errors="replace")[-3000:]
    for stopped in (url + "/server_info", api_url + "/_emulator/account"):
        with pytest.raises(requests.ConnectionError):
            requests.get(stopped, timeout=5)


# -- each report's chart, as a person opens it in the UI -----------------------------------

SHOW_CHART = """(() => {
  const row = [...document.querySelectorAll('tr')]
    .find(r => r.cells.length && r.cells[0].innerText.trim() === 'chart');
  const link = row && [...row.querySelectorAll('*')]
    .find(e => e.children.length === 0 && e.textContent === '[Show Markdown]');
  if (link) { link.click(); }
  return Boolean(link);
})()"""
CHART_IMAGE = """(() => {
  const img = [...document.querySelectorAll('img')].find(i => i.src.startsWith('data:image/png;base64,'));
  const box = img && img.getBoundingClientRect();
  return img && img.complete && img.naturalWidth ?
    {width: img.naturalWidth, shown: box.width, right: box.right, viewport: window.innerWidth, alt: img.alt} : null;
})()"""


class DevTools:
    """Just enough of the Chrome DevTools Protocol to open a page, click and take a screenshot:
    the chart sits behind the metadata table's "[Show Markdown]", which --screenshot cannot click."""

    def __init__(self, socket) -> None:
        self.socket, self.last_id = socket, 0

    async def call(self, method: str, **params) -> dict:
        self.last_id += 1
        await self.socket.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:  # events arrive between answers; the caller's wait_for bounds this
            message = json.loads(await self.socket.recv())
            if message.get("id") == self.last_id:
                return message.get("result", {})

    async def evaluate(self, expression: str):
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return answer.get("result", {}).get("value")

    async def until(self, expression: str, seconds: float = 60):
        for _ in range(int(seconds * 4)):
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.25)
        raise AssertionError(f"the page never satisfied: {expression[:80]}")


def _devtools_page(chromium: subprocess.Popen) -> str:
    """The websocket of a new tab, from the address Chromium prints when it starts."""
    assert chromium.stderr is not None
    for line in chromium.stderr:
        found = re.search(r"DevTools listening on ws://([^/]+)/", line)
        if found:
            page = requests.put(f"http://{found.group(1)}/json/new?about:blank", timeout=30).json()
            return page["webSocketDebuggerUrl"]
    raise AssertionError("chromium exited without a DevTools address")


async def _screenshot_chart(socket_url: str, page_url: str, target: Path) -> dict:
    async with websockets.connect(socket_url, max_size=64 * 1024 * 1024) as socket:
        tools = DevTools(socket)
        await tools.call("Emulation.setDeviceMetricsOverride", width=1600, height=1000, deviceScaleFactor=1,
                         mobile=False)
        await tools.call("Page.navigate", url=page_url)
        await tools.until("document.body && document.body.innerText.includes('[Show Markdown]')")
        assert await tools.until(SHOW_CHART, 10), "no chart row in the metadata table"
        image = await tools.until(CHART_IMAGE, 30)
        await asyncio.sleep(1)  # the dialog's opening transition
        shot = await tools.call("Page.captureScreenshot", format="png")
        target.write_bytes(base64.b64decode(shot["data"]))
        return image


@pytest.mark.slow
def test_each_report_page_shows_its_chart(dagster_webserver, tmp_path):
    """Each report asset's page in headless Chromium with its chart opened from the metadata
    table: the data: PNG survives the UI's markdown sanitiser and is drawn. The screenshots are
    kept in git as tests/artifacts/chart_report_<name>.png, to be looked at."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (make test installs it as root with apt-get)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    flags = [f for f in CHROMIUM_FLAGS if not f.startswith("--virtual-time-budget")]
    chromium = subprocess.Popen(
        [CHROMIUM, *flags, "--remote-debugging-port=0", f"--user-data-dir={tmp_path}", "about:blank"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        socket_url = _devtools_page(chromium)
        for view in REPORTS.values():
            page, target = f"{dagster_webserver}/assets/{view}", ARTIFACTS / f"chart_{view}.png"
            image = asyncio.run(asyncio.wait_for(_screenshot_chart(socket_url, page, target), 120))
            assert image["alt"] == f"chart of {view}" and image["width"] >= WIDTH, image
            assert 0.8 * image["width"] <= image["shown"] <= image["width"], image  # readable, not an icon
            assert image["right"] <= image["viewport"], image  # whole: the legend is not cut off
    finally:
        chromium.terminate()
        chromium.wait(timeout=30)
