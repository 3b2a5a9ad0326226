//! The `?` overlay: every key of the key table, and what the colours mean.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use crate::decode::trace::{Mode, Verdict};
use crate::tui::keys::BINDINGS;
use crate::tui::view::theme;

pub fn render(frame: &mut Frame, area: Rect) {
    let keys: Vec<Line> = BINDINGS
        .iter()
        .map(|b| {
            Line::from(vec![
                Span::styled(format!(" {:<6}", b.label), theme::bold()),
                Span::raw(b.help),
            ])
        })
        .collect();
    let colour = |v: Verdict, mode: Mode| {
        Span::styled(
            format!("{} ", theme::verdict_name(v, mode)),
            Style::new().fg(theme::verdict_color(v)),
        )
    };
    let mut strict = vec![Span::raw(" strict tokens: ")];
    for v in [Verdict::Accepted, Verdict::Rejected, Verdict::Pending] {
        strict.push(colour(v, Mode::Strict));
    }
    strict.push(Span::raw(
        "· #r: rank in the draft's ordering of all candidates",
    ));
    let mut relaxed = vec![Span::raw(" relaxed tokens: ")];
    for v in [Verdict::Accepted, Verdict::NotKept, Verdict::Failed] {
        relaxed.push(colour(v, Mode::Relaxed));
    }
    relaxed.push(Span::styled(
        "resampled ",
        Style::new().fg(theme::RESAMPLED),
    ));
    relaxed.push(Span::raw(
        "· passes if u ≤ p/q; not kept: passed, not among the K kept",
    ));
    let notes = vec![
        Line::raw(" q: draft probability of the token, p: the target's (given the parent)"),
        Line::from(strict),
        Line::from(relaxed),
        Line::raw(" a depth is accepted or rejected; a token is kept or not (strict: kept = in the target's top-K)"),
        Line::raw(" WS = target-only ms / speculative ms, measured here; AS = accepted drafted steps per user"),
        Line::raw(" Changing a parameter re-decodes the user; older results are dropped."),
    ];
    // One column when it fits, else two side by side.
    let inner_h = area.height.saturating_sub(2 + notes.len() as u16).max(1) as usize;
    let columns = if keys.len() <= inner_h { 1 } else { 2 };
    let rows = keys.len().div_ceil(columns);
    let w = area.width.min(if columns == 1 { 78 } else { 150 });
    let h = area.height.min((rows + notes.len()) as u16 + 2);
    let rect = area.centered(Constraint::Length(w), Constraint::Length(h));
    frame.render_widget(Clear, rect);
    let block = theme::block(" Help · esc closes ", true);
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    let [body, foot] = inner.layout(&Layout::vertical([
        Constraint::Fill(1),
        Constraint::Length(notes.len() as u16),
    ]));
    let cols = body.layout_vec(&Layout::horizontal(vec![
        Constraint::Ratio(
            1,
            columns as u32
        );
        columns
    ]));
    for (chunk, col) in keys.chunks(rows).zip(cols.iter()) {
        frame.render_widget(Paragraph::new(chunk.to_vec()), *col);
    }
    frame.render_widget(Paragraph::new(notes), foot);
}
