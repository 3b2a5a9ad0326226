//! The step-by-phase presentation of a finished trace.
//!
//! The engine decodes a whole user at once; the explorer then walks the recorded rounds one phase
//! at a time (draft depth 1, 2, .., verify, accept, target step) so a newcomer sees the algorithm
//! unfold. A cursor over the flat list of phases is all the state this needs: the panels ask
//! [`Cursor::view`] what is visible at the current point.

use crate::decode::trace::{DecodeTrace, RoundTrace};

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
    pub fn label(self) -> String {
        match self {
            Stage::Draft(d) => format!("draft depth {d}"),
            Stage::Verify => "verify".into(),
            Stage::Accept => "accept".into(),
            Stage::TargetStep => "target step".into(),
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

/// One sentence for the log describing what the phase at `cursor` (1-based) showed.
pub fn narrate(trace: &DecodeTrace, cursor: Cursor) -> Option<String> {
    let v = view(trace, cursor)?;
    let r = v.round;
    let n = r.round + 1;
    Some(match v.stage {
        Stage::Draft(d) => {
            let count = r.nodes.iter().filter(|x| x.depth == d).count();
            format!(
                "round {n}: draft step {d}/{}: {count} beams at depth {}",
                r.drafted,
                r.start_depth + d
            )
        }
        Stage::Verify => format!(
            "round {n}: target scores {} tokens in one pass",
            r.nodes.len()
        ),
        Stage::Accept => format!(
            "round {n}: {} of {} drafted steps accepted",
            r.accepted, r.drafted
        ),
        Stage::TargetStep => format!(
            "round {n}: target {} step, depth {}",
            kind_name(r.target_step.kind),
            r.target_step.depth
        ),
    })
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
