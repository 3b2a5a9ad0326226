//! The live explorer's engine on a tiny dataset with random models: real traces flow through the
//! same app state and panels as the synthetic ones, and strict mode agrees with the baseline.

#![cfg(feature = "tui")]

use atspeed::data::Dataset;
use atspeed::decode::{DecodeParams, Mode};
use atspeed::model::{Llm, ModelConfig};
use atspeed::tui::engine::Engine;
use atspeed::tui::live::{live_app, ExplorerContext, TuneSettings};
use atspeed::tui::{update, Action, Command, EngineEvent, Params};
use candle_core::Device;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

const ITEMS: usize = 40;

/// A dataset folder: 40 items over a few codes per level, 8 users with short histories and test
/// items, 4 more with only train and valid items.
fn dataset_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let index: serde_json::Map<String, serde_json::Value> = (0..ITEMS)
        .map(|i| {
            let codes = vec![
                format!("<a_{}>", i % 3),
                format!("<b_{}>", i % 4),
                format!("<c_{}>", i % 5),
                format!("<d_{}>", i / 5),
            ];
            (i.to_string(), serde_json::json!(codes))
        })
        .collect();
    let titles: serde_json::Map<String, serde_json::Value> = (0..ITEMS)
        .map(|i| (i.to_string(), serde_json::json!(format!("Product {i}"))))
        .collect();
    let mut train = String::new();
    let mut valid = String::new();
    let mut test = String::new();
    for u in 1..=8usize {
        let items: Vec<String> = (0..6)
            .map(|j| ((u * 7 + j * 3) % ITEMS + 1).to_string())
            .collect();
        train.push_str(&format!("{u} {}\n", items.join(" ")));
        valid.push_str(&format!("{u} {}\n", (u * 5) % ITEMS + 1));
        test.push_str(&format!(
            "{u} {} {}\n",
            (u * 11) % ITEMS + 1,
            (u * 13) % ITEMS + 1
        ));
    }
    // Users 9-12 have no test item: the explorer never shows them, so it may tune on them.
    for u in 9..=12usize {
        let items: Vec<String> = (0..5)
            .map(|j| ((u * 5 + j * 7) % ITEMS + 1).to_string())
            .collect();
        train.push_str(&format!("{u} {}\n", items.join(" ")));
        valid.push_str(&format!("{u} {}\n", (u * 3) % ITEMS + 1));
        test.push_str(&format!("{u}\n"));
    }
    let p = dir.path();
    std::fs::write(
        p.join("tiny.LCRec-1e-3lr.json"),
        serde_json::Value::Object(index).to_string(),
    )
    .unwrap();
    std::fs::write(
        p.join("titles.json"),
        serde_json::Value::Object(titles).to_string(),
    )
    .unwrap();
    std::fs::write(p.join("sequential_train.txt"), train).unwrap();
    std::fs::write(p.join("sequential_valid.txt"), valid).unwrap();
    std::fs::write(p.join("sequential_test.txt"), test).unwrap();
    dir
}

fn model(ds: &Dataset, layers: usize, hidden: usize, seed: u64) -> Llm {
    let cfg = ModelConfig::compact(ds.vocab.len(), layers, hidden, 4, 2);
    Llm::random(&cfg, ds.vocab.tokens().to_vec(), 0.5, seed, &Device::Cpu).unwrap()
}

#[test]
fn live_engine_feeds_the_explorer() {
    let dir = dataset_dir();
    let ds = Dataset::load(dir.path()).unwrap();
    let target = model(&ds, 2, 32, 1);
    let drafts = vec![
        ("small".to_string(), model(&ds, 1, 16, 2)),
        ("other".to_string(), model(&ds, 1, 16, 3)),
    ];
    let space = atspeed::space::TokenSpace::new(&ds, &target).unwrap();
    let ctx = ExplorerContext {
        dataset: ds,
        space,
        target,
        drafts,
        device: "cpu".into(),
        params: Params {
            decode: DecodeParams {
                mode: Mode::Strict,
                n: 6,
                k: 3,
                gamma: 3,
                draft_mass: None,
            },
            draft: 0,
        },
        seed: 7,
        history: 20,
        user: Some(5),
        tune: TuneSettings::off(),
    };
    let (mut app, mut engine) = live_app(ctx).unwrap();
    assert_eq!(engine.num_users(), 8);
    // The chosen user comes first.
    assert_eq!(app.users[0].user, 5);
    assert!(app.header.target.starts_with("target llama 2Lx32"));
    assert!(app.users[0].history[0].title.starts_with("Product"));

    app.start();
    for mode_toggle in [false, true] {
        if mode_toggle {
            update(&mut app, Action::ToggleMode);
        }
        for cmd in std::mem::take(&mut app.outbox) {
            let Command::Decode {
                generation,
                user,
                params,
            } = cmd
            else {
                panic!("unexpected {cmd:?}");
            };
            let run = engine.decode(user, &params).unwrap();
            assert_eq!(run.trace.beams.len(), 3);
            if params.decode.mode == Mode::Strict {
                // Lossless: the speculative list is the target-only list.
                let spec: Vec<_> = run.trace.beams.iter().map(|b| &b.tokens).collect();
                let base: Vec<_> = run.baseline.beams.iter().map(|b| &b.tokens).collect();
                assert_eq!(spec, base);
            }
            for b in &run.trace.beams {
                let ident = app.vocab.render(&b.tokens);
                assert!(run.titles[&ident][0].starts_with("Product"), "{ident}");
            }
            update(
                &mut app,
                Action::Engine(EngineEvent::Decoded {
                    generation,
                    user,
                    run: Box::new(run),
                    auto: false,
                }),
            );
        }
        // Walk every phase of the real trace and draw each at both sizes: no panics, and the
        // attention grid shows the real mask.
        let phases = atspeed::tui::phase::phases(&app.current.as_ref().unwrap().run.trace).len();
        for _ in 0..=phases {
            for (w, h) in [(120, 40), (80, 24)] {
                update(
                    &mut app,
                    Action::Resize {
                        width: w,
                        height: h,
                    },
                );
                let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
                term.draw(|f| atspeed::tui::render(&mut app, f)).unwrap();
            }
            update(&mut app, Action::Step);
        }
        assert!(app.current.as_ref().unwrap().finished());
    }
}

/// `atspeed tui --draft-mass M` reaches the decoder: the explorer's requests carry the adaptive
/// width, and its traces draft fewer than N beams where the draft is confident.
#[test]
fn the_explorer_decodes_with_the_adaptive_width() {
    let dir = dataset_dir();
    let ds = Dataset::load(dir.path()).unwrap();
    let target = model(&ds, 2, 32, 1);
    let draft = model(&ds, 1, 16, 2);
    let decode = |mass| DecodeParams {
        mode: Mode::Strict,
        n: 12,
        k: 2,
        gamma: 3,
        draft_mass: mass,
    };
    let widths = |mass: Option<f32>| {
        let ctx = ExplorerContext {
            space: atspeed::space::TokenSpace::new(&ds, &target).unwrap(),
            dataset: ds.clone(),
            target: target.clone(),
            drafts: vec![("d".to_string(), draft.clone())],
            device: "cpu".into(),
            params: Params {
                decode: decode(mass),
                draft: 0,
            },
            seed: 7,
            history: 20,
            user: None,
            tune: TuneSettings::off(),
        };
        let (mut app, mut engine) = live_app(ctx).unwrap();
        app.start();
        let Some(Command::Decode { user, params, .. }) = app.outbox.pop() else {
            panic!("the explorer asks for a decode first");
        };
        assert_eq!(params.decode.draft_mass, mass);
        let run = engine.decode(user, &params).unwrap();
        assert_eq!(run.trace.params.draft_mass, mass);
        // Lossless either way.
        let spec: Vec<_> = run.trace.beams.iter().map(|b| &b.tokens).collect();
        let base: Vec<_> = run.baseline.beams.iter().map(|b| &b.tokens).collect();
        assert_eq!(spec, base);
        // (identifier depth, drafted beams at it) for every drafted depth of every round.
        run.trace
            .rounds
            .iter()
            .flat_map(|r| {
                (1..=r.drafted).map(move |d| {
                    (
                        r.start_depth + d,
                        r.nodes.iter().filter(|n| n.depth == d).count(),
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    // Full width: N, or every candidate where fewer exist (3 level-a codes at depth 1).
    let full = widths(None);
    assert!(
        full.iter()
            .all(|&(depth, w)| w == if depth == 1 { 3 } else { 12 }),
        "{full:?}"
    );
    // Adaptive: never below K, and narrower than N where the draft is confident.
    let adaptive = widths(Some(0.5));
    assert!(
        adaptive.iter().all(|&(_, w)| (2..=12).contains(&w)),
        "{adaptive:?}"
    );
    assert!(
        adaptive.iter().any(|&(depth, w)| depth > 1 && w < 12),
        "{adaptive:?}"
    );
}

/// One definition of per-depth acceptance: a user decoded in the explorer and in the bench shows
/// the same numbers.
#[test]
fn explorer_and_bench_agree_on_per_depth_acceptance() {
    use atspeed::eval::bench::{run_bench, BenchConfig};
    use atspeed::eval::speed::SpeedStats;
    let dir = dataset_dir();
    let ds = Dataset::load(dir.path()).unwrap();
    let target = model(&ds, 2, 32, 1);
    let draft = model(&ds, 1, 16, 2);
    let decode = DecodeParams {
        mode: Mode::Strict,
        n: 4,
        k: 3,
        gamma: 3,
        draft_mass: None,
    };
    let cfg = BenchConfig {
        decode,
        ks: vec![3],
        tune_users: 0,
        max_n: 0,
        tune_gamma: false,
        users: 1,
        warmup: 0,
        history: 20,
        seed: 0,
    };
    let space = atspeed::space::TokenSpace::new(&ds, &target).unwrap();
    let report = run_bench(&ds, &space, &target, &draft, &cfg, "cpu", |_, _| {}).unwrap();
    // The bench reports acceptance against N per drafted depth, and draws it (`bench --plot`).
    let curves = &report.per_k[0].width_curves;
    assert!(!curves.is_empty() && curves[0].depth == 1);
    // Nondecreasing in N, reaching every round at the widest N, and through the run's own
    // acceptance at its N = 4 (between the grid's widths 3 and 5).
    let pts = &curves[0].points;
    assert!(pts.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    assert_eq!(pts.last().unwrap().1, 1.0);
    let acc = report.per_k[0].depth_acceptance[0];
    let below = pts.iter().rfind(|p| p.0 <= 4).unwrap().1;
    let above = pts.iter().find(|p| p.0 >= 4).unwrap().1;
    assert!(below <= acc && acc <= above, "{pts:?} {acc}");
    let svg = atspeed::plot::bench_svg(&report).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("acceptance against N, drafted depth 1"));
    let first_test_user = ds.test_samples(20)[0].user;
    let ctx = ExplorerContext {
        space,
        dataset: ds.clone(),
        target: target.clone(),
        drafts: vec![("d".to_string(), draft.clone())],
        device: "cpu".into(),
        params: Params { decode, draft: 0 },
        seed: 0,
        history: 20,
        user: Some(first_test_user),
        tune: TuneSettings::off(),
    };
    let (mut app, mut engine) = live_app(ctx).unwrap();
    app.start();
    let Some(Command::Decode {
        generation,
        user,
        params,
    }) = app.outbox.pop()
    else {
        panic!("the explorer asks for a decode first");
    };
    let run = engine.decode(user, &params).unwrap();
    update(
        &mut app,
        Action::Engine(EngineEvent::Decoded {
            generation,
            user,
            run: Box::new(run),
            auto: false,
        }),
    );
    let shown: &SpeedStats = app.stats().expect("the explorer recorded the user");
    assert_eq!(shown.depth_acceptance(), report.per_k[0].depth_acceptance);
    assert_eq!(shown.accepted_steps(), report.per_k[0].accepted_steps);
}

/// The fair default: the explorer starts on the paper's shape, the engine tunes (N, gamma) in
/// the background on users it never shows, the app switches to the tuned shape, and the next
/// start finds it in the cache at once.
#[test]
fn the_explorer_tunes_its_shape_in_the_background_and_caches_it() {
    use atspeed::tui::state::{Preset, PAPER_GAMMA, PAPER_N};
    let dir = dataset_dir();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path().join("shapes.json");
    let ds = Dataset::load(dir.path()).unwrap();
    let target = model(&ds, 2, 32, 1);
    let draft = model(&ds, 1, 16, 2);
    let make = || {
        let ctx = ExplorerContext {
            space: atspeed::space::TokenSpace::new(&ds, &target).unwrap(),
            dataset: ds.clone(),
            target: target.clone(),
            drafts: vec![("d".to_string(), draft.clone())],
            device: "cpu".into(),
            params: Params {
                decode: DecodeParams {
                    mode: Mode::Strict,
                    n: 40,
                    k: 2,
                    gamma: 3,
                    draft_mass: None,
                },
                draft: 0,
            },
            seed: 1,
            history: 20,
            // Show only users 1-4 (those with a test item come first; user 5 is chosen).
            user: Some(5),
            tune: TuneSettings {
                users: 3,
                cache: Some(cache.clone()),
                custom: false,
                max_n: 8,
            },
        };
        live_app(ctx).unwrap()
    };
    let (mut app, mut engine) = make();
    assert_eq!(app.shapes.preset, Preset::Tuned);
    app.start();
    // Paper's shape until tuned; the tuning is asked for once.
    assert_eq!(
        (app.params.decode.n, app.params.decode.gamma),
        (PAPER_N, PAPER_GAMMA)
    );
    let tune = app
        .outbox
        .iter()
        .find_map(|c| match c {
            Command::Tune(w) => Some(w.clone()),
            _ => None,
        })
        .expect("the explorer asks for a tuning");
    assert_eq!(tune.k, 2);
    assert!(engine.tune(tune.clone()).is_none(), "nothing cached yet");
    assert!(engine.has_background());
    let tuned = loop {
        match engine.background() {
            Some(EngineEvent::Tuned(t)) => break t,
            Some(EngineEvent::TuneFailed { message, .. }) => panic!("{message}"),
            Some(ev) => update(&mut app, Action::Engine(ev)),
            None => {}
        }
    };
    assert!(!engine.has_background());
    assert!(!tuned.cached && tuned.users == 3);
    assert!((2..=8).contains(&tuned.n) && (1..=3).contains(&tuned.gamma));
    app.outbox.clear();
    update(&mut app, Action::Engine(EngineEvent::Tuned(tuned.clone())));
    assert_eq!(
        (app.params.decode.n, app.params.decode.gamma),
        (tuned.n.max(2), tuned.gamma)
    );
    // The switch re-decodes with the tuned shape.
    assert!(app.outbox.iter().any(|c| matches!(
        c,
        Command::Decode { params, .. } if params.decode.n == tuned.n && params.decode.gamma == tuned.gamma
    )));
    // t goes back to the paper's shape, and again to the tuned one.
    update(&mut app, Action::TogglePreset);
    assert_eq!(app.params.decode.n, PAPER_N);
    update(&mut app, Action::TogglePreset);
    assert_eq!(app.params.decode.n, tuned.n);
    assert!(cache.exists());

    // A shape that arrives while a user is being stepped through waits for the next user.
    let (mut app, mut engine) = make();
    app.start();
    app.outbox.clear();
    let generation = app.generation;
    let run = engine.decode(0, &app.run_params()).unwrap();
    update(
        &mut app,
        Action::Engine(EngineEvent::Decoded {
            generation,
            user: 0,
            run: Box::new(run),
            auto: false,
        }),
    );
    update(&mut app, Action::Step);
    update(&mut app, Action::Engine(EngineEvent::Tuned(tuned.clone())));
    assert!(app.shapes.deferred);
    assert_eq!(app.params.decode.n, PAPER_N);
    assert!(app.current.is_some(), "the round on screen stays");
    update(&mut app, Action::NextUser);
    assert!(!app.shapes.deferred);
    assert_eq!(app.params.decode.n, tuned.n);

    // A second start on the same machine, models and data: tuned at once, from the cache.
    let (_, mut again) = make();
    match again.tune(tune) {
        Some(EngineEvent::Tuned(t)) => {
            assert!(t.cached);
            assert_eq!((t.n, t.gamma), (tuned.n, tuned.gamma));
        }
        other => panic!("expected the cached shape, got {other:?}"),
    }
}
