"""Refused downloads leave the client's pooled connections clean (issue 10, item 7).

A storage answer whose body is left unread poisons its pooled connection: the next request
on it reads those stale bytes, fails, and urllib3 sends it again. The emulator's storage host
counts what it receives (every request meets the `forbidden` fault at rate 1), so the test
compares the requests the storage host saw with the ones the client meant to send.
"""

from __future__ import annotations

import io

from audian_pipeline.client import errors
from audian_pipeline.client.client import AudianClient, fetch_each
from audian_pipeline.emulator.faults import FaultConfig
from audian_pipeline.settings import DEMO_API_KEY

RENEWALS = 3


def test_refused_downloads_send_each_storage_request_once(fresh_emulator):
    emu = fresh_emulator(seed=3, days=3, per_day=60, faults=FaultConfig(forbidden=1.0, max_consecutive=10_000))
    now = emu.account.now()
    ids = [r.recording_id for r in emu.account.visible() if r.status_at(now) == "completed"][:120]

    with AudianClient(emu.api_url, DEMO_API_KEY, backoff=0.01) as client:
        refused = fetch_each(lambda rid: client.download(rid, io.BytesIO(), max_renewals=RENEWALS), ids,
                             concurrency=8, tolerate=(errors.StorageError,))

    assert all(isinstance(answer, errors.StorageError) for answer in refused.values())
    received = emu.faults.snapshot()["injected"]["forbidden"]
    assert client.stats["storage"] == len(ids) * (1 + RENEWALS)
    assert (received, client.stats["retries"]) == (client.stats["storage"], 0)
