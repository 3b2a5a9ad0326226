//! Running speedup statistics over the users decoded with one parameter set.
//!
//! Users are keyed by id so re-running a user replaces its numbers instead of counting it twice;
//! the chart still shows users in the order they were first decoded.

use crate::decode::trace::PhaseTimes;
use crate::session::UserRun;

/// The numbers one user contributes.
#[derive(Clone, Debug, PartialEq)]
pub struct UserStat {
    pub user: u32,
    pub ws: f64,
    pub pass_ratio: f64,
    pub accepted: usize,
    pub spec_ms: f64,
    pub baseline_ms: f64,
    pub times: PhaseTimes,
    /// Per drafted depth (1-based within a round, index 0 = depth 1): drafted and accepted steps.
    pub depth_drafted: Vec<usize>,
    pub depth_accepted: Vec<usize>,
}

impl UserStat {
    pub fn from_run(user: u32, run: &UserRun) -> Self {
        let mut depth_drafted = Vec::new();
        let mut depth_accepted = Vec::new();
        for r in &run.trace.rounds {
            if depth_drafted.len() < r.drafted {
                depth_drafted.resize(r.drafted, 0);
                depth_accepted.resize(r.drafted, 0);
            }
            for d in 0..r.drafted {
                depth_drafted[d] += 1;
                if d < r.accepted {
                    depth_accepted[d] += 1;
                }
            }
        }
        let times = run.trace.times();
        UserStat {
            user,
            ws: run.speedup(),
            pass_ratio: run.pass_ratio(),
            accepted: run.trace.accepted_steps(),
            spec_ms: times.total_ms(),
            baseline_ms: run.baseline.time_ms,
            times,
            depth_drafted,
            depth_accepted,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub users: Vec<UserStat>,
}

impl Stats {
    pub fn record(&mut self, stat: UserStat) {
        match self.users.iter_mut().find(|u| u.user == stat.user) {
            Some(old) => *old = stat,
            None => self.users.push(stat),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Mean of per-user WS (what the reference reports).
    pub fn mean_ws(&self) -> f64 {
        mean(self.users.iter().map(|u| u.ws))
    }

    /// Total baseline time over total speculative time.
    pub fn ws_of_totals(&self) -> f64 {
        let spec: f64 = self.users.iter().map(|u| u.spec_ms).sum();
        let base: f64 = self.users.iter().map(|u| u.baseline_ms).sum();
        if spec > 0.0 {
            base / spec
        } else {
            0.0
        }
    }

    pub fn mean_pass_ratio(&self) -> f64 {
        mean(self.users.iter().map(|u| u.pass_ratio))
    }

    pub fn mean_accepted(&self) -> f64 {
        mean(self.users.iter().map(|u| u.accepted as f64))
    }

    /// (x, per-user WS) points for the chart, x = 1-based order of decoding.
    pub fn ws_points(&self) -> Vec<(f64, f64)> {
        self.users
            .iter()
            .enumerate()
            .map(|(i, u)| ((i + 1) as f64, u.ws))
            .collect()
    }

    /// (x, running mean of WS) points.
    pub fn running_mean(&self) -> Vec<(f64, f64)> {
        let mut sum = 0.0;
        self.users
            .iter()
            .enumerate()
            .map(|(i, u)| {
                sum += u.ws;
                ((i + 1) as f64, sum / (i + 1) as f64)
            })
            .collect()
    }

    /// Users per accepted-steps count: index = steps accepted by the user.
    pub fn accepted_hist(&self) -> Vec<usize> {
        let max = self.users.iter().map(|u| u.accepted).max().unwrap_or(0);
        let mut h = vec![0; max.max(crate::ids::ID_LEN - 1) + 1];
        for u in &self.users {
            h[u.accepted] += 1;
        }
        h
    }

    /// Acceptance rate per drafted depth, over every round of every user.
    pub fn per_depth(&self) -> Vec<f64> {
        let len = self
            .users
            .iter()
            .map(|u| u.depth_drafted.len())
            .max()
            .unwrap_or(0);
        (0..len)
            .map(|d| {
                let drafted: usize = self
                    .users
                    .iter()
                    .filter_map(|u| u.depth_drafted.get(d))
                    .sum();
                let acc: usize = self
                    .users
                    .iter()
                    .filter_map(|u| u.depth_accepted.get(d))
                    .sum();
                if drafted > 0 {
                    acc as f64 / drafted as f64
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Mean time split per user.
    pub fn mean_times(&self) -> PhaseTimes {
        let mut t = PhaseTimes::default();
        for u in &self.users {
            t.add(&u.times);
        }
        t.scaled(1.0 / self.users.len().max(1) as f64)
    }
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = it.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n > 0 {
        s / n as f64
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures;

    #[test]
    fn aggregates() {
        let mut s = Stats::default();
        s.record(UserStat::from_run(1, &fixtures::strict_run(1)));
        s.record(UserStat::from_run(
            2,
            &fixtures::run(crate::decode::trace::Mode::Strict, 6, 3, 3, 2, &[3]),
        ));
        // Re-running user 1 replaces it.
        s.record(UserStat::from_run(1, &fixtures::strict_run(1)));
        assert_eq!(s.users.len(), 2);
        assert_eq!(s.accepted_hist(), vec![0, 0, 1, 1]);
        // Depth 1 and 2 accepted by both users; depth 3 by one of two.
        assert_eq!(s.per_depth(), vec![1.0, 1.0, 0.5]);
        let strict = &s.users[0];
        // 13.6 ms baseline over (1.5 + 3.25 + .25) + (0 + 3.25 + .25) ms.
        assert!((strict.ws - 13.6 / 8.5).abs() < 1e-9);
        assert_eq!(strict.pass_ratio, 2.0);
        assert_eq!(s.running_mean().len(), 2);
    }
}
