//! Colours and shared text helpers, so every panel speaks the same visual language: a verdict or a
//! depth has one colour everywhere.

use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, BorderType};

use crate::decode::trace::{Mode, Verdict};

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

/// How a drafted token's verdict reads. A token is kept or not; only a depth is "accepted" or
/// "rejected", so the words differ: strict keeps the target's top-K, relaxed keeps beams that
/// passed u <= p/q (K of them at random when more pass).
pub fn verdict_name(v: Verdict, mode: Mode) -> &'static str {
    match (v, mode) {
        (Verdict::Accepted, Mode::Strict) => "in top-K",
        (Verdict::Accepted, Mode::Relaxed) => "kept",
        (Verdict::Rejected, Mode::Strict) => "not in top-K",
        (Verdict::Rejected, Mode::Relaxed) => "rejected",
        (Verdict::Failed, _) => "failed",
        (Verdict::NotKept, _) => "not kept",
        (Verdict::Pending, _) => "unexamined",
    }
}

/// Beams the target sampled from the residual (relaxed mode).
pub const RESAMPLED: Color = Color::Magenta;
/// Target beams the draft did not draft (strict mode).
pub const MISSED: Color = Color::LightMagenta;
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

/// A ratio or a draw in as few characters as stay readable: `.43`, `1.27`, `12.4`, `310`, `inf`.
pub fn num(x: f64) -> String {
    if x.is_infinite() {
        return "inf".into();
    }
    if x.is_nan() {
        return "nan".into();
    }
    let s = if x >= 99.95 {
        format!("{x:.0}")
    } else if x >= 9.995 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
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

/// Greedy word wrap to `width` columns, continuation lines indented by two; words longer than a
/// line are cut.
pub fn wrap(s: &str, width: usize) -> Vec<String> {
    if width <= 4 || s.chars().count() <= width {
        return vec![s.to_string()];
    }
    let mut out: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in s.split(' ') {
        let limit = if out.is_empty() { width } else { width - 2 };
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > limit {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        // A word wider than a whole line: cut it.
        while line.chars().count() > if out.is_empty() { width } else { width - 2 } {
            let limit = if out.is_empty() { width } else { width - 2 };
            let head: String = line.chars().take(limit).collect();
            line = line.chars().skip(limit).collect();
            out.push(head);
        }
    }
    if !line.is_empty() {
        out.push(line);
    }
    out.iter()
        .enumerate()
        .map(|(i, l)| if i == 0 { l.clone() } else { format!("  {l}") })
        .collect()
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
