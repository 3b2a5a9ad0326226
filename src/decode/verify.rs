//! Verification: after one target pass has scored every drafted token, decide how many drafted
//! steps are accepted and which K beams the round ends with.
//!
//! - [`strict`] (top-K verification, lossless): depth d is accepted only if the target's exact
//!   top-K extensions of the K beams verified at depth d - 1 are all among the drafted beams at
//!   depth d. The first depth that fails is replaced by the target's own top-K (a *correction*);
//!   if every drafted depth passes, the same pass yields the next depth for free (a *bonus*).
//!   Either way the beams are exactly those the target's own beam search would hold.
//! - [`relaxed`] (sampling verification): each drafted beam x whose parent was kept is accepted
//!   if u <= p(x)/q(x), with p and q the target's and the draft's sequence-level distributions
//!   over the extensions. With at least K accepted, K of them are kept at random and the next
//!   depth is examined; otherwise the missing beams are drawn from the residual
//!   norm(max(0, p - q)) and the round ends (a *resampled* step).

use std::collections::{HashMap, HashSet};

use rand::seq::SliceRandom;
use rand::Rng;

use super::draft::DraftOut;
use super::ranking::beam_order;
use super::select::{draw_without_replacement, extensions, log_sum_exp, sample_k, top_k};
use super::select::{Beam, Cand};
use super::trace::TargetStepKind;
use super::tree::{NodeId, Rows, Tree};
use crate::ids::PrefixAutomaton;

/// What one target pass makes available to the verifier.
pub(super) struct Scored<'a> {
    pub auto: &'a PrefixAutomaton,
    /// Beam size K.
    pub k: usize,
    /// The target's log-probs, one row per scored node.
    pub rows: &'a Rows,
    /// The row of each node the pass scored (the round-start beams and every drafted token).
    pub row_of: &'a HashMap<NodeId, usize>,
    pub draft: &'a DraftOut,
}

/// The verifier's decision, before it becomes a trace.
pub(super) struct Verified {
    pub accepted: usize,
    pub kind: TargetStepKind,
    /// The K beams the round ends with, best first.
    pub beams: Vec<Beam>,
    /// Depths the verifier examined (1-based, inclusive).
    pub examined: usize,
    /// Drafted nodes (by flat index) in the target's top-K at their depth (strict) or that
    /// passed u <= p/q (relaxed).
    pub in_topk: Vec<bool>,
    /// Nodes that were verified beams at some depth of this round.
    pub kept: HashSet<NodeId>,
    /// For each of `beams`, whether it was drawn from the residual (relaxed mode).
    pub resampled: Vec<bool>,
}

impl Scored<'_> {
    /// The target's extensions of `cur`, scored with the tree pass's rows, and the parents'
    /// token paths (the tie-break key).
    fn target_cands(&self, tree: &Tree, cur: &[Beam]) -> (Vec<Cand>, Vec<Vec<u32>>) {
        let paths: Vec<Vec<u32>> = cur.iter().map(|b| tree.path(b.node)).collect();
        let cands = extensions(tree, self.auto, cur, |i| {
            self.rows.row(self.row_of[&cur[i].node])
        });
        (cands, paths)
    }

    /// (parent node, token) -> drafted node.
    fn drafted_lookup(&self, tree: &Tree) -> HashMap<(NodeId, u32), NodeId> {
        self.draft
            .flat()
            .map(|d| {
                let n = tree.node(d.node);
                let parent = n.parent.expect("drafted nodes have parents");
                ((parent, n.token), d.node)
            })
            .collect()
    }

    /// Drafted node -> its index in the flattened tree.
    fn flat_index(&self) -> HashMap<NodeId, usize> {
        self.draft
            .flat()
            .enumerate()
            .map(|(i, d)| (d.node, i))
            .collect()
    }
}

/// Turns chosen candidates into beams, reusing drafted nodes where they exist.
fn materialise(
    tree: &mut Tree,
    cur: &[Beam],
    chosen: &[Cand],
    drafted: &HashMap<(NodeId, u32), NodeId>,
) -> Vec<Beam> {
    chosen
        .iter()
        .map(|c| {
            let parent = cur[c.parent].node;
            let node = match drafted.get(&(parent, c.token)) {
                Some(&n) => n,
                None => tree.push(parent, c.token, c.state),
            };
            Beam {
                node,
                score: c.score,
            }
        })
        .collect()
}

fn end_kind(g: usize) -> TargetStepKind {
    if g == 0 {
        TargetStepKind::Plain
    } else {
        TargetStepKind::Bonus
    }
}

/// Strict top-K verification (see the module documentation).
pub(super) fn strict(s: &Scored, tree: &mut Tree, beams: &[Beam]) -> Verified {
    let lookup = s.drafted_lookup(tree);
    let flat_index = s.flat_index();
    let mut in_topk = vec![false; flat_index.len()];
    let mut kept = HashSet::new();
    let mut cur = beams.to_vec();
    let g = s.draft.levels.len();
    for d in 1..=g {
        let (cands, paths) = s.target_cands(tree, &cur);
        let top = top_k(cands, s.k, &paths);
        let mut all = true;
        for c in &top {
            match lookup.get(&(cur[c.parent].node, c.token)) {
                Some(n) => in_topk[flat_index[n]] = true,
                None => all = false,
            }
        }
        let next = materialise(tree, &cur, &top, &lookup);
        kept.extend(next.iter().map(|b| b.node));
        if !all {
            return Verified {
                accepted: d - 1,
                kind: TargetStepKind::Correction,
                resampled: vec![false; next.len()],
                beams: next,
                examined: d,
                in_topk,
                kept,
            };
        }
        cur = next;
    }
    let (cands, paths) = s.target_cands(tree, &cur);
    let top = top_k(cands, s.k, &paths);
    let next = materialise(tree, &cur, &top, &lookup);
    Verified {
        accepted: g,
        kind: end_kind(g),
        resampled: vec![false; next.len()],
        beams: next,
        examined: g,
        in_topk,
        kept,
    }
}

/// Relaxed sampling verification. At depth d, p and q are the target's and the draft's
/// sequence-level distributions over the extensions (parent, token) of the K kept beams:
/// softmax over parents' scores + next-token log-probs. Each drafted beam whose parent was
/// kept is accepted if u <= p/q; with at least K accepted, K of them are kept at random and
/// the next depth is examined; otherwise the missing beams are drawn without replacement
/// from norm(max(0, p - q)) (falling back to p) and the round ends. With N = K = 1 this is
/// exactly speculative sampling.
pub(super) fn relaxed<R: Rng>(
    s: &Scored,
    tree: &mut Tree,
    beams: &[Beam],
    rng: &mut R,
) -> Verified {
    let k = s.k;
    let lookup = s.drafted_lookup(tree);
    let flat_index = s.flat_index();
    let mut in_topk = vec![false; flat_index.len()];
    let mut kept = HashSet::new();
    // The draft's score and log-prob row (level, index) for every node it expanded.
    let mut draft_info: HashMap<NodeId, (f32, usize, usize)> = HashMap::new();
    for (i, b) in beams.iter().enumerate() {
        draft_info.insert(b.node, (b.score, 0, i));
    }
    for (lvl, level) in s.draft.levels.iter().enumerate() {
        for (i, dn) in level.iter().enumerate() {
            draft_info.insert(dn.node, (dn.draft_score, lvl + 1, i));
        }
    }
    let mut cur = beams.to_vec();
    let g = s.draft.levels.len();
    for d in 1..=g {
        let (cands, _) = s.target_cands(tree, &cur);
        let log_zp = log_sum_exp(cands.iter().map(|c| c.score));
        // Draft logits over the same extensions.
        let qlogit: Vec<f32> = cands
            .iter()
            .map(|c| {
                let (score, lvl, i) = draft_info[&cur[c.parent].node];
                score + s.draft.rows[lvl].row(i)[c.token as usize]
            })
            .collect();
        let log_zq = log_sum_exp(qlogit.iter().copied());
        let p: Vec<f64> = cands
            .iter()
            .map(|c| ((c.score - log_zp) as f64).exp())
            .collect();
        let q: Vec<f64> = qlogit
            .iter()
            .map(|&x| ((x - log_zq) as f64).exp())
            .collect();
        let mut accepted = Vec::new();
        for (ci, c) in cands.iter().enumerate() {
            if let Some(n) = lookup.get(&(cur[c.parent].node, c.token)) {
                let u: f64 = rng.random();
                if u * q[ci] <= p[ci] {
                    accepted.push(ci);
                    in_topk[flat_index[n]] = true;
                }
            }
        }
        // Fewer valid continuations than K: all of them accepted is a full step.
        if accepted.len() >= k.min(cands.len()) {
            accepted.shuffle(rng);
            accepted.truncate(k);
            let chosen: Vec<Cand> = accepted.iter().map(|&i| cands[i]).collect();
            let mut next = materialise(tree, &cur, &chosen, &lookup);
            sort_beams(tree, &mut next);
            kept.extend(next.iter().map(|b| b.node));
            cur = next;
            continue;
        }
        let mut taken = vec![false; cands.len()];
        for &i in &accepted {
            taken[i] = true;
        }
        let residual: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a - b).max(0.0)).collect();
        let want = k.min(cands.len()) - accepted.len();
        let extra = draw_without_replacement(&residual, &p, &mut taken, want, rng);
        let chosen: Vec<Cand> = accepted.iter().chain(&extra).map(|&i| cands[i]).collect();
        let next = materialise(tree, &cur, &chosen, &lookup);
        let n_acc = accepted.len();
        kept.extend(next.iter().map(|b| b.node));
        let mut flagged: Vec<(Beam, bool)> = next
            .into_iter()
            .enumerate()
            .map(|(i, b)| (b, i >= n_acc))
            .collect();
        flagged.sort_by(|a, b| {
            beam_order(
                (a.0.score, tree.path(a.0.node)),
                (b.0.score, tree.path(b.0.node)),
            )
        });
        return Verified {
            accepted: d - 1,
            kind: TargetStepKind::Resampled,
            resampled: flagged.iter().map(|f| f.1).collect(),
            beams: flagged.into_iter().map(|f| f.0).collect(),
            examined: d,
            in_topk,
            kept,
        };
    }
    // Every drafted step accepted: the target samples the bonus step itself.
    let (cands, paths) = s.target_cands(tree, &cur);
    let chosen = sample_k(cands, k, &paths, rng);
    let next = materialise(tree, &cur, &chosen, &lookup);
    Verified {
        accepted: g,
        kind: end_kind(g),
        resampled: vec![false; next.len()],
        beams: next,
        examined: g,
        in_topk,
        kept,
    }
}

/// Sorts tree beams best first.
pub(super) fn sort_beams(tree: &Tree, beams: &mut [Beam]) {
    beams.sort_by(|a, b| beam_order((a.score, tree.path(a.node)), (b.score, tree.path(b.node))));
}
