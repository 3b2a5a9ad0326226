//! Choosing beams: scored extensions under the constraint, deterministic top-k with an
//! order-independent tie-break, and the samplers relaxed mode needs.

use std::cmp::Ordering;

use rand::Rng;

use super::ranking::beam_order;
use super::tree::{NodeId, Tree};
use crate::ids::PrefixAutomaton;

/// A live beam: its last node and cumulative score (target log-probability unless stated).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Beam {
    pub node: NodeId,
    pub score: f32,
}

/// One allowed extension of a parent beam.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cand {
    /// Index of the parent in the parents slice it was built from.
    pub parent: usize,
    pub token: u32,
    /// Automaton state after the token.
    pub state: u32,
    /// Log-probability of the token given the parent.
    pub logp: f32,
    /// Parent score + logp.
    pub score: f32,
}

/// Every allowed extension of `parents`, scored with the log-probability rows `row(i)` of
/// parent i. Disallowed tokens are simply absent (log_softmax over the full vocabulary, then
/// masked: no renormalisation, as in the reference and Hugging Face).
pub fn extensions<'a>(
    tree: &Tree,
    auto: &PrefixAutomaton,
    parents: &[Beam],
    row: impl Fn(usize) -> &'a [f32],
) -> Vec<Cand> {
    let mut out = Vec::new();
    for (i, b) in parents.iter().enumerate() {
        let lp = row(i);
        for &(token, state) in auto.children(tree.node(b.node).state) {
            let logp = lp[token as usize];
            out.push(Cand {
                parent: i,
                token,
                state,
                logp,
                score: b.score + logp,
            });
        }
    }
    out
}

/// Orders candidates best first by [`beam_order`].
pub fn compare(a: &Cand, b: &Cand, paths: &[Vec<u32>]) -> Ordering {
    // (parent path, token) compares like the extended sequence: all paths have one length.
    beam_order(
        (a.score, (&paths[a.parent], a.token)),
        (b.score, (&paths[b.parent], b.token)),
    )
}

/// The `k` best candidates, best first.
pub fn top_k(mut cands: Vec<Cand>, k: usize, paths: &[Vec<u32>]) -> Vec<Cand> {
    if cands.len() > k && k > 0 {
        cands.select_nth_unstable_by(k - 1, |a, b| compare(a, b, paths));
        cands.truncate(k);
    }
    cands.sort_by(|a, b| compare(a, b, paths));
    cands.truncate(k);
    cands
}

/// The 1-based rank of each `targets[i]` (an index into `cands`) in the best-first order of all
/// of `cands` ([`compare`]), without sorting them: O(len log targets).
pub fn ranks(cands: &[Cand], paths: &[Vec<u32>], targets: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..targets.len()).collect();
    order.sort_by(|&a, &b| compare(&cands[targets[a]], &cands[targets[b]], paths));
    // before[i]: candidates whose first target (in best-first order) they precede is order[i].
    // "c precedes key" is monotone along the sorted keys, so a binary search finds it.
    let mut before = vec![0usize; targets.len() + 1];
    for c in cands {
        let i = order.partition_point(|&t| compare(c, &cands[targets[t]], paths) != Ordering::Less);
        before[i] += 1;
    }
    let mut out = vec![0; targets.len()];
    let mut acc = 0;
    for (i, &t) in order.iter().enumerate() {
        acc += before[i];
        out[t] = acc + 1;
    }
    out
}

/// log(sum(exp(x))) over the candidates' scores.
pub fn log_sum_exp(xs: impl Iterator<Item = f32> + Clone) -> f32 {
    let m = xs.clone().fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        return m;
    }
    m + xs.map(|x| (x - m).exp()).sum::<f32>().ln()
}

/// Samples `k` candidates without replacement, each draw proportional to exp(score) among those
/// left (Gumbel-top-k), returned best score first.
pub fn sample_k<R: Rng>(cands: Vec<Cand>, k: usize, paths: &[Vec<u32>], rng: &mut R) -> Vec<Cand> {
    let mut keyed: Vec<(f64, Cand)> = cands
        .into_iter()
        .map(|c| {
            let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            (c.score as f64 - (-u.ln()).ln(), c)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out: Vec<Cand> = keyed.into_iter().take(k).map(|(_, c)| c).collect();
    out.sort_by(|a, b| compare(a, b, paths));
    out
}

/// Draws `m` distinct indices without replacement, each draw proportional to `weights` among
/// those left; indices already in `taken` are excluded. Falls back to `fallback` weights when
/// the remaining mass of `weights` is zero (relaxed mode: an empty residual falls back to the
/// target's own distribution over valid continuations, never to invalid tokens). Returns each
/// index with whether it came from the fallback.
pub fn draw_without_replacement<R: Rng>(
    weights: &[f64],
    fallback: &[f64],
    taken: &mut [bool],
    m: usize,
    rng: &mut R,
) -> Vec<(usize, bool)> {
    let mut out = Vec::with_capacity(m.min(weights.len()));
    for _ in 0..m {
        let pick = draw_one(weights, taken, rng)
            .map(|i| (i, false))
            .or_else(|| draw_one(fallback, taken, rng).map(|i| (i, true)));
        match pick {
            Some((i, fell_back)) => {
                taken[i] = true;
                out.push((i, fell_back));
            }
            None => break,
        }
    }
    out
}

fn draw_one<R: Rng>(weights: &[f64], taken: &[bool], rng: &mut R) -> Option<usize> {
    let total: f64 = weights
        .iter()
        .zip(taken)
        .filter(|(_, &t)| !t)
        .map(|(w, _)| w.max(0.0))
        .sum();
    if total <= 1e-300 {
        return None;
    }
    let mut x = rng.random::<f64>() * total;
    let mut last = None;
    for (i, (w, &t)) in weights.iter().zip(taken).enumerate() {
        if t || *w <= 0.0 {
            continue;
        }
        last = Some(i);
        if x < *w {
            return Some(i);
        }
        x -= w;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cand(parent: usize, token: u32, score: f32) -> Cand {
        Cand {
            parent,
            token,
            state: 0,
            logp: score,
            score,
        }
    }

    #[test]
    fn top_k_breaks_ties_by_tokens_not_position() {
        let paths = vec![vec![9], vec![3]];
        let a = vec![cand(0, 5, -1.0), cand(1, 7, -1.0), cand(1, 2, -0.5)];
        let mut b = a.clone();
        b.reverse();
        let ta = top_k(a, 2, &paths);
        let tb = top_k(b, 2, &paths);
        assert_eq!(ta, tb);
        assert_eq!((ta[0].parent, ta[0].token), (1, 2));
        // Equal scores: the path [3, 7] sorts before [9, 5].
        assert_eq!((ta[1].parent, ta[1].token), (1, 7));
    }

    #[test]
    fn draws_follow_weights_and_fall_back() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0usize; 3];
        for _ in 0..20_000 {
            let mut taken = vec![false; 3];
            let d = draw_without_replacement(&[0.2, 0.0, 0.8], &[1.0; 3], &mut taken, 1, &mut rng);
            assert!(!d[0].1);
            counts[d[0].0] += 1;
        }
        assert_eq!(counts[1], 0);
        assert!((counts[2] as f64 / 20_000.0 - 0.8).abs() < 0.02);
        let mut taken = vec![false; 3];
        let all = draw_without_replacement(&[0.0, 0.0, 1.0], &[1.0; 3], &mut taken, 3, &mut rng);
        let mut sorted: Vec<usize> = all.iter().map(|d| d.0).collect();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2]);
        // Index 2 came from the weights, the other two from the fallback.
        assert_eq!(all[0], (2, false));
        assert!(all[1].1 && all[2].1);
    }

    #[test]
    fn ranks_match_a_full_sort() {
        let paths = vec![vec![4], vec![1]];
        let cands: Vec<Cand> = (0..40)
            .map(|i| cand(i % 2, i as u32, -((i * 7 % 13) as f32) / 3.0))
            .collect();
        let mut sorted: Vec<usize> = (0..cands.len()).collect();
        sorted.sort_by(|&a, &b| compare(&cands[a], &cands[b], &paths));
        let targets = [5, 0, 39, 12, 13];
        let r = ranks(&cands, &paths, &targets);
        for (t, rank) in targets.iter().zip(r) {
            assert_eq!(sorted.iter().position(|x| x == t).unwrap() + 1, rank);
        }
    }
}
