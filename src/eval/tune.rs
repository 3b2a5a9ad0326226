//! Chooses the drafted width N (and optionally the drafted depth gamma) for each beam size K by
//! timing a few candidates.
//!
//! The best N depends on the device as much as on the draft. Where a pass costs in proportion to
//! its tokens (a CPU), every drafted beam makes the target's tree pass dearer, so a small N that
//! still covers the target's top-K most of the time wins: on the 2-core CPU, K = 1 runs fastest
//! with N = 3 or 4, not the paper's 40. Where a pass costs about the same for 20 or 400 tokens (a GPU
//! with small batches), a wide N buys acceptance for free. Rather than guess, `bench --tune-n`
//! times the candidates on the validation prompts of users the benchmark does not measure (so the
//! choice is not fitted to the users it is scored on) and keeps the fastest.

use std::collections::HashSet;
use std::time::Instant;

use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::Sample;
use crate::decode::params::MAX_WIDTH;
use crate::decode::{speculative, DecodeParams};
use crate::ids::PrefixAutomaton;
use crate::model::Llm;
use crate::Result;

/// Candidate widths for beam size `k`: K times 1, 1.5, 2, 3, 4, 6 and 8 (rounded up), capped at
/// `max_n` and at [`MAX_WIDTH`] (but never below K, which strict verification needs).
pub fn width_candidates(k: usize, max_n: usize) -> Vec<usize> {
    let cap = max_n.min(MAX_WIDTH).max(k);
    let mut v: Vec<usize> = [2, 3, 4, 6, 8, 12, 16]
        .iter()
        .map(|&half| k.saturating_mul(half).div_ceil(2).min(cap))
        .collect();
    v.dedup();
    v
}

/// One candidate draft shape and what it cost on the tuning users.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WidthTrial {
    pub n: usize,
    /// Drafted steps per round (0 in reports written before depth was tuned).
    #[serde(default)]
    pub gamma: usize,
    /// Mean speculative milliseconds per tuning user.
    pub speculative_ms: f64,
    /// Mean accepted drafted steps per tuning user.
    pub accepted_steps: f64,
}

/// The draft shape chosen for one K, with every trial behind the choice.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WidthChoice {
    pub k: usize,
    pub n: usize,
    #[serde(default)]
    pub gamma: usize,
    pub users: usize,
    pub trials: Vec<WidthTrial>,
}

/// Times speculative decoding for each candidate (N, gamma) on `prompts` and returns the
/// fastest (the smaller N, then the smaller gamma, on an exact tie). Candidates take turns per
/// user, starting at a different one each time, so drift in machine speed spreads over all of
/// them alike.
pub fn tune_width(
    target: &Llm,
    draft: &Llm,
    auto: &PrefixAutomaton,
    prompts: &[Vec<u32>],
    base: &DecodeParams,
    candidates: &[(usize, usize)],
    seed: u64,
) -> Result<WidthChoice> {
    let params: Vec<DecodeParams> = candidates
        .iter()
        .map(|&(n, gamma)| DecodeParams { n, gamma, ..*base })
        .collect();
    for p in &params {
        p.validate()?;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut ms = vec![0.0; params.len()];
    let mut steps = vec![0usize; params.len()];
    for (u, prompt) in prompts.iter().enumerate() {
        for j in 0..params.len() {
            let c = (u + j) % params.len();
            let t = Instant::now();
            let trace = speculative(target, draft, auto, prompt, &params[c], &mut rng)?;
            ms[c] += t.elapsed().as_secs_f64() * 1e3;
            steps[c] += trace.accepted_steps();
        }
    }
    let users = prompts.len().max(1) as f64;
    let trials: Vec<WidthTrial> = params
        .iter()
        .zip(ms.iter().zip(&steps))
        .map(|(p, (&t, &s))| WidthTrial {
            n: p.n,
            gamma: p.gamma,
            speculative_ms: t / users,
            accepted_steps: s as f64 / users,
        })
        .collect();
    let best = trials
        .iter()
        .min_by(|a, b| {
            a.speculative_ms
                .total_cmp(&b.speculative_ms)
                .then(a.n.cmp(&b.n))
                .then(a.gamma.cmp(&b.gamma))
        })
        .map_or((base.n, base.gamma), |t| (t.n, t.gamma));
    Ok(WidthChoice {
        k: base.k,
        n: best.0,
        gamma: best.1,
        users: prompts.len(),
        trials,
    })
}

/// The (N, gamma) grid for beam size `k`: every width of [`width_candidates`] with every depth
/// in `gammas`.
pub fn shape_candidates(k: usize, max_n: usize, gammas: &[usize]) -> Vec<(usize, usize)> {
    width_candidates(k, max_n)
        .into_iter()
        .flat_map(|n| gammas.iter().map(move |&g| (n, g)))
        .collect()
}

/// Tuning users: the last `count` validation samples of users outside `measured`. A user's
/// validation prompt is its test prompt shifted by one item, so a measured user must not tune.
pub fn tuning_samples(valid: Vec<Sample>, measured: &HashSet<u32>, count: usize) -> Vec<Sample> {
    let mut free: Vec<Sample> = valid
        .into_iter()
        .filter(|s| !measured.contains(&s.user))
        .collect();
    let keep = count.min(free.len());
    free.split_off(free.len() - keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(user: u32) -> Sample {
        Sample {
            user,
            history: vec![0],
            targets: Vec::new(),
            target_items: Vec::new(),
        }
    }

    #[test]
    fn tuning_users_are_never_measured_users() {
        let valid: Vec<Sample> = (1..=10).map(sample).collect();
        let users = |v: &[Sample]| v.iter().map(|s| s.user).collect::<Vec<_>>();
        let measured: HashSet<u32> = [8, 9, 10].into();
        assert_eq!(
            users(&tuning_samples(valid.clone(), &measured, 3)),
            [5, 6, 7]
        );
        // Fewer free users than asked for: all of them, none measured.
        let measured: HashSet<u32> = (1..=8).collect();
        assert_eq!(users(&tuning_samples(valid.clone(), &measured, 5)), [9, 10]);
        let measured: HashSet<u32> = (1..=10).collect();
        assert!(tuning_samples(valid, &measured, 5).is_empty());
    }

    #[test]
    fn candidates_are_multiples_of_k_within_the_cap() {
        assert_eq!(width_candidates(1, 160), vec![1, 2, 3, 4, 6, 8]);
        assert_eq!(width_candidates(3, 160), vec![3, 5, 6, 9, 12, 18, 24]);
        assert_eq!(
            width_candidates(20, 160),
            vec![20, 30, 40, 60, 80, 120, 160]
        );
        assert_eq!(width_candidates(20, 50), vec![20, 30, 40, 50]);
        // The cap never drops a width below K.
        assert_eq!(width_candidates(20, 10), vec![20]);
        assert_eq!(
            shape_candidates(20, 30, &[1, 3]),
            vec![(20, 1), (20, 3), (30, 1), (30, 3)]
        );
    }
}
