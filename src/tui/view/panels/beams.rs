//! Drafted beams as a tree by depth, revealed phase by phase, with what explains the outcome
//! first.
//!
//! From the top: the phase's caption (the rule at work and its outcome, see
//! [`phase::narrate`]); at a judged round the verifier's findings per depth (strict: the target
//! beams the draft missed, with their rank in the draft's own ordering and the smallest N that
//! accepts the depth; relaxed: how many passed u <= p/q, and the residual a resampled step drew
//! from); at the target step its beams, those the draft did not draft first; a one-line legend;
//! then the tree. Each node shows its token, the draft probability q, the target probability p
//! once the target has scored the tree, the draft rank (strict) or u and p/q (relaxed), and its
//! verdict in words and colour. Everything shown is read from the trace.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::decode::trace::{DepthCheck, DraftNode, Mode, TargetStepKind, Verdict};
use crate::ids::Vocab;
use crate::tui::state::phase::{self, RoundView};
use crate::tui::state::App;
use crate::tui::view::layout::{self, PanelId};
use crate::tui::view::theme;

/// Missed beams and residual entries listed per depth before "and N more".
const LIST: usize = 6;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let focused = app.ui.focus == PanelId::Beams;
    let (title, lines) = content(app, area.width.saturating_sub(2) as usize);
    frame.render_widget(
        Paragraph::new(lines)
            .block(theme::block(title, focused))
            .scroll((app.ui.scroll.beams, 0)),
        area,
    );
}

/// Lines of content at the panel's current width, for scroll limits.
pub fn rows(app: &App) -> usize {
    let width = layout::rect_of(app, PanelId::Beams).map_or(60, |r| r.width.saturating_sub(2));
    content(app, width as usize).1.len()
}

/// The panel title and lines for the current phase, wrapped to `width`.
fn content(app: &App, width: usize) -> (String, Vec<Line<'static>>) {
    let wrapped = |text: &str, style: Style| -> Vec<Line<'static>> {
        theme::wrap(text, width)
            .into_iter()
            .map(|l| Line::styled(l, style))
            .collect()
    };
    match &app.current {
        None if app.running() => (
            " Drafted beams ".to_string(),
            vec![Line::raw("decoding this user...")],
        ),
        None => (
            " Drafted beams ".to_string(),
            wrapped("space steps through a decode, enter runs it", Style::new()),
        ),
        Some(c) => {
            let rounds = c.run.trace.rounds.len();
            match phase::view(&c.run.trace, c.cursor) {
                None => {
                    let mut lines = wrapped(
                        &format!(
                            "Decoded in {rounds} round{}. Space shows round 1 one phase at a time: draft depth 1, 2, .., verify, accept, target step. Enter jumps to the end.",
                            if rounds == 1 { "" } else { "s" }
                        ),
                        Style::new(),
                    );
                    lines.push(Line::raw(""));
                    lines.extend(wrapped(
                        "Each round the small draft model proposes N beams per depth for up to gamma depths; the target checks them all in one pass and keeps what its rule accepts.",
                        theme::dim(),
                    ));
                    (format!(" Drafted beams · {rounds} rounds "), lines)
                }
                Some(v) => {
                    let mut lines = Vec::new();
                    if let Some(caption) = phase::narrate(&c.run.trace, c.cursor, &app.vocab) {
                        lines.extend(wrapped(&caption, theme::bold()));
                    }
                    lines.extend(tree_lines(&v, &app.vocab, c.run.trace.params.mode, width));
                    (
                        format!(
                            " Round {} of {rounds} · {} ",
                            v.round.round + 1,
                            v.stage.label(v.round)
                        ),
                        lines,
                    )
                }
            }
        }
    }
}

/// The findings, the target step, the legend and the tree of one round as visible in `v`.
pub fn tree_lines(v: &RoundView, vocab: &Vocab, mode: Mode, width: usize) -> Vec<Line<'static>> {
    let r = v.round;
    let mut lines = Vec::new();
    // At the target-step phase the target's own beams are the news: show them first, with
    // the residual they were drawn from; at the accept phase, what the verifier found.
    if v.target_step {
        target_step_lines(&mut lines, v, vocab, width);
        if let Some(res) = r.checks.last().and_then(|c| c.residual.as_ref()) {
            residual_lines(&mut lines, res, vocab, width);
        }
    } else if v.judged && mode == Mode::Strict {
        // (Relaxed: the caption counts what passed, and every node shows its u and p/q.)
        for c in &r.checks {
            findings(&mut lines, v, c, vocab, mode, width);
        }
    }
    if v.scored && r.drafted > 0 {
        let legend = match mode {
            Mode::Strict => "q draft, p target prob · #r draft rank · green in the target's top-K, red not, grey unexamined",
            Mode::Relaxed => "q draft, p target prob · u draw vs sequence p/q · green kept, amber passed but not kept, red failed",
        };
        for l in theme::wrap(legend, width) {
            lines.push(Line::styled(l, theme::dim()));
        }
    }

    // Children lists from parent links; depth-1 nodes hang off their round-start beam.
    let visible = |i: usize| r.nodes[i].depth <= v.depth;
    let mut kids: Vec<Vec<usize>> = vec![Vec::new(); r.nodes.len()];
    let mut tops: Vec<Vec<usize>> = vec![Vec::new(); r.roots.len().max(1)];
    for (i, nd) in r.nodes.iter().enumerate() {
        if !visible(i) {
            continue;
        }
        // Sessions are validated on load; an index that is still out of range is skipped
        // rather than trusted.
        match nd.parent {
            Some(p) if p < i => {
                if let Some(k) = kids.get_mut(p) {
                    k.push(i)
                }
            }
            Some(_) => {}
            None => {
                let root = nd.root.min(tops.len() - 1);
                tops[root].push(i)
            }
        }
    }
    // The first round starts from the empty prefix: no root line, depth 1 at the margin.
    let rooted = r.start_depth > 0;
    for (ri, top) in tops.iter().enumerate() {
        if rooted {
            let Some(root) = r.roots.get(ri).filter(|_| !top.is_empty()) else {
                continue;
            };
            lines.push(Line::from(vec![
                Span::styled("▸ ", theme::dim()),
                Span::raw(vocab.render(&root.tokens)),
                Span::styled(format!(" {:.2}", root.score), theme::dim()),
            ]));
            push_children(&mut lines, v, vocab, mode, &kids, top, "");
        } else {
            for &i in top {
                push_subtree(&mut lines, v, vocab, mode, &kids, i, "", "");
            }
        }
    }
    if r.drafted == 0 {
        lines.push(Line::raw("nothing drafted: one step remained"));
    }
    lines
}

/// What the verifier found at one depth: why it was accepted or rejected, wrapped to `width`.
fn findings(
    lines: &mut Vec<Line<'static>>,
    v: &RoundView,
    c: &DepthCheck,
    vocab: &Vocab,
    mode: Mode,
    width: usize,
) {
    let depth = v.round.start_depth + c.depth;
    let color = if c.accepted {
        theme::verdict_color(Verdict::Accepted)
    } else {
        theme::verdict_color(Verdict::Rejected)
    };
    let mut out: Vec<(String, Style)> = Vec::new();
    let mut head = format!(
        "depth {depth} {}",
        if c.accepted { "accepted" } else { "rejected" }
    );
    match mode {
        Mode::Strict => {
            if let Some(n) = c.n_needed {
                head.push_str(&format!(
                    ": smallest accepting N {n} of {} candidates{}",
                    c.candidates,
                    if c.depth > 1 {
                        " (children of the beams drafted)"
                    } else {
                        ""
                    }
                ));
            }
        }
        Mode::Relaxed => head.push_str(&format!(
            ": {} of {} examined passed u <= p/q",
            c.passed, c.examined
        )),
    }
    out.push((head, Style::new().fg(color).add_modifier(Modifier::BOLD)));
    let missed = Style::new().fg(theme::MISSED);
    for m in c.missed.iter().take(LIST) {
        out.push((
            format!(
                "missed {} target #{} draft rank #{} q {} p {}",
                vocab.render(&m.tokens),
                m.target_rank,
                m.draft_rank,
                theme::prob(m.q),
                theme::prob(m.p)
            ),
            missed,
        ));
    }
    if c.missed.len() > LIST {
        out.push((
            format!("and {} more missed", c.missed.len() - LIST),
            theme::dim(),
        ));
    }
    for (i, (text, style)) in out.into_iter().enumerate() {
        let indent = if i == 0 { "" } else { "  " };
        for l in theme::wrap(&format!("{indent}{text}"), width) {
            lines.push(Line::styled(l, style));
        }
    }
}

/// The residual norm(max(0, p - q)) a resampled step drew from: its mass and largest entries.
fn residual_lines(
    lines: &mut Vec<Line<'static>>,
    res: &crate::decode::trace::Residual,
    vocab: &Vocab,
    width: usize,
) {
    let style = Style::new().fg(theme::RESAMPLED);
    let mut text = vec![format!(
        "residual r = max(0, p - q) / {:.2}: {} drawn{}; largest r:",
        res.mass,
        res.drawn,
        if res.fallback {
            " (it ran out: later draws from p)"
        } else {
            ""
        }
    )];
    for e in res.top.iter().take(3) {
        text.push(format!(
            "  r {} {} (p {} q {})",
            theme::num(e.r),
            vocab.render(&e.tokens),
            theme::num(e.p),
            theme::num(e.q)
        ));
    }
    for t in text {
        for l in theme::wrap(&t, width) {
            lines.push(Line::styled(l, style));
        }
    }
}

/// Draws node `i` on a line starting with `lead`, then its subtree; `indent` prefixes the
/// children's lines (it carries the vertical rules of unfinished ancestors).
#[allow(clippy::too_many_arguments)]
fn push_subtree(
    lines: &mut Vec<Line<'static>>,
    v: &RoundView,
    vocab: &Vocab,
    mode: Mode,
    kids: &[Vec<usize>],
    i: usize,
    lead: &str,
    indent: &str,
) {
    lines.push(node_line(v, vocab, mode, &v.round.nodes[i], lead));
    push_children(lines, v, vocab, mode, kids, &kids[i], indent);
}

fn push_children(
    lines: &mut Vec<Line<'static>>,
    v: &RoundView,
    vocab: &Vocab,
    mode: Mode,
    kids: &[Vec<usize>],
    children: &[usize],
    indent: &str,
) {
    for (j, &c) in children.iter().enumerate() {
        let last = j + 1 == children.len();
        let (conn, cont) = if last {
            ("└ ", "  ")
        } else {
            ("├ ", "│ ")
        };
        push_subtree(
            lines,
            v,
            vocab,
            mode,
            kids,
            c,
            &format!("{indent}{conn}"),
            &format!("{indent}{cont}"),
        );
    }
}

/// The text of a node line after its token: q, p, and the test that decided it. Shared with the
/// tests that check every verdict on screen against the numbers beside it.
pub fn node_numbers(nd: &DraftNode, scored: bool) -> String {
    let mut s = format!(" q {}", theme::prob(nd.q));
    match nd.p.filter(|_| scored) {
        Some(p) => s.push_str(&format!(" p {}", theme::prob(p))),
        None => s.push_str(" p  ?"),
    }
    if !scored {
        return s;
    }
    if let Some(r) = nd.draft_rank {
        s.push_str(&format!(" #{r}"));
    }
    if let Some(t) = nd.test {
        let cmp = if t.passed() { "≤" } else { ">" };
        s.push_str(&format!(
            " u {} {cmp} p/q {}",
            theme::num(t.u),
            theme::num(t.ratio)
        ));
    }
    s
}

fn node_line(
    v: &RoundView,
    vocab: &Vocab,
    mode: Mode,
    nd: &DraftNode,
    lead: &str,
) -> Line<'static> {
    let token = format!("{:<7}", vocab.token(nd.token));
    let mut token_style = Style::new().fg(theme::depth_color(nd.depth));
    let mut spans = vec![Span::styled(lead.to_string(), theme::dim())];
    if v.judged {
        token_style = Style::new().fg(theme::verdict_color(nd.verdict));
        // The accepted prefix: kept beams of accepted depths.
        if nd.verdict == Verdict::Accepted && nd.depth <= v.round.accepted {
            token_style = token_style.add_modifier(Modifier::BOLD | Modifier::REVERSED);
        }
    }
    spans.push(Span::styled(token, token_style));
    spans.push(Span::raw(node_numbers(nd, v.scored)));
    if v.judged {
        spans.push(Span::styled(
            format!(" {}", theme::verdict_name(nd.verdict, mode)),
            Style::new().fg(theme::verdict_color(nd.verdict)),
        ));
    }
    Line::from(spans)
}

/// The target's own step: the beams the draft did not draft first (they are the news), then the
/// drafted ones.
fn target_step_lines(lines: &mut Vec<Line<'static>>, v: &RoundView, vocab: &Vocab, width: usize) {
    let step = &v.round.target_step;
    let own = step.drafted_node.iter().filter(|d| d.is_none()).count();
    let head = match step.kind {
        TargetStepKind::Bonus | TargetStepKind::Plain => format!(
            "target {} step at depth {}: its own top-{} there",
            phase::kind_name(step.kind),
            step.depth,
            step.beams.len()
        ),
        _ => format!(
            "target {} step at depth {}: {} beams, {} not drafted",
            phase::kind_name(step.kind),
            step.depth,
            step.beams.len(),
            own
        ),
    };
    for l in theme::wrap(&head, width) {
        lines.push(Line::styled(l, theme::bold()));
    }
    let mut order: Vec<usize> = (0..step.beams.len()).collect();
    order.sort_by_key(|&i| step.drafted_node.get(i).copied().flatten().is_some());
    for i in order {
        let b = &step.beams[i];
        let drafted = step.drafted_node.get(i).copied().flatten();
        let draw = step.draws.get(i).copied().flatten();
        let (tag, style) = match (drafted, draw, step.kind) {
            (_, Some(d), _) => (
                format!(
                    "resampled (r {}{})",
                    theme::num(d.prob),
                    if d.fallback { ", from p" } else { "" }
                ),
                Style::new().fg(theme::RESAMPLED),
            ),
            (Some(_), None, TargetStepKind::Resampled) => (
                "drafted, passed".to_string(),
                Style::new().fg(theme::verdict_color(Verdict::Accepted)),
            ),
            (Some(_), None, _) => (
                "drafted".to_string(),
                Style::new().fg(theme::verdict_color(Verdict::Accepted)),
            ),
            (None, None, TargetStepKind::Resampled) => {
                ("resampled".to_string(), Style::new().fg(theme::RESAMPLED))
            }
            (None, None, TargetStepKind::Correction) => (
                "target's own (missed by the draft)".to_string(),
                Style::new().fg(theme::MISSED),
            ),
            (None, None, _) => ("target's own".to_string(), theme::dim()),
        };
        lines.push(Line::from(vec![
            Span::raw(format!("  {} {:.2} ", vocab.render(&b.tokens), b.score)),
            Span::styled(tag, style),
        ]));
    }
}
