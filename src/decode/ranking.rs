//! The order of beams, and how two ranked lists are compared.
//!
//! **Beam order.** Best first: the higher score, then the lexicographically smaller token
//! sequence. The tie-break looks only at the beam itself, never at where it sits in a list, so
//! target-only beam search and the speculative path (which hold the same beams in different
//! orders) agree on ties. Every sort and top-k in decoding goes through [`beam_order`].
//!
//! **List comparison.** Strict speculative decoding must return the target's own list. The two
//! paths compute the same scores through different kernels (one tree pass against incremental
//! passes), so the scores differ in their last bits, and how far depends on the dtype and on the
//! scores' magnitude. [`compare_lists`] therefore judges items, not bits:
//! - *identical*: the same items in the same order, whatever the scores' last bits (the largest
//!   score deviation is reported, never used to call the lists different);
//! - *near-tie*: the lists differ, but at every rank where they differ the two scores agree
//!   within [`ScoreTolerance`]: a float near-tie decided differently by the two kernels;
//! - *different*: anything else, which in strict mode is a bug.

use std::cmp::Ordering;

use candle_core::DType;
use serde::{Deserialize, Serialize};

use super::trace::BeamView;

/// Best-first order of two beams given as (score, token sequence). The sequence may be any
/// ordered key that compares like the full token sequence, e.g. (parent path, next token).
pub fn beam_order<T: Ord>(a: (f32, T), b: (f32, T)) -> Ordering {
    b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1))
}

/// Sorts beams best first (the order beam search returns).
pub fn sort_views(v: &mut [BeamView]) {
    v.sort_by(|a, b| beam_order((a.score, &a.tokens), (b.score, &b.tokens)));
}

/// How far two computations of the same beam score may drift apart: `abs + rel * |score|`.
///
/// Derived from measurement: `tests/exactness.rs::strict_equals_beam_search_on_wide_models_and_in_bf16`
/// prints the largest deviation between the tree pass's and the incremental passes' scores of the
/// same beams. Measured relative deviations: f32 3.1e-6 on a 4x512 model (and 1e-4 at a score of
/// 25, 4e-6, on a 24x1536 one), f16 1.6e-3 and bf16 2.9e-3 on 4x512. The tolerances are 5-7x
/// those, so a real bug (a wrong mask, a stale cache entry: errors of whole log-probability
/// units) stays far outside.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreTolerance {
    pub abs: f32,
    pub rel: f32,
}

impl ScoreTolerance {
    /// The tolerance for scores computed with weights and activations in `dtype`.
    pub fn for_dtype(dtype: DType) -> Self {
        match dtype {
            DType::BF16 => ScoreTolerance {
                abs: 0.25,
                rel: 0.02,
            },
            DType::F16 => ScoreTolerance {
                abs: 0.1,
                rel: 0.01,
            },
            _ => ScoreTolerance {
                abs: 2e-5,
                rel: 2e-5,
            },
        }
    }

    /// The allowed gap between two scores of about this size.
    pub fn allowed(&self, a: f32, b: f32) -> f32 {
        self.abs + self.rel * a.abs().max(b.abs())
    }

    pub fn agree(&self, a: f32, b: f32) -> bool {
        (a - b).abs() <= self.allowed(a, b)
    }

    /// What a run in `dtype` should say once: narrower than f32, items whose scores lie within
    /// the tolerance may swap against an f32 reference (transformers' f32 lists). `None` in f32.
    pub fn caveat(dtype: DType) -> Option<String> {
        if matches!(dtype, DType::F32 | DType::F64) {
            return None;
        }
        let t = Self::for_dtype(dtype);
        Some(format!(
            "computing in {}: items whose scores lie within {} + {}|s| of each other may swap against an f32 reference; --dtype f32 reproduces transformers' f32 lists",
            crate::model::checkpoint::dtype_name(dtype),
            t.abs,
            t.rel
        ))
    }
}

/// The verdict of [`compare_lists`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListMatch {
    /// The same items in the same order.
    Identical,
    /// Different items at some ranks, each with scores that agree within the tolerance.
    NearTie,
    /// A difference the tolerance cannot explain.
    Different,
}

/// Two ranked lists compared (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListComparison {
    pub verdict: ListMatch,
    /// Largest |score difference| of an item present in both lists: how far the two kernels
    /// drifted on the same beam.
    pub max_deviation: f32,
    /// At the ranks where the items differ: the largest score gap, and the gap the tolerance
    /// allowed there (both 0 for identical lists).
    pub worst_gap: f32,
    pub worst_allowed: f32,
    /// Whether every beam in both lists has agreeing scores. Identical lists are identical
    /// whatever their scores, but scores that drift beyond the tolerance are a bug of their own
    /// (printed scores would be wrong), which the strict verdict reports.
    #[serde(default = "yes")]
    pub scores_agree: bool,
}

fn yes() -> bool {
    true
}

/// Compares list `a` with the reference list `b` (both best first).
pub fn compare_lists(a: &[BeamView], b: &[BeamView], tol: ScoreTolerance) -> ListComparison {
    let mut max_deviation = 0f32;
    let mut scores_agree = true;
    for x in a {
        if let Some(y) = b.iter().find(|y| y.tokens == x.tokens) {
            max_deviation = max_deviation.max((x.score - y.score).abs());
            scores_agree &= tol.agree(x.score, y.score);
        }
    }
    let mut worst_gap = 0f32;
    let mut worst_allowed = 0f32;
    let mut near = true;
    for (x, y) in a.iter().zip(b) {
        if x.tokens == y.tokens {
            continue;
        }
        // A NaN score never agrees: its gap counts as infinite.
        let gap = match (x.score - y.score).abs() {
            g if g.is_nan() => f32::INFINITY,
            g => g,
        };
        if !tol.agree(x.score, y.score) {
            near = false;
        }
        if gap > worst_gap {
            worst_gap = gap;
            worst_allowed = tol.allowed(x.score, y.score);
        }
    }
    let verdict = if a.len() != b.len() {
        ListMatch::Different
    } else if a.iter().zip(b).all(|(x, y)| x.tokens == y.tokens) {
        ListMatch::Identical
    } else if near {
        ListMatch::NearTie
    } else {
        ListMatch::Different
    };
    ListComparison {
        verdict,
        max_deviation,
        worst_gap,
        worst_allowed,
        scores_agree,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(tokens: &[u32], score: f32) -> BeamView {
        BeamView {
            tokens: tokens.to_vec(),
            score,
        }
    }

    #[test]
    fn order_is_score_then_tokens() {
        let mut v = vec![b(&[2, 1], -1.0), b(&[1, 9], -1.0), b(&[3, 3], -0.5)];
        sort_views(&mut v);
        let toks: Vec<_> = v.iter().map(|x| x.tokens.clone()).collect();
        assert_eq!(toks, [vec![3, 3], vec![1, 9], vec![2, 1]]);
    }

    #[test]
    fn identical_items_are_identical_whatever_the_scores() {
        let tol = ScoreTolerance::for_dtype(DType::F32);
        // Same items, scores off by 1e-4 at magnitude 25: identical, deviation reported.
        let a = [b(&[1], -25.0), b(&[2], -26.0)];
        let c = [b(&[1], -25.0001), b(&[2], -26.0)];
        let r = compare_lists(&a, &c, tol);
        assert_eq!(r.verdict, ListMatch::Identical);
        assert!((r.max_deviation - 1e-4).abs() < 2e-5, "{r:?}");
    }

    #[test]
    fn swaps_are_near_ties_only_within_the_tolerance() {
        let tol = ScoreTolerance::for_dtype(DType::F32);
        let a = [b(&[1], -3.0), b(&[2], -3.000_01)];
        let swapped = [b(&[2], -3.000_01), b(&[1], -3.0)];
        assert_eq!(compare_lists(&a, &swapped, tol).verdict, ListMatch::NearTie);
        let far = [b(&[2], -3.5), b(&[1], -3.0)];
        let r = compare_lists(&a, &far, tol);
        assert_eq!(r.verdict, ListMatch::Different);
        assert!((r.worst_gap - 0.5).abs() < 1e-6);
        // A different item at the last rank with a near-equal score: the K-th place was a tie.
        let edge = [b(&[1], -3.0), b(&[7], -3.000_01)];
        assert_eq!(compare_lists(&a, &edge, tol).verdict, ListMatch::NearTie);
        assert_eq!(
            compare_lists(&a, &a[..1], tol).verdict,
            ListMatch::Different
        );
        let nan = [b(&[1], -3.0), b(&[7], f32::NAN)];
        assert_eq!(compare_lists(&a, &nan, tol).verdict, ListMatch::Different);
        // The same gap that fails in f32 is a near-tie in bf16.
        let bf = ScoreTolerance::for_dtype(DType::BF16);
        let loose = [b(&[2], -3.05), b(&[1], -3.0)];
        assert_eq!(compare_lists(&a, &loose, bf).verdict, ListMatch::NearTie);
        assert_eq!(compare_lists(&a, &loose, tol).verdict, ListMatch::Different);
    }
}
