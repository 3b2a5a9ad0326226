//! The explorer's view: draws the whole screen from the state. The layout decides where, the
//! panels decide what. View code reads [`App`]; the state never calls into the view.

pub mod layout;
pub mod panels;
pub mod theme;

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Tabs, Wrap};
use ratatui::Frame;

use crate::tui::state::{App, PanelId, Tab};

/// Draws the screen. Before drawing it clamps the panels' scroll offsets to their content (the
/// one thing it writes back, as ratatui's stateful widgets do), so scrolling past the end never
/// needs as many key presses to come back.
pub fn render(app: &mut App, frame: &mut Frame) {
    clamp_scroll(app);
    let app = &*app;
    let area = frame.area();
    if layout::too_small(area.width, area.height) {
        too_small(frame, area);
        scrub(frame.buffer_mut());
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
            PanelId::Caption => panels::log::caption(app, frame, rect),
            PanelId::Footer => panels::footer::render(app, frame, rect),
        }
    }
    if app.ui.help {
        panels::help::render(frame, area);
    }
    scrub(frame.buffer_mut());
}

/// Replaces any cell holding a control character with `�`. Titles, tokens, file names and
/// messages come from files; ratatui drops control characters from spans, but not every widget
/// writes through spans (the log widget sets cell symbols itself), and one ESC reaching the
/// terminal would act on it. This pass over the finished frame covers every panel at once.
pub fn scrub(buf: &mut ratatui::buffer::Buffer) {
    for cell in buf.content.iter_mut() {
        if cell.symbol().contains(char::is_control) {
            cell.set_symbol("\u{FFFD}");
        }
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

/// Keeps every scroll offset within its panel's content (at least the last line stays in view).
fn clamp_scroll(app: &mut App) {
    let max = |rows: usize| rows.saturating_sub(1).min(u16::MAX as usize) as u16;
    let user = max(panels::user::rows(app));
    let beams = max(panels::beams::rows(app));
    let grid = max(panels::attention::rows(app));
    let grid_cols = max(panels::attention::cols(app));
    let recs = max(panels::recs::rows(app));
    let s = &mut app.ui.scroll;
    s.user = s.user.min(user);
    s.beams = s.beams.min(beams);
    s.grid_row = s.grid_row.min(grid);
    s.grid_col = s.grid_col.min(grid_cols);
    s.recs = s.recs.min(recs);
}
