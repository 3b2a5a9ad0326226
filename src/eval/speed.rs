//! The paper's speed metrics, defined once for the bench, the explorer and sessions.
//!
//! - **WS** (walltime speedup) of a user: the target-only beam search's milliseconds over the
//!   speculative decode's milliseconds, both timed on the same device in the same process.
//!   Over users it is reported two ways: the ratio of the totals ([`SpeedStats::ws_total`]) and
//!   the mean of the per-user ratios ([`SpeedStats::ws_mean`], what the reference reports).
//! - **AS** (accepted steps) of a user: the drafted steps accepted over all its rounds (0 to
//!   L - 1 with L-token identifiers; a format's forced tokens are not steps: nothing is chosen
//!   there); [`SpeedStats::accepted_steps`] is its mean over users.
//! - **Per-depth acceptance** at drafted depth d (1-based within a round): the rounds that
//!   accepted depth d over the rounds whose verifier *examined* depth d. A round examines every
//!   depth it accepts and the first one it rejects; depths after a rejection were never looked
//!   at and do not count ([`crate::decode::RoundTrace::examined`]).
//!   The drafted depth is the step within a round, not the identifier depth: a round that starts
//!   at identifier depth 2 drafts depth 3 as its step 1. Forced levels are skipped in this count.
//! - **Acceptance against N** at drafted depth d (strict): over the rounds that examined depth d,
//!   the share whose smallest accepting width ([`crate::decode::trace::DepthCheck::n_needed`]) is
//!   at most N'. At the run's own N (full width) it equals the per-depth acceptance; other N'
//!   answer "how wide must N be" from the same run, with no extra decoding (exact at depth 1; at
//!   deeper depths over the parents the draft actually expanded).
//! - **Target-pass ratio**: target-only forward passes over speculative target passes, as a
//!   ratio of totals: the speedup a device whose passes cost the same whatever their tokens
//!   would turn the measured acceptance into.

use serde::{Deserialize, Serialize};

use crate::decode::{DecodeTrace, PhaseTimes};
use crate::ids::MAX_LEVELS;

/// WS of one decode: `baseline_ms / speculative_ms` (0 when nothing was timed).
pub fn walltime_speedup(baseline_ms: f64, speculative_ms: f64) -> f64 {
    if speculative_ms > 0.0 {
        baseline_ms / speculative_ms
    } else {
        0.0
    }
}

/// Drafted steps a round can hold at most, for any identifier (the target always takes the last
/// token): a bound on what a file may claim, not the steps of a given format.
pub const MAX_DRAFTED: usize = MAX_LEVELS - 1;

/// What one user's decode contributes to the speed metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserSpeed {
    /// The dataset's user id.
    pub user: u32,
    pub baseline_ms: f64,
    pub speculative_ms: f64,
    /// AS of this user.
    pub accepted_steps: usize,
    pub baseline_target_passes: usize,
    pub target_passes: usize,
    pub draft_passes: usize,
    pub times: PhaseTimes,
    /// Per drafted step (index 0 = step 1): rounds that examined it, and that accepted it. As
    /// long as the deepest step any round drafted (at most [`MAX_DRAFTED`]).
    pub depth_examined: Vec<usize>,
    pub depth_accepted: Vec<usize>,
    /// Per drafted step (strict runs): the smallest accepting N of every round that examined it.
    #[serde(default)]
    pub n_needed: Vec<Vec<usize>>,
}

impl UserSpeed {
    /// The numbers of one speculative decode against its target-only baseline.
    pub fn new(
        user: u32,
        trace: &DecodeTrace,
        baseline_ms: f64,
        baseline_target_passes: usize,
    ) -> Self {
        let mut depth_examined: Vec<usize> = Vec::new();
        let mut depth_accepted: Vec<usize> = Vec::new();
        let mut n_needed: Vec<Vec<usize>> = Vec::new();
        for round in &trace.rounds {
            for (step, (_, examined, accepted)) in round.steps().enumerate().take(MAX_DRAFTED) {
                if depth_examined.len() <= step {
                    depth_examined.resize(step + 1, 0);
                    depth_accepted.resize(step + 1, 0);
                }
                depth_examined[step] += usize::from(examined);
                depth_accepted[step] += usize::from(accepted);
            }
            for c in &round.checks {
                let step = round.step_of_level(c.depth).filter(|&s| s <= MAX_DRAFTED);
                if let (Some(n), Some(step)) = (c.n_needed, step) {
                    if n_needed.len() < step {
                        n_needed.resize(step, Vec::new());
                    }
                    n_needed[step - 1].push(n);
                }
            }
        }
        UserSpeed {
            user,
            baseline_ms,
            speculative_ms: trace.speculative_ms(),
            accepted_steps: trace.accepted_steps(),
            baseline_target_passes,
            target_passes: trace.target_passes(),
            draft_passes: trace.draft_passes(),
            times: trace.times(),
            depth_examined,
            depth_accepted,
            n_needed,
        }
    }

    /// WS of this user.
    pub fn ws(&self) -> f64 {
        walltime_speedup(self.baseline_ms, self.speculative_ms)
    }

    /// This user's target-pass ratio.
    pub fn pass_ratio(&self) -> f64 {
        ratio(
            self.baseline_target_passes as f64,
            self.target_passes as f64,
        )
    }
}

/// The speed metrics over a set of users (one parameter set).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpeedStats {
    /// In the order they were first recorded.
    pub users: Vec<UserSpeed>,
}

impl SpeedStats {
    /// Adds a user; a user recorded again replaces its earlier numbers (the explorer re-runs
    /// users), so no user counts twice.
    pub fn record(&mut self, u: UserSpeed) {
        match self.users.iter_mut().find(|x| x.user == u.user) {
            Some(old) => *old = u,
            None => self.users.push(u),
        }
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    fn sum(&self, f: impl Fn(&UserSpeed) -> f64) -> f64 {
        self.users.iter().map(f).sum()
    }

    fn mean(&self, f: impl Fn(&UserSpeed) -> f64) -> f64 {
        ratio(self.sum(f), self.users.len() as f64)
    }

    /// WS as the ratio of total baseline time to total speculative time.
    pub fn ws_total(&self) -> f64 {
        walltime_speedup(self.sum(|u| u.baseline_ms), self.sum(|u| u.speculative_ms))
    }

    /// WS as the mean of per-user ratios.
    pub fn ws_mean(&self) -> f64 {
        self.mean(UserSpeed::ws)
    }

    /// AS: mean accepted drafted steps per user.
    pub fn accepted_steps(&self) -> f64 {
        self.mean(|u| u.accepted_steps as f64)
    }

    /// The deepest drafted step any recorded round reached (at most [`MAX_DRAFTED`]).
    pub fn max_steps(&self) -> usize {
        self.users
            .iter()
            .map(|u| u.depth_examined.len().max(u.n_needed.len()))
            .max()
            .unwrap_or(0)
            .min(MAX_DRAFTED)
    }

    /// Acceptance rate of drafted step 1, 2, ... up to `steps` (accepted over examined; 0 where
    /// none was examined).
    pub fn depth_acceptance_to(&self, steps: usize) -> Vec<f64> {
        (0..steps.min(MAX_DRAFTED))
            .map(|d| {
                let get = |v: &Vec<usize>| v.get(d).copied().unwrap_or(0);
                let examined: usize = self.users.iter().map(|u| get(&u.depth_examined)).sum();
                let accepted: usize = self.users.iter().map(|u| get(&u.depth_accepted)).sum();
                ratio(accepted as f64, examined as f64)
            })
            .collect()
    }

    /// Acceptance rate of every drafted step a round reached ([`SpeedStats::max_steps`]).
    pub fn depth_acceptance(&self) -> Vec<f64> {
        self.depth_acceptance_to(self.max_steps())
    }

    /// Rounds (over all users) that examined drafted depth `d` (1-based).
    pub fn depth_rounds(&self, d: usize) -> usize {
        self.users
            .iter()
            .map(|u| u.depth_examined.get(d - 1).copied().unwrap_or(0))
            .sum()
    }

    /// The smallest accepting N of every round that examined drafted depth `d` (1-based),
    /// sorted; empty for relaxed runs and traces recorded before N was recorded.
    pub fn n_needed(&self, d: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .users
            .iter()
            .filter_map(|u| u.n_needed.get(d - 1))
            .flatten()
            .copied()
            .collect();
        v.sort_unstable();
        v
    }

    /// Acceptance against N at drafted depth `d` (see the module documentation): for each
    /// width, the share of the rounds that examined depth d whose smallest accepting N is at
    /// most that width. `None` when no round recorded N needed at that depth.
    pub fn acceptance_at_widths(&self, d: usize, widths: &[usize]) -> Option<Vec<f64>> {
        let needed = self.n_needed(d);
        if needed.is_empty() {
            return None;
        }
        let total = needed.len() as f64;
        Some(
            widths
                .iter()
                .map(|&w| needed.partition_point(|&n| n <= w) as f64 / total)
                .collect(),
        )
    }

    /// The smallest N that would have accepted at least `share` of the rounds that examined
    /// drafted depth `d` (the `share` quantile of N needed).
    pub fn width_for_share(&self, d: usize, share: f64) -> Option<usize> {
        let needed = self.n_needed(d);
        if needed.is_empty() {
            return None;
        }
        let i = ((share * needed.len() as f64).ceil() as usize).clamp(1, needed.len());
        Some(needed[i - 1])
    }

    /// The acceptance-against-N curve of every drafted depth that recorded one, at `widths`.
    pub fn width_curves(&self, widths: &[usize]) -> Vec<WidthCurve> {
        (1..=self.max_steps())
            .filter_map(|d| {
                let acc = self.acceptance_at_widths(d, widths)?;
                Some(WidthCurve {
                    depth: d,
                    rounds: self.n_needed(d).len(),
                    points: widths.iter().copied().zip(acc).collect(),
                })
            })
            .collect()
    }

    /// Target-pass ratio over all users (ratio of totals).
    pub fn target_pass_ratio(&self) -> f64 {
        ratio(
            self.sum(|u| u.baseline_target_passes as f64),
            self.sum(|u| u.target_passes as f64),
        )
    }

    pub fn mean_baseline_ms(&self) -> f64 {
        self.mean(|u| u.baseline_ms)
    }

    pub fn mean_speculative_ms(&self) -> f64 {
        self.mean(|u| u.speculative_ms)
    }

    pub fn mean_baseline_target_passes(&self) -> f64 {
        self.mean(|u| u.baseline_target_passes as f64)
    }

    pub fn mean_target_passes(&self) -> f64 {
        self.mean(|u| u.target_passes as f64)
    }

    pub fn mean_draft_passes(&self) -> f64 {
        self.mean(|u| u.draft_passes as f64)
    }

    /// Mean time split per user.
    pub fn mean_times(&self) -> PhaseTimes {
        let mut t = PhaseTimes::default();
        for u in &self.users {
            t.add(&u.times);
        }
        t.scaled(1.0 / self.users.len().max(1) as f64)
    }

    /// Users per AS value: index = steps a user accepted (0..=`max`, the most a decode of the
    /// format can accept, L - 1, itself capped at [`MAX_DRAFTED`]; the last bucket counts any
    /// that claims more, so no count read from a file sizes the histogram).
    pub fn accepted_histogram(&self, max: usize) -> Vec<usize> {
        let max = max.min(MAX_DRAFTED);
        let mut h = vec![0; max + 1];
        for u in &self.users {
            h[u.accepted_steps.min(max)] += 1;
        }
        h
    }

    /// (x, per-user WS) in recording order, x from 1.
    pub fn ws_points(&self) -> Vec<(f64, f64)> {
        (1..)
            .zip(&self.users)
            .map(|(i, u)| (i as f64, u.ws()))
            .collect()
    }

    /// (x, running mean of the per-user WS).
    pub fn ws_running_mean(&self) -> Vec<(f64, f64)> {
        let mut sum = 0.0;
        (1..)
            .zip(&self.users)
            .map(|(i, u)| {
                sum += u.ws();
                (i as f64, sum / i as f64)
            })
            .collect()
    }
}

/// Acceptance against N at one drafted depth: (N', share of rounds accepted with width N').
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WidthCurve {
    /// Drafted depth within a round (1-based).
    pub depth: usize,
    /// Rounds that examined this depth.
    pub rounds: usize,
    pub points: Vec<(usize, f64)>,
}

/// Widths to draw an acceptance-against-N curve at for beam size `k`: K times 1, 1.5, 2, 3, 4,
/// 6, 8, 12 and 16, and up to `max` in doublings beyond that.
pub fn width_grid(k: usize, max: usize) -> Vec<usize> {
    let k = k.max(1);
    let mut v: Vec<usize> = [2, 3, 4, 6, 8, 12, 16, 24, 32]
        .iter()
        .map(|&half| (k * half).div_ceil(2))
        .collect();
    while v.last().is_some_and(|&w| w < max) {
        let next = v.last().map_or(k, |&w| w * 2);
        v.push(next);
    }
    v.dedup();
    v
}

/// a / b, or 0 when b is 0.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12: `accepted` = 1e9 in a session sized the histogram, allocating gigabytes (and
    /// u64::MAX overflowed the capacity). The histogram has a fixed size whatever the counts.
    #[test]
    fn accepted_histogram_is_not_sized_by_the_data() {
        let mut s = SpeedStats::default();
        for (user, steps) in [(1, 2), (2, 1_000_000_000), (3, usize::MAX)] {
            s.record(UserSpeed {
                user,
                accepted_steps: steps,
                ..Default::default()
            });
        }
        assert_eq!(s.accepted_histogram(3), vec![0, 0, 1, 2]);
        assert_eq!(s.accepted_histogram(usize::MAX).len(), MAX_DRAFTED + 1);
    }

    use crate::decode::trace::{DepthCheck, RoundTrace};
    use crate::decode::DecodeParams;

    fn round(accepted: usize, drafted: usize, needed: &[usize]) -> RoundTrace {
        let mut r: RoundTrace = serde_json::from_value(serde_json::json!({
            "round": 0, "start_depth": 0, "roots": [], "drafted": drafted, "nodes": [],
            "tree": {"context_len": 0, "lead_len": 0, "positions": [], "mask_rows": []},
            "accepted": accepted,
            "target_step": {"depth": accepted + 1, "kind": "correction", "beams": [],
                            "drafted_node": []},
            "times": {"draft_ms": 0.0, "verify_ms": 0.0, "other_ms": 0.0},
            "target_passes": 1, "draft_passes": drafted
        }))
        .unwrap();
        r.checks = needed
            .iter()
            .enumerate()
            .map(|(i, &n)| DepthCheck {
                depth: i + 1,
                accepted: i < accepted,
                candidates: 100,
                examined: n,
                n_needed: Some(n),
                missed: vec![],
                passed: 0,
                residual: None,
                forced: false,
            })
            .collect();
        r
    }

    fn user(id: u32, rounds: Vec<RoundTrace>) -> UserSpeed {
        let trace = DecodeTrace {
            params: DecodeParams::default(),
            length: 4,
            rounds,
            beams: vec![],
            wall_ms: 1.0,
        };
        UserSpeed::new(id, &trace, 2.0, 4)
    }

    #[test]
    fn acceptance_against_n_agrees_with_per_depth_acceptance_at_the_run_width() {
        // N = 40: round 1 accepts depths 1-3 (every step, so depth 3 counts as accepted),
        // round 2 rejects depth 1 (needs 55); a second user accepts depth 1 and rejects 2.
        let mut s = SpeedStats::default();
        s.record(user(
            1,
            vec![round(3, 3, &[20, 31, 40]), round(0, 1, &[55])],
        ));
        s.record(user(2, vec![round(1, 3, &[38, 90])]));
        assert_eq!(s.depth_acceptance(), vec![2.0 / 3.0, 0.5, 1.0]);
        let at40: Vec<f64> = (1..=3)
            .map(|d| s.acceptance_at_widths(d, &[40]).unwrap()[0])
            .collect();
        assert_eq!(at40, s.depth_acceptance());
        assert_eq!(
            s.acceptance_at_widths(1, &[19, 20, 55]),
            Some(vec![0.0, 1.0 / 3.0, 1.0])
        );
        assert_eq!(s.width_for_share(1, 0.5), Some(38));
        assert_eq!(s.width_for_share(1, 1.0), Some(55));
        assert_eq!(s.width_for_share(2, 0.9), Some(90));
        assert_eq!(s.depth_rounds(1), 3);
        let curves = s.width_curves(&[40, 80]);
        assert_eq!(curves.len(), 3);
        assert_eq!(curves[1].points, vec![(40, 0.5), (80, 0.5)]);
        assert_eq!(width_grid(20, 800)[..4], [20, 30, 40, 60]);
        assert_eq!(*width_grid(20, 800).last().unwrap(), 1280);
        assert_eq!(width_grid(1, 0), [1, 2, 3, 4, 6, 8, 12, 16]);
    }
}
