//! What one speculative round did, as a plain serde value.
//!
//! The same trace feeds the explorer, the bench statistics, the session files and the tests, so
//! the engine never needs to know who is watching. Everything here is owned data (no tensors), and
//! token ids are vocabulary ids: map them to text with [`crate::ids::Vocab`].

use serde::{Deserialize, Serialize};

pub use super::params::{DecodeParams, Mode};

/// What verification decided about one drafted token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Kept as one of the K verified beams at its depth (an accepted step, or the target's own
    /// step that happened to pick this drafted beam).
    Accepted,
    /// Verified but not kept: outside the target's top-K (strict) or failed u <= p/q (relaxed),
    /// or accepted in relaxed mode but not among the K kept at random.
    Rejected,
    /// Never examined: an earlier depth ended the round, or its parent was not kept.
    Pending,
}

/// A finished or partial beam: identifier tokens so far and its cumulative target log-probability.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BeamView {
    pub tokens: Vec<u32>,
    pub score: f32,
}

/// One drafted token of the tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DraftNode {
    /// Depth within the round, 1..=drafted.
    pub depth: usize,
    /// Index of the parent in [`RoundTrace::nodes`]; `None` at depth 1.
    pub parent: Option<usize>,
    /// Index of the round-start beam in [`RoundTrace::roots`] this node descends from.
    pub root: usize,
    pub token: u32,
    /// Draft probability of the token given its parent (softmax over the full vocabulary).
    pub q: f32,
    /// Target probability of the token given its parent, once the target has scored it.
    pub p: Option<f32>,
    /// Cumulative draft score used to rank drafted beams.
    pub draft_score: f32,
    /// Cumulative target score, once known.
    pub target_score: Option<f32>,
    /// The target's own top-K at this depth contains this beam (strict mode's criterion).
    pub in_target_topk: bool,
    pub verdict: Verdict,
}

/// How the step the target contributes at the end of a round came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetStepKind {
    /// Every drafted step was accepted; the target adds the next step for free.
    Bonus,
    /// A drafted step failed; the target's own beams for that depth replace it.
    Correction,
    /// Nothing was drafted (one step remained); a plain target step.
    Plain,
    /// Relaxed mode: fewer than K drafts passed; the missing beams were sampled from the residual.
    Resampled,
}

/// The step the target itself contributed at the end of the round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetStep {
    /// Identifier depth (1..=L) of the beams below.
    pub depth: usize,
    pub kind: TargetStepKind,
    pub beams: Vec<BeamView>,
    /// For each beam, whether a drafted node with the same tokens exists (and its index).
    pub drafted_node: Vec<Option<usize>>,
    /// For each beam, whether it was drawn from the residual distribution (relaxed mode).
    #[serde(default)]
    pub resampled: Vec<bool>,
}

/// Wall time of one round's phases, in milliseconds. `draft_ms` and `verify_ms` are the two
/// models' passes (up to the host copy of their log-probs); `other_ms` is everything else, of
/// which `select_ms` is the host-side search (trie expansion, top-k or sampling, for both the
/// draft's beams and the verification) and `cache_ms` the compaction of both KV caches. The
/// rest of `other_ms` is bookkeeping and the trace itself. On a GPU the compaction's gather
/// kernels run asynchronously, so `cache_ms` holds their launch, index upload and allocation
/// cost, and their device time lands in the next pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseTimes {
    pub draft_ms: f64,
    pub verify_ms: f64,
    pub other_ms: f64,
    #[serde(default)]
    pub select_ms: f64,
    #[serde(default)]
    pub cache_ms: f64,
}

impl PhaseTimes {
    pub fn total_ms(&self) -> f64 {
        self.draft_ms + self.verify_ms + self.other_ms
    }
    pub fn add(&mut self, o: &PhaseTimes) {
        self.draft_ms += o.draft_ms;
        self.verify_ms += o.verify_ms;
        self.other_ms += o.other_ms;
        self.select_ms += o.select_ms;
        self.cache_ms += o.cache_ms;
    }

    pub fn scaled(&self, f: f64) -> PhaseTimes {
        PhaseTimes {
            draft_ms: self.draft_ms * f,
            verify_ms: self.verify_ms * f,
            other_ms: self.other_ms * f,
            select_ms: self.select_ms * f,
            cache_ms: self.cache_ms * f,
        }
    }
}

/// The flattened tree the target verified in one pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TreeLayout {
    /// Tokens already in the target's cache when the pass ran (the prompt, earlier beams).
    pub context_len: usize,
    /// Tokens the pass fed before the drafted ones (prompt on the first round, the round-start
    /// beams' last tokens later).
    pub lead_len: usize,
    /// Position id of every drafted token, in [`RoundTrace::nodes`] order.
    pub positions: Vec<u32>,
    /// For every drafted token, the drafted tokens (indices into nodes) it may attend to, read
    /// back from the additive mask the pass actually used.
    pub mask_rows: Vec<Vec<u32>>,
}

/// Everything one speculative round did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundTrace {
    pub round: usize,
    /// Identifier tokens already fixed when the round started.
    pub start_depth: usize,
    /// The verified beams the round started from.
    pub roots: Vec<BeamView>,
    /// Drafted steps (g = min(gamma, remaining - 1)).
    pub drafted: usize,
    /// Drafted tokens, depth-major, in the order the tree was flattened.
    pub nodes: Vec<DraftNode>,
    pub tree: TreeLayout,
    /// Drafted steps accepted (0..=drafted).
    pub accepted: usize,
    pub target_step: TargetStep,
    pub times: PhaseTimes,
    /// Forward passes this round: target (always 1) and draft (one per drafted step).
    pub target_passes: usize,
    pub draft_passes: usize,
}

/// One user decoded speculatively.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodeTrace {
    /// The parameters it was decoded with (stored flat: `mode`, `n`, `k`, `gamma`, ...).
    #[serde(flatten)]
    pub params: DecodeParams,
    pub rounds: Vec<RoundTrace>,
    /// Final K beams, best first.
    pub beams: Vec<BeamView>,
    /// Wall time of the whole decode (setup and every round), in milliseconds. Traces recorded
    /// before it existed read back as 0; see [`DecodeTrace::speculative_ms`].
    #[serde(default)]
    pub wall_ms: f64,
}

impl RoundTrace {
    /// Drafted depths the verifier examined: every accepted one, plus the one that failed.
    pub fn examined(&self) -> usize {
        if self.accepted < self.drafted {
            self.accepted + 1
        } else {
            self.drafted
        }
    }
}

impl DecodeTrace {
    pub fn accepted_steps(&self) -> usize {
        self.rounds.iter().map(|r| r.accepted).sum()
    }
    pub fn target_passes(&self) -> usize {
        self.rounds.iter().map(|r| r.target_passes).sum()
    }
    pub fn draft_passes(&self) -> usize {
        self.rounds.iter().map(|r| r.draft_passes).sum()
    }
    /// The time WS divides by: the decode's wall time (the sum of its rounds' times for traces
    /// that did not record one).
    pub fn speculative_ms(&self) -> f64 {
        if self.wall_ms > 0.0 {
            self.wall_ms
        } else {
            self.times().total_ms()
        }
    }

    pub fn times(&self) -> PhaseTimes {
        let mut t = PhaseTimes::default();
        for r in &self.rounds {
            t.add(&r.times);
        }
        t
    }
}
