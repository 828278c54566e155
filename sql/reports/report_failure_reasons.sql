-- report_failure_reasons: why do recordings fail, and how often?
-- Per UTC day of created_at and failure reason: how many recordings failed for that reason, out of how many finished
-- processing that day (status completed or failed), as a rate; and the day's failures and failure rate over all reasons.
--
-- The reason is the one in Audian's recording.failed webhook (the latest by occurred_at when one was delivered twice);
-- a failed recording whose webhook never arrived shows reason 'unknown'. A day with finished recordings and no failure
-- shows one row with reason NULL and zero failures, so quiet days are visible too. Rates are percentages, to 0.01.
-- Deleted recordings count: their status is the last one Audian showed.
CREATE OR REPLACE VIEW report_failure_reasons AS
WITH finished AS (
    SELECT recording_id, timezone('UTC', created_at)::DATE AS day, status
    FROM recordings
    WHERE status IN ('completed', 'failed')
),
failure_events AS (
    SELECT recording_id, reason
    FROM recording_events
    WHERE event = 'recording.failed'
    QUALIFY row_number() OVER (
        PARTITION BY recording_id ORDER BY occurred_at DESC, received_at DESC, webhook_id
    ) = 1
),
per_day AS (
    SELECT
        day,
        count(*)                                  AS finished_recordings,
        count(*) FILTER (WHERE status = 'failed') AS failed_all_reasons
    FROM finished
    GROUP BY day
),
per_reason AS (
    SELECT f.day, coalesce(e.reason, 'unknown') AS reason, count(*) AS failed_recordings
    FROM finished AS f
    LEFT JOIN failure_events AS e ON e.recording_id = f.recording_id
    WHERE f.status = 'failed'
    GROUP BY f.day, coalesce(e.reason, 'unknown')
)
SELECT
    d.day,
    r.reason,
    coalesce(r.failed_recordings, 0)                                           AS failed_recordings,
    d.finished_recordings,
    round(100.0 * coalesce(r.failed_recordings, 0) / d.finished_recordings, 2) AS failure_rate_pct,
    d.failed_all_reasons,
    round(100.0 * d.failed_all_reasons / d.finished_recordings, 2)             AS day_failure_rate_pct
FROM per_day AS d
LEFT JOIN per_reason AS r ON r.day = d.day
ORDER BY d.day, failed_recordings DESC, r.reason;
