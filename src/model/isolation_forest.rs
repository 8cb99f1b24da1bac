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
    /// The same nodes by rank, for the vector walk; `None` where the forest does not fit it.
    ranked: Option<Ranked>,
}

/// The forest with every threshold replaced by its rank, for the vector walk: per feature,
/// the distinct thresholds of all trees sorted (`cuts`); a value's rank is how many of them
/// are at most the value, and a node keeps its threshold's position + 1. Then `x >= t`
/// exactly when `rank(x) >= position(t) + 1` (the thresholds up to t are all at most x,
/// and only then), NaN included (rank 0, below every node). A node is one `u32`,
/// `feature << 16 | position + 1`, so the walk compares integers it reads in one word.
#[derive(Debug, Clone)]
struct Ranked {
    cuts: Vec<Vec<f64>>,
    /// Per tree, its 2^depth - 1 internal nodes.
    nodes: Vec<u32>,
    /// Per tree, the nodes of its first seven levels in eight vectors of sixteen: levels
    /// 0-3 (15 nodes and a zero), 4 (16), 5 (32) and 6 (64), zero past the tree's depth.
    /// The walk picks these with permutes of registers instead of gathers from memory.
    top: Vec<[u32; TOP]>,
}

/// Features the vector walk selects among (two bits of a node's feature).
const RANKED_FEATURES: usize = 4;
/// Levels whose node indices the vector walk's 32-bit lanes hold with room to spare.
const RANKED_DEPTH: usize = 24;
/// Nodes a tree's [`Ranked::top`] holds.
const TOP: usize = 128;

impl Ranked {
    /// The ranked form of `trees` complete trees of `depth` levels (`feature`,
    /// `threshold`); `None` where the vector walk cannot take them: more than
    /// [`RANKED_FEATURES`] features, deeper than [`RANKED_DEPTH`], or a feature with
    /// 65,535 distinct thresholds or more.
    fn new(
        feature: &[u32],
        threshold: &[f64],
        n_features: usize,
        depth: usize,
        trees: usize,
    ) -> Option<Self> {
        if n_features > RANKED_FEATURES || depth > RANKED_DEPTH {
            return None;
        }
        let mut cuts = vec![Vec::new(); n_features];
        for (&f, &t) in feature.iter().zip(threshold) {
            // -0.0 and 0.0 compare equal, so they are one cut.
            cuts[f as usize].push(if t == 0.0 { 0.0 } else { t });
        }
        for c in &mut cuts {
            c.sort_by(f64::total_cmp);
            c.dedup();
            // Position + 1 must fit in 16 bits; validated trees have no NaN.
            if c.len() >= usize::from(u16::MAX) || c.iter().any(|t| t.is_nan()) {
                return None;
            }
        }
        let nodes: Vec<u32> = feature
            .iter()
            .zip(threshold)
            .map(|(&f, &t)| {
                let position = cuts[f as usize].partition_point(|&c| c < t);
                f << 16 | (position as u32 + 1)
            })
            .collect();
        let internal = (1usize << depth) - 1;
        let top = (0..trees)
            .map(|t| {
                let tree = &nodes[t * internal..(t + 1) * internal];
                let mut top = [0u32; TOP];
                // Node i at slot i for levels 0-3, i + 1 from level 4 on.
                for (i, &node) in tree.iter().enumerate().take(TOP - 1) {
                    top[if i < 15 { i } else { i + 1 }] = node;
                }
                top
            })
            .collect();
        Some(Self { cuts, nodes, top })
    }
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
            ranked: None,
        };
        for (k, t) in trees.iter().enumerate() {
            c.fill(t, 0, 0, 0, k * internal, k * leaves);
        }
        c.ranked = Ranked::new(&c.feature, &c.threshold, n_features, depth, trees.len());
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
    /// in L1 while the forest streams from L2. Where the CPU has AVX-512 and the forest
    /// ranks ([`Ranked`]), sixteen rows walk a tree in one vector; the scores are the same
    /// to the bit (the same comparisons, the same sums in the same order).
    pub fn score_rows(&self, data: &[f64], out: &mut Vec<f64>) {
        self.score(data, out, vector_walk_available());
    }

    /// [`Self::score_rows`] on the scalar walk whatever the CPU: the reference the vector
    /// walk is tested against.
    pub fn score_rows_scalar(&self, data: &[f64], out: &mut Vec<f64>) {
        self.score(data, out, false);
    }

    fn score(&self, data: &[f64], out: &mut Vec<f64>, vectors: bool) {
        let n = self.n_features.max(1);
        out.clear();
        out.resize(data.len() / n, 0.0);
        let c = self.compiled(n);
        if !(vectors && self.walk_ranked(c, data, out)) {
            self.walk_scalar(c, data, out);
        }
        let trees = self.trees.len() as f64;
        for s in out.iter_mut() {
            *s = self.score_from_mean_path(*s / trees);
        }
    }

    /// Whether [`Self::score_rows`] takes the vector walk on this CPU for this forest.
    pub fn scores_in_vectors(&self) -> bool {
        vector_walk_available() && self.compiled(self.n_features.max(1)).ranked.is_some()
    }

    fn compiled(&self, n: usize) -> &Compiled {
        self.compiled.get_or_init(|| Compiled::new(&self.trees, n))
    }

    /// Adds each row's path lengths over the trees, in tree order, into `acc`.
    fn walk_scalar(&self, c: &Compiled, data: &[f64], acc: &mut [f64]) {
        let n = self.n_features.max(1);
        let internal = (1usize << c.depth) - 1;
        let leaves = 1usize << c.depth;
        for (block, acc) in data.chunks(BLOCK * n).zip(acc.chunks_mut(BLOCK)) {
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
    }

    /// The vector walk of [`Self::score_rows`]: ranks every row's features, then walks
    /// blocks of [`VECTOR_BLOCK`] rows through every tree. Only where
    /// [`vector_walk_available`]; returns false, having done nothing, for a forest that
    /// does not rank.
    fn walk_ranked(&self, c: &Compiled, data: &[f64], acc: &mut [f64]) -> bool {
        #[cfg(target_arch = "x86_64")]
        if let Some(ranked) = &c.ranked {
            let n = self.n_features.max(1);
            let rows = acc.len();
            let padded = rows.div_ceil(VECTOR_BLOCK) * VECTOR_BLOCK;
            // Per sixteen rows, per feature, the sixteen rows' ranks (one vector each).
            // Padding rows and features past the forest's rank 0 and are never read out.
            let mut ranks = vec![0u32; padded * RANKED_FEATURES];
            for (r, row) in data.chunks_exact(n).enumerate() {
                let at = r / 16 * 16 * RANKED_FEATURES + r % 16;
                for (f, (&x, cuts)) in row.iter().zip(&ranked.cuts).enumerate() {
                    ranks[at + 16 * f] = cuts.partition_point(|&c| c <= x) as u32;
                }
            }
            let mut sums = vec![0f64; padded];
            // SAFETY: every caller checked `vector_walk_available` (AVX-512F); `Ranked::new`
            // made `ranked` from `c`'s complete trees of depth `c.depth` <= RANKED_DEPTH
            // with features < RANKED_FEATURES; `ranks` and `sums` are whole blocks.
            unsafe {
                walk_avx512(
                    c.depth,
                    &ranked.nodes,
                    &ranked.top,
                    &c.leaf,
                    &ranks,
                    &mut sums,
                )
            };
            acc.copy_from_slice(&sums[..rows]);
            return true;
        }
        let _ = (c, data, acc);
        false
    }
}

/// Rows one vector walk takes at once: four vectors of sixteen (eight were slower).
const VECTOR_BLOCK: usize = 64;

/// Whether this CPU runs [`walk_avx512`] (checked once).
fn vector_walk_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX512.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Walks blocks of [`VECTOR_BLOCK`] rows through every tree, sixteen rows to a vector and
/// four vectors interleaved level by level, and adds each row's leaves into `sums` in tree
/// order. A level picks each lane's node from registers for the first seven levels
/// ([`Ranked::top`]) and gathers it from `nodes` below them; the node's feature selects
/// the lane's rank among the row's four, which is compared with the node's.
///
/// # Safety
/// The CPU has AVX-512F. `nodes` holds `top.len()` complete trees of `depth` levels
/// (`depth` <= [`RANKED_DEPTH`]), each `2^depth - 1` nodes whose features are below
/// [`RANKED_FEATURES`]; `leaf` holds `2^depth` values per tree; `ranks` holds
/// [`RANKED_FEATURES`] ranks per row laid out as [`IsolationForest::walk_ranked`] writes
/// them, for `sums.len()` rows, a multiple of [`VECTOR_BLOCK`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn walk_avx512(
    depth: usize,
    nodes: &[u32],
    top: &[[u32; TOP]],
    leaf: &[f64],
    ranks: &[u32],
    sums: &mut [f64],
) {
    use std::arch::x86_64::*;
    const VECTORS: usize = VECTOR_BLOCK / 16;
    let internal = (1usize << depth) - 1;
    let leaves = 1usize << depth;
    debug_assert!(nodes.len() == top.len() * internal && leaf.len() == top.len() * leaves);
    debug_assert!(
        sums.len().is_multiple_of(VECTOR_BLOCK) && ranks.len() == sums.len() * RANKED_FEATURES
    );
    let splat = |v: usize| _mm512_set1_epi32(v as i32);
    let (one, rank_bits, first_leaf) = (splat(1), splat(0xFFFF), splat(internal));
    let (feature_bit0, feature_bit1) = (splat(1 << 16), splat(2 << 16));
    // Where levels 4, 5 and 6 begin, and the bit that halves level 6's 64 nodes.
    let (level4, level5, level6, half6) = (splat(15), splat(31), splat(63), splat(32));
    for (block, out) in ranks
        .chunks_exact(VECTOR_BLOCK * RANKED_FEATURES)
        .zip(sums.chunks_exact_mut(VECTOR_BLOCK))
    {
        // SAFETY: a block holds VECTORS * RANKED_FEATURES vectors of sixteen ranks.
        let rank: [[__m512i; RANKED_FEATURES]; VECTORS] = std::array::from_fn(|v| {
            std::array::from_fn(|f| unsafe {
                _mm512_loadu_si512(block.as_ptr().add(16 * (RANKED_FEATURES * v + f)).cast())
            })
        });
        let mut acc = [[_mm512_setzero_pd(); 2]; VECTORS];
        for (t, top) in top.iter().enumerate() {
            let tree_nodes = nodes.as_ptr().wrapping_add(t * internal).cast::<i32>();
            let tree_leaves = leaf.as_ptr().wrapping_add(t * leaves);
            // SAFETY: `top` is TOP = 8 * 16 values.
            let r: [__m512i; 8] = std::array::from_fn(|k| unsafe {
                _mm512_loadu_si512(top.as_ptr().add(16 * k).cast())
            });
            let mut at = [_mm512_setzero_si512(); VECTORS];
            for level in 0..depth {
                for v in 0..VECTORS {
                    let i = at[v];
                    let node = match level {
                        0..=3 => _mm512_permutexvar_epi32(i, r[0]),
                        4 => _mm512_permutexvar_epi32(_mm512_sub_epi32(i, level4), r[1]),
                        5 => _mm512_permutex2var_epi32(r[2], _mm512_sub_epi32(i, level5), r[3]),
                        6 => {
                            let o = _mm512_sub_epi32(i, level6);
                            let low = _mm512_permutex2var_epi32(r[4], o, r[5]);
                            let high = _mm512_permutex2var_epi32(r[6], o, r[7]);
                            _mm512_mask_blend_epi32(_mm512_test_epi32_mask(o, half6), low, high)
                        }
                        // SAFETY: before each level every lane's index is below 2^depth - 1,
                        // inside this tree's nodes.
                        _ => unsafe { _mm512_i32gather_epi32::<4>(i, tree_nodes) },
                    };
                    let odd = _mm512_test_epi32_mask(node, feature_bit0);
                    let high = _mm512_test_epi32_mask(node, feature_bit1);
                    let f = &rank[v];
                    let low_pair = _mm512_mask_blend_epi32(odd, f[0], f[1]);
                    let high_pair = _mm512_mask_blend_epi32(odd, f[2], f[3]);
                    let x = _mm512_mask_blend_epi32(high, low_pair, high_pair);
                    let right = _mm512_cmpge_epu32_mask(x, _mm512_and_si512(node, rank_bits));
                    let next = _mm512_add_epi32(_mm512_add_epi32(i, i), one);
                    at[v] = _mm512_mask_add_epi32(next, right, next, one);
                }
            }
            for v in 0..VECTORS {
                let slot = _mm512_sub_epi32(at[v], first_leaf);
                // SAFETY: after `depth` levels every lane's slot is one of this tree's leaves.
                let (low, high) = unsafe {
                    (
                        _mm512_i32gather_pd::<8>(_mm512_castsi512_si256(slot), tree_leaves),
                        _mm512_i32gather_pd::<8>(_mm512_extracti64x4_epi64::<1>(slot), tree_leaves),
                    )
                };
                acc[v][0] = _mm512_add_pd(acc[v][0], low);
                acc[v][1] = _mm512_add_pd(acc[v][1], high);
            }
        }
        for (v, [low, high]) in acc.iter().enumerate() {
            // SAFETY: `out` holds VECTORS * 16 sums.
            unsafe {
                _mm512_storeu_pd(out.as_mut_ptr().add(16 * v), *low);
                _mm512_storeu_pd(out.as_mut_ptr().add(16 * v + 8), *high);
            }
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

    /// Rows at, just beside and far from every threshold of `forest`, with NaN, ±0 and
    /// ±infinity among them, in a count that is not a whole number of vector blocks.
    fn rows_around_thresholds(forest: &IsolationForest, seed: u64) -> Vec<f64> {
        let n = forest.n_features;
        let mut cuts: Vec<Vec<f64>> = vec![Vec::new(); n];
        for node in forest.trees.iter().flat_map(|t| &t.nodes) {
            if node.feature != Node::LEAF {
                cuts[node.feature as usize].push(node.value);
            }
        }
        let specials = [f64::NAN, 0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, 1e300];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rows = 3 * VECTOR_BLOCK + 37;
        (0..rows * n)
            .map(|i| {
                let f = i % n;
                let pick = |rng: &mut ChaCha8Rng| cuts[f][rng.random_range(0..cuts[f].len())];
                match rng.random_range(0..5) {
                    0 => pick(&mut rng),
                    1 => pick(&mut rng).next_up(),
                    2 => pick(&mut rng).next_down(),
                    3 => specials[rng.random_range(0..specials.len())],
                    _ => rng.random_range(-20.0..20.0),
                }
            })
            .collect()
    }

    /// The vector walk gives the scalar walk's scores to the bit: ranks compare exactly as
    /// the thresholds do, and each row's path lengths are added in the same order.
    #[test]
    fn the_vector_walk_scores_exactly_like_the_scalar_walk() {
        // Depths 3 to 10 (levels from registers, then gathered), one to four features.
        for (features, trees, samples, seed) in [
            (4, 100, 256, 1),
            (3, 30, 200, 2),
            (1, 7, 64, 3),
            (2, 5, 8, 4),
            (4, 20, 128, 5),
            (4, 10, 1024, 6),
        ] {
            let mut cols = gaussian_cloud(3000, seed);
            cols.push(cols[0].iter().map(|x| x * 1000.0 - 3.0).collect());
            cols.truncate(features);
            let forest = IsolationForest::fit(
                &cols,
                &ForestParams {
                    n_estimators: trees,
                    max_samples: samples,
                    seed,
                },
            )
            .unwrap();
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                assert!(
                    forest.scores_in_vectors(),
                    "{features} features: not ranked"
                );
            }
            let rows = rows_around_thresholds(&forest, seed);
            let (mut vector, mut scalar) = (Vec::new(), Vec::new());
            forest.score_rows(&rows, &mut vector);
            forest.score_rows_scalar(&rows, &mut scalar);
            assert_eq!(vector.len(), rows.len() / features);
            for (i, (v, s)) in vector.iter().zip(&scalar).enumerate() {
                assert_eq!(v.to_bits(), s.to_bits(), "{features} features, row {i}");
                let row = &rows[i * features..(i + 1) * features];
                assert!(
                    (v - forest.score_row(row)).abs() < 1e-12,
                    "row {i}: {row:?}"
                );
            }
        }
    }

    /// Trees that are single leaves (depth 0) walk no level: each row gets their sum.
    #[test]
    fn a_forest_of_leaves_scores_alike_on_both_walks() {
        let trees = (0..3)
            .map(|k| Tree {
                nodes: vec![Node::leaf(1.5 + k as f64)],
            })
            .collect();
        let forest = IsolationForest::new(2, 16, trees);
        let rows = vec![0.5; 2 * 70];
        let (mut vector, mut scalar) = (Vec::new(), Vec::new());
        forest.score_rows(&rows, &mut vector);
        forest.score_rows_scalar(&rows, &mut scalar);
        assert_eq!(vector, scalar);
        assert_eq!(vector[69], forest.score_row(&rows[..2]));
        assert!(vector[0] < 1.0, "the leaves' path lengths count");
    }

    /// Five features do not fit the ranked layout: the scalar walk scores them.
    #[test]
    fn forests_the_ranks_do_not_fit_score_on_the_scalar_walk() {
        let mut cols = gaussian_cloud(500, 8);
        cols.extend(gaussian_cloud(500, 9).into_iter().take(2));
        let forest = IsolationForest::fit(&cols, &ForestParams::default()).unwrap();
        assert!(!forest.scores_in_vectors());
        let rows = rows_around_thresholds(&forest, 4);
        let mut out = Vec::new();
        forest.score_rows(&rows, &mut out);
        for (i, s) in out.iter().enumerate() {
            assert!((s - forest.score_row(&rows[i * 5..i * 5 + 5])).abs() < 1e-12);
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
