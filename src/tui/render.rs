//! Draws the whole screen from the app state: the layout decides where, the panels decide what.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Tabs, Wrap};
use ratatui::Frame;

use super::app::{App, Tab};
use super::layout::{self, PanelId};
use super::panels;

pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    if layout::too_small(area.width, area.height) {
        too_small(frame, area);
        return;
    }
    for (panel, rect) in layout::panels(app, area) {
        match panel {
            PanelId::Header => panels::header::render(app, frame, rect),
            PanelId::Tabs => tabs(app, frame, rect),
            PanelId::User => panels::user::render(app, frame, rect),
            PanelId::Beams => panels::beams::render(app, frame, rect),
            PanelId::Attention => panels::attention::render(app, frame, rect),
            PanelId::Compare => panels::compare::render(app, frame, rect),
            PanelId::Recs => panels::recs::render(app, frame, rect),
            PanelId::Speedup => panels::speedup::render(app, frame, rect),
            PanelId::Log => panels::log::render(app, frame, rect),
            PanelId::Footer => panels::footer::render(app, frame, rect),
        }
    }
    if app.ui.help {
        panels::help::render(frame, area);
    }
}

fn tabs(app: &App, frame: &mut Frame, area: Rect) {
    let selected = Tab::ALL.iter().position(|t| *t == app.ui.tab);
    frame.render_widget(
        Tabs::new(Tab::ALL.iter().map(|t| t.title()))
            .select(selected)
            .highlight_style(
                Style::new()
                    .fg(Color::Black)
                    .bg(Color::Cyan)
                    .add_modifier(Modifier::BOLD),
            ),
        area,
    );
}

/// A clear message instead of squeezed panels.
fn too_small(frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::raw(format!(
            "Terminal too small: {}x{}.",
            area.width, area.height
        )),
        Line::raw(format!(
            "The explorer needs at least {}x{}; enlarge the window, or press q to quit.",
            layout::MIN_WIDTH,
            layout::MIN_HEIGHT
        )),
    ];
    let h = area.height.min(4);
    let rect = area.centered_vertically(Constraint::Length(h));
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .alignment(ratatui::layout::Alignment::Center),
        rect,
    );
}
