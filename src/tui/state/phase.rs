//! The step-by-phase presentation of a finished trace.
//!
//! The engine decodes a whole user at once; the explorer then walks the recorded rounds one phase
//! at a time (draft depth 1, 2, .., verify, accept, target step) so a newcomer sees the algorithm
//! unfold. A cursor over the flat list of phases is all the state this needs: the panels ask
//! [`Cursor::view`] what is visible at the current point.

use crate::decode::trace::{DecodeTrace, DepthCheck, RoundTrace, TargetStepKind};
use crate::decode::Mode;
use crate::ids::Vocab;

/// One presentable phase of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The draft has produced the tokens of this depth (1-based, within the round).
    Draft(usize),
    /// The target scored the whole flattened tree in one pass: `p` is known.
    Verify,
    /// Verdicts are in: which steps were accepted.
    Accept,
    /// The target's own step closed the round.
    TargetStep,
}

impl Stage {
    /// The stage as a panel title names it, with identifier depths (a round starting at
    /// depth `start` drafts depth start + d at its step d).
    pub fn label(self, r: &RoundTrace) -> String {
        let s = r.start_depth;
        match self {
            Stage::Draft(d) => format!("draft depth {} (step {d} of {})", s + d, r.drafted),
            Stage::Verify => format!("verify depths {}-{}", s + 1, s + r.drafted),
            Stage::Accept => "accept".into(),
            Stage::TargetStep => format!(
                "target step at depth {} ({})",
                r.target_step.depth,
                kind_name(r.target_step.kind)
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phase {
    pub round: usize,
    pub stage: Stage,
}

/// All phases of a trace in presentation order. A round that drafted nothing has only its target
/// step.
pub fn phases(trace: &DecodeTrace) -> Vec<Phase> {
    let mut out = Vec::new();
    for (round, r) in trace.rounds.iter().enumerate() {
        for d in 1..=r.drafted {
            out.push(Phase {
                round,
                stage: Stage::Draft(d),
            });
        }
        if r.drafted > 0 {
            out.push(Phase {
                round,
                stage: Stage::Verify,
            });
            out.push(Phase {
                round,
                stage: Stage::Accept,
            });
        }
        out.push(Phase {
            round,
            stage: Stage::TargetStep,
        });
    }
    out
}

/// How many phases of the trace have been shown: 0 = none yet, `phases.len()` = the user is done.
pub type Cursor = usize;

/// What a panel may show of one round at the cursor.
#[derive(Clone, Copy, Debug)]
pub struct RoundView<'a> {
    pub round: &'a RoundTrace,
    pub stage: Stage,
    /// Deepest drafted depth visible so far.
    pub depth: usize,
    /// The target has scored the tree (p and top-K marks are meaningful).
    pub scored: bool,
    /// Verdicts are decided.
    pub judged: bool,
    /// The target's own step is shown.
    pub target_step: bool,
}

/// The round and stage visible at `cursor`, or `None` before the first phase.
pub fn view(trace: &DecodeTrace, cursor: Cursor) -> Option<RoundView<'_>> {
    let ph = phases(trace);
    let at = *ph.get(cursor.checked_sub(1)?.min(ph.len().checked_sub(1)?))?;
    let round = &trace.rounds[at.round];
    let (depth, scored, judged, target_step) = match at.stage {
        Stage::Draft(d) => (d, false, false, false),
        Stage::Verify => (round.drafted, true, false, false),
        Stage::Accept => (round.drafted, true, true, false),
        Stage::TargetStep => (round.drafted, true, true, true),
    };
    Some(RoundView {
        round,
        stage: at.stage,
        depth,
        scored,
        judged,
        target_step,
    })
}

/// The caption of the phase at `cursor` (1-based): the rule at work and its outcome, in a few
/// sentences. The log narrates these; the beams panel and the compact layout show the current
/// one.
pub fn narrate(trace: &DecodeTrace, cursor: Cursor, vocab: &Vocab) -> Option<String> {
    let v = view(trace, cursor)?;
    Some(caption(trace, &v, vocab))
}

fn caption(trace: &DecodeTrace, v: &RoundView, vocab: &Vocab) -> String {
    let r = v.round;
    let p = &trace.params;
    let n = r.round + 1;
    let s = r.start_depth;
    match v.stage {
        Stage::Draft(d) => {
            let count = r.nodes.iter().filter(|x| x.depth == d).count();
            let how = match p.mode {
                Mode::Strict => "keeps its N best extensions by its own score (log q)",
                Mode::Relaxed => "samples N extensions from its own distribution q",
            };
            let mut out = format!(
                "Round {n}, draft step {d} of {}: the draft {how}: {count} beams at depth {}.",
                r.drafted,
                s + d
            );
            if d == 1 && r.drafted < p.gamma {
                out.push_str(&format!(
                    " It drafts g = min(gamma {}, L - 1 - {s}) = {} step{}: the target always takes the identifier's last token itself.",
                    p.gamma,
                    r.drafted,
                    plural(r.drafted)
                ));
            }
            out
        }
        Stage::Verify => format!(
            "Round {n}, verify: the target scores all {} drafted tokens in one pass (tree attention: each token sees the prompt and its own ancestors only), so p is known for every drafted token.",
            r.nodes.len()
        ),
        Stage::Accept => {
            let rule = match p.mode {
                Mode::Strict => format!(
                    "a depth is accepted when the target's top-{} extensions were all drafted.",
                    p.k
                ),
                Mode::Relaxed => format!(
                    "a drafted beam passes if u ≤ p/q; a depth is accepted when at least K = {} pass (K of them kept at random).",
                    p.k
                ),
            };
            // The outcome first (the compact layout shows the first two lines), then the rule.
            let mut out = format!("Round {n}, accept:");
            let ok: Vec<usize> = r
                .checks
                .iter()
                .filter(|c| c.accepted)
                .map(|c| s + c.depth)
                .collect();
            if let (Some(a), Some(b)) = (ok.first(), ok.last()) {
                let which = if a == b {
                    format!("depth {a}")
                } else {
                    format!("depths {a}-{b}")
                };
                out.push_str(&format!(" {which} accepted"));
                if p.mode == Mode::Relaxed {
                    let passed: Vec<String> = r
                        .checks
                        .iter()
                        .filter(|c| c.accepted)
                        .map(|c| format!("{}/{}", c.passed, c.examined))
                        .collect();
                    out.push_str(&format!(" ({} passed)", passed.join(", ")));
                }
                out.push(if r.accepted < r.drafted { ';' } else { '.' });
            }
            match r.checks.iter().find(|c| !c.accepted) {
                Some(c) => {
                    out.push(' ');
                    out.push_str(&rejection(r, c, p.mode, p.k, vocab));
                }
                None if r.checks.is_empty() && r.drafted > 0 => {
                    // Traces recorded before the verifier's findings were kept.
                    out.push_str(&format!(
                        " {} of {} drafted depths accepted.",
                        r.accepted, r.drafted
                    ));
                }
                None => {}
            }
            out.push_str(&format!(" Rule: {rule}"));
            out
        }
        Stage::TargetStep => target_step_caption(r, p.k, trace.length),
    }
}

/// Why a depth was rejected, in words.
fn rejection(r: &RoundTrace, c: &DepthCheck, mode: Mode, k: usize, vocab: &Vocab) -> String {
    let depth = r.start_depth + c.depth;
    match mode {
        Mode::Strict => match c.missed.first() {
            Some(m) => format!(
                "depth {depth} rejected: the target's top-{k} holds {} (draft rank #{}){}, which the draft did not draft; the target takes depth {depth} itself.",
                vocab.render(&m.tokens),
                m.draft_rank,
                if c.missed.len() > 1 {
                    format!(" and {} more", c.missed.len() - 1)
                } else {
                    String::new()
                }
            ),
            None => format!("depth {depth} rejected: the draft missed some of the target's top-{k}."),
        },
        Mode::Relaxed => format!(
            "depth {depth} rejected: {} of {} passed, fewer than K; {} kept, the rest drawn from the residual.",
            c.passed,
            c.examined,
            if c.passed == 1 {
                "the one that passed is".to_string()
            } else {
                format!("the {} that passed are", c.passed)
            }
        ),
    }
}

fn target_step_caption(r: &RoundTrace, k: usize, length: usize) -> String {
    let step = &r.target_step;
    let n = r.round + 1;
    let d = step.depth;
    let advanced = d - r.start_depth;
    match step.kind {
        TargetStepKind::Correction => format!(
            "Round {n}, correction at depth {d}: the target's own top-{k} there (from the same verify pass) replaces the drafted depth; the round advanced {advanced} depth{} with one target pass.",
            plural(advanced)
        ),
        TargetStepKind::Bonus => format!(
            "Round {n}, bonus at depth {d}: every drafted depth was accepted, and the verify pass already holds the target's distribution one depth further, so its step at depth {d} comes free: {advanced} depths with one target pass."
        ),
        TargetStepKind::Plain => format!(
            "Round {n}, plain target step at depth {d}: only the last token remained (of {length}), and the target always takes it."
        ),
        TargetStepKind::Resampled => {
            let res = r.checks.last().and_then(|c| c.residual.as_ref());
            let kept = step.resampled.iter().filter(|x| !**x).count();
            let drawn = step.resampled.iter().filter(|x| **x).count();
            format!(
                "Round {n}, resampled at depth {d}: {} kept, and {drawn} more {} drawn from the residual norm(max(0, p - q)){}{}.",
                if kept == 1 {
                    "the 1 drafted beam that passed is".to_string()
                } else {
                    format!("the {kept} drafted beams that passed are")
                },
                if drawn == 1 { "is" } else { "are" },
                res.map(|x| format!(" (p's mass above q: {:.2})", x.mass))
                    .unwrap_or_default(),
                if res.is_some_and(|x| x.fallback) {
                    "; the residual ran out, so the last draws came from p itself"
                } else {
                    ""
                }
            )
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

pub fn kind_name(k: crate::decode::trace::TargetStepKind) -> &'static str {
    use crate::decode::trace::TargetStepKind::*;
    match k {
        Bonus => "bonus",
        Correction => "correction",
        Plain => "plain",
        Resampled => "resampled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures;

    #[test]
    fn phases_follow_rounds() {
        let t = fixtures::strict_run(1).trace;
        let ph = phases(&t);
        let stages: Vec<Stage> = ph.iter().map(|p| p.stage).collect();
        assert_eq!(
            stages,
            [
                Stage::Draft(1),
                Stage::Draft(2),
                Stage::Draft(3),
                Stage::Verify,
                Stage::Accept,
                Stage::TargetStep,
                Stage::TargetStep
            ]
        );
        assert!(view(&t, 0).is_none());
        let v = view(&t, 2).unwrap();
        assert_eq!((v.depth, v.scored), (2, false));
        let last = view(&t, ph.len()).unwrap();
        assert_eq!(last.round.round, 1);
        assert!(last.target_step);
    }
}
