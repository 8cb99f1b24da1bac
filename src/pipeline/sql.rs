//! The pipeline's logic as SQL files users edit: `sql/clean.sql` then `sql/features.sql`,
//! run by DataFusion on each micro-batch, and `sql/aggregate.sql` for the window partials.
//!
//! Files may use `${name}` settings (see [`SqlVars`]); they are substituted before planning.
//! Both files are read-only queries (DDL, DML and statements are refused). At load time they
//! are planned against empty inputs and checked: `clean.sql` keeps `_seq`,
//! `features.sql` produces every column of the processed contract, and `aggregate.sql`
//! every partial column the window state merges. A file that fails is
//! reported with its path and DataFusion's message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::continuity::PREVIOUS_SCHEMA;
use super::decode::raw_with_seq_schema;
use super::window::{PARTITION_COLUMN, read_partials};
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

/// The two SQL stages on one DataFusion session.
pub struct SqlPipeline {
    ctx: SessionContext,
    clean: SqlFile,
    features: SqlFile,
    aggregate: SqlFile,
}

impl std::fmt::Debug for SqlPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlPipeline")
            .field("clean", &self.clean.path)
            .field("features", &self.features.path)
            .field("aggregate", &self.aggregate.path)
            .finish_non_exhaustive()
    }
}

impl SqlPipeline {
    /// Loads `clean.sql`, `features.sql` and `aggregate.sql` from `dir` and checks them.
    pub async fn load(dir: &Path, vars: &SqlVars, scorer: &Scorer) -> Result<Self> {
        let clean = SqlFile::load(&dir.join("clean.sql"), vars)?;
        let features = SqlFile::load(&dir.join("features.sql"), vars)?;
        let aggregate = SqlFile::load(&dir.join("aggregate.sql"), vars)?;
        let config = SessionConfig::new()
            // A micro-batch is small; one partition avoids repartitioning it per query.
            .with_target_partitions(1)
            .with_information_schema(false);
        let ctx = SessionContext::new_with_config(config);
        ctx.register_udf(ScalarUDF::from(IsolationForestScore::new(scorer.clone())));
        ctx.register_udf(ScalarUDF::from(IsAnomaly::new(scorer.clone())));
        let pipeline = Self {
            ctx,
            clean,
            features,
            aggregate,
        };
        pipeline.check().await?;
        Ok(pipeline)
    }

    /// Plans and runs both files on empty inputs and checks their output columns.
    async fn check(&self) -> Result<()> {
        let empty_raw = RecordBatch::new_empty(raw_with_seq_schema());
        let empty_prev = RecordBatch::new_empty(Arc::clone(&PREVIOUS_SCHEMA));
        let out = self.run(empty_raw, empty_prev).await?;
        let schema = out.features.schema();
        let missing: Vec<String> = processed_contract_columns()
            .into_iter()
            .filter(|c| c != PROCESSING_TIMESTAMP && schema.field_with_name(c).is_err())
            .collect();
        if !missing.is_empty() {
            return Err(self.features.error(format!(
                "output lacks contract columns: {}",
                missing.join(", ")
            )));
        }
        if schema.field_with_name(PROCESSING_TIMESTAMP).is_ok() {
            return Err(self.features.error(format!(
                "must not produce {PROCESSING_TIMESTAMP}: the pipeline stamps it"
            )));
        }
        let records = with_partition_column(&out.features, &[])?;
        let partials = self.run_aggregate(records).await?;
        read_partials(&partials).map_err(|e| self.aggregate.error(e))?;
        Ok(())
    }

    /// Runs `aggregate.sql` on `records` (processed rows with `_partition`).
    pub async fn run_aggregate(&self, records: RecordBatch) -> Result<RecordBatch> {
        self.ctx.register_batch("records", records)?;
        let out = self.query(&self.aggregate, false).await;
        self.ctx.deregister_table("records")?;
        out
    }

    /// The path of `aggregate.sql`, for errors about what it returned.
    pub fn aggregate_error(&self, message: impl std::fmt::Display) -> Error {
        self.aggregate.error(message)
    }

    async fn query(&self, file: &SqlFile, keeps_seq: bool) -> Result<RecordBatch> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self
            .ctx
            .sql_with_options(&file.sql, options)
            .await
            .map_err(|e| file.error(e))?;
        let schema: SchemaRef = Arc::clone(df.schema().inner());
        let batches = df.collect().await.map_err(|e| file.error(e))?;
        let batch = concat_batches(&schema, &batches)?;
        if keeps_seq
            && batch
                .schema()
                .field_with_name(SEQ_COLUMN)
                .map(|f| f.data_type().clone())
                .ok()
                != Some(arrow::datatypes::DataType::Int64)
        {
            return Err(file.error(format!("output must keep the {SEQ_COLUMN} column (Int64)")));
        }
        Ok(batch)
    }

    /// Runs `clean.sql` on `raw`, then `features.sql` on its output and `previous`.
    pub async fn run(&self, raw: RecordBatch, previous: RecordBatch) -> Result<SqlOutput> {
        let input_rows = raw.num_rows();
        self.ctx.register_batch("raw", raw)?;
        let clean = self.query(&self.clean, true).await;
        self.ctx.deregister_table("raw")?;
        let clean = clean?;
        if clean.num_rows() > input_rows {
            return Err(self.clean.error(format!(
                "returned {} rows from {input_rows}: it may only drop rows",
                clean.num_rows()
            )));
        }
        let kept = seq_values(&clean);
        let clean_rows = clean.num_rows();

        self.ctx
            .register_batch("clean", super::continuity::with_links(&clean)?)?;
        self.ctx.register_batch("previous", previous)?;
        let features = self.query(&self.features, true).await;
        self.ctx.deregister_table("clean")?;
        self.ctx.deregister_table("previous")?;
        let features = features?;
        if features.num_rows() != clean_rows {
            return Err(self.features.error(format!(
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

/// `batch` with an Int32 `_partition` column appended (`partitions[i]` for row `i`).
pub fn with_partition_column(batch: &RecordBatch, partitions: &[i32]) -> Result<RecordBatch> {
    let mut fields: Vec<arrow::datatypes::FieldRef> = batch.schema().fields().to_vec();
    fields.push(Arc::new(arrow::datatypes::Field::new(
        PARTITION_COLUMN,
        arrow::datatypes::DataType::Int32,
        false,
    )));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(arrow::array::Int32Array::from(
        partitions.to_vec(),
    )));
    Ok(RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
    )?)
}

/// The `_seq` column of a batch that has one.
pub fn seq_values(batch: &RecordBatch) -> Vec<i64> {
    batch
        .column_by_name(SEQ_COLUMN)
        .map(|c| c.as_primitive::<Int64Type>().values().to_vec())
        .unwrap_or_default()
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
