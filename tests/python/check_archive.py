"""Opens Contrail's Parquet archive the way analysts do, with DuckDB and with pyarrow, and
checks the row count and column names.

usage: check_archive.py DATASET_DIR EXPECTED_ROWS COLUMN[,COLUMN...]
Exits non-zero, saying what differs, on any mismatch.
"""
import sys

import duckdb
import pyarrow.dataset as ds


def main() -> int:
    root, expected_rows, columns = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    failures = []

    # The partition key `hour` (the event's UTC hour) has the name and the value of the
    # `hour` feature column, so readers merge the two: compare the columns as a set plus
    # the order of the others, and check that every file's rows agree with its folder.
    ordered = [c for c in columns if c != "hour"]
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true)")
    duck_columns = [c for c in rel.columns if c != "date"]
    duck_rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{root}/**/*.parquet')").fetchall()[0][0]
    duck_distinct = duckdb.sql(
        f"SELECT count(*) FROM (SELECT DISTINCT icao24, last_contact FROM read_parquet('{root}/**/*.parquet'))"
    ).fetchall()[0][0]
    if duck_rows != expected_rows:
        failures.append(f"duckdb: {duck_rows} rows, expected {expected_rows}")
    if duck_distinct != expected_rows:
        failures.append(f"duckdb: {duck_distinct} distinct (icao24, last_contact), expected {expected_rows}")
    if sorted(duck_columns) != sorted(columns) or [c for c in duck_columns if c != "hour"] != ordered:
        failures.append(f"duckdb columns {duck_columns} != {columns}")
    misplaced = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{root}/**/*.parquet', hive_partitioning = false, filename = true) "
        "WHERE regexp_extract(filename, 'hour=([0-9]+)', 1)::INT != hour "
        "OR regexp_extract(filename, 'date=([0-9-]+)', 1) != strftime(timestamp AT TIME ZONE 'UTC', '%Y-%m-%d')"
    ).fetchall()[0][0]
    if misplaced:
        failures.append(f"duckdb: {misplaced} rows sit in a date/hour folder that is not their event time")

    # pyarrow: the dataset API with hive partitioning, as pandas and Polars use it.
    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    arrow_rows = dataset.count_rows()
    arrow_columns = [c for c in dataset.schema.names if c != "date"]
    if arrow_rows != expected_rows:
        failures.append(f"pyarrow: {arrow_rows} rows, expected {expected_rows}")
    if sorted(arrow_columns) != sorted(columns) or [c for c in arrow_columns if c != "hour"] != ordered:
        failures.append(f"pyarrow columns {arrow_columns} != {columns}")
    ts_type = str(dataset.schema.field("timestamp").type)
    if ts_type != "timestamp[us, tz=UTC]":
        failures.append(f"pyarrow: timestamp is {ts_type}")

    for f in failures:
        print("FAIL", f, file=sys.stderr)
    if not failures:
        print(f"archive ok: {duck_rows} rows, {len(columns)} columns (duckdb {duckdb.__version__})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
