//! Whole-explorer tests: state transitions driven by actions with a fake engine answering the
//! queued commands, and snapshots of the rendered screen (ratatui's TestBackend + insta).
//!
//! Every number on screen comes from the synthetic traces, so snapshots hold no volatile text.

use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::fixtures;
use super::state::{update, Action, App, Command, EngineEvent, PanelId, Tab};
use crate::decode::trace::Mode;

/// Answers every engine command in the outbox as the engine thread would, in order.
fn answer_all(app: &mut App) {
    for cmd in std::mem::take(&mut app.outbox) {
        for ev in engine_reply(app, cmd) {
            update(app, Action::Engine(ev));
        }
    }
}

/// What the engine would send back for `cmd`, without applying it.
fn engine_reply(app: &App, cmd: Command) -> Vec<EngineEvent> {
    match cmd {
        Command::Decode {
            generation,
            user,
            params,
        } => vec![EngineEvent::Decoded {
            generation,
            user,
            run: Box::new(fixtures::answer(user, &params)),
            auto: false,
        }],
        Command::Compare {
            generation,
            user,
            params,
            other_draft,
        } => {
            let other = crate::session::RunParams {
                draft: other_draft,
                ..params.clone()
            };
            let mut b = fixtures::answer(user, &other);
            // The second draft is worse aligned: round 1 accepts one depth, not two.
            b.trace = fixtures::trace(
                params.decode.mode,
                params.decode.n,
                params.decode.k,
                params.decode.gamma,
                user as u32 + 1,
                &[1],
            );
            vec![EngineEvent::Compared {
                generation,
                user,
                a: Box::new(fixtures::answer(user, &params)),
                b: Box::new(b),
                auto: false,
            }]
        }
        Command::Auto {
            generation,
            from,
            params,
            ..
        } => (from..app.users.len())
            .map(|user| EngineEvent::Decoded {
                generation,
                user,
                run: Box::new(fixtures::answer(user, &params)),
                auto: true,
            })
            .chain(std::iter::once(EngineEvent::AutoDone { generation }))
            .collect(),
        Command::Cancel { .. }
        | Command::Tune(_)
        | Command::SaveSession(_)
        | Command::SaveSessionAs { .. }
        | Command::ExportRound { .. } => vec![],
    }
}

fn screen(app: &mut App, width: u16, height: u16) -> String {
    update(app, Action::Resize { width, height });
    let mut term = Terminal::new(TestBackend::new(width, height)).unwrap();
    term.draw(|f| super::render(app, f)).unwrap();
    term.backend().to_string()
}

fn act(app: &mut App, actions: &[Action]) {
    for a in actions {
        update(app, a.clone());
    }
}

/// The explorer after three users were decoded, back on the first, stepped to round 1's accept.
fn explored() -> App {
    let mut app = fixtures::app(12);
    app.start();
    answer_all(&mut app);
    for _ in 0..2 {
        act(&mut app, &[Action::NextUser]);
        answer_all(&mut app);
    }
    act(&mut app, &[Action::PrevUser, Action::PrevUser]);
    answer_all(&mut app);
    act(&mut app, &[const { Action::Step }; 5]);
    app
}

#[test]
fn snapshot_main_120x40() {
    let mut app = explored();
    insta::assert_snapshot!("main_120x40", screen(&mut app, 120, 40));
}

#[test]
fn snapshot_finished_user_120x40() {
    let mut app = explored();
    act(&mut app, &[Action::RunToEnd]);
    insta::assert_snapshot!("finished_120x40", screen(&mut app, 120, 40));
}

#[test]
fn snapshot_main_80x24_tabs() {
    let mut app = explored();
    let decode = screen(&mut app, 80, 24);
    act(&mut app, &[Action::RunToEnd, Action::SelectTab(Tab::Tree)]);
    let tree = screen(&mut app, 80, 24);
    act(&mut app, &[Action::SelectTab(Tab::Results)]);
    let results = screen(&mut app, 80, 24);
    insta::assert_snapshot!("main_80x24_decode", decode);
    insta::assert_snapshot!("main_80x24_tree", tree);
    insta::assert_snapshot!("main_80x24_results", results);
}

/// The attention panel's block grid zoomed out, and the speedup panel's acceptance-against-N
/// chart, at both sizes.
#[test]
fn snapshot_width_chart_and_zoomed_grid() {
    let mut app = explored();
    act(
        &mut app,
        &[
            Action::ToggleChart,
            Action::NextBlock,
            Action::NextBlock,
            Action::Zoom,
        ],
    );
    assert_eq!((app.ui.block, app.ui.zoom), (2, 2));
    let wide = screen(&mut app, 120, 40);
    assert!(wide.contains("N for 90%") && wide.contains("grid: depth 2 · 2/cell"));
    act(&mut app, &[Action::SelectTab(Tab::Results)]);
    let narrow = screen(&mut app, 80, 24);
    insta::assert_snapshot!("width_chart_120x40", wide);
    insta::assert_snapshot!("width_chart_80x24", narrow);
}

#[test]
fn snapshot_help_overlay() {
    let mut app = explored();
    act(&mut app, &[Action::ToggleHelp]);
    insta::assert_snapshot!("help_120x40", screen(&mut app, 120, 40));
    act(&mut app, &[Action::Close]);
    assert!(!app.ui.help);
}

#[test]
fn snapshot_relaxed_round_with_failed_not_kept_and_resampled_beams() {
    use crate::decode::trace::{TargetStepKind, Verdict};
    let mut app = fixtures::app(12);
    app.start();
    act(&mut app, &[Action::ToggleMode]);
    answer_all(&mut app);
    // Round 1: draft 1, 2, 3, verify, accept.
    act(&mut app, &[const { Action::Step }; 5]);
    let c = app.current.as_ref().unwrap();
    let r = &c.run.trace.rounds[0];
    assert_eq!(r.target_step.kind, TargetStepKind::Resampled);
    assert!(r.nodes.iter().any(|n| n.verdict == Verdict::Failed));
    assert!(r.nodes.iter().any(|n| n.verdict == Verdict::NotKept));
    let accept = screen(&mut app, 120, 40);
    assert!(accept.contains("passes if u ≤ p/q") && accept.contains(" ≤ p/q "));
    // Every verdict on screen agrees with the rule and the numbers beside it (a tall screen
    // shows the whole tree).
    let tall = screen(&mut app, 120, 100);
    let (mut failed, mut not_kept) = (0, 0);
    for line in tall.lines() {
        let Some((u, cmp, ratio, verdict)) = relaxed_numbers(line) else {
            continue;
        };
        match verdict.as_str() {
            "failed" => {
                assert_eq!(cmp, ">", "{line}");
                assert!(u >= ratio, "{line}");
                failed += 1;
            }
            "kept" | "not kept" => {
                assert_eq!(cmp, "≤", "{line}");
                assert!(u <= ratio, "{line}");
                not_kept += usize::from(verdict == "not kept");
            }
            other => panic!("verdict {other:?} on a tested beam: {line}"),
        }
    }
    assert!(failed > 0 && not_kept > 0, "{tall}");
    // Then the target step: the beams drawn from the residual, with their r.
    act(&mut app, &[Action::Step]);
    let step = screen(&mut app, 120, 40);
    assert!(step.contains("resampled (r "));
    insta::assert_snapshot!("relaxed_accept_120x40", accept);
    insta::assert_snapshot!("relaxed_round_120x40", step);
}

#[test]
fn snapshot_compare_and_too_small() {
    let mut app = explored();
    act(&mut app, &[Action::ToggleCompare]);
    answer_all(&mut app);
    insta::assert_snapshot!("compare_120x40", screen(&mut app, 120, 40));
    insta::assert_snapshot!("too_small_50x15", screen(&mut app, 50, 15));
}

#[test]
fn stepping_walks_the_phases_then_finishes() {
    let mut app = fixtures::app(3);
    app.start();
    assert!(app.running());
    answer_all(&mut app);
    assert!(!app.running());
    let total = super::state::phase::phases(&app.current.as_ref().unwrap().run.trace).len();
    for i in 1..=total {
        act(&mut app, &[Action::Step]);
        assert_eq!(app.current.as_ref().unwrap().cursor, i);
    }
    assert!(app.current.as_ref().unwrap().finished());
    // Stepping past the end only says so.
    act(&mut app, &[Action::Step]);
    assert_eq!(app.current.as_ref().unwrap().cursor, total);
    assert!(app.status.contains("finished"));
    assert!(app.narration.iter().any(|l| l.contains("accepted")));
}

#[test]
fn keys_pressed_before_the_result_apply_when_it_arrives() {
    let mut app = fixtures::app(3);
    app.start();
    act(&mut app, &[Action::Step]);
    answer_all(&mut app);
    assert_eq!(app.current.as_ref().unwrap().cursor, 1);

    act(&mut app, &[Action::NextUser, Action::RunToEnd]);
    answer_all(&mut app);
    assert!(app.current.as_ref().unwrap().finished());
}

#[test]
fn parameter_change_while_pending_drops_the_stale_result() {
    let mut app = fixtures::app(3);
    app.start();
    let first = std::mem::take(&mut app.outbox);
    act(&mut app, &[Action::IncN, Action::ToggleMode]);
    let newer = std::mem::take(&mut app.outbox);
    assert_eq!(newer.len(), 2);
    // The old reply arrives late: ignored.
    for cmd in first {
        for ev in engine_reply(&app, cmd) {
            update(&mut app, Action::Engine(ev));
        }
    }
    assert!(app.current.is_none());
    assert!(app.running());
    // Only the newest request's reply is taken.
    let last = newer.into_iter().last().unwrap();
    match &last {
        Command::Decode { params, .. } => {
            assert_eq!((params.decode.n, params.decode.mode), (7, Mode::Relaxed));
        }
        other => panic!("expected a decode, got {other:?}"),
    }
    for ev in engine_reply(&app, last) {
        update(&mut app, Action::Engine(ev));
    }
    let c = app.current.as_ref().unwrap();
    assert_eq!(
        (c.run.trace.params.n, c.run.trace.params.mode),
        (7, Mode::Relaxed)
    );
    assert!(!app.running());
}

#[test]
fn parameter_bounds() {
    let mut app = fixtures::app(1);
    app.start();
    // gamma is capped at L - 1 = 3 and floored at 1.
    act(&mut app, &[Action::IncGamma]);
    assert_eq!(app.params.decode.gamma, 3);
    act(
        &mut app,
        &[Action::DecGamma, Action::DecGamma, Action::DecGamma],
    );
    assert_eq!(app.params.decode.gamma, 1);
    // Raising K above N drags N along; N never drops below K.
    act(
        &mut app,
        &[Action::IncK, Action::IncK, Action::IncK, Action::IncK],
    );
    assert_eq!((app.params.decode.k, app.params.decode.n), (7, 7));
    act(&mut app, &[Action::DecN]);
    assert_eq!(app.params.decode.n, 7);
    // N moves by 5 beyond 10.
    act(
        &mut app,
        &[Action::IncN, Action::IncN, Action::IncN, Action::IncN],
    );
    assert_eq!(app.params.decode.n, 15);
    act(&mut app, &[Action::DecN]);
    assert_eq!(app.params.decode.n, 10);
    act(&mut app, &[Action::DecN]);
    assert_eq!(app.params.decode.n, 9);
    act(&mut app, &[Action::ToggleMode, Action::ToggleMode]);
    assert_eq!(app.params.decode.mode, Mode::Strict);
    act(&mut app, &[Action::NextDraft]);
    assert_eq!(app.params.draft, 1);
    match app.outbox.last() {
        Some(Command::Decode { params, .. }) => assert_eq!(params.draft, "sft"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn stats_are_kept_per_parameter_set() {
    let mut app = fixtures::app(4);
    app.start();
    answer_all(&mut app);
    act(&mut app, &[Action::NextUser]);
    answer_all(&mut app);
    assert_eq!(app.stats().unwrap().users.len(), 2);
    act(&mut app, &[Action::ToggleMode]);
    answer_all(&mut app);
    assert_eq!(app.stats().unwrap().users.len(), 1);
    act(&mut app, &[Action::ToggleMode]);
    answer_all(&mut app);
    // Back in strict mode: the two users are still there, and re-running one did not double it.
    assert_eq!(app.stats().unwrap().users.len(), 2);
}

#[test]
fn auto_run_feeds_stats_and_stops_on_request() {
    let mut app = fixtures::app(5);
    app.start();
    answer_all(&mut app);
    act(&mut app, &[Action::ToggleAuto]);
    assert!(app.auto);
    let cmd = app.outbox.pop().unwrap();
    let replies = engine_reply(&app, cmd);
    // Two users come in, then the user stops the run; the rest is stale.
    let mut it = replies.into_iter();
    for ev in it.by_ref().take(2) {
        update(&mut app, Action::Engine(ev));
    }
    assert_eq!(app.user, 1);
    act(&mut app, &[Action::ToggleAuto]);
    assert!(!app.auto && !app.running());
    assert!(matches!(app.outbox.last(), Some(Command::Cancel { .. })));
    for ev in it {
        update(&mut app, Action::Engine(ev));
    }
    assert_eq!(app.user, 1);
    assert_eq!(app.stats().unwrap().users.len(), 2);

    // A full auto-run reaches the end and reports it.
    act(&mut app, &[Action::ToggleAuto]);
    answer_all(&mut app);
    assert!(!app.auto && !app.running());
    assert_eq!(app.user, 4);
    assert_eq!(app.stats().unwrap().users.len(), 5);
}

#[test]
fn compare_needs_two_drafts_and_decodes_both() {
    let mut app = fixtures::app(2);
    app.start();
    answer_all(&mut app);
    act(&mut app, &[Action::ToggleCompare]);
    match app.outbox.last() {
        Some(Command::Compare { other_draft, .. }) => assert_eq!(other_draft, "sft"),
        other => panic!("{other:?}"),
    }
    answer_all(&mut app);
    assert!(app.current.as_ref().unwrap().other.is_some());
    act(&mut app, &[Action::ToggleCompare]);
    assert!(matches!(app.outbox.last(), Some(Command::Decode { .. })));

    let mut one = fixtures::app(1);
    one.header.drafts.truncate(1);
    one.start();
    act(&mut one, &[Action::ToggleCompare]);
    assert!(one.compare.is_none());
    assert!(one.status.contains("two draft"));
}

#[test]
fn recording_saves_explored_users() {
    let mut app = fixtures::app(3);
    app.start();
    answer_all(&mut app);
    act(&mut app, &[Action::ToggleRecord]);
    act(&mut app, &[Action::NextUser]);
    answer_all(&mut app);
    act(&mut app, &[Action::ToggleMode]);
    answer_all(&mut app);
    act(&mut app, &[Action::ToggleRecord]);
    match app.outbox.pop() {
        Some(Command::SaveSession(s)) => {
            assert_eq!(s.version, crate::session::SESSION_VERSION);
            // User 1 (strict, recorded at start), user 2 strict and relaxed.
            assert_eq!(s.users.len(), 3);
            assert_eq!(s.header.dataset, "synthetic");
        }
        other => panic!("{other:?}"),
    }
    assert!(app.recording.is_none());

    // Quitting while recording saves too.
    act(&mut app, &[Action::ToggleRecord, Action::Quit]);
    assert!(app.quit);
    assert!(matches!(app.outbox.first(), Some(Command::SaveSession(_))));
}

#[test]
fn search_by_id_and_title() {
    let mut app = fixtures::app(6);
    app.start();
    act(&mut app, &[Action::SearchStart]);
    for c in "4".chars() {
        act(&mut app, &[Action::SearchInput(c)]);
    }
    act(&mut app, &[Action::SearchSubmit]);
    assert_eq!(app.user_view().unwrap().user, 4);
    assert!(app.ui.search.is_none());

    let title = app.users[1].history[0].title.to_uppercase();
    act(&mut app, &[Action::SearchStart]);
    for c in title.chars() {
        act(&mut app, &[Action::SearchInput(c)]);
    }
    act(&mut app, &[Action::SearchSubmit]);
    assert!(app
        .user_view()
        .unwrap()
        .history
        .iter()
        .any(|h| h.title.to_uppercase() == title));

    act(
        &mut app,
        &[
            Action::SearchStart,
            Action::SearchInput('z'),
            Action::SearchInput('q'),
            Action::SearchSubmit,
        ],
    );
    assert!(app.status.contains("no user matches"));
}

#[test]
fn mouse_wheel_scrolls_the_panel_under_it() {
    use crossterm::event::{Event, KeyModifiers, MouseEvent, MouseEventKind};
    let mut app = explored();
    update(
        &mut app,
        Action::Resize {
            width: 120,
            height: 40,
        },
    );
    let wheel = |app: &App, kind| {
        // Row 5, column 2 is inside the user panel at 120x40.
        let ev = Event::Mouse(MouseEvent {
            kind,
            column: 2,
            row: 5,
            modifiers: KeyModifiers::NONE,
        });
        super::keys::action(app, &ev).expect("the wheel over a panel scrolls it")
    };
    let down = wheel(&app, MouseEventKind::ScrollDown);
    act(&mut app, &[down]);
    assert_eq!(app.ui.focus, PanelId::User);
    assert_eq!(app.ui.scroll.user, 3);
    for _ in 0..3 {
        let up = wheel(&app, MouseEventKind::ScrollUp);
        act(&mut app, &[up]);
    }
    assert_eq!(app.ui.scroll.user, 0);
    act(
        &mut app,
        &[Action::NextFocus, Action::Scroll { dy: 2, dx: 1 }],
    );
    assert_eq!(app.ui.focus, PanelId::Beams);
    assert_eq!(app.ui.scroll.beams, 2);
    // The view clamps at the last line when it draws, so the way back is immediate.
    let rows = super::view::panels::beams::rows(&app) as u16;
    act(&mut app, &[Action::Scroll { dy: 1000, dx: 0 }]);
    screen(&mut app, 120, 40);
    assert_eq!(app.ui.scroll.beams, rows - 1);
    act(&mut app, &[Action::Scroll { dy: -1, dx: 0 }]);
    assert_eq!(app.ui.scroll.beams, rows - 2);
}

#[test]
fn x_queues_the_round_on_screen_for_an_svg() {
    let mut app = explored();
    act(&mut app, &[Action::ExportRound]);
    match app.outbox.pop() {
        Some(Command::ExportRound { user, round, run }) => {
            assert_eq!((user, round), (1, 0));
            assert_eq!(run.trace, app.current.as_ref().unwrap().run.trace);
        }
        other => panic!("{other:?}"),
    }
    let mut empty = fixtures::app(1);
    act(&mut empty, &[Action::ExportRound]);
    assert!(empty.outbox.is_empty() && empty.status.contains("nothing to export"));
}

#[test]
fn failures_show_in_the_status_line() {
    let mut app = fixtures::app(2);
    app.start();
    let generation = app.generation;
    update(
        &mut app,
        Action::Engine(EngineEvent::Failed {
            generation,
            message: "model exploded".into(),
        }),
    );
    assert!(!app.running());
    assert_eq!(app.status, "model exploded");
    assert!(screen(&mut app, 120, 40).contains("model exploded"));
}

#[test]
fn tab_on_a_small_screen_switches_groups_and_focus() {
    let mut app = explored();
    update(
        &mut app,
        Action::Resize {
            width: 80,
            height: 24,
        },
    );
    act(&mut app, &[Action::NextFocus]);
    assert_eq!((app.ui.tab, app.ui.focus), (Tab::Tree, PanelId::Attention));
    act(&mut app, &[Action::Scroll { dy: 2, dx: 3 }]);
    assert_eq!((app.ui.scroll.grid_row, app.ui.scroll.grid_col), (2, 3));
    act(&mut app, &[Action::SelectTab(Tab::Results)]);
    assert_eq!(app.ui.focus, PanelId::Recs);
}

/// Issue 12: titles, tokens and messages come from files. No control character (an escape
/// sequence that would drive the terminal) reaches a cell of the screen, whichever panel shows it.
#[test]
fn control_characters_from_files_never_reach_the_screen() {
    let evil = "Soap\u{1b}]0;pwned\u{7}\u{1b}[2J\r\u{9b}31m";
    let mut app = explored();
    app.header.dataset = evil.into();
    app.header.device = evil.into();
    app.replay = Some(evil.into());
    app.status = evil.into();
    app.narration.push(evil.into());
    for u in &mut app.users {
        for h in &mut u.history {
            h.title = evil.into();
            h.ident = evil.into();
        }
        for t in &mut u.truth {
            t.titles = vec![evil.into()];
        }
    }
    if let Some(c) = &mut app.current {
        for titles in c.run.titles.values_mut() {
            *titles = vec![evil.into()];
        }
    }
    update(&mut app, Action::RunToEnd);
    for (w, h) in [(120, 40), (80, 24), (40, 10)] {
        update(
            &mut app,
            Action::Resize {
                width: w,
                height: h,
            },
        );
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        term.draw(|f| super::render(&mut app, f)).unwrap();
        for cell in term.backend().buffer().content.iter() {
            assert!(
                !cell.symbol().contains(char::is_control),
                "{:?} on screen at {w}x{h}",
                cell.symbol()
            );
        }
    }
    // Cells written around the spans (as the log widget does) are scrubbed too.
    let mut buf = ratatui::buffer::Buffer::empty(ratatui::layout::Rect::new(0, 0, 3, 1));
    buf[(1, 0)].set_symbol("\u{1b}");
    super::view::scrub(&mut buf);
    assert_eq!(buf[(1, 0)].symbol(), "\u{FFFD}");
}

/// Issue 12: with `sessions/` not writable, quitting after recording exited 0 and wrote nothing.
/// A failed save now keeps the recording, says so, and offers another path; quitting with it
/// unsaved warns and asks again before dropping it.
#[test]
fn a_recording_that_cannot_be_saved_is_kept_and_another_path_offered() {
    let mut app = fixtures::app(3);
    app.fallback_dir = std::path::PathBuf::from("/somewhere/safe");
    app.start();
    answer_all(&mut app);
    act(&mut app, &[Action::ToggleRecord, Action::NextUser]);
    answer_all(&mut app);
    // Quit while recording: the save is queued and the quit waits on it.
    act(&mut app, &[Action::Quit]);
    assert!(app.quit);
    let saved = match app.outbox.iter().find(|c| super::state::is_save(c)) {
        Some(Command::SaveSession(s)) => s.clone(),
        other => panic!("{other:?}"),
    };
    app.outbox.clear();
    act(
        &mut app,
        &[Action::Saved(Err(
            "cannot save the session: sessions: Permission denied (os error 13)".into(),
        ))],
    );
    // Not quitting, not dropped, and a path is offered.
    assert!(!app.quit);
    assert_eq!(app.unsaved.as_deref(), Some(&*saved));
    assert!(app.status.contains("Permission denied"), "{}", app.status);
    assert!(app.status.contains("2 users kept"), "{}", app.status);
    assert_eq!(
        app.ui.save_path.as_deref(),
        Some("/somewhere/safe/atspeed-session.json")
    );
    let text = screen(&mut app, 120, 40);
    assert!(
        text.contains("save to") && text.contains("/somewhere/safe"),
        "{text}"
    );

    // Keys now edit the path; enter saves there.
    for _ in 0.."atspeed-session.json".len() {
        act(&mut app, &[Action::PathBackspace]);
    }
    for c in "mine.json".chars() {
        act(&mut app, &[Action::PathInput(c)]);
    }
    act(&mut app, &[Action::PathSubmit]);
    match app.outbox.pop() {
        Some(Command::SaveSessionAs { session, path }) => {
            assert_eq!(session, saved);
            assert_eq!(path, std::path::Path::new("/somewhere/safe/mine.json"));
        }
        other => panic!("{other:?}"),
    }
    // That fails too: still kept, the prompt comes back.
    act(
        &mut app,
        &[Action::Saved(Err("cannot save: read-only".into()))],
    );
    assert!(app.unsaved.is_some() && app.ui.save_path.is_some() && !app.quit);

    // Esc keeps it for now; quitting warns instead of quitting.
    act(&mut app, &[Action::Close, Action::Quit]);
    assert!(!app.quit);
    assert!(app.status.contains("not saved") && app.status.contains("q again"));
    assert!(app.unsaved.is_some());
    // r offers the path again; a save that works ends the pending quit.
    act(&mut app, &[Action::ToggleRecord]);
    assert!(app.ui.save_path.is_some());
    act(&mut app, &[Action::PathSubmit]);
    assert!(matches!(
        app.outbox.pop(),
        Some(Command::SaveSessionAs { .. })
    ));
    act(
        &mut app,
        &[Action::Saved(Ok(
            "/somewhere/safe/atspeed-session.json".into()
        ))],
    );
    assert!(app.unsaved.is_none());
    assert!(app.quit, "the quit asked for before the failure completes");
    assert!(app.farewell.iter().any(|l| l.contains("saved to")));

    // Quitting twice drops an unsaved recording, and says so on the way out.
    let mut app = fixtures::app(2);
    app.start();
    answer_all(&mut app);
    act(&mut app, &[Action::ToggleRecord, Action::ToggleRecord]);
    app.outbox.clear();
    act(
        &mut app,
        &[Action::Saved(Err("cannot save".into())), Action::Close],
    );
    act(&mut app, &[Action::Quit]);
    assert!(!app.quit);
    act(&mut app, &[Action::Quit]);
    assert!(app.quit);
    assert!(app.unsaved.is_none());
    assert!(
        app.farewell
            .iter()
            .any(|l| l.contains("warning") && l.contains("1 users")),
        "{:?}",
        app.farewell
    );
}

/// From a relaxed node line on screen ("<b_0> q .46 p .11 u .73 > p/q .46 failed"): u, the
/// comparison shown, p/q and the verdict words.
fn relaxed_numbers(line: &str) -> Option<(f64, String, f64, String)> {
    let at = line.find(" u ")?;
    let rest = &line[at + 3..];
    let mut words = rest.split_whitespace();
    let num = |s: &str| -> Option<f64> {
        match s {
            "inf" => Some(f64::INFINITY),
            _ => s.parse().ok(),
        }
    };
    let u = num(words.next()?)?;
    let cmp = words.next()?.to_string();
    if words.next()? != "p/q" {
        return None;
    }
    let ratio = num(words.next()?)?;
    let verdict: Vec<&str> = words.take_while(|w| !w.starts_with('│')).collect();
    Some((u, cmp, ratio, verdict.join(" ")))
}
