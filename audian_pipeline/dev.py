"""`audian-pipeline dev` (`make dev`): the emulator, the webhook receiver and the Dagster UI, wired.

The emulator serves the demo's account (the one AUDIAN_DATA_DIR already holds, if the demo made
it) and delivers its webhooks to the receiver, which stores them under AUDIAN_DATA_DIR; `dg dev`
runs with AUDIAN_API_URL pointing at the emulator, so a backfill launched from the UI lists,
downloads and verifies against it. The emulator and the receiver run in this process on free
ports (a hand-started emulator on the default ports does not get in the way); `dg dev` runs in
its own process group, so Ctrl-C or SIGTERM here stops it, its webserver, daemon and code
servers, then the emulator and the receiver.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from audian_pipeline.demo import start_receiver
from audian_pipeline.emulator.demo_account import demo_emulator_options
from audian_pipeline.emulator.server import RunningEmulator, start_emulator
from audian_pipeline.settings import SettingError, Settings

STOP_GRACE_SECONDS = 20
"""How long `dg dev` gets to stop its children after SIGINT before its process group is killed."""


def project_root(start: Path) -> Path:
    """The checkout `dg dev` runs in: the nearest directory with a pyproject.toml declaring [tool.dg]."""
    for directory in (start, *start.parents):
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file() and "[tool.dg" in pyproject.read_text(errors="replace"):
            return directory
    raise SettingError(
        f"audian-pipeline dev runs `dg dev` in the project's checkout, and {start} is not inside one: "
        "cd into the checkout, or run `dagster dev -m audian_pipeline.definitions` yourself."
    )


def dg_command(port: int) -> list[str]:
    dg = Path(sys.executable).with_name("dg")
    return [str(dg) if dg.exists() else shutil.which("dg") or "dg", "dev", "--host", "127.0.0.1", "--port", str(port)]


def dagster_env(emulator: RunningEmulator, settings: Settings, root: Path) -> dict[str, str]:
    """What runs launched from the UI read at launch: this emulator, this data dir, one key and secret."""
    return {
        **os.environ,
        "AUDIAN_API_URL": emulator.api_url,
        "AUDIAN_API_KEY": settings.api_key,
        "AUDIAN_WEBHOOK_SECRET": settings.webhook_secret,
        "AUDIAN_DATA_DIR": str(settings.data_dir),
        "DAGSTER_HOME": os.environ.get("DAGSTER_HOME") or str(root / "dagster_home"),
        "VIRTUAL_ENV": os.environ.get("VIRTUAL_ENV") or str(Path(sys.executable).parents[1]),
    }


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_dev(port: int, settings: Settings) -> int:
    """Returns `dg dev`'s exit code, or 0 once stopped by Ctrl-C or SIGTERM."""
    root = project_root(Path.cwd())
    receiver_url, receiver = start_receiver(settings)
    emulator = start_emulator(**demo_emulator_options(settings.data_dir), api_key=settings.api_key,
                              webhook_secret=settings.webhook_secret, webhook_url=receiver_url + "/webhooks/audian")
    ui: subprocess.Popen | None = None
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # Ctrl-C must stop everything even when started where SIGINT is ignored (a shell's `&` job
    # without job control passes SIG_IGN down, and Python then keeps it): take it back.
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        print(f"emulator: API {emulator.api_url}, account generated at {emulator.parameters['epoch']} "
              f"(seed {emulator.parameters['seed']}, {emulator.parameters['per_day']} a day); "
              f"webhooks to {receiver_url}/webhooks/audian; data {settings.data_dir}", flush=True)
        print(f"Dagster UI: http://127.0.0.1:{port} (starting); Ctrl-C stops everything", flush=True)
        ui = subprocess.Popen(dg_command(port), cwd=root, env=dagster_env(emulator, settings, root),
                              start_new_session=True)
        code = ui.wait()
        print(f"dg dev exited with {code}; stopping the emulator and the receiver", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return 0
    finally:
        if ui is not None:
            _stop_group(ui)
        emulator.stop()
        receiver.should_exit = True
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_sigint)


def _stop_group(process: subprocess.Popen) -> None:
    """SIGINT to the whole group, as a terminal's Ctrl-C would, then SIGKILL to whatever of the
    group outlives the grace or `dg dev` itself (a code server left behind holds ports)."""
    if process.poll() is None:
        _signal_group(process, signal.SIGINT)
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(process, signal.SIGKILL)
    process.wait(timeout=10)


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
