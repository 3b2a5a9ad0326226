//! The live explorer's engine on a tiny dataset with random models: real traces flow through the
//! same app state and panels as the synthetic ones, and strict mode agrees with the baseline.

use atspeed::data::Dataset;
use atspeed::decode::trace::Mode;
use atspeed::model::{LlamaConfig, Llm};
use atspeed::tui::engine::Engine;
use atspeed::tui::live::{live_app, ExplorerContext};
use atspeed::tui::{update, Action, Command, EngineEvent, Params};
use candle_core::Device;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

const ITEMS: usize = 40;

/// A dataset folder: 40 items over a few codes per level, 8 users with short histories.
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
    let cfg = LlamaConfig::compact(ds.vocab.len(), layers, hidden, 4, 2);
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
    let ctx = ExplorerContext {
        dataset: ds,
        target,
        drafts,
        device: "cpu".into(),
        params: Params {
            mode: Mode::Strict,
            n: 6,
            k: 3,
            gamma: 3,
            draft: 0,
        },
        seed: 7,
        history: 20,
        user: Some(5),
    };
    let (mut app, mut engine) = live_app(ctx).unwrap();
    assert_eq!(engine.num_users(), 8);
    // The chosen user comes first.
    assert_eq!(app.users[0].user, 5);
    assert!(app.header.target.starts_with("target 2Lx32"));
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
            if params.mode == Mode::Strict {
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
                term.draw(|f| atspeed::tui::render(&app, f)).unwrap();
            }
            update(&mut app, Action::Step);
        }
        assert!(app.current.as_ref().unwrap().finished());
    }
}
