-- audian_deletions: which recordings this pipeline deleted at Audian (AUDIAN_DELETE_AT_AUDIAN=1), and how many bytes that freed.
-- A recording is deleted only after its archived copy was read back and its plaintext sha256 matched the webhook's, in
-- the same run; outcome 'already_deleted' means Audian answered 404 to the DELETE (an earlier, interrupted run's request).
CREATE TABLE audian_deletions (
    recording_id   VARCHAR     NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    outcome        VARCHAR     NOT NULL,  -- deleted | already_deleted
    bytes          BIGINT      NOT NULL,  -- the recording's size, freed from Audian's storage quota
    sha256         VARCHAR     NOT NULL,  -- plaintext sha256 of the archived copy, read back before the DELETE
    reverified_at  TIMESTAMPTZ NOT NULL,
    deleted_at     TIMESTAMPTZ NOT NULL,
    run_id         VARCHAR,
    partition_date DATE        NOT NULL
);
COMMENT ON TABLE audian_deletions IS 'Recordings deleted at Audian after their archived copy was re-verified; the bytes freed.';
