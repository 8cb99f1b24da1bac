//! The pipeline's logic as SQL files users edit: `sql/clean.sql` then `sql/features.sql`,
//! run by DataFusion on each micro-batch, and `sql/aggregate.sql` for the window partials.
//!
//! Files may use `${name}` settings (see [`SqlVars`]); they are substituted before planning.
//! The files are read-only queries (DDL, DML and statements are refused). At load time each
//! is planned once, against the schemas of its inputs (`raw`, then what `clean.sql`
//! returns, then the processed records), and run on empty inputs to check it: `clean.sql`
//! keeps `_seq`, `features.sql` produces every column of the processed contract, and
//! `aggregate.sql` every partial column the window state merges. A file that fails is
//! reported with its path and DataFusion's message. Every micro-batch then executes the
//! same physical plans again (only a file calling a time-dependent function such as `now()`
//! is planned per batch): planning was most of the per-batch fixed cost.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{SortOptions, concat_batches};
use arrow::datatypes::{DataType, Field, FieldRef, Int64Type, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNode;
use datafusion::datasource::TableType;
use datafusion::execution::SessionState;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{Expr, LogicalPlan, ScalarUDF};
use datafusion::physical_expr::PhysicalSortExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::memory::{LazyBatchGenerator, LazyMemoryExec};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use parking_lot::RwLock;

use super::continuity::{PREVIOUS_SCHEMA, link_schema};
use super::decode::raw_with_seq_schema;
use super::window::{BatchPartial, PARTITION_COLUMN, read_partials};
use crate::error::{Error, Result};
use crate::schema::{PROCESSING_TIMESTAMP, SEQ_COLUMN, processed_contract_columns};
use crate::udf::{IsAnomaly, IsolationForestScore, Scorer};

/// Settings the SQL files may reference as `${name}`.
pub type SqlVars = BTreeMap<String, String>;

/// One SQL file, read and with its settings substituted.
#[derive(Debug, Clone)]
pub struct SqlFile {
    pub path: PathBuf,
    pub sql: String,
}

impl SqlFile {
    pub fn load(path: &Path, vars: &SqlVars) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io("reading SQL file", path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            sql: substitute(path, &text, vars)?,
        })
    }

    fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::Sql {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }
}

/// Replaces `${name}` with its value; an unknown name is an error naming the line.
fn substitute(path: &Path, text: &str, vars: &SqlVars) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| Error::Sql {
                path: path.to_path_buf(),
                message: format!("line {}: unterminated ${{", n + 1),
            })?;
            let name = &after[..end];
            let value = vars.get(name).ok_or_else(|| Error::Sql {
                path: path.to_path_buf(),
                message: format!(
                    "line {}: unknown setting ${{{name}}} (known: {})",
                    n + 1,
                    vars.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })?;
            out.push_str(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    Ok(out)
}

/// What the SQL made of one micro-batch.
#[derive(Debug)]
pub struct SqlOutput {
    /// `_seq` of every row `clean.sql` kept.
    pub kept: Vec<i64>,
    /// The output of `clean.sql`.
    pub clean: RecordBatch,
    /// The output of `features.sql`, in whatever order DataFusion produced it.
    pub features: RecordBatch,
}

/// A table the SQL reads: registered once, with a schema fixed at load time; each run
/// puts its batch in, and the plans made at load time read whatever is in it when they
/// execute.
///
/// A table with a `_seq` column (`raw`, `clean`) holds its rows sorted by it, and says so to
/// the planner: operators that keep their input's order (a hash join's probe side) then
/// keep arrival order.
struct Input {
    name: &'static str,
    schema: SchemaRef,
    slot: Slot,
}

type Slot = Arc<Mutex<Option<RecordBatch>>>;

impl Input {
    fn register(ctx: &SessionContext, name: &'static str, schema: SchemaRef) -> Result<Self> {
        let slot = Slot::default();
        let by_seq = schema.column_with_name(SEQ_COLUMN).map(|(i, _)| i);
        ctx.register_table(
            name,
            Arc::new(SlotTable {
                schema: Arc::clone(&schema),
                slot: Arc::clone(&slot),
                by_seq,
            }),
        )?;
        Ok(Self { name, schema, slot })
    }

    /// Puts `batch` in, under the table's schema (the same columns; a column that is
    /// nullable in the batch but not in the table must hold no null), sorted by `_seq`
    /// if the table has it.
    fn set(&self, batch: RecordBatch) -> Result<()> {
        let batch = if self.schema.column_with_name(SEQ_COLUMN).is_some() {
            sorted_by_seq(batch)?
        } else {
            batch
        };
        let batch = if batch.schema() == self.schema {
            batch
        } else {
            RecordBatch::try_new(Arc::clone(&self.schema), batch.columns().to_vec()).map_err(
                |e| Error::Internal(format!("table {}: batch does not fit: {e}", self.name)),
            )?
        };
        *self.slot.lock().expect("slot lock") = Some(batch);
        Ok(())
    }

    fn clear(&self) {
        *self.slot.lock().expect("slot lock") = None;
    }
}

/// The table provider of an [`Input`]: its scan reads the slot when the plan executes,
/// not when it is planned, so one physical plan serves every micro-batch. It reports no
/// statistics, so the planner cannot fold the load-time (empty) input into the plan.
#[derive(Debug)]
struct SlotTable {
    schema: SchemaRef,
    slot: Slot,
    /// Position of `_seq`, by which the rows are sorted.
    by_seq: Option<usize>,
}

#[async_trait::async_trait]
impl TableProvider for SlotTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let reader = SlotReader {
            slot: Arc::clone(&self.slot),
            done: false,
        };
        let generator: Arc<RwLock<dyn LazyBatchGenerator>> = Arc::new(RwLock::new(reader));
        let mut exec = LazyMemoryExec::try_new(Arc::clone(&self.schema), vec![generator])?
            .with_projection(projection.cloned());
        let seq = self.by_seq.and_then(|i| match projection {
            None => Some(i),
            Some(p) => p.iter().position(|&c| c == i),
        });
        if let Some(at) = seq {
            // What `sorted_by_seq` does: ascending, nulls first.
            exec.add_ordering([PhysicalSortExpr::new(
                Arc::new(Column::new(SEQ_COLUMN, at)),
                SortOptions::default(),
            )]);
        }
        Ok(Arc::new(exec))
    }
}

/// Yields the slot's batch once per execution.
#[derive(Debug)]
struct SlotReader {
    slot: Slot,
    done: bool,
}

impl std::fmt::Display for SlotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("micro-batch")
    }
}

impl LazyBatchGenerator for SlotReader {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn generate_next_batch(&mut self) -> datafusion::error::Result<Option<RecordBatch>> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(None);
        }
        Ok(self.slot.lock().expect("slot lock").clone())
    }

    fn reset_state(&self) -> Arc<RwLock<dyn LazyBatchGenerator>> {
        Arc::new(RwLock::new(SlotReader {
            slot: Arc::clone(&self.slot),
            done: false,
        }))
    }
}

/// One SQL file, planned once (at load time) against the inputs' schemas.
struct Query {
    file: SqlFile,
    plan: Plan,
    schema: SchemaRef,
}

enum Plan {
    /// The physical plan every run executes (after resetting its operators' state).
    Reused(Arc<dyn ExecutionPlan>),
    /// The logical plan of a file calling a function whose value depends on when it runs
    /// (`now()`): the optimiser folds those into constants, so it is planned per run.
    PerRun(LogicalPlan),
}

/// Optimises `plan` and plans it physically.
async fn physical_plan(
    state: &SessionState,
    plan: &LogicalPlan,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    let plan = state.optimize(plan)?;
    state
        .query_planner()
        .create_physical_plan(&plan, state)
        .await
}

impl Query {
    async fn plan(ctx: &SessionContext, file: SqlFile) -> Result<Self> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let state = ctx.state();
        let plan = state
            .create_logical_plan(&file.sql)
            .await
            .and_then(|plan| {
                options.verify_plan(&plan)?;
                Ok(plan)
            })
            .map_err(|e| file.error(e))?;
        let schema: SchemaRef = Arc::clone(plan.schema().inner());
        let plan = if calls_stable_functions(&plan).map_err(|e| file.error(e))? {
            Plan::PerRun(plan)
        } else {
            Plan::Reused(
                physical_plan(&state, &plan)
                    .await
                    .map_err(|e| file.error(e))?,
            )
        };
        Ok(Self { file, plan, schema })
    }

    fn keeps_seq(&self) -> Result<()> {
        match self.schema.field_with_name(SEQ_COLUMN) {
            Ok(f) if f.data_type() == &DataType::Int64 => Ok(()),
            _ => Err(self
                .file
                .error(format!("output must keep the {SEQ_COLUMN} column (Int64)"))),
        }
    }

    #[cfg(test)]
    fn time_dependent(&self) -> bool {
        matches!(self.plan, Plan::PerRun(_))
    }
}

/// Whether `plan` calls a function that is neither immutable nor volatile: `now()`,
/// `current_date()` and the like, constant within one query but not across runs.
fn calls_stable_functions(plan: &LogicalPlan) -> datafusion::error::Result<bool> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::{Expr, Volatility};
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.func.signature().volatility == Volatility::Stable
                {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(found)
}

/// The three SQL files on one DataFusion session, each planned once.
pub struct SqlPipeline {
    ctx: SessionContext,
    raw: Input,
    previous: Input,
    clean_input: Input,
    records: Input,
    clean: Query,
    features: Query,
    aggregate: Query,
}

impl std::fmt::Debug for SqlPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlPipeline")
            .field("clean", &self.clean.file.path)
            .field("features", &self.features.file.path)
            .field("aggregate", &self.aggregate.file.path)
            .finish_non_exhaustive()
    }
}

impl SqlPipeline {
    /// Loads `clean.sql`, `features.sql` and `aggregate.sql` from `dir`, plans them and
    /// checks them.
    pub async fn load(dir: &Path, vars: &SqlVars, scorer: &Scorer) -> Result<Self> {
        let clean = SqlFile::load(&dir.join("clean.sql"), vars)?;
        let features = SqlFile::load(&dir.join("features.sql"), vars)?;
        let aggregate = SqlFile::load(&dir.join("aggregate.sql"), vars)?;
        let config = SessionConfig::new()
            // A micro-batch is small; one partition avoids repartitioning it per query.
            .with_target_partitions(1)
            .with_information_schema(false)
            // Plans are executed again for every micro-batch (`reset_plan_states`), which
            // dynamic filters do not support.
            .set_bool("datafusion.optimizer.enable_dynamic_filter_pushdown", false);
        let ctx = SessionContext::new_with_config(config);
        ctx.register_udf(ScalarUDF::from(IsolationForestScore::new(scorer.clone())));
        ctx.register_udf(ScalarUDF::from(IsAnomaly::new(scorer.clone())));
        // Each file is planned against the output schema of the one before it.
        let raw = Input::register(&ctx, "raw", raw_with_seq_schema())?;
        let previous = Input::register(&ctx, "previous", Arc::clone(&PREVIOUS_SCHEMA))?;
        let clean = Query::plan(&ctx, clean).await?;
        clean.keeps_seq()?;
        let clean_input = Input::register(&ctx, "clean", link_schema(&clean.schema))?;
        let features = Query::plan(&ctx, features).await?;
        let records = Input::register(
            &ctx,
            "records",
            with_partition_field(&super::processed_schema(&features.schema)),
        )?;
        let aggregate = Query::plan(&ctx, aggregate).await?;
        let pipeline = Self {
            ctx,
            raw,
            previous,
            clean_input,
            records,
            clean,
            features,
            aggregate,
        };
        pipeline.check().await?;
        Ok(pipeline)
    }

    /// The schema of the processed records this plan makes (see
    /// [`super::processed_schema`]).
    pub fn processed_schema(&self) -> SchemaRef {
        super::processed_schema(&self.features.schema)
    }

    /// An error naming `features.sql`.
    pub fn features_error(&self, message: impl std::fmt::Display) -> Error {
        self.features.file.error(message)
    }

    /// Runs the three files on empty inputs and checks their output columns.
    async fn check(&self) -> Result<()> {
        self.features.keeps_seq()?;
        let schema = &self.features.schema;
        let missing: Vec<String> = processed_contract_columns()
            .into_iter()
            .filter(|c| c != PROCESSING_TIMESTAMP && schema.field_with_name(c).is_err())
            .collect();
        if !missing.is_empty() {
            return Err(self.features.file.error(format!(
                "output lacks contract columns: {}",
                missing.join(", ")
            )));
        }
        let retyped = retyped_columns(schema);
        if !retyped.is_empty() {
            return Err(self.features.file.error(format!(
                "output changes the type of contract columns: {}",
                retyped.join("; ")
            )));
        }
        if schema.field_with_name(PROCESSING_TIMESTAMP).is_ok() {
            return Err(self.features.file.error(format!(
                "must not produce {PROCESSING_TIMESTAMP}: the pipeline stamps it"
            )));
        }
        let empty_raw = RecordBatch::new_empty(raw_with_seq_schema());
        let empty_prev = RecordBatch::new_empty(Arc::clone(&PREVIOUS_SCHEMA));
        let out = self.run(empty_raw, empty_prev).await?;
        self.partials(&super::finish(&out.features, 0)?, &[])
            .await?;
        Ok(())
    }

    /// Runs `aggregate.sql` on processed `records`, the source partition of each row in
    /// `partitions`, and reads its partials (what is wrong with them names the file).
    pub async fn partials(
        &self,
        records: &RecordBatch,
        partitions: &[i32],
    ) -> Result<Vec<BatchPartial>> {
        let out = self
            .run_aggregate(with_partition_column(records, partitions)?)
            .await?;
        read_partials(&out).map_err(|e| self.aggregate_error(e))
    }

    /// Runs `aggregate.sql` on `records` (processed rows with `_partition`).
    pub async fn run_aggregate(&self, records: RecordBatch) -> Result<RecordBatch> {
        self.records.set(records)?;
        let out = self.query(&self.aggregate).await;
        self.records.clear();
        out
    }

    /// The path of `aggregate.sql`, for errors about what it returned.
    pub fn aggregate_error(&self, message: impl std::fmt::Display) -> Error {
        self.aggregate.file.error(message)
    }

    /// Runs a planned file on the inputs as they are now.
    async fn query(&self, query: &Query) -> Result<RecordBatch> {
        let file = &query.file;
        let state = self.ctx.state();
        let physical = match &query.plan {
            Plan::Reused(plan) => reset_plan_states(Arc::clone(plan)),
            Plan::PerRun(plan) => physical_plan(&state, plan).await,
        }
        .map_err(|e| file.error(e))?;
        let schema = physical.schema();
        let batches = collect(physical, state.task_ctx())
            .await
            .map_err(|e| file.error(e))?;
        Ok(concat_batches(&schema, &batches)?)
    }

    /// Runs `clean.sql` on `raw`, then `features.sql` on its output and `previous`.
    pub async fn run(&self, raw: RecordBatch, previous: RecordBatch) -> Result<SqlOutput> {
        let input_rows = raw.num_rows();
        self.raw.set(raw)?;
        let clean = self.query(&self.clean).await;
        self.raw.clear();
        let clean = clean?;
        if clean.num_rows() > input_rows {
            return Err(self.clean.file.error(format!(
                "returned {} rows from {input_rows}: it may only drop rows",
                clean.num_rows()
            )));
        }
        let kept = seq_values(&clean);
        let clean_rows = clean.num_rows();

        self.clean_input
            .set(super::continuity::with_links(&clean)?)?;
        self.previous.set(previous)?;
        let features = self.query(&self.features).await;
        self.clean_input.clear();
        self.previous.clear();
        let features = features?;
        if features.num_rows() != clean_rows {
            return Err(self.features.file.error(format!(
                "returned {} rows from {clean_rows}: it must return exactly one row per input row",
                features.num_rows()
            )));
        }
        Ok(SqlOutput {
            kept,
            clean,
            features,
        })
    }
}

/// `schema` with the `_partition` column [`with_partition_column`] appends.
fn with_partition_field(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<FieldRef> = schema.fields().to_vec();
    fields.push(Arc::new(Field::new(
        PARTITION_COLUMN,
        DataType::Int32,
        false,
    )));
    Arc::new(Schema::new(fields))
}

/// `batch` with an Int32 `_partition` column appended (`partitions[i]` for row `i`).
pub fn with_partition_column(batch: &RecordBatch, partitions: &[i32]) -> Result<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(arrow::array::Int32Array::from(
        partitions.to_vec(),
    )));
    Ok(RecordBatch::try_new(
        with_partition_field(&batch.schema()),
        columns,
    )?)
}

/// `batch` sorted by its `_seq` column (ascending, nulls first): as it is already when the
/// SQL kept its input's order, which costs one pass over `_seq` instead of copying every
/// column.
pub fn sorted_by_seq(batch: RecordBatch) -> Result<RecordBatch> {
    let seq = batch
        .column_by_name(SEQ_COLUMN)
        .ok_or_else(|| Error::Internal(format!("no {SEQ_COLUMN} column to sort by")))?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| Error::Internal(format!("{SEQ_COLUMN} is not Int64")))?;
    if seq.null_count() == 0 && seq.values().is_sorted() {
        return Ok(batch);
    }
    let order = arrow::compute::sort_to_indices(seq, None, None)?;
    Ok(arrow::compute::take_record_batch(&batch, &order)?)
}

/// The `_seq` column of a batch that has one.
pub fn seq_values(batch: &RecordBatch) -> Vec<i64> {
    batch
        .column_by_name(SEQ_COLUMN)
        .map(|c| c.as_primitive::<Int64Type>().values().to_vec())
        .unwrap_or_default()
}

/// Contract columns of `features.sql`'s output whose type is not the one the pipeline
/// itself reads them as (continuity, message keys, windows, the archive's folders):
/// another type would fail every batch.
fn retyped_columns(schema: &Schema) -> Vec<String> {
    use arrow::datatypes::TimeUnit::Microsecond;
    [
        ("icao24", "Utf8"),
        ("timestamp", "Timestamp(µs)"),
        ("latitude", "Float64"),
        ("longitude", "Float64"),
        ("altitude_ft", "Float64"),
    ]
    .into_iter()
    .filter_map(|(name, want)| {
        let t = schema.field_with_name(name).ok()?.data_type();
        let read = match name {
            "icao24" => *t == DataType::Utf8,
            "timestamp" => matches!(t, DataType::Timestamp(Microsecond, _)),
            _ => *t == DataType::Float64,
        };
        (!read).then(|| format!("{name} is {t}, the pipeline reads it as {want}"))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> SqlVars {
        [
            ("grid_cell_deg".to_string(), "1.0".to_string()),
            ("window_seconds".to_string(), "600".to_string()),
        ]
        .into()
    }

    #[test]
    fn substitutes_settings_and_names_unknown_ones() {
        let p = Path::new("x.sql");
        assert_eq!(
            substitute(p, "a ${grid_cell_deg} b", &vars()).unwrap(),
            "a 1.0 b\n"
        );
        let e = substitute(p, "ok\nfloor(${nope})", &vars())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.sql") && e.contains("line 2") && e.contains("${nope}"),
            "{e}"
        );
    }

    async fn pipeline_with(clean: &str, features: &str) -> Result<SqlPipeline> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("clean.sql"), clean).unwrap();
        std::fs::write(dir.path().join("features.sql"), features).unwrap();
        std::fs::write(dir.path().join("aggregate.sql"), repo_sql("aggregate.sql")).unwrap();
        SqlPipeline::load(dir.path(), &vars(), &Scorer::unfitted()).await
    }

    fn repo_sql(name: &str) -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("sql").join(name))
            .unwrap()
    }

    #[tokio::test]
    async fn the_shipped_sql_files_pass_the_checks() {
        pipeline_with(&repo_sql("clean.sql"), &repo_sql("features.sql"))
            .await
            .unwrap();
    }

    /// Plans are made once, but the optimiser folds `now()` into a constant: a file that
    /// calls it is optimised again per run, so its value is the run's, not the load's.
    #[tokio::test]
    async fn now_is_evaluated_per_run_not_at_load_time() {
        let features = repo_sql("features.sql").replace(
            "SELECT s.*, is_anomaly(anomaly_score) AS is_anomaly",
            "SELECT s.*, is_anomaly(anomaly_score) AS is_anomaly, now() AS evaluated_at",
        );
        let sql = pipeline_with(&repo_sql("clean.sql"), &features)
            .await
            .unwrap();
        assert!(sql.features.time_dependent() && !sql.clean.time_dependent());
        let raw = crate::pipeline::decode::decode(&[crate::bus::Message {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            payload: br#"{"timestamp":"2026-11-25T10:00:00Z","icao24":"abc123","callsign":"DLH1    ","origin_country":"Germany","latitude":50.0,"longitude":8,"velocity":200,"baro_altitude":null,"geo_altitude":null,"vertical_rate":null,"heading":90.5,"on_ground":false,"squawk":null,"spi":false,"position_source":0,"category":null,"sensors":[1,2],"last_contact":1795600800,"ingest_timestamp":"2026-11-25T10:00:01Z"}"#.to_vec().into(),
        }])
        .unwrap();
        assert!(raw.rejected.is_empty(), "{:?}", raw.rejected);
        let raw = raw.batch;
        let mut seen = Vec::new();
        for _ in 0..2 {
            let empty = RecordBatch::new_empty(Arc::clone(&PREVIOUS_SCHEMA));
            let out = sql.run(raw.clone(), empty).await.unwrap();
            assert_eq!(out.features.num_rows(), 1);
            let at = out.features.column_by_name("evaluated_at").unwrap();
            seen.push(
                at.as_primitive::<arrow::datatypes::TimestampNanosecondType>()
                    .value(0),
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(seen[1] > seen[0], "{seen:?}");
    }

    /// Raw records of three aircraft reporting in turn, a second apart, as one batch.
    fn raw_batch(records: usize) -> RecordBatch {
        let messages: Vec<crate::bus::Message> = (0..records)
            .map(|i| crate::bus::Message {
                topic: "t".into(),
                partition: 0,
                offset: i as i64,
                key: None,
                payload: format!(
                    r#"{{"timestamp":"2026-11-25T10:00:{:02}Z","icao24":"abc12{}","callsign":"DLH1","origin_country":"Germany","latitude":{},"longitude":8,"velocity":200,"baro_altitude":3000,"geo_altitude":null,"vertical_rate":0,"heading":90,"on_ground":false,"squawk":null,"spi":false,"position_source":0,"category":null,"sensors":null,"last_contact":1795600800,"ingest_timestamp":"2026-11-25T10:01:00Z"}}"#,
                    i % 60,
                    i % 3,
                    50.0 + i as f64 * 0.01
                )
                .into_bytes()
                .into(),
            })
            .collect();
        let decoded = crate::pipeline::decode::decode(&messages).unwrap();
        assert!(decoded.rejected.is_empty(), "{:?}", decoded.rejected);
        decoded.batch
    }

    fn seq(batch: &RecordBatch) -> Vec<i64> {
        seq_values(batch)
    }

    /// `raw` and `clean` declare their rows sorted by `_seq`, so the shipped features.sql
    /// (whose joins probe with the batch's rows) returns them in arrival order, and the
    /// planner leaves out sorts on `_seq`. That declaration holds even when clean.sql
    /// reorders its rows: a window function over `_seq` in features.sql still sees them in
    /// order.
    #[tokio::test]
    async fn rows_reach_features_sql_in_arrival_order() {
        let previous = || RecordBatch::new_empty(Arc::clone(&PREVIOUS_SCHEMA));
        let shipped = pipeline_with(&repo_sql("clean.sql"), &repo_sql("features.sql"))
            .await
            .unwrap();
        let out = shipped.run(raw_batch(30), previous()).await.unwrap();
        assert_eq!(seq(&out.features), (0..30).collect::<Vec<i64>>());

        let clean = format!("{}ORDER BY _seq DESC\n", repo_sql("clean.sql"));
        let features = repo_sql("features.sql").replace(
            "SELECT s.*, is_anomaly(anomaly_score) AS is_anomaly",
            "SELECT s.*, is_anomaly(anomaly_score) AS is_anomaly, \
             lag(_seq) OVER (ORDER BY _seq) AS seq_before",
        );
        let reordering = pipeline_with(&clean, &features).await.unwrap();
        let out = reordering.run(raw_batch(30), previous()).await.unwrap();
        assert_eq!(seq(&out.clean), (0..30).rev().collect::<Vec<i64>>());
        let features = sorted_by_seq(out.features).unwrap();
        assert_eq!(seq(&features), (0..30).collect::<Vec<i64>>());
        let before: Vec<Option<i64>> = features
            .column_by_name("seq_before")
            .unwrap()
            .as_primitive::<Int64Type>()
            .iter()
            .collect();
        let expected: Vec<Option<i64>> = (0..30).map(|i| (i > 0).then(|| i - 1)).collect();
        assert_eq!(before, expected);
    }

    #[tokio::test]
    async fn bad_edits_are_rejected_with_the_file_named() {
        let features = repo_sql("features.sql");
        let cases = [
            (
                repo_sql("clean.sql").replace("_seq\nFROM raw", "1 AS x\nFROM raw"),
                features.clone(),
                "clean.sql",
            ),
            (
                "SELEC * FROM raw".to_string(),
                features.clone(),
                "clean.sql",
            ),
            ("DROP TABLE raw".to_string(), features.clone(), "clean.sql"),
            (
                repo_sql("clean.sql"),
                features.replace("    flight_phase,\n", ""),
                "flight_phase",
            ),
            (
                repo_sql("clean.sql"),
                features.replace(
                    "AS is_anomaly\nFROM scored",
                    "AS is_anomaly, now() AS processing_timestamp\nFROM scored",
                ),
                "processing_timestamp",
            ),
        ];
        for (clean, features, expected) in cases {
            let e = pipeline_with(&clean, &features)
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{expected}: {e}");
        }
    }
}
