//! The log panel: the tui-logger widget when the explorer owns the logger, else the explorer's
//! own narration (tests, or when another logger was installed first), which is deterministic.

use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use tui_logger::{TuiLoggerLevelOutput, TuiLoggerWidget};

use crate::tui::state::App;
use crate::tui::view::theme;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let block = theme::block(" Log ", false);
    if app.use_tui_logger {
        frame.render_widget(
            TuiLoggerWidget::default()
                .block(block)
                .output_separator(' ')
                .output_timestamp(Some("%H:%M:%S".to_string()))
                .output_level(Some(TuiLoggerLevelOutput::Abbreviated))
                .output_target(false)
                .output_file(false)
                .output_line(false)
                .style_error(ratatui::style::Style::new().fg(ratatui::style::Color::Red))
                .style_warn(ratatui::style::Style::new().fg(ratatui::style::Color::Yellow)),
            area,
        );
        return;
    }
    // Newest at the bottom, like a terminal; long lines wrap with an indent so nothing is cut.
    let width = area.width.saturating_sub(2) as usize;
    let rows = area.height.saturating_sub(2) as usize;
    let mut wrapped: Vec<Line> = Vec::new();
    for l in app.narration.iter().rev() {
        let chunks = theme::wrap(l, width);
        for c in chunks.into_iter().rev() {
            wrapped.push(Line::raw(c));
        }
        if wrapped.len() >= rows {
            break;
        }
    }
    wrapped.truncate(rows);
    wrapped.reverse();
    frame.render_widget(Paragraph::new(wrapped).block(block), area);
}

/// The compact layout's narration: the latest line the explorer narrated (the current phase's
/// caption when stepping), wrapped to the lines available, the rest cut with an ellipsis.
pub fn caption(app: &App, frame: &mut Frame, area: Rect) {
    let Some(last) = app.narration.last() else {
        return;
    };
    let width = area.width as usize;
    let rows = area.height as usize;
    let mut lines = theme::wrap(last, width);
    if lines.len() > rows {
        lines.truncate(rows);
        if let Some(l) = lines.last_mut() {
            *l = theme::trunc(&format!("{l} …"), width);
            if !l.ends_with('…') {
                l.push('…');
            }
        }
    }
    let text: Vec<Line> = lines
        .into_iter()
        .map(|l| {
            Line::styled(
                l,
                ratatui::style::Style::new().fg(ratatui::style::Color::Yellow),
            )
        })
        .collect();
    frame.render_widget(Paragraph::new(text), area);
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrap_indents_continuations() {
        use crate::tui::view::theme::wrap;
        assert_eq!(
            wrap("round 1: target scores 16 tokens", 16),
            vec!["round 1: target", "  scores 16", "  tokens"]
        );
        assert_eq!(wrap("abc", 8), vec!["abc"]);
        assert_eq!(
            wrap("abcdefghijklmn x", 8),
            vec!["abcdefgh", "  ijklmn", "  x"]
        );
    }
}
