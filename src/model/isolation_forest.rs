//! An axis-parallel Isolation Forest (Liu, Ting & Zhou, 2008) with scikit-learn's semantics.
//!
//! - each tree is grown on `max_samples` rows drawn without replacement, up to a height
//!   limit of ceil(log2(max_samples)); a node picks a random feature that is not constant in
//!   it and a threshold drawn uniformly between that feature's minimum and maximum;
//! - the path length of a row is the depth of the leaf it reaches plus c(n), the average
//!   path length of an unsuccessful search in a binary search tree of the n training rows
//!   left in that leaf;
//! - the score is s(x) = 2^(-E[h(x)] / c(psi)) in (0, 1]: near 1 for anomalies, below 0.5
//!   for normal rows.
//!
//! Trees are flat arrays of 16-byte nodes (children stored side by side), so scoring walks
//! contiguous memory. Training is deterministic from the seed whatever the thread count:
//! every tree has its own random stream. Rows are slices of `f64` features with no NaN
//! (imputation happens before, see [`super::Model`]). This module knows nothing of Arrow,
//! DataFusion or tokio.

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
/// A feature whose values in a node spread no more than this counts as constant there.
const FEATURE_THRESHOLD: f64 = 1e-7;

/// Average path length of an unsuccessful BST search among `n` points: c(n).
pub fn average_path_length(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

/// A node: an internal split, or a leaf holding its path length (depth + c(size)).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Split feature, or [`Node::LEAF`].
    pub feature: u32,
    /// Index of the left child; the right child is `left + 1`. Unused in leaves.
    pub left: u32,
    /// Split threshold (rows with value < threshold go left), or a leaf's path length.
    pub value: f64,
}

impl Node {
    pub const LEAF: u32 = u32::MAX;

    fn leaf(path_length: f64) -> Self {
        Self {
            feature: Self::LEAF,
            left: 0,
            value: path_length,
        }
    }
}

/// One isolation tree: `nodes[0]` is the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Path length of one row.
    #[inline]
    pub fn path_length(&self, row: &[f64]) -> f64 {
        let mut i = 0usize;
        loop {
            let n = self.nodes[i];
            if n.feature == Node::LEAF {
                return n.value;
            }
            i = n.left as usize + usize::from(row[n.feature as usize] >= n.value);
        }
    }

    /// Checks the structure: children in range and after their parent (so no cycles),
    /// features in range, finite values. Returns a message naming the first problem.
    pub fn validate(&self, n_features: usize) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("tree has no nodes".into());
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.value.is_finite() {
                return Err(format!("node {i} has a non-finite value"));
            }
            if n.feature == Node::LEAF {
                continue;
            }
            if n.feature as usize >= n_features {
                return Err(format!(
                    "node {i} splits on feature {} of {n_features}",
                    n.feature
                ));
            }
            let left = n.left as usize;
            if left <= i || left + 1 >= self.nodes.len() {
                return Err(format!(
                    "node {i} has children {left}, {} outside the tree",
                    left + 1
                ));
            }
        }
        Ok(())
    }
}

/// Training parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ForestParams {
    pub n_estimators: usize,
    pub max_samples: usize,
    pub seed: u64,
}

impl Default for ForestParams {
    fn default() -> Self {
        Self {
            n_estimators: 100,
            max_samples: 256,
            seed: 0,
        }
    }
}

/// A trained forest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IsolationForest {
    pub n_features: usize,
    /// Rows each tree was grown on (psi).
    pub sample_size: usize,
    pub trees: Vec<Tree>,
    /// The scoring layout, derived from `trees` on first use.
    #[serde(skip)]
    compiled: std::sync::OnceLock<Compiled>,
}

impl PartialEq for IsolationForest {
    fn eq(&self, other: &Self) -> bool {
        self.n_features == other.n_features
            && self.sample_size == other.sample_size
            && self.trees == other.trees
    }
}

/// Every tree padded to a complete binary tree of the forest's depth: a row walks exactly
/// `depth` levels with `i = 2i + 1 + (x[f] >= t)`, no branch on node kind, and a leaf
/// shallower than `depth` is copied to every leaf slot below it. Trees sit side by side.
#[derive(Debug, Clone)]
struct Compiled {
    depth: usize,
    /// Per tree: 2^depth - 1 internal nodes, then 2^depth leaves.
    feature: Vec<u32>,
    threshold: Vec<f64>,
    leaf: Vec<f64>,
}

impl Compiled {
    /// Trees that fail [`Tree::validate`] (only possible for a forest built by hand, never
    /// one trained or loaded) score as a single leaf, which keeps the unchecked indexing
    /// in `score_rows` in bounds whatever the input.
    fn new(trees: &[Tree], n_features: usize) -> Self {
        let invalid = Tree {
            nodes: vec![Node::leaf(0.0)],
        };
        let trees: Vec<&Tree> = trees
            .iter()
            .map(|t| {
                if t.validate(n_features).is_ok() {
                    t
                } else {
                    &invalid
                }
            })
            .collect();
        fn height(t: &Tree, i: usize) -> usize {
            let n = t.nodes[i];
            if n.feature == Node::LEAF {
                0
            } else {
                1 + height(t, n.left as usize).max(height(t, n.left as usize + 1))
            }
        }
        let depth = trees.iter().map(|t| height(t, 0)).max().unwrap_or(0);
        let trees = &trees;
        let internal = (1usize << depth) - 1;
        let leaves = 1usize << depth;
        let mut c = Compiled {
            depth,
            feature: vec![0; internal * trees.len()],
            threshold: vec![0.0; internal * trees.len()],
            leaf: vec![0.0; leaves * trees.len()],
        };
        for (k, t) in trees.iter().enumerate() {
            c.fill(t, 0, 0, 0, k * internal, k * leaves);
        }
        c
    }

    /// Places source node `src` at complete-tree position `at` of level `level`.
    fn fill(
        &mut self,
        t: &Tree,
        src: usize,
        at: usize,
        level: usize,
        base: usize,
        leaf_base: usize,
    ) {
        let n = t.nodes[src];
        if n.feature == Node::LEAF {
            // Every leaf slot under `at` gets this path length; the pass-through nodes
            // above them keep feature 0 / threshold 0, which route either way.
            let span = 1usize << (self.depth - level);
            let first = ((at + 1) << (self.depth - level)) - 1 - ((1usize << self.depth) - 1);
            self.leaf[leaf_base + first..leaf_base + first + span].fill(n.value);
            return;
        }
        self.feature[base + at] = n.feature;
        self.threshold[base + at] = n.value;
        self.fill(t, n.left as usize, 2 * at + 1, level + 1, base, leaf_base);
        self.fill(
            t,
            n.left as usize + 1,
            2 * at + 2,
            level + 1,
            base,
            leaf_base,
        );
    }
}

/// Rows scored together against every tree before the next block (kept in L1).
const BLOCK: usize = 64;
/// Rows whose walks down one tree are interleaved level by level.
const LANES: usize = 16;

/// Column-major view of training data: `columns[f][row]`.
struct Columns<'a> {
    columns: &'a [Vec<f64>],
}

impl IsolationForest {
    pub fn new(n_features: usize, sample_size: usize, trees: Vec<Tree>) -> Self {
        Self {
            n_features,
            sample_size,
            trees,
            compiled: std::sync::OnceLock::new(),
        }
    }

    /// Trains on `columns` (one `Vec` per feature, all the same length, no NaN).
    pub fn fit(columns: &[Vec<f64>], params: &ForestParams) -> Result<Self, String> {
        let n_features = columns.len();
        let rows = columns.first().map_or(0, Vec::len);
        if n_features == 0 || rows == 0 {
            return Err("no training data".into());
        }
        if columns.iter().any(|c| c.len() != rows) {
            return Err("feature columns differ in length".into());
        }
        if params.n_estimators == 0 || params.max_samples == 0 {
            return Err("n_estimators and max_samples must be positive".into());
        }
        let psi = params.max_samples.min(rows);
        let height_limit = (psi as f64).log2().ceil() as usize;
        let data = Columns { columns };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(params.n_estimators);
        let mut trees: Vec<Option<Tree>> = vec![None; params.n_estimators];
        std::thread::scope(|scope| {
            for (t, chunk) in trees
                .chunks_mut(params.n_estimators.div_ceil(threads))
                .enumerate()
            {
                let data = &data;
                let first = t * params.n_estimators.div_ceil(threads);
                scope.spawn(move || {
                    for (k, slot) in chunk.iter_mut().enumerate() {
                        let tree_index = (first + k) as u64;
                        let mut rng = ChaCha8Rng::seed_from_u64(
                            params.seed ^ tree_index.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        );
                        let mut idx: Vec<u32> = sample(&mut rng, rows, psi)
                            .into_iter()
                            .map(|i| i as u32)
                            .collect();
                        let mut nodes = Vec::with_capacity(2 * psi);
                        nodes.push(Node::leaf(0.0));
                        grow(data, &mut idx, 0, 0, height_limit, &mut nodes, &mut rng);
                        *slot = Some(Tree { nodes });
                    }
                });
            }
        });
        let trees = trees
            .into_iter()
            .map(|t| t.expect("every tree grown"))
            .collect();
        Ok(Self::new(n_features, psi, trees))
    }

    /// Anomaly score of one row: 2^(-E[h(x)] / c(psi)).
    pub fn score_row(&self, row: &[f64]) -> f64 {
        let total: f64 = self.trees.iter().map(|t| t.path_length(row)).sum();
        self.score_from_mean_path(total / self.trees.len() as f64)
    }

    fn score_from_mean_path(&self, mean: f64) -> f64 {
        let c = average_path_length(self.sample_size);
        if c == 0.0 { 1.0 } else { 2f64.powf(-mean / c) }
    }

    /// Scores rows laid out row-major in `data` (`n_features` values each) into `out`.
    /// Blocks of rows walk every tree before the next block, so a block's features stay
    /// in L1 while the forest streams from L2.
    pub fn score_rows(&self, data: &[f64], out: &mut Vec<f64>) {
        let n = self.n_features.max(1);
        let rows = data.len() / n;
        out.clear();
        out.resize(rows, 0.0);
        let c = self.compiled.get_or_init(|| Compiled::new(&self.trees, n));
        let internal = (1usize << c.depth) - 1;
        let leaves = 1usize << c.depth;
        for (block, acc) in data.chunks(BLOCK * n).zip(out.chunks_mut(BLOCK)) {
            for t in 0..self.trees.len() {
                let feature = &c.feature[t * internal..(t + 1) * internal];
                let threshold = &c.threshold[t * internal..(t + 1) * internal];
                let leaf = &c.leaf[t * leaves..(t + 1) * leaves];
                // LANES rows walk the tree level by level together: independent chains of
                // loads the CPU overlaps, instead of one row's chain at a time.
                let mut rows = block.chunks_exact(n * LANES);
                let mut accs = acc.chunks_exact_mut(LANES);
                for (group, a) in (&mut rows).zip(&mut accs) {
                    let mut i = [0usize; LANES];
                    for _ in 0..c.depth {
                        for (k, ik) in i.iter_mut().enumerate() {
                            // SAFETY: before each of the `depth` levels `*ik` < 2^depth - 1 =
                            // feature.len() = threshold.len(); `Compiled::new` only keeps
                            // trees whose feature indices are < n (pass-through nodes use
                            // 0); k < LANES, so the index is inside `group` (LANES * n).
                            let (x, t) = unsafe {
                                let f = *feature.get_unchecked(*ik) as usize;
                                (
                                    *group.get_unchecked(k * n + f),
                                    *threshold.get_unchecked(*ik),
                                )
                            };
                            *ik = 2 * *ik + 1 + usize::from(x >= t);
                        }
                    }
                    for (a, ik) in a.iter_mut().zip(i) {
                        *a += leaf[ik - internal];
                    }
                }
                for (a, row) in accs
                    .into_remainder()
                    .iter_mut()
                    .zip(rows.remainder().chunks_exact(n))
                {
                    let mut i = 0usize;
                    for _ in 0..c.depth {
                        i = 2 * i + 1 + usize::from(row[feature[i] as usize] >= threshold[i]);
                    }
                    *a += leaf[i - internal];
                }
            }
        }
        let trees = self.trees.len() as f64;
        for s in out.iter_mut() {
            *s = self.score_from_mean_path(*s / trees);
        }
    }
}

/// Grows the subtree at `nodes[at]` from the rows `idx`.
fn grow(
    data: &Columns<'_>,
    idx: &mut [u32],
    at: usize,
    depth: usize,
    limit: usize,
    nodes: &mut Vec<Node>,
    rng: &mut ChaCha8Rng,
) {
    if depth >= limit || idx.len() <= 1 {
        nodes[at] = Node::leaf(depth as f64 + average_path_length(idx.len()));
        return;
    }
    // A feature drawn uniformly from those not constant among these rows (as
    // scikit-learn's ExtraTreeRegressor with max_features=1 draws without replacement
    // until it finds one); a leaf if every feature is constant.
    let n_features = data.columns.len();
    let mut order: Vec<usize> = (0..n_features).collect();
    let mut split = None;
    for k in 0..n_features {
        let j = rng.random_range(k..n_features);
        order.swap(k, j);
        let f = order[k];
        let col = &data.columns[f];
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for &i in idx.iter() {
            let v = col[i as usize];
            lo = lo.min(v);
            hi = hi.max(v);
        }
        // scikit-learn's FEATURE_THRESHOLD: a spread this small is rounding noise (features
        // computed in SQL carry ~1e-9 residues), not something worth a split.
        if hi > lo + FEATURE_THRESHOLD {
            split = Some((f, lo, hi));
            break;
        }
    }
    let Some((f, lo, hi)) = split else {
        nodes[at] = Node::leaf(depth as f64 + average_path_length(idx.len()));
        return;
    };
    let mut threshold = rng.random_range(lo..hi);
    if threshold <= lo {
        threshold = (lo + hi) / 2.0; // keep both sides non-empty
    }
    let col = &data.columns[f];
    // Partition: rows with value < threshold first.
    let mut mid = 0;
    for j in 0..idx.len() {
        if col[idx[j] as usize] < threshold {
            idx.swap(mid, j);
            mid += 1;
        }
    }
    let left = nodes.len();
    nodes.push(Node::leaf(0.0));
    nodes.push(Node::leaf(0.0));
    nodes[at] = Node {
        feature: f as u32,
        left: left as u32,
        value: threshold,
    };
    let (l, r) = idx.split_at_mut(mid);
    grow(data, l, left, depth + 1, limit, nodes, rng);
    grow(data, r, left + 1, depth + 1, limit, nodes, rng);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian_cloud(n: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut cols: Vec<Vec<f64>> = (0..3).map(|_| Vec::with_capacity(n)).collect();
        for _ in 0..n {
            for c in cols.iter_mut() {
                // Sum of uniforms: roughly normal, mean 0.
                c.push((0..6).map(|_| rng.random_range(-1.0..1.0)).sum::<f64>());
            }
        }
        cols
    }

    #[test]
    fn c_of_n_matches_the_paper() {
        assert_eq!(average_path_length(1), 0.0);
        assert_eq!(average_path_length(2), 1.0);
        // c(256) = 2 H(255) - 2 * 255/256 ~ 10.2448
        assert!(
            (average_path_length(256) - 10.2448).abs() < 1e-3,
            "{}",
            average_path_length(256)
        );
    }

    #[test]
    fn outliers_score_high_inliers_low_and_training_is_deterministic() {
        let cols = gaussian_cloud(5000, 1);
        let params = ForestParams {
            seed: 7,
            ..Default::default()
        };
        let forest = IsolationForest::fit(&cols, &params).unwrap();
        assert_eq!(forest.trees.len(), 100);
        assert_eq!(forest.sample_size, 256);
        let centre = forest.score_row(&[0.0, 0.0, 0.0]);
        let far = forest.score_row(&[8.0, -8.0, 8.0]);
        assert!(centre < 0.45, "centre {centre}");
        assert!(far > 0.7, "outlier {far}");
        // Height limit: ceil(log2 256) = 8, so at most 2^9 - 1 nodes.
        assert!(forest.trees.iter().all(|t| t.nodes.len() <= 511));
        assert!(forest.trees.iter().all(|t| t.validate(3).is_ok()));
        let again = IsolationForest::fit(&cols, &params).unwrap();
        assert_eq!(forest, again);
        let other = IsolationForest::fit(&cols, &ForestParams { seed: 8, ..params }).unwrap();
        assert_ne!(forest, other);
    }

    #[test]
    fn compiled_layout_scores_exactly_like_the_trees() {
        let cols = gaussian_cloud(3000, 4);
        let forest = IsolationForest::fit(
            &cols,
            &ForestParams {
                n_estimators: 30,
                max_samples: 200,
                seed: 9,
            },
        )
        .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        // Inside, outside and far outside the training range; more rows than one block.
        let rows: Vec<f64> = (0..3 * 150)
            .map(|_| rng.random_range(-20.0..20.0))
            .collect();
        let mut out = Vec::new();
        forest.score_rows(&rows, &mut out);
        assert_eq!(out.len(), 150);
        for (i, s) in out.iter().enumerate() {
            assert!(
                (s - forest.score_row(&rows[i * 3..i * 3 + 3])).abs() < 1e-12,
                "row {i}"
            );
        }
    }

    #[test]
    fn a_hand_built_invalid_forest_scores_without_reading_out_of_bounds() {
        let bad = Tree {
            nodes: vec![
                Node {
                    feature: 7,
                    left: 1,
                    value: 0.0,
                },
                Node::leaf(3.0),
                Node::leaf(4.0),
            ],
        };
        let forest = IsolationForest::new(2, 16, vec![bad]);
        let mut out = Vec::new();
        forest.score_rows(&[1.0; 2 * 40], &mut out);
        assert_eq!(out.len(), 40);
        assert!(
            out.iter().all(|s| *s == 1.0),
            "an invalid tree counts as a single leaf of path 0"
        );
    }

    #[test]
    fn batch_scoring_equals_row_scoring() {
        let cols = gaussian_cloud(2000, 2);
        let forest = IsolationForest::fit(&cols, &ForestParams::default()).unwrap();
        let rows: Vec<f64> = (0..50)
            .flat_map(|i| [cols[0][i], cols[1][i], cols[2][i]])
            .collect();
        let mut out = Vec::new();
        forest.score_rows(&rows, &mut out);
        for (i, s) in out.iter().enumerate() {
            assert!((s - forest.score_row(&rows[i * 3..i * 3 + 3])).abs() < 1e-12);
            assert!(*s > 0.0 && *s <= 1.0);
        }
    }

    #[test]
    fn constant_data_gives_leaves_not_panics() {
        let cols = vec![vec![1.0; 100], vec![2.0; 100]];
        let forest = IsolationForest::fit(
            &cols,
            &ForestParams {
                n_estimators: 3,
                max_samples: 64,
                seed: 1,
            },
        )
        .unwrap();
        assert!(forest.trees.iter().all(|t| t.nodes.len() == 1));
        let s = forest.score_row(&[1.0, 2.0]);
        // A single leaf of 64 rows: E[h] = c(64) = c(psi), so s = 0.5.
        assert!((s - 0.5).abs() < 1e-12, "{s}");
    }

    #[test]
    fn corrupt_trees_are_named() {
        let t = Tree {
            nodes: vec![Node {
                feature: 0,
                left: 0,
                value: 1.0,
            }],
        };
        assert!(t.validate(1).unwrap_err().contains("node 0"));
        let t = Tree {
            nodes: vec![
                Node {
                    feature: 5,
                    left: 1,
                    value: 1.0,
                },
                Node::leaf(1.0),
                Node::leaf(1.0),
            ],
        };
        assert!(t.validate(2).unwrap_err().contains("feature 5"));
    }
}
