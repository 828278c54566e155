-- report_conversation: how do our calls sound: who talks how much, how much dead air, how often both talk at once?
-- Per UTC day of the recording's created_at and call direction (inbound, outbound; 'unknown' while the call is not in
-- `calls`): recordings analysed from the archived audio, the median (p50) and p90 talk ratio, dead air and overlap
-- as shares of the time recorded, turns per minute, and the recording with the longest silence of the group.
--
-- talk_ratio is the caller's share of the two sides' speech (0 to 1), so it exists for stereo recordings only
-- (participant all: caller on the left channel, callee on the right); stereo_recordings counts them. Percentiles are
-- quantile_cont (linear interpolation), rounded to 0.01. dead_air_pct = 100 * total silence / total duration, where
-- silence is nobody speaking for 0.3 s or more; overlap_pct = 100 * total overlap / total duration of the stereo
-- recordings. Mono recordings count in dead air and speech, not in talk ratio, overlap or turns.
-- not_analysed counts verified recordings whose audio could not be decoded or read (recording_speech.reason says why).
CREATE OR REPLACE VIEW report_conversation AS
WITH known_calls AS (
    SELECT call_id, direction
    FROM calls
    QUALIFY row_number() OVER (PARTITION BY call_id ORDER BY fetched_at DESC) = 1
),
speech AS (
    SELECT
        timezone('UTC', s.created_at)::DATE AS day,
        coalesce(c.direction, 'unknown')     AS direction,
        r.call_id,
        s.*
    FROM recording_speech AS s
    LEFT JOIN recordings AS r ON r.recording_id = s.recording_id
    LEFT JOIN known_calls AS c ON c.call_id = r.call_id
)
SELECT
    day,
    direction,
    count(*) FILTER (WHERE outcome = 'analysed')                              AS recordings_analysed,
    count(*) FILTER (WHERE outcome <> 'analysed')                             AS not_analysed,
    count(talk_ratio)                                                         AS stereo_recordings,
    round(quantile_cont(talk_ratio, 0.5), 2)                                  AS p50_talk_ratio,
    round(quantile_cont(talk_ratio, 0.9), 2)                                  AS p90_talk_ratio,
    round(sum(duration_seconds))::BIGINT                                      AS recorded_s,
    round(100.0 * sum(silence_seconds) / nullif(sum(duration_seconds), 0), 2) AS dead_air_pct,
    round(100.0 * sum(overlap_seconds)
          / nullif(sum(duration_seconds) FILTER (WHERE overlap_seconds IS NOT NULL), 0), 2) AS overlap_pct,
    round(sum(turns) / nullif(sum(duration_seconds) FILTER (WHERE turns IS NOT NULL) / 60, 0), 2) AS turns_per_minute,
    round(max(longest_monologue_seconds), 1)                                  AS longest_monologue_s,
    round(max(longest_silence_seconds), 1)                                    AS longest_silence_s,
    arg_max(recording_id, longest_silence_seconds)                            AS longest_silence_recording_id,
    arg_max(call_id, longest_silence_seconds)                                 AS longest_silence_call_id
FROM speech
GROUP BY day, direction
ORDER BY day, direction;
