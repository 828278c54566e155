-- recordings: every recording Audian listed, one row per recording, loaded from lake/recordings by UTC day of created_at.
-- Rows Audian no longer lists (retention or DELETE) are kept with deleted_at set: past 30 days this is the only copy.
-- partition_date is the lake partition the row came from (the UTC day of created_at); the loader replaces a day's rows as one.
-- Until a recording is completed Audian may send file_size, duration and the file's fields as null: NULL here means
-- unknown (not zero). A failed recording never gets a file: its file_size is NULL or 0 and it holds no bytes.
-- A completed recording whose detail came from its recording.completed webhook (detail_source = 'webhook') has
-- bitrate, sample_rate and channels NULL: recording_audio.probed_sample_rate/probed_channels are measured from the file.
CREATE TABLE recordings (
    recording_id      VARCHAR     NOT NULL,
    call_id           VARCHAR     NOT NULL,
    status            VARCHAR     NOT NULL,  -- initiated, recording, paused, stopped, processing, completed, failed
    duration          INTEGER,               -- seconds; NULL or 0 while still recording (Audian does not know it yet)
    file_size         BIGINT,                -- bytes held at Audian; NULL (unknown, not 0) or 0 until completed
    created_at        TIMESTAMPTZ NOT NULL,
    file_format       VARCHAR,               -- mp3, wav, opus (from the detail or the webhook); NULL until the file exists
    bitrate           INTEGER,               -- the file's fields: NULL until processing has produced the file,
    sample_rate       INTEGER,               -- or while the detail was not fetched, or when detail_source = 'webhook'
    channels          SMALLINT,
    completed_at      TIMESTAMPTZ,
    expires_at        TIMESTAMPTZ NOT NULL,  -- created_at + 30 days: when Audian deletes it
    first_seen_at     TIMESTAMPTZ NOT NULL,
    last_seen_at      TIMESTAMPTZ NOT NULL,
    detail_fetched_at TIMESTAMPTZ,
    deleted_at        TIMESTAMPTZ,           -- when the pipeline first saw it gone from Audian's list
    detail_source     VARCHAR,               -- api (GET /v2/recordings/{id}) or webhook (recording.completed, which
                                             -- has no bitrate, sample_rate or channels: see recording_audio's probed_*)
    partition_date    DATE        NOT NULL
);
COMMENT ON TABLE recordings IS 'One row per Audian recording, by UTC day of created_at; deleted ones kept with deleted_at set.';
