-- recording_speech: who talked how much in each verified recording, from its archived audio (voice activity per channel).
-- Stereo recordings carry the caller on channel 0 and the callee on channel 1; on mono ones the caller/callee columns,
-- talk_ratio, overlap_seconds and turns are NULL (one track cannot tell the sides apart).
CREATE TABLE recording_speech (
    recording_id              VARCHAR     NOT NULL,
    created_at                TIMESTAMPTZ NOT NULL,
    outcome                   VARCHAR     NOT NULL,  -- analysed | undecodable | unreadable
    reason                    VARCHAR,               -- why it was not analysed, when it was not
    sha256                    VARCHAR,               -- of the archived file analysed
    file_format               VARCHAR,
    sample_rate               INTEGER,
    channels                  SMALLINT,
    duration_seconds          DOUBLE,
    speech_seconds            DOUBLE,                -- some side speaking
    caller_speech_seconds     DOUBLE,
    callee_speech_seconds     DOUBLE,
    talk_ratio                DOUBLE,                -- caller's share of the two sides' speech, 0 to 1
    silence_seconds           DOUBLE,                -- dead air: nobody speaking for 0.3 s or more
    silence_share             DOUBLE,                -- silence_seconds / duration_seconds
    longest_silence_seconds   DOUBLE,
    overlap_seconds           DOUBLE,                -- both sides speaking
    turns                     INTEGER,               -- times the floor passed, the first included
    longest_monologue_seconds DOUBLE,
    detector                  VARCHAR,               -- e.g. 'webrtcvad 2.0.14.post1'
    detector_settings         VARCHAR,
    analysed_at               TIMESTAMPTZ,
    partition_date            DATE        NOT NULL
);
COMMENT ON TABLE recording_speech IS 'Speech analytics per recording: talk time per side, dead air, overlap, turns, longest monologue.';
