//! Pictures as SVG (plotters, SVG backend only): the bench's curves (`bench --plot`) and one
//! speculative round drawn for slides (`replay --export-svg`, the explorer's `x` key).
//!
//! Both read only plain data ([`BenchReport`], [`RoundTrace`]), like every other consumer of the
//! trace: nothing is recomputed here.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::decode::trace::{RoundTrace, TargetStepKind, Verdict};
use crate::decode::DecodeParams;
use crate::eval::bench::BenchReport;
use crate::ids::Vocab;
use crate::{Error, Result};

const FONT: &str = "sans-serif";
/// Colours of drafted depths 1, 2, 3 (and of K's lines), as in the explorer.
const SERIES: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];
const KEPT: RGBColor = RGBColor(44, 160, 44);
const DROPPED: RGBColor = RGBColor(214, 39, 40);
const NOT_KEPT: RGBColor = RGBColor(230, 160, 0);
const UNSEEN: RGBColor = RGBColor(170, 170, 170);
const MISSED: RGBColor = RGBColor(148, 103, 189);

fn err<E: std::fmt::Display>(e: E) -> Error {
    Error::Failed(format!("drawing the SVG: {e}"))
}

/// Writes an SVG atomically.
pub fn write_svg(path: &Path, svg: &str) -> Result<()> {
    crate::atomic::write(path, svg.as_bytes())
}

/// The bench's picture: WS (totals and mean) and AS against K on top, and below, for each
/// drafted depth, acceptance against N with one line per K (strict runs).
pub fn bench_svg(report: &BenchReport) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1200, 760)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let title = format!(
            "{} · target {} · draft {} · {} · {} · {} users",
            report.dataset,
            report.target,
            report.draft,
            report.device,
            report.config.decode.mode.name(),
            report.per_k.first().map_or(0, |r| r.users)
        );
        let root = root.titled(&title, (FONT, 18).into_font()).map_err(err)?;
        let (top, bottom) = root.split_vertically(350);
        let tops = top.split_evenly((1, 2));
        let ks: Vec<f64> = report.per_k.iter().map(|r| r.k as f64).collect();
        let kmax = ks.iter().copied().fold(1.0, f64::max);
        let first = report.per_k.first().map(|r| (r.n, r.gamma));
        let shapes: String = if report.per_k.iter().all(|r| Some((r.n, r.gamma)) == first) {
            first.map_or(String::new(), |(n, g)| format!("N {n}, gamma {g}"))
        } else {
            report
                .per_k
                .iter()
                .map(|r| format!("{}: {}/{}", r.k, r.n, r.gamma))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let ws_max = report
            .per_k
            .iter()
            .map(|r| r.ws_total.max(r.ws_mean))
            .fold(1.2, f64::max)
            * 1.1;
        line_chart(
            &tops[0],
            "walltime speedup WS = target-only ms / speculative ms",
            "K",
            "WS",
            (0.0, kmax + 1.0),
            (0.0, ws_max),
            &[
                (
                    "WS (ratio of totals)".to_string(),
                    report
                        .per_k
                        .iter()
                        .map(|r| (r.k as f64, r.ws_total))
                        .collect(),
                ),
                (
                    "WS (mean of per-user ratios)".to_string(),
                    report
                        .per_k
                        .iter()
                        .map(|r| (r.k as f64, r.ws_mean))
                        .collect(),
                ),
                (
                    "1x: as fast as target-only".to_string(),
                    vec![(0.0, 1.0), (kmax + 1.0, 1.0)],
                ),
            ],
            false,
        )?;
        line_chart(
            &tops[1],
            &format!("accepted drafted steps per user AS ({shapes})"),
            "K",
            "AS",
            (0.0, kmax + 1.0),
            (0.0, 3.2),
            &[(
                "AS".to_string(),
                report
                    .per_k
                    .iter()
                    .map(|r| (r.k as f64, r.accepted_steps))
                    .collect(),
            )],
            false,
        )?;
        let bottoms = bottom.split_evenly((1, 3));
        let wmax = report
            .per_k
            .iter()
            .flat_map(|r| &r.width_curves)
            .flat_map(|c| c.points.iter().map(|p| p.0))
            .max()
            .unwrap_or(0);
        for (d, area) in bottoms.iter().enumerate() {
            let depth = d + 1;
            let series: Vec<(String, Vec<(f64, f64)>)> = report
                .per_k
                .iter()
                .filter_map(|r| {
                    let c = r.width_curves.iter().find(|c| c.depth == depth)?;
                    Some((
                        format!("K {} ({} rounds)", r.k, c.rounds),
                        c.points.iter().map(|&(n, a)| (n as f64, a)).collect(),
                    ))
                })
                .collect();
            let caption = format!("acceptance against N, drafted depth {depth}");
            if series.is_empty() {
                area.draw(&Text::new(
                    format!("{caption}: no strict rounds examined it"),
                    (20, 40),
                    (FONT, 14).into_font(),
                ))
                .map_err(err)?;
                continue;
            }
            line_chart(
                area,
                &caption,
                "drafted width N (log scale)",
                "share of rounds accepted",
                // Room on the right for the legend.
                (1.0, (wmax.max(2) as f64) * 4.0),
                (0.0, 1.05),
                &series,
                true,
            )?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One chart of lines with markers and a legend; `log_x` draws x on a log scale.
#[allow(clippy::too_many_arguments)]
fn line_chart(
    area: &DrawingArea<SVGBackend, Shift>,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    x: (f64, f64),
    y: (f64, f64),
    series: &[(String, Vec<(f64, f64)>)],
    log_x: bool,
) -> Result<()> {
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .label_style((FONT, 12))
                .draw()
                .map_err(err)?;
            for (i, (name, pts)) in series.iter().enumerate() {
                let color = SERIES[i % SERIES.len()];
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                    .map_err(err)?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(err)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font((FONT, 12))
                .draw()
                .map_err(err)?;
        }};
    }
    let mut b = ChartBuilder::on(area);
    b.caption(caption, (FONT, 14))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48);
    if log_x {
        draw!(b
            .build_cartesian_2d((x.0..x.1).log_scale(), y.0..y.1)
            .map_err(err)?);
    } else {
        draw!(b.build_cartesian_2d(x.0..x.1, y.0..y.1).map_err(err)?);
    }
    Ok(())
}

/// One round for slides: the drafted tree by depth (token, q, p, verdict colour; the target's
/// missed beams in purple at a rejected strict depth), the tree-attention mask the verify pass
/// used, and the verifier's findings in words.
pub fn round_svg(
    round: &RoundTrace,
    params: &DecodeParams,
    vocab: &Vocab,
    title: &str,
) -> Result<String> {
    const ROW: i32 = 16;
    const COL: i32 = 250;
    let depths = round.drafted.max(1);
    let widest = (1..=round.drafted)
        .map(|d| {
            round.nodes.iter().filter(|n| n.depth == d).count()
                + round
                    .checks
                    .get(d - 1)
                    .map_or(0, |c| c.missed.len() + usize::from(!c.missed.is_empty()))
        })
        .max()
        .unwrap_or(0) as i32;
    let n = round.nodes.len() as i32;
    let cell = if n > 0 { (480 / n).clamp(3, 14) } else { 8 };
    let tree_w = 40 + COL * depths as i32;
    let width = (tree_w + 60 + cell * n + 40).max(900) as u32;
    let height = (140 + ROW * widest.max(8) + 40).max(200 + cell * n) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let text = |s: String, x: i32, y: i32, size: u32, color: RGBColor| {
            Text::new(s, (x, y), (FONT, size).into_font().color(&color))
        };
        root.draw(&text(title.to_string(), 16, 10, 18, BLACK))
            .map_err(err)?;
        for (i, line) in round_lines(round, params, vocab).into_iter().enumerate() {
            root.draw(&text(line, 16, 34 + 16 * i as i32, 13, BLACK))
                .map_err(err)?;
        }
        // The tree: one column per drafted depth, nodes in the draft's order.
        let y0 = 110;
        let mut pos: Vec<(i32, i32)> = vec![(0, 0); round.nodes.len()];
        for d in 1..=round.drafted {
            let x = 20 + COL * (d as i32 - 1);
            root.draw(&text(
                format!("depth {} (step {d})", round.start_depth + d),
                x,
                y0 - 18,
                13,
                BLACK,
            ))
            .map_err(err)?;
            let mut row = 0;
            for (i, nd) in round.nodes.iter().enumerate().filter(|(_, n)| n.depth == d) {
                let y = y0 + ROW * row;
                pos[i] = (x, y);
                row += 1;
                let color = verdict_rgb(nd.verdict);
                if let Some(p) = nd.parent {
                    let (px, py) = pos[p];
                    root.draw(&PathElement::new(
                        vec![(px + COL - 40, py + 6), (x - 4, y + 6)],
                        UNSEEN.mix(0.6),
                    ))
                    .map_err(err)?;
                }
                root.draw(&Rectangle::new(
                    [(x - 2, y), (x + COL - 44, y + ROW - 3)],
                    color.mix(0.15).filled(),
                ))
                .map_err(err)?;
                let mut label = format!(
                    "{} q {:.2} p {:.2}",
                    vocab.token(nd.token),
                    nd.q,
                    nd.p.unwrap_or(f32::NAN)
                );
                if let Some(t) = nd.test {
                    label.push_str(&format!(" u {:.2} p/q {:.2}", t.u, t.ratio));
                }
                if let Some(r) = nd.draft_rank {
                    label.push_str(&format!(" #{r}"));
                }
                root.draw(&text(label, x, y + 1, 11, color)).map_err(err)?;
            }
            if let Some(c) = round.checks.get(d - 1).filter(|c| !c.missed.is_empty()) {
                let y = y0 + ROW * row;
                root.draw(&text(
                    "missed (target's top-K, not drafted):".into(),
                    x,
                    y + 1,
                    11,
                    MISSED,
                ))
                .map_err(err)?;
                for (j, m) in c.missed.iter().enumerate() {
                    let y = y + ROW * (j as i32 + 1);
                    root.draw(&text(
                        format!(
                            "{} draft rank {} q {:.3} p {:.3}",
                            vocab.render(&m.tokens),
                            m.draft_rank,
                            m.q,
                            m.p
                        ),
                        x,
                        y + 1,
                        11,
                        MISSED,
                    ))
                    .map_err(err)?;
                }
            }
        }
        // The mask: row i may attend to column j (drafted tokens, depth-major).
        let gx = tree_w + 40;
        let gy = y0;
        root.draw(&text(
            format!(
                "tree attention: {n} drafted tokens; each also sees {} cached + {} fed first",
                round.tree.context_len, round.tree.lead_len
            ),
            gx,
            gy - 18,
            13,
            BLACK,
        ))
        .map_err(err)?;
        for (i, row) in round.tree.mask_rows.iter().enumerate() {
            for &j in row {
                let d = round.nodes.get(j as usize).map_or(1, |x| x.depth);
                let (x, y) = (gx + cell * j as i32, gy + cell * i as i32);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell - 1, y + cell - 1)],
                    SERIES[(d - 1) % SERIES.len()].filled(),
                ))
                .map_err(err)?;
            }
        }
        root.draw(&Rectangle::new(
            [(gx - 1, gy - 1), (gx + cell * n, gy + cell * n)],
            BLACK.mix(0.4),
        ))
        .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn verdict_rgb(v: Verdict) -> RGBColor {
    match v {
        Verdict::Accepted => KEPT,
        Verdict::Rejected | Verdict::Failed => DROPPED,
        Verdict::NotKept => NOT_KEPT,
        Verdict::Pending => UNSEEN,
    }
}

/// The verifier's findings in a few lines (the caption of the picture).
fn round_lines(r: &RoundTrace, p: &DecodeParams, vocab: &Vocab) -> Vec<String> {
    let mut out = vec![format!(
        "{} N {} K {} gamma {}: drafted {} step(s) from depth {} (g = min(gamma, L - 1 - {})), accepted {}; \
         green kept, red {}, amber passed but not kept, grey not examined",
        p.mode.name(),
        p.n,
        p.k,
        p.gamma,
        r.drafted,
        r.start_depth,
        r.start_depth,
        r.accepted,
        if p.mode == crate::decode::Mode::Strict {
            "not in the target's top-K"
        } else {
            "failed u <= p/q"
        }
    )];
    for c in &r.checks {
        let depth = r.start_depth + c.depth;
        let mut s = format!(
            "depth {depth}: {}",
            if c.accepted { "accepted" } else { "rejected" }
        );
        if let Some(n) = c.n_needed {
            s.push_str(&format!(
                " · smallest accepting N {n} of {} candidates",
                c.candidates
            ));
        }
        if !c.missed.is_empty() {
            s.push_str(&format!(
                " · {} of the target's top-{} not drafted",
                c.missed.len(),
                p.k
            ));
        }
        if p.mode == crate::decode::Mode::Relaxed {
            s.push_str(&format!(
                " · {} of {} examined passed u <= p/q",
                c.passed, c.examined
            ));
        }
        if let Some(res) = &c.residual {
            s.push_str(&format!(
                " · {} drawn from the residual norm(max(0, p - q)) (mass {:.3}){}",
                res.drawn,
                res.mass,
                if res.fallback {
                    ", some from p (residual empty)"
                } else {
                    ""
                }
            ));
        }
        out.push(s);
    }
    let step = &r.target_step;
    out.push(format!(
        "target step at depth {}: {} ({} beams, best {})",
        step.depth,
        match step.kind {
            TargetStepKind::Bonus =>
                "bonus: every drafted depth accepted, the verify pass yields the next depth too",
            TargetStepKind::Correction =>
                "correction: the target's own top-K replaces the rejected depth",
            TargetStepKind::Plain => "plain: nothing was drafted",
            TargetStepKind::Resampled =>
                "resampled: the beams that passed, plus draws from the residual",
        },
        step.beams.len(),
        step.beams
            .first()
            .map(|b| vocab.render(&b.tokens))
            .unwrap_or_default()
    ));
    out
}

#[cfg(all(test, feature = "tui"))]
mod tests {
    use super::*;
    use crate::tui::fixtures;

    #[test]
    fn a_round_picture_is_svg_with_the_findings() {
        let run = fixtures::strict_run(1);
        let r = &run.trace.rounds[0];
        let svg = round_svg(r, &run.trace.params, &fixtures::vocab(), "round 1").unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("depth 1 (step 1)"), "{svg}");
        assert!(svg.contains("target step at depth"));
    }
}
