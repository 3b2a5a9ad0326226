//! The speculative round loop.
//!
//! A round: the draft runs beam search of width N for up to gamma steps from the verified beams,
//! stopping before the last depth and taking forced depths (a format's fixed tokens) for free
//! ([`super::draft::drafted_levels`]); the target scores the verified beams' pending tokens
//! and every drafted token in one tree-masked pass (on the first round that pass also prefills
//! the prompt); the verifier ([`super::verify`]) walks the depths, accepting while the drafted
//! beams cover what the target would have chosen, and the target's own step at the first
//! unaccepted depth (or the bonus depth g + 1) ends the round, so every round advances at least
//! one step. Each round is recorded as a [`RoundTrace`], with what the verifier found at every
//! depth it examined (why a depth was rejected, the smallest N that would have accepted it, the
//! relaxed test of every examined beam and the residual a resampled step drew from).

use std::collections::HashMap;
use std::time::Instant;

use rand::Rng;

use super::draft::{draft, drafted_levels, ms, DraftOut, Drafted};
use super::params::{DecodeParams, Mode};
use super::ranking::sort_views;
use super::select::Beam;
use super::trace::{
    BeamView, DecodeTrace, DraftNode, PhaseTimes, RoundTrace, TargetStep, TreeLayout, Verdict,
};
use super::tree::{ModelState, NodeId, Rows, Tree};
use super::verify::{self, Scored, Verified};
use crate::ids::PrefixAutomaton;
use crate::model::Llm;
use crate::{Error, Result};

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
    params: &DecodeParams,
    rng: &mut R,
) -> Result<DecodeTrace> {
    let start = Instant::now();
    params.validate()?;
    check_same_vocab(target, draft)?;
    super::beam::check_inputs(prompt, auto, target)?;
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
    while depth < auto.depth() {
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
        params: *params,
        length: auto.depth(),
        rounds,
        beams: finals,
        wall_ms: ms(start),
    })
}

struct Run<'a, R> {
    target: &'a Llm,
    draft: &'a Llm,
    auto: &'a PrefixAutomaton,
    params: DecodeParams,
    tree: Tree,
    ts: ModelState,
    ds: ModelState,
    rng: &'a mut R,
}

impl<R: Rng> Run<'_, R> {
    fn round(
        &mut self,
        index: usize,
        depth: usize,
        beams: &[Beam],
    ) -> Result<(RoundTrace, Vec<Beam>)> {
        let start = Instant::now();
        let levels = drafted_levels(self.auto.forced(), self.params.gamma, depth);
        let draft = draft(
            self.draft,
            &mut self.ds,
            &mut self.tree,
            self.auto,
            &self.params,
            beams,
            &levels,
            self.rng,
        )?;
        let flat_nodes: Vec<NodeId> = draft.flat().map(|d| d.node).collect();

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
        let scored = Scored {
            auto: self.auto,
            k: self.params.k,
            rows: &prows,
            row_of: &target_row,
            draft: &draft,
        };
        let verified = match self.params.mode {
            Mode::Strict => verify::strict(&scored, &mut self.tree, beams),
            Mode::Relaxed => verify::relaxed(&scored, &mut self.tree, beams, self.rng),
        };
        let select_ms = draft.select_ms + ms(t_select);
        // Compact both caches to the surviving beams, unless these beams are final.
        let t_cache = Instant::now();
        if depth + verified.accepted + 1 < self.auto.depth() {
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
            draft_ms: draft.pass_ms,
            verify_ms,
            other_ms: (total - draft.pass_ms - verify_ms).max(0.0),
            select_ms,
            cache_ms,
        };
        let trace = RoundTrace {
            times,
            target_passes: 1,
            draft_passes: levels.iter().filter(|&&f| !f).count(),
            ..trace
        };
        Ok((trace, verified.beams))
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
        let flat: Vec<&Drafted> = draft.flat().collect();
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
            let test = v.tests[i];
            let verdict = if depth_in_round > v.examined || orphan {
                Verdict::Pending
            } else if v.kept.contains(&d.node) {
                Verdict::Accepted
            } else {
                match test {
                    None => Verdict::Rejected,
                    Some(t) if t.passed() => Verdict::NotKept,
                    Some(_) => Verdict::Failed,
                }
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
                draft_rank: d.rank,
                test,
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
            draws: v.draws.clone(),
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
            forced: if draft.forced.iter().any(|&f| f) {
                draft.forced.clone()
            } else {
                Vec::new()
            },
            nodes,
            tree,
            accepted: v.accepted,
            checks: v.checks.clone(),
            target_step,
            times: PhaseTimes::default(),
            target_passes: 1,
            draft_passes: draft.forced.iter().filter(|&&f| !f).count(),
        }
    }
}
