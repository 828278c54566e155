"""A data directory holds one account: the first run records it, another account's run is refused.

Real emulators on 127.0.0.1, real materialisations into a temporary AUDIAN_DATA_DIR.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from audian_pipeline.defs.recordings import recordings
from audian_pipeline.defs.resources import AudianResource, LakeResource
from audian_pipeline.emulator.demo_account import demo_emulator_options
from audian_pipeline.emulator.server import RunningEmulator, start_emulator
from audian_pipeline.lake.account import MARKER, ForeignAccountError, audian_identity, claim, read_marker
from audian_pipeline.lake.paths import partition_file
from audian_pipeline.settings import DEMO_API_KEY

from servers import serve_app

SMALL = dict(days=3, per_day=4, max_duration=60)
DAY = date(2026, 11, 19)


def materialise(running: RunningEmulator, data_dir: Path, day: date = DAY) -> dg.ExecuteInProcessResult:
    resources = {"lake": LakeResource(data_dir=str(data_dir)),
                 "audian": AudianResource(api_url=running.api_url, api_key=DEMO_API_KEY)}
    return dg.materialize([recordings], resources=resources, partition_key=day.isoformat(), raise_on_error=False)


def failure(result: dg.ExecuteInProcessResult) -> str:
    """The refusal's message, from the ForeignAccountError in the step failure's chain."""
    (event,) = [e for e in result.all_events if e.is_step_failure]
    error = event.step_failure_data.error
    while error is not None and error.cls_name != ForeignAccountError.__name__:
        error = error.cause
    assert error is not None, "the step did not fail on the account check"
    return error.message.strip()


def test_the_first_run_records_the_account_and_another_account_is_refused(fresh_emulator, data_dir):
    ours = fresh_emulator(seed=51, **SMALL)
    assert materialise(ours, data_dir).success
    marker = json.loads((data_dir / MARKER).read_text())
    assert marker["kind"] == "emulator" and marker["details"]["seed"] == 51
    before = partition_file(data_dir, "recordings", DAY).read_bytes()

    theirs = fresh_emulator(seed=52, **SMALL)
    result = materialise(theirs, data_dir)

    assert not result.success
    message = failure(result)
    assert "\n" not in message
    assert f"AUDIAN_DATA_DIR={data_dir}" in message and "seed 51" in message and "seed 52" in message
    assert "set AUDIAN_DATA_DIR to another directory" in message and f"delete {data_dir}" in message
    assert partition_file(data_dir, "recordings", DAY).read_bytes() == before, "nothing of theirs was written"
    assert read_marker(data_dir).details["seed"] == 51


def test_the_same_account_on_other_ports_is_the_same_lake(fresh_emulator, data_dir):
    assert materialise(fresh_emulator(seed=53, **SMALL), data_dir).success
    assert materialise(fresh_emulator(seed=53, **SMALL), data_dir).success


def test_a_later_emulator_serves_the_account_the_data_dir_holds(data_dir, audio_cache_dir):
    """Running clocks, as `make demo` and later `make dev` start them: the second emulator takes
    the epoch from the marker, so its recordings are the first one's, on the same days."""
    options = demo_emulator_options(data_dir, seed=54, **{k: SMALL[k] for k in ("days", "per_day")})
    assert options["epoch"] is None, "an empty data dir starts a new account"
    with start_emulator(**options, cache_dir=audio_cache_dir) as first:
        yesterday = first.account.now().date() - timedelta(days=1)
        assert materialise(first, data_dir, yesterday).success
        created = {rid: rec.created_at for rid, rec in first.account.recordings.items()}

    again = demo_emulator_options(data_dir, seed=54, **{k: SMALL[k] for k in ("days", "per_day")})
    assert again["epoch"] is not None
    with start_emulator(**again, cache_dir=audio_cache_dir) as second:
        assert {rid: rec.created_at for rid, rec in second.account.recordings.items()} == created
        assert materialise(second, data_dir, yesterday).success

    other = demo_emulator_options(data_dir, seed=55, **{k: SMALL[k] for k in ("days", "per_day")})
    assert other["epoch"] is None, "another account gets its own epoch, and is refused at its first run"


def test_a_real_audian_is_its_url_and_a_fingerprint_of_the_key(data_dir):
    """Any answer but the emulator's to `/_emulator/account` means a real Audian."""
    from starlette.applications import Starlette

    with serve_app(Starlette()) as url:  # answers 404 to everything, as Audian does to that path
        identity = AudianResource(api_url=url, api_key="key_one_0123456789").account_identity()
    assert identity is not None and identity.kind == "audian"
    assert identity == audian_identity(url, "key_one_0123456789")
    claim(data_dir, identity)
    assert "key_one" not in (data_dir / MARKER).read_text()

    with pytest.raises(ForeignAccountError) as refused:
        claim(data_dir, audian_identity(url, "key_two_0123456789"))
    assert f"if only the key changed, delete {data_dir / MARKER}" in str(refused.value)
    assert "key_two" not in str(refused.value) and "key_one" not in str(refused.value)


def test_an_unreachable_api_claims_nothing(data_dir):
    """The run then fails on its first API call with the client's message; no marker is guessed."""
    assert AudianResource(api_url="http://127.0.0.1:9", api_key=DEMO_API_KEY).account_identity() is None
    assert read_marker(data_dir) is None
