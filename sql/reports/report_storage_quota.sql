-- report_storage_quota: how much of Audian's storage quota do we use, how fast does it grow, and when does it run out?
-- One row per UTC day for the 30 days up to pipeline_settings.as_of; the last row is "now" (as_of), the others are
-- each day's end (midnight UTC). bytes_held: what Audian holds at that moment, i.e. file_size of recordings created
-- before it, not yet expired (expires_at after it) and not deleted (deleted_at null or after it). bytes_added: created
-- that day; bytes_removed: expired or deleted that day; net_growth_bytes = bytes_held - the previous day's bytes_held.
-- quota_bytes is AUDIAN_STORAGE_QUOTA_BYTES at load time. recent_daily_growth_bytes is the rate: the change in
-- bytes_held over the 7 days before that moment, divided by 7. days_until_full and projected_full_on say when
-- bytes_held reaches the quota if that rate goes on: 0 and that day when already over, NULL when the rate is not
-- positive (not at this rate).
-- The rate and the projection need 7 days of history: history_days counts the whole days from the start of the
-- first day the warehouse loaded (warehouse_partitions) to the moment measured. With fewer, the week before is not
-- in the lake, the rate would read the lake's own start as growth, so recent_daily_growth_bytes, days_until_full and
-- projected_full_on are NULL. projection says which case a row is: 'projected', 'already full',
-- 'not filling at this rate' or 'needs 7 days of history, has N'.
-- Unknown sizes stay unknown: until a recording is completed Audian may give no file_size (NULL). Such a recording
-- counts in recordings_held and in recordings_size_unknown but adds nothing to the byte columns, so while
-- recordings_size_unknown is above 0 the bytes, pct_of_quota and growth are lower bounds and days_until_full an upper
-- one. A failed recording never gets a file: it holds 0 bytes whatever its file_size says.
-- "Now" is pipeline_settings.as_of (when the warehouse was loaded), not now(), so the report is reproducible.
-- bytes_held counts the recordings the lake knows: days before the lake began are missing from it.
-- bytes_freed_at_audian: bytes of the recordings this pipeline deleted at Audian that day (AUDIAN_DELETE_AT_AUDIAN=1,
-- table audian_deletions), each after its archived copy was re-verified; they count in bytes_removed once the
-- recordings table has seen them go.
CREATE OR REPLACE VIEW report_storage_quota AS
WITH settings AS (
    SELECT as_of, storage_quota_bytes AS quota_bytes,
           (SELECT timezone('UTC', min(partition_date)::TIMESTAMP) FROM warehouse_partitions) AS history_start
    FROM pipeline_settings
),
days AS (
    SELECT
        day::DATE                                                  AS day,
        timezone('UTC', day::DATE::TIMESTAMP)                       AS day_start,
        least(timezone('UTC', day::DATE::TIMESTAMP) + INTERVAL 1 DAY, s.as_of) AS day_end
    FROM settings AS s,
         unnest(generate_series(timezone('UTC', s.as_of)::DATE - 29,
                                timezone('UTC', s.as_of)::DATE,
                                INTERVAL 1 DAY)) AS g(day)
),
sized AS (  -- bytes each recording holds at Audian: NULL while unknown, 0 for a failed one
    SELECT recording_id, created_at, expires_at, deleted_at,
           CASE WHEN status = 'failed' THEN 0 ELSE file_size END AS held_bytes
    FROM recordings
),
moments AS (  -- the instants at which bytes_held is measured
    SELECT day, 'end' AS kind, day_end AS at FROM days
    UNION ALL SELECT day, 'start', day_start FROM days
    UNION ALL SELECT day, 'week_before', day_end - INTERVAL 7 DAY FROM days
),
held AS (
    SELECT m.day, m.kind, coalesce(sum(r.held_bytes), 0)::BIGINT AS bytes_held, count(r.recording_id) AS recordings_held,
           count(r.recording_id) FILTER (WHERE r.held_bytes IS NULL) AS recordings_size_unknown
    FROM moments AS m
    LEFT JOIN sized AS r
      ON r.created_at < m.at
     AND r.expires_at > m.at
     AND (r.deleted_at IS NULL OR r.deleted_at > m.at)
    GROUP BY m.day, m.kind
),
added AS (
    SELECT d.day, coalesce(sum(r.held_bytes), 0)::BIGINT AS bytes_added
    FROM days AS d
    LEFT JOIN sized AS r ON r.created_at >= d.day_start AND r.created_at < d.day_end
    GROUP BY d.day
),
freed AS (
    SELECT d.day, coalesce(sum(x.bytes), 0)::BIGINT AS bytes_freed_at_audian
    FROM days AS d
    LEFT JOIN audian_deletions AS x ON x.deleted_at >= d.day_start AND x.deleted_at < d.day_end
    GROUP BY d.day
),
per_day AS (
    SELECT
        d.day,
        d.day_end                                   AS measured_at,
        e.recordings_held,
        e.recordings_size_unknown,
        e.bytes_held,
        a.bytes_added,
        f.bytes_freed_at_audian,
        st.bytes_held + a.bytes_added - e.bytes_held AS bytes_removed,
        e.bytes_held - st.bytes_held                AS net_growth_bytes,
        s.quota_bytes,
        greatest(floor(epoch(d.day_end - s.history_start) / 86400), 0)::INTEGER AS history_days,
        (e.bytes_held - w.bytes_held) / 7.0         AS week_rate
    FROM days AS d
    CROSS JOIN settings AS s
    JOIN held AS e  ON e.day = d.day  AND e.kind = 'end'
    JOIN held AS st ON st.day = d.day AND st.kind = 'start'
    JOIN held AS w  ON w.day = d.day  AND w.kind = 'week_before'
    JOIN added AS a ON a.day = d.day
    JOIN freed AS f ON f.day = d.day
),
rated AS (
    SELECT *, CASE WHEN history_days >= 7 THEN week_rate END AS rate FROM per_day
),
projected AS (
    SELECT
        *,
        CASE
            WHEN bytes_held >= quota_bytes THEN 0.0
            WHEN rate > 0 THEN (quota_bytes - bytes_held) / rate
        END AS days_until,
        CASE
            WHEN bytes_held >= quota_bytes THEN 'already full'
            WHEN rate IS NULL THEN format('needs 7 days of history, has {}', coalesce(history_days, 0))
            WHEN rate > 0 THEN 'projected'
            ELSE 'not filling at this rate'
        END AS projection
    FROM rated
)
SELECT
    day,
    measured_at,
    recordings_held,
    recordings_size_unknown,
    bytes_held,
    bytes_added,
    bytes_removed,
    bytes_freed_at_audian,
    net_growth_bytes,
    quota_bytes,
    round(100.0 * bytes_held / quota_bytes, 2)                                 AS pct_of_quota,
    round(rate)::BIGINT                                                        AS recent_daily_growth_bytes,
    round(days_until, 1)                                                       AS days_until_full,
    timezone('UTC', measured_at + to_seconds(days_until * 86400))::DATE       AS projected_full_on,
    history_days,
    projection
FROM projected
ORDER BY day;
