"""The demo account: one seed and size for `audian-pipeline demo`, `audian-pipeline emulator` and
`make dev`, so the lake they share in AUDIAN_DATA_DIR always holds one account.

An emulator's account is generated from its parameters at an instant, the epoch: its history
is the `days` before it. Started later with the same parameters and epoch, the emulator serves
the same recordings again, observed at the current time; with a new epoch, every recording
moves to other days. So each launcher reuses the epoch that AUDIAN_DATA_DIR's account marker
recorded (see `lake/account.py`) when the parameters match.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from audian_pipeline.lake.account import read_marker

DEMO_SEED = 7
DEMO_DAYS = 35
"""Days of history: five more than Audian keeps, so retention has something to delete."""
DEMO_PER_DAY = 12
"""Recordings a day: enough for every state and failure reason, small enough for a quick demo."""
DEMO_MAX_DURATION = 1200


def account_parameters(*, seed: int, days: int, per_day: int, max_duration: int,
                       variations: dict[str, Any] | None, epoch: datetime) -> dict[str, Any]:
    """What makes an emulator's account: the emulator answers these at `GET /_emulator/account`."""
    return {"seed": seed, "days": days, "per_day": per_day, "max_duration": max_duration,
            "variations": variations, "epoch": epoch.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def reusable_epoch(data_dir: Path, **parameters: Any) -> datetime | None:
    """The epoch of the emulator account AUDIAN_DATA_DIR holds, if it has these parameters
    (all of `account_parameters` but the epoch); None starts a new account."""
    held = read_marker(data_dir)
    if held is None or held.kind != "emulator":
        return None
    if {k: v for k, v in held.details.items() if k != "epoch"} != parameters:
        return None
    return datetime.fromisoformat(held.details["epoch"].replace("Z", "+00:00"))


def demo_emulator_options(data_dir: Path, *, seed: int = DEMO_SEED, days: int = DEMO_DAYS,
                          per_day: int = DEMO_PER_DAY) -> dict[str, Any]:
    """`start_emulator` options for this account, serving again the one AUDIAN_DATA_DIR holds if it
    is this one (same parameters), so the demo, `make dev` and a hand-started emulator agree."""
    epoch = reusable_epoch(data_dir, seed=seed, days=days, per_day=per_day, max_duration=DEMO_MAX_DURATION,
                           variations=None)
    return {"seed": seed, "days": days, "per_day": per_day, "max_duration": DEMO_MAX_DURATION, "epoch": epoch}
