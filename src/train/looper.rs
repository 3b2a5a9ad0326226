//! The training loop both trainers share: shuffled mini-batches, AdamW with warm-up + cosine
//! decay and clipping, a progress bar, validation and early stopping once per epoch, the best
//! checkpoint in `out`, and a resumable state in `out/last/`.
//!
//! Shuffling is seeded by (seed, epoch) and per-step randomness by (seed, step), so a resumed run
//! replays exactly the batches the interrupted one would have seen, without saving RNG state.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::optim::{lr_at, AdamW};
use super::weights::Weights;
use super::{EpochStats, TrainReport, LAST_DIR, REPORT_FILE};
use crate::model::{checkpoint, Llm, ModelConfig};
use crate::{Error, Result};

/// File of the loop's state inside `out/last/`.
pub const STATE_FILE: &str = "trainer_state.json";

/// Optimisation and loop settings shared by [`super::train_target`] and
/// [`super::align_draft`]. `Default` is the target's: up to 20 epochs with batch 64, lr 1e-3.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimConfig {
    /// Maximum number of epochs.
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine decay, as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Decoupled AdamW weight decay (not applied to the RMSNorm gains).
    pub weight_decay: f64,
    /// Global gradient-norm clip; 0 disables.
    pub clip_norm: f64,
    /// Epochs without a better validation metric before stopping; 0 never stops early.
    pub patience: usize,
    /// Seeds the initial weights, the training subset, the sample order and any per-step
    /// randomness.
    pub seed: u64,
    /// Stop after this many optimizer steps in total (smoke tests, throughput checks).
    pub max_steps: Option<usize>,
    /// Also save the resumable state every this many steps (0: at epoch ends only).
    pub checkpoint_every: usize,
    /// Continue from `out/last/` if it holds a state (starts afresh, with a warning, if not).
    pub resume: bool,
    /// Draw progress bars; when stderr is not a terminal (the bar is hidden), log a progress
    /// line every ~2% of an epoch instead.
    pub progress: bool,
    /// Replace a model already in `out` (a fresh run refuses to, so that a finished model is
    /// never overwritten by mistake; a resumed run continues what is there).
    pub force: bool,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            epochs: 20,
            batch_size: 64,
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 200,
            weight_decay: 0.01,
            clip_norm: 1.0,
            patience: 3,
            seed: 42,
            max_steps: None,
            checkpoint_every: 0,
            resume: false,
            progress: true,
            force: false,
        }
    }
}

impl OptimConfig {
    /// Checks the settings; errors name the parameter (`epochs`, `batch_size`, `lr`).
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::invalid(
                "epochs",
                "must be at least 1 (0 epochs would train nothing)",
            ));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("batch_size", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid(
                "lr",
                format!("{} is not a positive learning rate", self.lr),
            ));
        }
        Ok(())
    }
}

/// What a trainer checks before any work: the settings, and that `out` may be written (an
/// existing model needs `force` unless the run resumes it).
pub(crate) fn preflight(s: &OptimConfig, out: &Path) -> Result<()> {
    s.validate()?;
    if !s.resume {
        crate::atomic::check_out_dir(out, s.force)?;
    }
    Ok(())
}

/// Where a run's output is prepared: `.OUT.partial` beside `out`. Everything the run writes (the
/// best checkpoint, `last/`, the report) goes there; when the run ends the folder replaces `out`
/// as a whole, so a crash never leaves a mix of two runs in `out`. An interrupted run's folder
/// stays for `resume`.
fn staging(out: &Path) -> Result<PathBuf> {
    crate::atomic::sibling(out, "partial")
}

/// The optimizer step recorded in `dir/last/`, if a state is there.
fn saved_step(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join(LAST_DIR).join(STATE_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("step")?.as_u64().map(|s| s as usize)
}

/// Prepares the staging folder: for a resumed run, the interrupted run's own folder, or a copy
/// of the finished output it continues (whichever went further); otherwise a fresh, empty one.
fn prepare_stage(s: &OptimConfig, out: &Path) -> Result<PathBuf> {
    let stage = staging(out)?;
    if s.resume {
        match (saved_step(&stage), saved_step(out)) {
            (Some(a), b) if b.is_none_or(|b| a >= b) => {
                log::info!("resuming the interrupted run in {}", stage.display());
                return Ok(stage);
            }
            (_, Some(_)) => {
                if stage.exists() {
                    std::fs::remove_dir_all(&stage).map_err(|e| Error::io(&stage, e))?;
                }
                crate::atomic::copy_tree(out, &stage)?;
                return Ok(stage);
            }
            _ => crate::atomic::check_out_dir(out, s.force)?,
        }
    }
    if stage.exists() {
        log::warn!(
            "{}: removing what an interrupted run left (resume continues one instead)",
            stage.display()
        );
        std::fs::remove_dir_all(&stage).map_err(|e| Error::io(&stage, e))?;
    }
    std::fs::create_dir_all(&stage).map_err(|e| Error::io(&stage, e))?;
    Ok(stage)
}

/// Validation figures of the current weights.
pub(crate) struct Validation {
    pub loss: Option<f64>,
    /// Higher is better; `None` when there is nothing to validate on.
    pub metric: Option<f64>,
}

/// What a trainer plugs into the loop.
pub(crate) trait Task {
    /// Name of the early-stopping metric, e.g. `valid Recall@10`.
    fn metric_name(&self) -> String;
    fn num_samples(&self) -> usize;
    /// Tokens sample `i` occupies in a batch row, for grouping samples of similar length.
    fn sample_len(&self, i: usize) -> usize;
    /// Differentiable mean loss of the training samples `batch` (indices); `step` seeds any
    /// randomness the task needs.
    fn loss(&mut self, w: &Weights, batch: &[usize], step: usize) -> Result<Tensor>;
    fn validate(&mut self, model: &Llm) -> Result<Validation>;
}

/// Everything needed to continue an interrupted run, next to its weights in `out/last/`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainerState {
    kind: String,
    /// Epoch in progress (or the next to start).
    epoch: usize,
    /// Batches of `epoch` already done.
    batch_in_epoch: usize,
    /// Optimizer steps so far.
    step: usize,
    seed: u64,
    best_metric: Option<f64>,
    best_epoch: Option<usize>,
    bad_epochs: usize,
    stopped_early: bool,
    samples: usize,
    batch_size: usize,
    model: ModelConfig,
    history: Vec<EpochStats>,
}

/// Runs the loop and writes `out/train_report.json`. `kind` is `target` or `draft:<method>`; a
/// resume refuses a state of another kind.
pub(crate) fn run(
    task: &mut dyn Task,
    w: &Weights,
    kind: &str,
    s: &OptimConfig,
    out: &Path,
) -> Result<TrainReport> {
    let n = task.num_samples();
    if n == 0 {
        return Err(Error::invalid("training", "no training samples"));
    }
    preflight(s, out)?;
    let stage = prepare_stage(s, out)?;
    let result = run_in(task, w, kind, s, n, out, &stage);
    if result.is_err() && stage.exists() {
        log::warn!(
            "the unfinished run is kept in {}: resume continues it",
            stage.display()
        );
    }
    let report = result?;
    // The whole output at once: best checkpoint, last/ and the report.
    crate::atomic::publish_dir(&stage, out)?;
    Ok(report)
}

/// The loop proper, writing into `stage` (see [`staging`]).
fn run_in(
    task: &mut dyn Task,
    w: &Weights,
    kind: &str,
    s: &OptimConfig,
    n: usize,
    out: &Path,
    stage: &Path,
) -> Result<TrainReport> {
    let bs = s.batch_size.max(1);
    let last = stage.join(LAST_DIR);
    let mut opt = AdamW::new(w, s.weight_decay)?;
    let mut st = initial_state(w, kind, s, n, &last, &mut opt)?;
    let per_epoch = n.div_ceil(bs);
    // The schedule ignores `max_steps`: a capped run is the start of the full run, so it can
    // be resumed into exactly the run that was never interrupted.
    let total = s.epochs.saturating_mul(per_epoch);
    while st.epoch < s.epochs && !st.stopped_early && !reached(s, st.step) {
        let started = Instant::now();
        let run = run_epoch(task, w, s, &mut st, &mut opt, total, &last)?;
        let v = task.validate(&w.snapshot(&folder_name(out))?)?;
        let stats = run.stats(st.epoch, v, started);
        let complete = st.batch_in_epoch >= per_epoch;
        end_epoch(task, w, s, &mut st, stats, complete, out, stage)?;
        save_last(w, &opt, &st, &last)?;
    }
    write_report(task, w, &st, out, stage)
}

/// A fresh state, or the one in `out/last/` (weights and moments restored) when resuming.
fn initial_state(
    w: &Weights,
    kind: &str,
    s: &OptimConfig,
    n: usize,
    last: &Path,
    opt: &mut AdamW,
) -> Result<TrainerState> {
    let fresh = TrainerState {
        kind: kind.to_string(),
        epoch: 0,
        batch_in_epoch: 0,
        step: 0,
        seed: s.seed,
        best_metric: None,
        best_epoch: None,
        bad_epochs: 0,
        stopped_early: false,
        samples: n,
        batch_size: s.batch_size,
        model: w.cfg.clone(),
        history: Vec::new(),
    };
    let path = last.join(STATE_FILE);
    if !s.resume {
        return Ok(fresh);
    }
    if !path.exists() {
        log::warn!(
            "{}: nothing to resume, starting from scratch",
            path.display()
        );
        return Ok(fresh);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let st: TrainerState = serde_json::from_str(&text)
        .map_err(|e| Error::model(&path, format!("malformed trainer state: {e}")))?;
    check_resumable(&st, &fresh, &path)?;
    w.load_from(last)?;
    opt.load(last, st.step)?;
    log::info!(
        "resuming {} at epoch {} batch {} (step {})",
        st.kind,
        st.epoch,
        st.batch_in_epoch,
        st.step
    );
    Ok(st)
}

/// A resumed run must train the same kind of model, of the same shape, on the same samples.
fn check_resumable(saved: &TrainerState, now: &TrainerState, path: &Path) -> Result<()> {
    let mut a = saved.model.clone();
    let mut b = now.model.clone();
    a.torch_dtype.clear();
    b.torch_dtype.clear();
    let mismatch = if saved.kind != now.kind {
        Some(format!("it trains {}, this run {}", saved.kind, now.kind))
    } else if a != b {
        Some("its model shape differs from this run's".to_string())
    } else if (saved.samples, saved.batch_size) != (now.samples, now.batch_size) {
        Some(format!(
            "it has {} samples in batches of {}, this run {} in batches of {}",
            saved.samples, saved.batch_size, now.samples, now.batch_size
        ))
    } else {
        None
    };
    match mismatch {
        Some(m) => Err(Error::invalid(
            "resume",
            format!("cannot resume from {}: {m}", path.display()),
        )),
        None => Ok(()),
    }
}

fn reached(s: &OptimConfig, step: usize) -> bool {
    s.max_steps.is_some_and(|m| step >= m)
}

/// What one call of [`run_epoch`] did.
struct EpochRun {
    /// Mean training loss.
    loss: f64,
    steps: usize,
    samples: usize,
    time: Duration,
}

impl EpochRun {
    fn stats(&self, epoch: usize, v: Validation, started: Instant) -> EpochStats {
        let train_seconds = self.time.as_secs_f64();
        EpochStats {
            epoch,
            steps: self.steps,
            samples: self.samples,
            train_loss: self.loss,
            valid_loss: v.loss,
            valid_metric: v.metric,
            samples_per_sec: self.samples as f64 / train_seconds.max(1e-9),
            train_seconds,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// Trains the rest of epoch `st.epoch`.
fn run_epoch(
    task: &mut dyn Task,
    w: &Weights,
    s: &OptimConfig,
    st: &mut TrainerState,
    opt: &mut AdamW,
    total: usize,
    last: &Path,
) -> Result<EpochRun> {
    let batches = epoch_batches(task, s.batch_size.max(1), s.seed, st.epoch);
    let bar = progress_bar(s, batches.len(), st);
    // indicatif draws nothing when stderr is not a terminal (CI logs, redirection): log a line
    // every ~2% of the epoch there instead.
    let log_every = (s.progress && bar.is_hidden()).then(|| batches.len().div_ceil(50).max(1));
    let (mut loss_sum, mut steps, mut seen) = (0.0, 0usize, 0usize);
    let started = Instant::now();
    for batch in &batches[st.batch_in_epoch.min(batches.len())..] {
        if reached(s, st.step) {
            break;
        }
        let lr = lr_at(st.step, s.lr, s.warmup_steps, total, s.min_lr_ratio);
        let loss = task.loss(w, batch, st.step)?;
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            return Err(Error::invalid(
                "training",
                format!(
                    "loss became {value} at step {} (try a lower learning rate)",
                    st.step
                ),
            ));
        }
        opt.step(&loss.backward()?, lr, s.clip_norm)?;
        (loss_sum, steps, seen) = (loss_sum + value, steps + 1, seen + batch.len());
        st.step += 1;
        st.batch_in_epoch += 1;
        let rate = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let mean = loss_sum / steps as f64;
        bar.set_message(format!(
            "loss {mean:.4} · {rate:.0} samples/s · lr {lr:.2e}"
        ));
        bar.inc(1);
        let done = st.batch_in_epoch;
        if log_every.is_some_and(|k| done.is_multiple_of(k) || done == batches.len()) {
            log::info!(
                "{} epoch {}/{}: batch {done}/{}, loss {mean:.4}, {rate:.0} samples/s, lr {lr:.2e}",
                st.kind,
                st.epoch + 1,
                s.epochs,
                batches.len()
            );
        }
        if s.checkpoint_every > 0 && st.step.is_multiple_of(s.checkpoint_every) {
            save_last(w, opt, st, last)?;
        }
    }
    bar.finish_and_clear();
    Ok(EpochRun {
        loss: loss_sum / steps.max(1) as f64,
        steps,
        samples: seen,
        time: started.elapsed(),
    })
}

/// Batches sorted by length within one group of this many batches.
const LENGTH_GROUP: usize = 50;

/// The batches of `epoch`, seeded by (seed, epoch): a random permutation cut into groups of
/// [`LENGTH_GROUP`] batches, each group sorted by sample length before it is cut into batches,
/// and the batches shuffled. Rows are padded to the longest sample of their batch, and most
/// prompts are far shorter than the longest (Beauty: 27 tokens on average, 85 at most), so this
/// removes most of the padding a plain shuffle would compute on, while every batch still mixes
/// users from the whole dataset.
fn epoch_batches(task: &dyn Task, bs: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..task.num_samples()).collect();
    let mixed = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(mixed);
    order.shuffle(&mut rng);
    let mut batches = Vec::with_capacity(order.len().div_ceil(bs));
    for group in order.chunks_mut(bs.saturating_mul(LENGTH_GROUP)) {
        group.sort_by_key(|&i| task.sample_len(i));
        batches.extend(group.chunks(bs).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

fn progress_bar(s: &OptimConfig, len: usize, st: &TrainerState) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    if !s.progress {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
        .expect("valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{} epoch {}/{}", st.kind, st.epoch + 1, s.epochs));
    bar.set_position(st.batch_in_epoch.min(len) as u64);
    bar
}

/// Records the epoch, keeps the best checkpoint in `stage` (published to `out` at the end), and
/// applies early stopping. An epoch cut short by `max_steps` (not `complete`) is validated and
/// recorded but neither counts towards patience nor advances the epoch, so a resume finishes it.
#[allow(clippy::too_many_arguments)]
fn end_epoch(
    task: &dyn Task,
    w: &Weights,
    s: &OptimConfig,
    st: &mut TrainerState,
    stats: EpochStats,
    complete: bool,
    out: &Path,
    stage: &Path,
) -> Result<()> {
    let improved = match (stats.valid_metric, st.best_metric) {
        (Some(m), Some(best)) => m > best,
        _ => true,
    };
    log::info!(
        "{} epoch {}: train loss {:.4}, valid loss {}, {} {}, {:.0} samples/s{}",
        st.kind,
        stats.epoch + 1,
        stats.train_loss,
        fmt_opt(stats.valid_loss),
        task.metric_name(),
        fmt_opt(stats.valid_metric),
        stats.samples_per_sec,
        if improved { " (best so far)" } else { "" }
    );
    if improved {
        // Only the weights change between epochs (config and tokenizer are the run's), and
        // each file is replaced atomically.
        w.snapshot(&folder_name(out))?
            .save_files(stage, DType::F32)?;
        st.best_metric = stats.valid_metric;
        st.best_epoch = Some(stats.epoch);
        st.bad_epochs = 0;
    } else if complete {
        st.bad_epochs += 1;
        st.stopped_early = s.patience > 0 && st.bad_epochs >= s.patience;
    }
    st.history.push(stats);
    if complete {
        st.epoch += 1;
        st.batch_in_epoch = 0;
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.4}"))
}

/// Writes weights, optimizer moments and the state to `last/`, as a whole: a resume never
/// finds weights of one step beside the moments or state of another.
fn save_last(w: &Weights, opt: &AdamW, st: &TrainerState, last: &Path) -> Result<()> {
    let json = serde_json::to_vec_pretty(st).expect("state serialises");
    crate::atomic::write_dir(last, |dir| {
        w.snapshot(LAST_DIR)?.save_files(dir, DType::F32)?;
        opt.save(dir)?;
        checkpoint::write_atomic(&dir.join(STATE_FILE), &json)
    })
}

fn write_report(
    task: &dyn Task,
    w: &Weights,
    st: &TrainerState,
    out: &Path,
    stage: &Path,
) -> Result<TrainReport> {
    let secs: f64 = st.history.iter().map(|e| e.train_seconds).sum();
    let samples: usize = st.history.iter().map(|e| e.samples).sum();
    let report = TrainReport {
        out: PathBuf::from(out),
        kind: st.kind.clone(),
        metric: task.metric_name(),
        best_metric: st.best_metric,
        best_epoch: st.best_epoch,
        epochs: st.history.clone(),
        steps: st.step,
        stopped_early: st.stopped_early,
        samples_per_sec: if secs > 0.0 {
            samples as f64 / secs
        } else {
            0.0
        },
        params: w.num_params(),
    };
    let json = serde_json::to_vec_pretty(&report).expect("report serialises");
    checkpoint::write_atomic(&stage.join(REPORT_FILE), &json)?;
    Ok(report)
}

/// Display name of a checkpoint folder.
pub(crate) fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}
