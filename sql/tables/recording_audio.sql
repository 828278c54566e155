-- recording_audio: the archive manifest, one row per recording: did we download, verify and archive its audio?
-- outcome = 'verified' means the file under audio/YYYY/MM/DD/ matched Audian's size and checksum and probed as audio;
-- sha256 and bytes are always the plaintext's, also when the stored object is encrypted (key_id set).
CREATE TABLE recording_audio (
    recording_id       VARCHAR     NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    outcome            VARCHAR     NOT NULL,
    reason             VARCHAR,              -- why it is not verified, when it is not
    path               VARCHAR,              -- full location of the archived object: a local path or s3:// URL
    bytes              BIGINT,
    expected_bytes     BIGINT,
    sha256             VARCHAR,
    expected_sha256    VARCHAR,
    declared_format    VARCHAR,
    probed_format      VARCHAR,
    probed_duration    DOUBLE,
    probed_sample_rate INTEGER,
    probed_channels    SMALLINT,
    attempts           INTEGER     NOT NULL,
    first_attempt_at   TIMESTAMPTZ,
    last_attempt_at    TIMESTAMPTZ,
    verified_at        TIMESTAMPTZ,
    stored_bytes       BIGINT,               -- size of the stored object (the ciphertext when encrypted)
    key_id             BIGINT,               -- Tink key id of an encrypted object; NULL: stored in plaintext
    disposed_at        TIMESTAMPTZ,          -- when retention disposed of the archived object (the row stays)
    partition_date     DATE        NOT NULL
);
COMMENT ON TABLE recording_audio IS 'Archive manifest: one row per recording; outcome = ''verified'' when the archived file checked out.';
