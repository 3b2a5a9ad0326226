//! What one speculative round did, as a plain serde value.
//!
//! The same trace feeds the explorer, the bench statistics, the session files and the tests, so
//! the engine never needs to know who is watching. Everything here is owned data (no tensors), and
//! token ids are vocabulary ids: map them to text with [`crate::ids::Vocab`].

use serde::{Deserialize, Serialize};

pub use super::params::{DecodeParams, Mode};
use crate::ids::LCREC_LEVELS;

/// What verification decided about one drafted token. A *token* is kept or not; a *depth* is
/// accepted or rejected (see [`DepthCheck`]): a drafted beam can be kept at a depth that was
/// rejected (strict: it is in the target's top-K, which the target's own step then keeps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Kept as one of the K verified beams at its depth. Strict: it is in the target's top-K.
    /// Relaxed: it passed u <= p/q and was kept (among the K chosen at random at an accepted
    /// depth, or as one of the fewer than K that passed at the depth that ended the round).
    Accepted,
    /// Strict: examined and outside the target's top-K. (Relaxed traces recorded before
    /// [`Verdict::Failed`] and [`Verdict::NotKept`] existed use it for both.)
    Rejected,
    /// Relaxed: failed the test u <= p/q.
    Failed,
    /// Relaxed: passed u <= p/q, but more than K passed and it was not among the K kept at
    /// random.
    NotKept,
    /// Never examined: an earlier depth ended the round, or its parent was not kept.
    Pending,
}

/// The relaxed test of one drafted beam: accepted by the test if `u <= ratio`, with `ratio` =
/// `p / q`. `p` and `q` are the target's and the draft's sequence-level probabilities of the beam
/// among all extensions (parent, token) of the beams kept at the depth before; these are exactly
/// the numbers the verifier compared.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RelaxedTest {
    /// The uniform draw, u ~ U[0, 1).
    pub u: f64,
    pub p: f64,
    pub q: f64,
    /// p / q (infinite when q is 0).
    pub ratio: f64,
}

impl RelaxedTest {
    pub fn new(u: f64, p: f64, q: f64) -> Self {
        let ratio = if q > 0.0 { p / q } else { f64::INFINITY };
        RelaxedTest { u, p, q, ratio }
    }

    /// The rule: u <= p/q.
    pub fn passed(&self) -> bool {
        self.u <= self.ratio
    }
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
    /// Strict: the target's own top-K at this depth contains this beam (the strict criterion).
    /// Always false in relaxed mode, whose criterion is [`DraftNode::test`].
    pub in_target_topk: bool,
    pub verdict: Verdict,
    /// Strict: rank (1-based) of this beam in the draft's best-first ordering of every candidate
    /// at its depth (see [`DepthCheck::n_needed`]); drafted beams are the first N of it.
    #[serde(default)]
    pub draft_rank: Option<usize>,
    /// Relaxed: the test u <= p/q this beam was put to (examined beams only).
    #[serde(default)]
    pub test: Option<RelaxedTest>,
}

/// A beam of the target's top-K at a strict depth that the draft did not draft.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MissedBeam {
    /// Identifier tokens from the first level to this depth.
    pub tokens: Vec<u32>,
    /// Rank (1-based) in the target's top-K.
    pub target_rank: usize,
    /// Rank (1-based) in the draft's best-first ordering of every candidate at this depth: the
    /// draft would have drafted it with N >= this rank.
    pub draft_rank: usize,
    /// Draft and target probabilities of the last token given its parent.
    pub q: f32,
    pub p: f32,
    /// Cumulative target score and the draft's score for it (parent draft score + log q).
    pub target_score: f32,
    pub draft_score: f32,
}

/// One entry of the relaxed residual distribution norm(max(0, p - q)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResidualEntry {
    pub tokens: Vec<u32>,
    /// Sequence-level target and draft probabilities, and the residual probability
    /// max(0, p - q) / mass.
    pub p: f64,
    pub q: f64,
    pub r: f64,
}

/// The residual a relaxed round drew its missing beams from, at the depth that ended it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Residual {
    /// sum of max(0, p - q) over the extensions (the total variation distance between p and q):
    /// the normaliser of the residual.
    pub mass: f64,
    /// Beams drawn from it (K minus the beams that passed, or fewer when the extensions run out).
    pub drawn: usize,
    /// Whether the residual ran out of mass and later draws fell back to the target's own
    /// distribution p over the extensions not yet taken.
    pub fallback: bool,
    /// Its largest entries, largest first (at most [`Residual::TOP`]).
    pub top: Vec<ResidualEntry>,
}

impl Residual {
    /// Entries kept in [`Residual::top`].
    pub const TOP: usize = 8;
}

/// What the verifier found at one depth it examined.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DepthCheck {
    /// Depth within the round (1-based); the identifier depth is `start_depth + depth`.
    pub depth: usize,
    pub accepted: bool,
    /// Candidates the draft ranked at this depth: every allowed child of the parents it
    /// expanded there (the round's verified beams at depth 1, its drafted beams after that).
    pub candidates: usize,
    /// Drafted beams examined at this depth (those whose parent was kept).
    pub examined: usize,
    /// Strict: the smallest drafted width N that accepts this depth, i.e. the worst rank, in
    /// the draft's best-first ordering of its candidates (score = parent draft score + log q,
    /// ties by [`crate::decode::beam_order`]), over the target's whole top-K. Exact at depth 1
    /// (the parents are the verified beams whatever N is). At deeper depths a wider N would
    /// also widen the parents, so this is computed over the children of the parents the draft
    /// actually expanded. `None` in relaxed mode.
    #[serde(default)]
    pub n_needed: Option<usize>,
    /// Strict: the target's top-K beams the draft did not draft, best target rank first (empty
    /// at an accepted depth).
    #[serde(default)]
    pub missed: Vec<MissedBeam>,
    /// Relaxed: drafted beams that passed u <= p/q.
    #[serde(default)]
    pub passed: usize,
    /// Relaxed, at the depth that ended the round: the residual the missing beams came from.
    #[serde(default)]
    pub residual: Option<Residual>,
    /// A forced depth (one allowed token after every prefix): accepted without a test.
    #[serde(default)]
    pub forced: bool,
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
    /// Depth (1..=the decode's length) of the beams below.
    pub depth: usize,
    pub kind: TargetStepKind,
    pub beams: Vec<BeamView>,
    /// For each beam, whether a drafted node with the same tokens exists (and its index).
    pub drafted_node: Vec<Option<usize>>,
    /// For each beam, whether it was drawn from the residual distribution (relaxed mode).
    #[serde(default)]
    pub resampled: Vec<bool>,
    /// For each resampled beam, its probability under the residual norm(max(0, p - q)) (or
    /// under p, when the residual had run out: `fallback`); `None` for the other beams.
    #[serde(default)]
    pub draws: Vec<Option<Draw>>,
}

/// How a resampled beam was drawn.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Draw {
    /// Its probability in the distribution it was drawn from, before any draw.
    pub prob: f64,
    /// Drawn from the target's own distribution because the residual had no mass left.
    pub fallback: bool,
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
    /// Drafted levels: up to gamma free depths plus the forced depths among them, stopping before
    /// the sequence's last depth, which the target always takes itself (a round starting at
    /// depth 2 of a 4-token identifier drafts one step); see [`crate::decode::drafted_levels`].
    pub drafted: usize,
    /// Per drafted level, whether it was forced (a format's fixed token: drafted without a
    /// pass, accepted without a test). Empty when none was, as in every trace written before
    /// forced depths existed.
    #[serde(default)]
    pub forced: Vec<bool>,
    /// Drafted tokens, depth-major, in the order the tree was flattened.
    pub nodes: Vec<DraftNode>,
    pub tree: TreeLayout,
    /// Drafted levels accepted (0..=drafted), forced ones included: the round ends at depth
    /// `start_depth + accepted + 1`. AS counts only the free ones ([`RoundTrace::accepted_steps`]).
    pub accepted: usize,
    /// What the verifier found at each depth it examined, in order (1..=examined).
    #[serde(default)]
    pub checks: Vec<DepthCheck>,
    pub target_step: TargetStep,
    pub times: PhaseTimes,
    /// Forward passes this round: target (always 1) and draft (one per drafted free step).
    pub target_passes: usize,
    pub draft_passes: usize,
}

/// One user decoded speculatively.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodeTrace {
    /// The parameters it was decoded with (stored flat: `mode`, `n`, `k`, `gamma`, ...).
    #[serde(flatten)]
    pub params: DecodeParams,
    /// Tokens per decoded sequence: the identifier's L codes plus its format's fixed tokens.
    /// Traces written before identifiers had other lengths read back as LC-Rec's 4.
    #[serde(default = "lcrec_levels")]
    pub length: usize,
    pub rounds: Vec<RoundTrace>,
    /// Final K beams, best first.
    pub beams: Vec<BeamView>,
    /// Wall time of the whole decode (setup and every round), in milliseconds. Traces recorded
    /// before it existed read back as 0; see [`DecodeTrace::speculative_ms`].
    #[serde(default)]
    pub wall_ms: f64,
}

fn lcrec_levels() -> usize {
    LCREC_LEVELS
}

/// Longest decoded sequence a trace may describe: the most levels an identifier has, plus room
/// for its format's fixed tokens.
pub const MAX_LENGTH: usize = 4 * crate::ids::MAX_LEVELS;

/// Probabilities may exceed 1 by float rounding (`exp` of a log-softmax); beyond this they are
/// corrupt.
const PROB_SLACK: f32 = 1e-3;

/// `field: msg`, the shape of every validation error (callers prefix the path above `field`).
fn at(field: impl std::fmt::Display, msg: impl std::fmt::Display) -> String {
    format!("{field}: {msg}")
}

/// An index into a list of `len` things named `what`.
fn check_index(field: &str, i: usize, len: usize, what: &str) -> Result<(), String> {
    if i < len {
        Ok(())
    } else {
        Err(at(field, format!("{i} is out of range ({len} {what})")))
    }
}

/// A count that may not exceed `max` (`why` says what the bound is).
fn check_count(field: &str, n: usize, max: usize, why: &str) -> Result<(), String> {
    if n <= max {
        Ok(())
    } else {
        Err(at(field, format!("{n} is more than {max} ({why})")))
    }
}

/// A score (log-probability): any number but NaN; -inf is a probability of 0.
fn check_score(field: &str, x: f32) -> Result<(), String> {
    if x.is_nan() || x == f32::INFINITY {
        Err(at(field, format!("{x} is not a log-probability")))
    } else {
        Ok(())
    }
}

fn check_prob(field: &str, x: f32) -> Result<(), String> {
    if (0.0..=1.0 + PROB_SLACK).contains(&x) {
        Ok(())
    } else {
        Err(at(field, format!("{x} is not a probability")))
    }
}

/// A duration in milliseconds: finite and not negative.
fn check_ms(field: &str, x: f64) -> Result<(), String> {
    if x.is_finite() && x >= 0.0 {
        Ok(())
    } else {
        Err(at(field, format!("{x} is not a duration in milliseconds")))
    }
}

impl BeamView {
    /// Checks the beam holds exactly `len` tokens (at most `max_len` when `len` is `None`) of a
    /// vocabulary of `vocab` ids and a score. Errors name the field within the beam
    /// (`tokens[2]: ...`).
    pub fn validate(&self, len: Option<usize>, max_len: usize, vocab: usize) -> Result<(), String> {
        match len {
            Some(l) if self.tokens.len() != l => {
                return Err(at(
                    "tokens",
                    format!("{} tokens where {l} were expected", self.tokens.len()),
                ))
            }
            _ => check_count("tokens", self.tokens.len(), max_len, "tokens per sequence")?,
        }
        check_tokens(&self.tokens, vocab)?;
        check_score("score", self.score)
    }
}

/// Every id of `tokens` is a token of a vocabulary of `vocab` ids.
pub fn check_tokens(tokens: &[u32], vocab: usize) -> Result<(), String> {
    for (j, &t) in tokens.iter().enumerate() {
        if t as usize >= vocab {
            return Err(at(
                format!("tokens[{j}]"),
                format!("{t} is not a token id (vocabulary of {vocab})"),
            ));
        }
    }
    Ok(())
}

/// Checks a list of beams: at most `max` of them, each valid; errors name `field[i]`.
fn check_beams(
    field: &str,
    beams: &[BeamView],
    max: usize,
    len: Option<usize>,
    max_len: usize,
    vocab: usize,
) -> Result<(), String> {
    check_count(field, beams.len(), max, "beams: K")?;
    for (i, b) in beams.iter().enumerate() {
        b.validate(len, max_len, vocab)
            .map_err(|e| format!("{field}[{i}].{e}"))?;
    }
    Ok(())
}

impl RoundTrace {
    /// Checks every index and count of the round against the round itself and the decode it is
    /// part of: it is round `index`, starting at depth `start` (where the previous round's target
    /// step ended) of sequences of `length` tokens, decoded with `params` over a vocabulary of
    /// `vocab` ids. The explorer indexes
    /// by these values, so a file that passes cannot make it panic or allocate by a count.
    ///
    /// Errors name the field relative to the round, e.g. `nodes[7].parent: 99 is out of range
    /// (7 nodes)`; the caller prefixes where the round is. A field added to the trace gets its
    /// check here.
    pub fn validate(
        &self,
        index: usize,
        start: usize,
        length: usize,
        params: &DecodeParams,
        vocab: usize,
    ) -> Result<(), String> {
        if self.round != index {
            return Err(at(
                "round",
                format!("{} where {index} was expected", self.round),
            ));
        }
        if self.start_depth != start {
            return Err(at(
                "start_depth",
                format!(
                    "{} where {start} was expected (the previous round ended there)",
                    self.start_depth
                ),
            ));
        }
        // Every round leaves the target at least the last step.
        let room = (length - 1).saturating_sub(start);
        check_count(
            "drafted",
            self.drafted,
            room,
            "the sequence's remaining depth",
        )?;
        if !self.forced.is_empty() && self.forced.len() != self.drafted {
            return Err(at(
                "forced",
                format!(
                    "{} flags for {} drafted levels",
                    self.forced.len(),
                    self.drafted
                ),
            ));
        }
        check_count(
            "drafted",
            self.drafted - self.forced.iter().filter(|&&f| f).count(),
            params.gamma,
            "gamma free levels",
        )?;
        check_count("accepted", self.accepted, self.drafted, "drafted")?;
        // Strict verification starts from the verified beams: at most K of them (one, empty,
        // on the first round).
        let roots = params.k.max(1);
        check_beams("roots", &self.roots, roots, Some(start), length, vocab)?;
        // At most N drafted beams per depth.
        let max_nodes = self.drafted.saturating_mul(params.n);
        check_count("nodes", self.nodes.len(), max_nodes, "N per drafted depth")?;
        let mut prev_depth = 1;
        for (i, nd) in self.nodes.iter().enumerate() {
            let f = |field: &str| format!("nodes[{i}].{field}");
            if nd.depth == 0 || nd.depth > self.drafted {
                return Err(at(
                    f("depth"),
                    format!("{} is not in 1..={}", nd.depth, self.drafted),
                ));
            }
            if nd.depth < prev_depth {
                return Err(at(
                    f("depth"),
                    format!(
                        "{} after depth {prev_depth}: nodes are stored depth by depth",
                        nd.depth
                    ),
                ));
            }
            prev_depth = nd.depth;
            match nd.parent {
                None if nd.depth > 1 => {
                    return Err(at(f("parent"), format!("missing at depth {}", nd.depth)))
                }
                Some(p) if nd.depth == 1 => {
                    return Err(at(f("parent"), format!("{p} at depth 1, which has none")))
                }
                Some(p) => {
                    // Parents come earlier (depth-major order), which also rules out cycles.
                    check_index(&f("parent"), p, i, "nodes before it")?;
                    if self.nodes[p].depth + 1 != nd.depth {
                        return Err(at(
                            f("parent"),
                            format!(
                                "{p} is at depth {}, not {}",
                                self.nodes[p].depth,
                                nd.depth - 1
                            ),
                        ));
                    }
                }
                None => {}
            }
            check_index(&f("root"), nd.root, self.roots.len(), "roots")?;
            if nd.token as usize >= vocab {
                return Err(at(
                    f("token"),
                    format!("{} is not a token id (vocabulary of {vocab})", nd.token),
                ));
            }
            check_prob(&f("q"), nd.q)?;
            if let Some(p) = nd.p {
                check_prob(&f("p"), p)?;
            }
            check_score(&f("draft_score"), nd.draft_score)?;
            if let Some(s) = nd.target_score {
                check_score(&f("target_score"), s)?;
            }
        }
        let n = self.nodes.len();
        let t = &self.tree;
        if t.positions.len() != n {
            return Err(at(
                "tree.positions",
                format!("{} entries for {n} nodes", t.positions.len()),
            ));
        }
        if t.mask_rows.len() != n {
            return Err(at(
                "tree.mask_rows",
                format!("{} rows for {n} nodes", t.mask_rows.len()),
            ));
        }
        for (i, row) in t.mask_rows.iter().enumerate() {
            check_count(&format!("tree.mask_rows[{i}]"), row.len(), n, "nodes")?;
            for (j, &c) in row.iter().enumerate() {
                check_index(&format!("tree.mask_rows[{i}][{j}]"), c as usize, n, "nodes")?;
            }
        }
        let ts = &self.target_step;
        let depth = start + self.accepted + 1;
        if ts.depth != depth {
            return Err(at(
                "target_step.depth",
                format!(
                    "{} where {depth} was expected (start_depth + accepted + 1)",
                    ts.depth
                ),
            ));
        }
        check_beams(
            "target_step.beams",
            &ts.beams,
            params.k,
            Some(depth),
            length,
            vocab,
        )?;
        check_count(
            "target_step.drafted_node",
            ts.drafted_node.len(),
            ts.beams.len(),
            "one per beam",
        )?;
        for (i, d) in ts.drafted_node.iter().enumerate() {
            if let Some(d) = d {
                check_index(&format!("target_step.drafted_node[{i}]"), *d, n, "nodes")?;
            }
        }
        check_count(
            "target_step.resampled",
            ts.resampled.len(),
            ts.beams.len(),
            "one per beam",
        )?;
        let tm = &self.times;
        for (field, x) in [
            ("times.draft_ms", tm.draft_ms),
            ("times.verify_ms", tm.verify_ms),
            ("times.other_ms", tm.other_ms),
            ("times.select_ms", tm.select_ms),
            ("times.cache_ms", tm.cache_ms),
        ] {
            check_ms(field, x)?;
        }
        // One target pass per round; a draft pass per drafted free step.
        check_count("target_passes", self.target_passes, 1, "one per round")?;
        check_count(
            "draft_passes",
            self.draft_passes,
            self.drafted,
            "one per drafted step",
        )?;
        Ok(())
    }

    /// Whether drafted level `level` (1-based within the round) was forced.
    pub fn is_forced(&self, level: usize) -> bool {
        level >= 1 && self.forced.get(level - 1).copied().unwrap_or(false)
    }

    /// The drafted steps the paper's metrics count (the free levels, forced ones skipped), in
    /// order: (level, 1-based within the round; examined; accepted).
    pub fn steps(&self) -> impl Iterator<Item = (usize, bool, bool)> + '_ {
        let examined = self.examined();
        (1..=self.drafted)
            .filter(|&l| !self.is_forced(l))
            .map(move |l| (l, l <= examined, l <= self.accepted))
    }

    /// Drafted free steps accepted this round (its part of AS).
    pub fn accepted_steps(&self) -> usize {
        self.steps().filter(|s| s.2).count()
    }

    /// The step index (1-based, among free levels) of drafted level `level`; `None` if forced.
    pub fn step_of_level(&self, level: usize) -> Option<usize> {
        (!self.is_forced(level))
            .then(|| (1..=level).filter(|&l| !self.is_forced(l)).count())
            .filter(|&s| s >= 1)
    }

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
    /// Checks the parameters, every round (see [`RoundTrace::validate`]), the final beams and
    /// the times against a vocabulary of `vocab` ids. Errors name the field relative to the trace,
    /// e.g. `rounds[0].nodes[7].parent: 99 is out of range (7 nodes)`.
    pub fn validate(&self, vocab: usize) -> Result<(), String> {
        self.params.validate().map_err(|e| match e {
            crate::Error::Invalid { what, msg } => at(what, msg),
            e => e.to_string(),
        })?;
        if self.length == 0 || self.length > MAX_LENGTH {
            return Err(at(
                "length",
                format!(
                    "{} is not a sequence length in 1..={MAX_LENGTH}",
                    self.length
                ),
            ));
        }
        check_count(
            "rounds",
            self.rounds.len(),
            self.length,
            "one step at least per round",
        )?;
        let mut depth = 0;
        for (i, r) in self.rounds.iter().enumerate() {
            r.validate(i, depth, self.length, &self.params, vocab)
                .map_err(|e| format!("rounds[{i}].{e}"))?;
            depth = r.target_step.depth;
        }
        if !self.rounds.is_empty() && depth != self.length {
            return Err(at(
                "rounds",
                format!("the decode stops at depth {depth}, not {}", self.length),
            ));
        }
        check_beams(
            "beams",
            &self.beams,
            self.params.k,
            None,
            self.length,
            vocab,
        )?;
        check_ms("wall_ms", self.wall_ms)
    }

    /// AS of this decode: drafted free steps accepted over all rounds (0 to L - 1).
    pub fn accepted_steps(&self) -> usize {
        self.rounds.iter().map(|r| r.accepted_steps()).sum()
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
