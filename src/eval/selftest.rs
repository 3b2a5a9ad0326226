//! `atspeed selftest`: what a user runs to trust a device. It compares the device's log-probs with
//! the CPU f32 reference, checks that strict speculative decoding equals target-only beam search
//! on real users, and times a short benchmark. Every check reports its numbers and its tolerance.

use candle_core::{DType, Device};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::bench::{run_bench, BenchConfig, BenchReport};
use crate::data::Dataset;
use crate::decode::tree::{ModelState, Rows, Tree};
use crate::decode::{beam_search, speculative, BeamView, Mode, SpecParams};
use crate::model::Llm;
use crate::Result;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogitCheck {
    pub dtype: String,
    pub users: usize,
    pub max_abs: f32,
    pub max_rel: f32,
    pub tolerance_abs: f32,
    pub pass: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExactCheck {
    pub users: usize,
    /// Lists identical item for item.
    pub identical: usize,
    /// Lists that differ only by swapping items whose scores are within 1e-5 (float near-ties
    /// between the tree pass and the incremental passes).
    pub near_ties: usize,
    pub pass: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SelftestReport {
    pub device: String,
    pub logits: LogitCheck,
    pub exact: ExactCheck,
    pub bench: BenchReport,
}

impl SelftestReport {
    pub fn pass(&self) -> bool {
        self.logits.pass && self.exact.pass
    }
}

/// Log-prob tolerance against the CPU f32 reference, by dtype. Log-probs of these vocabularies
/// sit around -7; reduced precision moves them by up to a few hundredths (f16) or tenths (bf16).
pub fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => 5e-2,
        DType::BF16 => 2.5e-1,
        _ => 2e-3,
    }
}

/// Prompt-end log-probs of the first `users` test users on both copies of the model.
pub fn check_logits(
    data: &Dataset,
    reference: &Llm,
    device_model: &Llm,
    users: usize,
) -> Result<LogitCheck> {
    let mut max_abs = 0f32;
    let mut max_rel = 0f32;
    let samples = data.test_samples(crate::data::DEFAULT_HISTORY);
    let n = users.min(samples.len());
    for s in samples.iter().take(n) {
        let prompt = data.prompt(&s.history);
        let (tree, root) = Tree::with_prompt(&prompt);
        let fed: Vec<u32> = (0..prompt.len() as u32).collect();
        let mut a = ModelState::new(reference);
        let mut b = ModelState::new(device_model);
        let ra = Rows::from_tensor(&a.feed(reference, &tree, &fed, &[root])?.0)?;
        let rb = Rows::from_tensor(&b.feed(device_model, &tree, &fed, &[root])?.0)?;
        for (x, y) in ra.row(0).iter().zip(rb.row(0)) {
            let d = (x - y).abs();
            max_abs = max_abs.max(d);
            max_rel = max_rel.max(d / x.abs().max(1e-6));
        }
    }
    let tol = tolerance(device_model.model.dtype());
    Ok(LogitCheck {
        dtype: format!("{:?}", device_model.model.dtype()).to_lowercase(),
        users: n,
        max_abs,
        max_rel,
        tolerance_abs: tol,
        pass: max_abs <= tol,
    })
}

/// Strict speculative lists against target-only lists, user by user.
pub fn check_exact(
    data: &Dataset,
    target: &Llm,
    draft: &Llm,
    users: usize,
    params: &SpecParams,
) -> Result<ExactCheck> {
    let samples = data.test_samples(crate::data::DEFAULT_HISTORY);
    let n = users.min(samples.len());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let (mut identical, mut near) = (0, 0);
    for s in samples.iter().take(n) {
        let prompt = data.prompt(&s.history);
        let base = beam_search(target, &data.trie, &prompt, params.k)?;
        let spec = speculative(target, draft, &data.trie, &prompt, params, &mut rng)?;
        match compare_lists(&spec.beams, &base.beams, 1e-5) {
            ListMatch::Identical => identical += 1,
            ListMatch::NearTie => near += 1,
            ListMatch::Different => {}
        }
    }
    Ok(ExactCheck {
        users: n,
        identical,
        near_ties: near,
        pass: identical + near == n,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListMatch {
    Identical,
    /// Same scores rank by rank (within the tolerance), different items: a float near-tie.
    NearTie,
    Different,
}

pub fn compare_lists(a: &[BeamView], b: &[BeamView], tol: f32) -> ListMatch {
    if a.len() != b.len()
        || a.iter()
            .zip(b)
            .any(|(x, y)| (x.score - y.score).abs() > tol)
    {
        return ListMatch::Different;
    }
    if a.iter().zip(b).all(|(x, y)| x.tokens == y.tokens) {
        ListMatch::Identical
    } else {
        ListMatch::NearTie
    }
}

/// Runs all checks. `reference_*` are the CPU f32 copies used for the logit comparison.
#[allow(clippy::too_many_arguments)]
pub fn run_selftest(
    data: &Dataset,
    target: &Llm,
    draft: &Llm,
    reference_target: &Llm,
    device: &Device,
    users: usize,
    bench_users: usize,
) -> Result<SelftestReport> {
    let logits = check_logits(data, reference_target, target, 20)?;
    let params = SpecParams {
        mode: Mode::Strict,
        n: 40,
        k: 20,
        gamma: 3,
        draft_mass: None,
    };
    let exact = check_exact(data, target, draft, users, &params)?;
    let cfg = BenchConfig {
        mode: Mode::Strict,
        ks: vec![1, 20],
        n: 40,
        gamma: 3,
        draft_mass: None,
        tune_users: 0,
        max_n: 0,
        tune_gamma: false,
        users: bench_users,
        warmup: 5,
        history: crate::data::DEFAULT_HISTORY,
        seed: 0,
    };
    let bench = run_bench(
        data,
        target,
        draft,
        &cfg,
        &crate::device::label(device),
        |_, _| {},
    )?;
    Ok(SelftestReport {
        device: crate::device::label(device),
        logits,
        exact,
        bench,
    })
}
