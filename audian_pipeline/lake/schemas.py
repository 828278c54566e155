"""Every Parquet schema of the lake, explicit: pyarrow types, UTC timestamps, nothing inferred."""

from __future__ import annotations

import pyarrow as pa

UTC = pa.timestamp("us", tz="UTC")

RECORDINGS = pa.schema(
    [
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("call_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("duration", pa.int32()),  # null while Audian does not know it (still recording)
        pa.field("file_size", pa.int64()),  # null while Audian has no file: unknown, not 0
        pa.field("created_at", UTC, nullable=False),
        pa.field("file_format", pa.string()),  # these four: null until processing produced the file
        pa.field("bitrate", pa.int32()),
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int16()),
        pa.field("completed_at", UTC),
        pa.field("expires_at", UTC, nullable=False),
        pa.field("first_seen_at", UTC, nullable=False),
        pa.field("last_seen_at", UTC, nullable=False),
        pa.field("detail_fetched_at", UTC),
        pa.field("deleted_at", UTC),
    ],
    metadata={"description": "One row per recording Audian listed for the UTC day of created_at. "
              "deleted_at is set once Audian stops listing it (retention or DELETE): the lake keeps the row. "
              "duration and file_size are null while Audian does not know them yet (before completion)."},
)

CALLS = pa.schema(
    [
        pa.field("call_id", pa.string(), nullable=False),
        pa.field("from_number", pa.string(), nullable=False),
        pa.field("to_number", pa.string(), nullable=False),
        pa.field("direction", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("call_flow_id", pa.string()),
        pa.field("started_at", UTC, nullable=False),
        pa.field("answered_at", UTC),
        pa.field("ended_at", UTC),
        pa.field("duration", pa.int32(), nullable=False),
        pa.field("fetched_at", UTC, nullable=False),
    ]
)

RECORDING_AUDIO = pa.schema(
    [
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("created_at", UTC, nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("path", pa.string()),
        pa.field("bytes", pa.int64()),
        pa.field("expected_bytes", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("expected_sha256", pa.string()),
        pa.field("declared_format", pa.string()),
        pa.field("probed_format", pa.string()),
        pa.field("probed_duration", pa.float64()),
        pa.field("probed_sample_rate", pa.int32()),
        pa.field("probed_channels", pa.int16()),
        pa.field("attempts", pa.int32(), nullable=False),
        pa.field("first_attempt_at", UTC),
        pa.field("last_attempt_at", UTC),
        pa.field("verified_at", UTC),
    ]
)

RECORDING_EVENTS = pa.schema(
    [
        pa.field("webhook_id", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("call_id", pa.string(), nullable=False),
        pa.field("occurred_at", UTC, nullable=False),
        pa.field("received_at", UTC, nullable=False),
        pa.field("reason", pa.string()),
        pa.field("checksum_sha256", pa.string()),
        pa.field("download_url", pa.string()),
        pa.field("payload", pa.string(), nullable=False),
    ]
)

AUDIT = pa.schema(
    [
        pa.field("at", UTC, nullable=False),
        pa.field("actor", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("run_id", pa.string()),
    ]
)
