//! Record, save, load and replay a session through the public API, with no model: the teaching
//! path `atspeed replay sessions/NAME.json` takes.

#![cfg(feature = "tui")]

use atspeed::decode::trace::Mode;
use atspeed::session::{Session, UserRecord};
use atspeed::tui::engine::Engine;
use atspeed::tui::{fixtures, replay, update, Action, App, Command, EngineEvent};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn recorded() -> Session {
    let mut s = Session::new(fixtures::header());
    for id in [3, 8] {
        s.push(UserRecord {
            user: fixtures::user(id),
            run: fixtures::strict_run(id),
        });
    }
    s.push(UserRecord {
        user: fixtures::user(3),
        run: fixtures::relaxed_run(3),
    });
    s
}

/// Answers the app's queued engine commands with the replay engine, as the engine thread would.
fn serve(app: &mut App, engine: &mut replay::ReplayEngine) {
    for cmd in std::mem::take(&mut app.outbox) {
        let ev = match cmd {
            Command::Decode {
                generation,
                user,
                params,
            } => EngineEvent::decoded(generation, user, engine.decode(user, &params)),
            other => panic!("unexpected command {other:?}"),
        };
        update(app, Action::Engine(ev));
    }
}

fn screen(app: &mut App, width: u16, height: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(width, height)).unwrap();
    term.draw(|f| atspeed::tui::render(app, f)).unwrap();
    term.backend().to_string()
}

#[test]
fn a_saved_session_replays_without_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions").join("lesson.json");
    let s = recorded();
    s.save(&path).unwrap();

    let loaded = Session::load(&path).unwrap();
    assert_eq!(loaded, s);
    let (mut app, mut engine) = replay::replay_app(&loaded, &path);
    assert_eq!(engine.num_users(), 2);
    app.start();
    serve(&mut app, &mut engine);
    update(&mut app, Action::RunToEnd);
    let c = app.current.as_ref().expect("the first user replays");
    assert_eq!(c.run, s.users[0].run);
    let text = screen(&mut app, 120, 40);
    assert!(text.contains("REPLAY"), "{text}");
    assert!(text.contains("identical to target-only"), "{text}");

    // The relaxed run of the same user was recorded too.
    update(&mut app, Action::ToggleMode);
    serve(&mut app, &mut engine);
    assert_eq!(
        app.current.as_ref().unwrap().run.trace.params.mode,
        Mode::Relaxed
    );

    // Parameters never recorded: a message, not a crash.
    update(&mut app, Action::IncN);
    serve(&mut app, &mut engine);
    assert!(app.current.is_none());
    assert!(app.status.contains("not recorded"), "{}", app.status);
    assert!(screen(&mut app, 80, 24).contains("not recorded"));
}

/// A session written before the verifier's findings were recorded (no `checks`, `draft_rank`,
/// `test`, `draws`) still loads and replays to the end, its captions saying what it can.
#[test]
fn sessions_without_the_findings_still_replay() {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for key in ["checks", "draft_rank", "test", "draws"] {
                    m.remove(key);
                }
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.json");
    let mut v = serde_json::to_value(recorded()).unwrap();
    strip(&mut v);
    assert!(!v.to_string().contains("\"checks\""));
    std::fs::write(&path, v.to_string()).unwrap();
    let old = Session::load(&path).unwrap();
    let (mut app, mut engine) = replay::replay_app(&old, &path);
    app.start();
    serve(&mut app, &mut engine);
    for _ in 0..5 {
        update(&mut app, Action::Step);
    }
    let text = screen(&mut app, 120, 40);
    assert!(text.contains("of 3 drafted depths accepted"), "{text}");
    update(&mut app, Action::RunToEnd);
    assert!(screen(&mut app, 120, 40).contains("identical to target-only"));
}

/// `atspeed replay FILE --export-svg DIR`: every recorded round as a picture.
#[test]
fn a_session_exports_every_round_as_svg() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lesson.json");
    let s = recorded();
    s.save(&path).unwrap();
    let out = dir.path().join("svg");
    let files = atspeed::tui::export::export_session(&path, &out).unwrap();
    let rounds: usize = s.users.iter().map(|r| r.run.trace.rounds.len()).sum();
    assert_eq!(files.len(), rounds);
    for f in &files {
        let svg = std::fs::read_to_string(f).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("target step at depth"));
    }
    assert!(files[0].ends_with("user3-atspeed-s-strict-N6-K3-gamma3-round1.svg"));
}

#[test]
fn bad_session_files_are_reported_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(&path, "{\"version\": 1, \"users\": 3}").unwrap();
    // run_replay loads before touching the terminal, so this is safe without one.
    let e = atspeed::tui::run_replay(&path).unwrap_err().to_string();
    assert!(e.contains("broken.json"), "{e}");

    let mut v = serde_json::to_value(recorded()).unwrap();
    v["version"] = serde_json::json!(2);
    std::fs::write(&path, v.to_string()).unwrap();
    let e = atspeed::tui::run_replay(&path).unwrap_err().to_string();
    assert!(e.contains("broken.json") && e.contains("version 2"), "{e}");
}

/// Every session shipped in `sessions/` loads and replays to the end of every recorded run, at
/// both terminal sizes, with no model. The shipped set covers both verification modes.
#[test]
fn every_shipped_session_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sessions");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    let mut modes = std::collections::HashSet::new();
    for path in &files {
        let session = Session::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!session.users.is_empty(), "{}: no users", path.display());
        for rec in &session.users {
            modes.insert(rec.run.trace.params.mode);
        }
        let (mut app, mut engine) = replay::replay_app(&session, path);
        app.start();
        serve(&mut app, &mut engine);
        for _ in 0..engine.num_users() {
            // Walk every phase of the user, drawing each, then finish it.
            for _ in 0..64 {
                update(&mut app, Action::Step);
                let _ = screen(&mut app, 80, 24);
            }
            update(&mut app, Action::RunToEnd);
            let c = app
                .current
                .as_ref()
                .unwrap_or_else(|| panic!("{}: {}", path.display(), app.status));
            assert!(!c.run.trace.beams.is_empty());
            let text = screen(&mut app, 120, 40);
            assert!(text.contains("REPLAY"), "{text}");
            update(&mut app, Action::NextUser);
            serve(&mut app, &mut engine);
        }
    }
    assert!(files.len() >= 2, "ship at least two sessions in sessions/");
    assert!(
        modes.contains(&Mode::Strict) && modes.contains(&Mode::Relaxed),
        "ship a strict and a relaxed session"
    );
}

/// The relaxed demo opens on a relaxed user, and the shipped sessions show what the explorer
/// explains: strict rounds with target beams the draft missed, relaxed rounds that resampled.
#[test]
fn shipped_sessions_open_in_their_mode_and_show_the_findings() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sessions");
    let relaxed = Session::load(&dir.join("relaxed-demo.json")).unwrap();
    let (app, _) = replay::replay_app(&relaxed, &dir.join("relaxed-demo.json"));
    assert_eq!(app.params.decode.mode, Mode::Relaxed);
    let strict = Session::load(&dir.join("strict-demo.json")).unwrap();
    let rounds = |s: &Session| -> Vec<atspeed::decode::RoundTrace> {
        s.users
            .iter()
            .flat_map(|r| r.run.trace.rounds.clone())
            .collect()
    };
    assert!(rounds(&strict)
        .iter()
        .any(|r| r.checks.iter().any(|c| !c.missed.is_empty())));
    assert!(rounds(&relaxed)
        .iter()
        .any(|r| r.checks.iter().any(|c| c.residual.is_some())));
}

/// The shipped strict session, replayed to the end of its first user: the screen a student sees.
#[test]
fn shipped_strict_session_snapshot() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sessions/strict-demo.json");
    let session = Session::load(&path).unwrap();
    let (mut app, mut engine) =
        replay::replay_app(&session, std::path::Path::new("sessions/strict-demo.json"));
    app.start();
    serve(&mut app, &mut engine);
    update(&mut app, Action::RunToEnd);
    insta::assert_snapshot!("shipped_strict_session_120x40", screen(&mut app, 120, 40));
}

/// Issue 12: what passes validation is displayed without a panic, however extreme: times at the
/// edge of f64, scores at the edge of f32, probabilities 0 and 1, a 100,000-character title.
#[test]
fn extreme_but_valid_values_replay_and_draw() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("extreme.json");
    let mut s = recorded();
    for rec in &mut s.users {
        let run = &mut rec.run;
        run.baseline.time_ms = f64::MAX;
        run.trace.wall_ms = f64::MIN_POSITIVE;
        for r in &mut run.trace.rounds {
            r.times.other_ms = f64::MAX;
            for (i, n) in r.nodes.iter_mut().enumerate() {
                n.q = if i % 2 == 0 { 0.0 } else { 1.0 };
                n.draft_score = f32::MIN;
                n.target_score = Some(f32::MIN);
            }
        }
        for b in &mut run.trace.beams {
            b.score = f32::MIN;
        }
        for t in run.titles.values_mut() {
            *t = vec!["y".repeat(100_000)];
        }
        for h in &mut rec.user.history {
            h.title = "z".repeat(100_000);
        }
    }
    s.save(&path).unwrap();
    let loaded = Session::load(&path).unwrap();
    let (mut app, mut engine) = replay::replay_app(&loaded, &path);
    app.start();
    serve(&mut app, &mut engine);
    for _ in 0..engine.num_users() {
        for _ in 0..10 {
            update(&mut app, Action::Step);
            let _ = screen(&mut app, 120, 40);
            let _ = screen(&mut app, 80, 24);
        }
        update(&mut app, Action::RunToEnd);
        let text = screen(&mut app, 120, 40);
        assert!(text.contains("REPLAY"), "{text}");
        update(&mut app, Action::NextUser);
        serve(&mut app, &mut engine);
    }
}

/// Re-records the shipped sessions from the shipped models and data (run it by hand:
/// `cargo test --release --test tui_session -- --ignored record_shipped_sessions`). The traces
/// are deterministic (fixed seed); the timings are those of the machine that records, the median
/// of five decodes of each run.
///
/// - `strict-demo.json`: users 1423, 1, 2 and 7 with the paper's shape (N 40, gamma 3, K 20)
///   and AtSpeed-S, so rounds show rejected depths with the target beams the draft missed; user
///   1 also with SFT (`d` on it compares drafts).
/// - `relaxed-demo.json`: relaxed users only (so the replay opens in relaxed mode) with
///   AtSpeed-R, rounds that resample from the residual (user 12's first); user 7 also with
///   AtSpeed-S.
#[test]
#[ignore = "writes sessions/ from the shipped models; run by hand"]
fn record_shipped_sessions() {
    use atspeed::decode::{DecodeParams, Mode};
    use atspeed::load::{discover_drafts, load_draft, load_target, Placement};
    use atspeed::session::RunParams;
    use atspeed::tui::live::{live_app, ExplorerContext, TuneSettings};
    use atspeed::tui::Params;

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = atspeed::data::Dataset::load(&root.join("assets/beauty")).unwrap();
    let at = Placement::cpu_f32();
    let target_dir = root.join("assets/models/target");
    let (target, space) = load_target(&target_dir, None, &data, &at).unwrap();
    let drafts: Vec<(String, atspeed::model::Llm)> =
        discover_drafts(&root.join("assets/models"), &target_dir)
            .unwrap()
            .into_iter()
            .map(|(n, d)| (n, load_draft(&d, None, &data, &at, &space).unwrap()))
            .collect();
    let paper = |mode| DecodeParams {
        mode,
        n: 40,
        k: 20,
        gamma: 3,
        draft_mass: None,
    };
    let ctx = ExplorerContext {
        dataset: data,
        target,
        space,
        drafts,
        device: "cpu".into(),
        params: Params {
            decode: paper(Mode::Strict),
            draft: 0,
        },
        seed: 0,
        history: atspeed::data::DEFAULT_HISTORY,
        user: Some(1423),
        tune: TuneSettings::off(),
    };
    let (app, mut engine) = live_app(ctx).unwrap();
    let record = |engine: &mut dyn Engine, uid: u32, mode: Mode, draft: &str| {
        let user = app.users.iter().position(|u| u.user == uid).unwrap();
        let params = RunParams {
            decode: paper(mode),
            draft: draft.to_string(),
        };
        // The trace is the same every time; the timings are not. Keep the decode with the
        // median speculative time, and the median target-only time.
        let mut runs: Vec<_> = (0..5)
            .map(|_| engine.decode(user, &params).unwrap())
            .collect();
        let mut base: Vec<f64> = runs.iter().map(|r| r.baseline.time_ms).collect();
        base.sort_by(f64::total_cmp);
        runs.sort_by(|a, b| a.trace.wall_ms.total_cmp(&b.trace.wall_ms));
        let mut run = runs.swap_remove(2);
        run.baseline.time_ms = base[2];
        UserRecord {
            user: app.users[user].clone(),
            run,
        }
    };
    // Warm up first (caches, allocator), so the recorded timings are steady ones.
    for uid in [1423, 1, 2, 7, 12] {
        record(&mut engine, uid, Mode::Strict, "atspeed-s");
    }
    let mut strict = Session::new(app.header.clone());
    for uid in [1423, 1, 2, 7] {
        strict.push(record(&mut engine, uid, Mode::Strict, "atspeed-s"));
    }
    strict.push(record(&mut engine, 1, Mode::Strict, "sft"));
    let mut relaxed = Session::new(app.header.clone());
    // User 12 first: its first round resamples.
    for uid in [12, 7, 13, 14] {
        relaxed.push(record(&mut engine, uid, Mode::Relaxed, "atspeed-r"));
    }
    relaxed.push(record(&mut engine, 7, Mode::Relaxed, "atspeed-s"));
    let missed = strict
        .users
        .iter()
        .flat_map(|r| &r.run.trace.rounds)
        .flat_map(|r| &r.checks)
        .filter(|c| !c.missed.is_empty())
        .count();
    let resampled = relaxed
        .users
        .iter()
        .flat_map(|r| &r.run.trace.rounds)
        .filter(|r| r.checks.iter().any(|c| c.residual.is_some()))
        .count();
    assert!(missed > 0 && resampled > 0, "{missed} {resampled}");
    strict
        .save(&root.join("sessions/strict-demo.json"))
        .unwrap();
    relaxed
        .save(&root.join("sessions/relaxed-demo.json"))
        .unwrap();
    eprintln!(
        "{missed} rejected strict depths with missed beams, {resampled} resampled relaxed rounds"
    );
}
