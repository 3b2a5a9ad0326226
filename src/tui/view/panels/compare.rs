//! Two drafts side by side on the same user: how far each got per round, what it cost, and
//! whether the final lists agree. Alignment is the whole point of training a draft, and this is
//! where its effect is visible on a single user.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::session::UserRun;
use crate::tui::state::phase;
use crate::tui::state::App;
use crate::tui::view::theme;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let other = app.compare.map(|i| app.draft_name(i)).unwrap_or_default();
    let title = format!(
        " Compare drafts · {} vs {} ",
        app.draft_name(app.params.draft),
        other
    );
    let block = theme::block(title, false);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some((a, b)) = app
        .current
        .as_ref()
        .and_then(|c| c.other.as_ref().map(|o| (&c.run, o)))
    else {
        let msg = if app.running() {
            "decoding the user with both drafts..."
        } else {
            "no comparison yet"
        };
        frame.render_widget(Paragraph::new(msg), inner);
        return;
    };
    let [left, right] = inner.layout(&Layout::horizontal([
        Constraint::Percentage(50),
        Constraint::Fill(1),
    ]));
    frame.render_widget(Paragraph::new(column(a, b)), left);
    frame.render_widget(Paragraph::new(column(b, a)), right);
}

/// One draft's summary; `rival` is the other draft's run, to mark which one did better.
fn column(run: &UserRun, rival: &UserRun) -> Vec<Line<'static>> {
    let better = |mine: f64, theirs: f64| {
        if mine > theirs {
            Style::new().fg(theme::HIT)
        } else {
            Style::default()
        }
    };
    let t = &run.trace;
    let (mine, theirs) = (run.speed(0), rival.speed(0));
    let mut lines = vec![
        Line::styled(run.params.draft.clone(), theme::bold()),
        Line::from(vec![
            Span::raw("WS "),
            Span::styled(format!("{:.2}x", mine.ws()), better(mine.ws(), theirs.ws())),
            Span::raw(format!(" · passes {:.2}x", mine.pass_ratio())),
        ]),
        Line::from(vec![
            Span::raw("accepted steps "),
            Span::styled(
                t.accepted_steps().to_string(),
                better(
                    t.accepted_steps() as f64,
                    rival.trace.accepted_steps() as f64,
                ),
            ),
            Span::raw(format!(
                " · target {} draft {}",
                t.target_passes(),
                t.draft_passes()
            )),
        ]),
        Line::raw(""),
    ];
    for r in &t.rounds {
        let mut spans = vec![Span::raw(format!("round {} ", r.round + 1))];
        for d in 1..=r.drafted {
            // Depths past the first failure were never examined.
            let (mark, color) = match d.cmp(&(r.accepted + 1)) {
                std::cmp::Ordering::Less => ("✓", Color::Green),
                std::cmp::Ordering::Equal => ("✗", Color::Red),
                std::cmp::Ordering::Greater => ("·", Color::DarkGray),
            };
            spans.push(Span::styled(
                format!("d{} {mark} ", r.start_depth + d),
                Style::new().fg(color),
            ));
        }
        spans.push(Span::styled(
            format!(
                "+{} @{}",
                phase::kind_name(r.target_step.kind),
                r.target_step.depth
            ),
            theme::dim(),
        ));
        lines.push(Line::from(spans));
    }
    let same = t.beams.len() == run.baseline.beams.len()
        && t.beams
            .iter()
            .zip(&run.baseline.beams)
            .all(|(x, y)| x.tokens == y.tokens);
    lines.push(Line::raw(""));
    lines.push(Line::raw(format!(
        "final list {} target-only",
        if same { "=" } else { "≠" }
    )));
    let t = t.times();
    lines.push(Line::styled(
        format!(
            "draft {:.2} verify {:.2} other {:.2} ms",
            t.draft_ms, t.verify_ms, t.other_ms
        ),
        theme::dim(),
    ));
    lines
}
