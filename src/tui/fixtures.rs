//! Synthetic but internally consistent traces, users and runs for the explorer's tests and for
//! trying the UI without a model.
//!
//! The builder mimics what the speculative loop records: a draft beam search of width N for up to
//! gamma steps, one target pass that scores every drafted token (so every node gets `p`), verdicts
//! that follow the accepted depth, and the target's own step at the first unaccepted depth (or the
//! bonus depth). Nothing here is random: the same call always gives the same trace, which is what
//! snapshot tests need.

use std::collections::BTreeMap;

use crate::decode::trace::{
    BeamView, DecodeTrace, DraftNode, Mode, PhaseTimes, RoundTrace, TargetStep, TargetStepKind,
    TreeLayout, Verdict,
};
use crate::decode::DecodeParams;
use crate::ids::{Vocab, ID_LEN};
use crate::session::{
    Baseline, HistoryEntry, RunParams, SessionHeader, TruthEntry, UserRun, UserView,
};

/// Codes per identifier level in the synthetic vocabulary.
const CODES: u32 = 6;
/// Children each parent offers the beam search (the first `CHILD_Q.len()` codes, rotated).
const CHILD_Q: [f32; 4] = [0.46, 0.27, 0.16, 0.11];
/// Prompt length the synthetic tree layout pretends the target saw.
pub const PROMPT_LEN: usize = 26;

const TITLES: [&str; 12] = [
    "Rose Hand Cream",
    "Argan Hair Oil",
    "Mineral Sunscreen SPF 50",
    "Charcoal Face Mask",
    "Vitamin C Serum",
    "Lavender Bath Salts",
    "Matte Lipstick Ruby",
    "Bamboo Makeup Brush Set",
    "Tea Tree Shampoo",
    "Aloe Vera Gel",
    "Coconut Lip Balm",
    "Sea Clay Soap",
];

/// The synthetic vocabulary: specials then `CODES` codes for each of the four levels.
pub fn vocab() -> Vocab {
    let mut tokens: Vec<String> = crate::ids::SPECIALS.iter().map(|s| s.to_string()).collect();
    for l in 0..ID_LEN {
        for c in 0..CODES {
            tokens.push(format!("<{}_{c}>", (b'a' + l as u8) as char));
        }
    }
    Vocab::from_tokens(tokens).expect("synthetic vocabulary is valid")
}

/// Token id of code `code` at level `level` (0-based) in [`vocab`].
fn tok(level: usize, code: u32) -> u32 {
    crate::ids::SPECIALS.len() as u32 + level as u32 * CODES + code % CODES
}

/// A deterministic title for an identifier, so lists read like a catalogue.
fn title_of(tokens: &[u32]) -> String {
    let h = tokens
        .iter()
        .fold(0x811c_9dc5u32, |h, &t| (h ^ t).wrapping_mul(0x0100_0193));
    TITLES[h as usize % TITLES.len()].to_string()
}

/// The header a live explorer would show for the synthetic models.
pub fn header() -> SessionHeader {
    SessionHeader {
        dataset: "synthetic".into(),
        target: "target 8Lx256 3.1M".into(),
        drafts: vec!["atspeed-s 1Lx64 0.1M".into(), "sft 1Lx64 0.1M".into()],
        device: "cpu".into(),
        seed: 42,
        vocab: vocab().tokens().to_vec(),
    }
}

/// Draft model names as [`RunParams::draft`] uses them (the first word of each header label).
pub fn draft_names() -> Vec<String> {
    header()
        .drafts
        .iter()
        .map(|d| d.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// A user with a short history and two ground-truth items; `seed` varies the codes.
pub fn user(id: u32) -> UserView {
    let v = vocab();
    let history = (0..6u32)
        .map(|i| {
            let t = [
                tok(0, id + i),
                tok(1, 2 * i + 1),
                tok(2, id * 3 + i),
                tok(3, i + 2),
            ];
            HistoryEntry {
                item: 100 + id * 10 + i,
                title: title_of(&t),
                ident: v.render(&t),
            }
        })
        .collect();
    let truth = strict_beams(id)
        .iter()
        .skip(1)
        .take(1)
        .map(|b| b.tokens.clone())
        .chain(std::iter::once(vec![
            tok(0, 5),
            tok(1, 5),
            tok(2, 5),
            tok(3, 5),
        ]))
        .map(|t| TruthEntry {
            ident: v.render(&t),
            titles: vec![title_of(&t)],
            tokens: t,
        })
        .collect();
    UserView {
        user: id,
        history,
        truth,
    }
}

fn strict_beams(id: u32) -> Vec<BeamView> {
    trace(Mode::Strict, 6, 3, 3, id, &[2, 0]).beams
}

/// The child tokens a parent offers at identifier level `level`, with draft probabilities.
fn children(parent: &[u32], level: usize, salt: u32) -> Vec<(u32, f32)> {
    let rot = parent.iter().sum::<u32>() + salt;
    CHILD_Q
        .iter()
        .enumerate()
        .map(|(j, &q)| (tok(level, rot + j as u32), q))
        .collect()
}

/// The target's probability for a drafted token: the draft's, bent by a fixed pattern so the two
/// models disagree on some ranks (that is what makes steps fail).
fn target_p(q: f32, token: u32, level: usize) -> f32 {
    let wobble = ((token * 7 + level as u32 * 3) % 10) as f32 / 10.0;
    (q * (0.55 + 0.9 * wobble)).min(0.95)
}

/// One candidate extension while building a depth.
#[derive(Clone)]
struct Cand {
    parent: Option<usize>,
    root: usize,
    tokens: Vec<u32>,
    q: f32,
    p: f32,
    draft_score: f32,
    target_score: f32,
}

fn rank_desc(a: f32, b: f32, ta: &[u32], tb: &[u32]) -> std::cmp::Ordering {
    crate::decode::beam_order((a, ta), (b, tb))
}

/// Builds a whole decode. `plan[r]` is how many drafted steps round `r` accepts (clamped to what
/// it drafts; missing entries accept everything). `salt` varies tokens between users.
pub fn trace(
    mode: Mode,
    n: usize,
    k: usize,
    gamma: usize,
    salt: u32,
    plan: &[usize],
) -> DecodeTrace {
    let mut rounds = Vec::new();
    let mut roots = vec![BeamView {
        tokens: vec![],
        score: 0.0,
    }];
    let mut start = 0usize;
    while start < ID_LEN {
        let r = rounds.len();
        let drafted = gamma.min(ID_LEN - start - 1);
        let acc = plan.get(r).copied().unwrap_or(drafted).min(drafted);
        let round = build_round(mode, n, k, salt, r, start, &roots, drafted, acc);
        start = round.target_step.depth;
        roots = round.target_step.beams.clone();
        rounds.push(round);
    }
    let mut beams = roots;
    beams.sort_by(|a, b| rank_desc(a.score, b.score, &a.tokens, &b.tokens));
    let wall_ms = rounds.iter().map(|r| r.times.total_ms()).sum();
    DecodeTrace {
        params: DecodeParams {
            mode,
            n,
            k,
            gamma,
            draft_mass: None,
        },
        rounds,
        beams,
        wall_ms,
    }
}

#[allow(clippy::too_many_arguments)]
fn build_round(
    mode: Mode,
    n: usize,
    k: usize,
    salt: u32,
    round: usize,
    start: usize,
    roots: &[BeamView],
    drafted: usize,
    acc: usize,
) -> RoundTrace {
    let mut nodes: Vec<DraftNode> = Vec::new();
    let mut paths: Vec<Vec<u32>> = Vec::new();
    // Draft beam search: every node of the previous depth is a parent (the draft keeps N beams).
    let mut frontier: Vec<Option<usize>> = vec![None; 0];
    for d in 1..=drafted {
        let level = start + d - 1;
        let mut cands = Vec::new();
        let parents: Vec<(Option<usize>, usize)> = if d == 1 {
            (0..roots.len()).map(|i| (None, i)).collect()
        } else {
            frontier.iter().map(|&p| (p, 0)).collect()
        };
        for (parent, root_i) in parents {
            let (prefix, root, ds, ts) = match parent {
                None => (
                    roots[root_i].tokens.clone(),
                    root_i,
                    roots[root_i].score,
                    roots[root_i].score,
                ),
                Some(pi) => (
                    paths[pi].clone(),
                    nodes[pi].root,
                    nodes[pi].draft_score,
                    nodes[pi].target_score.unwrap_or(0.0),
                ),
            };
            for (t, q) in children(&prefix, level, salt) {
                let p = target_p(q, t, level);
                let mut tokens = prefix.clone();
                tokens.push(t);
                cands.push(Cand {
                    parent,
                    root,
                    tokens,
                    q,
                    p,
                    draft_score: ds + q.ln(),
                    target_score: ts + p.ln(),
                });
            }
        }
        cands.sort_by(|a, b| rank_desc(a.draft_score, b.draft_score, &a.tokens, &b.tokens));
        cands.truncate(n);
        frontier.clear();
        for c in cands {
            frontier.push(Some(nodes.len()));
            paths.push(c.tokens.clone());
            nodes.push(DraftNode {
                depth: d,
                parent: c.parent,
                root: c.root,
                token: *c.tokens.last().expect("non-empty path"),
                q: c.q,
                p: Some(c.p),
                draft_score: c.draft_score,
                target_score: Some(c.target_score),
                in_target_topk: false,
                verdict: Verdict::Pending,
                draft_rank: None,
                test: None,
            });
        }
    }

    // Verification, depth by depth: candidates are the children of kept beams.
    let mut resampled_kept: Vec<usize> = Vec::new();
    for d in 1..=drafted.min(acc + 1) {
        let mut cands: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].depth == d)
            .filter(|&i| {
                nodes[i]
                    .parent
                    .is_none_or(|p| nodes[p].verdict == Verdict::Accepted)
            })
            .collect();
        cands.sort_by(|&a, &b| {
            rank_desc(
                nodes[a].target_score.unwrap_or(f32::MIN),
                nodes[b].target_score.unwrap_or(f32::MIN),
                &paths[a],
                &paths[b],
            )
        });
        if d <= acc {
            for (rank, &i) in cands.iter().enumerate() {
                nodes[i].in_target_topk = rank < k;
                nodes[i].verdict = if rank < k {
                    Verdict::Accepted
                } else {
                    Verdict::Rejected
                };
            }
        } else {
            // The failing depth. Strict: one of the target's top-K was never drafted, so only
            // K-1 drafted beams are in it and the step fails. Relaxed: only the best one passes
            // u <= p/q; it is kept and the rest of the K are resampled.
            for (rank, &i) in cands.iter().enumerate() {
                nodes[i].in_target_topk = rank + 1 < k;
                nodes[i].verdict = match mode {
                    Mode::Relaxed if rank == 0 => {
                        resampled_kept.push(i);
                        Verdict::Accepted
                    }
                    _ => Verdict::Rejected,
                };
            }
        }
    }

    // The target's own step.
    let (kind, depth) = if drafted == 0 {
        (TargetStepKind::Plain, start + 1)
    } else if acc == drafted {
        (TargetStepKind::Bonus, start + drafted + 1)
    } else if mode == Mode::Relaxed {
        (TargetStepKind::Resampled, start + acc + 1)
    } else {
        (TargetStepKind::Correction, start + acc + 1)
    };
    let parents: Vec<(Vec<u32>, f32)> = if depth - start == 1 {
        roots.iter().map(|b| (b.tokens.clone(), b.score)).collect()
    } else {
        (0..nodes.len())
            .filter(|&i| {
                nodes[i].depth == depth - start - 1 && nodes[i].verdict == Verdict::Accepted
            })
            .map(|i| (paths[i].clone(), nodes[i].target_score.unwrap_or(0.0)))
            .collect()
    };
    let mut ext: Vec<BeamView> = Vec::new();
    for (prefix, score) in &parents {
        for (t, q) in children(prefix, depth - 1, salt) {
            let mut tokens = prefix.clone();
            tokens.push(t);
            ext.push(BeamView {
                score: score + target_p(q, t, depth - 1).ln(),
                tokens,
            });
        }
    }
    ext.sort_by(|a, b| rank_desc(a.score, b.score, &a.tokens, &b.tokens));
    let beams: Vec<BeamView> = if kind == TargetStepKind::Resampled {
        let kept: Vec<BeamView> = resampled_kept
            .iter()
            .map(|&i| BeamView {
                tokens: paths[i].clone(),
                score: nodes[i].target_score.unwrap_or(0.0),
            })
            .collect();
        let drafted_paths: Vec<&Vec<u32>> = paths.iter().collect();
        let fresh = ext
            .into_iter()
            .filter(|b| !drafted_paths.contains(&&b.tokens))
            .take(k.saturating_sub(kept.len()));
        kept.into_iter().chain(fresh).collect()
    } else {
        ext.into_iter().take(k).collect()
    };
    let drafted_node = beams
        .iter()
        .map(|b| paths.iter().position(|p| *p == b.tokens))
        .collect();

    let positions = nodes
        .iter()
        .map(|nd| (PROMPT_LEN - 1 + start + nd.depth) as u32)
        .collect();
    let mask_rows = (0..nodes.len())
        .map(|i| {
            let mut row = vec![i as u32];
            let mut at = nodes[i].parent;
            while let Some(p) = at {
                row.push(p as u32);
                at = nodes[p].parent;
            }
            row.sort_unstable();
            row
        })
        .collect();
    RoundTrace {
        round,
        start_depth: start,
        roots: roots.to_vec(),
        drafted,
        nodes,
        tree: TreeLayout {
            context_len: if round == 0 {
                0
            } else {
                PROMPT_LEN + start - 1
            },
            lead_len: if round == 0 { PROMPT_LEN } else { roots.len() },
            positions,
            mask_rows,
        },
        accepted: acc,
        checks: Vec::new(),
        target_step: TargetStep {
            depth,
            kind,
            resampled: vec![kind == TargetStepKind::Resampled; beams.len()],
            draws: vec![None; beams.len()],
            beams,
            drafted_node,
        },
        times: PhaseTimes {
            draft_ms: 0.5 * drafted as f64,
            verify_ms: 3.25,
            other_ms: 0.25,
            ..Default::default()
        },
        target_passes: 1,
        draft_passes: drafted,
    }
}

/// A complete run for `user` with a speculative trace from `plan` and its baseline.
pub fn run(mode: Mode, n: usize, k: usize, gamma: usize, user: u32, plan: &[usize]) -> UserRun {
    let trace = trace(mode, n, k, gamma, user, plan);
    let mut baseline_beams = match mode {
        // Lossless: the target-only list is the same list.
        Mode::Strict => trace.beams.clone(),
        Mode::Relaxed => strict_beams(user).into_iter().take(k).collect(),
    };
    baseline_beams.truncate(k);
    let v = vocab();
    let titles: BTreeMap<String, Vec<String>> = trace
        .beams
        .iter()
        .chain(&baseline_beams)
        .map(|b| (v.render(&b.tokens), vec![title_of(&b.tokens)]))
        .collect();
    UserRun {
        params: RunParams {
            decode: trace.params,
            draft: draft_names()[0].clone(),
        },
        baseline: Baseline {
            beams: baseline_beams,
            target_passes: ID_LEN,
            time_ms: 13.6,
        },
        trace,
        titles,
    }
}

/// The strict demo: round 1 accepts 2 of 3 drafted steps, round 2 is a plain target step.
pub fn strict_run(user: u32) -> UserRun {
    run(Mode::Strict, 6, 3, 3, user, &[2, 0])
}

/// The relaxed demo: round 1 accepts depth 1, depth 2 keeps one drafted beam and resamples the
/// rest; round 2 drafts one step and gets the bonus step.
pub fn relaxed_run(user: u32) -> UserRun {
    run(Mode::Relaxed, 6, 3, 3, user, &[1, 1])
}

/// The parameters the demo runs use: strict, N 6, K 3, gamma 3, first draft.
pub fn params() -> crate::tui::state::Params {
    crate::tui::state::Params {
        decode: DecodeParams {
            mode: Mode::Strict,
            n: 6,
            k: 3,
            gamma: 3,
            draft_mass: None,
        },
        draft: 0,
    }
}

/// An explorer over `users` synthetic users with the demo parameters, nothing requested yet.
pub fn app(users: u32) -> crate::tui::state::App {
    crate::tui::state::App::new(header(), (1..=users).map(user).collect(), params())
}

/// What a live engine would answer for `user` (an index into [`app`]'s users) with `p`.
pub fn answer(user: usize, p: &RunParams) -> UserRun {
    let id = user as u32 + 1;
    let d = &p.decode;
    let plan: &[usize] = match d.mode {
        Mode::Strict => &[2, 0],
        Mode::Relaxed => &[1, 1],
    };
    let mut r = run(d.mode, d.n, d.k, d.gamma, id, plan);
    r.params = p.clone();
    r
}

/// An engine that answers from [`answer`]: the explorer without data or models.
pub struct FixtureEngine {
    pub users: usize,
}

impl crate::tui::engine::Engine for FixtureEngine {
    fn decode(&mut self, user: usize, params: &RunParams) -> crate::Result<UserRun> {
        if user >= self.users {
            return Err(crate::Error::invalid("user", format!("no user #{user}")));
        }
        Ok(answer(user, params))
    }
    fn num_users(&self) -> usize {
        self.users
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_traces_are_consistent() {
        for run in [strict_run(1), relaxed_run(2)] {
            let t = &run.trace;
            assert_eq!(t.beams.len(), 3);
            assert!(t.beams.iter().all(|b| b.tokens.len() == ID_LEN));
            let mut depth = 0;
            for r in &t.rounds {
                assert_eq!(r.start_depth, depth);
                assert_eq!(r.nodes.len(), r.tree.mask_rows.len());
                assert_eq!(r.nodes.len(), r.tree.positions.len());
                assert_eq!(r.target_step.beams.len(), 3);
                for (i, nd) in r.nodes.iter().enumerate() {
                    assert!(r.tree.mask_rows[i].contains(&(i as u32)));
                    if let Some(p) = nd.parent {
                        assert_eq!(r.nodes[p].depth + 1, nd.depth);
                    }
                }
                depth = r.target_step.depth;
            }
            assert_eq!(depth, ID_LEN);
        }
        let relaxed = relaxed_run(2);
        let step = &relaxed.trace.rounds[0].target_step;
        assert_eq!(step.kind, TargetStepKind::Resampled);
        assert!(step.drafted_node.iter().any(|d| d.is_some()));
        assert!(step.drafted_node.iter().any(|d| d.is_none()));
    }
}
