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
        let chunks = wrap(l, width);
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

/// Greedy word wrap to `width` columns, continuation lines indented by two; words longer than a
/// line are cut.
fn wrap(s: &str, width: usize) -> Vec<String> {
    if width <= 4 || s.chars().count() <= width {
        return vec![s.to_string()];
    }
    let mut out: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in s.split(' ') {
        let limit = if out.is_empty() { width } else { width - 2 };
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > limit {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        // A word wider than a whole line: cut it.
        while line.chars().count() > if out.is_empty() { width } else { width - 2 } {
            let limit = if out.is_empty() { width } else { width - 2 };
            let head: String = line.chars().take(limit).collect();
            line = line.chars().skip(limit).collect();
            out.push(head);
        }
    }
    if !line.is_empty() {
        out.push(line);
    }
    out.iter()
        .enumerate()
        .map(|(i, l)| if i == 0 { l.clone() } else { format!("  {l}") })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrap_indents_continuations() {
        assert_eq!(
            super::wrap("round 1: target scores 16 tokens", 16),
            vec!["round 1: target", "  scores 16", "  tokens"]
        );
        assert_eq!(super::wrap("abc", 8), vec!["abc"]);
        assert_eq!(
            super::wrap("abcdefghijklmn x", 8),
            vec!["abcdefgh", "  ijklmn", "  x"]
        );
    }
}
