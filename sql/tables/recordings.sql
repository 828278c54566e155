-- recordings: every recording Audian listed, one row per recording, loaded from lake/recordings by UTC day of created_at.
-- Rows Audian no longer lists (retention or DELETE) are kept with deleted_at set: past 30 days this is the only copy.
-- partition_date is the lake partition the row came from (the UTC day of created_at); the loader replaces a day's rows as one.
CREATE TABLE recordings (
    recording_id      VARCHAR     NOT NULL,
    call_id           VARCHAR     NOT NULL,
    status            VARCHAR     NOT NULL,  -- initiated, recording, paused, stopped, processing, completed, failed
    duration          INTEGER     NOT NULL,  -- seconds; 0 until the recording stops
    file_size         BIGINT      NOT NULL,  -- bytes held at Audian; 0 until completed, 0 for failed
    created_at        TIMESTAMPTZ NOT NULL,
    file_format       VARCHAR,               -- mp3, wav, opus (from GET /v2/recordings/{id})
    bitrate           INTEGER,
    sample_rate       INTEGER,
    channels          SMALLINT,
    completed_at      TIMESTAMPTZ,
    expires_at        TIMESTAMPTZ NOT NULL,  -- created_at + 30 days: when Audian deletes it
    first_seen_at     TIMESTAMPTZ NOT NULL,
    last_seen_at      TIMESTAMPTZ NOT NULL,
    detail_fetched_at TIMESTAMPTZ,
    deleted_at        TIMESTAMPTZ,           -- when the pipeline first saw it gone from Audian's list
    partition_date    DATE        NOT NULL
);
COMMENT ON TABLE recordings IS 'One row per Audian recording, by UTC day of created_at; deleted ones kept with deleted_at set.';
