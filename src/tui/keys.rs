//! Terminal events to actions. Kept apart from the event loop so the mapping is testable and the
//! key table lives in one place (the footer and help list the same keys).

use crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};

use super::app::{Action, App, Tab};

/// Rows one wheel notch scrolls.
const WHEEL: i32 = 3;
/// Rows PageUp / PageDown scroll.
const PAGE: i32 = 10;

pub fn action(app: &App, ev: &Event) -> Option<Action> {
    match ev {
        Event::Key(k) if k.kind != KeyEventKind::Release => key(app, k),
        Event::Mouse(m) => mouse(m),
        Event::Resize(width, height) => Some(Action::Resize {
            width: *width,
            height: *height,
        }),
        _ => None,
    }
}

fn key(app: &App, k: &KeyEvent) -> Option<Action> {
    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    if app.ui.search.is_some() {
        return match k.code {
            KeyCode::Char(c) => Some(Action::SearchInput(c)),
            KeyCode::Backspace => Some(Action::SearchBackspace),
            KeyCode::Enter => Some(Action::SearchSubmit),
            KeyCode::Esc => Some(Action::Close),
            _ => None,
        };
    }
    Some(match k.code {
        KeyCode::Char(' ') => Action::Step,
        KeyCode::Enter => Action::RunToEnd,
        KeyCode::Char('n') => Action::NextUser,
        KeyCode::Char('p') => Action::PrevUser,
        KeyCode::Char('/') => Action::SearchStart,
        KeyCode::Char('m') => Action::ToggleMode,
        KeyCode::Char('+') | KeyCode::Char('=') => Action::IncN,
        KeyCode::Char('-') => Action::DecN,
        KeyCode::Char('K') => Action::IncK,
        KeyCode::Char('k') => Action::DecK,
        KeyCode::Char('G') => Action::IncGamma,
        KeyCode::Char('g') => Action::DecGamma,
        KeyCode::Char('d') => Action::NextDraft,
        KeyCode::Char('c') => Action::ToggleCompare,
        KeyCode::Char('a') => Action::ToggleAuto,
        KeyCode::Char('r') => Action::ToggleRecord,
        KeyCode::Char('?') => Action::ToggleHelp,
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Esc => Action::Close,
        KeyCode::Tab => Action::NextFocus,
        KeyCode::Char(c @ '1'..='4') => Action::SelectTab(Tab::ALL[c as usize - '1' as usize]),
        KeyCode::Up => Action::Scroll { dy: -1, dx: 0 },
        KeyCode::Down => Action::Scroll { dy: 1, dx: 0 },
        KeyCode::Left => Action::Scroll { dy: 0, dx: -1 },
        KeyCode::Right => Action::Scroll { dy: 0, dx: 1 },
        KeyCode::PageUp => Action::Scroll { dy: -PAGE, dx: 0 },
        KeyCode::PageDown => Action::Scroll { dy: PAGE, dx: 0 },
        _ => return None,
    })
}

fn mouse(m: &MouseEvent) -> Option<Action> {
    let dy = match m.kind {
        MouseEventKind::ScrollDown => WHEEL,
        MouseEventKind::ScrollUp => -WHEEL,
        _ => return None,
    };
    Some(Action::MouseScroll {
        column: m.column,
        row: m.row,
        dy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures;

    fn press(app: &App, code: KeyCode) -> Option<Action> {
        action(app, &Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
    }

    #[test]
    fn keys_map_to_actions_and_search_captures_text() {
        let mut app = App::new(
            fixtures::header(),
            vec![fixtures::user(1)],
            fixtures::params(),
        );
        assert!(matches!(
            press(&app, KeyCode::Char(' ')),
            Some(Action::Step)
        ));
        assert!(matches!(
            press(&app, KeyCode::Char('K')),
            Some(Action::IncK)
        ));
        assert!(matches!(
            press(&app, KeyCode::Char('q')),
            Some(Action::Quit)
        ));
        app.ui.search = Some(String::new());
        assert!(matches!(
            press(&app, KeyCode::Char('q')),
            Some(Action::SearchInput('q'))
        ));
        let wheel = Event::Mouse(MouseEvent {
            kind: MouseEventKind::ScrollDown,
            column: 3,
            row: 4,
            modifiers: KeyModifiers::NONE,
        });
        assert!(matches!(
            action(&app, &wheel),
            Some(Action::MouseScroll {
                column: 3,
                row: 4,
                dy: WHEEL
            })
        ));
    }
}
