//! `atspeed selftest`: what a user runs to trust a device. It compares the device's log-probs with
//! the CPU f32 reference, checks that strict speculative decoding equals target-only beam search
//! on real users, and times a short benchmark. Every check reports its numbers and its tolerance.

use candle_core::{DType, Device};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::bench::{run_bench, BenchConfig, BenchReport};
use crate::data::Dataset;
use crate::decode::tree::{ModelState, Rows, Tree};
use crate::decode::{
    beam_search, compare_lists, speculative, DecodeParams, ListMatch, Mode, ScoreTolerance,
};
use crate::model::Llm;
use crate::space::TokenSpace;
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
    /// Lists that differ only at ranks whose scores agree within the tolerance (float near-ties
    /// between the tree pass and the incremental passes; see [`crate::decode::ranking`]).
    pub near_ties: usize,
    /// Largest |score difference| of a beam in both lists.
    #[serde(default)]
    pub max_score_deviation: f32,
    #[serde(default)]
    pub tolerance: Option<ScoreTolerance>,
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

    /// The verdict as a result: a failed check is an error naming the device.
    pub fn verdict(&self) -> Result<()> {
        if self.pass() {
            Ok(())
        } else {
            Err(crate::Error::Failed(format!(
                "selftest failed on {}",
                self.device
            )))
        }
    }
}

impl std::fmt::Display for SelftestReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
        let (l, e) = (&self.logits, &self.exact);
        writeln!(f, "selftest on {} ({})", self.device, l.dtype)?;
        writeln!(
            f,
            "  logits vs CPU f32 over {} users: max abs {:.2e}, max rel {:.2e}, tolerance {:.1e} abs  {}",
            l.users, l.max_abs, l.max_rel, l.tolerance_abs, verdict(l.pass)
        )?;
        let tol = e
            .tolerance
            .map(|t| {
                format!(
                    ", near-tie tolerance {:.0e} + {:.0e} x |score|",
                    t.abs, t.rel
                )
            })
            .unwrap_or_default();
        writeln!(
            f,
            "  strict == target-only on {} users (N 40, K 20, gamma 3): {} identical, {} float near-ties, largest score deviation {:.2e}{tol}  {}",
            e.users, e.identical, e.near_ties, e.max_score_deviation, verdict(e.pass)
        )?;
        write!(f, "{}", self.bench.table())
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
    space: &TokenSpace,
    reference: &Llm,
    device_model: &Llm,
    users: usize,
) -> Result<LogitCheck> {
    let mut max_abs = 0f32;
    let mut max_rel = 0f32;
    let samples = data.test_samples(crate::data::DEFAULT_HISTORY);
    let n = users.min(samples.len());
    for s in samples.iter().take(n) {
        let prompt = space.prompt(data, &s.history)?;
        let (tree, root) = Tree::with_prompt(&prompt);
        let fed: Vec<u32> = (0..prompt.len() as u32).collect();
        let mut a = ModelState::new(reference);
        let mut b = ModelState::new(device_model);
        let ra = Rows::from_tensor(&a.feed(reference, &tree, &fed, &[root])?.0)?;
        let rb = Rows::from_tensor(&b.feed(device_model, &tree, &fed, &[root])?.0)?;
        for (x, y) in ra.row(0).iter().zip(rb.row(0)) {
            let d = (x - y).abs();
            // `f32::max` would drop a NaN; a NaN difference must fail the check.
            let r = d / x.abs().max(1e-6);
            max_abs = nan_max(max_abs, d);
            max_rel = nan_max(max_rel, r);
        }
    }
    let tol = tolerance(device_model.model.dtype());
    Ok(LogitCheck {
        dtype: format!("{:?}", device_model.model.dtype()).to_lowercase(),
        users: n,
        max_abs,
        max_rel,
        tolerance_abs: tol,
        // No user compared is no evidence; NaN never passes.
        pass: n > 0 && max_abs <= tol,
    })
}

/// The larger of two values, NaN if either is (unlike `f32::max`, which drops a NaN).
fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// Strict speculative lists against target-only lists, user by user.
pub fn check_exact(
    data: &Dataset,
    space: &TokenSpace,
    target: &Llm,
    draft: &Llm,
    users: usize,
    params: &DecodeParams,
) -> Result<ExactCheck> {
    let samples = data.test_samples(crate::data::DEFAULT_HISTORY);
    let n = users.min(samples.len());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let tol = ScoreTolerance::for_dtype(target.model.dtype());
    let (mut identical, mut near, mut dev, mut scores_agree) = (0, 0, 0f32, true);
    for s in samples.iter().take(n) {
        let prompt = space.prompt(data, &s.history)?;
        let base = beam_search(target, &space.trie, &prompt, params.k)?;
        let spec = speculative(target, draft, &space.trie, &prompt, params, &mut rng)?;
        let cmp = compare_lists(&spec.beams, &base.beams, tol);
        dev = dev.max(cmp.max_deviation);
        scores_agree &= cmp.scores_agree;
        match cmp.verdict {
            ListMatch::Identical => identical += 1,
            ListMatch::NearTie => near += 1,
            ListMatch::Different => {}
        }
    }
    Ok(ExactCheck {
        users: n,
        identical,
        near_ties: near,
        max_score_deviation: dev,
        tolerance: Some(tol),
        // No users checked is no evidence: it fails rather than passing vacuously.
        pass: n > 0 && identical + near == n && scores_agree,
    })
}

/// Runs all checks. `reference_*` are the CPU f32 copies used for the logit comparison.
#[allow(clippy::too_many_arguments)]
pub fn run_selftest(
    data: &Dataset,
    space: &TokenSpace,
    target: &Llm,
    draft: &Llm,
    reference_target: &Llm,
    device: &Device,
    users: usize,
    bench_users: usize,
) -> Result<SelftestReport> {
    if users == 0 {
        return Err(crate::Error::invalid(
            "users",
            "the exactness check needs at least 1 user (0 would pass without evidence)",
        ));
    }
    let logits = check_logits(data, space, reference_target, target, 20)?;
    let params = DecodeParams::default();
    let exact = check_exact(data, space, target, draft, users, &params)?;
    let cfg = BenchConfig {
        decode: DecodeParams {
            mode: Mode::Strict,
            ..params
        },
        ks: vec![1, 20],
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
        space,
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

#[cfg(test)]
mod tests {
    /// A NaN logit difference (NaN weights on a device) must fail the logits check, not vanish
    /// in `f32::max`.
    #[test]
    fn nan_differences_are_kept() {
        assert!(super::nan_max(0.1, f32::NAN).is_nan());
        assert!(super::nan_max(f32::NAN, 0.1).is_nan());
        assert_eq!(super::nan_max(0.1, 0.3), 0.3);
    }
}
