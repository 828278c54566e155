-- report_retention_expiry: what will Audian delete in the next 7 days that is not yet safe in our archive?
-- Per UTC day of expires_at (created_at + 30 days), for recordings expiring after pipeline_settings.as_of and at most
-- 7 days after it, and not already deleted: how many recordings and bytes expire; how many of those with audio
-- (status completed) are not verified in the archive (no recording_audio row with outcome = 'verified') and their
-- bytes; the earliest expires_at among the unverified that day, and next_unverified_deadline, the earliest over the
-- whole 7 days (the same on every row): past it, that audio is gone for good.
-- Every day of the window has a row, zeros included. Failed recordings have no audio: they count in recordings and
-- bytes (0), never as not verified. "Now" is pipeline_settings.as_of, not now(), so the report is reproducible.
-- Unknown sizes stay unknown: a recording not completed may have no file_size (NULL); it counts in recordings and in
-- recordings_size_unknown but adds nothing to bytes, which is then a lower bound. (A completed recording always has
-- a size, so bytes_not_verified is exact.)
CREATE OR REPLACE VIEW report_retention_expiry AS
WITH settings AS (
    SELECT as_of FROM pipeline_settings
),
days AS (
    SELECT day::DATE AS expiry_day
    FROM settings AS s,
         unnest(generate_series(timezone('UTC', s.as_of)::DATE,
                                timezone('UTC', s.as_of + INTERVAL 7 DAY)::DATE,
                                INTERVAL 1 DAY)) AS g(day)
),
verified AS (
    SELECT DISTINCT recording_id FROM recording_audio WHERE outcome = 'verified'
),
expiring AS (
    SELECT
        timezone('UTC', r.expires_at)::DATE                  AS expiry_day,
        r.expires_at,
        CASE WHEN r.status = 'failed' THEN 0 ELSE r.file_size END AS file_size,
        r.status = 'completed' AND v.recording_id IS NULL    AS not_verified
    FROM recordings AS r
    CROSS JOIN settings AS s
    LEFT JOIN verified AS v ON v.recording_id = r.recording_id
    WHERE r.deleted_at IS NULL
      AND r.expires_at > s.as_of
      AND r.expires_at <= s.as_of + INTERVAL 7 DAY
)
SELECT
    d.expiry_day,
    count(e.expires_at)                                            AS recordings,
    count(e.expires_at) FILTER (WHERE e.file_size IS NULL)         AS recordings_size_unknown,
    coalesce(sum(e.file_size), 0)::BIGINT                          AS bytes,
    count(*) FILTER (WHERE e.not_verified)                         AS not_verified,
    coalesce(sum(e.file_size) FILTER (WHERE e.not_verified), 0)::BIGINT AS bytes_not_verified,
    min(e.expires_at) FILTER (WHERE e.not_verified)                AS earliest_unverified_expires_at,
    min(min(e.expires_at) FILTER (WHERE e.not_verified)) OVER ()   AS next_unverified_deadline
FROM days AS d
LEFT JOIN expiring AS e ON e.expiry_day = d.expiry_day
GROUP BY d.expiry_day
ORDER BY d.expiry_day;
