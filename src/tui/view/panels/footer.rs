//! The footer: key hints from the key table, or the search or save-path prompt while open.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::tui::keys::BINDINGS;
use crate::tui::state::App;
use crate::tui::view::theme;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    if let Some(p) = &app.ui.save_path {
        let line = Line::from(vec![
            Span::styled(" save to ", Style::new().fg(Color::Black).bg(Color::Red)),
            Span::raw(format!(" {p}▏")),
            Span::styled("  enter saves · esc keeps it unsaved", theme::dim()),
        ]);
        frame.render_widget(Paragraph::new(line), area);
        return;
    }
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
            // Narrow terminals keep the essentials; the rest is one `?` away.
            let wide = area.width >= 118;
            let mut spans = Vec::new();
            for b in BINDINGS.iter().filter(|b| b.show.on(wide)) {
                if let Some((keys, what)) = b.hint {
                    spans.push(Span::styled(
                        format!(" {keys}"),
                        Style::new().fg(Color::Cyan),
                    ));
                    spans.push(Span::raw(format!(" {what}")));
                }
            }
            Line::from(spans)
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}
