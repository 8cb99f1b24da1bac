-- features.sql: derived features for every state vector.
--
-- Reads `clean` (the output of clean.sql, with `_prev_seq` and `_prev2_seq` appended by the
-- pipeline: the `_seq` of the same aircraft's previous and second previous row in this
-- micro-batch, by arrival order, or null) and `previous` (each aircraft's last two reports
-- from earlier micro-batches: icao24, prev_timestamp, prev_latitude, prev_longitude,
-- prev_altitude_ft, and the same with prev2_ for the one before). Must return exactly one
-- row per `clean` row, keep `_seq`, and carry every raw column plus the features listed in
-- DESIGN.md; the pipeline checks this when it starts. `processing_timestamp` is added by
-- the pipeline afterwards.
--
-- isolation_forest_score(...) scores with the model file (--model); its arguments must be
-- the model's features in the model's order (checked at start-up). is_anomaly(score) is
-- score >= the model's threshold.
--
-- Settings substituted before planning: ${grid_cell_deg} (--grid-cell-deg).
WITH units AS (
    SELECT
        c.*,
        velocity * 1.9438444924406                         AS velocity_knots,
        COALESCE(baro_altitude, geo_altitude) * 3.28083989501 AS altitude_ft,
        vertical_rate * 196.850393700787                   AS vertical_rate_fpm,
        CAST(date_part('hour', timestamp) AS INT)          AS hour,
        -- 0 = Sunday ... 6 = Saturday
        CAST(date_part('dow', timestamp) AS INT)           AS day_of_week
    FROM clean c
),
phased AS (
    SELECT
        u.*,
        CASE
            WHEN on_ground                                              THEN 'ground'
            WHEN altitude_ft IS NULL                                    THEN 'unknown'
            WHEN altitude_ft < 2000 AND vertical_rate_fpm >= 300        THEN 'takeoff'
            -- Low and not climbing: on approach (level segments included).
            WHEN altitude_ft < 5000 AND vertical_rate_fpm < 300         THEN 'approach'
            WHEN vertical_rate_fpm >= 500                               THEN 'climb'
            WHEN vertical_rate_fpm <= -500                              THEN 'descent'
            ELSE 'cruise'
        END AS flight_phase
    FROM units u
),
-- Reference statistics per phase (knots, feet) for the z-scores: typical airliner
-- performance. They are fixed rather than computed per micro-batch so that a record's
-- score does not depend on which batch it arrived in.
phase_stats (stat_phase, velocity_mean, velocity_std, altitude_mean, altitude_std) AS (
    VALUES
        ('ground',    12.0,  10.0,   NULL,    NULL),
        ('takeoff',  160.0,  25.0, 1000.0,   600.0),
        ('climb',    290.0,  60.0, 18000.0, 9000.0),
        ('cruise',   450.0,  45.0, 36000.0, 3500.0),
        ('descent',  300.0,  60.0, 18000.0, 9000.0),
        ('approach', 150.0,  25.0, 2000.0,  1200.0)
),
-- The aircraft's two previous reports: from this batch where it has them (by arrival
-- order), else from `previous` (earlier batches). Comparing with the report before the
-- previous one too tells a one-off jump (both comparisons break) from the report right
-- after it (only the comparison with the jumped report breaks). The pipeline links each
-- row to the aircraft's earlier rows of this batch: `_prev_seq` and `_prev2_seq` are their
-- `_seq` (null when there are none), so two equi-joins find them.
--
-- Each join names its small side first and the batch's rows (right) last: DataFusion
-- builds the join's hash table on its left input and keeps the order of its right one, so
-- the rows stay in arrival order and no table is built from the batch's wide rows.
fixes AS (
    SELECT _seq AS f_seq, timestamp AS f_timestamp, latitude AS f_latitude,
           longitude AS f_longitude, altitude_ft AS f_altitude_ft
    FROM units
),
-- p_*: the previous report; q_*: the one before it.
prior AS (
    SELECT
        p.*,
        CASE WHEN p._prev_seq IS NULL THEN pr.prev_timestamp   ELSE f1.f_timestamp   END AS p_timestamp,
        CASE WHEN p._prev_seq IS NULL THEN pr.prev_latitude    ELSE f1.f_latitude    END AS p_latitude,
        CASE WHEN p._prev_seq IS NULL THEN pr.prev_longitude   ELSE f1.f_longitude   END AS p_longitude,
        CASE WHEN p._prev_seq IS NULL THEN pr.prev_altitude_ft ELSE f1.f_altitude_ft END AS p_altitude_ft,
        CASE WHEN p._prev2_seq IS NOT NULL THEN f2.f_timestamp
             WHEN p._prev_seq IS NOT NULL  THEN pr.prev_timestamp
             ELSE pr.prev2_timestamp END AS q_timestamp,
        CASE WHEN p._prev2_seq IS NOT NULL THEN f2.f_latitude
             WHEN p._prev_seq IS NOT NULL  THEN pr.prev_latitude
             ELSE pr.prev2_latitude END AS q_latitude,
        CASE WHEN p._prev2_seq IS NOT NULL THEN f2.f_longitude
             WHEN p._prev_seq IS NOT NULL  THEN pr.prev_longitude
             ELSE pr.prev2_longitude END AS q_longitude,
        CASE WHEN p._prev2_seq IS NOT NULL THEN f2.f_altitude_ft
             WHEN p._prev_seq IS NOT NULL  THEN pr.prev_altitude_ft
             ELSE pr.prev2_altitude_ft END AS q_altitude_ft
    FROM previous pr RIGHT JOIN (
        fixes f2 RIGHT JOIN (
            fixes f1 RIGHT JOIN phased p ON f1.f_seq = p._prev_seq
        ) ON f2.f_seq = p._prev2_seq
    ) ON pr.icao24 = p.icao24
),
continuity AS (
    SELECT
        c.*,
        date_part('epoch', timestamp) - date_part('epoch', p_timestamp) AS seconds_since_previous,
        date_part('epoch', timestamp) - date_part('epoch', q_timestamp) AS q_seconds,
        2 * 6371.0088 * asin(sqrt(
            power(sin(radians(latitude - p_latitude) / 2), 2)
            + cos(radians(p_latitude)) * cos(radians(latitude))
              * power(sin(radians(longitude - p_longitude) / 2), 2)
        )) AS position_jump_km,
        2 * 6371.0088 * asin(sqrt(
            power(sin(radians(latitude - q_latitude) / 2), 2)
            + cos(radians(q_latitude)) * cos(radians(latitude))
              * power(sin(radians(longitude - q_longitude) / 2), 2)
        )) AS q_jump_km
    FROM prior c
),
-- What the earlier reports imply against what this one says, in knots and ft/min: a
-- frozen position or a teleport breaks the speed, an altitude jump or a vertical-rate
-- spike the climb rate. A report whose position was not refreshed (same time as the
-- previous one) says nothing new and gets no comparison. On the ground the altitude does
-- not change, so any reported vertical rate is a mismatch.
rates AS (
    SELECT
        r.*,
        CASE WHEN seconds_since_previous > 0
             THEN position_jump_km / 1.852 / (seconds_since_previous / 3600.0) END AS implied_speed_knots,
        CASE WHEN seconds_since_previous > 0
             THEN position_jump_km / 1.852 / (seconds_since_previous / 3600.0) - velocity_knots END AS p_speed_mismatch,
        CASE WHEN seconds_since_previous > 0 AND q_seconds > 0
             THEN q_jump_km / 1.852 / (q_seconds / 3600.0) - velocity_knots END AS q_speed_mismatch,
        CASE WHEN on_ground THEN -vertical_rate_fpm
             WHEN seconds_since_previous > 0
             THEN (altitude_ft - p_altitude_ft) / (seconds_since_previous / 60.0) - vertical_rate_fpm END AS p_climb_mismatch,
        CASE WHEN on_ground THEN NULL
             WHEN seconds_since_previous > 0 AND q_seconds > 0
             THEN (altitude_ft - q_altitude_ft) / (q_seconds / 60.0) - vertical_rate_fpm END AS q_climb_mismatch
    FROM continuity r
),
featured AS (
    SELECT
        timestamp, icao24, callsign, origin_country, latitude, longitude, velocity,
        baro_altitude, geo_altitude, vertical_rate, heading, on_ground, squawk, spi,
        position_source, category, sensors, last_contact, ingest_timestamp,
        velocity_knots,
        altitude_ft,
        vertical_rate_fpm,
        flight_phase,
        hour,
        day_of_week,
        sin(2 * pi() * hour / 24.0)        AS hour_sin,
        cos(2 * pi() * hour / 24.0)        AS hour_cos,
        sin(2 * pi() * day_of_week / 7.0)  AS day_of_week_sin,
        cos(2 * pi() * day_of_week / 7.0)  AS day_of_week_cos,
        -- Cell indices from 0 at (-180, -90); the east and north edges belong to the last cell.
        CAST(least(floor((longitude + 180) / ${grid_cell_deg}), ceil(360 / ${grid_cell_deg}) - 1) AS INT) AS grid_x,
        CAST(least(floor((latitude + 90) / ${grid_cell_deg}), ceil(180 / ${grid_cell_deg}) - 1) AS INT)   AS grid_y,
        (velocity_knots - s.velocity_mean) / s.velocity_std      AS velocity_anomaly,
        (altitude_ft - s.altitude_mean) / s.altitude_std         AS altitude_anomaly,
        seconds_since_previous,
        position_jump_km,
        implied_speed_knots,
        altitude_ft - p_altitude_ft                              AS altitude_change_ft,
        -- The size of the smaller mismatch of the two comparisons (see `linked`). Sizes,
        -- not signed values: normal reports then sit at the low end of the range and an
        -- Isolation Forest split anywhere above them isolates a jump, either way.
        least(abs(p_speed_mismatch), abs(q_speed_mismatch))     AS speed_mismatch_knots,
        least(abs(p_climb_mismatch), abs(q_climb_mismatch))     AS climb_mismatch_fpm,
        CASE WHEN squawk IN ('7500', '7600', '7700') THEN 1.0 ELSE 0.0 END AS emergency_squawk,
        _seq
    FROM phase_stats s RIGHT JOIN rates ON s.stat_phase = flight_phase
),
-- The anomaly model: its features, in the order the model file lists them.
scored AS (
    SELECT
        f.*,
        isolation_forest_score(
            speed_mismatch_knots, climb_mismatch_fpm, implied_speed_knots, emergency_squawk
        ) AS anomaly_score
    FROM featured f
)
SELECT s.*, is_anomaly(anomaly_score) AS is_anomaly
FROM scored s
