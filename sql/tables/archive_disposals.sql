-- archive_disposals: which archived recordings were disposed of under AUDIAN_ARCHIVE_RETENTION_DAYS, when and why.
-- The object was deleted from the archive; the recording's row in recording_audio stays, with disposed_at set. A row is
-- partitioned by the day the policy was applied as of (the run's last day), since disposal reaches back to old days.
CREATE TABLE archive_disposals (
    recording_id   VARCHAR     NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    outcome        VARCHAR     NOT NULL,  -- disposed | already_missing (an interrupted run had deleted the object)
    sha256         VARCHAR,               -- plaintext sha256 of the disposed recording, as the manifest had it
    bytes          BIGINT,                -- plaintext size
    stored_bytes   BIGINT,                -- size of the deleted object (the ciphertext's when encrypted)
    path           VARCHAR     NOT NULL,  -- where the archived object was
    policy         VARCHAR     NOT NULL,  -- e.g. AUDIAN_ARCHIVE_RETENTION_DAYS=90
    reason         VARCHAR     NOT NULL,
    due_at         TIMESTAMPTZ NOT NULL,  -- created_at + the retention
    disposed_at    TIMESTAMPTZ NOT NULL,
    run_id         VARCHAR,
    partition_date DATE        NOT NULL
);
COMMENT ON TABLE archive_disposals IS 'Archived recordings disposed of under the retention policy; the manifest row stays, marked disposed_at.';
