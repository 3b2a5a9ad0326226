//! End-to-end training on a tiny synthetic dataset: target, teacher beams, every draft objective,
//! checkpoints that load and resume, and the errors a user can run into.

use std::path::Path;

use atspeed::data::Dataset;
use atspeed::model::{Llm, ModelConfig};
use atspeed::synth;
use atspeed::train::{
    align_draft, build_teacher, read_teacher, train_target, AlignConfig, AlignMethod, OptimConfig,
    TargetTrainConfig, TrainReport, LAST_DIR, REPORT_FILE,
};
use candle_core::{DType, Device};
use rand::{Rng, SeedableRng};

const ITEMS: usize = 60;

/// Writes a dataset folder where each user's next item follows from the last one
/// (`next = (7 * item + 3) mod ITEMS`), so there is something to learn.
fn write_dataset(dir: &Path, codes: [usize; 4], seed: u64) {
    let cat = synth::catalogue(codes, ITEMS, seed);
    let index: serde_json::Map<String, serde_json::Value> = cat
        .codes
        .iter()
        .enumerate()
        .map(|(i, c)| (i.to_string(), serde_json::json!(c)))
        .collect();
    std::fs::write(
        dir.join("toy.LCRec-1e-3lr.json"),
        serde_json::to_string(&index).unwrap(),
    )
    .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut valid, mut test) = (String::new(), String::new(), String::new());
    for uid in 1..=40 {
        let len = rng.random_range(5..10);
        let mut item = rng.random_range(0..ITEMS);
        let mut seq = Vec::new();
        for _ in 0..len {
            seq.push(item + 1);
            item = (7 * item + 3) % ITEMS;
        }
        let join = |s: &[usize]| s.iter().map(|i| format!(" {i}")).collect::<String>();
        train += &format!("{uid}{}\n", join(&seq[..len - 2]));
        valid += &format!("{uid}{}\n", join(&seq[len - 2..len - 1]));
        test += &format!("{uid}{}\n", join(&seq[len - 1..]));
    }
    std::fs::write(dir.join("sequential_train.txt"), train).unwrap();
    std::fs::write(dir.join("sequential_valid.txt"), valid).unwrap();
    std::fs::write(dir.join("sequential_test.txt"), test).unwrap();
}

fn dataset(seed: u64) -> (tempfile::TempDir, Dataset) {
    dataset_with([6, 8, 8, 8], seed)
}

fn dataset_with(codes: [usize; 4], seed: u64) -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), codes, seed);
    let data = Dataset::load(dir.path()).unwrap();
    (dir, data)
}

fn tiny_target_config() -> TargetTrainConfig {
    TargetTrainConfig {
        layers: 1,
        hidden: 32,
        heads: 2,
        kv_heads: 1,
        valid_users: 8,
        optim: tiny_optim(4),
        ..TargetTrainConfig::default()
    }
}

fn tiny_optim(epochs: usize) -> OptimConfig {
    OptimConfig {
        epochs,
        batch_size: 16,
        lr: 1e-2,
        warmup_steps: 2,
        patience: 0,
        progress: false,
        ..OptimConfig::default()
    }
}

fn tiny_draft_config(method: AlignMethod) -> AlignConfig {
    AlignConfig {
        method,
        k: 3,
        lambda: 0.5,
        layers: 1,
        hidden: 32,
        heads: 2,
        kv_heads: 1,
        valid_users: 8,
        optim: tiny_optim(3),
        ..AlignConfig::default()
    }
}

fn first_and_last_loss(r: &TrainReport) -> (f64, f64) {
    (r.epochs[0].train_loss, r.epochs.last().unwrap().train_loss)
}

/// A random model over `data`'s vocabulary, saved to `dir` and loaded back (so it has a name).
fn saved_random(data: &Dataset, dir: &Path, seed: u64) -> Llm {
    let cfg = ModelConfig::compact(data.vocab.len(), 1, 32, 2, 1);
    let m = Llm::random(&cfg, data.vocab.tokens().to_vec(), 0.1, seed, &Device::Cpu).unwrap();
    m.save(dir, DType::F32).unwrap();
    Llm::load(dir, &Device::Cpu).unwrap()
}

#[test]
fn target_and_drafts_train_save_and_resume() {
    let dev = Device::Cpu;
    let (_d, data) = dataset(1);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("target");

    let cfg = tiny_target_config();
    let report = train_target(&data, &cfg, &out, &dev).unwrap();
    let (first, last) = first_and_last_loss(&report);
    assert!(last < first * 0.9, "target loss {first} -> {last}");
    assert_eq!(report.epochs.len(), 4);
    assert!(report.best_metric.is_some() && report.samples_per_sec > 0.0);
    assert!(out.join(REPORT_FILE).exists());
    assert!(out.join(LAST_DIR).join("trainer_state.json").exists());
    let target = Llm::load(&out, &dev).unwrap();
    assert_eq!(target.vocab, data.vocab.tokens());
    assert_eq!(target.config().num_hidden_layers, 1);

    // Resuming adds the missing epoch and keeps the history.
    let more = TargetTrainConfig {
        optim: OptimConfig {
            epochs: 5,
            resume: true,
            ..cfg.optim.clone()
        },
        ..cfg
    };
    let resumed = train_target(&data, &more, &out, &dev).unwrap();
    assert_eq!(resumed.epochs.len(), 5);
    for (a, b) in resumed.epochs.iter().zip(&report.epochs) {
        assert_eq!((a.epoch, a.steps, a.samples), (b.epoch, b.steps, b.samples));
        assert!((a.train_loss - b.train_loss).abs() < 1e-9);
    }
    assert_eq!(resumed.steps, report.steps * 5 / 4);
    let target = Llm::load(&out, &dev).unwrap();

    // Teacher beams: every training sample, at most K beams, best first.
    let tpath = work.path().join("teacher.bin");
    build_teacher(&target, &data, 5, 20, false, None, &tpath).unwrap();
    let teacher = read_teacher(&tpath, &target).unwrap();
    assert_eq!(teacher.records.len(), data.train_samples(20, false).len());
    assert_eq!((teacher.k, teacher.target.as_str()), (5, "target"));
    for r in &teacher.records {
        assert_eq!(r.beams.len(), 5);
        assert!(r.scores.windows(2).all(|w| w[0] >= w[1]));
    }

    // AtSpeed-S (with on-policy beams) lowers its loss and saves a loadable draft.
    let dout = work.path().join("draft-s");
    let dcfg = tiny_draft_config(AlignMethod::AtSpeedS);
    let r = align_draft(&target, Some(&teacher), &data, &dcfg, &dout, &dev).unwrap();
    let (first, last) = first_and_last_loss(&r);
    assert!(last < first, "atspeed-s loss {first} -> {last}");
    let cov = r.best_metric.unwrap();
    assert!((0.0..=1.0).contains(&cov), "coverage {cov}");
    let draft = Llm::load(&dout, &dev).unwrap();
    assert_eq!(draft.vocab, target.vocab);

    // Every other objective runs a few steps with a finite loss.
    for method in AlignMethod::ALL {
        let base = tiny_draft_config(method);
        let cfg = AlignConfig {
            temperature: if method == AlignMethod::SeqKd {
                0.001
            } else {
                1.0
            },
            optim: OptimConfig {
                max_steps: Some(2),
                epochs: 1,
                ..base.optim.clone()
            },
            ..base
        };
        let dout = work.path().join(format!("draft-{method}"));
        let r = align_draft(&target, Some(&teacher), &data, &cfg, &dout, &dev).unwrap();
        assert_eq!(r.steps, 2, "{method}");
        assert!(r.epochs[0].train_loss.is_finite(), "{method}");
        Llm::load(&dout, &dev).unwrap();
    }
}

/// A run stopped mid-epoch by `max_steps` and resumed ends with the weights of a run that was
/// never interrupted: same batches, same schedule, optimizer moments restored.
#[test]
fn interrupted_run_resumes_into_the_same_weights() {
    let dev = Device::Cpu;
    let (_d, data) = dataset(6);
    let work = tempfile::tempdir().unwrap();
    let cfg = TargetTrainConfig {
        optim: tiny_optim(2),
        ..tiny_target_config()
    };
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let whole = train_target(&data, &cfg, &a, &dev).unwrap();
    let capped = TargetTrainConfig {
        optim: OptimConfig {
            max_steps: Some(whole.steps / 2 + 3),
            ..cfg.optim.clone()
        },
        ..cfg.clone()
    };
    let part = train_target(&data, &capped, &b, &dev).unwrap();
    assert_eq!(part.steps, whole.steps / 2 + 3);
    let resumed = TargetTrainConfig {
        optim: OptimConfig {
            resume: true,
            ..cfg.optim.clone()
        },
        ..cfg
    };
    let rest = train_target(&data, &resumed, &b, &dev).unwrap();
    assert_eq!(rest.steps, whole.steps);
    let wa = Llm::load(&a.join(LAST_DIR), &dev)
        .unwrap()
        .model
        .named_tensors()
        .unwrap();
    let wb = Llm::load(&b.join(LAST_DIR), &dev)
        .unwrap()
        .model
        .named_tensors()
        .unwrap();
    for ((name, x), (_, y)) in wa.iter().zip(&wb) {
        let diff = (x - y).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5, "{name}");
    }
}

#[test]
fn sft_needs_no_teacher_and_learns() {
    let dev = Device::Cpu;
    let (_d, data) = dataset(2);
    let work = tempfile::tempdir().unwrap();
    let target = saved_random(&data, &work.path().join("t"), 3);
    let cfg = AlignConfig {
        optim: tiny_optim(4),
        ..tiny_draft_config(AlignMethod::Sft)
    };
    let r = align_draft(&target, None, &data, &cfg, &work.path().join("d"), &dev).unwrap();
    let (first, last) = first_and_last_loss(&r);
    assert!(last < first * 0.9, "sft loss {first} -> {last}");
}

#[test]
fn unknown_method_is_a_clear_error() {
    let err = "x".parse::<AlignMethod>().unwrap_err().to_string();
    assert_eq!(
        err,
        "method: unknown method 'x' (expected sft, wordkd, tvdkd, seqkd, atspeed-s, atspeed-r)"
    );
    for m in AlignMethod::ALL {
        assert_eq!(m.to_string().parse::<AlignMethod>().unwrap(), m);
    }
    assert_eq!(
        "AtSpeed_S".parse::<AlignMethod>().unwrap(),
        AlignMethod::AtSpeedS
    );
}

#[test]
fn teacher_from_another_target_is_refused() {
    let (_d, data) = dataset(3);
    let work = tempfile::tempdir().unwrap();
    let a = saved_random(&data, &work.path().join("target-a"), 1);
    let b = saved_random(&data, &work.path().join("target-b"), 2);
    let path = work.path().join("teacher.bin");
    build_teacher(&a, &data, 3, 20, true, Some(5), &path).unwrap();
    assert_eq!(read_teacher(&path, &a).unwrap().records.len(), 5);
    let err = read_teacher(&path, &b).unwrap_err().to_string();
    assert!(err.contains("teacher.bin"), "{err}");
    assert!(
        err.contains("made by target 'target-a'") && err.contains("not by 'target-b'"),
        "{err}"
    );
    // Not a teacher file at all.
    std::fs::write(&path, "hello\n").unwrap();
    let err = read_teacher(&path, &a).unwrap_err().to_string();
    assert!(err.contains("not a teacher-beams file"), "{err}");
}

#[test]
fn mismatched_vocabularies_are_refused() {
    let dev = Device::Cpu;
    let (_d, data) = dataset(4);
    let (_d2, other) = dataset_with([5, 8, 8, 8], 5);
    let work = tempfile::tempdir().unwrap();
    let target = saved_random(&data, &work.path().join("target"), 1);
    // A draft made for another catalogue.
    let foreign = saved_random(&other, &work.path().join("foreign-draft"), 2);
    assert_ne!(foreign.vocab, target.vocab);
    let cfg = AlignConfig {
        init: Some(work.path().join("foreign-draft")),
        ..tiny_draft_config(AlignMethod::Sft)
    };
    let err = align_draft(&target, None, &data, &cfg, &work.path().join("d"), &dev)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("foreign-draft") && err.contains("vocabulary"),
        "{err}"
    );
    // A target that does not speak the dataset's vocabulary.
    let err = build_teacher(
        &foreign,
        &data,
        3,
        20,
        true,
        None,
        &work.path().join("t.bin"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("foreign-draft") && err.contains("differs from dataset"),
        "{err}"
    );
    // A method that needs teacher beams, without them.
    let cfg = tiny_draft_config(AlignMethod::SeqKd);
    let err = align_draft(&target, None, &data, &cfg, &work.path().join("d"), &dev)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("teacher:"), "{err}");
}

/// Issue 12: a model folder was not written as a whole (kill -9 during `align --out EXISTING`
/// left a new config.json beside the old weights), and `--out` overwrote a model without asking.
/// A run writes beside `out` and replaces it only when done; an existing model needs `force`;
/// a run that fails leaves the old model exactly as it was, and its partial output for resume.
#[test]
fn an_existing_model_is_replaced_only_when_forced_and_only_when_done() {
    let dev = Device::Cpu;
    let (_d, data) = dataset(7);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("target");
    let cfg = TargetTrainConfig {
        optim: OptimConfig {
            max_steps: Some(2),
            ..tiny_optim(1)
        },
        ..tiny_target_config()
    };
    train_target(&data, &cfg, &out, &dev).unwrap();
    let snapshot = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v = Vec::new();
        for e in walk(dir) {
            v.push((
                e.strip_prefix(dir).unwrap().display().to_string(),
                std::fs::read(&e).unwrap(),
            ));
        }
        v.sort();
        v
    };
    let before = snapshot(&out);
    assert!(before.iter().any(|(n, _)| n == "config.json"));
    assert!(before.iter().any(|(n, _)| n == REPORT_FILE));

    // Without force: refused before any work.
    let err = train_target(&data, &cfg, &out, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("out: ") && err.contains("force"), "{err}");
    let err = align_draft(
        &Llm::load(&out, &dev).unwrap(),
        None,
        &data,
        &AlignConfig {
            optim: tiny_optim(1),
            ..tiny_draft_config(AlignMethod::Sft)
        },
        &out,
        &dev,
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("out: ") && err.contains("force"), "{err}");
    // Zero epochs is refused too.
    let zero = TargetTrainConfig {
        optim: OptimConfig {
            epochs: 0,
            force: true,
            ..tiny_optim(1)
        },
        ..tiny_target_config()
    };
    let err = train_target(&data, &zero, &out, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("epochs: "), "{err}");

    // Forced, but the run fails half-way (the loss diverges): the old model is untouched.
    let diverging = TargetTrainConfig {
        optim: OptimConfig {
            lr: 1e30,
            warmup_steps: 0,
            force: true,
            ..tiny_optim(1)
        },
        ..tiny_target_config()
    };
    let err = train_target(&data, &diverging, &out, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("loss became"), "{err}");
    assert_eq!(snapshot(&out), before);
    // What the failed run wrote is beside `out`, for a resume, not in it.
    assert!(work.path().join(".target.partial").is_dir());

    // Forced and finished: the new output replaces the old one as a whole.
    let forced = TargetTrainConfig {
        optim: OptimConfig {
            force: true,
            seed: 9,
            ..cfg.optim.clone()
        },
        ..cfg.clone()
    };
    train_target(&data, &forced, &out, &dev).unwrap();
    let after = snapshot(&out);
    assert_ne!(after, before);
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&after), names(&before));
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, ["target"], "{leftovers:?}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A history far beyond any user's (from a flag or a teacher file's header) once sized the
/// model's position table by it; prompts never exceed the longest history in the data.
#[test]
fn absurd_history_is_bounded_by_the_data() {
    let dev = Device::Cpu;
    let (_d, data) = dataset(8);
    let work = tempfile::tempdir().unwrap();
    let cfg = TargetTrainConfig {
        history: usize::MAX,
        optim: OptimConfig {
            max_steps: Some(1),
            ..tiny_optim(1)
        },
        ..tiny_target_config()
    };
    train_target(&data, &cfg, &work.path().join("t"), &dev).unwrap();
    let m = Llm::load(&work.path().join("t"), &dev).unwrap();
    assert_eq!(m.config().max_position_embeddings, 512);
}
