//! Recommenders as today's frameworks train and run them (tests/fixtures/profiles, built by
//! scripts/make_profile_fixtures.py with transformers 5.24 and PEFT 0.21; no Python here):
//!
//! - a Qwen3 model in MiniOneRec's style: 3-level SIDs, its evaluation prompt in two
//!   separately encoded pieces, `\n` + EOS forced and scored after the SID, a transformers 4.57
//!   style tokenizer_config.json (Qwen2Tokenizer, added_tokens_decoder);
//! - a Qwen3 model in OpenOneRec's style: Qwen3's chat template with enable_thinking false and
//!   `<|sid_begin|>` prefilled, items written `<|sid_begin|><s_a_N>..<|sid_end|>`;
//! - a LLaMA whose legacy tokenizer.json (Prepend normalizer) got its code tokens from
//!   transformers 5 `add_tokens`: the history's codes encode in pieces, in Python too;
//! - an LC-Rec LoRA adapter saved by current PEFT (each resized layer saved three times) whose
//!   tokenizer_config.json makes transformers 5 load tokenizer.json's Metaspace "always" as
//!   "first".
//!
//! For each: the detected profile, transformers' prompt ids, the last-position logits, and the
//! framework's constrained beam-search lists, target-only and strict speculative.

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use atspeed::data::Dataset;
use atspeed::decode::{beam_search, speculative, BeamView, DecodeParams, Mode};
use atspeed::load::{load_draft, load_target, Placement};
use atspeed::model::Llm;
use atspeed::space::TokenSpace;
use rand::SeedableRng;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/profiles")
}

/// A fixture: its model folder, dataset, draft (None: the target drafts for itself), the
/// profile it must be detected as, and its expected.json.
struct Fixture {
    name: &'static str,
    model: PathBuf,
    data: PathBuf,
    draft: Option<PathBuf>,
    profile: &'static str,
    expected: PathBuf,
}

fn fixtures() -> Vec<Fixture> {
    let r = root();
    let lcrec_data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference/data");
    vec![
        Fixture {
            name: "minionerec",
            model: r.join("minionerec"),
            data: r.join("data3"),
            draft: Some(r.join("minionerec/draft")),
            profile: "minionerec",
            expected: r.join("minionerec/expected.json"),
        },
        Fixture {
            name: "openonerec",
            model: r.join("openonerec"),
            data: r.join("data-oor"),
            draft: Some(r.join("openonerec/draft")),
            profile: "openonerec",
            expected: r.join("openonerec/expected.json"),
        },
        Fixture {
            name: "llama-split",
            model: r.join("llama-split"),
            data: lcrec_data.clone(),
            draft: None,
            profile: "lc-rec",
            expected: r.join("llama-split/expected.json"),
        },
        Fixture {
            name: "lora-v5",
            model: r.join("lora-v5/adapter"),
            data: lcrec_data,
            draft: None,
            profile: "lc-rec",
            expected: r.join("lora-v5/expected.json"),
        },
    ]
}

fn expected(f: &Fixture) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&f.expected).unwrap()).unwrap()
}

fn load(f: &Fixture) -> (Dataset, Llm, TokenSpace) {
    let data = Dataset::load(&f.data).unwrap();
    let (m, space) = load_target(&f.model, None, &data, &Placement::cpu_f32()).unwrap();
    (data, m, space)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Largest difference allowed between our f32 numbers and PyTorch's (different kernels and
/// summation orders).
const F32_TOL: f32 = 5e-4;

fn assert_same_list(got: &[BeamView], want: &Value, what: &str) {
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: list length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.tokens, ids(&w["token_ids"]), "{what}: rank {}", i + 1);
        let ws = w["score"].as_f64().unwrap() as f32;
        assert!(
            (g.score - ws).abs() <= F32_TOL,
            "{what}: rank {} score {} vs transformers {ws}",
            i + 1,
            g.score
        );
    }
}

#[test]
fn profiles_are_detected_from_the_checkpoint() {
    for f in fixtures() {
        let (_, _, space) = load(&f);
        assert_eq!(
            space.profile.name, f.profile,
            "{}: {}",
            f.name, space.profile_why
        );
    }
}

#[test]
fn prompts_and_logits_equal_transformers() {
    for f in fixtures() {
        let (data, m, space) = load(&f);
        let exp = expected(&f);
        for (i, u) in exp["users"].as_array().unwrap().iter().enumerate() {
            let prompt = space.prompt(&data, &ids(&u["history"])).unwrap();
            assert_eq!(
                prompt,
                ids(&u["prompt_ids"]),
                "{} user {}",
                f.name,
                u["user"]
            );
            if i == 0 {
                let want: Vec<f32> = u["last_logits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect();
                let got = common::last_logits(&m, &prompt);
                assert_eq!(got.len(), want.len(), "{}", f.name);
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(worst <= F32_TOL, "{}: logits differ by {worst}", f.name);
            }
        }
    }
}

#[test]
fn target_only_and_strict_lists_equal_the_frameworks() {
    for f in fixtures() {
        let (data, target, space) = load(&f);
        let draft = match &f.draft {
            Some(d) => load_draft(d, None, &data, &Placement::cpu_f32(), &space).unwrap(),
            None => target.clone(),
        };
        let exp = expected(&f);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for u in exp["users"].as_array().unwrap() {
            let prompt = space.prompt(&data, &ids(&u["history"])).unwrap();
            for k in [1usize, 5, 10] {
                let want = &u["beams"][k.to_string()]["beams"];
                let what = |how: &str| format!("{} user {} K {k} {how}", f.name, u["user"]);
                let base = beam_search(&target, &space.trie, &prompt, k).unwrap();
                assert_same_list(&base.beams, want, &what("target-only"));
                let ident = space.identifier(&base.beams[0].tokens);
                assert!(ident.is_some(), "{}", what("identifier of the best beam"));
                for (d, n, gamma) in [(&draft, 3 * k, 3), (&draft, k, 1), (&target, k, 2)] {
                    let params = DecodeParams {
                        mode: Mode::Strict,
                        n,
                        k,
                        gamma,
                        draft_mass: None,
                    };
                    let t =
                        speculative(&target, d, &space.trie, &prompt, &params, &mut rng).unwrap();
                    assert_same_list(
                        &t.beams,
                        want,
                        &what(&format!("strict N {n} gamma {gamma}")),
                    );
                }
            }
        }
    }
}

/// MiniOneRec's `\n` + EOS after the SID: the constraint forces them, target-only search scores
/// them in the pass that feeds the last code (4 passes for 5 tokens), and a speculative decode
/// takes them inside its rounds: with every code accepted (the target as its own draft, N = K)
/// one target pass at gamma 3, two at gamma 1 or 2.
#[test]
fn forced_tokens_cost_no_pass_of_their_own() {
    let f = fixtures()
        .into_iter()
        .find(|f| f.name == "minionerec")
        .unwrap();
    let (data, target, space) = load(&f);
    assert_eq!(space.trie.forced(), [false, false, false, true, true]);
    assert_eq!(space.after.len(), 2);
    let u = &expected(&f)["users"][0];
    let prompt = space.prompt(&data, &ids(&u["history"])).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let base = beam_search(&target, &space.trie, &prompt, 5).unwrap();
    assert_eq!(base.target_passes, 4);
    for (gamma, passes, drafts) in [(3, 1, 3), (2, 2, 2), (1, 2, 2)] {
        let params = DecodeParams {
            mode: Mode::Strict,
            n: 5,
            k: 5,
            gamma,
            draft_mass: None,
        };
        let t = speculative(&target, &target, &space.trie, &prompt, &params, &mut rng).unwrap();
        assert_eq!(
            (t.target_passes(), t.draft_passes()),
            (passes, drafts),
            "gamma {gamma}"
        );
        let tokens = |b: &[BeamView]| b.iter().map(|x| x.tokens.clone()).collect::<Vec<_>>();
        assert_eq!(tokens(&t.beams), tokens(&base.beams), "gamma {gamma}");
    }
}

/// Current PEFT saves a resized layer as `X.weight`, `X.modules_to_save.weight` (trained) and
/// `X.original_module.weight` (the base's rows): the trained copy is used (the logits above equal
/// PEFT's merged model), chosen by name, whatever order the file lists them in.
#[test]
fn current_peft_layout_uses_the_trained_rows() {
    let f = fixtures()
        .into_iter()
        .find(|f| f.name == "lora-v5")
        .unwrap();
    let (_, m, _) = load(&f);
    let a = m.adapter.as_ref().unwrap();
    assert_eq!((a.r, a.alpha), (8, 16.0));
    assert_eq!(a.merged, 2 * 2, "q_proj and v_proj in 2 layers");
    let mut replaced = a.replaced.clone();
    replaced.sort();
    assert_eq!(replaced, ["lm_head.weight", "model.embed_tokens.weight"]);
    // The same adapter with only the untrained copy under the plain name still uses the
    // trained rows of modules_to_save.
    let dir = tempfile::tempdir().unwrap();
    let src = f.model.clone();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let st = dir.path().join("adapter_model.safetensors");
    let tensors = candle_core::safetensors::load(&st, &candle_core::Device::Cpu).unwrap();
    let mut renamed = std::collections::HashMap::new();
    for (k, t) in &tensors {
        // The plain name now holds the base's rows (the original_module copy).
        let t = if k.ends_with("lm_head.weight") || k.ends_with("embed_tokens.weight") {
            tensors[&k.replace(".weight", ".original_module.weight")].clone()
        } else {
            t.clone()
        };
        renamed.insert(k.clone(), t);
    }
    candle_core::safetensors::save(&renamed, &st).unwrap();
    let cfg = dir.path().join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let base = src.parent().unwrap().join("base");
    std::fs::write(
        &cfg,
        text.replace("\"../base\"", &format!("{:?}", base.display().to_string())),
    )
    .unwrap();
    let data = Dataset::load(&f.data).unwrap();
    let (_, space_a) = load_target(&f.model, None, &data, &Placement::cpu_f32()).unwrap();
    let (mb, space_b) = load_target(dir.path(), None, &data, &Placement::cpu_f32()).unwrap();
    let u = &expected(&f)["users"][0];
    let prompt = space_a.prompt(&data, &ids(&u["history"])).unwrap();
    assert_eq!(prompt, space_b.prompt(&data, &ids(&u["history"])).unwrap());
    let want = &u["beams"]["5"]["beams"];
    let got = beam_search(&mb, &space_b.trie, &prompt, 5).unwrap();
    assert_same_list(
        &got.beams,
        want,
        "modules_to_save preferred over the plain name",
    );
}

/// `inspect` names the profile, why it was chosen, the fixed tokens and what the tokenizer rules
/// changed; `--profile`, `--fixed-tokens` and `--tokenizer-rules` change the run.
#[test]
fn inspect_and_flags() {
    let fx = fixtures();
    let mini = &fx[0];
    let out = Command::cargo_bin("atspeed")
        .unwrap()
        .args(["inspect"])
        .arg(&mini.model)
        .arg("--data")
        .arg(&mini.data)
        .args(["--user", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "profile        minionerec",
        "3-level identifiers",
        "fixed tokens",
        "prompt ids",
        "### Response:",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let lora = &fx[3];
    let out = Command::cargo_bin("atspeed")
        .unwrap()
        .arg("inspect")
        .arg(&lora.model)
        .arg("--data")
        .arg(&lora.data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("prepend_scheme \"first\""), "{text}");
    // Skipping the fixed tokens: 3 generated tokens, ranked on the codes alone.
    let out = Command::cargo_bin("atspeed")
        .unwrap()
        .args([
            "recommend",
            "--user",
            "3",
            "--k",
            "5",
            "--fixed-tokens",
            "skipped",
            "--target",
        ])
        .arg(&mini.model)
        .arg("--data")
        .arg(&mini.data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("3 target passes"), "{text}");
}

#[test]
fn bad_profiles_get_one_clear_error() {
    let fx = fixtures();
    let oor = &fx[1];
    let dir = tempfile::tempdir().unwrap();
    let run = |profile: &Path| {
        let out = Command::cargo_bin("atspeed")
            .unwrap()
            .args(["recommend", "--user", "3", "--k", "3", "--profile"])
            .arg(profile)
            .arg("--target")
            .arg(&oor.model)
            .arg("--data")
            .arg(&oor.data)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A chat template that fails to render.
    let t = dir.path().join("bad.jinja");
    std::fs::write(&t, "{{ raise_exception('only user turns here') }}").unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        "extends = \"openonerec\"\nname = \"x\"\n[prompt]\ntemplate = \"bad.jinja\"\n",
    )
    .unwrap();
    let e = run(&p);
    assert!(
        e.contains("only user turns here") && e.contains("chat template"),
        "{e}"
    );
    // An unknown field.
    std::fs::write(
        &p,
        "extends = \"openonerec\"\nname = \"x\"\n[prompt]\nsytem = \"typo\"\n",
    )
    .unwrap();
    let e = run(&p);
    assert!(e.contains("p.toml") && e.contains("sytem"), "{e}");
    // A fixed token the tokenizer lacks.
    std::fs::write(&p, "extends = \"openonerec\"\nname = \"x\"\n[prompt]\ngeneration_prefix = \"<|item_begin|>\"\n").unwrap();
    let e = run(&p);
    assert!(
        e.contains("<|item_begin|>") && e.contains("not a token"),
        "{e}"
    );
    // Identifiers of different lengths in the index.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for e in std::fs::read_dir(&oor.data).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, data.join(p.file_name().unwrap())).unwrap();
    }
    let idx = data.join("data-oor.index.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&idx).unwrap()).unwrap();
    v["5"].as_array_mut().unwrap().pop();
    std::fs::write(&idx, v.to_string()).unwrap();
    let out = Command::cargo_bin("atspeed")
        .unwrap()
        .args(["recommend", "--user", "3", "--target"])
        .arg(&oor.model)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("item 5 has 2 tokens, expected 3"), "{e}");
}

/// A 3-level dataset with MiniOneRec's fixed `\n` + EOS runs through the live explorer, is
/// recorded as a session, and replays from it (snapshot at 120x40: titles found through the
/// codes, forced levels drawn in the tree, AS up to 3 since the last code is drafted too).
#[cfg(feature = "tui")]
#[test]
fn a_minionerec_run_records_and_replays_in_the_explorer() {
    use atspeed::decode::PhaseTimes;
    use atspeed::session::{Session, UserRecord};
    use atspeed::tui::engine::Engine;
    use atspeed::tui::live::{live_app, ExplorerContext, TuneSettings};
    use atspeed::tui::{replay, update, Action, Command, EngineEvent, Params};

    let f = fixtures()
        .into_iter()
        .find(|f| f.name == "minionerec")
        .unwrap();
    let (data, target, space) = load(&f);
    let draft = load_draft(
        f.draft.as_ref().unwrap(),
        None,
        &data,
        &Placement::cpu_f32(),
        &space,
    )
    .unwrap();
    let ctx = ExplorerContext {
        dataset: data,
        space,
        target,
        drafts: vec![("draft".into(), draft)],
        device: "cpu".into(),
        params: Params {
            decode: DecodeParams {
                mode: Mode::Strict,
                n: 10,
                k: 5,
                gamma: 3,
                draft_mass: None,
            },
            draft: 0,
        },
        seed: 7,
        history: 20,
        user: Some(3),
        tune: TuneSettings::off(),
    };
    let (mut app, mut engine) = live_app(ctx).unwrap();
    assert!(
        app.header.target.contains("minionerec profile"),
        "{}",
        app.header.target
    );
    assert_eq!(
        (
            app.header.levels,
            app.header.length,
            app.header.most_accepted()
        ),
        (3, 5, 3)
    );
    app.start();
    let Some(Command::Decode { user, params, .. }) = app.outbox.pop() else {
        panic!("the explorer asks for the first user");
    };
    let mut run = engine.decode(user, &params).unwrap();
    // Times are the machine's: fixed ones keep the snapshot stable.
    for r in &mut run.trace.rounds {
        r.times = PhaseTimes {
            draft_ms: 1.0,
            verify_ms: 2.0,
            other_ms: 0.5,
            ..Default::default()
        };
    }
    run.trace.wall_ms = 3.5 * run.trace.rounds.len() as f64;
    run.baseline.time_ms = 7.0;
    let mut session = Session::new(app.header.clone());
    session.push(UserRecord {
        user: app.users[0].clone(),
        run,
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mini.json");
    session.save(&path).unwrap();
    let loaded = Session::load(&path).unwrap();
    assert_eq!(loaded, session);
    let (mut app, mut engine) = replay::replay_app(&loaded, &path);
    app.start();
    for cmd in std::mem::take(&mut app.outbox) {
        if let Command::Decode {
            generation,
            user,
            params,
        } = cmd
        {
            let ev = EngineEvent::decoded(generation, user, engine.decode(user, &params));
            update(&mut app, Action::Engine(ev));
        }
    }
    update(&mut app, Action::RunToEnd);
    let mut term = ratatui::Terminal::new(ratatui::backend::TestBackend::new(120, 40)).unwrap();
    term.draw(|fr| atspeed::tui::render(&mut app, fr)).unwrap();
    // The header names the session file, whose temporary folder changes from run to run.
    let text = regex::Regex::new(r"\.tmp[A-Za-z0-9]{6}")
        .unwrap()
        .replace_all(&term.backend().to_string(), ".tmpXXXXXX")
        .into_owned();
    assert!(
        text.contains("Neutrogena"),
        "titles through the codes:\n{text}"
    );
    insta::assert_snapshot!("minionerec_replay_120x40", text);
}
