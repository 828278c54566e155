"""The exact pager under churn, against a real emulator (issue 10, item 10).

While the pager reads a day, a background thread creates recordings (`POST /v2/calls` with
recording on, so they land at the top of the list) and deletes others (`DELETE
/v2/recordings/{id}`, in the day being read and in the newer days above it). The thread works
in step with the pager, a fixed number of changes after each list call, so every run meets
the same amount of churn however fast the machine is; small page limits make each page's
margin thin.
"""

from __future__ import annotations

import math
import random
import threading
from datetime import timedelta

import pytest
import requests

from audian_pipeline.client.client import AudianClient
from audian_pipeline.client.models import Page
from audian_pipeline.client.paging import list_window
from audian_pipeline.lake.days import day_bounds
from audian_pipeline.settings import DEMO_API_KEY

H = {"X-Auth-Token": DEMO_API_KEY}
MAX_ROUNDS = 1_000
STEP_TIMEOUT = 30.0


class Churn(threading.Thread):
    """After each list call, `creates` new recordings and `deletes` deletions through the
    emulator's API; stops when told, after MAX_ROUNDS, or when no list call comes."""

    def __init__(self, api_url: str, deletable: list[str], creates: int, deletes: int, seed: int) -> None:
        super().__init__(daemon=True, name="churn")
        self.api_url, self.creates, self.deletes = api_url, creates, deletes
        self.deletable = list(deletable)
        random.Random(seed).shuffle(self.deletable)
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.turn, self.done, self.stop = threading.Event(), threading.Event(), threading.Event()

    def run(self) -> None:
        with requests.Session() as http:
            http.headers.update(H)
            for _ in range(MAX_ROUNDS):
                if not self.turn.wait(STEP_TIMEOUT) or self.stop.is_set():
                    return
                self.turn.clear()
                self._round(http)
                self.done.set()

    def _round(self, http: requests.Session) -> None:
        for _ in range(self.creates):
            made = http.post(self.api_url + "/v2/calls", timeout=10, json={
                "from": "+14155550100", "to": "+14155550199", "recording": {"enabled": True}}).json()
            self.created.append(made["recording_id"])
        for _ in range(min(self.deletes, len(self.deletable))):
            rid = self.deletable.pop()
            if http.delete(f"{self.api_url}/v2/recordings/{rid}", timeout=10).status_code == 200:
                self.deleted.append(rid)


class ChurnedClient:
    """The real client; each list call hands the churn thread its turn before returning."""

    def __init__(self, client: AudianClient, churn: Churn) -> None:
        self.client, self.churn = client, churn

    def list_page(self, **query) -> Page:
        page = self.client.list_page(**query)
        self.churn.done.clear()
        self.churn.turn.set()
        assert self.churn.done.wait(STEP_TIMEOUT), "the churn thread stopped answering"
        return page


def window_ids(emu, start, end) -> set[str]:
    return {r.recording_id for r in emu.account.visible() if start <= r.created_at < end}


@pytest.mark.parametrize("limit, days_back, creates, deletes", [
    (7, 1, 1, 2), (13, 1, 2, 3), (7, 0, 3, 1), (13, 2, 1, 4), (25, 1, 2, 6),
])
def test_pager_is_exact_and_finishes_under_churn(fresh_emulator, limit, days_back, creates, deletes):
    emu = fresh_emulator(seed=40 + limit + days_back, days=3, per_day=300)
    start, end = day_bounds(emu.account.now().date() - timedelta(days=days_back))
    before = window_ids(emu, start, end)
    in_and_above = sorted(r.recording_id for r in emu.account.visible() if r.created_at >= start)

    churn = Churn(emu.api_url, in_and_above, creates, deletes, seed=limit)
    churn.start()
    with AudianClient(emu.api_url, DEMO_API_KEY, backoff=0.01) as client:
        try:
            listing = list_window(ChurnedClient(client, churn), start, end, limit=limit)
        finally:
            churn.stop.set()
            churn.turn.set()
            churn.join(STEP_TIMEOUT)

    ids = [r.recording_id for r in listing.recordings]
    assert len(ids) == len(set(ids))
    throughout = before & window_ids(emu, start, end)
    assert throughout <= set(ids) <= before | set(churn.created)
    assert before - throughout, "recordings of the day were deleted while it was read"
    quiet_cost = 1 + math.ceil(len(before) / (limit - 1))
    assert listing.list_calls <= 2 * quiet_cost, (listing.list_calls, quiet_cost, listing.corrections)
    assert not listing.plain_scan
