-- report_durations: how long are our recordings, and how much of their calls do they cover?
-- Per UTC day of created_at, file format and channel count: how many recordings, their total, mean, median (p50),
-- p90 and longest duration in seconds, beside the duration of their calls where the call is known.
--
-- Per format and channels, not per participant: Audian's GET /v2/recordings/{id} does not return which participant
-- (all, caller, callee) a recording captured, so the lake has no participant column to group by.
-- Counted: recordings that have stopped (status stopped, processing, completed or failed), since duration reads 0
-- until then; deleted recordings too, since they were made that day. A duration Audian has not given (NULL) stays
-- unknown: the recording counts in recordings and durations_unknown, and the duration figures are over the others.
-- A missing file_format (detail not fetched, or no file yet) shows as 'unknown', as for a failed recording described
-- by its recording.failed webhook (no file, so no detail call). channels is Audian's where its detail call gave it;
-- for a recording described by its recording.completed webhook (recordings.detail_source = 'webhook', which carries
-- no channel count) it is the count measured from the downloaded file (recording_audio.probed_channels, the latest
-- probe that read one, verified or not), NULL until a download could be probed.
-- Percentiles are quantile_cont: linear interpolation between the two nearest durations (numpy's default method),
-- so p50 of 10, 20, 30, 40 is 25. Means and percentiles are rounded to 0.1 s.
-- A call is known when `calls` holds it and it has ended (ended_at set); calls_known counts the recordings whose call
-- is known, and the call columns sum and average over those recordings (a call with two recordings counts twice).
-- recorded_pct_of_call is over matching pairs only, the recordings whose duration and whose call are both known:
-- 100 * matched_recorded_s / matched_call_s, where matched_recorded_s sums those recordings' durations and
-- matched_call_s their calls' durations. A recording without a known call, or a known call whose recording has no
-- duration yet, is in neither sum, so an unknown never reads as a gap in coverage.
CREATE OR REPLACE VIEW report_durations AS
WITH ended_calls AS (
    SELECT call_id, duration AS call_duration
    FROM calls
    WHERE ended_at IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY call_id ORDER BY fetched_at DESC) = 1
),
probed_files AS (
    SELECT recording_id, probed_channels
    FROM recording_audio
    WHERE probed_channels IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY recording_id ORDER BY last_attempt_at DESC) = 1
),
stopped AS (
    SELECT
        timezone('UTC', r.created_at)::DATE AS day,
        coalesce(r.file_format, 'unknown') AS file_format,
        CASE WHEN r.detail_source = 'webhook' THEN f.probed_channels ELSE r.channels END AS channels,
        r.duration,
        c.call_duration,
        r.duration IS NOT NULL AND c.call_duration IS NOT NULL AS matched
    FROM recordings AS r
    LEFT JOIN ended_calls AS c ON c.call_id = r.call_id
    LEFT JOIN probed_files AS f ON f.recording_id = r.recording_id
    WHERE r.status IN ('stopped', 'processing', 'completed', 'failed')
)
SELECT
    day,
    file_format,
    channels,
    count(*)                                      AS recordings,
    count(*) - count(duration)                    AS durations_unknown,
    sum(duration)::BIGINT                         AS total_duration_s,
    round(avg(duration), 1)                       AS mean_duration_s,
    round(quantile_cont(duration, 0.5), 1)        AS p50_duration_s,
    round(quantile_cont(duration, 0.9), 1)        AS p90_duration_s,
    max(duration)                                 AS max_duration_s,
    count(call_duration)                          AS calls_known,
    sum(call_duration)::BIGINT                    AS total_call_duration_s,
    round(avg(call_duration), 1)                  AS mean_call_duration_s,
    sum(duration) FILTER (WHERE matched)::BIGINT  AS matched_recorded_s,
    sum(call_duration) FILTER (WHERE matched)::BIGINT AS matched_call_s,
    round(100.0 * sum(duration) FILTER (WHERE matched)
          / nullif(sum(call_duration) FILTER (WHERE matched), 0), 1) AS recorded_pct_of_call
FROM stopped
GROUP BY day, file_format, channels
ORDER BY day, file_format, channels;
