//! The tree attention mask the target's verify pass used: first its shape, then a grid.
//!
//! The shape: one row per depth block (the drafted tokens of one depth), how many tokens it
//! holds, their position id (shared by the whole block) and what each of its tokens attends to,
//! read from [`TreeLayout::mask_rows`] exactly as the pass used it. Every drafted token also sees
//! the cached prompt (and earlier beams) and the tokens fed before the tree, summarised on the
//! first line rather than drawn. Below it, the cell grid of the selected block (`b`): its tokens
//! as rows (token and position id), the drafted tokens they could see as columns, a filled cell
//! for an allowed (query, key) pair coloured by the key's depth; `z` packs 1, 2 or 4 keys per
//! cell, the arrows scroll.
//!
//! [`TreeLayout::mask_rows`]: crate::decode::trace::TreeLayout::mask_rows

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};
use ratatui::Frame;

use crate::decode::trace::RoundTrace;
use crate::ids::Vocab;
use crate::tui::state::phase;
use crate::tui::state::App;
use crate::tui::view::layout::PanelId;
use crate::tui::view::theme;

/// Columns taken by the token label before the position id.
pub const LABEL_W: u16 = 7;
/// Columns taken by the position id before the first grid cell.
pub const POS_W: u16 = 4;
/// Text rows above the grid inside the frame: the column header.
pub const HEAD_ROWS: u16 = 1;
pub const FILLED: &str = "█";
pub const EMPTY: &str = "·";

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let focused = app.ui.focus == PanelId::Attention;
    let Some((round, shown)) = visible(app) else {
        frame.render_widget(
            Paragraph::new("the verify pass's mask appears once a round is drafted")
                .wrap(ratatui::widgets::Wrap { trim: true })
                .block(theme::block(" Tree attention ", focused)),
            area,
        );
        return;
    };
    let block = selected_block(app, round, shown);
    let title = format!(" Tree attention · {shown} tokens ");
    let frame_block = theme::block(title, focused);
    let inner = frame_block.inner(area);
    frame.render_widget(frame_block, area);
    let head = shape_lines(round, shown, block, app.ui.zoom);
    let head_h = (head.len() as u16).min(inner.height);
    frame.render_widget(
        Paragraph::new(head),
        Rect::new(inner.x, inner.y, inner.width, head_h),
    );
    let grid = Rect::new(
        inner.x,
        inner.y + head_h,
        inner.width,
        inner.height.saturating_sub(head_h),
    );
    frame.render_widget(
        Grid {
            round,
            shown,
            block,
            zoom: app.ui.zoom,
            vocab: &app.vocab,
            row0: app.ui.scroll.grid_row as usize,
            col0: app.ui.scroll.grid_col as usize,
        },
        grid,
    );
}

/// The round whose mask is shown and how many of its tokens are visible at the cursor.
fn visible(app: &App) -> Option<(&RoundTrace, usize)> {
    app.current.as_ref().and_then(|c| {
        let v = phase::view(&c.run.trace, c.cursor)?;
        if !v.round.nodes.is_empty() {
            let n = v.round.nodes.iter().filter(|n| n.depth <= v.depth).count();
            return Some((v.round, n));
        }
        // A round that drafted nothing has no mask: keep showing the last one that had.
        let last = c
            .run
            .trace
            .rounds
            .get(..v.round.round)?
            .iter()
            .rev()
            .find(|r| !r.nodes.is_empty())?;
        Some((last, last.nodes.len()))
    })
}

/// The depth block the grid shows: the one chosen with `b` (1-based), or the deepest visible.
fn selected_block(app: &App, round: &RoundTrace, shown: usize) -> usize {
    let deepest = round.nodes[..shown]
        .iter()
        .map(|n| n.depth)
        .max()
        .unwrap_or(1);
    match app.ui.block {
        0 => deepest,
        b => b.min(deepest),
    }
}

/// Rows of the selected block's grid, for scroll limits.
pub fn rows(app: &App) -> usize {
    visible(app).map_or(0, |(r, shown)| {
        let b = selected_block(app, r, shown);
        r.nodes[..shown].iter().filter(|n| n.depth == b).count()
    })
}

/// Columns (cells) of the selected block's grid, for scroll limits.
pub fn cols(app: &App) -> usize {
    visible(app).map_or(0, |(r, shown)| {
        let b = selected_block(app, r, shown);
        let keys = r.nodes[..shown].iter().filter(|n| n.depth <= b).count();
        keys.div_ceil(app.ui.zoom.max(1))
    })
}

/// The mask's shape: one line per depth block.
fn shape_lines(r: &RoundTrace, shown: usize, block: usize, zoom: usize) -> Vec<Line<'static>> {
    let t = &r.tree;
    let mut lines = vec![Line::styled(
        format!(
            "all see {} cached + {} fed first",
            t.context_len, t.lead_len
        ),
        theme::dim(),
    )];
    lines.push(Line::styled("depth  n  pos each sees", theme::dim()));
    let deepest = r.nodes[..shown].iter().map(|n| n.depth).max().unwrap_or(0);
    for d in 1..=deepest {
        let idx: Vec<usize> = (0..shown).filter(|&i| r.nodes[i].depth == d).collect();
        let seen: Vec<usize> = idx
            .iter()
            .map(|&i| t.mask_rows.get(i).map_or(0, |m| m.len()))
            .collect();
        let (lo, hi) = (
            seen.iter().copied().min().unwrap_or(0),
            seen.iter().copied().max().unwrap_or(0),
        );
        let anc = if lo == hi {
            format!("{}", lo.saturating_sub(1))
        } else {
            format!("{}-{}", lo.saturating_sub(1), hi.saturating_sub(1))
        };
        let pos = idx
            .first()
            .and_then(|&i| t.positions.get(i))
            .map(|p| p.to_string())
            .unwrap_or_default();
        let sees = if anc == "0" {
            "itself".to_string()
        } else {
            format!("itself + {anc} anc.")
        };
        let mark = if d == block { "▸" } else { " " };
        lines.push(Line::from(vec![
            Span::raw(mark),
            Span::styled(
                format!("{:<3}", r.start_depth + d),
                Style::new().fg(theme::depth_color(d)),
            ),
            Span::raw(format!("{:>4} {:>4} {sees}", idx.len(), pos)),
        ]));
    }
    lines.push(Line::styled(
        format!("grid: depth {} · {zoom}/cell · b, z", r.start_depth + block),
        theme::dim(),
    ));
    lines
}

/// The grid of one depth block, drawn inside the panel frame.
pub struct Grid<'a> {
    pub round: &'a RoundTrace,
    /// How many drafted tokens (a prefix of the depth-major order) are visible at this phase.
    pub shown: usize,
    /// The depth block (1-based, within the round) whose tokens are the rows.
    pub block: usize,
    /// Keys per cell.
    pub zoom: usize,
    pub vocab: &'a Vocab,
    /// First row and column cell shown (scrolling); clamped to the grid.
    pub row0: usize,
    pub col0: usize,
}

impl Widget for Grid<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let r = self.round;
        let t = &r.tree;
        if self.shown == 0 || area.height == 0 {
            return;
        }
        let zoom = self.zoom.max(1);
        let rows_idx: Vec<usize> = (0..self.shown)
            .filter(|&i| r.nodes[i].depth == self.block)
            .collect();
        // Keys: every drafted token up to this block (depth-major, so a prefix).
        let keys = (0..self.shown)
            .filter(|&i| r.nodes[i].depth <= self.block)
            .count();
        let cells = keys.div_ceil(zoom);
        let col0 = self.col0.min(cells.saturating_sub(1));
        let row0 = self.row0.min(rows_idx.len().saturating_sub(1));
        let ncols = (area.width.saturating_sub(LABEL_W + POS_W) as usize).min(cells - col0);
        // Column header: each block's depth at its first cell, then a rule over the block.
        let mut head = vec![Span::styled(
            format!("{:<w$}", "key→ pos", w = (LABEL_W + POS_W) as usize),
            theme::dim(),
        )];
        for c in col0..col0 + ncols {
            let j = c * zoom;
            let d = r.nodes[j].depth;
            let first = (j..(j + zoom).min(keys))
                .any(|k| k == 0 || r.nodes[k - 1].depth != r.nodes[k].depth);
            let sym = if first {
                ((r.start_depth + d) % 10).to_string()
            } else {
                "─".to_string()
            };
            head.push(Span::styled(sym, Style::new().fg(theme::depth_color(d))));
        }
        let mut lines = vec![Line::from(head)];
        let nrows = (area.height.saturating_sub(HEAD_ROWS) as usize).min(rows_idx.len() - row0);
        for &i in &rows_idx[row0..row0 + nrows] {
            let nd = &r.nodes[i];
            let label = self.vocab.token(nd.token);
            let label = label.trim_start_matches('<').trim_end_matches('>');
            let mut spans = vec![
                Span::styled(
                    format!(
                        "{:<w$}",
                        theme::trunc(label, LABEL_W as usize - 1),
                        w = LABEL_W as usize
                    ),
                    Style::new().fg(theme::depth_color(nd.depth)),
                ),
                Span::styled(
                    format!(
                        "{:>w$} ",
                        t.positions
                            .get(i)
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        w = POS_W as usize - 1
                    ),
                    theme::dim(),
                ),
            ];
            let allowed = t.mask_rows.get(i).map(Vec::as_slice).unwrap_or(&[]);
            for c in col0..col0 + ncols {
                let group = c * zoom..((c + 1) * zoom).min(keys);
                match group.clone().find(|&j| allowed.contains(&(j as u32))) {
                    Some(j) => spans.push(Span::styled(
                        FILLED,
                        Style::new().fg(theme::depth_color(r.nodes[j].depth)),
                    )),
                    None => spans.push(Span::styled(EMPTY, theme::dim())),
                }
            }
            lines.push(Line::from(spans));
        }
        Paragraph::new(lines).render(area, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures;

    /// Reads the grid back from the rendered cells and checks it is exactly the mask.
    #[test]
    fn rendered_grid_matches_mask_rows() {
        let vocab = fixtures::vocab();
        for run in [fixtures::strict_run(1), fixtures::relaxed_run(2)] {
            for r in run.trace.rounds.iter().filter(|r| !r.nodes.is_empty()) {
                let n = r.nodes.len();
                let area = Rect::new(0, 0, LABEL_W + POS_W + n as u16 + 2, HEAD_ROWS + n as u16);
                for block in 1..=r.drafted {
                    let rows: Vec<usize> = (0..n).filter(|&i| r.nodes[i].depth == block).collect();
                    let keys = (0..n).filter(|&i| r.nodes[i].depth <= block).count();
                    let mut buf = Buffer::empty(area);
                    Grid {
                        round: r,
                        shown: n,
                        block,
                        zoom: 1,
                        vocab: &vocab,
                        row0: 0,
                        col0: 0,
                    }
                    .render(area, &mut buf);
                    for (y, &i) in rows.iter().enumerate() {
                        for j in 0..n {
                            let cell = &buf[(LABEL_W + POS_W + j as u16, HEAD_ROWS + y as u16)];
                            if j >= keys {
                                assert_eq!(cell.symbol(), " ");
                                continue;
                            }
                            let filled = cell.symbol() == FILLED;
                            assert_eq!(
                                filled,
                                r.tree.mask_rows[i].contains(&(j as u32)),
                                "round {} cell ({i}, {j})",
                                r.round
                            );
                            if filled {
                                assert_eq!(cell.fg, theme::depth_color(r.nodes[j].depth));
                            } else {
                                assert_eq!(cell.symbol(), EMPTY);
                            }
                        }
                        // The position id printed on the row is the layout's.
                        let pos: String = (LABEL_W..LABEL_W + POS_W)
                            .map(|x| buf[(x, HEAD_ROWS + y as u16)].symbol().to_string())
                            .collect();
                        assert_eq!(pos.trim(), r.tree.positions[i].to_string());
                    }
                }
            }
        }
    }

    #[test]
    fn scrolled_and_zoomed_grid_shows_the_offset_window() {
        let vocab = fixtures::vocab();
        let run = fixtures::strict_run(1);
        let r = &run.trace.rounds[0];
        let n = r.nodes.len();
        let rows: Vec<usize> = (0..n).filter(|&i| r.nodes[i].depth == 3).collect();
        let area = Rect::new(0, 0, LABEL_W + POS_W + 5, HEAD_ROWS + 4);
        for zoom in [1, 2] {
            let mut buf = Buffer::empty(area);
            let (row0, col0) = (1, 2);
            Grid {
                round: r,
                shown: n,
                block: 3,
                zoom,
                vocab: &vocab,
                row0,
                col0,
            }
            .render(area, &mut buf);
            for y in 0..4.min(rows.len() - row0) {
                let i = rows[row0 + y];
                for c in 0..5 {
                    let cell = &buf[(LABEL_W + POS_W + c as u16, HEAD_ROWS + y as u16)];
                    let keys = (col0 + c) * zoom..((col0 + c + 1) * zoom).min(n);
                    let any = keys
                        .clone()
                        .any(|j| r.tree.mask_rows[i].contains(&(j as u32)));
                    if keys.is_empty() {
                        continue;
                    }
                    assert_eq!(cell.symbol() == FILLED, any, "zoom {zoom} row {i} cell {c}");
                }
            }
        }
    }
}
