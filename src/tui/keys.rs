//! The key table, and terminal events to actions.
//!
//! [`BINDINGS`] is the one list of keys: dispatch ([`action`]) looks keys up in it, the footer
//! shows the entries that have a hint, and the help overlay lists them all. A key added here is
//! therefore handled, hinted and documented at once.

use crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};

use super::state::{Action, App, Tab};
use super::view::layout;

/// Rows one wheel notch scrolls.
const WHEEL: i32 = 3;
/// Rows PageUp / PageDown scroll.
const PAGE: i32 = 10;

/// Which footers show a hint: narrow terminals keep only the essentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    Always,
    /// Only where the footer has room for every hint.
    Wide,
    /// Only on narrow terminals (where tabs replace the full layout).
    Narrow,
}

impl Show {
    pub fn on(self, wide: bool) -> bool {
        match self {
            Show::Always => true,
            Show::Wide => wide,
            Show::Narrow => !wide,
        }
    }
}

/// One entry of the key table.
pub struct Binding {
    /// The keys that trigger it.
    pub keys: &'static [KeyCode],
    /// How the help and the footer write the keys.
    pub label: &'static str,
    /// One line for the help overlay.
    pub help: &'static str,
    /// The footer's hint (keys as written there, what they do), if the footer shows this
    /// entry; a pair of keys such as `+/-` is hinted once.
    pub hint: Option<(&'static str, &'static str)>,
    /// On which footers the hint appears.
    pub show: Show,
    pub action: fn() -> Action,
}

const fn bind(
    keys: &'static [KeyCode],
    label: &'static str,
    help: &'static str,
    hint: Option<(&'static str, &'static str)>,
    show: Show,
    action: fn() -> Action,
) -> Binding {
    Binding {
        keys,
        label,
        help,
        hint,
        show,
        action,
    }
}

use KeyCode::{Char, Down, Enter, Esc, Left, PageDown, PageUp, Right, Tab as TabKey, Up};

/// Every key of the explorer, in the order the help lists them.
pub static BINDINGS: &[Binding] = &[
    bind(
        &[Char(' ')],
        "space",
        "next phase: draft depth, verify, accept, target step",
        Some(("space", "step")),
        Show::Always,
        || Action::Step,
    ),
    bind(
        &[Enter],
        "enter",
        "show the user's finished decode",
        Some(("enter", "run")),
        Show::Always,
        || Action::RunToEnd,
    ),
    bind(
        &[Char('n')],
        "n",
        "next user",
        Some(("n/p", "user")),
        Show::Always,
        || Action::NextUser,
    ),
    bind(&[Char('p')], "p", "previous user", None, Show::Wide, || {
        Action::PrevUser
    }),
    bind(
        &[Char('/')],
        "/",
        "search a user by id or by a title in its history",
        None,
        Show::Wide,
        || Action::SearchStart,
    ),
    bind(
        &[Char('m')],
        "m",
        "toggle strict / relaxed verification",
        Some(("m", "mode")),
        Show::Always,
        || Action::ToggleMode,
    ),
    bind(
        &[Char('+'), Char('=')],
        "+",
        "wider draft beam N",
        Some(("+/-", "N")),
        Show::Wide,
        || Action::IncN,
    ),
    bind(
        &[Char('-')],
        "-",
        "narrower draft beam N",
        None,
        Show::Wide,
        || Action::DecN,
    ),
    bind(
        &[Char('K')],
        "K",
        "more recommendations K",
        Some(("k/K", "K")),
        Show::Wide,
        || Action::IncK,
    ),
    bind(
        &[Char('k')],
        "k",
        "fewer recommendations K",
        None,
        Show::Wide,
        || Action::DecK,
    ),
    bind(
        &[Char('G')],
        "G",
        "more drafted steps gamma",
        Some(("g/G", "gamma")),
        Show::Wide,
        || Action::IncGamma,
    ),
    bind(
        &[Char('g')],
        "g",
        "fewer drafted steps gamma",
        None,
        Show::Wide,
        || Action::DecGamma,
    ),
    bind(
        &[Char('t')],
        "t",
        "drafted shape: tuned here / paper's N 40, gamma 3",
        Some(("t", "preset")),
        Show::Wide,
        || Action::TogglePreset,
    ),
    bind(
        &[Char('d')],
        "d",
        "next draft model",
        Some(("d", "draft")),
        Show::Wide,
        || Action::NextDraft,
    ),
    bind(
        &[Char('c')],
        "c",
        "compare two drafts on this user",
        Some(("c", "compare")),
        Show::Wide,
        || Action::ToggleCompare,
    ),
    bind(
        &[Char('a')],
        "a",
        "auto-run over the following users (a again stops)",
        Some(("a", "auto")),
        Show::Wide,
        || Action::ToggleAuto,
    ),
    bind(
        &[Char('r')],
        "r",
        "start recording; r again saves to sessions/",
        Some(("r", "record")),
        Show::Wide,
        || Action::ToggleRecord,
    ),
    bind(
        &[Char('x')],
        "x",
        "write the round on screen as an SVG file",
        None,
        Show::Wide,
        || Action::ExportRound,
    ),
    bind(
        &[Char('v')],
        "v",
        "speedup chart: WS per user / acceptance against N",
        None,
        Show::Wide,
        || Action::ToggleChart,
    ),
    bind(
        &[Char('b')],
        "b",
        "tree attention: next depth block of the grid",
        None,
        Show::Wide,
        || Action::NextBlock,
    ),
    bind(
        &[Char('z')],
        "z",
        "tree attention: 1, 2 or 4 tokens per grid cell",
        None,
        Show::Wide,
        || Action::Zoom,
    ),
    bind(
        &[TabKey],
        "tab",
        "next panel (and next tab on small screens)",
        Some(("tab", "panel")),
        Show::Narrow,
        || Action::NextFocus,
    ),
    bind(
        &[Char('1')],
        "1",
        "tab 1 on small screens: user and drafted beams",
        None,
        Show::Wide,
        || Action::SelectTab(Tab::Decode),
    ),
    bind(
        &[Char('2')],
        "2",
        "tab 2: tree attention",
        None,
        Show::Wide,
        || Action::SelectTab(Tab::Tree),
    ),
    bind(
        &[Char('3')],
        "3",
        "tab 3: recommendations and speedup",
        None,
        Show::Wide,
        || Action::SelectTab(Tab::Results),
    ),
    bind(&[Char('4')], "4", "tab 4: log", None, Show::Wide, || {
        Action::SelectTab(Tab::Log)
    }),
    bind(
        &[Up],
        "up",
        "scroll the focused panel up (or the mouse wheel)",
        None,
        Show::Wide,
        || Action::Scroll { dy: -1, dx: 0 },
    ),
    bind(
        &[Down],
        "down",
        "scroll the focused panel down",
        None,
        Show::Wide,
        || Action::Scroll { dy: 1, dx: 0 },
    ),
    bind(
        &[Left],
        "left",
        "scroll the attention grid left",
        None,
        Show::Wide,
        || Action::Scroll { dy: 0, dx: -1 },
    ),
    bind(
        &[Right],
        "right",
        "scroll the attention grid right",
        None,
        Show::Wide,
        || Action::Scroll { dy: 0, dx: 1 },
    ),
    bind(
        &[PageUp],
        "pgup",
        "scroll a page up",
        None,
        Show::Wide,
        || Action::Scroll { dy: -PAGE, dx: 0 },
    ),
    bind(
        &[PageDown],
        "pgdn",
        "scroll a page down",
        None,
        Show::Wide,
        || Action::Scroll { dy: PAGE, dx: 0 },
    ),
    bind(
        &[Char('?')],
        "?",
        "this help",
        Some(("?", "help")),
        Show::Always,
        || Action::ToggleHelp,
    ),
    bind(
        &[Esc],
        "esc",
        "close help or search",
        None,
        Show::Wide,
        || Action::Close,
    ),
    bind(
        &[Char('q')],
        "q",
        "quit (saves a running recording)",
        Some(("q", "quit")),
        Show::Always,
        || Action::Quit,
    ),
];

/// The binding a key triggers, if any.
pub fn binding_for(code: KeyCode) -> Option<&'static Binding> {
    BINDINGS.iter().find(|b| b.keys.contains(&code))
}

/// Decodes one terminal event. Mouse events are placed on the panel under the pointer with the
/// view's layout, so the state only ever hears of panels.
pub fn action(app: &App, ev: &Event) -> Option<Action> {
    match ev {
        Event::Key(k) if k.kind != KeyEventKind::Release => key(app, k),
        Event::Mouse(m) => mouse(app, m),
        Event::Resize(width, height) => Some(Action::Resize {
            width: *width,
            height: *height,
        }),
        _ => None,
    }
}

fn key(app: &App, k: &KeyEvent) -> Option<Action> {
    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == Char('c') {
        return Some(Action::Quit);
    }
    // While the save-path prompt is open, keys edit the path.
    if app.ui.save_path.is_some() {
        return match k.code {
            Char(c) => Some(Action::PathInput(c)),
            KeyCode::Backspace => Some(Action::PathBackspace),
            Enter => Some(Action::PathSubmit),
            Esc => Some(Action::Close),
            _ => None,
        };
    }
    // While the search prompt is open, keys edit the query.
    if app.ui.search.is_some() {
        return match k.code {
            Char(c) => Some(Action::SearchInput(c)),
            KeyCode::Backspace => Some(Action::SearchBackspace),
            Enter => Some(Action::SearchSubmit),
            Esc => Some(Action::Close),
            _ => None,
        };
    }
    binding_for(k.code).map(|b| (b.action)())
}

fn mouse(app: &App, m: &MouseEvent) -> Option<Action> {
    let dy = match m.kind {
        MouseEventKind::ScrollDown => WHEEL,
        MouseEventKind::ScrollUp => -WHEEL,
        _ => return None,
    };
    let panel = layout::panel_at(app, m.column, m.row)?;
    Some(Action::MouseScroll { panel, dy })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures;
    use crate::tui::state::PanelId;

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
        assert!(matches!(press(&app, Char(' ')), Some(Action::Step)));
        assert!(matches!(press(&app, Char('K')), Some(Action::IncK)));
        assert!(matches!(press(&app, Char('=')), Some(Action::IncN)));
        assert!(matches!(
            press(&app, Char('3')),
            Some(Action::SelectTab(Tab::Results))
        ));
        assert!(matches!(press(&app, Char('q')), Some(Action::Quit)));
        assert!(matches!(press(&app, Char('t')), Some(Action::TogglePreset)));
        assert!(matches!(press(&app, Char('z')), Some(Action::Zoom)));
        assert!(press(&app, Char('j')).is_none());
        app.ui.search = Some(String::new());
        assert!(matches!(
            press(&app, Char('q')),
            Some(Action::SearchInput('q'))
        ));
        app.ui.search = None;
        // The wheel scrolls the panel under the pointer: at 120x40 the user panel is on the left.
        let wheel = Event::Mouse(MouseEvent {
            kind: MouseEventKind::ScrollDown,
            column: 3,
            row: 4,
            modifiers: KeyModifiers::NONE,
        });
        assert!(matches!(
            action(&app, &wheel),
            Some(Action::MouseScroll {
                panel: PanelId::User,
                dy: WHEEL
            })
        ));
    }

    #[test]
    fn no_key_is_bound_twice_and_every_binding_is_documented() {
        let mut seen = Vec::new();
        for b in BINDINGS {
            assert!(!b.help.is_empty() && !b.label.is_empty());
            for k in b.keys {
                assert!(!seen.contains(k), "{k:?} bound twice");
                seen.push(*k);
            }
        }
    }
}
