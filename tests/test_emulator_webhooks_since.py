"""The emulator can start delivering webhooks from an instant, not from the start of its history.

A large account (the scale benchmark's hold up to 1.5 million recordings) would otherwise
synthesise every file of 30 days to sign its checksum, and POST three events per recording,
before the one day being measured. Real emulator, real receiver over HTTP on 127.0.0.1.
"""

from __future__ import annotations

from datetime import timedelta

from audian_pipeline.emulator.server import start_emulator
from audian_pipeline.lake.paths import events_db
from audian_pipeline.settings import DEMO_WEBHOOK_SECRET
from audian_pipeline.webhooks.receiver import create_app
from audian_pipeline.webhooks.store import EventStore

from conftest import CLOCK
from servers import serve_app


def test_webhooks_since_delivers_only_the_events_after_it(data_dir, audio_cache_dir):
    since = CLOCK - timedelta(hours=20)
    with EventStore(events_db(data_dir)) as store, serve_app(create_app(store, DEMO_WEBHOOK_SECRET)) as receiver:
        with start_emulator(seed=62, days=3, per_day=20, max_duration=30, clock=CLOCK, cache_dir=audio_cache_dir,
                            webhook_url=receiver + "/webhooks/audian", webhooks_since=since) as emu:
            assert emu.delivery is not None and emu.delivery.wait_idle(120)
            expected = [(when, rec.recording_id) for when, _, rec in emu.account.events_due(CLOCK, since)]
            everything = list(emu.account.events_due(CLOCK))
        stored = store.events_after(0)

    assert len(everything) > len(expected) > 0
    assert sorted((e.occurred_at, e.recording_id) for e in stored) == sorted(expected)
    assert min(e.occurred_at for e in stored) > since
