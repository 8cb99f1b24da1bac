//! Isolation Forest benchmarks: scoring (100 trees, 12 features, batches of 8,192 rows)
//! and training (170,000 rows), single-threaded scoring as in the pipeline.
//!
//! `cargo bench --bench model`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use contrail::model::{ForestParams, Model, TrainOptions, TrainingMetadata};

const FEATURES: usize = 12;

/// Column-major features: a mix of scales and shapes, with 1% outliers.
fn columns(rows: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..FEATURES)
        .map(|f| {
            (0..rows)
                .map(|_| {
                    let base: f64 = (0..4).map(|_| rng.random_range(-1.0..1.0)).sum::<f64>()
                        * (f as f64 + 1.0)
                        * 10.0;
                    if rng.random_bool(0.01) {
                        base * 20.0
                    } else {
                        base
                    }
                })
                .collect()
        })
        .collect()
}

fn metadata(rows: usize) -> TrainingMetadata {
    TrainingMetadata {
        rows,
        time_start: None,
        time_end: None,
        source: "benches/model.rs".into(),
        seed: 0,
        command: "cargo bench --bench model".into(),
        code_version: env!("CARGO_PKG_VERSION").into(),
        trained_at: "2026-11-25T00:00:00Z".into(),
        training_seconds: 0.0,
    }
}

fn train(cols: Vec<Vec<f64>>) -> Model {
    let names = (0..FEATURES).map(|f| format!("f{f}")).collect();
    let rows = cols[0].len();
    let options = TrainOptions {
        params: ForestParams {
            n_estimators: 100,
            max_samples: 256,
            seed: 1,
        },
        contamination: None,
    };
    Model::train(names, cols, &options, metadata(rows)).unwrap()
}

fn bench_scoring(c: &mut Criterion) {
    let model = train(columns(50_000, 1));
    let rows = 8_192;
    let cols = columns(rows, 2);
    let data: Vec<f64> = (0..rows)
        .flat_map(|r| cols.iter().map(move |c| c[r]))
        .collect();
    let mut group = c.benchmark_group("isolation_forest");
    group.throughput(Throughput::Elements(rows as u64));
    let mut out = Vec::with_capacity(rows);
    let mut buf = data.clone();
    group.bench_function("score_8192_rows_100_trees_12_features", |b| {
        b.iter(|| {
            buf.copy_from_slice(&data);
            model.score_rows(&mut buf, &mut out);
            std::hint::black_box(&out);
        })
    });
    // The node-by-node walk the forest is stored as, one row at a time: the layout the
    // compiled scorer replaced.
    group.bench_function("score_8192_rows_node_walk", |b| {
        b.iter(|| {
            out.clear();
            out.extend(
                data.chunks_exact(FEATURES)
                    .map(|row| model.forest.score_row(row)),
            );
            std::hint::black_box(&out);
        })
    });
    group.finish();
}

fn bench_training(c: &mut Criterion) {
    let cols = columns(170_000, 3);
    let mut group = c.benchmark_group("isolation_forest");
    group.sample_size(10);
    group.throughput(Throughput::Elements(170_000));
    group.bench_function("train_170k_rows_100_trees_12_features", |b| {
        b.iter(|| std::hint::black_box(train(cols.clone())))
    });
    group.finish();
}

criterion_group!(benches, bench_scoring, bench_training);
criterion_main!(benches);
