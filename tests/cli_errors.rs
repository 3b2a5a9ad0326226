//! The command line on bad input: every mistake ends in one clear `error:` line that names the
//! file or flag at fault and what is wrong with it, a non-zero exit status, and never a panic.
//! One happy-path test checks the same commands work on good input.

mod fixtures;

use std::path::Path;

use atspeed::data::Dataset;
use atspeed::decode::{speculative, DecodeParams, Mode};
use atspeed::model::Llm;
use candle_core::Device;
use fixtures::*;
use predicates::prelude::*;
use rand::SeedableRng;

/// Runs `cmd`, expecting a handled error: exit status `code` (1 for errors from the program,
/// 2 for clap's usage errors), no panic, and stderr containing every needle. Returns stderr.
fn fails_with(cmd: &mut assert_cmd::Command, code: i32, needles: &[&str]) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status {:?}, stderr:\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "panic:\n{stderr}");
    assert!(stderr.contains("error: "), "no error line:\n{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}:\n{stderr}");
    }
    stderr
}

/// A handled error from the program itself (exit status 1).
fn fails(cmd: &mut assert_cmd::Command, needles: &[&str]) -> String {
    fails_with(cmd, 1, needles)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `atspeed recommend --data DATA --target MODEL --user 1` plus `extra`.
fn recommend(data: &Path, model: &Path, extra: &[&str]) -> assert_cmd::Command {
    let mut cmd = atspeed();
    cmd.arg("recommend")
        .arg("--data")
        .arg(data)
        .arg("--target")
        .arg(model)
        .args(["--user", "1"])
        .args(extra);
    cmd
}

/// `atspeed bench` on 2 users, no warm-up, plus `extra`.
fn bench(data: &Path, target: &Path, draft: &Path, extra: &[&str]) -> assert_cmd::Command {
    let mut cmd = atspeed();
    cmd.arg("bench")
        .arg("--data")
        .arg(data)
        .arg("--target")
        .arg(target)
        .arg("--draft")
        .arg(draft)
        .args(["--users", "2", "--warmup", "0"])
        .args(extra);
    cmd
}

fn inspect(dir: &Path) -> assert_cmd::Command {
    let mut cmd = atspeed();
    cmd.arg("inspect").arg(dir);
    cmd
}

/// Replaces line `line` (1-based) of `file` with `text`.
fn replace_line(file: &Path, line: usize, text: &str) {
    let old = std::fs::read_to_string(file).unwrap();
    let mut lines: Vec<String> = old.lines().map(String::from).collect();
    lines[line - 1] = text.to_string();
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
}

/// Edits the identifier index as JSON.
fn edit_index(data: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = data.join(INDEX);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Dataset folders

#[test]
fn malformed_sequence_line_names_file_and_line() {
    let setup = Setup::new();
    let data = setup.data_copy("bad_item");
    replace_line(&data.join(TRAIN), 2, "2 3 x 5");
    let at = format!("{}:2:", s(&data.join(TRAIN)));
    let needles = [at.as_str(), "expected an integer item id", "\"x\""];
    fails(&mut inspect(&data), &needles);
    fails(&mut recommend(&data, &setup.model, &[]), &needles);

    let data = setup.data_copy("bad_user");
    replace_line(&data.join(VALID), 3, "three 4");
    let at = format!("{}:3:", s(&data.join(VALID)));
    fails(
        &mut inspect(&data),
        &[&at, "expected an integer user id", "\"three\""],
    );

    // A negative or fractional id is not an integer id either.
    let data = setup.data_copy("bad_frac");
    replace_line(&data.join(TEST), 1, "1 2.5");
    let at = format!("{}:1:", s(&data.join(TEST)));
    fails(&mut inspect(&data), &[&at, "\"2.5\""]);
}

#[test]
fn item_id_out_of_range_names_file_and_range() {
    let setup = Setup::new();
    let data = setup.data_copy("too_big");
    replace_line(&data.join(VALID), 4, "4 99");
    let at = format!("{}:4:", s(&data.join(VALID)));
    let range = format!("item 99 out of range 1..={ITEMS}");
    fails(&mut inspect(&data), &[&at, &range]);
    fails(&mut recommend(&data, &setup.model, &[]), &[&at, &range]);

    // Sequence files are 1-based: item 0 does not exist.
    let data = setup.data_copy("zero");
    replace_line(&data.join(TRAIN), 1, "1 0 3");
    let at = format!("{}:1:", s(&data.join(TRAIN)));
    fails(&mut inspect(&data), &[&at, "item 0 out of range"]);

    // A user id beyond the number of lines.
    let data = setup.data_copy("user_range");
    replace_line(&data.join(TEST), 2, "9 1");
    let at = format!("{}:2:", s(&data.join(TEST)));
    fails(&mut inspect(&data), &[&at, "user id 9 out of range"]);
}

#[test]
fn identifier_with_wrong_token_count_names_index() {
    let setup = Setup::new();
    let data = setup.data_copy("short_ident");
    edit_index(&data, |v| {
        v["3"].as_array_mut().unwrap().pop();
    });
    let index = s(&data.join(INDEX));
    fails(
        &mut inspect(&data),
        &[&index, "item 3 has 3 tokens, expected 4"],
    );
    fails(
        &mut recommend(&data, &setup.model, &[]),
        &[&index, "item 3 has 3 tokens"],
    );

    let data = setup.data_copy("long_ident");
    edit_index(&data, |v| {
        v["7"].as_array_mut().unwrap().push("<d_1>".into());
    });
    fails(
        &mut inspect(&data),
        &[&s(&data.join(INDEX)), "item 7 has 5 tokens, expected 4"],
    );

    // Malformed JSON in the index also names it.
    let data = setup.data_copy("broken_index");
    std::fs::write(data.join(INDEX), "{\"0\": [").unwrap();
    fails(
        &mut inspect(&data),
        &[&s(&data.join(INDEX)), "malformed JSON"],
    );
}

#[test]
fn missing_sequence_file_names_it() {
    let setup = Setup::new();
    let data = setup.data_copy("no_test");
    std::fs::remove_file(data.join(TEST)).unwrap();
    let path = s(&data.join(TEST));
    let err = fails(&mut inspect(&data), &[&path]);
    // The OS reason is given once, not repeated by the error chain.
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
    fails(&mut recommend(&data, &setup.model, &[]), &[&path]);
    fails(&mut bench(&data, &setup.model, &setup.model, &[]), &[&path]);
}

#[test]
fn missing_dataset_folder_names_it() {
    let setup = Setup::new();
    let nope = setup.path("no_such_dataset");
    let path = s(&nope);
    let err = fails(&mut inspect(&nope), &[&path]);
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
    fails(&mut recommend(&nope, &setup.model, &[]), &[&path]);
    fails(&mut bench(&nope, &setup.model, &setup.model, &[]), &[&path]);
    fails(
        atspeed()
            .arg("new-model")
            .arg("--data")
            .arg(&nope)
            .arg("--out")
            .arg(setup.path("m")),
        &[&path],
    );
    fails(
        atspeed()
            .arg("selftest")
            .arg("--data")
            .arg(&nope)
            .arg("--target")
            .arg(&setup.model)
            .arg("--draft")
            .arg(&setup.model),
        &[&path],
    );
    // The explorer reports the same error before it touches the terminal.
    fails(
        atspeed()
            .arg("tui")
            .arg("--data")
            .arg(&nope)
            .arg("--target")
            .arg(&setup.model),
        &[&path],
    );
    // A folder without an identifier index.
    let empty = setup.path("empty");
    std::fs::create_dir(&empty).unwrap();
    fails(&mut inspect(&empty), &[&s(&empty), "no identifier index"]);
}

#[test]
fn dataset_without_test_users_is_reported_not_called_inexact() {
    let setup = Setup::new();
    let data = setup.data_copy("no_test_items");
    let users: String = (1..=USERS).map(|u| format!("{u}\n")).collect();
    std::fs::write(data.join(TEST), users).unwrap();
    let err = fails(
        &mut bench(&data, &setup.model, &setup.model, &[]),
        &[&s(&data.join(TEST)), "no user has a test item"],
    );
    assert!(!err.contains("strict mode produced"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

#[test]
fn draft_and_target_with_different_vocabularies() {
    let setup = Setup::new();
    // Same catalogue shape, codes shifted: same vocabulary size, different tokens.
    let other = write_dataset(&setup.path("other"), 10);
    let draft = write_checkpoint(&other, &setup.path("other_model"), 4);
    let a = Dataset::load(&setup.data).unwrap();
    let b = Dataset::load(&other).unwrap();
    assert_eq!(a.vocab.len(), b.vocab.len());
    assert_ne!(a.vocab.tokens(), b.vocab.tokens());

    let needles = [s(&draft), "vocabulary".to_string()];
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    fails(&mut bench(&setup.data, &setup.model, &draft, &[]), &needles);
    fails(
        &mut recommend(&setup.data, &setup.model, &["--draft", &s(&draft)]),
        &needles,
    );
    fails(
        atspeed()
            .arg("selftest")
            .arg("--data")
            .arg(&setup.data)
            .arg("--target")
            .arg(&setup.model)
            .arg("--draft")
            .arg(&draft),
        &needles,
    );

    // The decoder itself refuses the pair, naming the draft folder.
    let target = Llm::load(&setup.model, &Device::Cpu).unwrap();
    let draft_llm = Llm::load(&draft, &Device::Cpu).unwrap();
    let prompt = a.prompt(&a.train[0]);
    let params = DecodeParams {
        mode: Mode::Strict,
        n: 4,
        k: 2,
        gamma: 2,
        draft_mass: None,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let err = speculative(&target, &draft_llm, &a.trie, &prompt, &params, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&s(&draft)) && err.contains("draft vocabulary"),
        "{err}"
    );
}

#[test]
fn checkpoint_vocabulary_must_match_dataset() {
    let setup = Setup::new();
    let other = write_dataset(&setup.path("other"), 10);
    let model = write_checkpoint(&other, &setup.path("other_model"), 4);
    let needles = [
        s(&model),
        "does not match dataset".to_string(),
        s(&setup.data),
    ];
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    fails(&mut recommend(&setup.data, &model, &[]), &needles);
    fails(&mut bench(&setup.data, &model, &setup.model, &[]), &needles);

    // A checkpoint over a different vocabulary size is refused the same way.
    let bigger = write_dataset(&setup.path("bigger"), 0);
    edit_index(&bigger, |v| {
        v["0"] = serde_json::json!(["<a_9>", "<b_9>", "<c_9>", "<d_9>"]);
    });
    let big_model = write_checkpoint(&bigger, &setup.path("big_model"), 5);
    fails(
        &mut recommend(&setup.data, &big_model, &[]),
        &[&s(&big_model), "does not match dataset"],
    );
}

#[test]
fn corrupt_safetensors_names_the_file() {
    let setup = Setup::new();
    let bytes = std::fs::read(setup.model.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated_header", bytes[..100].to_vec()),
        ("truncated_data", bytes[..bytes.len() - 64].to_vec()),
        ("huge_header_len", {
            let mut b = bytes.clone();
            b[..8].copy_from_slice(&[0xff; 8]);
            b
        }),
        ("garbage_header", {
            let mut b = bytes.clone();
            for x in &mut b[8..8 + header_len.min(64)] {
                *x = b'#';
            }
            b
        }),
        (
            "not_safetensors",
            b"this is not a safetensors file at all".to_vec(),
        ),
    ];
    for (name, contents) in cases {
        let model = setup.model_copy(name);
        let file = model.join("model.safetensors");
        std::fs::write(&file, contents).unwrap();
        let path = s(&file);
        fails(&mut inspect(&model), &[&path, "corrupt safetensors"]);
        fails(
            &mut recommend(&setup.data, &model, &[]),
            &[&path, "corrupt safetensors"],
        );
    }
}

#[test]
fn missing_weights_name_the_checkpoint() {
    let setup = Setup::new();
    let model = setup.model_copy("no_weights");
    std::fs::remove_file(model.join("model.safetensors")).unwrap();
    let dir = s(&model);
    let needles = [dir.as_str(), "model.safetensors", "no weights"];
    fails(&mut inspect(&model), &needles);
    fails(&mut recommend(&setup.data, &model, &[]), &needles);
    fails(&mut bench(&setup.data, &setup.model, &model, &[]), &needles);

    // No tokenizer.json: the vocabulary cannot be known.
    let model = setup.model_copy("no_tokenizer");
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    fails(
        &mut inspect(&model),
        &[&s(&model.join("tokenizer.json")), "missing"],
    );

    // A checkpoint folder that does not exist.
    let nope = setup.path("no_such_model");
    fails(
        &mut recommend(&setup.data, &nope, &[]),
        &[&s(&nope), "not a checkpoint folder"],
    );
}

#[test]
fn malformed_config_names_config_json() {
    let setup = Setup::new();
    let cases = [
        ("truncated", "{\"vocab_size\": ".to_string(), "not JSON"),
        ("not_json", "hello".to_string(), "not JSON"),
        (
            "no_hidden",
            "{\"vocab_size\": 19}".to_string(),
            "hidden_size",
        ),
        (
            "string_field",
            {
                let mut v: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(setup.model.join("config.json")).unwrap(),
                )
                .unwrap();
                v["num_hidden_layers"] = serde_json::json!("one");
                v.to_string()
            },
            "num_hidden_layers must be a non-negative integer",
        ),
        (
            "bad_heads",
            {
                let mut v: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(setup.model.join("config.json")).unwrap(),
                )
                .unwrap();
                v["num_attention_heads"] = serde_json::json!(3);
                v.to_string()
            },
            "num_attention_heads 3",
        ),
        (
            "zero_heads",
            {
                let mut v: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(setup.model.join("config.json")).unwrap(),
                )
                .unwrap();
                v["num_attention_heads"] = serde_json::json!(0);
                v.to_string()
            },
            "num_attention_heads = 0",
        ),
    ];
    for (name, text, problem) in cases {
        let model = setup.model_copy(name);
        std::fs::write(model.join("config.json"), text).unwrap();
        let path = s(&model.join("config.json"));
        fails(&mut inspect(&model), &[&path, problem]);
        fails(&mut recommend(&setup.data, &model, &[]), &[&path, problem]);
    }

    // A config that parses but disagrees with the weights names the checkpoint.
    let model = setup.model_copy("wrong_shape");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    v["hidden_size"] = serde_json::json!(32);
    std::fs::write(model.join("config.json"), v.to_string()).unwrap();
    fails(
        &mut inspect(&model),
        &[&s(&model), "weights do not fit config.json"],
    );

    // A config whose vocab_size disagrees with tokenizer.json names the tokenizer.
    let model = setup.model_copy("wrong_vocab");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    v["vocab_size"] = serde_json::json!(7);
    std::fs::write(model.join("config.json"), v.to_string()).unwrap();
    fails(
        &mut inspect(&model),
        &[&s(&model.join("tokenizer.json")), "vocab_size 7"],
    );
}

// ---------------------------------------------------------------------------------------------
// Flags

#[test]
fn n_below_k_names_flag_n() {
    let setup = Setup::new();
    let needles = ["--n", "N = 2", "K = 5", "N must be >= K"];
    fails(
        &mut bench(
            &setup.data,
            &setup.model,
            &setup.model,
            &["--n", "2", "--k", "5"],
        ),
        &needles,
    );
    fails(
        &mut recommend(
            &setup.data,
            &setup.model,
            &["--draft", &s(&setup.model), "--n", "2", "--k", "5"],
        ),
        &needles,
    );
    // One bad K in a list is enough.
    fails(
        &mut bench(
            &setup.data,
            &setup.model,
            &setup.model,
            &["--n", "3", "--k", "1,2,5"],
        ),
        &["--n", "K = 5"],
    );
    fails(
        &mut bench(&setup.data, &setup.model, &setup.model, &["--k", "0"]),
        &["--k", "at least 1"],
    );
    fails(
        &mut bench(&setup.data, &setup.model, &setup.model, &["--gamma", "0"]),
        &["--gamma", "at least 1"],
    );
}

#[test]
fn unknown_mode_is_a_usage_error() {
    let setup = Setup::new();
    fails_with(
        &mut recommend(&setup.data, &setup.model, &["--mode", "fast"]),
        2,
        &["--mode", "\"fast\"", "strict or relaxed"],
    );
    fails_with(
        &mut bench(
            &setup.data,
            &setup.model,
            &setup.model,
            &["--mode", "lossy"],
        ),
        2,
        &["--mode", "\"lossy\""],
    );
}

#[test]
fn unknown_device_names_flag_device() {
    let setup = Setup::new();
    fails(
        &mut recommend(&setup.data, &setup.model, &["--device", "tpu"]),
        &["--device", "unknown device \"tpu\"", "cpu, cuda, cuda:N"],
    );
    fails(
        &mut bench(
            &setup.data,
            &setup.model,
            &setup.model,
            &["--device", "cuda:x"],
        ),
        &["--device", "bad device \"cuda:x\""],
    );
}

#[test]
fn unknown_dtype_names_flag_dtype() {
    let setup = Setup::new();
    let needles = ["--dtype", "unknown dtype \"f8\"", "f32, f16, bf16"];
    fails(
        &mut recommend(&setup.data, &setup.model, &["--dtype", "f8"]),
        &needles,
    );
    fails(
        &mut bench(&setup.data, &setup.model, &setup.model, &["--dtype", "f8"]),
        &needles,
    );
    fails(
        atspeed()
            .arg("new-model")
            .arg("--data")
            .arg(&setup.data)
            .args(["--dtype", "int8"])
            .arg("--out")
            .arg(setup.path("m")),
        &["--dtype", "unknown dtype \"int8\""],
    );
    assert!(!setup.path("m").exists());
}

#[test]
fn cuda_device_in_cpu_only_build() {
    if cfg!(feature = "cuda") {
        return;
    }
    let setup = Setup::new();
    for dev in ["cuda", "cuda:0", "cuda:1"] {
        fails(
            &mut recommend(&setup.data, &setup.model, &["--device", dev]),
            &["--device", "built without CUDA", "--features cuda"],
        );
    }
    fails(
        &mut bench(
            &setup.data,
            &setup.model,
            &setup.model,
            &["--device", "cuda"],
        ),
        &["--device", "built without CUDA"],
    );
}

#[test]
fn unknown_user_names_flag_user() {
    let setup = Setup::new();
    for uid in ["0", "99"] {
        let mut cmd = atspeed();
        cmd.arg("recommend")
            .arg("--data")
            .arg(&setup.data)
            .arg("--target")
            .arg(&setup.model)
            .args(["--user", uid]);
        let range = format!("user {uid} is not in 1..={USERS}");
        fails(&mut cmd, &["--user", &range]);
    }
    // Not a number at all: clap's usage error.
    let mut cmd = atspeed();
    cmd.arg("recommend")
        .arg("--data")
        .arg(&setup.data)
        .arg("--target")
        .arg(&setup.model)
        .args(["--user", "alice"]);
    fails_with(&mut cmd, 2, &["--user", "alice"]);
}

// ---------------------------------------------------------------------------------------------
// Replay

#[test]
fn replay_of_missing_or_malformed_session() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let err = fails(atspeed().arg("replay").arg(&missing), &[&s(&missing)]);
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");

    // Each malformed file must be named, with what is wrong with it.
    let cases: [(&str, &str, &str); 5] = [
        ("bad.json", "{ not json", "not a session file"),
        ("empty.json", "", "not a session file"),
        ("no_version.json", "{\"users\": []}", "version"),
        ("future.json", "{\"version\": 99}", "version 99"),
        (
            "fields.json",
            "{\"version\": 1, \"header\": {}}",
            "malformed session",
        ),
    ];
    for (name, text, problem) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        fails(atspeed().arg("replay").arg(&path), &[&s(&path), problem]);
    }

    // A folder is not a session file.
    fails(atspeed().arg("replay").arg(dir.path()), &[&s(dir.path())]);
}

/// Issue 12: sessions were checked for their JSON shape and version only; an out-of-range
/// parent panicked the explorer and absurd counts froze or aborted it. Replay now refuses them
/// before touching the terminal, with one line naming the file and the field.
#[test]
fn replay_of_session_with_bad_indices_or_counts() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("sessions/strict-demo.json");
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shipped).unwrap()).unwrap();
    let cases: [(&str, &str, serde_json::Value, &str); 4] = [
        (
            "parent.json",
            "nodes",
            serde_json::json!(99),
            "users[0].run.trace.rounds[0].nodes[47].parent: 99 is out of range",
        ),
        (
            "accepted.json",
            "accepted",
            serde_json::json!(1_000_000_000u64),
            "users[0].run.trace.rounds[0].accepted: 1000000000 is more than",
        ),
        (
            "drafted.json",
            "drafted",
            serde_json::json!(u64::MAX),
            "users[0].run.trace.rounds[0].drafted: 18446744073709551615 is more than",
        ),
        (
            "depth.json",
            "target_step",
            serde_json::json!(9),
            "users[0].run.trace.rounds[0].target_step.depth: 9",
        ),
    ];
    for (name, field, value, needle) in cases {
        let mut v = good.clone();
        let round = &mut v["users"][0]["run"]["trace"]["rounds"][0];
        match field {
            "nodes" => round["nodes"][47]["parent"] = value,
            "target_step" => round["target_step"]["depth"] = value,
            f => round[f] = value,
        }
        let path = dir.path().join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        let err = fails(atspeed().arg("replay").arg(&path), &[&s(&path), needle]);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Happy path

#[test]
fn new_model_inspect_recommend_bench() {
    let setup = Setup::new();
    let ds = Dataset::load(&setup.data).unwrap();
    let tiny = ["--layers", "1", "--hidden", "16", "--heads", "2"];
    let target = setup.path("target");
    let draft = setup.path("draft");
    for (out, seed, dtype) in [(&target, "1", "f32"), (&draft, "2", "bf16")] {
        atspeed()
            .arg("new-model")
            .arg("--data")
            .arg(&setup.data)
            .args(tiny)
            .args(["--seed", seed, "--std", "0.15", "--dtype", dtype])
            .arg("--out")
            .arg(out)
            .assert()
            .success()
            .stdout(predicate::str::contains(s(out)))
            .stderr(predicate::str::contains("panicked").not());
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(out.join(f).is_file(), "{f} missing in {}", out.display());
        }
    }

    atspeed()
        .arg("inspect")
        .arg(&target)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("1 layers, hidden 16")
                .and(predicate::str::contains("2 heads"))
                .and(predicate::str::contains(format!(
                    "word-level, {} tokens",
                    ds.vocab.len()
                )))
                .and(predicate::str::contains("stored as float32"))
                .and(predicate::str::contains("prompt style   compact")),
        );
    atspeed()
        .arg("inspect")
        .arg(&draft)
        .assert()
        .success()
        .stdout(predicate::str::contains("stored as bfloat16"));
    atspeed()
        .arg("inspect")
        .arg(&setup.data)
        .assert()
        .success()
        .stdout(
            predicate::str::contains(format!("users          {USERS}"))
                .and(predicate::str::contains(format!("items          {ITEMS}")))
                .and(predicate::str::contains(format!(
                    "vocabulary     {} tokens",
                    ds.vocab.len()
                ))),
        );

    // Target-only and speculative recommendations: the same strict top 10.
    let out = recommend(&setup.data, &target, &[])
        .assert()
        .success()
        .stderr(predicate::str::contains("panicked").not())
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("user 1 - "), "{out}");
    assert!(out.contains("top 10 recommendations"), "{out}");
    assert!(out.contains("Tiny product"), "{out}");
    let ranked = |text: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.starts_with("top "))
            .skip(1)
            .map(String::from)
            .collect()
    };
    let plain = ranked(&out);
    assert_eq!(plain.len(), 10, "{out}");
    let out = recommend(&setup.data, &target, &["--draft", &s(&draft), "--n", "12"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("speculative (strict"), "{out}");
    // Scores may differ in the last digit between the two kernels; identifiers must not.
    let idents = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .map(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with("<a_"))
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(idents(&ranked(&out)), idents(&plain), "{out}");

    let json = setup.path("bench.json");
    atspeed()
        .arg("bench")
        .arg("--data")
        .arg(&setup.data)
        .arg("--target")
        .arg(&target)
        .arg("--draft")
        .arg(&draft)
        .args(["--users", "3", "--k", "1,2", "--n", "4", "--warmup", "1"])
        .arg("--json")
        .arg(&json)
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("wrote {}", s(&json))));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["config"]["mode"], "strict");
    assert_eq!(report["config"]["ks"], serde_json::json!([1, 2]));
    assert_eq!(report["device"], "cpu");
    let per_k = report["per_k"].as_array().unwrap();
    assert_eq!(per_k.len(), 2);
    for (r, k) in per_k.iter().zip([1, 2]) {
        assert_eq!(r["k"], k);
        assert_eq!(r["users"], 3);
        assert_eq!(r["identical_fraction"].as_f64(), Some(1.0), "{r}");
        assert!(r["target_passes"].as_f64().unwrap() >= 1.0, "{r}");
    }
}

#[test]
fn bench_tunes_the_drafted_width_per_k_on_validation_users() {
    let setup = Setup::new();
    let json = setup.path("tuned.json");
    let out = bench(
        &setup.data,
        &setup.model,
        &setup.model,
        &[
            "--k",
            "1,2",
            "--tune-n",
            "3",
            "--max-n",
            "6",
            "--gamma",
            "2",
            "--tune-gamma",
            "--json",
            &s(&json),
        ],
    )
    .assert()
    .success()
    .get_output()
    .stdout
    .clone();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("N=tuned per K (up to 6, on 3 validation users)"),
        "{out}"
    );
    assert!(out.contains("width tuning K=2: N 2 gamma 1 "), "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for r in report["per_k"].as_array().unwrap() {
        let k = r["k"].as_u64().unwrap() as usize;
        let w = &r["width"];
        let tried: Vec<(usize, usize)> = w["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["n"].as_u64().unwrap() as usize,
                    t["gamma"].as_u64().unwrap() as usize,
                )
            })
            .collect();
        assert_eq!(
            tried,
            atspeed::eval::tune::shape_candidates(k, 6, &[1, 2]),
            "{r}"
        );
        // The chosen width is the fastest trial, and the one the measured run used.
        let fastest = w["trials"]
            .as_array()
            .unwrap()
            .iter()
            .min_by(|a, b| {
                a["speculative_ms"]
                    .as_f64()
                    .unwrap()
                    .total_cmp(&b["speculative_ms"].as_f64().unwrap())
            })
            .unwrap();
        assert_eq!(w["n"], fastest["n"], "{r}");
        assert_eq!(w["gamma"], fastest["gamma"], "{r}");
        assert_eq!(r["n"], w["n"], "{r}");
        assert_eq!(r["gamma"], w["gamma"], "{r}");
        assert_eq!(r["identical_fraction"].as_f64(), Some(1.0), "{r}");
    }

    // Flags that cannot go together.
    fails_with(
        &mut bench(&setup.data, &setup.model, &setup.model, &["--tune-gamma"]),
        2,
        &["--tune-n"],
    );
    fails_with(
        &mut bench(
            &setup.data,
            &setup.model,
            &setup.model,
            &["--tune-n", "2", "--n", "4"],
        ),
        2,
        &["--n"],
    );
    fails(
        &mut bench(
            &setup.data,
            &setup.model,
            &setup.model,
            &["--tune-n", "0", "--tune-gamma"],
        ),
        &["--tune-gamma needs --tune-n"],
    );
    // Every user measured: none is left to tune on.
    fails(
        atspeed()
            .arg("bench")
            .arg("--data")
            .arg(&setup.data)
            .arg("--target")
            .arg(&setup.model)
            .arg("--draft")
            .arg(&setup.model)
            .args(["--users", "0", "--warmup", "0", "--tune-n", "2"]),
        &["sequential_valid.txt", "--users:", "measure fewer users"],
    );

    // Nothing to tune on: the error names the validation file.
    let data = setup.data_copy("no-valid");
    let users: String = (1..=USERS).map(|u| format!("{u}\n")).collect();
    std::fs::write(data.join(VALID), users).unwrap();
    fails(
        &mut bench(&data, &setup.model, &setup.model, &["--tune-n", "2"]),
        &[&s(&data.join(VALID)), "nothing to tune"],
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 12: sizes, outputs and untrusted text

/// `atspeed new-model` on the fixture dataset, writing to `out`, with `extra` and a tiny shape
/// (for the shape flags `extra` does not give).
fn new_model(data: &Path, out: &Path, extra: &[&str]) -> assert_cmd::Command {
    let mut cmd = atspeed();
    cmd.arg("new-model").arg("--data").arg(data);
    for (flag, v) in [("--layers", "1"), ("--hidden", "16"), ("--heads", "2")] {
        if !extra.contains(&flag) {
            cmd.args([flag, v]);
        }
    }
    cmd.arg("--out").arg(out).args(extra);
    cmd
}

/// `recommend --k 100000` allocated 5 GB and aborted after 29 s; `--n` near u64::MAX never
/// returned. Both are refused at once, naming the flag; the cap itself still decodes.
#[test]
fn oversized_beam_widths_are_refused_at_once() {
    let setup = Setup::new();
    let max = atspeed::decode::params::MAX_WIDTH.to_string();
    let started = std::time::Instant::now();
    fails(
        &mut recommend(&setup.data, &setup.model, &["--k", "100000"]),
        &["--k", "K = 100000", &max],
    );
    fails(
        &mut recommend(
            &setup.data,
            &setup.model,
            &["--draft", &s(&setup.model), "--n", "18446744073709551615"],
        ),
        &["--n", "18446744073709551615", &max],
    );
    fails(
        &mut bench(&setup.data, &setup.model, &setup.model, &["--k", "5000"]),
        &["--k", &max],
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    // The largest width allowed works (the tiny catalogue has fewer items than that).
    recommend(
        &setup.data,
        &setup.model,
        &["--draft", &s(&setup.model), "--k", &max, "--n", &max],
    )
    .assert()
    .success();
}

/// `new-model --hidden 0` was accepted and every later use of the model panicked; `--std inf`
/// panicked. Zero sizes and non-finite or negative deviations are usage errors; impossible or
/// absurd shapes are refused before anything is allocated, and nothing is written.
#[test]
fn new_model_refuses_impossible_shapes() {
    let setup = Setup::new();
    let out = setup.path("m");
    for (flag, value) in [
        ("--hidden", "0"),
        ("--layers", "0"),
        ("--heads", "0"),
        ("--kv-heads", "0"),
        ("--std", "inf"),
        ("--std", "NaN"),
        ("--std", "-1"),
        ("--std", "0"),
    ] {
        fails_with(
            &mut new_model(&setup.data, &out, &[flag, value]),
            2,
            &[flag],
        );
        assert!(!out.exists(), "{flag} {value}");
    }
    for (extra, needles) in [
        (
            vec!["--hidden", "10", "--heads", "4"],
            vec!["--hidden", "10"],
        ),
        (vec!["--kv-heads", "3"], vec!["--kv-heads", "3"]),
        (
            vec!["--layers", "1000000000"],
            vec!["--layers", "1000000000", "more than"],
        ),
        (
            vec!["--hidden", "18446744073709551615"],
            vec!["--hidden", "more than"],
        ),
        (
            vec!["--hidden", "65536", "--layers", "4096"],
            vec!["model shape", "parameters"],
        ),
    ] {
        fails(&mut new_model(&setup.data, &out, &extra), &needles);
        assert!(!out.exists(), "{extra:?}");
    }
}

/// `--out` overwrote an existing model without asking, and a model folder was not written as
/// a whole. An existing model is refused unless `--force`; a folder of other files is never
/// replaced; a replaced model holds only the new files.
#[test]
fn out_refuses_an_existing_model_unless_forced() {
    let setup = Setup::new();
    let out = setup.path("m");
    new_model(&setup.data, &out, &["--seed", "1"])
        .assert()
        .success();
    let weights = std::fs::read(out.join("model.safetensors")).unwrap();
    std::fs::write(out.join("notes.txt"), "left by the user").unwrap();
    fails(
        &mut new_model(&setup.data, &out, &["--seed", "2"]),
        &["--out", &s(&out), "already holds a model", "--force"],
    );
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        weights
    );
    new_model(&setup.data, &out, &["--seed", "2", "--force"])
        .assert()
        .success();
    assert_ne!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        weights
    );
    // Replaced as a whole: nothing of the old folder is left, and nothing beside it.
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["config.json", "model.safetensors", "tokenizer.json"]
    );
    let stray: Vec<_> = std::fs::read_dir(setup.root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    // A folder that holds something else is never replaced, even with --force.
    let photos = setup.path("photos");
    std::fs::create_dir(&photos).unwrap();
    std::fs::write(photos.join("cat.jpg"), "meow").unwrap();
    fails(
        &mut new_model(&setup.data, &photos, &["--force"]),
        &["--out", "holds no model"],
    );
    assert!(photos.join("cat.jpg").exists());

    // The trainers refuse the same way, before any work.
    for cmd in ["train", "align"] {
        let mut c = atspeed();
        match cmd {
            "train" => c.args(["train", "target"]),
            _ => c
                .args(["align", "--method", "sft"])
                .arg("--target")
                .arg(&setup.model),
        };
        c.arg("--data").arg(&setup.data).arg("--out").arg(&out);
        fails(&mut c, &["--out", "already holds a model", "--force"]);
    }
}

/// `--epochs 0` said "model in OUT" and wrote no weights. Zero epochs (and a zero batch) are
/// usage errors.
#[test]
fn zero_epochs_or_batch_is_a_usage_error() {
    let setup = Setup::new();
    let out = setup.path("t");
    for (flag, value) in [("--epochs", "0"), ("--batch-size", "0")] {
        let mut c = atspeed();
        c.args(["train", "target"])
            .arg("--data")
            .arg(&setup.data)
            .arg("--out")
            .arg(&out)
            .args([flag, value]);
        fails_with(&mut c, 2, &[flag]);
        let mut c = atspeed();
        c.args(["align", "--method", "sft"])
            .arg("--data")
            .arg(&setup.data)
            .arg("--target")
            .arg(&setup.model)
            .arg("--out")
            .arg(&out)
            .args([flag, value]);
        fails_with(&mut c, 2, &[flag]);
        assert!(!out.exists());
    }
}

/// A teacher file whose header claimed 1e12 records aborted `align`. The header's counts are
/// checked against the file's real length first.
#[test]
fn teacher_header_claiming_more_records_than_the_file_holds() {
    let setup = Setup::new();
    let ds = Dataset::load(&setup.data).unwrap();
    let target = Llm::load(&setup.model, &Device::Cpu).unwrap();
    let path = setup.path("teacher.bin");
    atspeed::train::build_teacher(&target, &ds, 3, 20, true, None, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[..nl]).unwrap();
    for (field, value, needle) in [
        (
            "records",
            serde_json::json!(1_000_000_000_000u64),
            "claims 1000000000000 records",
        ),
        ("k", serde_json::json!(u64::MAX), "K = 18446744073709551615"),
    ] {
        let mut h = header.clone();
        h[field] = value;
        let mut file = serde_json::to_vec(&h).unwrap();
        file.extend_from_slice(&bytes[nl..]);
        let bad = setup.path(&format!("bad-{field}.bin"));
        std::fs::write(&bad, file).unwrap();
        let mut c = atspeed();
        c.args(["align", "--method", "seqkd"])
            .arg("--data")
            .arg(&setup.data)
            .arg("--target")
            .arg(&setup.model)
            .arg("--teacher")
            .arg(&bad)
            .arg("--out")
            .arg(setup.path("d"));
        fails(&mut c, &[&s(&bad), needle]);
    }
    // `teacher --out` does not replace an existing file without --force.
    header["records"] = serde_json::json!(0);
    let mut c = atspeed();
    c.arg("teacher")
        .arg("--data")
        .arg(&setup.data)
        .arg("--target")
        .arg(&setup.model)
        .arg("--out")
        .arg(&path);
    fails(&mut c, &["--out", &s(&path), "--force"]);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

/// `selftest --users 0` printed PASS: zero users is no evidence, refused before any check.
#[test]
fn selftest_with_zero_users_fails_without_pass() {
    let setup = Setup::new();
    let mut c = atspeed();
    c.arg("selftest")
        .arg("--data")
        .arg(&setup.data)
        .arg("--target")
        .arg(&setup.model)
        .arg("--draft")
        .arg(&setup.model)
        .args(["--users", "0", "--bench-users", "1"]);
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("PASS") && !stdout.contains("passed"),
        "{stdout}"
    );
    fails(&mut c, &["--users", "at least 1"]);
}

/// `--draft "=DIR"` was accepted with an empty name.
#[test]
fn draft_with_an_empty_name_is_refused() {
    let setup = Setup::new();
    for spec in [format!("={}", s(&setup.model)), "name=".to_string()] {
        let mut c = atspeed();
        c.arg("tui")
            .arg("--data")
            .arg(&setup.data)
            .arg("--target")
            .arg(&setup.model)
            .arg("--draft")
            .arg(&spec);
        fails(&mut c, &["--draft", "non-empty name"]);
    }
}

/// `recommend` printed raw escape sequences from titles.json, and a 5 MB bad token was echoed
/// whole in the error.
#[test]
fn untrusted_text_is_neither_obeyed_nor_echoed_whole() {
    let setup = Setup::new();
    let data = setup.data_copy("evil_titles");
    let titles: serde_json::Map<String, serde_json::Value> = (0..ITEMS)
        .map(|i| {
            (
                i.to_string(),
                serde_json::json!(format!("Soap {i}\u{1b}]0;pwned\u{7}\u{1b}[2J\r\u{9b}1m")),
            )
        })
        .collect();
    std::fs::write(data.join(TITLES), serde_json::to_string(&titles).unwrap()).unwrap();
    let out = recommend(&data, &setup.model, &[]).assert().success();
    let stdout = out.get_output().stdout.clone();
    let text = String::from_utf8(stdout).unwrap();
    assert!(text.contains("Soap"), "{text}");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "control characters reach the terminal: {text:?}"
    );

    let data = setup.data_copy("huge_token");
    let huge = "x".repeat(5_000_000);
    edit_index(&data, |v| v["2"][1] = serde_json::json!(huge));
    let err = fails(
        &mut inspect(&data),
        &[&s(&data.join(INDEX)), "more characters"],
    );
    assert!(err.len() < 1000, "{} bytes of error", err.len());
    let data = setup.data_copy("huge_item");
    replace_line(&data.join(TRAIN), 1, &format!("1 {huge}"));
    let err = fails(
        &mut inspect(&data),
        &[&s(&data.join(TRAIN)), "more characters"],
    );
    assert!(err.len() < 1000, "{} bytes of error", err.len());
}

/// Found while testing issue 12: `report NAME=/dev/zero` read forever. Input files this program
/// wrote itself are read with a size bound.
#[test]
fn report_of_an_endless_file_is_refused() {
    let started = std::time::Instant::now();
    fails(
        atspeed().arg("report").arg("x=/dev/zero"),
        &["/dev/zero", "larger than"],
    );
    fails(
        atspeed().arg("replay").arg("/dev/zero"),
        &["/dev/zero", "larger than"],
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

/// Counts from flags never size an allocation: users, warm-up and tuning users beyond the
/// dataset take what there is, the tuner's widest N stops at the cap, a history beyond every
/// user's takes the whole history, and a batch beyond the samples is all of them.
#[test]
fn huge_counts_from_flags_are_bounded_by_the_data() {
    let setup = Setup::new();
    let max = "18446744073709551615";
    let mut c = atspeed();
    c.arg("bench")
        .arg("--data")
        .arg(&setup.data)
        .arg("--target")
        .arg(&setup.model)
        .arg("--draft")
        .arg(&setup.model)
        .args(["--users", max, "--warmup", max, "--k", "1", "--n", "2"]);
    c.assert().success();
    let mut c = atspeed();
    c.arg("bench")
        .arg("--data")
        .arg(&setup.data)
        .arg("--target")
        .arg(&setup.model)
        .arg("--draft")
        .arg(&setup.model)
        .args(["--users", "2", "--warmup", "0", "--k", "1", "--gamma", "1"])
        .args(["--tune-n", max, "--max-n", max]);
    c.assert().success();
    recommend(&setup.data, &setup.model, &["--history", max])
        .assert()
        .success();
    let mut c = atspeed();
    c.args(["train", "target"])
        .arg("--data")
        .arg(&setup.data)
        .arg("--out")
        .arg(setup.path("t"))
        .args([
            "--layers",
            "1",
            "--hidden",
            "16",
            "--heads",
            "2",
            "--kv-heads",
            "1",
        ])
        .args([
            "--batch-size",
            max,
            "--max-steps",
            "1",
            "--valid-users",
            "2",
        ]);
    c.assert().success();
}
