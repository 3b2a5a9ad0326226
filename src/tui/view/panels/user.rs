//! The user panel: ground truth first (it is short and is what the recommendations are judged
//! against), then the history newest first (the items that weigh most on the next one). Whole
//! identifiers, titles wrapped under them.

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::session::UserView;
use crate::tui::state::App;
use crate::tui::view::layout::{self, PanelId};
use crate::tui::view::theme;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let focused = app.ui.focus == PanelId::User;
    let Some(u) = app.user_view() else {
        frame.render_widget(
            Paragraph::new("no user").block(theme::block(" User ", focused)),
            area,
        );
        return;
    };
    let title = format!(
        " User {} · {} of {} · {} items ",
        u.user,
        app.user + 1,
        app.users.len(),
        u.history.len()
    );
    frame.render_widget(
        Paragraph::new(lines(app, u, area.width.saturating_sub(2) as usize))
            .block(theme::block(title, focused))
            .scroll((app.ui.scroll.user, 0)),
        area,
    );
}

/// Lines of content, for scroll limits.
pub fn rows(app: &App) -> usize {
    let width = layout::rect_of(app, PanelId::User).map_or(30, |r| r.width.saturating_sub(2));
    app.user_view()
        .map_or(0, |u| lines(app, u, width as usize).len())
}

/// `title` wrapped to `width` under an indent of `indent` columns.
fn titled(title: &str, indent: usize, width: usize) -> Vec<Line<'static>> {
    theme::wrap(title, width.saturating_sub(indent).max(8))
        .into_iter()
        .map(|l| {
            Line::styled(
                format!("{}{}", " ".repeat(indent), l.trim_start()),
                theme::dim(),
            )
        })
        .collect()
}

fn lines(app: &App, u: &UserView, width: usize) -> Vec<Line<'static>> {
    // Hits are only revealed once the user's decode is shown finished.
    let finals = app
        .current
        .as_ref()
        .filter(|c| c.finished())
        .map(|c| &c.run.trace.beams);
    let mut lines = vec![Line::styled("Next (ground truth)", theme::bold())];
    for t in &u.truth {
        let hit = finals.is_some_and(|b| b.iter().any(|b| b.tokens == t.tokens));
        let mark = if hit {
            Span::styled("* ", Style::new().fg(theme::HIT))
        } else {
            Span::raw("  ")
        };
        lines.push(Line::from(vec![mark, Span::raw(t.ident.clone())]));
        lines.extend(titled(&t.titles.join(" / "), 4, width));
    }
    lines.push(Line::styled("History, newest first", theme::bold()));
    for (i, h) in u.history.iter().enumerate().rev() {
        lines.push(Line::from(vec![
            Span::styled(format!("{:>2} ", i + 1), theme::dim()),
            Span::raw(h.ident.clone()),
        ]));
        lines.extend(titled(&h.title, 3, width));
    }
    lines
}
