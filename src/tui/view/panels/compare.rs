//! Two drafts side by side on the same user: how far each got per round, what it cost, and
//! whether the final lists agree; and below, both drafts' acceptance against N over every user
//! decoded with each at these settings (an auto-run while comparing decodes every user with
//! both). Alignment is the whole point of training a draft, and these curves are its measure:
//! the better aligned draft reaches the same acceptance with a narrower N.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

use super::speedup;
use crate::eval::speed::{width_grid, SpeedStats};
use crate::session::RunParams;

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
    let chart_h = if inner.height >= 16 { 8 } else { 0 };
    let [cols, chart] = inner.layout(&Layout::vertical([
        Constraint::Fill(1),
        Constraint::Length(chart_h),
    ]));
    let [left, right] = cols.layout(&Layout::horizontal([
        Constraint::Percentage(50),
        Constraint::Fill(1),
    ]));
    frame.render_widget(Paragraph::new(column(a, b)), left);
    frame.render_widget(Paragraph::new(column(b, a)), right);
    if chart_h > 0 {
        curves(app, &a.params, &b.params, frame, chart);
    }
}

/// Step-1 and step-2 acceptance against N of both drafts, from every user decoded with each.
fn curves(app: &App, a: &RunParams, b: &RunParams, frame: &mut Frame, area: Rect) {
    let stats = |p: &RunParams| app.stats.iter().find(|(k, _)| k == p).map(|(_, s)| s);
    let (Some(sa), Some(sb)) = (stats(a), stats(b)) else {
        return;
    };
    let k = a.decode.k;
    let widest = [sa, sb]
        .iter()
        .flat_map(|s| (1..=2).filter_map(|d| s.n_needed(d).last().copied()))
        .max()
        .unwrap_or(0);
    if widest == 0 {
        frame.render_widget(
            Paragraph::new("acceptance against N: strict runs only").style(theme::dim()),
            area,
        );
        return;
    }
    let grid = width_grid(k, widest);
    let lx = speedup::lx;
    let series = |s: &SpeedStats, d: usize| -> Vec<(f64, f64)> {
        s.acceptance_at_widths(d, &grid)
            .map(|acc| grid.iter().map(|&n| lx(n)).zip(acc).collect())
            .unwrap_or_default()
    };
    let data = [
        (
            format!("{} step 1 ({} users)", a.draft, sa.len()),
            series(sa, 1),
            Color::Cyan,
            Marker::Braille,
        ),
        (
            format!("{} step 1 ({} users)", b.draft, sb.len()),
            series(sb, 1),
            Color::Yellow,
            Marker::Braille,
        ),
        (
            format!("{} step 2", a.draft),
            series(sa, 2),
            Color::Cyan,
            Marker::Dot,
        ),
        (
            format!("{} step 2", b.draft),
            series(sb, 2),
            Color::Yellow,
            Marker::Dot,
        ),
    ];
    let sets: Vec<Dataset> = data
        .iter()
        .filter(|d| !d.1.is_empty())
        .map(|(name, pts, color, marker)| {
            Dataset::default()
                .name(name.clone())
                .marker(*marker)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(*color))
                .data(pts)
        })
        .collect();
    let [key, area] = area.layout(&Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
    ]));
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::raw("acceptance against N: "),
            Span::styled(
                format!("{} ({} users)", a.draft, sa.len()),
                Style::new().fg(Color::Cyan),
            ),
            Span::raw(" vs "),
            Span::styled(
                format!("{} ({} users)", b.draft, sb.len()),
                Style::new().fg(Color::Yellow),
            ),
            Span::styled(" · line step 1, dots step 2", theme::dim()),
        ])),
        key,
    );
    let chart = speedup::width_axes(Chart::new(sets), &grid)
        .hidden_legend_constraints((Constraint::Length(0), Constraint::Length(0)));
    frame.render_widget(chart, area);
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
