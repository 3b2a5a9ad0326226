//! The footer: key hints, or the search prompt while it is open.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::tui::app::App;
use crate::tui::theme;

/// Hints for a narrow footer: the essentials, the rest is one `?` away.
const SHORT: &[(&str, &str)] = &[
    ("space", "step"),
    ("enter", "run"),
    ("n/p", "user"),
    ("m", "mode"),
    ("tab", "panel"),
    ("?", "all keys"),
    ("q", "quit"),
];

const HINTS: &[(&str, &str)] = &[
    ("space", "step"),
    ("enter", "run"),
    ("n/p", "user"),
    ("/", "search"),
    ("m", "mode"),
    ("+/-", "N"),
    ("k/K", "K"),
    ("g/G", "gamma"),
    ("d", "draft"),
    ("c", "compare"),
    ("a", "auto"),
    ("r", "record"),
    ("?", "help"),
    ("q", "quit"),
];

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let line = match &app.ui.search {
        Some(q) => Line::from(vec![
            Span::styled(" / ", Style::new().fg(Color::Black).bg(Color::Yellow)),
            Span::raw(format!(" {q}▏")),
            Span::styled(
                "  user id or title · enter finds · esc cancels",
                theme::dim(),
            ),
        ]),
        None => {
            let mut spans = Vec::new();
            let hints = if area.width >= 118 { HINTS } else { SHORT };
            for (key, what) in hints {
                spans.push(Span::styled(
                    format!(" {key}"),
                    Style::new().fg(Color::Cyan),
                ));
                spans.push(Span::raw(format!(" {what}")));
            }
            Line::from(spans)
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}
