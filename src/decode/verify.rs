//! Verification: after one target pass has scored every drafted token, decide how many drafted
//! steps are accepted and which K beams the round ends with, and record why.
//!
//! - [`strict`] (top-K verification, lossless): depth d is accepted only if the target's exact
//!   top-K extensions of the K beams verified at depth d - 1 are all among the drafted beams at
//!   depth d. The first depth that fails is replaced by the target's own top-K (a *correction*);
//!   if every drafted depth passes, the same pass yields the next depth for free (a *bonus*).
//!   Either way the beams are exactly those the target's own beam search would hold. At every
//!   examined depth the verifier also ranks the target's top-K in the draft's own best-first
//!   ordering of all its candidates there: the worst rank is the smallest N that accepts the
//!   depth ([`DepthCheck::n_needed`]), and the beams the draft did not draft are *missed*
//!   ([`DepthCheck::missed`]), each with its draft rank, q and p. This uses the draft's
//!   log-probabilities already computed while drafting: no extra pass.
//! - [`relaxed`] (sampling verification): each drafted beam x whose parent was kept is accepted
//!   by the test if u <= p(x)/q(x), with p and q the target's and the draft's sequence-level
//!   distributions over the extensions; u and p/q are recorded on the beam
//!   ([`RelaxedTest`]). With at least K passing, K of them are kept at random (the others are
//!   *passed, not kept*) and the next depth is examined; otherwise every beam that passed is
//!   kept, the missing ones are drawn from the residual norm(max(0, p - q)) and the round ends
//!   (a *resampled* step, recorded with the residual in [`DepthCheck::residual`]).
//!
//! A forced depth (one allowed token after every prefix) is accepted in both modes without a
//! test: the verified beams have at most K extensions there, all drafted, and keeping all of them
//! is what the target's own search (and any sample of K without replacement) does.

use std::collections::{HashMap, HashSet};

use rand::seq::SliceRandom;
use rand::Rng;

use super::draft::DraftOut;
use super::ranking::beam_order;
use super::select::{draw_without_replacement, extensions, log_sum_exp, ranks, sample_k, top_k};
use super::select::{Beam, Cand};
use super::trace::{
    DepthCheck, Draw, MissedBeam, RelaxedTest, Residual, ResidualEntry, TargetStepKind,
};
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
    /// Drafted nodes (by flat index) in the target's top-K at their depth (strict).
    pub in_topk: Vec<bool>,
    /// Drafted nodes (by flat index): the relaxed test each examined one was put to.
    pub tests: Vec<Option<RelaxedTest>>,
    /// Nodes that were verified beams at some depth of this round.
    pub kept: HashSet<NodeId>,
    /// For each of `beams`, whether it was drawn from the residual (relaxed mode), and how.
    pub resampled: Vec<bool>,
    pub draws: Vec<Option<Draw>>,
    /// One per examined depth.
    pub checks: Vec<DepthCheck>,
}

/// The draft's candidates at one depth: every allowed child of the parents it expanded there,
/// scored parent draft score + log q, grouped by parent.
struct DraftCands {
    cands: Vec<Cand>,
    paths: Vec<Vec<u32>>,
    /// Parent node -> (its index, the range of its children in `cands`).
    parent: HashMap<NodeId, (usize, usize, usize)>,
}

impl DraftCands {
    /// The candidate extending `parent` with `token`.
    fn find(&self, parent: NodeId, token: u32) -> Option<usize> {
        let &(_, lo, hi) = self.parent.get(&parent)?;
        // Children come in the automaton's order, sorted by token.
        self.cands[lo..hi]
            .binary_search_by_key(&token, |c| c.token)
            .ok()
            .map(|i| lo + i)
    }
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

    /// The draft's candidates at depth `d` (1-based) of a round that started from `beams`.
    fn draft_cands(&self, tree: &Tree, beams: &[Beam], d: usize) -> DraftCands {
        let parents: Vec<Beam> = if d == 1 {
            beams.to_vec()
        } else {
            self.draft.levels[d - 2]
                .iter()
                .map(|x| Beam {
                    node: x.node,
                    score: x.draft_score,
                })
                .collect()
        };
        let rows = self.draft.rows[d - 1]
            .as_ref()
            .expect("a free depth has the draft's rows");
        let cands = extensions(tree, self.auto, &parents, |i| rows.row(i));
        let mut parent = HashMap::with_capacity(parents.len());
        let mut lo = 0;
        for (i, b) in parents.iter().enumerate() {
            let hi = lo + cands[lo..].iter().take_while(|c| c.parent == i).count();
            parent.insert(b.node, (i, lo, hi));
            lo = hi;
        }
        let paths = parents.iter().map(|b| tree.path(b.node)).collect();
        DraftCands {
            cands,
            paths,
            parent,
        }
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
    let mut checks = Vec::new();
    let mut cur = beams.to_vec();
    let g = s.draft.levels.len();
    let done = |accepted, kind, next: Vec<Beam>, examined, in_topk, kept, checks| Verified {
        accepted,
        kind,
        resampled: vec![false; next.len()],
        draws: vec![None; next.len()],
        beams: next,
        examined,
        in_topk,
        tests: vec![None; flat_index.len()],
        kept,
        checks,
    };
    for d in 1..=g {
        let (cands, paths) = s.target_cands(tree, &cur);
        let top = top_k(cands, s.k, &paths);
        let drafted: Vec<bool> = top
            .iter()
            .map(|c| match lookup.get(&(cur[c.parent].node, c.token)) {
                Some(n) => {
                    in_topk[flat_index[n]] = true;
                    true
                }
                None => false,
            })
            .collect();
        let all = drafted.iter().all(|&x| x);
        checks.push(if s.draft.forced[d - 1] {
            forced_check(s, tree, &cur, d, top.len(), true)
        } else {
            strict_check(s, tree, beams, &cur, &top, &drafted, d)
        });
        let next = materialise(tree, &cur, &top, &lookup);
        kept.extend(next.iter().map(|b| b.node));
        if !all {
            return done(
                d - 1,
                TargetStepKind::Correction,
                next,
                d,
                in_topk,
                kept,
                checks,
            );
        }
        cur = next;
    }
    let (cands, paths) = s.target_cands(tree, &cur);
    let top = top_k(cands, s.k, &paths);
    let next = materialise(tree, &cur, &top, &lookup);
    done(g, end_kind(g), next, g, in_topk, kept, checks)
}

/// Where the target's top-K at depth `d` ranks in the draft's ordering of its candidates there:
/// the smallest accepting N, and the beams the draft missed.
fn strict_check(
    s: &Scored,
    tree: &Tree,
    beams: &[Beam],
    cur: &[Beam],
    top: &[Cand],
    drafted: &[bool],
    d: usize,
) -> DepthCheck {
    let dc = s.draft_cands(tree, beams, d);
    // The parents of the target's top-K are the verified beams, which the draft expanded.
    let found: Vec<Option<usize>> = top
        .iter()
        .map(|c| dc.find(cur[c.parent].node, c.token))
        .collect();
    let idx: Vec<usize> = found.iter().flatten().copied().collect();
    let r = ranks(&dc.cands, &dc.paths, &idx);
    let n_needed = (idx.len() == top.len()).then(|| r.iter().copied().max().unwrap_or(0));
    let mut missed = Vec::new();
    let mut ri = r.iter();
    for (i, ((c, f), &was_drafted)) in top.iter().zip(&found).zip(drafted).enumerate() {
        let Some(ci) = f else { continue };
        let rank = *ri.next().expect("one rank per found candidate");
        if !was_drafted {
            let dcand = &dc.cands[*ci];
            let mut tokens = tree.path(cur[c.parent].node);
            tokens.push(c.token);
            missed.push(MissedBeam {
                tokens,
                target_rank: i + 1,
                draft_rank: rank,
                q: dcand.logp.exp(),
                p: c.logp.exp(),
                target_score: c.score,
                draft_score: dcand.score,
            });
        }
    }
    DepthCheck {
        depth: d,
        accepted: drafted.iter().all(|&x| x),
        candidates: dc.cands.len(),
        examined: examined_at(s, tree, cur, d),
        n_needed,
        missed,
        passed: 0,
        residual: None,
        forced: false,
    }
}

/// The check of a forced depth: every extension of the kept beams is drafted and kept. In
/// strict mode any width N accepts it: the smallest is the number of beams.
fn forced_check(
    s: &Scored,
    tree: &Tree,
    cur: &[Beam],
    d: usize,
    kept: usize,
    strict: bool,
) -> DepthCheck {
    let examined = examined_at(s, tree, cur, d);
    DepthCheck {
        depth: d,
        accepted: true,
        candidates: kept,
        examined,
        n_needed: strict.then_some(kept),
        missed: Vec::new(),
        passed: examined,
        residual: None,
        forced: true,
    }
}

/// Drafted beams at depth `d` whose parent is one of `cur` (the beams kept at d - 1).
fn examined_at(s: &Scored, tree: &Tree, cur: &[Beam], d: usize) -> usize {
    let parents: HashSet<NodeId> = cur.iter().map(|b| b.node).collect();
    s.draft.levels[d - 1]
        .iter()
        .filter(|x| {
            tree.node(x.node)
                .parent
                .is_some_and(|p| parents.contains(&p))
        })
        .count()
}

/// Relaxed sampling verification. At depth d, p and q are the target's and the draft's
/// sequence-level distributions over the extensions (parent, token) of the K kept beams:
/// softmax over parents' scores + next-token log-probs. Each drafted beam whose parent was
/// kept is accepted by the test if u <= p/q; with at least K accepted, K of them are kept at
/// random and the next depth is examined; otherwise the missing beams are drawn without
/// replacement from norm(max(0, p - q)) (falling back to p) and the round ends. With N = K = 1
/// this is exactly speculative sampling.
pub(super) fn relaxed<R: Rng>(
    s: &Scored,
    tree: &mut Tree,
    beams: &[Beam],
    rng: &mut R,
) -> Verified {
    let k = s.k;
    let lookup = s.drafted_lookup(tree);
    let flat_index = s.flat_index();
    let mut tests: Vec<Option<RelaxedTest>> = vec![None; flat_index.len()];
    let mut kept = HashSet::new();
    let mut checks = Vec::new();
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
        if s.draft.forced[d - 1] {
            // Every extension is kept: no test (see the module documentation).
            let (cands, _) = s.target_cands(tree, &cur);
            checks.push(forced_check(s, tree, &cur, d, cands.len(), false));
            let mut next = materialise(tree, &cur, &cands, &lookup);
            sort_beams(tree, &mut next);
            kept.extend(next.iter().map(|b| b.node));
            cur = next;
            continue;
        }
        let (cands, _) = s.target_cands(tree, &cur);
        let log_zp = log_sum_exp(cands.iter().map(|c| c.score));
        // Draft logits over the same extensions.
        let qlogit: Vec<f32> = cands
            .iter()
            .map(|c| {
                let (score, lvl, i) = draft_info[&cur[c.parent].node];
                let rows = s.draft.rows[lvl]
                    .as_ref()
                    .expect("a free depth has the draft's rows");
                score + rows.row(i)[c.token as usize]
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
        let mut examined = 0;
        for (ci, c) in cands.iter().enumerate() {
            if let Some(n) = lookup.get(&(cur[c.parent].node, c.token)) {
                let test = RelaxedTest::new(rng.random(), p[ci], q[ci]);
                tests[flat_index[n]] = Some(test);
                examined += 1;
                if test.passed() {
                    accepted.push(ci);
                }
            }
        }
        let mut check = DepthCheck {
            depth: d,
            accepted: false,
            candidates: cands.len(),
            examined,
            n_needed: None,
            missed: Vec::new(),
            passed: accepted.len(),
            residual: None,
            forced: false,
        };
        // Fewer valid continuations than K: all of them accepted is a full step.
        if accepted.len() >= k.min(cands.len()) {
            accepted.shuffle(rng);
            accepted.truncate(k);
            let chosen: Vec<Cand> = accepted.iter().map(|&i| cands[i]).collect();
            let mut next = materialise(tree, &cur, &chosen, &lookup);
            sort_beams(tree, &mut next);
            kept.extend(next.iter().map(|b| b.node));
            check.accepted = true;
            checks.push(check);
            cur = next;
            continue;
        }
        let mut taken = vec![false; cands.len()];
        for &i in &accepted {
            taken[i] = true;
        }
        let residual: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a - b).max(0.0)).collect();
        let mass: f64 = residual.iter().sum();
        let want = k.min(cands.len()) - accepted.len();
        let extra = draw_without_replacement(&residual, &p, &mut taken, want, rng);
        check.residual = Some(residual_summary(
            tree, &cur, &cands, &p, &q, &residual, &extra,
        ));
        checks.push(check);
        let draw_of = |i: usize, fallback: bool| Draw {
            prob: if fallback {
                p[i]
            } else {
                residual[i] / mass.max(f64::MIN_POSITIVE)
            },
            fallback,
        };
        let chosen: Vec<(Cand, Option<Draw>)> = accepted
            .iter()
            .map(|&i| (cands[i], None))
            .chain(extra.iter().map(|&(i, f)| (cands[i], Some(draw_of(i, f)))))
            .collect();
        let just: Vec<Cand> = chosen.iter().map(|c| c.0).collect();
        let next = materialise(tree, &cur, &just, &lookup);
        kept.extend(next.iter().map(|b| b.node));
        let mut flagged: Vec<(Beam, Option<Draw>)> =
            next.into_iter().zip(chosen.iter().map(|c| c.1)).collect();
        flagged.sort_by(|a, b| {
            beam_order(
                (a.0.score, tree.path(a.0.node)),
                (b.0.score, tree.path(b.0.node)),
            )
        });
        return Verified {
            accepted: d - 1,
            kind: TargetStepKind::Resampled,
            resampled: flagged.iter().map(|f| f.1.is_some()).collect(),
            draws: flagged.iter().map(|f| f.1).collect(),
            beams: flagged.into_iter().map(|f| f.0).collect(),
            examined: d,
            in_topk: vec![false; flat_index.len()],
            tests,
            kept,
            checks,
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
        draws: vec![None; next.len()],
        beams: next,
        examined: g,
        in_topk: vec![false; flat_index.len()],
        tests,
        kept,
        checks,
    }
}

/// The residual's mass and largest entries, and whether a draw fell back to p.
fn residual_summary(
    tree: &Tree,
    cur: &[Beam],
    cands: &[Cand],
    p: &[f64],
    q: &[f64],
    residual: &[f64],
    drawn: &[(usize, bool)],
) -> Residual {
    let mass: f64 = residual.iter().sum();
    let mut order: Vec<usize> = (0..cands.len()).filter(|&i| residual[i] > 0.0).collect();
    order.sort_by(|&a, &b| residual[b].total_cmp(&residual[a]));
    order.truncate(Residual::TOP);
    let top = order
        .into_iter()
        .map(|i| {
            let mut tokens = tree.path(cur[cands[i].parent].node);
            tokens.push(cands[i].token);
            ResidualEntry {
                tokens,
                p: p[i],
                q: q[i],
                r: residual[i] / mass,
            }
        })
        .collect();
    Residual {
        mass,
        drawn: drawn.len(),
        fallback: drawn.iter().any(|d| d.1),
        top,
    }
}

/// Sorts tree beams best first.
pub(super) fn sort_beams(tree: &Tree, beams: &mut [Beam]) {
    beams.sort_by(|a, b| beam_order((a.score, tree.path(a.node)), (b.score, tree.path(b.node))));
}
