//! `isolation_forest_score(f1, ..., fn)` and `is_anomaly(score)`: the anomaly model as
//! DataFusion scalar functions over Arrow arrays.
//!
//! - Arguments are the model's features, in the model's order, passed as plain columns:
//!   at planning time the argument names are checked against the model's feature names,
//!   so a model and a `features.sql` that disagree stop the pipeline at start-up with
//!   both lists in the message. Only plain column arguments are checked: a constant or
//!   an expression stands in for the feature at its position.
//! - Every numeric type is accepted (cast to Float64); anything else is a planning error.
//! - Null handling: a null or NaN feature takes the model's training median. The score is
//!   null only when every feature of the row is null. `is_anomaly(NULL)` is null.
//! - Array and scalar arguments mix freely; no input makes these functions panic.
//! - The model sits behind a [`Scorer`] handle that can be swapped (hot reload) between
//!   batches. An unfitted scorer (used while training a model) plans like a fitted one,
//!   records the argument names and returns null scores.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::model::Model;

#[derive(Debug)]
enum State {
    Fitted(Arc<Model>),
    /// No model yet: remembers the feature names the SQL passes.
    Unfitted(Mutex<Option<Vec<String>>>),
}

/// A shared, swappable handle on the current model.
#[derive(Debug, Clone)]
pub struct Scorer(Arc<RwLock<State>>);

impl Scorer {
    pub fn fitted(model: Model) -> Self {
        Self(Arc::new(RwLock::new(State::Fitted(Arc::new(model)))))
    }

    pub fn unfitted() -> Self {
        Self(Arc::new(RwLock::new(State::Unfitted(Mutex::new(None)))))
    }

    /// The model now in use, if any.
    pub fn model(&self) -> Option<Arc<Model>> {
        match &*self.0.read().expect("scorer lock") {
            State::Fitted(m) => Some(Arc::clone(m)),
            State::Unfitted(_) => None,
        }
    }

    /// Replaces the model (between batches).
    pub fn swap(&self, model: Model) {
        *self.0.write().expect("scorer lock") = State::Fitted(Arc::new(model));
    }

    /// For an unfitted scorer: the feature names the SQL passed when it was planned.
    pub fn requested_features(&self) -> Option<Vec<String>> {
        match &*self.0.read().expect("scorer lock") {
            State::Unfitted(seen) => seen.lock().expect("features lock").clone(),
            State::Fitted(m) => Some(m.features.clone()),
        }
    }
}

/// `isolation_forest_score(feature, ...) -> Float64`
#[derive(Debug)]
pub struct IsolationForestScore {
    signature: Signature,
    scorer: Scorer,
}

impl IsolationForestScore {
    pub fn new(scorer: Scorer) -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            scorer,
        }
    }
}

impl PartialEq for IsolationForestScore {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.scorer.0, &other.scorer.0)
    }
}
impl Eq for IsolationForestScore {}
impl Hash for IsolationForestScore {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

fn numeric_or_null(t: &DataType) -> bool {
    t.is_numeric() || t == &DataType::Null
}

impl ScalarUDFImpl for IsolationForestScore {
    fn name(&self) -> &str {
        "isolation_forest_score"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.is_empty() {
            return plan_err!("isolation_forest_score needs the model's features as arguments");
        }
        if let Some((i, t)) = arg_types
            .iter()
            .enumerate()
            .find(|(_, t)| !numeric_or_null(t))
        {
            return plan_err!(
                "isolation_forest_score argument {} is {t}; features must be numeric",
                i + 1
            );
        }
        Ok(vec![DataType::Float64; arg_types.len()])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        let names: Vec<String> = args
            .arg_fields
            .iter()
            .map(|f| strip_cast(f.name()).to_string())
            .collect();
        // Only plain column arguments are checked by name: a constant or an expression
        // (a field named like `abs(x)` or `Float64(1)`) stands in for its feature.
        let constant = |i: usize| {
            args.scalar_arguments.get(i).is_some_and(Option::is_some) || names[i].ends_with(')')
        };
        match &*self.scorer.0.read().expect("scorer lock") {
            State::Fitted(model)
                if model.features.len() != names.len()
                    || names
                        .iter()
                        .zip(&model.features)
                        .enumerate()
                        .any(|(i, (n, f))| !constant(i) && n != f) =>
            {
                return plan_err!(
                    "isolation_forest_score is called with ({}) but the model was trained on ({})",
                    names.join(", "),
                    model.features.join(", ")
                );
            }
            State::Fitted(_) => {}
            State::Unfitted(seen) => *seen.lock().expect("features lock") = Some(names),
        }
        Ok(Arc::new(Field::new(self.name(), DataType::Float64, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let Some(model) = self.scorer.model() else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Float64(None)));
        };
        let n = model.features.len();
        if args.args.len() != n {
            return exec_err!(
                "isolation_forest_score got {} arguments; the model has {n} features",
                args.args.len()
            );
        }
        let rows = if all_scalar { 1 } else { rows };
        // Row-major features (NaN = missing) and, per row, whether any feature was present.
        let mut data = vec![f64::NAN; rows * n];
        let mut present = vec![false; rows];
        for (f, arg) in args.args.iter().enumerate() {
            match arg {
                ColumnarValue::Scalar(s) => {
                    let v = match s.cast_to(&DataType::Float64)? {
                        ScalarValue::Float64(Some(v)) => v,
                        _ => f64::NAN,
                    };
                    if !v.is_nan() {
                        present.iter_mut().for_each(|p| *p = true);
                        (0..rows).for_each(|r| data[r * n + f] = v);
                    }
                }
                ColumnarValue::Array(a) => {
                    if a.len() != rows {
                        return exec_err!(
                            "isolation_forest_score argument {} has {} rows, expected {rows}",
                            f + 1,
                            a.len()
                        );
                    }
                    let a: ArrayRef = if a.data_type() == &DataType::Float64 {
                        Arc::clone(a)
                    } else {
                        cast(a, &DataType::Float64)?
                    };
                    let values = a.as_primitive::<Float64Type>();
                    for r in 0..rows {
                        if values.is_valid(r) && !values.value(r).is_nan() {
                            data[r * n + f] = values.value(r);
                            present[r] = true;
                        }
                    }
                }
            }
        }
        let mut scores = Vec::with_capacity(rows);
        model.score_rows(&mut data, &mut scores);
        let out: Float64Array = scores
            .iter()
            .zip(&present)
            .map(|(s, p)| p.then_some(*s))
            .collect();
        if all_scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Argument fields of implicitly cast columns are named like `CAST(t.x AS Float64)`;
/// the feature is `x`.
fn strip_cast(name: &str) -> &str {
    let inner = name
        .strip_prefix("CAST(")
        .and_then(|rest| rest.rsplit_once(" AS "))
        .map_or(name, |(inner, _)| inner);
    inner.rsplit_once('.').map_or(inner, |(_, column)| column)
}

/// `is_anomaly(score) -> Boolean`: the score is at least the current model's threshold.
#[derive(Debug)]
pub struct IsAnomaly {
    signature: Signature,
    scorer: Scorer,
}

impl IsAnomaly {
    pub fn new(scorer: Scorer) -> Self {
        Self {
            signature: Signature::exact(vec![DataType::Float64], Volatility::Immutable),
            scorer,
        }
    }
}

impl PartialEq for IsAnomaly {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.scorer.0, &other.scorer.0)
    }
}
impl Eq for IsAnomaly {}
impl Hash for IsAnomaly {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl ScalarUDFImpl for IsAnomaly {
    fn name(&self) -> &str {
        "is_anomaly"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let threshold = self.scorer.model().map(|m| m.threshold);
        let [arg] = args.args.as_slice() else {
            return exec_err!("is_anomaly takes one argument, got {}", args.args.len());
        };
        match arg {
            ColumnarValue::Scalar(s) => {
                let v = match (s, threshold) {
                    (ScalarValue::Float64(Some(v)), Some(t)) => Some(*v >= t),
                    _ => None,
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(v)))
            }
            ColumnarValue::Array(a) => {
                let scores = a.as_primitive::<Float64Type>();
                let out: BooleanArray = match threshold {
                    Some(t) => scores.iter().map(|s| s.map(|s| s >= t)).collect(),
                    None => BooleanArray::new_null(scores.len()),
                };
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ForestParams, TrainOptions, TrainingMetadata};
    use datafusion::logical_expr::ScalarUDF;
    use datafusion::prelude::SessionContext;

    fn model() -> Model {
        let a: Vec<f64> = (0..2000).map(|i| (i % 100) as f64).collect();
        let b: Vec<f64> = (0..2000).map(|i| ((i * 7) % 50) as f64).collect();
        let meta = TrainingMetadata {
            rows: 2000,
            time_start: None,
            time_end: None,
            source: "test".into(),
            seed: 1,
            command: "test".into(),
            code_version: "test".into(),
            trained_at: "2026-11-25T00:00:00Z".into(),
            training_seconds: 0.0,
        };
        let options = TrainOptions {
            params: ForestParams {
                n_estimators: 50,
                max_samples: 256,
                seed: 1,
            },
            contamination: None,
        };
        Model::train(vec!["a".into(), "b".into()], vec![a, b], &options, meta).unwrap()
    }

    async fn ctx(scorer: &Scorer) -> SessionContext {
        let ctx = SessionContext::new();
        ctx.register_udf(ScalarUDF::from(IsolationForestScore::new(scorer.clone())));
        ctx.register_udf(ScalarUDF::from(IsAnomaly::new(scorer.clone())));
        ctx.sql("CREATE TABLE t (a DOUBLE, b INT, c VARCHAR) AS VALUES (50.0, 25, 'x'), (1000.0, -300, 'y'), (NULL, 25, 'z'), (NULL, NULL, 'w')")
            .await
            .unwrap();
        ctx
    }

    async fn scores(ctx: &SessionContext, sql: &str) -> Vec<Option<f64>> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<Float64Type>()
                    .iter()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn scores_arrays_scalars_and_nulls_like_the_model() {
        let m = model();
        let scorer = Scorer::fitted(m.clone());
        let ctx = ctx(&scorer).await;
        let s = scores(&ctx, "SELECT isolation_forest_score(a, b) FROM t").await;
        let expect = |a: f64, b: f64| m.forest.score_row(&[a, b]);
        assert_eq!(s[0], Some(expect(50.0, 25.0)));
        assert_eq!(s[1], Some(expect(1000.0, -300.0)));
        assert_eq!(
            s[2],
            Some(expect(m.scaler.median[0], 25.0)),
            "a null takes the median"
        );
        assert_eq!(s[3], None, "all features null: null score");
        assert!(s[1].unwrap() > s[0].unwrap());
        // Scalars, alone and mixed with arrays.
        let s = scores(&ctx, "SELECT isolation_forest_score(1000.0, -300)").await;
        assert_eq!(s, vec![Some(expect(1000.0, -300.0))]);
        let s = scores(
            &ctx,
            "SELECT isolation_forest_score(a, 7) AS a FROM t WHERE a IS NOT NULL",
        )
        .await;
        assert_eq!(s, vec![Some(expect(50.0, 7.0)), Some(expect(1000.0, 7.0))]);
        let flags = ctx
            .sql("SELECT is_anomaly(isolation_forest_score(a, b)) FROM t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let flags: Vec<Option<bool>> = flags[0].column(0).as_boolean().iter().collect();
        assert_eq!(flags[1], Some(s[1].unwrap() >= m.threshold));
        assert_eq!(flags[3], None);
    }

    #[tokio::test]
    async fn wrong_features_fail_at_planning_with_both_lists() {
        let scorer = Scorer::fitted(model());
        let ctx = ctx(&scorer).await;
        for (sql, expected) in [
            (
                "SELECT isolation_forest_score(b, a) FROM t",
                "called with (b, a) but the model was trained on (a, b)",
            ),
            ("SELECT isolation_forest_score(a) FROM t", "called with (a)"),
            (
                "SELECT isolation_forest_score(a, c) FROM t",
                "argument 2 is Utf8",
            ),
            (
                "SELECT isolation_forest_score() FROM t",
                "needs the model's features",
            ),
        ] {
            let e = match ctx.sql(sql).await {
                Ok(df) => df.collect().await.unwrap_err().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(e.contains(expected), "{sql}: {e}");
        }
    }

    #[tokio::test]
    async fn an_unfitted_scorer_records_the_features_and_scores_null_then_swaps() {
        let scorer = Scorer::unfitted();
        let ctx = ctx(&scorer).await;
        assert_eq!(
            scores(&ctx, "SELECT isolation_forest_score(a, b) FROM t").await,
            vec![None; 4]
        );
        assert_eq!(
            scorer.requested_features(),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        scorer.swap(model());
        assert!(scores(&ctx, "SELECT isolation_forest_score(a, b) FROM t").await[0].is_some());
    }
}
