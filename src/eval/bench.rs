//! The benchmark behind `atspeed bench`: target-only beam search and speculative decoding on the
//! same users, alternating per user in one process so machine noise hits both alike, reduced to
//! the paper's metrics (defined in [`super::speed`] and [`super::metrics`]) plus the pass-cost ceiling.

use std::collections::HashSet;
use std::time::Instant;

use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::metrics::{RankingMetrics, CUTOFFS};
use super::speed::{width_grid, SpeedStats, UserSpeed, WidthCurve};
use super::tune::{shape_candidates, tune_width, tuning_samples, WidthChoice};
use crate::data::{Dataset, Sample};
use crate::decode::{
    beam_search, compare_lists, drafted_levels, speculative, BeamOutcome, DecodeParams,
    DecodeTrace, ListMatch, Mode, PhaseTimes, ScoreTolerance,
};
use crate::ids::Identifier;
use crate::model::Llm;
use crate::space::TokenSpace;
use crate::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchConfig {
    /// Mode, N, gamma and adaptive width for every K (its `k` is ignored: see `ks`). N is the
    /// drafted width for every K unless `tune_users` > 0.
    #[serde(flatten)]
    pub decode: DecodeParams,
    pub ks: Vec<usize>,
    /// When > 0, choose N per K by timing candidate widths on this many validation users
    /// before measuring (see [`super::tune`]).
    #[serde(default)]
    pub tune_users: usize,
    /// Widest N the tuner tries.
    #[serde(default)]
    pub max_n: usize,
    /// Whether the tuner also tries every drafted depth 1..=gamma.
    #[serde(default)]
    pub tune_gamma: bool,
    /// Test users to measure (the first ones of the test split); 0 means all.
    pub users: usize,
    /// Users decoded untimed first, so lazy initialisation does not count.
    pub warmup: usize,
    pub history: usize,
    pub seed: u64,
}

/// Everything measured for one K. The speed figures follow the definitions of
/// [`super::speed`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KReport {
    pub k: usize,
    /// Drafted width and depth used for this K.
    #[serde(default)]
    pub n: usize,
    #[serde(default)]
    pub gamma: usize,
    /// The tuner's trials when N was chosen by measurement.
    #[serde(default)]
    pub width: Option<WidthChoice>,
    pub users: usize,
    /// WS as the ratio of total times.
    pub ws_total: f64,
    /// WS as the mean of per-user ratios (what the reference reports).
    pub ws_mean: f64,
    /// AS: accepted drafted steps per user.
    pub accepted_steps: f64,
    /// Acceptance rate of drafted depth 1, 2, 3 within a round (accepted / examined).
    pub depth_acceptance: Vec<f64>,
    /// Strict: acceptance against N per drafted depth (see [`super::speed`]): the share of the
    /// rounds that examined the depth that a width N' would have accepted, at widths K..16K
    /// and beyond while some round needed more.
    #[serde(default)]
    pub width_curves: Vec<WidthCurve>,
    pub baseline_target_passes: f64,
    pub target_passes: f64,
    pub draft_passes: f64,
    /// Mean milliseconds per user.
    pub baseline_ms: f64,
    pub speculative_ms: f64,
    /// Mean time split per user (`draft_ms`, `verify_ms`, `other_ms` and, inside `other_ms`,
    /// `select_ms` and `cache_ms`; see [`PhaseTimes`]).
    #[serde(flatten)]
    pub times: PhaseTimes,
    /// Mean cost of one speculative target pass and one draft pass (ms).
    pub target_pass_ms: f64,
    pub draft_pass_ms: f64,
    /// Baseline time over the time of the passes full acceptance needs (gamma 3: one target pass
    /// plus 3 draft passes; see [`full_acceptance_passes`]): the speedup if every drafted step
    /// were accepted, at the measured pass costs.
    pub ceiling: f64,
    /// Baseline time over the speculative time spent in model passes alone: the speedup the
    /// measured acceptance allows with zero host overhead. WS / bound is the engine's efficiency.
    pub bound: f64,
    /// Share of the speculative time outside model passes (trie, top-k, masks, cache upkeep).
    pub other_fraction: f64,
    /// Target-pass ratio (ratio of totals): what a memory-bound device turns into speed.
    pub target_pass_ratio: f64,
    /// Users whose speculative list equals the target-only list item for item.
    pub identical_fraction: f64,
    /// Users whose lists differ only at ranks where the scores agree within the tolerance: float
    /// near-ties between the tree pass and the incremental passes (see
    /// [`crate::decode::ranking`]). In strict mode identical + near-tie must be 1.0; anything else
    /// is a bug.
    #[serde(default)]
    pub near_tie_fraction: f64,
    /// Largest |score difference| of a beam present in both lists, over all users: how far the
    /// tree pass and the incremental passes drifted.
    #[serde(default)]
    pub max_score_deviation: f64,
    /// The tolerance the lists were judged with.
    #[serde(default)]
    pub tolerance: Option<ScoreTolerance>,
    /// Users whose two lists share a beam with scores beyond the tolerance (a bug even when
    /// the items agree).
    #[serde(default)]
    pub score_mismatches: usize,
    pub speculative_metrics: RankingMetrics,
    pub baseline_metrics: RankingMetrics,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub dataset: String,
    pub target: String,
    pub draft: String,
    pub device: String,
    pub config: BenchConfig,
    pub per_k: Vec<KReport>,
    /// Single-pass costs of each model in fixed shapes, measured before the run.
    #[serde(default)]
    pub target_passes: PassCosts,
    #[serde(default)]
    pub draft_passes: PassCosts,
}

/// Accumulates per-user measurements for one K.
struct Acc {
    r: KReport,
    speed: SpeedStats,
    tol: ScoreTolerance,
    identical: usize,
    near_ties: usize,
    /// The constraint's forced flag per depth (the round structure the ceiling follows).
    forced: Vec<bool>,
}

impl Acc {
    fn new(
        params: &DecodeParams,
        width: Option<WidthChoice>,
        tol: ScoreTolerance,
        forced: &[bool],
    ) -> Acc {
        Acc {
            r: KReport {
                k: params.k,
                n: params.n,
                gamma: params.gamma,
                width,
                tolerance: Some(tol),
                ..Default::default()
            },
            speed: SpeedStats::default(),
            tol,
            identical: 0,
            near_ties: 0,
            forced: forced.to_vec(),
        }
    }

    fn add(
        &mut self,
        space: &TokenSpace,
        user: u32,
        base: &BeamOutcome,
        trace: &DecodeTrace,
        truth: &[Identifier],
    ) {
        self.speed.record(UserSpeed::new(
            user,
            trace,
            base.time_ms,
            base.target_passes,
        ));
        let cmp = compare_lists(&trace.beams, &base.beams, self.tol);
        match cmp.verdict {
            ListMatch::Identical => self.identical += 1,
            ListMatch::NearTie => self.near_ties += 1,
            ListMatch::Different => {}
        }
        self.r.max_score_deviation = self.r.max_score_deviation.max(cmp.max_deviation as f64);
        self.r.score_mismatches += usize::from(!cmp.scores_agree);
        self.r
            .speculative_metrics
            .add(&space.identifiers(&trace.beams), truth);
        self.r
            .baseline_metrics
            .add(&space.identifiers(&base.beams), truth);
    }

    fn finish(self) -> KReport {
        let s = &self.speed;
        let n = s.len() as f64;
        let mut r = self.r;
        r.users = s.len();
        r.ws_total = s.ws_total();
        r.ws_mean = s.ws_mean();
        r.accepted_steps = s.accepted_steps();
        r.depth_acceptance = s.depth_acceptance();
        let widest = (1..=s.max_steps())
            .filter_map(|d| s.n_needed(d).last().copied())
            .max()
            .unwrap_or(0);
        r.width_curves = s.width_curves(&width_grid(r.k, widest));
        r.baseline_target_passes = s.mean_baseline_target_passes();
        r.target_passes = s.mean_target_passes();
        r.draft_passes = s.mean_draft_passes();
        r.target_pass_ratio = s.target_pass_ratio();
        r.times = s.mean_times();
        r.baseline_ms = s.mean_baseline_ms();
        r.speculative_ms = s.mean_speculative_ms();
        let t = &r.times;
        r.target_pass_ms = t.verify_ms / r.target_passes.max(1e-12);
        r.draft_pass_ms = t.draft_ms / r.draft_passes.max(1e-12);
        r.bound = r.baseline_ms / (t.draft_ms + t.verify_ms).max(1e-12);
        r.other_fraction = 1.0 - (t.draft_ms + t.verify_ms) / r.speculative_ms.max(1e-12);
        let (tp, dp) = full_acceptance_passes(&self.forced, r.gamma);
        r.ceiling =
            r.baseline_ms / (tp as f64 * r.target_pass_ms + dp as f64 * r.draft_pass_ms).max(1e-12);
        r.identical_fraction = self.identical as f64 / n.max(1.0);
        r.near_tie_fraction = self.near_ties as f64 / n.max(1.0);
        r
    }
}

/// Target and draft passes per user if every drafted step were accepted, under the round
/// structure of [`crate::decode`] over a constraint with these forced flags per depth
/// ([`crate::ids::PrefixAutomaton::forced`]): with 4 free depths, gamma 3 costs 1 target pass
/// and 3 draft passes; gamma 1 and 2 cost 2 of each. Forced depths cost no draft pass.
pub fn full_acceptance_passes(forced: &[bool], gamma: usize) -> (usize, usize) {
    let gamma = gamma.max(1);
    let (mut target, mut draft, mut depth) = (0, 0, 0);
    while depth < forced.len() {
        let levels = drafted_levels(forced, gamma, depth);
        target += 1;
        draft += levels.iter().filter(|&&f| !f).count();
        depth += levels.len() + 1;
    }
    (target, draft)
}

/// Runs the benchmark. `progress` is called after every user with (done, total).
pub fn run_bench(
    data: &Dataset,
    space: &TokenSpace,
    target: &Llm,
    draft: &Llm,
    cfg: &BenchConfig,
    device: &str,
    mut progress: impl FnMut(usize, usize),
) -> Result<BenchReport> {
    let mut samples: Vec<Sample> = data.test_samples(cfg.history);
    if cfg.users > 0 {
        samples.truncate(cfg.users);
    }
    if samples.is_empty() {
        // Without this, zero users read as "identical fraction 0" and strict mode reports a
        // mismatch that never happened.
        return Err(Error::data(
            data.dir.join(crate::data::SPLIT_FILES[2]),
            "no user has a test item: nothing to benchmark",
        ));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let params_for = |k: usize, n: usize, gamma: usize| DecodeParams {
        k,
        n,
        gamma,
        ..cfg.decode
    };
    for &k in &cfg.ks {
        let n = if cfg.tune_users == 0 { cfg.decode.n } else { k };
        params_for(k, n, cfg.decode.gamma).validate()?;
    }
    let tuning: Vec<Vec<u32>> = if cfg.tune_users > 0 {
        let measured: HashSet<u32> = samples.iter().map(|s| s.user).collect();
        tuning_samples(data.valid_samples(cfg.history), &measured, cfg.tune_users)
            .iter()
            .map(|s| space.prompt(data, &s.history))
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    if cfg.tune_users > 0 && tuning.is_empty() {
        return Err(Error::invalid(
            "users",
            format!(
                "no validation item ({}) among the {} users not measured: nothing to tune the \
                 drafted width on; measure fewer users",
                data.dir.join(crate::data::SPLIT_FILES[1]).display(),
                data.num_users() - samples.len()
            ),
        ));
    }
    if tuning.len() < cfg.tune_users {
        log::warn!(
            "tuning on {} validation users, not {}: the others are measured",
            tuning.len(),
            cfg.tune_users
        );
    }
    // Warm-up: first-use costs (allocations, kernel compilation on GPU) out of the timings.
    for s in samples.iter().take(cfg.warmup) {
        let prompt = space.prompt(data, &s.history)?;
        let p = cfg.decode.with_k(cfg.ks[0]);
        beam_search(target, &space.trie, &prompt, p.k)?;
        speculative(target, draft, &space.trie, &prompt, &p, &mut rng)?;
    }
    let tol = ScoreTolerance::for_dtype(target.model.dtype());
    let total = samples.len() * cfg.ks.len();
    let mut done = 0;
    let mut per_k = Vec::new();
    for &k in &cfg.ks {
        let width = if tuning.is_empty() {
            None
        } else {
            // Deeper than the free depths but the last drafts the same as that.
            let deepest = space.trie.free_depths().saturating_sub(1).max(1);
            let gammas: Vec<usize> = if cfg.tune_gamma {
                (1..=cfg.decode.gamma.min(deepest)).collect()
            } else {
                vec![cfg.decode.gamma]
            };
            let cands = shape_candidates(k, cfg.max_n, &gammas);
            log::info!(
                "K={k}: timing {} draft shapes on {} validation users",
                cands.len(),
                tuning.len()
            );
            let base = params_for(k, k, cfg.decode.gamma);
            Some(tune_width(
                target,
                draft,
                &space.trie,
                &tuning,
                &base,
                &cands,
                cfg.seed ^ k as u64,
            )?)
        };
        if let Some(w) = &width {
            log::info!(
                "K={k}: N={} gamma={} is the fastest of {:?} on {} validation users",
                w.n,
                w.gamma,
                w.trials.iter().map(|t| (t.n, t.gamma)).collect::<Vec<_>>(),
                w.users
            );
        }
        let params = match &width {
            Some(w) => params_for(k, w.n, w.gamma),
            None => params_for(k, cfg.decode.n, cfg.decode.gamma),
        };
        let mut acc = Acc::new(&params, width, tol, space.trie.forced());
        for (i, s) in samples.iter().enumerate() {
            let prompt = space.prompt(data, &s.history)?;
            let run_base = || beam_search(target, &space.trie, &prompt, k);
            let run_spec = |rng: &mut rand_chacha::ChaCha8Rng| {
                speculative(target, draft, &space.trie, &prompt, &params, rng)
            };
            // Alternate which runs first so drift (thermal, caches) does not favour one side.
            let (base, trace) = if i % 2 == 0 {
                let b = run_base()?;
                (b, run_spec(&mut rng)?)
            } else {
                let t = run_spec(&mut rng)?;
                (run_base()?, t)
            };
            acc.add(space, s.user, &base, &trace, &s.targets);
            done += 1;
            progress(done, total);
        }
        per_k.push(acc.finish());
    }
    let target_passes = pass_costs(target, data, space, 15)?;
    let draft_passes = pass_costs(draft, data, space, 15)?;
    Ok(BenchReport {
        target_passes,
        draft_passes,
        dataset: data.name.clone(),
        target: format!("{} ({})", target.name, target.describe()),
        draft: format!("{} ({})", draft.name, draft.describe()),
        device: device.to_string(),
        config: cfg.clone(),
        per_k,
    })
}

impl BenchReport {
    /// In strict mode every speculative list must be the target's own (identical, or a float
    /// near-tie within the stated tolerance); anything else is a bug, reported as an error.
    /// Relaxed lists are samples and always pass.
    pub fn strict_verdict(&self) -> Result<()> {
        if self.config.decode.mode != Mode::Strict {
            return Ok(());
        }
        if let Some(r) = self
            .per_k
            .iter()
            .find(|r| r.identical_fraction + r.near_tie_fraction < 1.0 - 1e-12)
        {
            return Err(Error::Failed(format!(
                "strict mode produced a list different from target-only beam search for K={} (identical {:.4}, near-ties {:.4}, largest score deviation {:.2e})",
                r.k, r.identical_fraction, r.near_tie_fraction, r.max_score_deviation
            )));
        }
        if let Some(r) = self.per_k.iter().find(|r| r.score_mismatches > 0) {
            return Err(Error::Failed(format!(
                "strict mode scored {} users' beams differently from target-only beam search beyond the tolerance for K={} (largest deviation {:.2e})",
                r.score_mismatches, r.k, r.max_score_deviation
            )));
        }
        Ok(())
    }

    /// The table `atspeed bench` prints (markdown, so it pastes into notes as is).
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} | target {} | draft {} | {} | {} N={}{} gamma={}{} | {} users\n\n",
            self.dataset,
            self.target,
            self.draft,
            self.device,
            self.config.decode.mode.name(),
            if self.config.tune_users > 0 {
                format!(
                    "tuned per K (up to {}, on {} validation users)",
                    self.config.max_n, self.config.tune_users
                )
            } else {
                self.config.decode.n.to_string()
            },
            self.config
                .decode
                .draft_mass
                .map(|m| format!(" (adaptive, mass {m})"))
                .unwrap_or_default(),
            self.config.decode.gamma,
            if self.config.tune_gamma {
                " at most, tuned per K"
            } else {
                ""
            },
            self.per_k.first().map(|k| k.users).unwrap_or(0)
        );
        // One acceptance column per drafted step the format has (d1/d2/d3 for 4-token ids).
        let steps = self
            .per_k
            .iter()
            .map(|r| r.depth_acceptance.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let acc_head: Vec<String> = (1..=steps).map(|d| format!("d{d}")).collect();
        s.push_str(&format!("| K | N | gamma | WS (totals) | WS (mean) | bound | ceiling | AS | acc {} | target passes base->spec | draft passes | base ms | spec ms | draft / verify / other ms | identical (+ near-ties) | Recall@5 | NDCG@5 |\n", acc_head.join("/")));
        s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.per_k {
            let acc: Vec<String> = r
                .depth_acceptance
                .iter()
                .map(|a| format!("{a:.2}"))
                .collect();
            s.push_str(&format!(
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.2} -> {:.2} ({:.2}x) | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} / {:.2} | {:.3}{} | {:.4} | {:.4} |\n",
                r.k,
                r.n,
                r.gamma,
                r.ws_total,
                r.ws_mean,
                r.bound,
                r.ceiling,
                r.accepted_steps,
                acc.join("/"),
                r.baseline_target_passes,
                r.target_passes,
                r.target_pass_ratio,
                r.draft_passes,
                r.baseline_ms,
                r.speculative_ms,
                r.times.draft_ms,
                r.times.verify_ms,
                r.times.other_ms,
                r.identical_fraction,
                if r.near_tie_fraction > 0.0 {
                    format!(" (+{:.3})", r.near_tie_fraction)
                } else {
                    String::new()
                },
                r.speculative_metrics.recall(5),
                r.speculative_metrics.ndcg(5),
            ));
        }
        let n = self.per_k.len().max(1) as f64;
        let avg = |f: fn(&KReport) -> f64| self.per_k.iter().map(f).sum::<f64>() / n;
        s.push_str(
            "\nbound: baseline over the speculative model-pass time (the measured acceptance, no host \
             overhead); ceiling: baseline over the passes needed if every drafted step were accepted \
             under this format's round structure (4-token identifiers: gamma 3 costs 1 target + 3 \
             draft passes, gamma 1 or 2 cost 2 + 2) at the measured pass costs.\n",
        );
        s.push_str(&format!(
            "average over K: WS (totals) {:.2}, WS (mean) {:.2}, AS {:.2}, non-model time {:.1}%; pass costs: target {:.2} ms, draft {:.2} ms\n",
            avg(|r| r.ws_total),
            avg(|r| r.ws_mean),
            avg(|r| r.accepted_steps),
            100.0 * avg(|r| r.other_fraction),
            avg(|r| r.target_pass_ms),
            avg(|r| r.draft_pass_ms),
        ));
        let host: Vec<String> = self
            .per_k
            .iter()
            .map(|r| {
                format!(
                    "K={} {:.2} = {:.2} search + {:.2} cache + {:.2} rest",
                    r.k,
                    r.times.other_ms,
                    r.times.select_ms,
                    r.times.cache_ms,
                    (r.times.other_ms - r.times.select_ms - r.times.cache_ms).max(0.0)
                )
            })
            .collect();
        s.push_str(&format!("non-model ms per user: {}\n", host.join("; ")));
        let dev: Vec<String> = self
            .per_k
            .iter()
            .map(|r| format!("K={} {:.2e}", r.k, r.max_score_deviation))
            .collect();
        if let Some(t) = self.per_k.first().and_then(|r| r.tolerance) {
            s.push_str(&format!(
                "largest score deviation between the two lists' common beams: {}; near-tie tolerance {} + {} x |score|\n",
                dev.join(", "),
                t.abs,
                t.rel
            ));
        }
        let tune_gamma = self.config.tune_gamma;
        let shape = |n: usize, gamma: usize| {
            if tune_gamma {
                format!("N {n} gamma {gamma}")
            } else {
                format!("N {n}")
            }
        };
        for w in self.per_k.iter().filter_map(|r| r.width.as_ref()) {
            let trials: Vec<String> = w
                .trials
                .iter()
                .map(|t| {
                    format!(
                        "{} {:.2} ms (AS {:.2})",
                        shape(t.n, t.gamma),
                        t.speculative_ms,
                        t.accepted_steps
                    )
                })
                .collect();
            s.push_str(&format!(
                "width tuning K={}: {} -> {}\n",
                w.k,
                trials.join(", "),
                shape(w.n, w.gamma)
            ));
        }
        for r in self.per_k.iter().filter(|r| !r.width_curves.is_empty()) {
            let depths: Vec<String> = r
                .width_curves
                .iter()
                .map(|c| {
                    let pts: Vec<String> = c
                        .points
                        .iter()
                        .map(|(n, a)| format!("{n} {a:.2}"))
                        .collect();
                    format!("d{} ({} rounds) {}", c.depth, c.rounds, pts.join(", "))
                })
                .collect();
            s.push_str(&format!(
                "acceptance vs N K={} (share of the rounds that examined a drafted depth that width N would accept): {}\n",
                r.k,
                depths.join("; ")
            ));
        }
        for (name, p) in [
            ("target", &self.target_passes),
            ("draft", &self.draft_passes),
        ] {
            s.push_str(&format!(
                "{name} single passes: prefill {} tokens {:.2} ms, 20-beam step {:.2} ms, prompt + 120-token tree {:.2} ms\n",
                p.prompt_tokens, p.prefill_ms, p.step20_ms, p.fused_ms
            ));
        }
        if let Some(r) = self.per_k.last() {
            s.push_str(&format!(
                "target-only list at K={}: {}\n",
                r.k,
                CUTOFFS
                    .iter()
                    .filter(|&&c| c <= r.k)
                    .map(|&c| format!(
                        "Recall@{c} {:.4} NDCG@{c} {:.4}",
                        r.baseline_metrics.recall(c),
                        r.baseline_metrics.ndcg(c)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        s
    }
}

/// Wall time of single passes of one model, in the shapes decoding uses:
/// a prompt prefill, a 20-beam step over a cached prompt, and the first speculative round's
/// fused pass (prompt plus a 120-token tree: N = 40 over three depths). Median of `reps`,
/// log-probs copied to the host as decoding does.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PassCosts {
    pub prompt_tokens: usize,
    pub prefill_ms: f64,
    pub step20_ms: f64,
    pub fused_ms: f64,
}

pub fn pass_costs(llm: &Llm, data: &Dataset, space: &TokenSpace, reps: usize) -> Result<PassCosts> {
    use crate::decode::tree::{ModelState, NodeId, Rows, Tree};
    let sample = data
        .test_samples(crate::data::DEFAULT_HISTORY)
        .into_iter()
        .max_by_key(|s| s.history.len())
        .ok_or_else(|| crate::Error::data(&data.dir, "no test users to time passes on"))?;
    let prompt = space.prompt(data, &sample.history)?;
    // Real identifier tokens of each level, in the model's ids (what decoding feeds).
    let level = |d: usize| -> Vec<u32> {
        let mut states = vec![crate::ids::PrefixAutomaton::ROOT];
        for _ in 0..d {
            states = states
                .iter()
                .flat_map(|&s| space.trie.children(s).iter().map(|c| c.1))
                .take(64)
                .collect();
        }
        states
            .iter()
            .flat_map(|&s| space.trie.children(s).iter().map(|c| c.0))
            .collect()
    };
    let level0 = level(0);
    // Median time of `op` on a fresh state made by `setup` (untimed), after one warm-up.
    let time = |setup: &dyn Fn() -> Result<ModelState>,
                op: &dyn Fn(&mut ModelState) -> Result<()>|
     -> Result<f64> {
        op(&mut setup()?)?;
        let mut v = Vec::with_capacity(reps);
        for _ in 0..reps {
            let mut st = setup()?;
            crate::device::sync(llm.device())?;
            let t = Instant::now();
            op(&mut st)?;
            crate::device::sync(llm.device())?;
            v.push(t.elapsed().as_secs_f64() * 1e3);
        }
        v.sort_by(f64::total_cmp);
        Ok(v[v.len() / 2])
    };
    let fresh = || Ok(ModelState::new(llm));
    let prompt_nodes: Vec<NodeId> = (0..prompt.len() as NodeId).collect();
    let (mut tree, root) = Tree::with_prompt(&prompt);
    let prefill_ms = time(&fresh, &|st| {
        Rows::from_tensor(&st.feed(llm, &tree, &prompt_nodes, &[root])?.0)?;
        Ok(())
    })?;
    // 20 beams' tokens in one pass over a cached prompt.
    let beams: Vec<NodeId> = level0
        .iter()
        .take(20)
        .map(|&t| tree.push(root, t, 0))
        .collect();
    let cached = || {
        let mut st = ModelState::new(llm);
        st.feed(llm, &tree, &prompt_nodes, &[root])?;
        Ok(st)
    };
    let step20_ms = time(&cached, &|st| {
        Rows::from_tensor(&st.feed(llm, &tree, &beams, &beams)?.0)?;
        Ok(())
    })?;
    // The prompt and a 3-depth tree of 40 nodes per depth in one pass.
    let (mut tree, root) = Tree::with_prompt(&prompt);
    let mut fed = prompt_nodes.clone();
    let mut parents = vec![root];
    for d in 0..3 {
        let toks = level(d);
        let next: Vec<NodeId> = (0..40)
            .map(|i| tree.push(parents[i % parents.len()], toks[i % toks.len()], 0))
            .collect();
        fed.extend(&next);
        parents = next;
    }
    let want: Vec<NodeId> = fed[prompt.len() - 1..].to_vec();
    let fused_ms = time(&fresh, &|st| {
        Rows::from_tensor(&st.feed(llm, &tree, &fed, &want)?.0)?;
        Ok(())
    })?;
    Ok(PassCosts {
        prompt_tokens: prompt.len(),
        prefill_ms,
        step20_ms,
        fused_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::full_acceptance_passes;

    #[test]
    fn full_acceptance_follows_the_round_structure() {
        let lcrec = [false; 4];
        // gamma 3: draft 3, one pass verifies them and adds the bonus depth 4.
        assert_eq!(full_acceptance_passes(&lcrec, 3), (1, 3));
        // gamma 2: depths 1-2 plus bonus 3, then a plain target step for depth 4.
        assert_eq!(full_acceptance_passes(&lcrec, 2), (2, 2));
        // gamma 1: (1 + bonus 2), then (3 + bonus 4).
        assert_eq!(full_acceptance_passes(&lcrec, 1), (2, 2));
        // Deeper than the identifier is the same as gamma 3.
        assert_eq!(full_acceptance_passes(&lcrec, 7), (1, 3));
        // MiniOneRec: three codes, then "\n" and EOS forced. gamma 3 drafts the codes and "\n"
        // (3 draft passes), the target's one pass adds EOS; gamma 2 needs a second round for
        // "\n" (forced, free) and EOS.
        let mini = [false, false, false, true, true];
        assert_eq!(full_acceptance_passes(&mini, 3), (1, 3));
        assert_eq!(full_acceptance_passes(&mini, 2), (2, 2));
        assert_eq!(full_acceptance_passes(&mini, 1), (2, 2));
    }
}
