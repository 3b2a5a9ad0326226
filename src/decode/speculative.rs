//! The speculative round loop (SPEC section 4).
//!
//! A round: the draft runs beam search of width N for g = min(gamma, remaining - 1) steps from
//! the verified beams; the target scores the verified beams' pending tokens and every drafted
//! token in one tree-masked pass (on the first round that pass also prefills the prompt); the
//! verifier walks the depths, accepting while the drafted beams cover what the target would have
//! chosen, and the target's own step at the first unaccepted depth (or the bonus depth g + 1) ends
//! the round, so every round advances at least one step.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::Rng;

use super::select::{
    draw_without_replacement, extensions, log_sum_exp, sample_k, top_k, Beam, Cand,
};
use super::trace::{
    BeamView, DecodeTrace, DraftNode, Mode, PhaseTimes, RoundTrace, TargetStep, TargetStepKind,
    TreeLayout, Verdict,
};
use super::tree::{ModelState, NodeId, Rows, Tree};
use crate::ids::{PrefixAutomaton, ID_LEN};
use crate::model::Llm;
use crate::{Error, Result};

/// Draft width, beam size, draft depth and verification rule.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpecParams {
    pub mode: Mode,
    /// Drafted beams per depth (N >= K).
    pub n: usize,
    /// Beam size: the number of recommendations.
    pub k: usize,
    /// Drafted steps per round at most.
    pub gamma: usize,
    /// Adaptive draft width (strict mode): at each drafted depth keep the draft's best beams
    /// only until they hold this share of its probability mass over the candidates (at least K,
    /// at most N). A confident draft then sends a smaller tree to the target; the verification
    /// rule, and so the output, is unchanged. `None` drafts N beams at every depth.
    #[serde(default)]
    pub draft_mass: Option<f32>,
}

impl SpecParams {
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(Error::invalid("--k", "K must be at least 1"));
        }
        if self.n < self.k {
            return Err(Error::invalid(
                "--n",
                format!(
                    "N = {} drafted beams cannot cover K = {} (N must be >= K)",
                    self.n, self.k
                ),
            ));
        }
        if self.gamma == 0 {
            return Err(Error::invalid("--gamma", "gamma must be at least 1"));
        }
        if let Some(m) = self.draft_mass {
            if self.mode == Mode::Relaxed {
                return Err(Error::invalid(
                    "--draft-mass",
                    "adaptive width applies to strict mode (relaxed drafts are sampled)",
                ));
            }
            if !(m > 0.0 && m <= 1.0) {
                return Err(Error::invalid(
                    "--draft-mass",
                    format!("{m} is not a probability mass in (0, 1]"),
                ));
            }
        }
        Ok(())
    }
}

/// Fails unless the two models share one vocabulary (token ids must mean the same thing).
pub fn check_same_vocab(target: &Llm, draft: &Llm) -> Result<()> {
    if target.vocab != draft.vocab {
        let path = draft
            .dir
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from(&draft.name));
        return Err(Error::model(
            path,
            format!(
                "draft vocabulary ({} tokens) differs from the target's ({} tokens)",
                draft.vocab.len(),
                target.vocab.len()
            ),
        ));
    }
    Ok(())
}

/// Decodes one prompt speculatively and returns the full trace; `trace.beams` is the final list.
pub fn speculative<R: Rng>(
    target: &Llm,
    draft: &Llm,
    auto: &PrefixAutomaton,
    prompt: &[u32],
    params: &SpecParams,
    rng: &mut R,
) -> Result<DecodeTrace> {
    params.validate()?;
    check_same_vocab(target, draft)?;
    super::beam::check_prompt(prompt, target)?;
    if auto.children(PrefixAutomaton::ROOT).is_empty() {
        return Err(Error::invalid(
            "constraint",
            "no valid identifier to generate",
        ));
    }
    let (tree, root) = Tree::with_prompt(prompt);
    let mut run = Run {
        target,
        draft,
        auto,
        params: *params,
        tree,
        ts: ModelState::new(target),
        ds: ModelState::new(draft),
        rng,
    };
    let mut beams = vec![Beam {
        node: root,
        score: 0.0,
    }];
    let mut depth = 0;
    let mut rounds = Vec::new();
    while depth < ID_LEN {
        let (trace, next) = run.round(rounds.len(), depth, &beams)?;
        depth = trace.target_step.depth;
        rounds.push(trace);
        beams = next;
    }
    let mut finals: Vec<BeamView> = beams
        .iter()
        .map(|b| BeamView {
            tokens: run.tree.path(b.node),
            score: b.score,
        })
        .collect();
    sort_views(&mut finals);
    Ok(DecodeTrace {
        mode: params.mode,
        n: params.n,
        k: params.k,
        gamma: params.gamma,
        rounds,
        beams: finals,
    })
}

/// Best first, ties by token sequence (the order beam search returns).
pub fn sort_views(v: &mut [BeamView]) {
    v.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.tokens.cmp(&b.tokens))
    });
}

struct Run<'a, R> {
    target: &'a Llm,
    draft: &'a Llm,
    auto: &'a PrefixAutomaton,
    params: SpecParams,
    tree: Tree,
    ts: ModelState,
    ds: ModelState,
    rng: &'a mut R,
}

/// A drafted token during a round.
struct Drafted {
    node: NodeId,
    /// Index in the previous level (None at depth 1).
    parent: Option<usize>,
    root: usize,
    logq: f32,
    draft_score: f32,
}

/// What the draft produced: nodes per depth, and its log-prob rows at each depth's parents.
struct DraftOut {
    levels: Vec<Vec<Drafted>>,
    /// rows[d] holds the draft's log-probs at the parents expanded at depth d + 1.
    rows: Vec<Rows>,
}

/// Verification result before it is turned into a trace.
struct Verified {
    accepted: usize,
    kind: TargetStepKind,
    beams: Vec<Beam>,
    /// Depths the verifier examined (1-based, inclusive).
    examined: usize,
    /// Drafted nodes (by flat index) in the target's top-K at their depth (strict) or that
    /// passed u <= p/q (relaxed).
    in_topk: Vec<bool>,
    /// Nodes that were verified beams at some depth of this round.
    kept: HashSet<NodeId>,
    /// For each of `beams`, whether it was drawn from the residual (relaxed mode).
    resampled: Vec<bool>,
}

impl<R: Rng> Run<'_, R> {
    fn round(
        &mut self,
        index: usize,
        depth: usize,
        beams: &[Beam],
    ) -> Result<(RoundTrace, Vec<Beam>)> {
        let start = Instant::now();
        let g = self.params.gamma.min(ID_LEN - depth - 1);
        let (draft, draft_ms, draft_select_ms) = self.draft(beams, g)?;
        let flat: Vec<&Drafted> = draft.levels.iter().flatten().collect();
        let flat_nodes: Vec<NodeId> = flat.iter().map(|d| d.node).collect();

        // One target pass: pending tokens of the verified beams, then every drafted token.
        let t_verify = Instant::now();
        let beam_nodes: Vec<NodeId> = beams.iter().map(|b| b.node).collect();
        let mut fed = self.ts.missing(&self.tree, &beam_nodes);
        let lead_len = fed.len();
        fed.extend_from_slice(&flat_nodes);
        let want: Vec<NodeId> = beam_nodes.iter().chain(&flat_nodes).copied().collect();
        let (logp, layout) = self.ts.feed(self.target, &self.tree, &fed, &want)?;
        let prows = Rows::from_tensor(&logp)?;
        let verify_ms = ms(t_verify);

        let target_row: HashMap<NodeId, usize> =
            want.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let t_select = Instant::now();
        let verified = match self.params.mode {
            Mode::Strict => self.verify_strict(beams, &draft, &prows, &target_row),
            Mode::Relaxed => self.verify_relaxed(beams, &draft, &prows, &target_row),
        };
        let select_ms = draft_select_ms + ms(t_select);
        // Compact both caches to the surviving beams, unless these beams are final.
        let t_cache = Instant::now();
        if depth + verified.accepted + 1 < ID_LEN {
            let new_nodes: Vec<NodeId> = verified.beams.iter().map(|b| b.node).collect();
            self.ts.retain_ancestors_of(&self.tree, &new_nodes)?;
            self.ds.retain_ancestors_of(&self.tree, &new_nodes)?;
        }
        let cache_ms = ms(t_cache);

        let trace = self.trace(
            index,
            depth,
            beams,
            &draft,
            &prows,
            &target_row,
            &verified,
            &layout,
            lead_len,
        );
        let total = ms(start);
        let times = PhaseTimes {
            draft_ms,
            verify_ms,
            other_ms: (total - draft_ms - verify_ms).max(0.0),
            select_ms,
            cache_ms,
        };
        let trace = RoundTrace {
            times,
            target_passes: 1,
            draft_passes: g,
            ..trace
        };
        Ok((trace, verified.beams))
    }

    /// Draft beam search of width N for g steps. Scores start from the verified beams' target
    /// scores, so at depth 1 the draft ranks exactly what the target ranks, up to the
    /// difference between the two models' next-token distributions.
    fn draft(&mut self, beams: &[Beam], g: usize) -> Result<(DraftOut, f64, f64)> {
        let mut out = DraftOut {
            levels: Vec::new(),
            rows: Vec::new(),
        };
        let mut pass_ms = 0.0;
        let mut select_ms = 0.0;
        let mut parents: Vec<Beam> = beams.to_vec();
        let mut parent_root: Vec<usize> = (0..beams.len()).collect();
        for d in 0..g {
            let nodes: Vec<NodeId> = parents.iter().map(|b| b.node).collect();
            let fed = self.ds.missing(&self.tree, &nodes);
            let t = Instant::now();
            let (lq, _) = self.ds.feed(self.draft, &self.tree, &fed, &nodes)?;
            let rows = Rows::from_tensor(&lq)?;
            pass_ms += ms(t);
            let t_select = Instant::now();
            let paths: Vec<Vec<u32>> = nodes.iter().map(|&n| self.tree.path(n)).collect();
            let cands = extensions(&self.tree, self.auto, &parents, |i| rows.row(i));
            let chosen = match self.params.mode {
                Mode::Strict => {
                    let mass = self.params.draft_mass;
                    let log_z = mass.map(|_| log_sum_exp(cands.iter().map(|c| c.score)));
                    let mut top = top_k(cands, self.params.n, &paths);
                    if let (Some(m), Some(z)) = (mass, log_z) {
                        top.truncate(mass_prefix(&top, z, m, self.params.k));
                    }
                    top
                }
                Mode::Relaxed => sample_k(cands, self.params.n, &paths, self.rng),
            };
            let level: Vec<Drafted> = chosen
                .iter()
                .map(|c| Drafted {
                    node: self.tree.push(parents[c.parent].node, c.token, c.state),
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
            select_ms += ms(t_select);
            out.levels.push(level);
            out.rows.push(rows);
        }
        Ok((out, pass_ms, select_ms))
    }

    /// Target extensions of `cur` scored with the tree pass's rows.
    fn target_cands(
        &self,
        cur: &[Beam],
        prows: &Rows,
        target_row: &HashMap<NodeId, usize>,
    ) -> (Vec<Cand>, Vec<Vec<u32>>) {
        let paths: Vec<Vec<u32>> = cur.iter().map(|b| self.tree.path(b.node)).collect();
        let cands = extensions(&self.tree, self.auto, cur, |i| {
            prows.row(target_row[&cur[i].node])
        });
        (cands, paths)
    }

    /// Turns chosen candidates into beams, reusing drafted nodes where they exist.
    fn materialise(
        &mut self,
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
                    None => self.tree.push(parent, c.token, c.state),
                };
                Beam {
                    node,
                    score: c.score,
                }
            })
            .collect()
    }

    fn drafted_lookup(&self, draft: &DraftOut) -> HashMap<(NodeId, u32), NodeId> {
        draft
            .levels
            .iter()
            .flatten()
            .map(|d| {
                let n = self.tree.node(d.node);
                (
                    (n.parent.expect("drafted nodes have parents"), n.token),
                    d.node,
                )
            })
            .collect()
    }

    /// Strict top-K verification: depth d is accepted only if the target's exact top-K
    /// extensions of its verified beams are all among the drafted beams at depth d.
    fn verify_strict(
        &mut self,
        beams: &[Beam],
        draft: &DraftOut,
        prows: &Rows,
        target_row: &HashMap<NodeId, usize>,
    ) -> Verified {
        let k = self.params.k;
        let lookup = self.drafted_lookup(draft);
        let flat_index: HashMap<NodeId, usize> = draft
            .levels
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, d)| (d.node, i))
            .collect();
        let mut in_topk = vec![false; flat_index.len()];
        let mut kept = HashSet::new();
        let mut cur = beams.to_vec();
        let g = draft.levels.len();
        for d in 1..=g {
            let (cands, paths) = self.target_cands(&cur, prows, target_row);
            let top = top_k(cands, k, &paths);
            let mut all = true;
            for c in &top {
                match lookup.get(&(cur[c.parent].node, c.token)) {
                    Some(n) => in_topk[flat_index[n]] = true,
                    None => all = false,
                }
            }
            let next = self.materialise(&cur, &top, &lookup);
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
        let (cands, paths) = self.target_cands(&cur, prows, target_row);
        let top = top_k(cands, k, &paths);
        let next = self.materialise(&cur, &top, &lookup);
        Verified {
            accepted: g,
            kind: if g == 0 {
                TargetStepKind::Plain
            } else {
                TargetStepKind::Bonus
            },
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
    fn verify_relaxed(
        &mut self,
        beams: &[Beam],
        draft: &DraftOut,
        prows: &Rows,
        target_row: &HashMap<NodeId, usize>,
    ) -> Verified {
        let k = self.params.k;
        let lookup = self.drafted_lookup(draft);
        let flat: Vec<&Drafted> = draft.levels.iter().flatten().collect();
        let flat_index: HashMap<NodeId, usize> =
            flat.iter().enumerate().map(|(i, d)| (d.node, i)).collect();
        let mut in_topk = vec![false; flat.len()];
        let mut kept = HashSet::new();
        // The draft's score and log-prob row for every node it expanded.
        let mut draft_info: HashMap<NodeId, (f32, usize, usize)> = HashMap::new();
        for (i, b) in beams.iter().enumerate() {
            draft_info.insert(b.node, (b.score, 0, i));
        }
        for (lvl, level) in draft.levels.iter().enumerate() {
            for (i, dn) in level.iter().enumerate() {
                draft_info.insert(dn.node, (dn.draft_score, lvl + 1, i));
            }
        }
        let mut cur = beams.to_vec();
        let g = draft.levels.len();
        for d in 1..=g {
            let (cands, _) = self.target_cands(&cur, prows, target_row);
            let log_zp = log_sum_exp(cands.iter().map(|c| c.score));
            // Draft logits over the same extensions.
            let qlogit: Vec<f32> = cands
                .iter()
                .map(|c| {
                    let (s, lvl, i) = draft_info[&cur[c.parent].node];
                    s + draft.rows[lvl].row(i)[c.token as usize]
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
                    let u: f64 = self.rng.random();
                    if u * q[ci] <= p[ci] {
                        accepted.push(ci);
                        in_topk[flat_index[n]] = true;
                    }
                }
            }
            // Fewer valid continuations than K: all of them accepted is a full step.
            if accepted.len() >= k.min(cands.len()) {
                accepted.shuffle(self.rng);
                accepted.truncate(k);
                let chosen: Vec<Cand> = accepted.iter().map(|&i| cands[i]).collect();
                let mut next = self.materialise(&cur, &chosen, &lookup);
                sort_beams(&self.tree, &mut next);
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
            let extra = draw_without_replacement(&residual, &p, &mut taken, want, self.rng);
            let chosen: Vec<Cand> = accepted.iter().chain(&extra).map(|&i| cands[i]).collect();
            let next = self.materialise(&cur, &chosen, &lookup);
            let n_acc = accepted.len();
            kept.extend(next.iter().map(|b| b.node));
            let mut flagged: Vec<(Beam, bool)> = next
                .into_iter()
                .enumerate()
                .map(|(i, b)| (b, i >= n_acc))
                .collect();
            flagged.sort_by(|a, b| {
                b.0.score
                    .total_cmp(&a.0.score)
                    .then_with(|| self.tree.path(a.0.node).cmp(&self.tree.path(b.0.node)))
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
        let (cands, paths) = self.target_cands(&cur, prows, target_row);
        let chosen = sample_k(cands, k, &paths, self.rng);
        let next = self.materialise(&cur, &chosen, &lookup);
        Verified {
            accepted: g,
            kind: if g == 0 {
                TargetStepKind::Plain
            } else {
                TargetStepKind::Bonus
            },
            resampled: vec![false; next.len()],
            beams: next,
            examined: g,
            in_topk,
            kept,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn trace(
        &self,
        index: usize,
        depth: usize,
        beams: &[Beam],
        draft: &DraftOut,
        prows: &Rows,
        target_row: &HashMap<NodeId, usize>,
        v: &Verified,
        layout: &super::tree::PassLayout,
        lead_len: usize,
    ) -> RoundTrace {
        let flat: Vec<&Drafted> = draft.levels.iter().flatten().collect();
        let mut flat_of: HashMap<NodeId, usize> = HashMap::new();
        let mut target_score: HashMap<NodeId, f32> =
            beams.iter().map(|b| (b.node, b.score)).collect();
        let mut nodes = Vec::with_capacity(flat.len());
        for (i, d) in flat.iter().enumerate() {
            flat_of.insert(d.node, i);
            let n = self.tree.node(d.node);
            let parent = n.parent.expect("drafted node has a parent");
            let prow = prows.row(target_row[&parent]);
            let lp = prow[n.token as usize];
            let ts = target_score.get(&parent).map(|s| s + lp);
            if let Some(s) = ts {
                target_score.insert(d.node, s);
            }
            let depth_in_round = n.depth - depth;
            // Unexamined: beyond the depth that ended the round, or under a parent not kept.
            let orphan = depth_in_round > 1 && !v.kept.contains(&parent);
            let verdict = if depth_in_round > v.examined || orphan {
                Verdict::Pending
            } else if v.kept.contains(&d.node) {
                Verdict::Accepted
            } else {
                Verdict::Rejected
            };
            nodes.push(DraftNode {
                depth: depth_in_round,
                parent: d.parent.map(|p| {
                    let prev: usize = draft.levels[..depth_in_round - 2]
                        .iter()
                        .map(|l| l.len())
                        .sum();
                    prev + p
                }),
                root: d.root,
                token: n.token,
                q: d.logq.exp(),
                p: Some(lp.exp()),
                draft_score: d.draft_score,
                target_score: ts,
                in_target_topk: v.in_topk[i],
                verdict,
            });
        }
        let mask_rows = (lead_len..layout.fed.len())
            .map(|j| {
                layout.visible_fed[j]
                    .iter()
                    .filter(|&&c| c as usize >= lead_len)
                    .map(|&c| c - lead_len as u32)
                    .collect()
            })
            .collect();
        let tree = TreeLayout {
            context_len: layout.context_len,
            lead_len,
            positions: layout.positions[lead_len..].to_vec(),
            mask_rows,
        };
        let step_depth = depth + v.accepted + 1;
        let target_step = TargetStep {
            depth: step_depth,
            kind: v.kind,
            beams: v
                .beams
                .iter()
                .map(|b| BeamView {
                    tokens: self.tree.path(b.node),
                    score: b.score,
                })
                .collect(),
            drafted_node: v
                .beams
                .iter()
                .map(|b| flat_of.get(&b.node).copied())
                .collect(),
            resampled: v.resampled.clone(),
        };
        RoundTrace {
            round: index,
            start_depth: depth,
            roots: beams
                .iter()
                .map(|b| BeamView {
                    tokens: self.tree.path(b.node),
                    score: b.score,
                })
                .collect(),
            drafted: draft.levels.len(),
            nodes,
            tree,
            accepted: v.accepted,
            target_step,
            times: PhaseTimes::default(),
            target_passes: 1,
            draft_passes: draft.levels.len(),
        }
    }
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

fn sort_beams(tree: &Tree, beams: &mut [Beam]) {
    beams.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| tree.path(a.node).cmp(&tree.path(b.node)))
    });
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
