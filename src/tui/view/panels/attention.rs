//! The tree attention mask the target's verify pass used, drawn as a grid.
//!
//! Rows are queries, columns keys, both the drafted tokens in flattened order. A filled cell is an
//! allowed (query, key) pair, read from [`TreeLayout::mask_rows`] exactly as the pass used it,
//! coloured by the key's depth; each row carries its position id, which is shared by every token
//! of a depth. The prompt (and earlier beams) that every token also sees is summarised on the
//! first line rather than drawn, since it would dwarf the tree.
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
/// Text rows above the grid inside the frame: the summary and the column header.
pub const HEAD_ROWS: u16 = 2;
pub const FILLED: &str = "█";
pub const EMPTY: &str = "·";

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let focused = app.ui.focus == PanelId::Attention;
    let shown = visible(app);
    let Some((round, shown)) = shown else {
        frame.render_widget(
            Paragraph::new("the verify pass's mask appears once a round is drafted")
                .block(theme::block(" Tree attention ", focused)),
            area,
        );
        return;
    };
    let title = format!(
        " Tree attention · round {} · {shown} tokens ",
        round.round + 1
    );
    let block = theme::block(title, focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    frame.render_widget(
        Grid {
            round,
            shown,
            vocab: &app.vocab,
            row0: app.ui.scroll.grid_row as usize,
            col0: app.ui.scroll.grid_col as usize,
        },
        inner,
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

/// Rows (= columns) of the grid, for scroll limits.
pub fn rows(app: &App) -> usize {
    visible(app).map_or(0, |(_, n)| n)
}

/// The grid itself, drawn inside the panel frame.
pub struct Grid<'a> {
    pub round: &'a RoundTrace,
    /// How many drafted tokens (a prefix of the depth-major order) are visible at this phase.
    pub shown: usize,
    pub vocab: &'a Vocab,
    /// First row and column shown (scrolling); clamped to the grid.
    pub row0: usize,
    pub col0: usize,
}

impl Widget for Grid<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let r = self.round;
        let t = &r.tree;
        if self.shown == 0 {
            Paragraph::new("nothing drafted yet").render(area, buf);
            return;
        }
        // Every drafted token also sees the cached context and the tokens fed before the tree.
        let summary = format!(
            "+{} cached, {} fed first: seen by all",
            t.context_len, t.lead_len
        );
        let mut lines = vec![Line::styled(summary, theme::dim())];
        let n = self.shown;
        let row0 = self.row0.min(n.saturating_sub(1));
        let col0 = self.col0.min(n.saturating_sub(1));
        let cols = (area.width.saturating_sub(LABEL_W + POS_W) as usize).min(n - col0.min(n));
        // Column header: the key's depth, in its colour.
        let mut head = vec![Span::styled(
            format!("{:<w$}", "key→ pos", w = (LABEL_W + POS_W) as usize),
            theme::dim(),
        )];
        for j in col0..col0 + cols {
            let d = r.nodes[j].depth;
            head.push(Span::styled(
                (d % 10).to_string(),
                Style::new().fg(theme::depth_color(d)),
            ));
        }
        lines.push(Line::from(head));
        let rows = (area.height.saturating_sub(HEAD_ROWS) as usize).min(n - row0.min(n));
        for i in row0..row0 + rows {
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
            for j in col0..col0 + cols {
                if allowed.contains(&(j as u32)) {
                    spans.push(Span::styled(
                        FILLED,
                        Style::new().fg(theme::depth_color(r.nodes[j].depth)),
                    ));
                } else {
                    spans.push(Span::styled(EMPTY, theme::dim()));
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
                let mut buf = Buffer::empty(area);
                Grid {
                    round: r,
                    shown: n,
                    vocab: &vocab,
                    row0: 0,
                    col0: 0,
                }
                .render(area, &mut buf);
                for i in 0..n {
                    for j in 0..n {
                        let cell = &buf[(LABEL_W + POS_W + j as u16, HEAD_ROWS + i as u16)];
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
                        .map(|x| buf[(x, HEAD_ROWS + i as u16)].symbol().to_string())
                        .collect();
                    assert_eq!(pos.trim(), r.tree.positions[i].to_string());
                }
            }
        }
    }

    #[test]
    fn scrolled_grid_shows_the_offset_window() {
        let vocab = fixtures::vocab();
        let run = fixtures::strict_run(1);
        let r = &run.trace.rounds[0];
        let n = r.nodes.len();
        let area = Rect::new(0, 0, LABEL_W + POS_W + 5, HEAD_ROWS + 4);
        let mut buf = Buffer::empty(area);
        let (row0, col0) = (3, 2);
        Grid {
            round: r,
            shown: n,
            vocab: &vocab,
            row0,
            col0,
        }
        .render(area, &mut buf);
        for i in 0..4 {
            for j in 0..5 {
                let cell = &buf[(LABEL_W + POS_W + j as u16, HEAD_ROWS + i as u16)];
                assert_eq!(
                    cell.symbol() == FILLED,
                    r.tree.mask_rows[row0 + i].contains(&((col0 + j) as u32))
                );
            }
        }
    }
}
