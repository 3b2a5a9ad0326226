//! Drafted beams as a tree by depth, revealed phase by phase.
//!
//! Each node shows its token, the draft probability q, the target probability p once the target
//! has scored the tree, whether it is in the target's top-K, and its verdict in colour. Nodes of
//! accepted steps are highlighted: that is the accepted prefix the round keeps. At the target-step
//! phase the target's own beams follow, with resampled ones (relaxed mode) marked.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::decode::trace::{DraftNode, TargetStepKind};
use crate::ids::Vocab;
use crate::tui::state::phase::{self, RoundView};
use crate::tui::state::App;
use crate::tui::view::layout::PanelId;
use crate::tui::view::theme;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let focused = app.ui.focus == PanelId::Beams;
    let (title, lines) = content(app);
    frame.render_widget(
        Paragraph::new(lines)
            .block(theme::block(title, focused))
            .scroll((app.ui.scroll.beams, 0)),
        area,
    );
}

/// Lines of content, for scroll limits.
pub fn rows(app: &App) -> usize {
    content(app).1.len()
}

/// The panel title and lines for the current phase.
fn content(app: &App) -> (String, Vec<Line<'static>>) {
    match &app.current {
        None if app.running() => (
            " Drafted beams ".to_string(),
            vec![Line::raw("decoding this user...")],
        ),
        None => (
            " Drafted beams ".to_string(),
            vec![Line::raw("space steps through a decode, enter runs it")],
        ),
        Some(c) => {
            let rounds = c.run.trace.rounds.len();
            match phase::view(&c.run.trace, c.cursor) {
                None => (
                    format!(" Drafted beams · {rounds} rounds "),
                    vec![
                        Line::raw("Decoded. Space shows round 1 phase by phase:"),
                        Line::raw("draft depth 1, 2, .., verify, accept, target step."),
                        Line::raw("Enter jumps to the end."),
                    ],
                ),
                Some(v) => (
                    format!(
                        " Drafted beams · round {} of {rounds} · {} ",
                        v.round.round + 1,
                        v.stage.label()
                    ),
                    tree_lines(&v, &app.vocab),
                ),
            }
        }
    }
}

/// The lines of one round's tree as visible in `v`.
pub fn tree_lines(v: &RoundView, vocab: &Vocab) -> Vec<Line<'static>> {
    let r = v.round;
    let mut lines = Vec::new();
    let mut summary = format!(
        "from depth {} · drafted {} step{}",
        r.start_depth,
        r.drafted,
        if r.drafted == 1 { "" } else { "s" }
    );
    if v.judged && r.drafted > 0 {
        summary.push_str(&format!(" · accepted {}", r.accepted));
    }
    lines.push(Line::styled(summary, theme::dim()));

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
    // At the target-step phase the target's own beams are the news: show them first.
    if v.target_step {
        target_step_lines(&mut lines, v, vocab);
        lines.push(Line::raw(""));
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
            push_children(&mut lines, v, vocab, &kids, top, "");
        } else {
            for &i in top {
                push_subtree(&mut lines, v, vocab, &kids, i, "", "");
            }
        }
    }
    if r.drafted == 0 {
        lines.push(Line::raw("nothing drafted: one step remained"));
    }
    lines
}

/// Draws node `i` on a line starting with `lead`, then its subtree; `indent` prefixes the
/// children's lines (it carries the vertical rules of unfinished ancestors).
fn push_subtree(
    lines: &mut Vec<Line<'static>>,
    v: &RoundView,
    vocab: &Vocab,
    kids: &[Vec<usize>],
    i: usize,
    lead: &str,
    indent: &str,
) {
    lines.push(node_line(v, vocab, &v.round.nodes[i], lead));
    push_children(lines, v, vocab, kids, &kids[i], indent);
}

fn push_children(
    lines: &mut Vec<Line<'static>>,
    v: &RoundView,
    vocab: &Vocab,
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
            kids,
            c,
            &format!("{indent}{conn}"),
            &format!("{indent}{cont}"),
        );
    }
}

fn node_line(v: &RoundView, vocab: &Vocab, nd: &DraftNode, lead: &str) -> Line<'static> {
    let token = format!("{:<7}", vocab.token(nd.token));
    let mut token_style = Style::new().fg(theme::depth_color(nd.depth));
    let mut spans = vec![Span::styled(lead.to_string(), theme::dim())];
    if v.judged {
        token_style = Style::new().fg(theme::verdict_color(nd.verdict));
        // The accepted prefix: kept beams of accepted steps.
        if nd.verdict == crate::decode::trace::Verdict::Accepted && nd.depth <= v.round.accepted {
            token_style = token_style.add_modifier(Modifier::BOLD | Modifier::REVERSED);
        }
    }
    spans.push(Span::styled(token, token_style));
    spans.push(Span::raw(format!(" q {}", theme::prob(nd.q))));
    match nd.p.filter(|_| v.scored) {
        Some(p) => spans.push(Span::raw(format!(" p {}", theme::prob(p)))),
        None => spans.push(Span::styled(" p  ?", theme::dim())),
    }
    if v.judged {
        spans.push(Span::styled(
            format!(" {}", theme::verdict_name(nd.verdict)),
            Style::new().fg(theme::verdict_color(nd.verdict)),
        ));
    }
    if v.scored && nd.in_target_topk {
        spans.push(Span::styled(" *K", theme::bold()));
    }
    Line::from(spans)
}

fn target_step_lines(lines: &mut Vec<Line<'static>>, v: &RoundView, vocab: &Vocab) {
    let step = &v.round.target_step;
    lines.push(Line::styled(
        format!(
            "target {} step · depth {} · {} beams",
            phase::kind_name(step.kind),
            step.depth,
            step.beams.len()
        ),
        theme::bold(),
    ));
    for (b, drafted) in step.beams.iter().zip(
        step.drafted_node
            .iter()
            .copied()
            .chain(std::iter::repeat(None)),
    ) {
        let (tag, style) = match (drafted, step.kind) {
            (Some(_), _) => (
                "drafted",
                Style::new().fg(theme::verdict_color(
                    crate::decode::trace::Verdict::Accepted,
                )),
            ),
            (None, TargetStepKind::Resampled) => ("resampled", Style::new().fg(theme::RESAMPLED)),
            (None, _) => ("target's own", theme::dim()),
        };
        lines.push(Line::from(vec![
            Span::raw(format!("  {} {:.2} ", vocab.render(&b.tokens), b.score)),
            Span::styled(tag, style),
        ]));
    }
}
