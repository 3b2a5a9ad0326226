//! Training throughput on the Beauty dataset, for choosing model sizes: a measurement, not a
//! check (it takes a minute or two). Run it with
//!
//! ```text
//! cargo bench --bench train_throughput
//! ```
//!
//! Environment: `ATSPEED_DATA` (dataset folder, default the shipped `assets/beauty`),
//! `ATSPEED_STEPS` (optimizer steps, default 12), `ATSPEED_SHAPE` (`layers,hidden,heads,kv`,
//! default `8,128,4,2`), `ATSPEED_BATCH` (default 64). The draft measurement uses a random
//! target of that shape, teacher beams (K = 20) for `ATSPEED_TEACHER` samples (default 256), and
//! a 2-layer 128-wide draft.

use std::path::PathBuf;
use std::time::Instant;

use atspeed::data::Dataset;
use atspeed::model::{Llm, ModelConfig};
use atspeed::train::{
    align_draft, build_teacher, read_teacher, train_target, AlignConfig, AlignMethod, OptimConfig,
    TargetTrainConfig,
};
use candle_core::Device;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn target_training_throughput() {
    let dir = PathBuf::from(env_or(
        "ATSPEED_DATA",
        concat!(env!("CARGO_MANIFEST_DIR"), "/assets/beauty"),
    ));
    let steps: usize = env_or("ATSPEED_STEPS", "12").parse().unwrap();
    let batch: usize = env_or("ATSPEED_BATCH", "64").parse().unwrap();
    let shape: Vec<usize> = env_or("ATSPEED_SHAPE", "8,128,4,2")
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    let data = Dataset::load(&dir).unwrap();
    let cfg = TargetTrainConfig {
        layers: shape[0],
        hidden: shape[1],
        heads: shape[2],
        kv_heads: shape[3],
        valid_users: 0,
        optim: OptimConfig {
            batch_size: batch,
            max_steps: Some(steps),
            progress: false,
            ..OptimConfig::default()
        },
        ..TargetTrainConfig::default()
    };
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let r = train_target(&data, &cfg, out.path(), &Device::Cpu).unwrap();
    let e = &r.epochs[0];
    println!(
        "target {}x{} ({} heads, {} kv), {} params, batch {batch}: {} steps, {} samples in \
         {:.1} s = {:.1} samples/s ({:.2} s/step); loss {:.3}; wall {:.1} s; \
         train samples per epoch {}",
        shape[0],
        shape[1],
        shape[2],
        shape[3],
        r.params,
        e.steps,
        e.samples,
        e.train_seconds,
        e.samples_per_sec,
        e.train_seconds / e.steps as f64,
        e.train_loss,
        started.elapsed().as_secs_f64(),
        data.train_samples(20, false).len(),
    );
}

/// Draft alignment steps (AtSpeed-R and AtSpeed-S with on-policy beams) against a random target.
fn draft_alignment_throughput() {
    let dir = PathBuf::from(env_or(
        "ATSPEED_DATA",
        concat!(env!("CARGO_MANIFEST_DIR"), "/assets/beauty"),
    ));
    let steps: usize = env_or("ATSPEED_STEPS", "6").parse().unwrap();
    let batch: usize = env_or("ATSPEED_BATCH", "64").parse().unwrap();
    let teacher_n: usize = env_or("ATSPEED_TEACHER", "256").parse().unwrap();
    let shape: Vec<usize> = env_or("ATSPEED_SHAPE", "8,128,4,2")
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    let data = Dataset::load(&dir).unwrap();
    let work = tempfile::tempdir().unwrap();
    let cfg = ModelConfig::compact(data.vocab.len(), shape[0], shape[1], shape[2], shape[3]);
    let tdir = work.path().join("target");
    Llm::random(&cfg, data.vocab.tokens().to_vec(), 0.02, 1, &Device::Cpu)
        .unwrap()
        .save(&tdir, candle_core::DType::F32)
        .unwrap();
    let target = Llm::load(&tdir, &Device::Cpu).unwrap();
    let tpath = work.path().join("teacher.bin");
    let started = Instant::now();
    build_teacher(&target, &data, 20, 20, false, Some(teacher_n), &tpath).unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "teacher beams K=20, target {}x{}: {teacher_n} samples in {secs:.1} s = {:.1} samples/s",
        shape[0],
        shape[1],
        teacher_n as f64 / secs
    );
    let teacher = read_teacher(&tpath, &target).unwrap();
    for method in [AlignMethod::AtSpeedR, AlignMethod::AtSpeedS] {
        let cfg = AlignConfig {
            method,
            valid_users: 0,
            optim: OptimConfig {
                batch_size: batch,
                max_steps: Some(steps),
                progress: false,
                ..AlignConfig::default().optim
            },
            ..AlignConfig::default()
        };
        let out = work.path().join(method.name());
        let r = align_draft(&target, Some(&teacher), &data, &cfg, &out, &Device::Cpu).unwrap();
        let e = &r.epochs[0];
        println!(
            "draft 2x128 {method} (K=20, lambda {}), batch {batch}: {} steps, {:.1} samples/s \
             ({:.2} s/step)",
            cfg.lambda,
            e.steps,
            e.samples_per_sec,
            e.train_seconds / e.steps as f64
        );
    }
}

fn main() {
    target_training_throughput();
    draft_alignment_throughput();
}
