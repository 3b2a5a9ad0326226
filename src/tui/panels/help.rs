//! The `?` overlay: every key, and what the colours mean.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use crate::decode::trace::Verdict;
use crate::tui::theme;

const KEYS: &[(&str, &str)] = &[
    (
        "space",
        "show the next phase: draft depth, verify, accept, target step",
    ),
    ("enter", "show the user's finished decode"),
    ("n / p", "next / previous user"),
    ("/", "search a user by id or by a title in its history"),
    ("m", "toggle strict / relaxed verification"),
    ("+ / -", "wider / narrower draft beam N"),
    ("K / k", "more / fewer recommendations K"),
    ("G / g", "more / fewer drafted steps gamma"),
    ("d", "next draft model"),
    ("c", "compare two drafts on this user"),
    ("a", "auto-run over the following users (a again stops)"),
    ("r", "start recording; r again saves to sessions/"),
    ("tab", "next panel (and next tab on small screens)"),
    ("1-4", "select a tab on small screens"),
    (
        "arrows",
        "scroll the focused panel (wheel: panel under the mouse)",
    ),
    ("?", "this help"),
    ("esc", "close help or search"),
    ("q", "quit (saves a running recording)"),
    ("", ""),
    (
        "",
        "Changing a parameter re-decodes the user; older results are dropped.",
    ),
];

pub fn render(frame: &mut Frame, area: Rect) {
    let w = area.width.min(78);
    let h = area.height.min(KEYS.len() as u16 + 4);
    let rect = area.centered(Constraint::Length(w), Constraint::Length(h));
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!(" {k:<7}"), theme::bold()),
                Span::raw(*what),
            ])
        })
        .collect();
    let mut legend = vec![Span::raw(" colours: ")];
    for v in [Verdict::Accepted, Verdict::Rejected, Verdict::Pending] {
        legend.push(Span::styled(
            format!("{} ", theme::verdict_name(v)),
            Style::new().fg(theme::verdict_color(v)),
        ));
    }
    legend.push(Span::styled(
        "resampled ",
        Style::new().fg(theme::RESAMPLED),
    ));
    lines.push(Line::from(legend));
    lines.push(Line::raw(
        " *K: in the target's top-K · tree and grid colours: depth 1, 2, 3",
    ));
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(theme::block(" Help · esc closes ", true)),
        rect,
    );
}
