//! Drafting: the draft model's beam search of width N for g steps from the verified beams.
//!
//! Strict mode keeps the draft's N best extensions per depth (optionally fewer, while they hold
//! `draft_mass` of its probability, see [`DecodeParams::draft_mass`]); relaxed mode samples N
//! without replacement, since its verification compares probabilities of sampled proposals.
//! A forced depth (one allowed token after every prefix, a format's fixed token) costs no draft
//! pass: every parent gets its one child, which verification then accepts.

use std::time::Instant;

use rand::Rng;

use super::params::{DecodeParams, Mode};
use super::select::{extensions, log_sum_exp, sample_k, top_k, Beam, Cand};
use super::tree::{ModelState, NodeId, Rows, Tree};
use crate::ids::PrefixAutomaton;
use crate::model::Llm;
use crate::Result;

/// A drafted token during a round.
pub(super) struct Drafted {
    pub node: NodeId,
    /// Index in the previous level (None at depth 1).
    pub parent: Option<usize>,
    /// Index of the round-start beam this token descends from.
    pub root: usize,
    /// Draft log-probability of the token given its parent.
    pub logq: f32,
    /// Cumulative draft score (starting from the verified beams' target scores).
    pub draft_score: f32,
    /// Strict: rank (1-based) among every candidate the draft scored at this depth. Drafted
    /// beams are the best-first prefix of that ordering, so this is the index in the level + 1.
    pub rank: Option<usize>,
}

/// The drafted levels of a round that starts at depth `start` (tokens already fixed), as their
/// forced flags: from `start + 1` on, every forced depth is taken for free and up to `gamma`
/// free depths are drafted, stopping before the sequence's last depth, which the target always
/// takes itself (its bonus or correction step). `forced` is the constraint's flag per depth
/// ([`PrefixAutomaton::forced`]). The same rule sizes rounds for the bench's ceiling.
pub fn drafted_levels(forced: &[bool], gamma: usize, start: usize) -> Vec<bool> {
    let mut levels = Vec::new();
    let mut free = 0;
    for &f in forced
        .iter()
        .take(forced.len().saturating_sub(1))
        .skip(start)
    {
        if f {
            levels.push(true);
        } else if free < gamma {
            free += 1;
            levels.push(false);
        } else {
            break;
        }
    }
    levels
}

/// What the draft produced: nodes per depth, and its log-prob rows at each depth's parents.
pub(super) struct DraftOut {
    pub levels: Vec<Vec<Drafted>>,
    /// Whether each level is forced (drafted without a pass).
    pub forced: Vec<bool>,
    /// rows[d] holds the draft's log-probs at the parents expanded at depth d + 1: the verified
    /// beams for d = 0, the drafted beams of level d - 1 after that. `None` at a forced level.
    pub rows: Vec<Option<Rows>>,
    /// Milliseconds in the draft's model passes, and in the host-side search.
    pub pass_ms: f64,
    pub select_ms: f64,
}

impl DraftOut {
    /// All drafted tokens, depth-major (the order the tree is flattened in).
    pub fn flat(&self) -> impl Iterator<Item = &Drafted> {
        self.levels.iter().flatten()
    }
}

/// Runs the draft over `levels` (forced flags, see [`drafted_levels`]) from `beams`. Scores
/// start from the verified beams' target scores, so at depth 1 the draft ranks exactly what the
/// target ranks, up to the difference between the two models' next-token distributions. A
/// forced token adds nothing to a draft score (it is the only choice).
#[allow(clippy::too_many_arguments)]
pub(super) fn draft<R: Rng>(
    model: &Llm,
    state: &mut ModelState,
    tree: &mut Tree,
    auto: &PrefixAutomaton,
    params: &DecodeParams,
    beams: &[Beam],
    levels: &[bool],
    rng: &mut R,
) -> Result<DraftOut> {
    let mut out = DraftOut {
        levels: Vec::new(),
        forced: levels.to_vec(),
        rows: Vec::new(),
        pass_ms: 0.0,
        select_ms: 0.0,
    };
    let mut parents: Vec<Beam> = beams.to_vec();
    let mut parent_root: Vec<usize> = (0..beams.len()).collect();
    let strict = params.mode == Mode::Strict;
    for (d, &forced) in levels.iter().enumerate() {
        if forced {
            let level: Vec<Drafted> = parents
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    let &(token, state) = auto.children(tree.node(p.node).state).first()?;
                    Some(Drafted {
                        rank: strict.then_some(i + 1),
                        node: tree.push(p.node, token, state),
                        parent: (d > 0).then_some(i),
                        root: parent_root[i],
                        logq: 0.0,
                        draft_score: p.score,
                    })
                })
                .collect();
            parents = level
                .iter()
                .map(|l| Beam {
                    node: l.node,
                    score: l.draft_score,
                })
                .collect();
            parent_root = level.iter().map(|l| l.root).collect();
            out.levels.push(level);
            out.rows.push(None);
            continue;
        }
        let nodes: Vec<NodeId> = parents.iter().map(|b| b.node).collect();
        let fed = state.missing(tree, &nodes);
        let t = Instant::now();
        let (lq, _) = state.feed(model, tree, &fed, &nodes)?;
        let rows = Rows::from_tensor(&lq)?;
        out.pass_ms += ms(t);
        let t_select = Instant::now();
        let paths: Vec<Vec<u32>> = nodes.iter().map(|&n| tree.path(n)).collect();
        let cands = extensions(tree, auto, &parents, |i| rows.row(i));
        let chosen = match params.mode {
            Mode::Strict => strict_width(cands, params, &paths),
            Mode::Relaxed => sample_k(cands, params.n, &paths, rng),
        };
        let level: Vec<Drafted> = chosen
            .iter()
            .enumerate()
            .map(|(i, c)| Drafted {
                rank: strict.then_some(i + 1),
                node: tree.push(parents[c.parent].node, c.token, c.state),
                parent: (d > 0).then_some(c.parent),
                root: parent_root[c.parent],
                logq: c.logp,
                draft_score: c.score,
            })
            .collect();
        parents = level
            .iter()
            .map(|l| Beam {
                node: l.node,
                score: l.draft_score,
            })
            .collect();
        parent_root = level.iter().map(|l| l.root).collect();
        out.select_ms += ms(t_select);
        out.levels.push(level);
        out.rows.push(Some(rows));
    }
    Ok(out)
}

/// The draft's N best extensions, cut to the adaptive width when `draft_mass` is set.
fn strict_width(cands: Vec<Cand>, params: &DecodeParams, paths: &[Vec<u32>]) -> Vec<Cand> {
    let log_z = params
        .draft_mass
        .map(|_| log_sum_exp(cands.iter().map(|c| c.score)));
    let mut top = top_k(cands, params.n, paths);
    if let (Some(m), Some(z)) = (params.draft_mass, log_z) {
        top.truncate(mass_prefix(&top, z, m, params.k));
    }
    top
}

/// How many of the best-first candidates it takes to hold `mass` of the probability
/// exp(score - log_z), never fewer than `min`.
fn mass_prefix(best_first: &[Cand], log_z: f32, mass: f32, min: usize) -> usize {
    let mut acc = 0.0f32;
    for (i, c) in best_first.iter().enumerate() {
        acc += (c.score - log_z).exp();
        if acc >= mass && i + 1 >= min {
            return i + 1;
        }
    }
    best_first.len()
}

pub(super) fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
