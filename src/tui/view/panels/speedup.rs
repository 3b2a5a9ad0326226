//! Speedup: this user's numbers, the running picture over every user decoded with the current
//! parameters, and a chart (`v` switches): per-user WS with its running mean, or acceptance
//! against the drafted width N per drafted step (strict), the curve that says how wide N must be.
//!
//! Every figure follows [`crate::eval::speed`]: WS is target-only milliseconds over speculative
//! milliseconds (both shown), AS the drafted steps accepted per user. Walltime speedups are only
//! meaningful with the device they were measured on, so the device sits in the title, and the
//! target-pass ratio, which does not depend on hardware, sits beside the measured WS with a hint
//! of how the two relate on this device.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

use crate::eval::speed::{width_grid, SpeedStats};
use crate::tui::state::{App, Chart as ChartKind};
use crate::tui::view::theme;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let title = format!(" Speedup · measured on {} ", app.header.device);
    let block = theme::block(title, false);
    let inner = block.inner(area);
    frame.render_widget(block, area);

    // Columns: what, WS, and the two times WS divides.
    let row = |what: &str, ws: f64, base: f64, spec: f64| {
        Line::from(vec![
            Span::raw(format!("{what:<10}")),
            Span::styled(format!("{:<7}", format!("{ws:.2}x")), theme::bold()),
            Span::raw(format!("{base:.1} / {spec:.1}")),
        ])
    };
    let mut top = vec![Line::styled(
        format!("{:<10}{:<7}target-only / spec ms", "", "WS"),
        theme::dim(),
    )];
    match &app.current {
        Some(c) => {
            let u = c.run.speed(0);
            top.push(row("this user", u.ws(), u.baseline_ms, u.speculative_ms));
        }
        None => top.push(Line::styled("this user not decoded yet", theme::dim())),
    }
    let stats = app.stats().filter(|s| !s.is_empty());
    match stats {
        Some(s) => {
            top.push(row(
                "totals",
                s.ws_total(),
                s.mean_baseline_ms(),
                s.mean_speculative_ms(),
            ));
            top.push(Line::from(vec![
                Span::raw(format!("{:<10}", "mean")),
                Span::styled(
                    format!("{:<7}", format!("{:.2}x", s.ws_mean())),
                    theme::bold(),
                ),
                Span::styled(format!("of {} users' WS", s.users.len()), theme::dim()),
            ]));
            top.push(Line::raw(format!(
                "passes {:.1}->{:.1} ({:.2}x) · AS {:.2}",
                s.mean_baseline_target_passes(),
                s.mean_target_passes(),
                s.target_pass_ratio(),
                s.accepted_steps()
            )));
        }
        None => top.push(Line::styled("no users yet: a auto-runs many", theme::dim())),
    }
    let top_h = top.len() as u16;
    let [head, chart, foot] = inner.layout(&Layout::vertical([
        Constraint::Length(top_h),
        Constraint::Fill(1),
        Constraint::Length(5),
    ]));
    frame.render_widget(Paragraph::new(top), head);
    let mut foot_lines = Vec::new();
    if let Some(s) = stats {
        match app.ui.chart {
            ChartKind::Speedup => {
                if chart.height >= 3 {
                    speedup_chart(s, frame, chart);
                }
                foot_lines.push(histogram(s, app.header.most_accepted()));
            }
            ChartKind::Width => {
                if chart.height >= 3 && !width_chart(app, s, frame, chart) {
                    frame.render_widget(
                        Paragraph::new("acceptance against N: strict runs only")
                            .style(theme::dim()),
                        chart,
                    );
                }
                foot_lines.push(width_summary(s));
            }
        }
        foot_lines.push(step_acceptance(s, app.header.most_accepted()));
        let t = s.mean_times();
        foot_lines.push(Line::raw(format!(
            "ms: draft {:.1} verify {:.1} other {:.1}",
            t.draft_ms, t.verify_ms, t.other_ms
        )));
    }
    for l in theme::wrap(&device_hint(&app.header.device), foot.width as usize) {
        foot_lines.push(Line::styled(l, theme::dim()));
    }
    frame.render_widget(Paragraph::new(foot_lines), foot);
}

/// What WS and the target-pass ratio mean on this device.
pub fn device_hint(device: &str) -> String {
    if device.starts_with("cpu") {
        "cpu: cost per token, so WS < pass ratio; other load moves timings".into()
    } else {
        "gpu: small passes cost the same at any width: WS nears the pass ratio".into()
    }
}

/// Users per AS value, 0..=`max` (L - 1).
fn histogram(s: &SpeedStats, max: usize) -> Line<'static> {
    let hist = s.accepted_histogram(max);
    let max = hist.iter().copied().max().unwrap_or(1).max(1);
    let mut h = vec![Span::raw("AS")];
    for (i, &c) in hist.iter().enumerate() {
        // Bars up to 6 cells, at least one for a non-zero count.
        let len = if c == 0 { 0 } else { (c * 6).div_ceil(max) };
        h.push(Span::raw(format!(" {i}:")));
        h.push(Span::styled("▇".repeat(len), Style::new().fg(Color::Green)));
        h.push(Span::styled(format!("{c}"), theme::dim()));
    }
    Line::from(h)
}

/// Acceptance by drafted step (within a round): accepted over examined; `–` where no round got
/// that far.
fn step_acceptance(s: &SpeedStats, steps: usize) -> Line<'static> {
    let mut d = vec![Span::raw("step acc")];
    for (i, rate) in s.depth_acceptance_to(steps).iter().enumerate() {
        let sep = if i == 0 { " " } else { " · " };
        let text = if s.depth_rounds(i + 1) == 0 {
            format!("{sep}{} –", i + 1)
        } else {
            format!("{sep}{} {:.0}%", i + 1, rate * 100.0)
        };
        d.push(Span::styled(
            text,
            Style::new().fg(theme::depth_color(i + 1)),
        ));
    }
    Line::from(d)
}

fn width_summary(s: &SpeedStats) -> Line<'static> {
    let mut spans = vec![Span::raw("N for 90%:")];
    for d in 1..=s.max_steps().max(1) {
        if let Some(n) = s.width_for_share(d, 0.9) {
            spans.push(Span::styled(
                format!(" step {d} {n}"),
                Style::new().fg(theme::depth_color(d)),
            ));
        }
    }
    Line::from(spans)
}

fn speedup_chart(s: &SpeedStats, frame: &mut Frame, area: Rect) {
    let points = s.ws_points();
    let mean = s.ws_running_mean();
    let x_max = (points.len() as f64).max(2.0);
    let y_max = points.iter().map(|p| p.1).fold(1.0f64, f64::max).ceil();
    let one = [(1.0, 1.0), (x_max, 1.0)];
    let chart = Chart::new(vec![
        Dataset::default()
            .name("WS")
            .marker(Marker::Dot)
            .graph_type(GraphType::Scatter)
            .style(Style::new().fg(Color::Cyan))
            .data(&points),
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(theme::dim())
            .data(&one),
        Dataset::default()
            .name("mean")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Yellow))
            .data(&mean),
    ])
    .x_axis(
        Axis::default()
            .bounds([1.0, x_max])
            .labels(["1".to_string(), format!("{} users", points.len())])
            .style(theme::dim()),
    )
    .y_axis(
        Axis::default()
            .bounds([0.0, y_max])
            .labels(["0".to_string(), format!("{y_max:.0}x")])
            .style(theme::dim()),
    );
    frame.render_widget(chart, area);
}

/// Acceptance against N per drafted step, x on a log scale, the current N marked. False when no
/// round recorded the width it needed (relaxed runs).
fn width_chart(app: &App, s: &SpeedStats, frame: &mut Frame, area: Rect) -> bool {
    let k = app.params.decode.k;
    let n_now = app.params.decode.n;
    let widest = (1..=s.max_steps())
        .filter_map(|d| s.n_needed(d).last().copied())
        .max()
        .unwrap_or(0);
    let grid = width_grid(k, widest.max(n_now));
    let curves = s.width_curves(&grid);
    if curves.is_empty() {
        return false;
    }
    let data: Vec<Vec<(f64, f64)>> = curves
        .iter()
        .map(|c| c.points.iter().map(|&(n, a)| (lx(n), a)).collect())
        .collect();
    let marker = [(lx(n_now), 0.0), (lx(n_now), 1.0)];
    let mut sets: Vec<Dataset> = curves
        .iter()
        .zip(&data)
        .map(|(c, pts)| {
            Dataset::default()
                .name(format!("step {}", c.depth))
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(theme::depth_color(c.depth)))
                .data(pts)
        })
        .collect();
    sets.push(
        Dataset::default()
            .name(format!("N {n_now}"))
            .marker(Marker::Dot)
            .graph_type(GraphType::Line)
            .style(theme::dim())
            .data(&marker),
    );
    frame.render_widget(width_axes(Chart::new(sets), &grid), area);
    true
}

/// x of a width on the acceptance-against-N charts (a log scale).
pub fn lx(n: usize) -> f64 {
    (n.max(1) as f64).log2()
}

/// The axes of an acceptance-against-N chart over `grid` (non-empty): N on a log scale, the
/// share of rounds from 0 to 100%.
pub fn width_axes<'a>(chart: Chart<'a>, grid: &[usize]) -> Chart<'a> {
    let first = grid.first().copied().unwrap_or(1);
    let last = grid.last().copied().unwrap_or(first);
    let x0 = lx(first);
    chart
        .x_axis(
            Axis::default()
                .bounds([x0, lx(last).max(x0 + 1.0)])
                .labels([format!("N {first}"), format!("{last}")])
                .style(theme::dim()),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, 1.0])
                .labels(["0", "50%", "100%"])
                .style(theme::dim()),
        )
}
