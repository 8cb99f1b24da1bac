//! `Query`: read-only SQL over `processed`, `windows` and `aircraft_windows`.
//!
//! A table is the Parquet archive's dataset (`<data-dir>/<table>/date=../hour=../*.parquet`;
//! files are listed at every query, so new ones show up) when it has files, else the live
//! store's rows. DDL, DML and other
//! statements are refused at planning. All queries share one memory pool; a query that
//! needs more fails with ResourcesExhausted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::{FairSpillPool, MemoryConsumer};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt as _;

use super::proto::{AircraftWindow, State, Window};
use super::store::{LiveStore, micros};
use crate::pipeline::window::{aircraft_schema, global_schema};

pub const TABLES: [&str; 3] = ["processed", "windows", "aircraft_windows"];

pub struct QueryEngine {
    archive: Option<PathBuf>,
    runtime: Arc<RuntimeEnv>,
    archived: Mutex<HashMap<&'static str, Arc<dyn TableProvider>>>,
}

impl QueryEngine {
    pub fn new(archive: Option<PathBuf>, memory_bytes: usize) -> Result<Self> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(memory_bytes)))
            .build_arc()?;
        Ok(Self {
            archive,
            runtime,
            archived: Mutex::default(),
        })
    }

    fn context(&self) -> SessionContext {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(2);
        SessionContext::new_with_state(
            SessionStateBuilder::new()
                .with_config(config)
                .with_runtime_env(Arc::clone(&self.runtime))
                .with_default_features()
                .build(),
        )
    }

    /// The archive dataset as a listing table, once it has files (cached: listing
    /// tables list their files at every scan).
    async fn archived(
        &self,
        ctx: &SessionContext,
        table: &'static str,
    ) -> Option<Arc<dyn TableProvider>> {
        if let Some(t) = self.archived.lock().expect("tables lock").get(table) {
            return Some(Arc::clone(t));
        }
        let dir = self.archive.as_ref()?.join(table);
        if !dir.is_dir() {
            return None;
        }
        let url = ListingTableUrl::parse(format!("{}/", std::path::absolute(&dir).ok()?.display()))
            .ok()?;
        // Files are listed recursively under the dataset; the `date=`/`hour=` folders are
        // not turned into columns (`processed` has an `hour` column of its own).
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        // No file yet: inference fails or finds nothing; the live store serves meanwhile.
        let schema = options.infer_schema(&ctx.state(), &url).await.ok()?;
        if schema.fields().is_empty() {
            return None;
        }
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(schema);
        let table_provider: Arc<dyn TableProvider> = Arc::new(ListingTable::try_new(config).ok()?);
        self.archived
            .lock()
            .expect("tables lock")
            .insert(table, Arc::clone(&table_provider));
        Some(table_provider)
    }

    /// Plans `sql` (read-only) and starts it.
    pub async fn execute(&self, sql: &str, store: &LiveStore) -> Result<SendableRecordBatchStream> {
        let ctx = self.context();
        // Only the tables the statement reads: a live table is a copy of the store, made
        // per query (`SELECT 1` copies nothing).
        let state = ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect)?;
        let referenced = state.resolve_table_references(&statement)?;
        // The catalog (`SHOW TABLES`, `information_schema.columns`) lists every table.
        let catalog = referenced
            .iter()
            .any(|r| r.schema() == Some("information_schema"));
        // A live table's copy is charged to the shared pool for as long as its query runs,
        // so concurrent queries over a full store fail with ResourcesExhausted rather than
        // take the server's memory.
        let mut copies = Vec::new();
        for table in TABLES {
            if !catalog && !referenced.iter().any(|r| r.table() == table) {
                continue;
            }
            let provider = match self.archived(&ctx, table).await {
                Some(p) => p,
                None => {
                    let batch = live_batch(table, store)?;
                    let copy = MemoryConsumer::new(format!("live table {table}"))
                        .register(&self.runtime.memory_pool);
                    copy.try_grow(batch.get_array_memory_size())?;
                    copies.push(copy);
                    Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?)
                }
            };
            ctx.register_table(table, provider)?;
        }
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let stream = ctx
            .sql_with_options(sql, options)
            .await?
            .execute_stream()
            .await?;
        if copies.is_empty() {
            return Ok(stream);
        }
        let schema = stream.schema();
        // The reservations go with the stream.
        let stream = stream.map(move |batch| {
            let _ = &copies;
            batch
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

fn ts(t: Option<&prost_types::Timestamp>) -> Option<i64> {
    t.and_then(micros)
}

fn ts_array(v: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
}

/// The live store's rows of `table`, as one batch.
fn live_batch(table: &str, store: &LiveStore) -> Result<RecordBatch> {
    match table {
        "windows" => windows_batch(&store.all_windows()),
        "aircraft_windows" => aircraft_windows_batch(&store.all_aircraft_windows()),
        _ => states_batch(&store.all_states()),
    }
}

fn f64s<T>(rows: &[T], f: impl Fn(&T) -> Option<f64>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<Float64Array>())
}

fn i64s<T>(rows: &[T], f: impl Fn(&T) -> i64) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(rows.iter().map(f)))
}

pub fn windows_batch(rows: &[Window]) -> Result<RecordBatch> {
    let columns = vec![
        ts_array(rows.iter().map(|w| ts(w.window_start.as_ref())).collect()),
        ts_array(rows.iter().map(|w| ts(w.window_end.as_ref())).collect()),
        i64s(rows, |w| w.event_count),
        i64s(rows, |w| w.anomaly_count),
        f64s(rows, |w| w.avg_velocity),
        f64s(rows, |w| w.min_velocity),
        f64s(rows, |w| w.max_velocity),
        f64s(rows, |w| w.avg_altitude),
        f64s(rows, |w| w.min_altitude),
        f64s(rows, |w| w.max_altitude),
        i64s(rows, |w| w.unique_aircraft),
        f64s(rows, |w| w.avg_anomaly_score),
    ];
    Ok(RecordBatch::try_new(global_schema(), columns)?)
}

pub fn aircraft_windows_batch(rows: &[AircraftWindow]) -> Result<RecordBatch> {
    let columns = vec![
        ts_array(rows.iter().map(|w| ts(w.window_start.as_ref())).collect()),
        ts_array(rows.iter().map(|w| ts(w.window_end.as_ref())).collect()),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|w| w.icao24.as_str()),
        )) as ArrayRef,
        i64s(rows, |w| w.event_count),
        i64s(rows, |w| w.anomaly_count),
        f64s(rows, |w| w.avg_velocity),
        f64s(rows, |w| w.min_velocity),
        f64s(rows, |w| w.max_velocity),
        f64s(rows, |w| w.avg_altitude),
        f64s(rows, |w| w.min_altitude),
        f64s(rows, |w| w.max_altitude),
        f64s(rows, |w| w.avg_anomaly_score),
    ];
    Ok(RecordBatch::try_new(aircraft_schema(), columns)?)
}

/// The live store's states: the `processed` columns it keeps.
fn states_schema() -> SchemaRef {
    let f = |n: &str| Field::new(n, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        Field::new("timestamp", crate::schema::timestamp_type(), true),
        Field::new("icao24", DataType::Utf8, false),
        Field::new("callsign", DataType::Utf8, true),
        Field::new("origin_country", DataType::Utf8, false),
        f("latitude"),
        f("longitude"),
        f("velocity_knots"),
        f("altitude_ft"),
        f("vertical_rate_fpm"),
        f("heading"),
        Field::new("on_ground", DataType::Boolean, false),
        Field::new("squawk", DataType::Utf8, true),
        Field::new("flight_phase", DataType::Utf8, false),
        f("anomaly_score"),
        Field::new("is_anomaly", DataType::Boolean, false),
        f("speed_mismatch_knots"),
        f("climb_mismatch_fpm"),
        f("position_jump_km"),
        f("seconds_since_previous"),
    ]))
}

fn states_batch(rows: &[State]) -> Result<RecordBatch> {
    let s = |f: fn(&State) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let columns = vec![
        ts_array(rows.iter().map(|r| ts(r.timestamp.as_ref())).collect()),
        s(|r| Some(r.icao24.as_str())),
        s(|r| r.callsign.as_deref()),
        s(|r| Some(r.origin_country.as_str())),
        f64s(rows, |r| r.latitude),
        f64s(rows, |r| r.longitude),
        f64s(rows, |r| r.velocity_knots),
        f64s(rows, |r| r.altitude_ft),
        f64s(rows, |r| r.vertical_rate_fpm),
        f64s(rows, |r| r.heading),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.on_ground))
                .collect::<BooleanArray>(),
        ),
        s(|r| r.squawk.as_deref()),
        s(|r| Some(r.flight_phase.as_str())),
        f64s(rows, |r| r.anomaly_score),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.is_anomaly))
                .collect::<BooleanArray>(),
        ),
        f64s(rows, |r| r.speed_mismatch_knots),
        f64s(rows, |r| r.climb_mismatch_fpm),
        f64s(rows, |r| r.position_jump_km),
        f64s(rows, |r| r.seconds_since_previous),
    ];
    Ok(RecordBatch::try_new(states_schema(), columns)?)
}
