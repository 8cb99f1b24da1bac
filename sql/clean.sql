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
-- The contract ingest checks (src/ingest/validate.rs), again: records can reach the raw
-- topic another way. Comparisons put NaN above every number, so NaN fails each range.
WHERE latitude BETWEEN -90 AND 90
  AND longitude BETWEEN -180 AND 180
  AND regexp_like(icao24, '^[0-9A-Fa-f]{6}$')
  AND (velocity IS NULL OR velocity BETWEEN 0 AND 3000)
  AND (baro_altitude IS NULL OR baro_altitude BETWEEN -2000 AND 100000)
  AND (geo_altitude IS NULL OR geo_altitude BETWEEN -2000 AND 100000)
  AND (vertical_rate IS NULL OR vertical_rate BETWEEN -1000 AND 1000)
  AND (heading IS NULL OR heading BETWEEN 0 AND 360)
  AND position_source BETWEEN 0 AND 3
  AND (category IS NULL OR category BETWEEN 0 AND 20)
  AND last_contact > 0
  AND (squawk IS NULL OR regexp_like(squawk, '^[0-7]{4}$'))
