//! Training the target recommender from scratch: a LLaMA decoder on the
//! compact prompt, cross-entropy on the L identifier tokens only (the reference also trains on
//! the prompt; that spends capacity on modelling histories, which is never asked of the model),
//! early stopping on valid Recall@10 from the same trie-constrained beam search used at test time.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::batch::{Example, TreeBatch};
use super::looper::{self, OptimConfig, Task, Validation};
use super::weights::Weights;
use super::{subset, TrainReport, VALID_SEED};
use crate::data::{Dataset, Sample, DEFAULT_HISTORY};
use crate::decode::beam_search;
use crate::eval::metrics::recall_at;
use crate::ids::Identifier;
use crate::model::{Llm, ModelConfig};
use crate::{Error, Result};

/// Beam size and cutoff of the validation metric (Recall@10 of a K = 10 beam search).
pub const VALID_K: usize = 10;

/// Settings of [`train_target`]. `Default` gives an 8-layer, 256-wide model trained for up to 20
/// epochs with batch 64, lr 1e-3 (see [`OptimConfig`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TargetTrainConfig {
    /// Decoder layers.
    pub layers: usize,
    /// Hidden width (a multiple of `heads`; the head dimension must be even).
    pub hidden: usize,
    pub heads: usize,
    /// Key/value heads (grouped-query attention); divides `heads`.
    pub kv_heads: usize,
    /// History length H of the prompts.
    pub history: usize,
    /// Only the last position per user (the reference) instead of sliding windows.
    pub last_only: bool,
    /// Train on a deterministic random subset of at most this many samples.
    pub max_samples: Option<usize>,
    /// Validation samples used for the loss and Recall@10 each epoch (0: no validation; every
    /// epoch then replaces the saved model).
    pub valid_users: usize,
    /// Optimisation and loop settings; `patience` counts epochs without a better valid
    /// Recall@10.
    pub optim: OptimConfig,
}

impl Default for TargetTrainConfig {
    fn default() -> Self {
        TargetTrainConfig {
            layers: 8,
            hidden: 256,
            heads: 4,
            kv_heads: 2,
            history: DEFAULT_HISTORY,
            last_only: false,
            max_samples: None,
            valid_users: 500,
            optim: OptimConfig::default(),
        }
    }
}

/// A compact-prompt model config for `data`, with room for prompts of `history` items.
pub(crate) fn model_config(
    data: &Dataset,
    history: usize,
    shape: [usize; 4],
) -> Result<ModelConfig> {
    let [layers, hidden, heads, kv_heads] = shape;
    let mut cfg = crate::model::compact_config(
        data.vocab.len(),
        [layers, hidden, heads, kv_heads],
        crate::model::MAX_NEW_PARAMS,
    )?;
    // A prompt never holds more items than the longest user history has, whatever `history`
    // asks (a flag or a teacher file's header).
    let longest = (0..data.num_users())
        .map(|u| data.train[u].len() + data.valid[u].len())
        .max()
        .unwrap_or(0);
    let needed = history.min(longest) * data.levels + 2 + data.levels;
    cfg.max_position_embeddings = cfg.max_position_embeddings.max(needed);
    cfg.validate()
        .map_err(|m| Error::invalid("model shape", m))?;
    Ok(cfg)
}

/// Trains a target from scratch on `data` and writes its best checkpoint (by valid Recall@10)
/// to `out` as a Hugging Face folder, plus `out/train_report.json` and the resumable state in
/// `out/last/`.
pub fn train_target(
    data: &Dataset,
    cfg: &TargetTrainConfig,
    out: &Path,
    device: &Device,
) -> Result<TrainReport> {
    looper::preflight(&cfg.optim, out)?;
    if cfg.history == 0 || cfg.optim.batch_size == 0 {
        return Err(Error::invalid(
            "history and batch_size",
            "must be at least 1",
        ));
    }
    let shape = [cfg.layers, cfg.hidden, cfg.heads, cfg.kv_heads];
    let model_cfg = model_config(data, cfg.history, shape)?;
    let w = Weights::random(
        &model_cfg,
        data.vocab.tokens().to_vec(),
        cfg.optim.seed,
        device,
    )?;
    let all = data.train_samples(cfg.history, cfg.last_only);
    let samples: Vec<Sample> = subset(all.len(), cfg.max_samples, cfg.optim.seed)
        .into_iter()
        .map(|i| all[i].clone())
        .collect();
    let valid = valid_subset(data, cfg.history, cfg.valid_users);
    log::info!(
        "target {}: {} params, {} training samples, {} validation samples",
        looper::folder_name(out),
        w.num_params(),
        samples.len(),
        valid.len()
    );
    let mut task = TargetTask {
        data,
        samples,
        valid,
        batch_size: cfg.optim.batch_size,
        device: device.clone(),
    };
    looper::run(&mut task, &w, "target", &cfg.optim, out)
}

/// At most `n` validation samples, the same ones whatever the training seed.
pub(crate) fn valid_subset(data: &Dataset, history: usize, n: usize) -> Vec<Sample> {
    let all = data.valid_samples(history);
    subset(all.len(), Some(n), VALID_SEED)
        .into_iter()
        .map(|i| all[i].clone())
        .collect()
}

/// A sample as a batch entry scored on its ground truth only.
pub(crate) fn rec_example(data: &Dataset, s: &Sample, align: Vec<Identifier>) -> Example {
    Example {
        prompt: data.prompt(&s.history),
        rec: vec![s.targets[0]],
        align,
    }
}

/// Mean L_rec of `samples` under an inference model, in batches.
pub(crate) fn valid_loss(
    model: &Llm,
    data: &Dataset,
    samples: &[Sample],
    batch_size: usize,
    device: &Device,
) -> Result<Option<f64>> {
    let mut sum = 0.0;
    for chunk in samples.chunks(batch_size.max(1)) {
        let ex: Vec<Example> = chunk.iter().map(|s| rec_example(data, s, vec![])).collect();
        let batch = TreeBatch::new(&ex, device)?;
        let hidden = batch.hidden(&model.model, false)?;
        let loss = batch.rec_loss(&model.model, &hidden)?;
        sum += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
    }
    Ok((!samples.is_empty()).then(|| sum / samples.len() as f64))
}

struct TargetTask<'a> {
    data: &'a Dataset,
    samples: Vec<Sample>,
    valid: Vec<Sample>,
    batch_size: usize,
    device: Device,
}

impl Task for TargetTask<'_> {
    fn metric_name(&self) -> String {
        format!("valid Recall@{VALID_K}")
    }

    fn num_samples(&self) -> usize {
        self.samples.len()
    }

    fn sample_len(&self, i: usize) -> usize {
        self.samples[i].history.len()
    }

    fn loss(&mut self, w: &Weights, batch: &[usize], _step: usize) -> Result<Tensor> {
        let ex: Vec<Example> = batch
            .iter()
            .map(|&i| rec_example(self.data, &self.samples[i], vec![]))
            .collect();
        let batch = TreeBatch::new(&ex, &self.device)?;
        let hidden = batch.hidden(w.model(), true)?;
        batch.rec_loss(w.model(), &hidden)
    }

    fn validate(&mut self, model: &Llm) -> Result<Validation> {
        let loss = valid_loss(model, self.data, &self.valid, self.batch_size, &self.device)?;
        let mut hits = 0.0;
        for s in &self.valid {
            let out = beam_search(
                model,
                &self.data.trie,
                &self.data.prompt(&s.history),
                VALID_K,
            )?;
            let ranked: Vec<Identifier> = out
                .beams
                .iter()
                .filter_map(|b| identifier(&b.tokens))
                .collect();
            hits += recall_at(&ranked, &s.targets, VALID_K);
        }
        let metric = (!self.valid.is_empty()).then(|| hits / self.valid.len() as f64);
        Ok(Validation { loss, metric })
    }
}

/// A finished beam's tokens as an identifier.
pub(crate) fn identifier(tokens: &[u32]) -> Option<Identifier> {
    Identifier::new(tokens)
}
