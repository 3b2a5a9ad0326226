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
    BeamView, DecodeTrace, DepthCheck, DraftNode, Draw, MissedBeam, Mode, PhaseTimes, RelaxedTest,
    Residual, ResidualEntry, RoundTrace, TargetStep, TargetStepKind, TreeLayout, Verdict,
};
use crate::decode::DecodeParams;
use crate::ids::{Vocab, LCREC_LEVELS};
use crate::session::{
    Baseline, HistoryEntry, RunParams, SessionHeader, TruthEntry, UserRun, UserView,
};

/// Levels of the synthetic identifiers: LC-Rec's four.
const ID_LEN: usize = LCREC_LEVELS;
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
        token_names: Vec::new(),
        levels: ID_LEN,
        length: ID_LEN,
        fixed_before: 0,
        max_accepted: None,
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

/// One candidate extension of a depth: a child of a parent the draft (or the target) expanded.
#[derive(Clone)]
struct Cand {
    /// The parent's node index (`None`: a round-start beam, `root`).
    parent: Option<usize>,
    root: usize,
    tokens: Vec<u32>,
    q: f32,
    p: f32,
    draft_score: f32,
    target_score: f32,
    /// The parent's target score.
    parent_ts: f32,
}

fn rank_desc(a: f32, b: f32, ta: &[u32], tb: &[u32]) -> std::cmp::Ordering {
    crate::decode::beam_order((a, ta), (b, tb))
}

/// A deterministic stand-in for a uniform draw in [0, 1), from the beam's tokens.
fn uniform(tokens: &[u32], salt: u32) -> f64 {
    let h = tokens.iter().fold(0x811c_9dc5u32 ^ salt, |h, &t| {
        (h ^ t).wrapping_mul(0x0100_0193)
    });
    (h >> 8) as f64 / (1u32 << 24) as f64
}

/// Builds a whole decode. `plan[r]` is how many drafted steps round `r` accepts (clamped to what
/// it drafts and to what the rules allow; missing entries accept everything). `salt` varies
/// tokens between users.
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
        length: ID_LEN,
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

/// A beam a depth extends: its node (`None`: a round-start beam), its round-start beam, its
/// tokens, and its draft and target scores.
type Parent = (Option<usize>, usize, Vec<u32>, f32, f32);

/// Every child of `parents` at identifier level `level`, scored by both models.
fn extend(parents: &[Parent], level: usize, salt: u32) -> Vec<Cand> {
    let mut out = Vec::new();
    for (parent, root, prefix, ds, ts) in parents {
        for (t, q) in children(prefix, level, salt) {
            let p = target_p(q, t, level);
            let mut tokens = prefix.clone();
            tokens.push(t);
            out.push(Cand {
                parent: *parent,
                root: *root,
                tokens,
                q,
                p,
                draft_score: ds + q.ln(),
                target_score: ts + p.ln(),
                parent_ts: *ts,
            });
        }
    }
    out
}

/// The drafted beams `chosen` (indices into `cands`) as the parents of the next depth.
fn kept(
    chosen: &[usize],
    drafted_at: &[Option<usize>],
    nodes: &[DraftNode],
    paths: &[Vec<u32>],
    cands: &[Cand],
) -> Vec<Parent> {
    chosen
        .iter()
        .map(|&i| {
            let j = drafted_at[i].expect("kept beams are drafted");
            (
                Some(j),
                nodes[j].root,
                paths[j].clone(),
                nodes[j].draft_score,
                cands[i].target_score,
            )
        })
        .collect()
}

/// One round, built the way the decoder builds it: the draft's beam search keeps the N best
/// candidates per depth by draft score; the verifier walks the depths with the real rules
/// (strict: the target's top-K all drafted; relaxed: u <= p/q, at least K passing) and records
/// what it found. `acc` steers the outcome: at depth `acc + 1` the target disagrees (strict: a
/// child the draft did not draft enters the target's top-K; relaxed: the target's p of the
/// drafted beams drops), and at the depths before it the target agrees.
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
    let strict = mode == Mode::Strict;
    let mut nodes: Vec<DraftNode> = Vec::new();
    let mut paths: Vec<Vec<u32>> = Vec::new();
    // The draft's candidates per depth, best first (what its ranks refer to).
    let mut ranked: Vec<Vec<Cand>> = Vec::new();
    let root_parents: Vec<Parent> = roots
        .iter()
        .enumerate()
        .map(|(i, b)| (None, i, b.tokens.clone(), b.score, b.score))
        .collect();
    let mut frontier = root_parents.clone();
    for d in 1..=drafted {
        let mut cands = extend(&frontier, start + d - 1, salt);
        cands.sort_by(|a, b| rank_desc(a.draft_score, b.draft_score, &a.tokens, &b.tokens));
        ranked.push(cands.clone());
        cands.truncate(n);
        frontier.clear();
        for (i, c) in cands.into_iter().enumerate() {
            frontier.push((
                Some(nodes.len()),
                c.root,
                c.tokens.clone(),
                c.draft_score,
                c.target_score,
            ));
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
                draft_rank: strict.then_some(i + 1),
                test: None,
            });
        }
    }
    let node_of = |paths: &[Vec<u32>], t: &[u32]| paths.iter().position(|p| p == t);

    // Verification, depth by depth, from the round's beams.
    let mut kept_parents = root_parents;
    let mut checks = Vec::new();
    let mut accepted = 0;
    let mut step: Option<(TargetStepKind, Vec<BeamView>, Vec<Option<Draw>>)> = None;
    for d in 1..=drafted {
        let disagree = d == acc + 1;
        let mut cands = extend(&kept_parents, start + d - 1, salt);
        let drafted_at: Vec<Option<usize>> =
            cands.iter().map(|c| node_of(&paths, &c.tokens)).collect();
        let examined: Vec<usize> = drafted_at.iter().flatten().copied().collect();
        let rank_of = |t: &[u32]| {
            ranked[d - 1]
                .iter()
                .position(|c| c.tokens == t)
                .map(|i| i + 1)
        };
        if strict {
            // The target's view of the children the draft did not draft: where it agrees they
            // rank low; where it disagrees, the draft's best undrafted child of the strongest
            // kept beam is the target's #2.
            let best = cands
                .iter()
                .zip(&drafted_at)
                .filter(|(_, x)| x.is_some())
                .map(|(c, _)| c.target_score)
                .fold(f32::NEG_INFINITY, f32::max);
            let top_parent = cands
                .iter()
                .map(|c| c.parent_ts)
                .fold(f32::NEG_INFINITY, f32::max);
            let undrafted = cands
                .iter()
                .enumerate()
                .filter(|(i, c)| drafted_at[*i].is_none() && c.parent_ts == top_parent)
                .min_by_key(|(_, c)| rank_of(&c.tokens).unwrap_or(usize::MAX))
                .map(|(i, _)| i);
            for (i, c) in cands.iter_mut().enumerate() {
                if drafted_at[i].is_none() {
                    c.target_score = if disagree && Some(i) == undrafted {
                        best - 0.05
                    } else {
                        c.parent_ts - 8.0
                    };
                    c.p = (c.target_score - c.parent_ts).exp();
                }
            }
            let mut order: Vec<usize> = (0..cands.len()).collect();
            order.sort_by(|&a, &b| {
                rank_desc(
                    cands[a].target_score,
                    cands[b].target_score,
                    &cands[a].tokens,
                    &cands[b].tokens,
                )
            });
            order.truncate(k);
            let all = order.iter().all(|&i| drafted_at[i].is_some());
            let mut missed = Vec::new();
            let mut worst = 0;
            for (tr, &i) in order.iter().enumerate() {
                let c = &cands[i];
                let rank = rank_of(&c.tokens).unwrap_or(0);
                worst = worst.max(rank);
                match drafted_at[i] {
                    Some(j) => nodes[j].in_target_topk = true,
                    None => missed.push(MissedBeam {
                        tokens: c.tokens.clone(),
                        target_rank: tr + 1,
                        draft_rank: rank,
                        q: c.q,
                        p: c.p,
                        target_score: c.target_score,
                        draft_score: c.draft_score,
                    }),
                }
            }
            for &j in &examined {
                nodes[j].verdict = if nodes[j].in_target_topk {
                    Verdict::Accepted
                } else {
                    Verdict::Rejected
                };
            }
            checks.push(DepthCheck {
                depth: d,
                accepted: all,
                candidates: ranked[d - 1].len(),
                examined: examined.len(),
                n_needed: Some(worst),
                missed,
                passed: 0,
                residual: None,
                forced: false,
            });
            let top: Vec<BeamView> = order
                .iter()
                .map(|&i| BeamView {
                    tokens: cands[i].tokens.clone(),
                    score: cands[i].target_score,
                })
                .collect();
            if !all {
                step = Some((TargetStepKind::Correction, top, vec![None; k]));
                break;
            }
            accepted = d;
            kept_parents = kept(&order, &drafted_at, &nodes, &paths, &cands);
        } else {
            // Relaxed: the target disagrees by taking most of its mass off the drafted beams.
            if disagree {
                for (i, c) in cands.iter_mut().enumerate() {
                    if let Some(j) = drafted_at[i] {
                        c.p *= 0.3;
                        c.target_score += 0.3f32.ln();
                        nodes[j].p = Some(c.p);
                        nodes[j].target_score = Some(c.target_score);
                    }
                }
            }
            let norm = |xs: Vec<f32>| -> Vec<f64> {
                let m = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f64> = xs.iter().map(|&x| ((x - m) as f64).exp()).collect();
                let z: f64 = e.iter().sum();
                e.into_iter().map(|x| x / z).collect()
            };
            let ps = norm(cands.iter().map(|c| c.target_score).collect());
            let qs = norm(cands.iter().map(|c| c.draft_score).collect());
            // Draws: below p/q for the beams that should pass, above it for the others.
            let mut by_ratio: Vec<usize> = (0..cands.len())
                .filter(|&i| drafted_at[i].is_some())
                .collect();
            by_ratio.sort_by(|&a, &b| (ps[b] / qs[b]).total_cmp(&(ps[a] / qs[a])));
            let want = if disagree {
                1
            } else {
                (k + 2).min(by_ratio.len())
            };
            let mut passed = Vec::new();
            for (pos, &i) in by_ratio.iter().enumerate() {
                let j = drafted_at[i].expect("examined");
                let ratio = ps[i] / qs[i];
                let h = uniform(&cands[i].tokens, salt);
                let u = if pos < want || ratio >= 1.0 {
                    (0.1 + 0.8 * h) * ratio.min(1.0)
                } else {
                    ratio + (1.0 - ratio) * (0.05 + 0.9 * h)
                };
                let test = RelaxedTest::new(u, ps[i], qs[i]);
                nodes[j].test = Some(test);
                nodes[j].verdict = Verdict::Failed;
                if test.passed() {
                    passed.push(i);
                }
            }
            let ok = passed.len() >= k.min(cands.len());
            let mut check = DepthCheck {
                depth: d,
                accepted: ok,
                candidates: ranked[d - 1].len(),
                examined: examined.len(),
                n_needed: None,
                missed: vec![],
                passed: passed.len(),
                residual: None,
                forced: false,
            };
            if ok {
                // K of the passed beams, "at random": by their draws.
                passed.sort_by(|&a, &b| {
                    uniform(&cands[b].tokens, 7).total_cmp(&uniform(&cands[a].tokens, 7))
                });
                for (pos, &i) in passed.iter().enumerate() {
                    let j = drafted_at[i].expect("examined");
                    nodes[j].verdict = if pos < k {
                        Verdict::Accepted
                    } else {
                        Verdict::NotKept
                    };
                }
                passed.truncate(k);
                checks.push(check);
                accepted = d;
                kept_parents = kept(&passed, &drafted_at, &nodes, &paths, &cands);
                continue;
            }
            // Too few passed: keep them, draw the rest from the residual, largest first.
            let residual: Vec<f64> = ps.iter().zip(&qs).map(|(p, q)| (p - q).max(0.0)).collect();
            let mass: f64 = residual.iter().sum();
            let mut by_res: Vec<usize> = (0..cands.len()).filter(|&i| residual[i] > 0.0).collect();
            by_res.sort_by(|&a, &b| residual[b].total_cmp(&residual[a]));
            let drawn: Vec<usize> = by_res
                .iter()
                .copied()
                .filter(|i| !passed.contains(i))
                .take(k.min(cands.len()) - passed.len())
                .collect();
            check.residual = Some(Residual {
                mass,
                drawn: drawn.len(),
                fallback: false,
                top: by_res
                    .iter()
                    .take(Residual::TOP)
                    .map(|&i| ResidualEntry {
                        tokens: cands[i].tokens.clone(),
                        p: ps[i],
                        q: qs[i],
                        r: residual[i] / mass,
                    })
                    .collect(),
            });
            checks.push(check);
            for &i in &passed {
                nodes[drafted_at[i].expect("examined")].verdict = Verdict::Accepted;
            }
            let mut beams: Vec<(BeamView, Option<Draw>)> = passed
                .iter()
                .map(|&i| (i, None))
                .chain(drawn.iter().map(|&i| {
                    (
                        i,
                        Some(Draw {
                            prob: residual[i] / mass,
                            fallback: false,
                        }),
                    )
                }))
                .map(|(i, w)| {
                    (
                        BeamView {
                            tokens: cands[i].tokens.clone(),
                            score: cands[i].target_score,
                        },
                        w,
                    )
                })
                .collect();
            beams.sort_by(|a, b| rank_desc(a.0.score, b.0.score, &a.0.tokens, &b.0.tokens));
            let draws = beams.iter().map(|b| b.1).collect();
            step = Some((
                TargetStepKind::Resampled,
                beams.into_iter().map(|b| b.0).collect(),
                draws,
            ));
            break;
        }
    }

    // The target's own step when every drafted depth passed (or nothing was drafted): its
    // top-K extensions of the kept beams, one depth further.
    let (kind, beams, draws) = step.unwrap_or_else(|| {
        let mut ext: Vec<BeamView> = extend(&kept_parents, start + drafted, salt)
            .into_iter()
            .map(|c| BeamView {
                tokens: c.tokens,
                score: c.target_score,
            })
            .collect();
        ext.sort_by(|a, b| rank_desc(a.score, b.score, &a.tokens, &b.tokens));
        ext.truncate(k);
        let kind = if drafted == 0 {
            TargetStepKind::Plain
        } else {
            TargetStepKind::Bonus
        };
        let none = vec![None; ext.len()];
        (kind, ext, none)
    });
    let depth = start + accepted + 1;
    let drafted_node = beams.iter().map(|b| node_of(&paths, &b.tokens)).collect();
    let resampled = draws.iter().map(|d: &Option<Draw>| d.is_some()).collect();

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
        forced: Vec::new(),
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
        accepted,
        checks,
        target_step: TargetStep {
            depth,
            kind,
            resampled,
            draws,
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

    /// The synthetic traces follow the decoder's rules, so every caption and check on screen
    /// can be tested against them.
    #[test]
    fn synthetic_traces_follow_the_rules() {
        for (run, want) in [
            (strict_run(1), [2, 0]),
            (relaxed_run(2), [1, 1]),
            (run(Mode::Strict, 6, 3, 3, 4, &[1]), [1, 1]),
            (run(Mode::Strict, 3, 3, 1, 5, &[0, 1]), [0, 1]),
        ] {
            let t = &run.trace;
            assert_eq!(t.beams.len(), 3);
            assert!(t.beams.iter().all(|b| b.tokens.len() == ID_LEN));
            let mut depth = 0;
            for (ri, r) in t.rounds.iter().enumerate() {
                assert_eq!(r.start_depth, depth);
                assert_eq!(r.nodes.len(), r.tree.mask_rows.len());
                assert_eq!(r.nodes.len(), r.tree.positions.len());
                assert_eq!(r.target_step.beams.len(), 3);
                assert_eq!(r.checks.len(), r.examined());
                if let Some(&w) = want.get(ri) {
                    assert_eq!(r.accepted, w.min(r.drafted), "round {ri} of {:?}", t.params);
                }
                for (i, nd) in r.nodes.iter().enumerate() {
                    assert!(r.tree.mask_rows[i].contains(&(i as u32)));
                    if let Some(p) = nd.parent {
                        assert_eq!(r.nodes[p].depth + 1, nd.depth);
                    }
                    match (t.params.mode, nd.verdict) {
                        (_, Verdict::Pending) => assert!(nd.test.is_none()),
                        (Mode::Strict, v) => {
                            assert_eq!(v == Verdict::Accepted, nd.in_target_topk)
                        }
                        (Mode::Relaxed, Verdict::Failed) => assert!(!nd.test.unwrap().passed()),
                        (Mode::Relaxed, _) => assert!(nd.test.unwrap().passed()),
                    }
                }
                for c in &r.checks {
                    assert_eq!(c.accepted, c.depth <= r.accepted);
                    if t.params.mode == Mode::Strict {
                        assert_eq!(c.accepted, c.missed.is_empty());
                        let drafted = r.nodes.iter().filter(|x| x.depth == c.depth).count();
                        assert_eq!(c.accepted, c.n_needed.unwrap() <= drafted);
                        assert!(c.missed.iter().all(|m| m.draft_rank > drafted));
                    } else {
                        assert_eq!(c.accepted, c.passed >= 3);
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
        assert!(relaxed.trace.rounds[0]
            .nodes
            .iter()
            .any(|n| n.verdict == Verdict::NotKept));
        assert!(relaxed.trace.rounds[0]
            .nodes
            .iter()
            .any(|n| n.verdict == Verdict::Failed));
    }
}
