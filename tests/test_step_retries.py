"""A request that outlasts the client's retries costs a step retry, not the run."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest
import requests

from audian_pipeline.defs.recordings import recordings
from audian_pipeline.defs.resources import AudianResource, LakeResource
from audian_pipeline.runner import failure_messages, range_tags
from audian_pipeline.settings import DEMO_API_KEY


def _events(result: dg.ExecuteInProcessResult, kind: str) -> list[dg.DagsterEvent]:
    return [e for e in result.all_events if e.event_type_value == kind]


@pytest.mark.slow
def test_an_exhausted_request_is_retried_as_a_step_and_the_run_succeeds(fresh_emulator, tmp_path):
    emu = fresh_emulator(seed=61, days=3, per_day=6, max_duration=20)
    # Two 503s in a row: a client allowed one retry gives up on its first request.
    requests.post(f"{emu.api_url}/_emulator/faults", json={"outage_requests": 2},
                  headers={"X-Auth-Token": DEMO_API_KEY}, timeout=5).raise_for_status()
    today = emu.account.now().date()
    result = dg.materialize(
        [recordings],
        resources={"audian": AudianResource(api_url=emu.api_url, api_key=DEMO_API_KEY, retries=1),
                   "lake": LakeResource(data_dir=str(tmp_path / "data"))},
        tags=range_tags(today - timedelta(days=2), today - timedelta(days=1)),
        raise_on_error=False,
    )
    assert emu.faults.snapshot()["injected"]["outage"] == 2
    assert result.success
    (retry,) = _events(result, "STEP_UP_FOR_RETRY")
    causes, error = [], retry.event_specific_data.error
    while error is not None:
        causes.append(error.cls_name)
        error = error.cause
    assert "ServerError" in causes  # the event log says why it retried


def test_a_permanent_failure_is_not_retried(fresh_emulator, tmp_path):
    emu = fresh_emulator(seed=62, days=2, per_day=4)
    result = dg.materialize(
        [recordings],
        resources={"audian": AudianResource(api_url=emu.api_url, api_key="sk_wrong_key_y"),
                   "lake": LakeResource(data_dir=str(tmp_path / "data"))},
        partition_key=(emu.account.now().date() - timedelta(days=1)).isoformat(),
        raise_on_error=False,
    )
    assert not result.success and not _events(result, "STEP_UP_FOR_RETRY")
    assert "AUDIAN_API_KEY" in failure_messages(result)[0]
