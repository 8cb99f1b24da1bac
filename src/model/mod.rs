//! The anomaly model: an Isolation Forest over named features, with the imputation it
//! needs and the metadata that says how it was made, and its versioned file format.
//!
//! A missing value (null, NaN) is replaced by the feature's training median before
//! scoring; an Isolation Forest's axis-parallel splits are unchanged by per-feature affine
//! scaling, so no other transform is applied (mean and standard deviation are stored as a
//! description of the training data). No DataFusion, Arrow or tokio here: the UDF in
//! `crate::udf` wraps this.

pub mod isolation_forest;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use isolation_forest::{ForestParams, IsolationForest};

/// Identifies the file format; bumped on any incompatible change.
pub const FORMAT: &str = "contrail-isolation-forest";
pub const FORMAT_VERSION: u32 = 1;

/// Per-feature statistics of the training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaler {
    /// Used for missing values.
    pub median: Vec<f64>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Share of training rows where the feature was missing.
    pub missing: Vec<f64>,
}

/// How the model was made: enough to reproduce it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingMetadata {
    pub rows: usize,
    /// Event-time range of the training rows (RFC 3339), when known.
    pub time_start: Option<String>,
    pub time_end: Option<String>,
    pub source: String,
    pub seed: u64,
    pub command: String,
    pub code_version: String,
    pub trained_at: String,
    pub training_seconds: f64,
}

/// The model file's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub format: String,
    pub format_version: u32,
    /// Ordered feature names: the UDF's arguments, in this order.
    pub features: Vec<String>,
    pub scaler: Scaler,
    /// A record is an anomaly when its score is at least this.
    pub threshold: f64,
    /// Share of training rows the threshold flags, when set from `contamination`.
    pub contamination: Option<f64>,
    pub params: ForestParams,
    pub forest: IsolationForest,
    pub training: TrainingMetadata,
}

/// Why a model file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {path}: {message}")]
    Invalid { path: String, message: String },
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let m = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[m - 1] + values[m]) / 2.0
    } else {
        values[m]
    }
}

impl Scaler {
    /// Statistics of `columns` (NaN = missing).
    pub fn fit(columns: &[Vec<f64>]) -> Self {
        let mut s = Scaler {
            median: vec![],
            mean: vec![],
            std: vec![],
            missing: vec![],
        };
        for col in columns {
            let mut present: Vec<f64> = col.iter().copied().filter(|v| !v.is_nan()).collect();
            let n = present.len().max(1) as f64;
            let mean = present.iter().sum::<f64>() / n;
            let var = present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            s.missing
                .push(1.0 - present.len() as f64 / col.len().max(1) as f64);
            s.mean.push(mean);
            s.std.push(var.sqrt());
            s.median.push(median(&mut present));
        }
        s
    }

    /// Replaces NaN in a column with the feature's median.
    pub fn impute(&self, feature: usize, column: &mut [f64]) {
        let m = self.median[feature];
        for v in column.iter_mut().filter(|v| v.is_nan()) {
            *v = m;
        }
    }
}

/// Options of [`Model::train`].
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub params: ForestParams,
    /// Flag this share of the training rows; `None` uses the threshold 0.5.
    pub contamination: Option<f64>,
}

impl Model {
    /// Trains on `columns` (one per feature, NaN = missing), named `features`.
    pub fn train(
        features: Vec<String>,
        mut columns: Vec<Vec<f64>>,
        options: &TrainOptions,
        training: TrainingMetadata,
    ) -> Result<Self, String> {
        if features.len() != columns.len() {
            return Err(format!(
                "{} feature names for {} columns",
                features.len(),
                columns.len()
            ));
        }
        if let Some(c) = options.contamination.filter(|c| !(*c > 0.0 && *c < 0.5)) {
            return Err(format!("contamination {c} must be in (0, 0.5)"));
        }
        let scaler = Scaler::fit(&columns);
        for (f, col) in columns.iter_mut().enumerate() {
            scaler.impute(f, col);
        }
        let forest = IsolationForest::fit(&columns, &options.params)?;
        let threshold = match options.contamination {
            None => 0.5,
            Some(c) => {
                let rows = columns[0].len();
                let mut data = Vec::with_capacity(rows * columns.len());
                for r in 0..rows {
                    data.extend(columns.iter().map(|c| c[r]));
                }
                let mut scores = Vec::new();
                forest.score_rows(&data, &mut scores);
                scores.sort_by(f64::total_cmp);
                // The score at the (1 - c) quantile, as scikit-learn's offset_.
                let k = (((1.0 - c) * rows as f64).ceil() as usize).clamp(1, rows) - 1;
                scores[k]
            }
        };
        Ok(Self {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            features,
            scaler,
            threshold,
            contamination: options.contamination,
            params: options.params.clone(),
            forest,
            training,
        })
    }

    /// Scores rows laid out row-major in `data` (`features.len()` values per row, NaN =
    /// missing, imputed in place) into `out`.
    pub fn score_rows(&self, data: &mut [f64], out: &mut Vec<f64>) {
        let n = self.features.len();
        for row in data.chunks_exact_mut(n) {
            for (f, v) in row.iter_mut().enumerate() {
                if v.is_nan() {
                    *v = self.scaler.median[f];
                }
            }
        }
        self.forest.score_rows(data, out);
    }

    /// Checks everything a scorer relies on; the message names the first problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format is {:?}, expected {FORMAT:?}", self.format));
        }
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "format version {} is not supported (this build reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        let n = self.features.len();
        if n == 0 {
            return Err("no features".into());
        }
        if let Some(dup) = self
            .features
            .iter()
            .enumerate()
            .find(|(i, f)| self.features[..*i].contains(f))
        {
            return Err(format!("feature {:?} listed twice", dup.1));
        }
        for (name, v) in [
            ("median", &self.scaler.median),
            ("mean", &self.scaler.mean),
            ("std", &self.scaler.std),
        ] {
            if v.len() != n {
                return Err(format!(
                    "scaler {name} has {} values for {n} features",
                    v.len()
                ));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(format!("scaler {name} has a non-finite value"));
            }
        }
        if self.forest.n_features != n {
            return Err(format!(
                "forest expects {} features, the file names {n}",
                self.forest.n_features
            ));
        }
        if self.forest.trees.is_empty() || self.forest.sample_size == 0 {
            return Err("forest has no trees".into());
        }
        for (i, t) in self.forest.trees.iter().enumerate() {
            t.validate(n)
                .map_err(|e| format!("corrupt tree {i}: {e}"))?;
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(format!("threshold {} outside (0, 1]", self.threshold));
        }
        Ok(())
    }

    /// Reads and validates a model file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let invalid = |message: String| ModelError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
        // Check the version before the body, so an old or new format says so.
        #[derive(Deserialize)]
        struct Header {
            format: Option<String>,
            format_version: Option<u32>,
        }
        let header: Header =
            serde_json::from_slice(&text).map_err(|e| invalid(format!("not a model file: {e}")))?;
        if header.format.as_deref() != Some(FORMAT) {
            return Err(invalid(format!(
                "format is {:?}, expected {FORMAT:?}",
                header.format
            )));
        }
        if header.format_version != Some(FORMAT_VERSION) {
            return Err(invalid(format!(
                "format version {:?} is not supported (this build reads {FORMAT_VERSION})",
                header.format_version
            )));
        }
        let model: Model = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
        model.validate().map_err(invalid)?;
        Ok(model)
    }

    /// Writes the model as JSON, atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> TrainingMetadata {
        TrainingMetadata {
            rows: 0,
            time_start: None,
            time_end: None,
            source: "test".into(),
            seed: 1,
            command: "test".into(),
            code_version: env!("CARGO_PKG_VERSION").into(),
            trained_at: "2026-11-25T00:00:00Z".into(),
            training_seconds: 0.0,
        }
    }

    fn model(contamination: Option<f64>) -> Model {
        let a: Vec<f64> = (0..1000).map(|i| (i % 100) as f64).collect();
        let mut b: Vec<f64> = (0..1000).map(|i| ((i * 7) % 50) as f64).collect();
        b[3] = f64::NAN;
        let options = TrainOptions {
            params: ForestParams {
                n_estimators: 20,
                max_samples: 128,
                seed: 3,
            },
            contamination,
        };
        Model::train(vec!["a".into(), "b".into()], vec![a, b], &options, meta()).unwrap()
    }

    #[test]
    fn round_trips_through_its_file_and_scores_the_same() {
        let m = model(Some(0.05));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        m.save(&path).unwrap();
        let back = Model::load(&path).unwrap();
        assert!(back == m, "the model changed on its way through the file");
        let mut rows = vec![50.0, 25.0, 1000.0, f64::NAN];
        let (mut s1, mut s2) = (vec![], vec![]);
        m.score_rows(&mut rows.clone(), &mut s1);
        back.score_rows(&mut rows, &mut s2);
        assert_eq!(s1, s2);
        assert!(s1[1] > s1[0], "the far point scores higher");
        assert_eq!(
            rows[3], m.scaler.median[1],
            "missing values take the median"
        );
    }

    #[test]
    fn contamination_sets_the_threshold_to_flag_that_share() {
        let m = model(Some(0.1));
        let a: Vec<f64> = (0..1000).map(|i| (i % 100) as f64).collect();
        let b: Vec<f64> = (0..1000).map(|i| ((i * 7) % 50) as f64).collect();
        let mut data: Vec<f64> = (0..1000).flat_map(|r| [a[r], b[r]]).collect();
        let mut scores = vec![];
        m.score_rows(&mut data, &mut scores);
        let flagged = scores.iter().filter(|s| **s >= m.threshold).count();
        assert!((80..=120).contains(&flagged), "{flagged}");
        assert_eq!(model(None).threshold, 0.5);
    }

    #[test]
    fn bad_files_are_refused_with_the_problem_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = serde_json::to_value(model(None)).unwrap();
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (
                {
                    let mut v = good.clone();
                    v["format_version"] = 99.into();
                    v
                },
                "format version",
            ),
            (
                {
                    let mut v = good.clone();
                    v["format"] = "other".into();
                    v
                },
                "format is",
            ),
            (
                {
                    let mut v = good.clone();
                    v["features"] = serde_json::json!(["a"]);
                    v
                },
                "scaler median has 2 values for 1",
            ),
            (
                {
                    let mut v = good.clone();
                    v["features"] = serde_json::json!(["a", "a"]);
                    v
                },
                "listed twice",
            ),
            (
                {
                    let mut v = good.clone();
                    v["forest"]["trees"][4]["nodes"][0]["left"] = 0.into();
                    v
                },
                "corrupt tree 4",
            ),
            (
                {
                    let mut v = good.clone();
                    v["threshold"] = 1.5.into();
                    v
                },
                "threshold",
            ),
            (
                {
                    let mut v = good.clone();
                    v.as_object_mut().unwrap().remove("forest");
                    v
                },
                "forest",
            ),
        ];
        for (value, expected) in cases {
            let path = dir.path().join("bad.json");
            std::fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
            let e = Model::load(&path).unwrap_err().to_string();
            assert!(
                e.contains(expected) && e.contains("bad.json"),
                "{expected}: {e}"
            );
        }
        std::fs::write(dir.path().join("t.json"), b"{\"format\": \"contr").unwrap();
        assert!(
            Model::load(&dir.path().join("t.json"))
                .unwrap_err()
                .to_string()
                .contains("not a model file")
        );
    }
}
