-- report_disposals: which archived recordings were disposed of under the retention policy, and which will be soon?
-- One row per recording. state 'disposed': its archived object was deleted (archive_disposals; outcome
-- 'already_missing' means an interrupted run had deleted it). state 'due': past created_at + the retention at
-- pipeline_settings.as_of but still archived: under a legal hold (`audian-pipeline hold add`), or waiting for the next
-- archive_disposals run. state 'upcoming': verified in the archive, due within 30 days of as_of.
-- day is the UTC day of disposed_at for the disposed, of due_at otherwise. The retention is
-- pipeline_settings.archive_retention_days (AUDIAN_ARCHIVE_RETENTION_DAYS at load time); NULL keeps the archive
-- forever, so only past disposals show. bytes is the plaintext size, stored_bytes the object's (ciphertext) size.
CREATE OR REPLACE VIEW report_disposals AS
WITH settings AS (
    SELECT as_of, archive_retention_days FROM pipeline_settings
),
disposed AS (
    SELECT recording_id, created_at, 'disposed' AS state, due_at, disposed_at, bytes, stored_bytes, sha256,
           policy, reason, outcome
    FROM archive_disposals
    QUALIFY row_number() OVER (PARTITION BY recording_id ORDER BY disposed_at) = 1
),
archived AS (
    SELECT a.recording_id, a.created_at, a.created_at + to_days(s.archive_retention_days) AS due_at,
           a.bytes, a.stored_bytes, a.sha256, s.as_of,
           'AUDIAN_ARCHIVE_RETENTION_DAYS=' || s.archive_retention_days AS policy
    FROM recording_audio AS a
    CROSS JOIN settings AS s
    WHERE s.archive_retention_days IS NOT NULL
      AND a.outcome = 'verified'
      AND a.disposed_at IS NULL
      AND a.recording_id NOT IN (SELECT recording_id FROM disposed)
),
pending AS (
    SELECT recording_id, created_at, CASE WHEN due_at <= as_of THEN 'due' ELSE 'upcoming' END AS state, due_at,
           NULL::TIMESTAMPTZ AS disposed_at, bytes, stored_bytes, sha256, policy,
           CASE WHEN due_at <= as_of THEN 'past the retention: on hold, or awaiting archive_disposals'
                ELSE 'due within 30 days' END AS reason,
           NULL::VARCHAR AS outcome
    FROM archived
    WHERE due_at <= as_of + INTERVAL 30 DAY
)
SELECT
    timezone('UTC', coalesce(disposed_at, due_at))::DATE AS day,
    state, recording_id, created_at, due_at, disposed_at, bytes, stored_bytes, sha256, policy, reason, outcome
FROM (SELECT * FROM disposed UNION ALL BY NAME SELECT * FROM pending)
ORDER BY day, state, recording_id;
