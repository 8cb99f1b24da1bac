//! DataFusion functions Contrail adds to the SQL the pipeline runs.

pub mod anomaly;

pub use anomaly::{IsAnomaly, IsolationForestScore, Scorer};
