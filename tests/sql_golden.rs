//! Golden tests of the shipped SQL files: a fixture micro-batch goes through `sql/clean.sql`
//! and `sql/features.sql`; each output is compared, one JSON object per row, with
//! `tests/golden/<file>.jsonl`. A change to the SQL shows up as a reviewed diff of those
//! files: regenerate them with `CONTRAIL_BLESS=1 cargo test --test sql_golden`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{sort_to_indices, take_record_batch};
use arrow::json::ReaderBuilder;
use contrail::bus::Message;
use contrail::model::Model;
use contrail::pipeline::continuity::PREVIOUS_SCHEMA;
use contrail::pipeline::decode::decode;
use contrail::pipeline::encode::to_json_rows;
use contrail::pipeline::sql::{SqlPipeline, SqlVars, with_partition_column};
use contrail::udf::Scorer;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/fixtures/sql").join(name)).unwrap()
}

fn raw_batch() -> RecordBatch {
    let messages: Vec<Message> = fixture("raw.jsonl")
        .lines()
        .enumerate()
        .map(|(i, l)| Message {
            topic: "raw".into(),
            partition: 0,
            offset: i as i64,
            key: None,
            payload: l.as_bytes().to_vec().into(),
        })
        .collect();
    let decoded = decode(&messages).unwrap();
    assert!(
        decoded.rejected.is_empty(),
        "fixture rows must decode: {:?}",
        decoded.rejected
    );
    decoded.batch
}

fn previous_batch() -> RecordBatch {
    let text = fixture("previous.jsonl");
    let mut reader = ReaderBuilder::new(Arc::clone(&PREVIOUS_SCHEMA))
        .build(text.as_bytes())
        .unwrap();
    reader.next().unwrap().unwrap()
}

fn sorted_by_seq(batch: &RecordBatch) -> RecordBatch {
    let Some(seq) = batch.column_by_name("_seq") else {
        return batch.clone();
    };
    let idx = sort_to_indices(seq, None, None).unwrap();
    take_record_batch(batch, &idx).unwrap()
}

fn check_golden(name: &str, batch: &RecordBatch) {
    let rows = to_json_rows(&sorted_by_seq(batch)).unwrap();
    let mut actual = String::new();
    for r in rows.iter() {
        actual.push_str(std::str::from_utf8(r).unwrap());
        actual.push('\n');
    }
    let path = root().join("tests/golden").join(name);
    if std::env::var_os("CONTRAIL_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (CONTRAIL_BLESS=1 creates it)", path.display()));
    if expected != actual {
        for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
            if e != a {
                panic!("{name} row {i} differs\nexpected: {e}\nactual:   {a}");
            }
        }
        panic!(
            "{name}: {} expected rows, {} actual",
            expected.lines().count(),
            actual.lines().count()
        );
    }
}

async fn run() -> contrail::pipeline::sql::SqlOutput {
    let (_, out) = run_with_pipeline().await;
    out
}

async fn run_with_pipeline() -> (SqlPipeline, contrail::pipeline::sql::SqlOutput) {
    let vars: SqlVars = [
        ("grid_cell_deg".to_string(), "1.0".to_string()),
        ("window_seconds".to_string(), "600".to_string()),
    ]
    .into();
    // The shipped model scores the fixture: retraining it shows up in the golden diff.
    let model = Model::load(&root().join("models/flight_anomaly_detector.json")).unwrap();
    let sql = SqlPipeline::load(&root().join("sql"), &vars, &Scorer::fitted(model))
        .await
        .unwrap();
    let out = sql.run(raw_batch(), previous_batch()).await.unwrap();
    (sql, out)
}

#[tokio::test]
async fn clean_sql_golden() {
    let out = run().await;
    // Rows 8 (latitude 91) and 10 (negative velocity) are filtered; the pipeline
    // dead-letters them.
    assert_eq!(out.kept, vec![0, 1, 2, 3, 4, 5, 6, 7, 9]);
    check_golden("clean.jsonl", &out.clean);
}

#[tokio::test]
async fn features_sql_golden() {
    let out = run().await;
    check_golden("features.jsonl", &out.features);
}

#[tokio::test]
async fn aggregate_sql_golden() {
    let (sql, out) = run_with_pipeline().await;
    // Rows alternate between two partitions in arrival order (features.sql's output order
    // is DataFusion's), so partials split by partition too.
    let features = sorted_by_seq(&out.features);
    let parts: Vec<i32> = (0..features.num_rows() as i32).map(|i| i % 2).collect();
    let processed = contrail::pipeline::finish(&features, 0).unwrap();
    let records = with_partition_column(&processed, &parts).unwrap();
    let partials = sql.run_aggregate(records).await.unwrap();
    let sorted = arrow::compute::lexsort_to_indices(
        &["_partition", "window_start", "icao24"].map(|c| arrow::compute::SortColumn {
            values: partials.column_by_name(c).unwrap().clone(),
            options: None,
        }),
        None,
    )
    .unwrap();
    let partials = arrow::compute::take_record_batch(&partials, &sorted).unwrap();
    check_golden("aggregate.jsonl", &partials);
}

/// The plans are made once and executed again for every micro-batch: a run must see only
/// its own inputs (no operator keeps the previous run's build side or rows).
#[tokio::test]
async fn a_reused_plan_gives_what_a_fresh_one_gives() {
    let (sql, first) = run_with_pipeline().await;
    let empty = previous_batch().slice(0, 0);
    let part = raw_batch().slice(2, 5);
    let reused = sql.run(part.clone(), empty.clone()).await.unwrap();
    let (fresh_sql, _) = run_with_pipeline().await;
    let fresh = fresh_sql.run(part, empty).await.unwrap();
    assert_eq!(reused.kept, fresh.kept);
    assert!(
        reused.features.num_rows() > 0 && reused.features.num_rows() < first.features.num_rows()
    );
    assert_eq!(
        sorted_by_seq(&reused.features),
        sorted_by_seq(&fresh.features)
    );
    // And the whole batch again gives the first run's output.
    let again = sql.run(raw_batch(), previous_batch()).await.unwrap();
    assert_eq!(
        sorted_by_seq(&again.features),
        sorted_by_seq(&first.features)
    );
    let records = |b: &RecordBatch| {
        let parts = vec![0; b.num_rows()];
        with_partition_column(&contrail::pipeline::finish(b, 0).unwrap(), &parts).unwrap()
    };
    let partials = sql.run_aggregate(records(&reused.features)).await.unwrap();
    let fresh_partials = fresh_sql
        .run_aggregate(records(&fresh.features))
        .await
        .unwrap();
    assert_eq!(partials.num_rows(), fresh_partials.num_rows());
    assert_eq!(partials, fresh_partials);
}

#[test]
fn golden_files_are_reviewed_text() {
    // Guard against an empty golden file passing by accident.
    for (name, rows) in [
        ("clean.jsonl", 9),
        ("features.jsonl", 9),
        ("aggregate.jsonl", 9),
    ] {
        let p: &Path = &root().join("tests/golden").join(name);
        let text = std::fs::read_to_string(p).unwrap();
        assert_eq!(text.lines().count(), rows, "{name}");
    }
}
