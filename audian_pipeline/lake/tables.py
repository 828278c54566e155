"""The lake's tables: the one registry every reader and writer of the lake goes through.

A table's name is its folder under the lake and its table in the warehouse; its key is unique
within a day's partition (the asset checks hold it to that); `day_of` says which day a row's
partition is, since that differs between tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from audian_pipeline.lake import schemas


@dataclass(frozen=True)
class Table:
    name: str
    schema: pa.Schema
    key: str
    day_of: str
    """What a row's UTC partition day is the day of."""


RECORDINGS = Table("recordings", schemas.RECORDINGS, key="recording_id", day_of="the recording's created_at")
CALLS = Table("calls", schemas.CALLS, key="call_id", day_of="created_at of the call's recordings")
RECORDING_AUDIO = Table("recording_audio", schemas.RECORDING_AUDIO, key="recording_id",
                        day_of="the recording's created_at")
RECORDING_SPEECH = Table("recording_speech", schemas.RECORDING_SPEECH, key="recording_id",
                         day_of="the recording's created_at")
AUDIAN_DELETIONS = Table("audian_deletions", schemas.AUDIAN_DELETIONS, key="recording_id",
                         day_of="the recording's created_at")
ARCHIVE_DISPOSALS = Table("archive_disposals", schemas.ARCHIVE_DISPOSALS, key="recording_id",
                          day_of="the day retention was applied as of (the run's last day), since disposal "
                                 "reaches back to old days no daily run covers")
RECORDING_EVENTS = Table("recording_events", schemas.RECORDING_EVENTS, key="webhook_id",
                         day_of="the event's occurred_at (when it happened, not the recording's day)")

TABLES: dict[str, Table] = {
    t.name: t for t in (RECORDINGS, CALLS, RECORDING_AUDIO, RECORDING_SPEECH, AUDIAN_DELETIONS, ARCHIVE_DISPOSALS,
              RECORDING_EVENTS)
}
"""Every lake table by name, in load order."""
