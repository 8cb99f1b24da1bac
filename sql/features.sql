-- features.sql: derived features for every state vector.
--
-- Reads `clean` (the output of clean.sql) and `previous` (each aircraft's last report from
-- earlier micro-batches: icao24, prev_timestamp, prev_latitude, prev_longitude,
-- prev_altitude_ft). Must return exactly one row per `clean` row, keep `_seq`, and carry
-- every raw column plus the features listed in DESIGN.md; the pipeline checks this when it
-- starts. `processing_timestamp` is added by the pipeline afterwards.
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
            WHEN altitude_ft < 4000 AND vertical_rate_fpm <= -300       THEN 'approach'
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
-- The aircraft's previous report: the one before it in this batch, else the last one from
-- an earlier batch.
linked AS (
    SELECT
        p.*,
        CASE WHEN lag(_seq) OVER w IS NULL THEN pr.prev_timestamp ELSE lag(timestamp) OVER w END AS p_timestamp,
        CASE WHEN lag(_seq) OVER w IS NULL THEN pr.prev_latitude  ELSE lag(latitude)  OVER w END AS p_latitude,
        CASE WHEN lag(_seq) OVER w IS NULL THEN pr.prev_longitude ELSE lag(longitude) OVER w END AS p_longitude,
        CASE WHEN lag(_seq) OVER w IS NULL THEN pr.prev_altitude_ft ELSE lag(altitude_ft) OVER w END AS p_altitude_ft
    FROM phased p
    LEFT JOIN previous pr ON pr.icao24 = p.icao24
    WINDOW w AS (PARTITION BY p.icao24 ORDER BY p._seq)
),
continuity AS (
    SELECT
        l.*,
        date_part('epoch', timestamp) - date_part('epoch', p_timestamp) AS seconds_since_previous,
        2 * 6371.0088 * asin(sqrt(
            power(sin(radians(latitude - p_latitude) / 2), 2)
            + cos(radians(p_latitude)) * cos(radians(latitude))
              * power(sin(radians(longitude - p_longitude) / 2), 2)
        )) AS position_jump_km
    FROM linked l
)
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
    CASE WHEN seconds_since_previous > 0
         THEN position_jump_km / 1.852 / (seconds_since_previous / 3600.0) END AS implied_speed_knots,
    altitude_ft - p_altitude_ft                              AS altitude_change_ft,
    _seq
FROM continuity
LEFT JOIN phase_stats s ON s.stat_phase = flight_phase
