//! Speedup: this user's numbers, the running picture over every user decoded with the current
//! parameters (chart of per-user WS and its running mean), accepted steps, per-depth acceptance and
//! where the time goes.
//!
//! Walltime speedups are only meaningful with the device they were measured on (on a small CPU the
//! ceiling is near 1), so the device sits in the title, and the target-pass ratio, which does not
//! depend on hardware, sits beside the measured WS.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

use crate::eval::speed::SpeedStats;
use crate::tui::state::App;
use crate::tui::view::theme;

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let title = format!(" Speedup · measured on {} ", app.header.device);
    let block = theme::block(title, false);
    let inner = block.inner(area);
    frame.render_widget(block, area);

    // A small table: walltime speedup beside the hardware-independent target-pass ratio.
    let mut top = vec![Line::styled(
        format!("{:<10}{:<8}target passes", "", "WS"),
        theme::dim(),
    )];
    match &app.current {
        Some(c) => {
            let u = c.run.speed(0);
            top.push(Line::from(vec![
                Span::raw(format!("{:<10}", "this user")),
                Span::styled(format!("{:<8}", format!("{:.2}x", u.ws())), theme::bold()),
                Span::raw(format!(
                    "{:.2}x {}->{}",
                    u.pass_ratio(),
                    u.baseline_target_passes,
                    u.target_passes
                )),
            ]));
        }
        None => top.push(Line::styled("this user not decoded yet", theme::dim())),
    }
    let stats = app.stats();
    match stats.filter(|s| !s.is_empty()) {
        Some(s) => {
            top.push(Line::from(vec![
                Span::raw(format!("{:<10}", format!("{} users", s.users.len()))),
                Span::styled(
                    format!("{:<8}", format!("{:.2}x", s.ws_mean())),
                    theme::bold(),
                ),
                Span::raw(format!("{:.2}x", s.target_pass_ratio())),
            ]));
            top.push(Line::raw(format!(
                "{:<10}{:<8}AS {:.2}",
                "totals",
                format!("{:.2}x", s.ws_total()),
                s.accepted_steps()
            )));
        }
        None => top.push(Line::styled("no users yet: a auto-runs many", theme::dim())),
    }
    let [head, chart, foot] = inner.layout(&Layout::vertical([
        Constraint::Length(4),
        Constraint::Fill(1),
        Constraint::Length(4),
    ]));
    frame.render_widget(Paragraph::new(top), head);
    if let Some(s) = stats.filter(|s| !s.is_empty()) {
        if chart.height >= 3 {
            render_chart(s, frame, chart);
        }
        frame.render_widget(Paragraph::new(summary_lines(s)), foot);
    }
}

fn render_chart(s: &SpeedStats, frame: &mut Frame, area: Rect) {
    let points = s.ws_points();
    let mean = s.ws_running_mean();
    let x_max = (points.len() as f64).max(2.0);
    let y_max = points.iter().map(|p| p.1).fold(1.0f64, f64::max).ceil();
    let chart = Chart::new(vec![
        Dataset::default()
            .name("WS")
            .marker(Marker::Dot)
            .graph_type(GraphType::Scatter)
            .style(Style::new().fg(Color::Cyan))
            .data(&points),
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
            .labels(["1".to_string(), format!("{}", points.len())])
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

fn summary_lines(s: &SpeedStats) -> Vec<Line<'static>> {
    let hist = s.accepted_histogram();
    let max = hist.iter().copied().max().unwrap_or(1).max(1);
    let mut h = vec![Span::raw("AS")];
    for (i, &c) in hist.iter().enumerate() {
        // Bars up to 6 cells, at least one for a non-zero count.
        let len = if c == 0 { 0 } else { (c * 6).div_ceil(max) };
        h.push(Span::raw(format!(" {i}:")));
        h.push(Span::styled("▇".repeat(len), Style::new().fg(Color::Green)));
        h.push(Span::styled(format!("{c}"), theme::dim()));
    }
    let mut d = vec![Span::raw("per depth")];
    for (i, rate) in s.depth_acceptance().iter().enumerate() {
        d.push(Span::styled(
            format!(" d{} {:.0}%", i + 1, rate * 100.0),
            Style::new().fg(theme::depth_color(i + 1)),
        ));
    }
    let t = s.mean_times();
    vec![
        Line::from(h),
        Line::from(d),
        Line::styled("time per user, ms", theme::dim()),
        Line::raw(format!(
            "draft {:.2} verify {:.2} other {:.2}",
            t.draft_ms, t.verify_ms, t.other_ms
        )),
    ]
}
