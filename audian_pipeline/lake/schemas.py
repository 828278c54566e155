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
        pa.field("detail_source", pa.string()),  # api | webhook (then bitrate, sample_rate, channels null)
    ],
    metadata={"description": "One row per recording Audian listed for the UTC day of created_at. "
              "deleted_at is set once Audian stops listing it (retention or DELETE): the lake keeps the row. "
              "duration and file_size are null while Audian does not know them yet (before completion). "
              "detail_source says where the detail came from: 'api' (GET /v2/recordings/{id}) or 'webhook' "
              "(the recording.completed event, which has no bitrate, sample_rate or channels: the archive's "
              "probe of the file, in recording_audio, measures those)."},
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
        pa.field("stored_bytes", pa.int64()),  # size of the stored object: the ciphertext's when encrypted
        pa.field("key_id", pa.int64()),  # Tink key the object is encrypted under; null: stored in plaintext
        pa.field("disposed_at", UTC),  # set when retention disposed of the archived object; the row stays
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

RECORDING_SPEECH = pa.schema(
    [
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("created_at", UTC, nullable=False),
        pa.field("outcome", pa.string(), nullable=False),  # analysed | undecodable | unreadable
        pa.field("reason", pa.string()),
        pa.field("sha256", pa.string()),  # of the archived file analysed: a new file is analysed again
        pa.field("file_format", pa.string()),
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int16()),
        pa.field("duration_seconds", pa.float64()),
        pa.field("speech_seconds", pa.float64()),
        pa.field("caller_speech_seconds", pa.float64()),  # stereo only: channel 0
        pa.field("callee_speech_seconds", pa.float64()),  # stereo only: channel 1
        pa.field("talk_ratio", pa.float64()),
        pa.field("silence_seconds", pa.float64()),
        pa.field("silence_share", pa.float64()),
        pa.field("longest_silence_seconds", pa.float64()),
        pa.field("overlap_seconds", pa.float64()),
        pa.field("turns", pa.int32()),
        pa.field("longest_monologue_seconds", pa.float64()),
        pa.field("detector", pa.string()),
        pa.field("detector_settings", pa.string()),
        pa.field("analysed_at", UTC),
    ],
    metadata={"description": "One row per verified recording of the UTC day of created_at: who talked how much "
              "(voice activity per channel), dead air, overlap, turns. Stereo is caller (channel 0) and callee "
              "(channel 1); on mono files the per-side columns, talk_ratio, overlap and turns are null. "
              "outcome undecodable: the archived file is not audio the detector takes (reason says why)."},
)

AUDIAN_DELETIONS = pa.schema(
    [
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("created_at", UTC, nullable=False),
        pa.field("outcome", pa.string(), nullable=False),  # deleted | already_deleted (404 on DELETE)
        pa.field("bytes", pa.int64(), nullable=False),  # the recording's size: what Audian's quota got back
        pa.field("sha256", pa.string(), nullable=False),  # plaintext sha256 read back from the archive
        pa.field("reverified_at", UTC, nullable=False),  # the read-back, in the same run as the DELETE
        pa.field("deleted_at", UTC, nullable=False),  # Audian's answer, or when its 404 was seen
        pa.field("run_id", pa.string()),
    ],
    metadata={"description": "One row per recording this pipeline deleted at Audian (AUDIAN_DELETE_AT_AUDIAN=1), "
              "each only after its archived copy was read back and matched the webhook's sha256 in the same run."},
)

ARCHIVE_DISPOSALS = pa.schema(
    [
        pa.field("recording_id", pa.string(), nullable=False),
        pa.field("created_at", UTC, nullable=False),
        pa.field("outcome", pa.string(), nullable=False),  # disposed | already_missing (an interrupted run's delete)
        pa.field("sha256", pa.string()),  # plaintext sha256 of the disposed recording, from the manifest
        pa.field("bytes", pa.int64()),  # plaintext size
        pa.field("stored_bytes", pa.int64()),  # size of the deleted object (the ciphertext's when encrypted)
        pa.field("path", pa.string(), nullable=False),  # the archived object's location, now deleted
        pa.field("policy", pa.string(), nullable=False),  # e.g. AUDIAN_ARCHIVE_RETENTION_DAYS=90
        pa.field("reason", pa.string(), nullable=False),
        pa.field("due_at", UTC, nullable=False),  # created_at + the retention
        pa.field("disposed_at", UTC, nullable=False),
        pa.field("run_id", pa.string()),
    ],
    metadata={"description": "One row per archived recording disposed of under AUDIAN_ARCHIVE_RETENTION_DAYS "
              "(its object deleted, its manifest row kept and marked disposed_at), partitioned by the day the "
              "policy was applied as of (the run's last day), not the recording's day."},
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
