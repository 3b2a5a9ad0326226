//! Training: the target recommender from scratch, the target's teacher beams,
//! and the draft aligned to the target with one of six objectives.
//!
//! Entry points, each a plain function the CLI calls:
//!
//! - [`train_target`]: a LLaMA target on the compact prompt, cross-entropy on the identifier
//!   tokens only, early stopping on valid Recall@10. The best checkpoint is written to `out`.
//! - [`build_teacher`] / [`read_teacher`]: the target's top-K trie-constrained beams for every
//!   training sample, in a compact file tied to the target by a fingerprint.
//! - [`align_draft`]: a small draft trained with `(1 - alpha) * L_rec + alpha * L_align`, the
//!   target's distributions computed on the fly from the frozen target.
//!
//! Both trainers share one loop, configured by [`OptimConfig`]: AdamW with linear warm-up and
//! cosine decay, global-norm gradient clipping, per-epoch validation, early stopping, resumable
//! checkpoints in `out/last/` and a progress bar (progress log lines when stderr is not a
//! terminal). Everything takes a `&Device`; nothing is CPU-specific.

mod align;
mod batch;
mod looper;
pub mod losses;
mod optim;
mod target;
mod teacher;
mod weights;

use std::path::PathBuf;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

pub use align::{align_draft, AlignConfig, AlignMethod};
pub use looper::OptimConfig;
pub use target::{train_target, TargetTrainConfig};
pub use teacher::{build_teacher, fingerprint, read_teacher, TeacherFile, TeacherRecord};

/// Sub-folder of `out` holding the resumable state (last weights, optimizer moments,
/// `trainer_state.json`). `out` itself holds the best checkpoint.
pub const LAST_DIR: &str = "last";
/// Name of the per-run summary written next to the best checkpoint.
pub const REPORT_FILE: &str = "train_report.json";

/// Figures of one finished epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 0-based epoch number.
    pub epoch: usize,
    /// Optimizer steps run in this epoch (by this process, when resumed mid-epoch).
    pub steps: usize,
    /// Training samples seen in those steps.
    pub samples: usize,
    /// Mean training loss over those steps.
    pub train_loss: f64,
    /// Validation loss (recommendation cross-entropy); `None` without validation samples.
    pub valid_loss: Option<f64>,
    /// The early-stopping metric (see [`TrainReport::metric`]); `None` without validation.
    pub valid_metric: Option<f64>,
    /// Training throughput, validation excluded.
    pub samples_per_sec: f64,
    /// Time spent in training steps (validation and checkpointing excluded).
    pub train_seconds: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
}

/// What a training run did; also written to `out/train_report.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Folder holding the best checkpoint.
    pub out: PathBuf,
    /// What the run trained: `target` or `draft:<method>`.
    pub kind: String,
    /// Name of the early-stopping metric, e.g. `valid Recall@10`.
    pub metric: String,
    pub best_metric: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Every epoch of the run, including those before a resume.
    pub epochs: Vec<EpochStats>,
    /// Optimizer steps in total.
    pub steps: usize,
    pub stopped_early: bool,
    /// Mean training throughput over the epochs of this report.
    pub samples_per_sec: f64,
    /// Trainable parameters.
    pub params: usize,
}

impl std::fmt::Display for TrainReport {
    /// One line per epoch, then the best result and where the model is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
        for e in &self.epochs {
            writeln!(
                f,
                "epoch {}: train loss {:.4}, valid loss {}, {} {}, {:.0} samples/s, {:.0} s",
                e.epoch + 1,
                e.train_loss,
                opt(e.valid_loss),
                self.metric,
                opt(e.valid_metric),
                e.samples_per_sec,
                e.seconds
            )?;
        }
        write!(
            f,
            "best {} {} at epoch {}; {} steps; model in {}",
            self.metric,
            opt(self.best_metric),
            self.best_epoch
                .map_or_else(|| "-".to_string(), |e| (e + 1).to_string()),
            self.steps,
            self.out.display()
        )
    }
}

/// Indices `0..n`, or a deterministic random subset of `max` of them in ascending order, so a
/// capped run sees users from the whole file rather than the first ones only.
pub(crate) fn subset(n: usize, max: Option<usize>, seed: u64) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    match max {
        Some(m) if m < n => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            all.shuffle(&mut rng);
            all.truncate(m);
            all.sort_unstable();
            all
        }
        _ => all,
    }
}

/// Seed of the validation subset: fixed, so runs with different training seeds are compared on
/// the same users.
pub(crate) const VALID_SEED: u64 = 0x5eed;

#[cfg(test)]
mod tests {
    use super::subset;

    #[test]
    fn subset_is_sorted_deterministic_and_capped() {
        assert_eq!(subset(5, None, 1), vec![0, 1, 2, 3, 4]);
        assert_eq!(subset(5, Some(9), 1), vec![0, 1, 2, 3, 4]);
        let a = subset(100, Some(10), 7);
        assert_eq!(a, subset(100, Some(10), 7));
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
    }
}
