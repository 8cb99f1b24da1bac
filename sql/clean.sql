-- clean.sql: normalise raw state vectors.
--
-- Reads the table `raw` (the micro-batch, DESIGN.md's raw contract, plus `_seq`: the
-- record's arrival position in the batch). Returns at most one row per input row and must
-- keep `_seq`. Rows this query filters out are not lost: the pipeline sends each one to the
-- dead-letter topic with reason `filtered_by_clean_sql`.
SELECT
    timestamp,
    lower(trim(icao24))              AS icao24,
    -- OpenSky pads callsigns to 8 characters; inner spaces are kept.
    NULLIF(trim(callsign), '')       AS callsign,
    trim(origin_country)             AS origin_country,
    latitude,
    longitude,
    velocity,
    baro_altitude,
    geo_altitude,
    vertical_rate,
    heading,
    on_ground,
    squawk,
    spi,
    position_source,
    category,
    sensors,
    last_contact,
    ingest_timestamp,
    _seq
FROM raw
WHERE latitude BETWEEN -90 AND 90
  AND longitude BETWEEN -180 AND 180
  AND (velocity IS NULL OR velocity >= 0)
