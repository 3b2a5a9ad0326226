//! Final recommendations: the speculative top-K, and the target-only top-K where they differ.
//!
//! In strict mode the two lists must be equal (the method is lossless): then one list is shown,
//! with titles as wide as the panel allows. In relaxed mode they may differ, and how much is worth
//! seeing: both lists side by side, rows that differ marked. Ground-truth hits are starred.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::decode::trace::{BeamView, Mode};
use crate::session::{UserRun, UserView};
use crate::tui::state::App;
use crate::tui::view::layout::PanelId;
use crate::tui::view::theme;

/// Below this inner width the target-only list is summarised instead of drawn.
const TWO_COLUMNS: u16 = 40;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let focused = app.ui.focus == PanelId::Recs;
    let title = format!(" Recommendations · top {} ", app.params.decode.k);
    let block = theme::block(title, focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let (Some(c), Some(u)) = (app.current.as_ref(), app.user_view()) else {
        frame.render_widget(Paragraph::new("no decode yet"), inner);
        return;
    };
    if !c.finished() {
        frame.render_widget(
            Paragraph::new("shown when the user finishes (enter)"),
            inner,
        );
        return;
    }
    let run = &c.run;
    let [note, lists] = inner.layout(&Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
    ]));
    frame.render_widget(Paragraph::new(agreement(run)), note);
    let scroll = (app.ui.scroll.recs, 0);
    let same = identical(run);
    if same || inner.width < TWO_COLUMNS {
        frame.render_widget(
            Paragraph::new(list_lines(
                None,
                &run.trace.beams,
                run,
                u,
                app,
                lists.width as usize,
            ))
            .scroll(scroll),
            lists,
        );
    } else {
        let [left, right] = lists.layout(&Layout::horizontal([
            Constraint::Percentage(50),
            Constraint::Fill(1),
        ]));
        let w = left.width as usize;
        frame.render_widget(
            Paragraph::new(list_lines(
                Some(("speculative", &run.baseline.beams)),
                &run.trace.beams,
                run,
                u,
                app,
                w,
            ))
            .scroll(scroll),
            left,
        );
        frame.render_widget(
            Paragraph::new(list_lines(
                Some(("target-only", &run.trace.beams)),
                &run.baseline.beams,
                run,
                u,
                app,
                w,
            ))
            .scroll(scroll),
            right,
        );
    }
}

fn identical(run: &UserRun) -> bool {
    let (spec, base) = (&run.trace.beams, &run.baseline.beams);
    spec.len() == base.len() && spec.iter().zip(base).all(|(a, b)| a.tokens == b.tokens)
}

/// Rows of the longer list, for scroll limits.
pub fn rows(app: &App) -> usize {
    app.current.as_ref().map_or(0, |c| {
        1 + c.run.trace.beams.len().max(c.run.baseline.beams.len())
    })
}

/// One line on how the speculative list relates to the target-only one.
fn agreement(run: &UserRun) -> Line<'static> {
    let spec = &run.trace.beams;
    let base = &run.baseline.beams;
    let shared = spec
        .iter()
        .filter(|a| base.iter().any(|b| b.tokens == a.tokens))
        .count();
    match (run.params.decode.mode, identical(run)) {
        (_, true) => Line::styled(
            "identical to target-only · * ground truth",
            Style::new().fg(theme::HIT),
        ),
        (Mode::Strict, false) => Line::styled(
            format!(
                "target-only differs ({shared} of {} shared): check near-ties",
                base.len()
            ),
            Style::new().fg(ratatui::style::Color::Red),
        ),
        (Mode::Relaxed, false) => Line::raw(format!(
            "relaxed samples: {shared} of {} shared with target-only · ≠ differs",
            base.len()
        )),
    }
}

/// One ranked list. With `other` (a name and the list it is compared with), a header names it
/// and rows whose item differs from the other list's at the same rank are marked `≠`.
fn list_lines(
    other: Option<(&str, &[BeamView])>,
    beams: &[BeamView],
    run: &UserRun,
    user: &UserView,
    app: &App,
    width: usize,
) -> Vec<Line<'static>> {
    let (vocab, header) = (&app.vocab, &app.header);
    let mut lines = Vec::new();
    if let Some((name, _)) = other {
        lines.push(Line::styled(name.to_string(), theme::bold()));
    }
    for (i, b) in beams.iter().enumerate() {
        let hit = user.is_hit(&b.tokens);
        let ident = vocab.render(header.codes(&b.tokens));
        let title = run
            .titles
            .get(&ident)
            .and_then(|t| t.first())
            .cloned()
            .unwrap_or(ident);
        let differs = other.is_some_and(|(_, o)| o.get(i).is_none_or(|x| x.tokens != b.tokens));
        let score = format!("{:>6.2}", b.score);
        let room = width.saturating_sub(4 + 1 + score.len());
        lines.push(Line::from(vec![
            Span::styled(format!("{:>2}", i + 1), theme::dim()),
            if differs {
                Span::styled("≠", Style::new().fg(ratatui::style::Color::Yellow))
            } else {
                Span::raw(" ")
            },
            if hit {
                Span::styled("*", Style::new().fg(theme::HIT))
            } else {
                Span::raw(" ")
            },
            Span::raw(format!(
                "{:<room$}",
                theme::trunc(&title, room.saturating_sub(1))
            )),
            Span::styled(score, theme::dim()),
        ]));
    }
    lines
}
