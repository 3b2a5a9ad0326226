//! Colours and shared text helpers, so every panel speaks the same visual language: a verdict or a
//! depth has one colour everywhere.

use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, BorderType};

use crate::decode::trace::Verdict;

/// Colour of drafted depth `d` (1-based), shared by the beam tree and the attention grid.
pub fn depth_color(d: usize) -> Color {
    const C: [Color; 4] = [
        Color::Cyan,
        Color::Yellow,
        Color::LightBlue,
        Color::LightMagenta,
    ];
    C[d.saturating_sub(1) % C.len()]
}

pub fn verdict_color(v: Verdict) -> Color {
    match v {
        Verdict::Accepted => Color::Green,
        Verdict::Rejected | Verdict::Failed => Color::Red,
        Verdict::NotKept => Color::Yellow,
        Verdict::Pending => Color::DarkGray,
    }
}

pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Accepted => "accepted",
        Verdict::Rejected => "rejected",
        Verdict::Failed => "failed",
        Verdict::NotKept => "not kept",
        Verdict::Pending => "pending",
    }
}

/// Beams the target sampled from the residual (relaxed mode).
pub const RESAMPLED: Color = Color::Magenta;
pub const HIT: Color = Color::LightGreen;

pub fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}

pub fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

/// A panel frame; the focused panel (the one arrows scroll) gets a brighter border.
pub fn block(title: impl Into<ratatui::text::Line<'static>>, focused: bool) -> Block<'static> {
    let b = Block::bordered()
        .border_type(BorderType::Rounded)
        .title(title);
    if focused {
        b.border_style(Style::new().fg(Color::Cyan))
    } else {
        b.border_style(dim())
    }
}

/// A probability as `.31` (two decimals, no leading zero) to keep tree lines short; small ones
/// keep one significant digit (`.004`), tiny ones read `<.001` rather than a misleading `.00`.
pub fn prob(p: f32) -> String {
    let p = p.clamp(0.0, 1.0);
    let s = if p >= 0.00995 {
        format!("{p:.2}")
    } else if p >= 0.000995 {
        format!("{p:.3}")
    } else {
        return "<.001".into();
    };
    s.strip_prefix('0').map(str::to_string).unwrap_or(s)
}

/// Cuts `s` to at most `w` characters, marking the cut with an ellipsis.
pub fn trunc(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_string()
    } else if w == 0 {
        String::new()
    } else {
        let mut t: String = s.chars().take(w - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(prob(0.3149), ".31");
        assert_eq!(prob(1.0), "1.00");
        assert_eq!(prob(0.0042), ".004");
        assert_eq!(prob(0.00001), "<.001");
        assert_eq!(trunc("abcdef", 4), "abc…");
        assert_eq!(trunc("abc", 4), "abc");
    }
}
