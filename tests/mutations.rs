//! Mutation test (issue 12): thousands of seeded mutations of every file a user can hand the
//! program (recorded sessions, dataset files, teacher-beam files, and checkpoint `config.json`
//! and safetensors headers) must each end in a clean error or a successful load: never a panic,
//! an abort or a hang. Sessions that load are also replayed and drawn, every phase, since the
//! explorer indexes by what they hold.
//!
//! Each family runs in a child process (this test binary, re-run on one test) under a memory cap
//! (`RLIMIT_AS`) and a time limit, so an abort or a runaway allocation is caught and reported
//! with its reproducer instead of taking the test run down. Panics are caught per case. The
//! counts are printed (`cargo test --test mutations -- --nocapture`).
//!
//! The checkpoint loader's families run here too, and the config.json sizes that used to abort
//! it (1e9 layers, 1e12 positions) have a test of their own, `config_sizes_are_bounded`.

#![cfg(all(unix, feature = "tui"))]

mod fixtures;

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use atspeed::data::Dataset;
use atspeed::model::Llm;
use atspeed::session::Session;
use atspeed::tui::engine::Engine;
use atspeed::tui::{replay, update, Action, App, Command as AppCommand, EngineEvent};
use candle_core::{DType, Device};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde_json::Value;

/// Address space a family may use: ample for the tiny inputs, far below what an absurd size
/// would ask for, so such a request fails (and is reported) instead of swapping the machine.
const MEMORY_CAP: u64 = 4 << 30;
/// Wall time a family may take before it counts as a hang.
const TIME_LIMIT: Duration = Duration::from_secs(120);
/// The environment variable that makes the child test run one family.
const CHILD_ENV: &str = "ATSPEED_MUTATION_FAMILY";

// ---------------------------------------------------------------------------------------------
// Mutations

/// Values that break assumptions: zero, negatives, huge counts, floats where integers belong,
/// wrong types.
fn odd_value(rng: &mut ChaCha8Rng) -> Value {
    let pick = rng.random_range(0..22);
    match pick {
        0 => Value::from(0),
        1 => Value::from(1),
        2 => Value::from(-1),
        3 => Value::from(1_000_000_000u64),
        4 => Value::from(u64::MAX),
        5 => Value::from(i64::MIN),
        6 => Value::from(u32::MAX as u64 + 1),
        7 => serde_json::json!(1e308),
        8 => serde_json::json!(-1e308),
        9 => serde_json::json!(0.5),
        10 => Value::from("NaN"),
        11 => Value::from("inf"),
        12 => Value::from(""),
        13 => Value::from("\u{1b}[2J\u{7}x"),
        14 => Value::Null,
        15 => Value::Bool(true),
        16 => serde_json::json!([]),
        17 => serde_json::json!({}),
        18 => serde_json::json!([1, 2, 3]),
        19 => Value::from(1_000_000_000_000u64),
        20 => Value::from(4096),
        _ => Value::from("x".repeat(rng.random_range(1..100_000))),
    }
}

/// A random path from the root: descends into random children, stopping early now and then.
fn random_path(v: &Value, rng: &mut ChaCha8Rng) -> Vec<PathStep> {
    let mut path = Vec::new();
    let mut cur = v;
    loop {
        let step = match cur {
            Value::Object(m) if !m.is_empty() => {
                let i = rng.random_range(0..m.len());
                PathStep::Key(m.keys().nth(i).unwrap().clone())
            }
            Value::Array(a) if !a.is_empty() => PathStep::Index(rng.random_range(0..a.len())),
            _ => return path,
        };
        if !path.is_empty() && rng.random_bool(0.08) {
            return path;
        }
        cur = match &step {
            PathStep::Key(k) => &cur[k.as_str()],
            PathStep::Index(i) => &cur[*i],
        };
        path.push(step);
    }
}

#[derive(Clone, Debug)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn describe(path: &[PathStep]) -> String {
    path.iter()
        .map(|s| match s {
            PathStep::Key(k) => format!(".{k}"),
            PathStep::Index(i) => format!("[{i}]"),
        })
        .collect()
}

fn at<'a>(v: &'a mut Value, path: &[PathStep]) -> &'a mut Value {
    path.iter().fold(v, |cur, s| match s {
        PathStep::Key(k) => &mut cur[k.as_str()],
        PathStep::Index(i) => &mut cur[*i],
    })
}

/// One structural mutation of `v`; returns what it did.
fn mutate_json(v: &mut Value, rng: &mut ChaCha8Rng) -> String {
    let path = random_path(v, rng);
    let where_ = describe(&path);
    match rng.random_range(0..10) {
        // Replace with an odd value (the most common).
        0..=4 => {
            let new = odd_value(rng);
            let shown = short(&new);
            *at(v, &path) = new;
            format!("{where_} = {shown}")
        }
        // Delete the key or element.
        5 => {
            let Some((last, parent)) = path.split_last() else {
                *v = Value::Null;
                return "root = null".into();
            };
            match (at(v, parent), last) {
                (Value::Object(m), PathStep::Key(k)) => {
                    m.remove(k);
                }
                (Value::Array(a), PathStep::Index(i)) => {
                    a.remove(*i);
                }
                _ => {}
            }
            format!("delete {where_}")
        }
        // Swap with another field's value.
        6 => {
            let other = random_path(v, rng);
            let nested = |a: &[PathStep], b: &[PathStep]| {
                a.len() <= b.len() && describe(b).starts_with(&describe(a))
            };
            if nested(&path, &other) || nested(&other, &path) {
                *at(v, &path) = Value::Null;
                return format!("{where_} = null");
            }
            let a = at(v, &path).clone();
            let b = at(v, &other).clone();
            *at(v, &path) = b;
            *at(v, &other) = a;
            format!("swap {where_} <-> {}", describe(&other))
        }
        // Numeric nudge: off by one, or scaled.
        7 => {
            let t = at(v, &path);
            if let Some(n) = t.as_i64() {
                let new = match rng.random_range(0..4) {
                    0 => n + 1,
                    1 => n - 1,
                    2 => n.saturating_mul(1000),
                    _ => -n,
                };
                *t = Value::from(new);
                format!("{where_} = {new}")
            } else if let Some(x) = t.as_f64() {
                *t = serde_json::json!(-x);
                format!("{where_} = {}", -x)
            } else {
                *t = odd_value(rng);
                format!("{where_} = {}", short(t))
            }
        }
        // Grow an array by repeating an element, or empty it.
        8 => {
            let t = at(v, &path);
            match t {
                Value::Array(a) if !a.is_empty() && rng.random_bool(0.5) => {
                    let e = a[0].clone();
                    let n = rng.random_range(1..50);
                    a.extend(std::iter::repeat_n(e, n));
                    format!("{where_} += {n} copies")
                }
                Value::Array(a) => {
                    a.clear();
                    format!("{where_} = []")
                }
                _ => {
                    *t = odd_value(rng);
                    format!("{where_} = {}", short(t))
                }
            }
        }
        // Wrong type: a number becomes a string and back.
        _ => {
            let t = at(v, &path);
            let new = match t {
                Value::Number(n) => Value::from(n.to_string()),
                Value::String(s) => serde_json::json!([s.clone()]),
                _ => Value::from(1),
            };
            *t = new;
            format!("{where_} retyped")
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}... ({} bytes)", &s[..s.floor_char_boundary(40)], s.len())
    } else {
        s
    }
}

/// One byte-level mutation: flips, truncation, insertion, deletion.
fn mutate_bytes(b: &mut Vec<u8>, rng: &mut ChaCha8Rng) -> String {
    if b.is_empty() {
        b.push(rng.random());
        return "insert into empty".into();
    }
    let i = rng.random_range(0..b.len());
    match rng.random_range(0..5) {
        0 => {
            b[i] ^= 1 << rng.random_range(0..8);
            format!("flip a bit of byte {i}")
        }
        1 => {
            b.truncate(i);
            format!("truncate at {i}")
        }
        2 => {
            let n = rng.random_range(1..16);
            let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            b.splice(i..i, junk);
            format!("insert {n} random bytes at {i}")
        }
        3 => {
            let end = (i + rng.random_range(1..64)).min(b.len());
            b.drain(i..end);
            format!("delete bytes {i}..{end}")
        }
        _ => {
            b[i] = *b"0123456789-.e\n \"{}[],:"
                .get(rng.random_range(0..22))
                .unwrap();
            format!("byte {i} = {:?}", b[i] as char)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Families: each knows its corpus and what "loading" it means.

/// What one family did.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Summary {
    family: String,
    cases: usize,
    loaded: usize,
    errors: usize,
    panics: usize,
    first_panic: Option<String>,
    seconds: f64,
}

/// The message of the last panic, captured by a quiet hook.
static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Runs `cases` mutations: `make` returns (description, input written to disk), `load` tries
/// it. Before each case the description goes to `progress`, so an abort names its reproducer.
fn run_family(
    family: &str,
    cases: usize,
    progress: &Path,
    mut make: impl FnMut(&mut ChaCha8Rng, usize) -> String,
    mut load: impl FnMut() -> Result<(), String>,
) -> Summary {
    std::panic::set_hook(Box::new(|info| {
        *PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.to_string());
    }));
    let started = Instant::now();
    let mut s = Summary {
        family: family.into(),
        ..Default::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0x12 ^ family.len() as u64);
    for case in 0..cases {
        let what = make(&mut rng, case);
        std::fs::write(progress, format!("{family} case {case}: {what}\n")).unwrap();
        s.cases += 1;
        match std::panic::catch_unwind(AssertUnwindSafe(&mut load)) {
            Ok(Ok(())) => s.loaded += 1,
            Ok(Err(e)) => {
                s.errors += 1;
                assert!(!e.is_empty());
            }
            Err(_) => {
                s.panics += 1;
                if s.first_panic.is_none() {
                    let msg = PANIC.lock().unwrap().take().unwrap_or_default();
                    s.first_panic = Some(format!("case {case}: {what}: {msg}"));
                }
            }
        }
    }
    s.seconds = started.elapsed().as_secs_f64();
    s
}

/// The shipped sessions, cut to two users each (the mutations reach every field either way,
/// and the files parse in a millisecond).
fn session_corpus() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sessions");
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for f in files {
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        v["users"].as_array_mut().unwrap().truncate(2);
        out.push(v);
    }
    out
}

/// Answers the replay app's requests as the engine thread would.
fn serve(app: &mut App, engine: &mut replay::ReplayEngine) {
    for cmd in std::mem::take(&mut app.outbox) {
        if let AppCommand::Decode {
            generation,
            user,
            params,
        } = cmd
        {
            let ev = EngineEvent::decoded(generation, user, engine.decode(user, &params));
            update(app, Action::Engine(ev));
        }
    }
}

/// Loads a session and, when it loads, replays every user through every phase, drawing each.
fn load_and_replay(path: &Path, term: &mut Terminal<TestBackend>) -> Result<(), String> {
    let s = Session::load(path).map_err(|e| e.to_string())?;
    let (mut app, mut engine) = replay::replay_app(&s, path);
    app.start();
    serve(&mut app, &mut engine);
    for _ in 0..engine.num_users() {
        for _ in 0..12 {
            update(&mut app, Action::Step);
            term.draw(|f| atspeed::tui::render(&mut app, f)).unwrap();
        }
        update(&mut app, Action::RunToEnd);
        for a in [Action::NextFocus, Action::Scroll { dy: 500, dx: 500 }] {
            update(&mut app, a);
        }
        term.draw(|f| atspeed::tui::render(&mut app, f)).unwrap();
        update(&mut app, Action::NextUser);
        serve(&mut app, &mut engine);
    }
    Ok(())
}

fn sessions(dir: &Path, cases: usize, progress: &Path) -> Summary {
    let corpus: Vec<String> = session_corpus().iter().map(|v| v.to_string()).collect();
    let values = session_corpus();
    let path = dir.join("session.json");
    let mut term = Terminal::new(TestBackend::new(120, 40)).unwrap();
    run_family(
        "sessions",
        cases,
        progress,
        |rng, case| {
            let i = case % corpus.len();
            if rng.random_bool(0.75) {
                let mut v = values[i].clone();
                let mut what = Vec::new();
                for _ in 0..rng.random_range(1..4) {
                    what.push(mutate_json(&mut v, rng));
                }
                std::fs::write(&path, v.to_string()).unwrap();
                format!("session {i}: {}", what.join("; "))
            } else {
                let mut b = corpus[i].clone().into_bytes();
                let what = mutate_bytes(&mut b, rng);
                std::fs::write(&path, &b).unwrap();
                format!("session {i}: {what}")
            }
        },
        || load_and_replay(&path, &mut term),
    )
}

/// A tiny dataset folder and a tiny checkpoint over it, written once per family.
struct Tiny {
    data: PathBuf,
    model: PathBuf,
}

fn tiny(dir: &Path) -> Tiny {
    let data = fixtures::write_dataset(&dir.join("data"), 0);
    let model = fixtures::write_checkpoint(&data, &dir.join("model"), 3);
    Tiny { data, model }
}

fn copy_into(src: &Path, dst: &Path) {
    let _ = std::fs::remove_dir_all(dst);
    fixtures::copy_dir(src, dst);
}

fn datasets(dir: &Path, cases: usize, progress: &Path) -> Summary {
    let t = tiny(dir);
    let model = Llm::load(&t.model, &Device::Cpu).unwrap();
    let work = dir.join("mutated");
    copy_into(&t.data, &work);
    let mut last: Option<&str> = None;
    let files = [
        fixtures::INDEX,
        fixtures::TITLES,
        fixtures::TRAIN,
        fixtures::VALID,
        fixtures::TEST,
    ];
    run_family(
        "datasets",
        cases,
        progress,
        |rng, _| {
            // The file the last case broke back as it was, then one broken.
            if let Some(f) = last.take() {
                std::fs::copy(t.data.join(f), work.join(f)).unwrap();
            }
            let f = files[rng.random_range(0..files.len())];
            last = Some(f);
            let p = work.join(f);
            let text = std::fs::read(&p).unwrap();
            let what = if f.ends_with(".json") && rng.random_bool(0.7) {
                let mut v: Value = serde_json::from_slice(&text).unwrap();
                let w = mutate_json(&mut v, rng);
                std::fs::write(&p, v.to_string()).unwrap();
                w
            } else if !f.ends_with(".json") && rng.random_bool(0.5) {
                // A number in a sequence file replaced by an odd one.
                let s = String::from_utf8(text).unwrap();
                let mut toks: Vec<String> = s.split(' ').map(String::from).collect();
                let i = rng.random_range(0..toks.len());
                let odd = [
                    "0",
                    "-1",
                    "4294967296",
                    "99999999999999999999",
                    "1e3",
                    "",
                    "x",
                ][rng.random_range(0..7)];
                toks[i] = odd.into();
                std::fs::write(&p, toks.join(" ")).unwrap();
                format!("token {i} = {odd:?}")
            } else {
                let mut b = text;
                let w = mutate_bytes(&mut b, rng);
                std::fs::write(&p, b).unwrap();
                w
            };
            format!("{f}: {what}")
        },
        || {
            let data = Dataset::load(&work).map_err(|e| e.to_string())?;
            let _ = data.summary();
            // A dataset that still speaks the model's vocabulary is decoded too.
            let space = atspeed::space::TokenSpace::new(&data, &model);
            if let (Ok(space), true) = (space, data.num_users() > 0) {
                let params = atspeed::decode::DecodeParams {
                    k: 3,
                    n: 4,
                    gamma: 2,
                    ..Default::default()
                };
                let sample = data.user_sample(1, 20).map_err(|e| e.to_string())?;
                atspeed::eval::recommend::recommend(
                    &data,
                    &space,
                    &model,
                    Some(&model),
                    sample,
                    &params,
                    0,
                )
                .map(|r| r.to_string())
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        },
    )
}

fn teachers(dir: &Path, cases: usize, progress: &Path) -> Summary {
    let t = tiny(dir);
    let data = Dataset::load(&t.data).unwrap();
    let model = Llm::load(&t.model, &Device::Cpu).unwrap();
    let good = dir.join("teacher.bin");
    atspeed::train::build_teacher(&model, &data, 3, 20, false, None, &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    let header: Value = serde_json::from_slice(&bytes[..nl]).unwrap();
    let path = dir.join("mutated.bin");
    run_family(
        "teacher files",
        cases,
        progress,
        |rng, _| {
            let (file, what) = if rng.random_bool(0.6) {
                let mut h = header.clone();
                let w = mutate_json(&mut h, rng);
                let mut f = serde_json::to_vec(&h).unwrap();
                f.extend_from_slice(&bytes[nl..]);
                (f, format!("header {w}"))
            } else {
                let mut b = bytes.clone();
                let w = mutate_bytes(&mut b, rng);
                (b, w)
            };
            std::fs::write(&path, file).unwrap();
            what
        },
        || {
            let t = atspeed::train::read_teacher(&path, &model).map_err(|e| e.to_string())?;
            for r in &t.records {
                assert_eq!(r.beams.len(), r.scores.len());
            }
            Ok(())
        },
    )
}

/// `config.json` of the tiny checkpoint, mutated, loaded through the public API.
fn configs(dir: &Path, cases: usize, progress: &Path, skip: &dyn Fn(&str) -> bool) -> Summary {
    let t = tiny(dir);
    let work = dir.join("mutated");
    let config: Value = serde_json::from_slice(
        &std::fs::read(t.model.join(atspeed::model::checkpoint::CONFIG)).unwrap(),
    )
    .unwrap();
    run_family(
        "config.json",
        cases,
        progress,
        |rng, _| loop {
            copy_into(&t.model, &work);
            let mut v = config.clone();
            let what = mutate_json(&mut v, rng);
            if skip(&what) {
                continue;
            }
            std::fs::write(work.join(atspeed::model::checkpoint::CONFIG), v.to_string()).unwrap();
            return what;
        },
        || load_checkpoint(&work),
    )
}

/// The tiny checkpoint's safetensors header (the 8-byte length, then JSON), mutated.
fn safetensors(dir: &Path, cases: usize, progress: &Path, skip: &dyn Fn(&str) -> bool) -> Summary {
    let t = tiny(dir);
    let work = dir.join("mutated");
    let file = atspeed::model::checkpoint::WEIGHTS;
    let bytes = std::fs::read(t.model.join(file)).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    run_family(
        "safetensors",
        cases,
        progress,
        |rng, _| loop {
            copy_into(&t.model, &work);
            let (out, what) = match rng.random_range(0..10) {
                0 => {
                    let len: u64 = [0, 1, 7, n as u64 + 1, n as u64 - 1, u64::MAX, 1 << 40]
                        [rng.random_range(0..7)];
                    let mut b = bytes.clone();
                    b[..8].copy_from_slice(&len.to_le_bytes());
                    (b, format!("header length = {len}"))
                }
                1 | 2 => {
                    let mut b = bytes.clone();
                    let w = mutate_bytes(&mut b, rng);
                    (b, w)
                }
                _ => {
                    let mut h = header.clone();
                    let w = mutate_json(&mut h, rng);
                    let json = h.to_string().into_bytes();
                    let mut b = (json.len() as u64).to_le_bytes().to_vec();
                    b.extend_from_slice(&json);
                    b.extend_from_slice(&bytes[8 + n..]);
                    (b, format!("header {w}"))
                }
            };
            if skip(&what) {
                continue;
            }
            std::fs::write(work.join(file), out).unwrap();
            return what;
        },
        || load_checkpoint(&work),
    )
}

fn load_checkpoint(dir: &Path) -> Result<(), String> {
    let m = Llm::load_as(dir, &Device::Cpu, DType::F32).map_err(|e| e.to_string())?;
    // A model that loads must also run a pass.
    let mut cache = atspeed::model::KvCache::new(m.config().num_hidden_layers);
    m.log_probs(
        &[1, 3],
        &[0, 1],
        &atspeed::model::causal_mask(2),
        &mut cache,
        &[1],
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Config sizes that once aborted the loader.

/// Mutations left out of the main test (none now; `ATSPEED_MUTATION_SKIP` adds some while
/// investigating).
const LOADER_CRASHES: &[&str] = &[];

/// Fields of a tiny checkpoint's `config.json` and values that aborted the old loader
/// ("memory allocation of ... bytes failed", no file named). Issue 12 lists them:
/// `num_hidden_layers` 1e9, `max_position_embeddings` 1e12. Now each is a clean error.
const LOADER_REPRODUCERS: &[(&str, u64)] = &[
    ("num_hidden_layers", 1_000_000_000),
    ("max_position_embeddings", 1_000_000_000),
    ("max_position_embeddings", 1_000_000_000_000),
];

fn is_known_loader_crash(what: &str) -> bool {
    let extra = std::env::var("ATSPEED_MUTATION_SKIP").unwrap_or_default();
    LOADER_CRASHES
        .iter()
        .copied()
        .chain(extra.split('|').filter(|p| !p.is_empty()))
        .any(|p| what.contains(p))
}

// ---------------------------------------------------------------------------------------------
// Parent side: one child process per family.

/// Runs `family` in a child process (this binary, on the `child` test) under the memory cap and
/// the time limit. Returns its summary, or why it died and on which case.
fn in_child(family: &str, cases: usize) -> Result<Summary, String> {
    let dir = tempfile::tempdir().unwrap();
    let progress = dir.path().join("progress.txt");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "child",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(
        CHILD_ENV,
        format!("{family}:{cases}:{}", dir.path().display()),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: MEMORY_CAP,
                rlim_max: MEMORY_CAP,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if started.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = std::fs::read_to_string(&progress).unwrap_or_default();
    match status {
        None => Err(format!("hang: over {TIME_LIMIT:?}, at {last}")),
        Some(st) if st.success() => stdout
            .lines()
            .find_map(|l| l.split_once("MUTATION-SUMMARY ").map(|(_, j)| j))
            .map(|j| serde_json::from_str(j).unwrap())
            .ok_or_else(|| format!("no summary from the child:\n{stdout}")),
        Some(st) => Err(format!(
            "crash ({}) at {last}{}",
            st.signal()
                .map(|s| format!("signal {s}"))
                .unwrap_or_else(|| format!("{st}")),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rfind(|l| !l.is_empty())
                .map(|l| format!("; {l}"))
                .unwrap_or_default()
        )),
    }
}

/// The child: runs the family named in the environment and prints its summary. Ignored, so a
/// plain `cargo test` does not run it; without the variable it does nothing.
#[test]
#[ignore = "run by the mutation tests in a child process"]
fn child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    let family = parts.next().unwrap().to_string();
    let cases: usize = parts.next().unwrap().parse().unwrap();
    let dir = PathBuf::from(parts.next().unwrap());
    let progress = dir.join("progress.txt");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let known = |w: &str| is_known_loader_crash(w);
    // The fields whose values used to abort the loader (sizes it allocated from).
    let only_sizes = |w: &str| {
        ![".max_position_embeddings", ".num_hidden_layers"]
            .iter()
            .any(|f| w.contains(f))
    };
    let s = match family.as_str() {
        "sessions" => sessions(&work, cases, &progress),
        "datasets" => datasets(&work, cases, &progress),
        "teachers" => teachers(&work, cases, &progress),
        "configs" => configs(&work, cases, &progress, &known),
        "safetensors" => safetensors(&work, cases, &progress, &known),
        "configs-known" => configs(&work, cases, &progress, &only_sizes),
        "reproduce" => {
            let t = tiny(&work);
            let cfg_path = t.model.join(atspeed::model::checkpoint::CONFIG);
            let config: Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
            run_family(
                "reproducers",
                LOADER_REPRODUCERS.len(),
                &progress,
                |_, case| {
                    let (field, value) = LOADER_REPRODUCERS[case];
                    let mut v = config.clone();
                    v[field] = Value::from(value);
                    std::fs::write(&cfg_path, v.to_string()).unwrap();
                    format!("config.json .{field} = {value}")
                },
                || load_checkpoint(&t.model),
            )
        }
        f => panic!("unknown family {f}"),
    };
    let mut out = std::io::stdout();
    writeln!(
        out,
        "MUTATION-SUMMARY {}",
        serde_json::to_string(&s).unwrap()
    )
    .unwrap();
}

/// Issue 12's loader defects: a `config.json` with `num_hidden_layers` 1e9 or
/// `max_position_embeddings` 1e9 or 1e12 aborted the process ("memory allocation of ... bytes
/// failed") instead of a clean error naming the file; plus 300 random mutations of those fields.
#[test]
fn config_sizes_are_bounded() {
    let mut failures = Vec::new();
    for (family, cases) in [
        ("reproduce", LOADER_REPRODUCERS.len()),
        ("configs-known", 300),
    ] {
        match in_child(family, cases) {
            Ok(s) if s.panics == 0 => println!(
                "{family}: {} cases, {} loaded, {} clean errors",
                s.cases, s.loaded, s.errors
            ),
            Ok(s) => failures.push(format!("{family}: {:?}", s.first_panic)),
            Err(e) => failures.push(format!("{family}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Issue 12's mutation test: thousands of cases over every input family, 0 panics, aborts or
/// hangs, within seconds and under a memory cap.
#[test]
fn mutated_inputs_never_panic_abort_or_hang() {
    let plan = [
        ("sessions", 1500),
        ("datasets", 1200),
        ("teachers", 1200),
        ("configs", 600),
        ("safetensors", 600),
    ];
    let mut failures = Vec::new();
    let mut total = 0;
    for (family, cases) in plan {
        match in_child(family, cases) {
            Ok(s) => {
                println!(
                    "{:<14} {:>5} cases: {:>5} loaded, {:>5} clean errors, {} panics, {:.1} s",
                    s.family, s.cases, s.loaded, s.errors, s.panics, s.seconds
                );
                total += s.cases;
                if s.panics > 0 {
                    failures.push(format!(
                        "{family}: {} panics; first: {}",
                        s.panics,
                        s.first_panic.unwrap_or_default()
                    ));
                }
                assert_eq!(s.cases, cases, "{family}");
            }
            Err(e) => failures.push(format!("{family}: {e}")),
        }
    }
    println!("{total} mutations in all");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
