-- recording_events: Audian's webhooks (recording.completed, recording.failed, ...) as received, verified and de-duplicated.
-- reason is set on recording.failed; payload is the JSON body as delivered.
CREATE TABLE recording_events (
    webhook_id      VARCHAR     NOT NULL,
    event           VARCHAR     NOT NULL,
    recording_id    VARCHAR     NOT NULL,
    call_id         VARCHAR     NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL,
    reason          VARCHAR,
    checksum_sha256 VARCHAR,
    download_url    VARCHAR,
    payload         VARCHAR     NOT NULL,
    partition_date  DATE        NOT NULL
);
COMMENT ON TABLE recording_events IS 'Audian webhooks received, one row per delivery id; reason set on recording.failed.';
