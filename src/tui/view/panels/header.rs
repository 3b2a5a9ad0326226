//! Header: what is being explored (dataset, models, device) and with which parameters.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::tui::state::{App, Preset};

const SPINNER: [char; 8] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧'];

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let h = &app.header;
    let p = &app.params.decode;
    let draft = h
        .drafts
        .get(app.params.draft)
        .map(String::as_str)
        .unwrap_or("(no draft)");
    let mut first = vec![
        Span::styled(" atspeed ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "· {} · {} · draft {} · {}",
            h.dataset, h.target, draft, h.device
        )),
    ];
    if let Some(path) = &app.replay {
        first.push(Span::styled(
            format!(" · REPLAY {path}"),
            Style::new().fg(Color::Yellow),
        ));
    }
    let mode = Span::styled(
        format!(" {} ", p.mode.name().to_uppercase()),
        Style::new().fg(Color::Black).bg(match p.mode {
            crate::decode::Mode::Strict => Color::Cyan,
            crate::decode::Mode::Relaxed => Color::Yellow,
        }),
    );
    let state = if app.auto {
        format!("auto-run {}", SPINNER[(app.ui.ticks % 8) as usize])
    } else if app.running() {
        format!("decoding {}", SPINNER[(app.ui.ticks % 8) as usize])
    } else {
        "ready".to_string()
    };
    let mut second = vec![
        Span::raw(" "),
        mode,
        Span::raw(format!(
            " N {}{}  K {}  gamma {}",
            p.n,
            p.draft_mass
                .map(|m| format!(" (mass {m})"))
                .unwrap_or_default(),
            p.k,
            p.gamma,
        )),
    ];
    if let Some((text, style)) = shape_note(app) {
        second.push(Span::raw(" "));
        second.push(Span::styled(text, style));
    }
    second.push(Span::raw(format!(" · seed {} · {state}", h.seed)));
    if let Some(rec) = &app.recording {
        second.push(Span::styled(
            format!(" · ● REC {}", rec.len()),
            Style::new().fg(Color::Red),
        ));
    }
    if let Some(other) = app.compare {
        second.push(Span::raw(format!(
            " · comparing with {}",
            app.draft_name(other)
        )));
    }
    if !app.status.is_empty() {
        second.push(Span::styled(
            format!(" · {}", app.status),
            Style::new().fg(Color::Yellow),
        ));
    }
    let text = vec![
        Line::from(first).style(Style::new().bg(Color::Indexed(236))),
        Line::from(second),
    ];
    frame.render_widget(Paragraph::new(text), area);
}

/// Which drafted shape is in force, and why: tuned for this device, the paper's (while tuning
/// runs, or chosen with `t`), or set by hand.
pub fn shape_note(app: &App) -> Option<(String, Style)> {
    let s = &app.shapes;
    if !s.enabled {
        return None;
    }
    let dev = &app.header.device;
    let tuning = app
        .tuning_current()
        .map(|(done, total)| format!(" · tuning for {dev} {}%", 100 * done / total.max(1)));
    Some(if s.custom {
        (
            "(set by hand · t: tuned)".to_string(),
            Style::new().fg(Color::Gray),
        )
    } else {
        match (s.preset, app.tuned_shape()) {
            (Preset::Tuned, Some(_)) if s.deferred => (
                "(paper preset · tuned shape from the next user)".to_string(),
                Style::new().fg(Color::Black).bg(Color::Yellow),
            ),
            (Preset::Tuned, Some(t)) => (
                format!(
                    "(tuned for {dev}{} · t: paper N 40 gamma 3)",
                    if t.cached { ", cached" } else { "" }
                ),
                Style::new().fg(Color::Black).bg(Color::Green),
            ),
            (Preset::Tuned, None) => (
                format!(
                    "(paper preset until tuned{} · t: stay on paper)",
                    tuning.unwrap_or_default()
                ),
                Style::new().fg(Color::Black).bg(Color::Yellow),
            ),
            (Preset::Paper, _) => (
                "(paper preset · t: tuned)".to_string(),
                Style::new().fg(Color::Black).bg(Color::Gray),
            ),
        }
    })
}
