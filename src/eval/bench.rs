//! The benchmark behind `atspeed bench`: target-only beam search and speculative decoding on the
//! same users, alternating per user in one process so machine noise hits both alike, reduced to
//! the paper's metrics (SPEC section 5) plus the pass-cost ceiling.

use std::collections::HashSet;
use std::time::Instant;

use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::metrics::{RankingMetrics, CUTOFFS};
use super::selftest::{compare_lists, ListMatch};
use super::tune::{shape_candidates, tune_width, tuning_samples, WidthChoice};
use crate::data::{Dataset, Sample};
use crate::decode::{beam_search, speculative, BeamOutcome, DecodeTrace, Mode, SpecParams};
use crate::ids::{Identifier, ID_LEN};
use crate::model::Llm;
use crate::Result;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchConfig {
    pub mode: Mode,
    pub ks: Vec<usize>,
    /// Drafted width for every K, unless `tune_users` > 0.
    pub n: usize,
    pub gamma: usize,
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
    /// Adaptive draft width (see [`SpecParams::draft_mass`]).
    #[serde(default)]
    pub draft_mass: Option<f32>,
    /// Test users to measure (the first ones of the test split); 0 means all.
    pub users: usize,
    /// Users decoded untimed first, so lazy initialisation does not count.
    pub warmup: usize,
    pub history: usize,
    pub seed: u64,
}

/// Everything measured for one K.
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
    /// Walltime speedup as the ratio of total times.
    pub ws_total: f64,
    /// Walltime speedup as the mean of per-user ratios (what the reference reports).
    pub ws_mean: f64,
    /// Accepted drafted steps per user.
    pub accepted_steps: f64,
    /// Acceptance rate of drafted depth 1, 2, 3 within a round (accepted / examined).
    pub depth_acceptance: Vec<f64>,
    pub baseline_target_passes: f64,
    pub target_passes: f64,
    pub draft_passes: f64,
    /// Mean milliseconds per user.
    pub baseline_ms: f64,
    pub speculative_ms: f64,
    pub draft_ms: f64,
    pub verify_ms: f64,
    pub other_ms: f64,
    /// The parts of `other_ms` spent in host-side search and in cache compaction (see
    /// [`crate::decode::PhaseTimes`]).
    #[serde(default)]
    pub select_ms: f64,
    #[serde(default)]
    pub cache_ms: f64,
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
    /// Target-only target passes over speculative target passes: what a memory-bound device
    /// turns into speed.
    pub target_pass_ratio: f64,
    /// Users whose speculative list equals the target-only list item for item.
    pub identical_fraction: f64,
    /// Users whose lists differ only by swapping items whose scores agree to 1e-5: float
    /// near-ties between the tree pass and the incremental passes (SPEC section 4). In strict
    /// mode identical + near-tie must be 1.0; anything else is a bug.
    #[serde(default)]
    pub near_tie_fraction: f64,
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
#[derive(Default)]
struct Acc {
    r: KReport,
    base_ms: Vec<f64>,
    spec_ms: Vec<f64>,
    depth_examined: [usize; ID_LEN],
    depth_accepted: [usize; ID_LEN],
    identical: usize,
    near_ties: usize,
}

impl Acc {
    fn add(
        &mut self,
        base: &BeamOutcome,
        base_ms: f64,
        trace: &DecodeTrace,
        spec_ms: f64,
        truth: &[Identifier],
    ) {
        self.base_ms.push(base_ms);
        self.spec_ms.push(spec_ms);
        let r = &mut self.r;
        r.users += 1;
        r.accepted_steps += trace.accepted_steps() as f64;
        r.baseline_target_passes += base.target_passes as f64;
        r.target_passes += trace.target_passes() as f64;
        r.draft_passes += trace.draft_passes() as f64;
        let t = trace.times();
        r.draft_ms += t.draft_ms;
        r.verify_ms += t.verify_ms;
        r.other_ms += t.other_ms;
        r.select_ms += t.select_ms;
        r.cache_ms += t.cache_ms;
        for round in &trace.rounds {
            let examined = if round.accepted < round.drafted {
                round.accepted + 1
            } else {
                round.drafted
            };
            for d in 0..examined {
                self.depth_examined[d] += 1;
                if d < round.accepted {
                    self.depth_accepted[d] += 1;
                }
            }
        }
        let ids = |v: &[crate::decode::BeamView]| -> Vec<Identifier> {
            v.iter()
                .filter_map(|b| b.tokens.clone().try_into().ok())
                .collect()
        };
        let spec_ids = ids(&trace.beams);
        let base_ids = ids(&base.beams);
        match compare_lists(&trace.beams, &base.beams, 1e-5) {
            ListMatch::Identical => self.identical += 1,
            ListMatch::NearTie => self.near_ties += 1,
            ListMatch::Different => {}
        }
        r.speculative_metrics.add(&spec_ids, truth);
        r.baseline_metrics.add(&base_ids, truth);
    }

    fn finish(mut self) -> KReport {
        let n = self.r.users.max(1) as f64;
        let r = &mut self.r;
        let base_total: f64 = self.base_ms.iter().sum();
        let spec_total: f64 = self.spec_ms.iter().sum();
        r.ws_total = base_total / spec_total.max(1e-12);
        r.ws_mean = self
            .base_ms
            .iter()
            .zip(&self.spec_ms)
            .map(|(b, s)| b / s.max(1e-12))
            .sum::<f64>()
            / n;
        r.target_pass_ms = r.verify_ms / r.target_passes.max(1.0);
        r.draft_pass_ms = r.draft_ms / r.draft_passes.max(1.0);
        r.target_pass_ratio = r.baseline_target_passes / r.target_passes.max(1.0);
        for v in [
            &mut r.accepted_steps,
            &mut r.baseline_target_passes,
            &mut r.target_passes,
            &mut r.draft_passes,
            &mut r.draft_ms,
            &mut r.verify_ms,
            &mut r.other_ms,
            &mut r.select_ms,
            &mut r.cache_ms,
        ] {
            *v /= n;
        }
        r.baseline_ms = base_total / n;
        r.speculative_ms = spec_total / n;
        r.bound = r.baseline_ms / (r.draft_ms + r.verify_ms).max(1e-12);
        r.other_fraction = 1.0 - (r.draft_ms + r.verify_ms) / r.speculative_ms.max(1e-12);
        let (tp, dp) = full_acceptance_passes(r.gamma);
        r.ceiling =
            r.baseline_ms / (tp as f64 * r.target_pass_ms + dp as f64 * r.draft_pass_ms).max(1e-12);
        r.depth_acceptance = (0..ID_LEN - 1)
            .map(|d| self.depth_accepted[d] as f64 / self.depth_examined[d].max(1) as f64)
            .collect();
        r.identical_fraction = self.identical as f64 / n;
        r.near_tie_fraction = self.near_ties as f64 / n;
        self.r
    }
}

/// Target and draft passes per user if every drafted step were accepted, under SPEC section 4's
/// round structure: gamma 3 costs 1 target pass and 3 draft passes; gamma 1 and 2 cost 2 of each.
pub fn full_acceptance_passes(gamma: usize) -> (usize, usize) {
    let gamma = gamma.max(1);
    let (mut target, mut draft, mut depth) = (0, 0, 0);
    while depth < ID_LEN {
        let g = gamma.min(ID_LEN - depth - 1);
        target += 1;
        draft += g;
        depth += g + 1;
    }
    (target, draft)
}

/// Runs the benchmark. `progress` is called after every user with (done, total).
pub fn run_bench(
    data: &Dataset,
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
        return Err(crate::Error::data(
            data.dir.join(crate::data::SPLIT_FILES[2]),
            "no user has a test item: nothing to benchmark",
        ));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let params_for = |k: usize, n: usize, gamma: usize| SpecParams {
        mode: cfg.mode,
        n,
        k,
        gamma,
        draft_mass: cfg.draft_mass,
    };
    for &k in &cfg.ks {
        let n = if cfg.tune_users == 0 { cfg.n } else { k };
        params_for(k, n, cfg.gamma).validate()?;
    }
    let tuning: Vec<Vec<u32>> = if cfg.tune_users > 0 {
        let measured: HashSet<u32> = samples.iter().map(|s| s.user).collect();
        tuning_samples(data.valid_samples(cfg.history), &measured, cfg.tune_users)
            .iter()
            .map(|s| data.prompt(&s.history))
            .collect()
    } else {
        Vec::new()
    };
    if cfg.tune_users > 0 && tuning.is_empty() {
        return Err(crate::Error::data(
            data.dir.join(crate::data::SPLIT_FILES[1]),
            format!(
                "no validation item among the {} users not measured: nothing to tune the drafted \
                 width on (measure fewer with --users)",
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
        let prompt = data.prompt(&s.history);
        let p = params_for(cfg.ks[0], cfg.n.max(cfg.ks[0]), cfg.gamma);
        beam_search(target, &data.trie, &prompt, p.k)?;
        speculative(target, draft, &data.trie, &prompt, &p, &mut rng)?;
    }
    let total = samples.len() * cfg.ks.len();
    let mut done = 0;
    let mut per_k = Vec::new();
    for &k in &cfg.ks {
        let width = if tuning.is_empty() {
            None
        } else {
            // Deeper than L - 1 drafts the same as L - 1.
            let gammas: Vec<usize> = if cfg.tune_gamma {
                (1..=cfg.gamma.min(ID_LEN - 1)).collect()
            } else {
                vec![cfg.gamma]
            };
            let cands = shape_candidates(k, cfg.max_n, &gammas);
            log::info!(
                "K={k}: timing {} draft shapes on {} validation users",
                cands.len(),
                tuning.len()
            );
            let base = params_for(k, k, cfg.gamma);
            Some(tune_width(
                target,
                draft,
                &data.trie,
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
            None => params_for(k, cfg.n, cfg.gamma),
        };
        let mut acc = Acc::default();
        acc.r.k = k;
        acc.r.n = params.n;
        acc.r.gamma = params.gamma;
        acc.r.width = width;
        for (i, s) in samples.iter().enumerate() {
            let prompt = data.prompt(&s.history);
            let run_base = || -> Result<(BeamOutcome, f64)> {
                let t = Instant::now();
                let b = beam_search(target, &data.trie, &prompt, k)?;
                Ok((b, t.elapsed().as_secs_f64() * 1e3))
            };
            let run_spec = |rng: &mut rand_chacha::ChaCha8Rng| -> Result<(DecodeTrace, f64)> {
                let t = Instant::now();
                let tr = speculative(target, draft, &data.trie, &prompt, &params, rng)?;
                Ok((tr, t.elapsed().as_secs_f64() * 1e3))
            };
            // Alternate which runs first so drift (thermal, caches) does not favour one side.
            let ((base, bms), (trace, sms)) = if i % 2 == 0 {
                let b = run_base()?;
                (b, run_spec(&mut rng)?)
            } else {
                let s = run_spec(&mut rng)?;
                (run_base()?, s)
            };
            acc.add(&base, bms, &trace, sms, &s.targets);
            done += 1;
            progress(done, total);
        }
        per_k.push(acc.finish());
    }
    let target_passes = pass_costs(target, data, 15)?;
    let draft_passes = pass_costs(draft, data, 15)?;
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
    /// The table `atspeed bench` prints (markdown, so it pastes into notes as is).
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} | target {} | draft {} | {} | {} N={}{} gamma={}{} | {} users\n\n",
            self.dataset,
            self.target,
            self.draft,
            self.device,
            self.config.mode.name(),
            if self.config.tune_users > 0 {
                format!(
                    "tuned per K (up to {}, on {} validation users)",
                    self.config.max_n, self.config.tune_users
                )
            } else {
                self.config.n.to_string()
            },
            self.config
                .draft_mass
                .map(|m| format!(" (adaptive, mass {m})"))
                .unwrap_or_default(),
            self.config.gamma,
            if self.config.tune_gamma {
                " at most, tuned per K"
            } else {
                ""
            },
            self.per_k.first().map(|k| k.users).unwrap_or(0)
        );
        s.push_str("| K | N | gamma | WS (totals) | WS (mean) | bound | ceiling | AS | acc d1/d2/d3 | target passes base->spec | draft passes | base ms | spec ms | draft / verify / other ms | identical (+ near-ties) | Recall@5 | NDCG@5 |\n");
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
                r.draft_ms,
                r.verify_ms,
                r.other_ms,
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
             (gamma 3: 1 target + 3 draft passes; gamma 1 or 2: 2 + 2) at the measured pass costs.\n",
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
                    r.other_ms,
                    r.select_ms,
                    r.cache_ms,
                    (r.other_ms - r.select_ms - r.cache_ms).max(0.0)
                )
            })
            .collect();
        s.push_str(&format!("non-model ms per user: {}\n", host.join("; ")));
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

/// Wall time of single passes of one model, in the shapes decoding uses (SPEC section 7):
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

pub fn pass_costs(llm: &Llm, data: &Dataset, reps: usize) -> Result<PassCosts> {
    use crate::decode::tree::{ModelState, NodeId, Rows, Tree};
    let sample = data
        .test_samples(crate::data::DEFAULT_HISTORY)
        .into_iter()
        .max_by_key(|s| s.history.len())
        .ok_or_else(|| crate::Error::data(&data.dir, "no test users to time passes on"))?;
    let prompt = data.prompt(&sample.history);
    let level0 = data.vocab.level_tokens(0);
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
        let toks = data.vocab.level_tokens(d);
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
        // gamma 3: draft 3, one pass verifies them and adds the bonus depth 4.
        assert_eq!(full_acceptance_passes(3), (1, 3));
        // gamma 2: depths 1-2 plus bonus 3, then a plain target step for depth 4.
        assert_eq!(full_acceptance_passes(2), (2, 2));
        // gamma 1: (1 + bonus 2), then (3 + bonus 4).
        assert_eq!(full_acceptance_passes(1), (2, 2));
        // Deeper than the identifier is the same as gamma 3.
        assert_eq!(full_acceptance_passes(7), (1, 3));
    }
}
