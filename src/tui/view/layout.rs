//! Where each panel goes for a terminal size.
//!
//! The layout is a pure function of the app state, used by both rendering and the input glue's
//! mouse handling (the wheel scrolls the panel under the pointer), so the two never disagree.

use ratatui::layout::{Constraint, Layout, Rect};

pub use crate::tui::state::{is_compact, PanelId};
use crate::tui::state::{App, Tab};

/// Below this the explorer shows a message instead of panels.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 20;

pub fn too_small(width: u16, height: u16) -> bool {
    width < MIN_WIDTH || height < MIN_HEIGHT
}

/// Width of the user panel in the full layout.
pub const USER_WIDTH: u16 = 34;

/// The panels visible in `area` and their rectangles, in drawing order.
pub fn panels(app: &App, area: Rect) -> Vec<(PanelId, Rect)> {
    if too_small(area.width, area.height) {
        return Vec::new();
    }
    let middle = if app.compare.is_some() {
        PanelId::Compare
    } else {
        PanelId::Beams
    };
    let mut out = Vec::new();
    if is_compact(area.width, area.height) {
        // The log is a tab of its own here, so the latest narration keeps two lines above the
        // footer.
        let [header, tabs, body, caption, footer] = area.layout(&Layout::vertical([
            Constraint::Length(2),
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(2),
            Constraint::Length(1),
        ]));
        out.push((PanelId::Header, header));
        out.push((PanelId::Tabs, tabs));
        out.push((PanelId::Caption, caption));
        match app.ui.tab {
            Tab::Decode => {
                let [user, beams] = body.layout(&Layout::horizontal([
                    Constraint::Percentage(40),
                    Constraint::Fill(1),
                ]));
                out.push((PanelId::User, user));
                out.push((middle, beams));
            }
            Tab::Tree => out.push((PanelId::Attention, body)),
            Tab::Results => {
                let [recs, speed] = body.layout(&Layout::horizontal([
                    Constraint::Percentage(55),
                    Constraint::Fill(1),
                ]));
                out.push((PanelId::Recs, recs));
                out.push((PanelId::Speedup, speed));
            }
            Tab::Log => out.push((PanelId::Log, body)),
        }
        out.push((PanelId::Footer, footer));
    } else {
        let [header, top, bottom, footer] = area.layout(&Layout::vertical([
            Constraint::Length(2),
            Constraint::Percentage(52),
            Constraint::Fill(1),
            Constraint::Length(1),
        ]));
        out.push((PanelId::Header, header));
        if app.compare.is_some() {
            let [user, cmp] = top.layout(&Layout::horizontal([
                Constraint::Length(USER_WIDTH),
                Constraint::Fill(1),
            ]));
            out.push((PanelId::User, user));
            out.push((PanelId::Compare, cmp));
        } else {
            // The user panel fits a whole identifier (<a_254><b_254><c_254><d_254>) with its
            // number.
            let [user, beams, grid] = top.layout(&Layout::horizontal([
                Constraint::Length(USER_WIDTH),
                Constraint::Fill(3),
                Constraint::Fill(2),
            ]));
            out.push((PanelId::User, user));
            out.push((PanelId::Beams, beams));
            out.push((PanelId::Attention, grid));
        }
        // Recommendations get the most room: two lists side by side.
        let [recs, speed, log] = bottom.layout(&Layout::horizontal([
            Constraint::Percentage(40),
            Constraint::Percentage(34),
            Constraint::Fill(1),
        ]));
        out.push((PanelId::Recs, recs));
        out.push((PanelId::Speedup, speed));
        out.push((PanelId::Log, log));
        out.push((PanelId::Footer, footer));
    }
    out
}

/// Where `panel` is drawn at the app's terminal size, if it is on screen.
pub fn rect_of(app: &App, panel: PanelId) -> Option<Rect> {
    let area = Rect::new(0, 0, app.ui.width, app.ui.height);
    panels(app, area)
        .into_iter()
        .find(|(p, _)| *p == panel)
        .map(|(_, r)| r)
}

/// The panel drawn at a terminal cell, if any.
pub fn panel_at(app: &App, column: u16, row: u16) -> Option<PanelId> {
    let area = Rect::new(0, 0, app.ui.width, app.ui.height);
    panels(app, area)
        .into_iter()
        .find(|(_, r)| r.contains(ratatui::layout::Position::new(column, row)))
        .map(|(p, _)| p)
}
