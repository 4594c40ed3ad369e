//! Retrieval ranking metrics by counting (docs/method.md §7.2).
//!
//! IRRA's `rank()` sorts each similarity row and reads R@K, AP and INP off the sorted hit list.
//! Only the positions of the relevant items matter, so here the 0-based rank of each positive
//! `p` of a query is counted directly:
//!
//! ```text
//! r_p = #{g : s_g > s_p} + #{g : s_g = s_p, g < p}      (ties: ascending gallery index)
//! ```
//!
//! With the positives' ranks sorted, `r_(1) < … < r_(n)`:
//! `AP = (1/n) Σ_i i/(r_(i)+1)`, `INP = n/(r_(n)+1)`, `R@K = [r_(1) < K]`. One pass over the
//! row per positive gives O(G·n_rel) per query instead of O(G log G), and queries run in
//! parallel on rayon's pool. NaN scores rank below every number (they are treated as −∞, and
//! among themselves by ascending index).

use rayon::prelude::*;

/// R@1/5/10, mAP and mINP, all × 100, of a set of queries against a gallery.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RankMetrics {
    /// Recall at 1 (× 100).
    pub r1: f64,
    /// Recall at 5 (× 100).
    pub r5: f64,
    /// Recall at 10 (× 100).
    pub r10: f64,
    /// Mean average precision (× 100).
    pub map: f64,
    /// Mean inverse negative penalty (× 100).
    pub minp: f64,
    /// Expected R@1 of a random ranking: mean over queries of #relevant / #gallery (× 100).
    pub chance_r1: f64,
    /// Number of queries.
    pub queries: usize,
    /// Gallery size.
    pub gallery: usize,
}

/// Why the metrics could not be computed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RankError {
    /// No query or no gallery item.
    #[error("ranking: empty query set ({queries}) or gallery ({gallery})")]
    Empty {
        /// Number of queries.
        queries: usize,
        /// Gallery size.
        gallery: usize,
    },
    /// `sim.len() != queries × gallery`.
    #[error("ranking: similarity has {len} entries, expected {queries}×{gallery}")]
    Shape {
        /// Entries in the matrix.
        len: usize,
        /// Number of queries.
        queries: usize,
        /// Gallery size.
        gallery: usize,
    },
    /// Some queries have no relevant gallery item (IRRA's `rank` would divide by zero).
    #[error(
        "ranking: {count} of {queries} queries have no relevant gallery item (first: query {first}, id {id}); every query id must occur in the gallery"
    )]
    NoPositive {
        /// How many queries lack a positive.
        count: usize,
        /// Number of queries.
        queries: usize,
        /// The first such query.
        first: usize,
        /// Its id.
        id: u64,
    },
}

/// Per-query result: the 0-based ranks of its relevant items, ascending.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryRanks {
    /// Sorted ranks `r_(1) < … < r_(n)` of the positives.
    pub ranks: Vec<usize>,
}

impl QueryRanks {
    /// Average precision (not × 100).
    pub fn ap(&self) -> f64 {
        let n = self.ranks.len() as f64;
        self.ranks
            .iter()
            .enumerate()
            .map(|(i, &r)| (i + 1) as f64 / (r + 1) as f64)
            .sum::<f64>()
            / n
    }
    /// Inverse negative penalty (not × 100).
    pub fn inp(&self) -> f64 {
        self.ranks.len() as f64 / (*self.ranks.last().unwrap_or(&0) + 1) as f64
    }
}

/// The sort key: NaN becomes −∞ so it ranks last.
#[inline(always)]
fn key(v: f32) -> f32 {
    if v.is_nan() { f32::NEG_INFINITY } else { v }
}

/// Descending order of two scores (NaN as −∞; −0 equals +0, as in `>=` and torch's sort).
#[inline(always)]
fn desc(a: f32, b: f32) -> std::cmp::Ordering {
    key(b)
        .partial_cmp(&key(a))
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// 0-based rank of gallery item `p` in `row` (descending score, ties by ascending index).
#[inline]
pub fn rank_of(row: &[f32], p: usize) -> usize {
    let (before, after) = row.split_at(p);
    let after = &after[1..];
    let s = row[p];
    if s.is_nan() {
        // A NaN positive ties with every NaN (and −∞) and ranks below every other number.
        let s = key(s);
        let a = before.iter().filter(|&&v| key(v) >= s).count();
        let b = after.iter().filter(|&&v| key(v) > s).count();
        return a + b;
    }
    // Items before p rank above it when s_g >= s_p, items after p when s_g > s_p; a NaN s_g
    // compares false, so NaN ranks last. Written as sums of 0/1 so the loops vectorise.
    let a: usize = before
        .chunks(1 << 16)
        .map(|c| c.iter().map(|&v| (v >= s) as u32).sum::<u32>() as usize)
        .sum();
    let b: usize = after
        .chunks(1 << 16)
        .map(|c| c.iter().map(|&v| (v > s) as u32).sum::<u32>() as usize)
        .sum();
    a + b
}

/// Ranks of the positives `pos` (gallery indices) in one similarity row, sorted ascending.
pub fn query_ranks(row: &[f32], pos: &[usize]) -> QueryRanks {
    let mut ranks: Vec<usize> = pos.iter().map(|&p| rank_of(row, p)).collect();
    ranks.sort_unstable();
    QueryRanks { ranks }
}

/// Gallery indices of each distinct id, in ascending index order.
fn positives_by_id(gallery_ids: &[u64]) -> std::collections::HashMap<u64, Vec<usize>> {
    let mut m: std::collections::HashMap<u64, Vec<usize>> = std::collections::HashMap::new();
    for (g, &id) in gallery_ids.iter().enumerate() {
        m.entry(id).or_default().push(g);
    }
    m
}

/// Checks sizes and that every query has a positive.
fn check(sim_len: usize, query_ids: &[u64], gallery_ids: &[u64]) -> Result<(), RankError> {
    let (nq, ng) = (query_ids.len(), gallery_ids.len());
    if nq == 0 || ng == 0 {
        return Err(RankError::Empty {
            queries: nq,
            gallery: ng,
        });
    }
    if sim_len != nq * ng {
        return Err(RankError::Shape {
            len: sim_len,
            queries: nq,
            gallery: ng,
        });
    }
    let ids: std::collections::HashSet<u64> = gallery_ids.iter().copied().collect();
    let missing: Vec<usize> = (0..nq).filter(|&q| !ids.contains(&query_ids[q])).collect();
    if let Some(&first) = missing.first() {
        return Err(RankError::NoPositive {
            count: missing.len(),
            queries: nq,
            first,
            id: query_ids[first],
        });
    }
    Ok(())
}

/// IRRA's retrieval metrics of a row-major similarity matrix `sim` [Q, G]: query q ranks the
/// whole gallery by descending `sim[q]`, ties broken by **ascending gallery index**; gallery
/// item g is relevant iff `gallery_ids[g] == query_ids[q]`. Threaded over queries.
///
/// Errors if the sizes disagree, either side is empty, or a query has no relevant item.
pub fn rank_metrics(
    sim: &[f32],
    query_ids: &[u64],
    gallery_ids: &[u64],
) -> Result<RankMetrics, RankError> {
    check(sim.len(), query_ids, gallery_ids)?;
    let (nq, ng) = (query_ids.len(), gallery_ids.len());
    let pos = positives_by_id(gallery_ids);
    // Per query: (r1, r5, r10, ap, inp, n_rel), summed in a fixed order for determinism.
    let per: Vec<[f64; 6]> = (0..nq)
        .into_par_iter()
        .map(|q| {
            let p = &pos[&query_ids[q]];
            let qr = query_ranks(&sim[q * ng..(q + 1) * ng], p);
            let first = qr.ranks[0];
            [
                (first < 1) as u8 as f64,
                (first < 5) as u8 as f64,
                (first < 10) as u8 as f64,
                qr.ap(),
                qr.inp(),
                p.len() as f64,
            ]
        })
        .collect();
    let mut sum = [0.0f64; 6];
    for v in &per {
        for (s, x) in sum.iter_mut().zip(v) {
            *s += x;
        }
    }
    let k = 100.0 / nq as f64;
    Ok(RankMetrics {
        r1: sum[0] * k,
        r5: sum[1] * k,
        r10: sum[2] * k,
        map: sum[3] * k,
        minp: sum[4] * k,
        chance_r1: sum[5] / ng as f64 * k,
        queries: nq,
        gallery: ng,
    })
}

/// The ranking of one query row: gallery indices by descending score, ties by ascending index
/// (NaN last). Used to list the top-K of a search; O(G log G).
pub fn order_of(row: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| desc(row[a], row[b]));
    order
}

/// The `k` best gallery indices of a row in ranking order, by partial selection then a sort of
/// the selected items (O(G + k log k)).
pub fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    let cmp = |a: &usize, b: &usize| desc(row[*a], row[*b]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..row.len()).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx
}

/// Pseudo-random similarity matrix [q, g] and ids for benchmarks and tests: `ids` identities,
/// gallery item g has id `g % ids`, query q has id `q % ids`; scores uniform in [−1, 1) from a
/// splitmix64 stream seeded by `seed`.
pub fn random_problem(q: usize, g: usize, ids: usize, seed: u64) -> (Vec<f32>, Vec<u64>, Vec<u64>) {
    let ids = ids.max(1) as u64;
    let sim: Vec<f32> = (0..q)
        .into_par_iter()
        .flat_map_iter(|r| {
            let mut state = seed ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (0..g).map(move |_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
        })
        .collect();
    let qid = (0..q as u64).map(|i| i % ids).collect();
    let gid = (0..g as u64).map(|i| i % ids).collect();
    (sim, qid, gid)
}

/// Matrix product `a` [n, d] · `b` [m, d]ᵀ → [n, m] on the CPU (a threaded gemm through
/// dfdx; cosine similarities when the rows are L2-normalised).
pub fn similarity_par(a: &[f32], b: &[f32], d: usize) -> Vec<f32> {
    similarity_on(&dfdx::prelude::Cpu::default(), a, b, d)
}

/// [`similarity_par`] on any dfdx device, computed in blocks of 4096 rows of `a` so that the
/// device holds at most one block of the product besides the inputs.
pub fn similarity_on<D: dfdx::prelude::Device<f32>>(
    dev: &D,
    a: &[f32],
    b: &[f32],
    d: usize,
) -> Vec<f32> {
    use dfdx::prelude::*;
    assert!(
        d > 0 && a.len().is_multiple_of(d) && b.len().is_multiple_of(d),
        "similarity: ragged rows"
    );
    let (n, m) = (a.len() / d, b.len() / d);
    let mut out = Vec::with_capacity(n * m);
    if n == 0 || m == 0 {
        return vec![0.0; n * m];
    }
    let bt: Tensor<(usize, usize), f32, D> = dev.tensor_from_vec(b.to_vec(), (m, d));
    let bt = bt.permute::<(usize, usize), Axes2<1, 0>>();
    for block in a.chunks(4096 * d) {
        let rows = block.len() / d;
        let at: Tensor<(usize, usize), f32, D> = dev.tensor_from_vec(block.to_vec(), (rows, d));
        out.extend(at.matmul(bt.clone()).as_vec());
    }
    out
}
