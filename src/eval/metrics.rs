//! Ranking metrics: Recall@n and NDCG@n over identifiers.
//!
//! Metrics compare identifiers, not items: a generated identifier shared by several items counts
//! once, and a ranked list that repeats an identifier (possible without the trie constraint)
//! gets credit only for its first occurrence, so neither metric can exceed 1.

use serde::{Deserialize, Serialize};

use crate::ids::Identifier;

/// The cutoffs n reported everywhere.
pub const CUTOFFS: [usize; 5] = [1, 3, 5, 10, 20];

/// 0-based ranks (within the top n) of the first occurrence of each ranked identifier that is in
/// the ground truth.
fn hit_ranks<'a>(
    ranked: &'a [Identifier],
    truth: &'a [Identifier],
    n: usize,
) -> impl Iterator<Item = usize> + 'a {
    let top = &ranked[..n.min(ranked.len())];
    top.iter()
        .enumerate()
        .filter(move |&(j, id)| truth.contains(id) && !top[..j].contains(id))
        .map(|(j, _)| j)
}

/// Number of distinct ground-truth identifiers (the truth is normally deduplicated already).
fn distinct(truth: &[Identifier]) -> usize {
    truth
        .iter()
        .enumerate()
        .filter(|&(i, id)| !truth[..i].contains(id))
        .count()
}

/// Discount of 0-based rank j.
fn gain(j: usize) -> f64 {
    1.0 / ((j + 2) as f64).log2()
}

/// Hits in the top n divided by the number of ground-truth identifiers; 0 for an empty truth.
pub fn recall_at(ranked: &[Identifier], truth: &[Identifier], n: usize) -> f64 {
    let total = distinct(truth);
    if total == 0 {
        return 0.0;
    }
    hit_ranks(ranked, truth, n).count() as f64 / total as f64
}

/// DCG of the hits in the top n over the ideal DCG (all of the first min(n, |truth|) ranks hit);
/// 0 for an empty truth or n = 0.
pub fn ndcg_at(ranked: &[Identifier], truth: &[Identifier], n: usize) -> f64 {
    let ideal: f64 = (0..n.min(distinct(truth))).map(gain).sum();
    if ideal == 0.0 {
        return 0.0;
    }
    hit_ranks(ranked, truth, n).map(gain).sum::<f64>() / ideal
}

/// Running sums of Recall and NDCG at every cutoff, averaged over users with a non-empty ground
/// truth. Sums (not means) are kept so partial results from several workers merge exactly.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankingMetrics {
    /// Users counted (non-empty ground truth).
    pub users: usize,
    /// Sum of Recall@CUTOFFS[i] over users.
    pub recall_sum: [f64; CUTOFFS.len()],
    /// Sum of NDCG@CUTOFFS[i] over users.
    pub ndcg_sum: [f64; CUTOFFS.len()],
}

impl RankingMetrics {
    /// Adds one user's ranked list. Users with an empty ground truth are not counted (the paper
    /// averages over users with non-empty ground truth).
    pub fn add(&mut self, ranked: &[Identifier], truth: &[Identifier]) {
        if truth.is_empty() {
            return;
        }
        self.users += 1;
        for (i, &n) in CUTOFFS.iter().enumerate() {
            self.recall_sum[i] += recall_at(ranked, truth, n);
            self.ndcg_sum[i] += ndcg_at(ranked, truth, n);
        }
    }

    /// Mean Recall@n; 0 with no users, NaN if n is not one of `CUTOFFS`.
    pub fn recall(&self, n: usize) -> f64 {
        self.mean(&self.recall_sum, n)
    }

    /// Mean NDCG@n; 0 with no users, NaN if n is not one of `CUTOFFS`.
    pub fn ndcg(&self, n: usize) -> f64 {
        self.mean(&self.ndcg_sum, n)
    }

    /// Folds another partial result into this one.
    pub fn merge(&mut self, other: &RankingMetrics) {
        self.users += other.users;
        for i in 0..CUTOFFS.len() {
            self.recall_sum[i] += other.recall_sum[i];
            self.ndcg_sum[i] += other.ndcg_sum[i];
        }
    }

    fn mean(&self, sums: &[f64; CUTOFFS.len()], n: usize) -> f64 {
        match CUTOFFS.iter().position(|&c| c == n) {
            None => f64::NAN,
            Some(_) if self.users == 0 => 0.0,
            Some(i) => sums[i] / self.users as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X: Identifier = Identifier::from_array([4, 10, 20, 30]);
    const Y: Identifier = Identifier::from_array([5, 10, 20, 30]);
    const Z: Identifier = Identifier::from_array([6, 10, 20, 30]);
    const W: Identifier = Identifier::from_array([7, 10, 20, 30]);

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn recall_and_ndcg_by_hand() {
        let truth = [X, Y];
        let ranked = [Z, X, W, Y];
        let g1 = 1.0 / 3f64.log2(); // rank 1
        let g3 = 1.0 / 5f64.log2(); // rank 3
        assert_eq!(recall_at(&ranked, &truth, 1), 0.0);
        assert_eq!(recall_at(&ranked, &truth, 3), 0.5);
        assert_eq!(recall_at(&ranked, &truth, 5), 1.0);
        assert_eq!(ndcg_at(&ranked, &truth, 1), 0.0);
        assert!(close(ndcg_at(&ranked, &truth, 3), g1 / (1.0 + g1)));
        assert!(close(ndcg_at(&ranked, &truth, 20), (g1 + g3) / (1.0 + g1)));
    }

    #[test]
    fn single_target_ideal_is_one_rank() {
        let ranked = [Z, W, X];
        assert!(close(ndcg_at(&ranked, &[X], 3), 0.5)); // 1/log2(4)
        assert!(close(ndcg_at(&[X], &[X], 1), 1.0));
        assert_eq!(recall_at(&ranked, &[X], 2), 0.0);
    }

    #[test]
    fn duplicates_in_ranked_count_once() {
        let truth = [X, Y];
        let ranked = [X, X, X];
        assert_eq!(recall_at(&ranked, &truth, 3), 0.5);
        assert!(close(
            ndcg_at(&ranked, &truth, 3),
            1.0 / (1.0 + 1.0 / 3f64.log2())
        ));
        assert!(ndcg_at(&[X, X, Y, Y], &truth, 5) <= 1.0);
    }

    #[test]
    fn empty_inputs_are_zero() {
        assert_eq!(recall_at(&[X], &[], 5), 0.0);
        assert_eq!(ndcg_at(&[X], &[], 5), 0.0);
        assert_eq!(recall_at(&[], &[X], 5), 0.0);
        assert_eq!(ndcg_at(&[X], &[X], 0), 0.0);
    }

    #[test]
    fn aggregate_means_and_merge() {
        let mut a = RankingMetrics::default();
        a.add(&[X, Z], &[X]); // recall@1 = 1
        a.add(&[Z, X], &[X]); // recall@1 = 0, recall@3 = 1
        a.add(&[X], &[]); // not counted
        assert_eq!(a.users, 2);
        assert_eq!(a.recall(1), 0.5);
        assert_eq!(a.recall(3), 1.0);
        assert!(close(a.ndcg(3), (1.0 + 1.0 / 3f64.log2()) / 2.0));
        assert!(a.recall(2).is_nan());
        assert_eq!(RankingMetrics::default().ndcg(5), 0.0);

        let mut b = RankingMetrics::default();
        b.add(&[W], &[X]);
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged.users, 3);
        assert!(close(merged.recall(1), 1.0 / 3.0));
        let json = serde_json::to_string(&merged).unwrap();
        let back: RankingMetrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back, merged);
    }
}
