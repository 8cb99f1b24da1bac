-- aggregate.sql: partial aggregates of one micro-batch per (window, aircraft).
--
-- Reads `records`: the micro-batch's processed records (every column features.sql
-- returns) that are not late, plus `_partition` (the Kafka partition they came from).
-- Returns one row per (_partition, window_start, icao24) with the columns below; the
-- pipeline merges these partials into its window state and emits a window once the
-- watermark has passed its end (flight-aircraft-aggregates per aircraft,
-- flight-aggregated-data merged over all aircraft).
--
-- Partials must merge exactly whatever the batch boundaries, so sums are integers in
-- fixed point: velocity (m/s) x 1e6, altitude (m) x 1e3, anomaly score x 1e9, each value
-- rounded before it is added. Minima and maxima are in the original units.
--
-- Settings substituted before planning: ${window_seconds} (--window-length). The window
-- must be the ${window_seconds}-second bin counted from the Unix epoch (checked at run
-- time against the watermark logic).
WITH binned AS (
    SELECT
        _partition,
        date_bin(INTERVAL '${window_seconds} seconds', timestamp, TIMESTAMP '1970-01-01T00:00:00Z') AS window_start,
        icao24,
        is_anomaly,
        velocity,
        COALESCE(baro_altitude, geo_altitude) AS altitude,
        anomaly_score
    FROM records
)
SELECT
    _partition,
    window_start,
    icao24,
    COUNT(*)                                                 AS event_count,
    SUM(CASE WHEN is_anomaly THEN 1 ELSE 0 END)              AS anomaly_count,
    COUNT(velocity)                                          AS velocity_count,
    SUM(CAST(round(velocity * 1e6) AS BIGINT))               AS velocity_sum_e6,
    MIN(velocity)                                            AS velocity_min,
    MAX(velocity)                                            AS velocity_max,
    COUNT(altitude)                                          AS altitude_count,
    SUM(CAST(round(altitude * 1e3) AS BIGINT))               AS altitude_sum_e3,
    MIN(altitude)                                            AS altitude_min,
    MAX(altitude)                                            AS altitude_max,
    COUNT(anomaly_score)                                     AS anomaly_score_count,
    SUM(CAST(round(anomaly_score * 1e9) AS BIGINT))          AS anomaly_score_sum_e9
FROM binned
GROUP BY _partition, window_start, icao24
