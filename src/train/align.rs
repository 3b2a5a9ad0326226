//! Draft alignment: a small draft trained with
//! `(1 - alpha) * L_rec + alpha * L_align`, where L_align is one of the objectives of
//! [`super::losses`]. The target is frozen; its next-token distributions are recomputed in every
//! step by a forward pass over the same tree batch (detached), so only its beams are stored.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use super::batch::{Example, TreeBatch};
use super::looper::{self, OptimConfig, Task, Validation};
use super::losses;
use super::target::{identifier, model_config, rec_example, valid_loss, valid_subset};
use super::teacher::check_target_vocab;
use super::weights::Weights;
use super::{subset, TeacherFile, TrainReport};
use crate::data::{Dataset, Sample, DEFAULT_HISTORY};
use crate::decode::{beam_search, check_same_vocab};
use crate::ids::Identifier;
use crate::model::{Llama, Llm};
use crate::{Error, Result};

/// The draft's training objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlignMethod {
    /// Ground truth only (alpha is ignored: 0).
    Sft,
    /// Forward KL(p || q) at the ground truth's positions.
    WordKd,
    /// Total variation at the ground truth's positions.
    TvdKd,
    /// Cross-entropy on the teacher beams.
    SeqKd,
    /// Strict-verification alignment: reverse KL on the draft's top-K plus the K-th token term,
    /// on teacher beams or (with probability lambda) the draft's own beams.
    AtSpeedS,
    /// Relaxed-verification alignment: total variation on the teacher beams.
    AtSpeedR,
}

impl AlignMethod {
    pub const ALL: [AlignMethod; 6] = [
        AlignMethod::Sft,
        AlignMethod::WordKd,
        AlignMethod::TvdKd,
        AlignMethod::SeqKd,
        AlignMethod::AtSpeedS,
        AlignMethod::AtSpeedR,
    ];

    /// The name accepted by `FromStr` and shown in reports.
    pub fn name(self) -> &'static str {
        match self {
            AlignMethod::Sft => "sft",
            AlignMethod::WordKd => "wordkd",
            AlignMethod::TvdKd => "tvdkd",
            AlignMethod::SeqKd => "seqkd",
            AlignMethod::AtSpeedS => "atspeed-s",
            AlignMethod::AtSpeedR => "atspeed-r",
        }
    }

    /// Whether the objective reads teacher beams.
    pub fn needs_teacher(self) -> bool {
        matches!(
            self,
            AlignMethod::SeqKd | AlignMethod::AtSpeedS | AlignMethod::AtSpeedR
        )
    }

    /// Whether the objective needs the target's distributions in each step.
    fn needs_target(self) -> bool {
        !matches!(self, AlignMethod::Sft | AlignMethod::SeqKd)
    }
}

impl FromStr for AlignMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        AlignMethod::ALL
            .into_iter()
            .find(|m| m.name() == wanted)
            .ok_or_else(|| {
                Error::invalid(
                    "method",
                    format!(
                        "unknown method '{s}' (expected sft, wordkd, tvdkd, seqkd, atspeed-s, \
                         atspeed-r)"
                    ),
                )
            })
    }
}

impl fmt::Display for AlignMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings of [`align_draft`]. `Default`: AtSpeed-S, alpha 0.7, T 1, K 20, lambda 0.3, a
/// 2-layer 128-wide draft, up to 10 epochs (otherwise [`OptimConfig`]'s defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct AlignConfig {
    pub method: AlignMethod,
    /// Weight of L_align in `(1 - alpha) * L_rec + alpha * L_align` (the paper: 0.7).
    pub alpha: f64,
    /// Temperature T of the distributions compared by L_align (the reference: 0.001).
    pub temperature: f64,
    /// K: teacher beams per sample, the draft's top-K for AtSpeed-S and its on-policy beams,
    /// and the cutoff of the validation coverage.
    pub k: usize,
    /// AtSpeed-S only: probability that a sample is trained on the draft's own top-K beams
    /// (generated with the current weights) instead of the teacher's.
    pub lambda: f64,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Start from this draft checkpoint (e.g. an SFT draft) instead of random weights; its
    /// shape then overrides `layers`..`kv_heads`.
    pub init: Option<PathBuf>,
    /// History length and sample style when no teacher file is given (a teacher file fixes
    /// both).
    pub history: usize,
    pub last_only: bool,
    /// Train on a deterministic random subset of at most this many samples.
    pub max_samples: Option<usize>,
    /// Validation samples for the loss and the coverage metric each epoch (0: none).
    pub valid_users: usize,
    /// Optimisation and loop settings; `patience` counts epochs without better coverage.
    pub optim: OptimConfig,
}

impl Default for AlignConfig {
    fn default() -> Self {
        AlignConfig {
            method: AlignMethod::AtSpeedS,
            alpha: 0.7,
            temperature: 1.0,
            k: 20,
            lambda: 0.3,
            layers: 2,
            hidden: 128,
            heads: 4,
            kv_heads: 2,
            init: None,
            history: DEFAULT_HISTORY,
            last_only: false,
            max_samples: None,
            valid_users: 500,
            optim: OptimConfig {
                epochs: 10,
                ..OptimConfig::default()
            },
        }
    }
}

impl AlignConfig {
    /// Alpha actually applied: SFT is the recommendation loss alone.
    fn effective_alpha(&self) -> f64 {
        if self.method == AlignMethod::Sft {
            0.0
        } else {
            self.alpha
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |flag: &str, msg: String| Err(Error::invalid(flag, msg));
        if !(0.0..=1.0).contains(&self.alpha) {
            return bad("alpha", format!("must be in [0, 1], not {}", self.alpha));
        }
        if !(0.0..=1.0).contains(&self.lambda) {
            return bad("lambda", format!("must be in [0, 1], not {}", self.lambda));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(
                "temperature",
                format!("must be positive, not {}", self.temperature),
            );
        }
        if self.k == 0 || self.optim.batch_size == 0 || self.history == 0 {
            return bad("k, batch_size and history", "must be at least 1".into());
        }
        crate::decode::params::check_k(self.k)?;
        Ok(())
    }
}

/// Trains a draft aligned to `target` and writes its best checkpoint (by valid top-K coverage)
/// to `out`, with `out/train_report.json` and the resumable state in `out/last/`.
///
/// `teacher` (from [`super::read_teacher`] for this target) is required by seqkd, atspeed-s and
/// atspeed-r; when given it also fixes the training samples. The draft, target and dataset must
/// share one vocabulary.
pub fn align_draft(
    target: &Llm,
    teacher: Option<&TeacherFile>,
    data: &Dataset,
    cfg: &AlignConfig,
    out: &Path,
    device: &Device,
) -> Result<TrainReport> {
    looper::preflight(&cfg.optim, out)?;
    cfg.validate()?;
    check_target_vocab(target, data)?;
    if cfg.method.needs_teacher() && teacher.is_none() {
        return Err(Error::invalid(
            "teacher",
            format!(
                "method {} trains on teacher beams: build them first",
                cfg.method
            ),
        ));
    }
    let history = teacher.map_or(cfg.history, |t| t.history);
    let w = draft_weights(target, data, cfg, history, device)?;
    let (samples, beams) = match teacher {
        Some(t) => teacher_samples(t, data, cfg)?,
        None => plain_samples(data, cfg),
    };
    let valid = valid_subset(data, history, cfg.valid_users);
    log::info!(
        "draft {} ({}): {} params, {} training samples, {} validation samples",
        looper::folder_name(out),
        cfg.method,
        w.num_params(),
        samples.len(),
        valid.len()
    );
    let mut task = AlignTask {
        target,
        data,
        cfg,
        samples,
        beams,
        valid,
        levels: Levels::new(data, device)?,
        device: device.clone(),
    };
    let kind = format!("draft:{}", cfg.method);
    looper::run(&mut task, &w, &kind, &cfg.optim, out)
}

/// Random draft weights, or the `init` checkpoint's (whose vocabulary must be the target's).
fn draft_weights(
    target: &Llm,
    data: &Dataset,
    cfg: &AlignConfig,
    history: usize,
    device: &Device,
) -> Result<Weights> {
    match &cfg.init {
        Some(dir) => {
            let draft = Llm::load(dir, device)?;
            check_same_vocab(target, &draft)?;
            Weights::from_llm(&draft, device)
        }
        None => {
            let shape = [cfg.layers, cfg.hidden, cfg.heads, cfg.kv_heads];
            let model_cfg = model_config(data, history, shape)?;
            Weights::random(&model_cfg, target.vocab.clone(), cfg.optim.seed, device)
        }
    }
}

/// The teacher file's samples (optionally capped) with their beams, after checking the file
/// describes this dataset.
fn teacher_samples(
    t: &TeacherFile,
    data: &Dataset,
    cfg: &AlignConfig,
) -> Result<(Vec<Sample>, Vec<Vec<Identifier>>)> {
    let all = data.train_samples(t.history, t.last_only);
    if all.len() != t.train_samples {
        return Err(Error::data(
            &t.path,
            format!(
                "made for {} training samples of dataset '{}' (history {}, last_only {}), but \
                 '{}' has {}",
                t.train_samples,
                t.dataset,
                t.history,
                t.last_only,
                data.name,
                all.len()
            ),
        ));
    }
    if cfg.method.needs_teacher() && t.k < cfg.k {
        return Err(Error::invalid(
            "k",
            format!(
                "the teacher file has K = {} beams per sample, fewer than K = {}",
                t.k, cfg.k
            ),
        ));
    }
    let mut samples = Vec::new();
    let mut beams = Vec::new();
    for i in subset(t.records.len(), cfg.max_samples, cfg.optim.seed) {
        let rec = &t.records[i];
        let s = all.get(rec.sample as usize).ok_or_else(|| {
            Error::data(
                &t.path,
                format!("record {i} names sample {} of {}", rec.sample, all.len()),
            )
        })?;
        if let Some(j) = rec.beams.iter().position(|b| data.items_of(b).is_empty()) {
            return Err(Error::data(
                &t.path,
                format!(
                    "record {i}: beam {j} is not an identifier of dataset '{}'",
                    data.name
                ),
            ));
        }
        samples.push(s.clone());
        beams.push(rec.beams.iter().take(cfg.k).copied().collect());
    }
    Ok((samples, beams))
}

/// Training samples without teacher beams (sft, wordkd, tvdkd without a teacher file).
fn plain_samples(data: &Dataset, cfg: &AlignConfig) -> (Vec<Sample>, Vec<Vec<Identifier>>) {
    let all = data.train_samples(cfg.history, cfg.last_only);
    let samples: Vec<Sample> = subset(all.len(), cfg.max_samples, cfg.optim.seed)
        .into_iter()
        .map(|i| all[i].clone())
        .collect();
    let beams = vec![Vec::new(); samples.len()];
    (samples, beams)
}

/// The tokens allowed at each identifier level, A_t, for restricting logits.
struct Levels {
    /// Per level, the vocabulary ids of A_t (ascending) on the training device.
    ids: Vec<Tensor>,
    /// Vocabulary id -> its index within its level's A_t.
    local: Vec<u32>,
}

impl Levels {
    fn new(data: &Dataset, device: &Device) -> Result<Self> {
        let mut local = vec![0u32; data.vocab.len()];
        let mut ids = Vec::with_capacity(data.levels);
        for l in 0..data.levels {
            let toks = data.vocab.level_tokens(l);
            for (i, &t) in toks.iter().enumerate() {
                local[t as usize] = i as u32;
            }
            ids.push(Tensor::from_slice(&toks, toks.len(), device)?);
        }
        Ok(Levels { ids, local })
    }

    /// Logits of `model` at `rows` of `hidden`, restricted to A_l, on `device`.
    ///
    /// Only the distinct rows are projected (the K + 1 sequences of a sample share the level-0
    /// row and many prefixes), and only onto A_l's rows of the output matrix (a quarter of the
    /// vocabulary): the projection would otherwise dominate an alignment step.
    fn restricted(
        &self,
        model: &Llama,
        hidden: &Tensor,
        rows: &[u32],
        l: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let (distinct, inverse) = dedup(rows);
        let dev = hidden.device();
        let picked =
            hidden.index_select(&Tensor::from_vec(distinct.clone(), distinct.len(), dev)?, 0)?;
        let head = model.output_rows(&self.ids[l].to_device(dev)?)?;
        let logits = picked
            .matmul(&head.t()?)?
            .to_dtype(candle_core::DType::F32)?;
        let inverse = Tensor::from_vec(inverse, rows.len(), dev)?;
        Ok(logits.index_select(&inverse, 0)?.to_device(device)?)
    }
}

/// The distinct values of `rows` (first-seen order) and, for each row, its index among them.
fn dedup(rows: &[u32]) -> (Vec<u32>, Vec<u32>) {
    let mut seen = std::collections::HashMap::with_capacity(rows.len());
    let mut distinct = Vec::new();
    let inverse = rows
        .iter()
        .map(|&r| {
            *seen.entry(r).or_insert_with(|| {
                distinct.push(r);
                distinct.len() as u32 - 1
            })
        })
        .collect();
    (distinct, inverse)
}

struct AlignTask<'a> {
    target: &'a Llm,
    data: &'a Dataset,
    cfg: &'a AlignConfig,
    samples: Vec<Sample>,
    /// Teacher beams per sample (empty without a teacher file).
    beams: Vec<Vec<Identifier>>,
    valid: Vec<Sample>,
    levels: Levels,
    device: Device,
}

impl AlignTask<'_> {
    /// Identifiers the alignment loss scores for sample `i`.
    fn align_set<R: Rng>(
        &self,
        i: usize,
        w: &Weights,
        snap: &mut Option<Llm>,
        rng: &mut R,
    ) -> Result<Vec<Identifier>> {
        let s = &self.samples[i];
        Ok(match self.cfg.method {
            AlignMethod::Sft => Vec::new(),
            AlignMethod::WordKd | AlignMethod::TvdKd => vec![s.targets[0]],
            AlignMethod::SeqKd | AlignMethod::AtSpeedR => self.beams[i].clone(),
            AlignMethod::AtSpeedS => {
                if rng.random::<f64>() < self.cfg.lambda {
                    if snap.is_none() {
                        *snap = Some(w.snapshot("draft")?);
                    }
                    let draft = snap.as_ref().expect("just set");
                    self.draft_beams(draft, s)?
                } else {
                    self.beams[i].clone()
                }
            }
        })
    }

    /// The draft's own top-K beams for `s` under its current weights (AtSpeed-S on-policy).
    fn draft_beams(&self, draft: &Llm, s: &Sample) -> Result<Vec<Identifier>> {
        let prompt = self.data.prompt(&s.history);
        let out = beam_search(draft, &self.data.trie, &prompt, self.cfg.k)?;
        Ok(out
            .beams
            .iter()
            .filter_map(|b| identifier(&b.tokens))
            .collect())
    }

    /// L_align of the batch's `align` group, averaged over levels.
    fn align_loss(&self, w: &Weights, batch: &TreeBatch, hidden: &Tensor) -> Result<Tensor> {
        let p_hidden = match self.cfg.method.needs_target() {
            true => Some(batch.hidden(&self.target.model, false)?),
            false => None,
        };
        let mut total = Tensor::zeros((), DType::F32, &self.device)?;
        let levels = batch.align.levels().max(1);
        for l in 0..batch.align.levels() {
            let rows = &batch.align.rows[l];
            let q = self
                .levels
                .restricted(w.model(), hidden, rows, l, &self.device)?;
            let p = match &p_hidden {
                Some(h) => {
                    Some(
                        self.levels
                            .restricted(&self.target.model, h, rows, l, &self.device)?,
                    )
                }
                None => None,
            };
            total = (total + self.level_loss(p.as_ref(), &q, &batch.align.labels[l])?)?;
        }
        Ok((total / levels as f64)?)
    }

    /// The method's objective at one level: `p`, `q` the target's and draft's logits over A_t
    /// (`p` absent for the methods that do not read it), `labels` the sequences' tokens.
    fn level_loss(&self, p: Option<&Tensor>, q: &Tensor, labels: &[u32]) -> Result<Tensor> {
        let (t, k) = (self.cfg.temperature, self.cfg.k);
        let p = || p.ok_or_else(|| Error::invalid("method", "target logits missing"));
        match self.cfg.method {
            AlignMethod::Sft => Ok(Tensor::zeros((), DType::F32, &self.device)?),
            AlignMethod::WordKd => losses::word_kd(p()?, q, t),
            AlignMethod::TvdKd => losses::tvd_kd(p()?, q, t),
            AlignMethod::AtSpeedR => losses::atspeed_r(p()?, q, t),
            AlignMethod::AtSpeedS => losses::atspeed_s(p()?, q, k, t),
            AlignMethod::SeqKd => {
                let local: Vec<u32> = labels
                    .iter()
                    .map(|&tok| self.levels.local[tok as usize])
                    .collect();
                let labels = Tensor::from_vec(local, labels.len(), &self.device)?;
                losses::seq_kd(q, &labels, t)
            }
        }
    }

    /// Mean fraction of the target's top-K tokens (within A_t) that are also in the draft's
    /// top-K, over the ground truth's positions of `samples`: a cheap proxy for strict
    /// acceptance.
    fn coverage(&self, draft: &Llm, samples: &[Sample]) -> Result<f64> {
        let (mut sum, mut rows_seen) = (0.0, 0usize);
        for chunk in samples.chunks(self.cfg.optim.batch_size.max(1)) {
            let ex: Vec<Example> = chunk
                .iter()
                .map(|s| rec_example(self.data, s, vec![]))
                .collect();
            let batch = TreeBatch::new(&ex, &self.device)?;
            let qh = batch.hidden(&draft.model, false)?;
            let ph = batch.hidden(&self.target.model, false)?;
            for l in 0..batch.rec.levels() {
                let rows = &batch.rec.rows[l];
                let q = self
                    .levels
                    .restricted(&draft.model, &qh, rows, l, &self.device)?;
                let p = self
                    .levels
                    .restricted(&self.target.model, &ph, rows, l, &self.device)?;
                sum += top_k_overlap(&p, &q, self.cfg.k)?;
                rows_seen += rows.len();
            }
        }
        Ok(sum / rows_seen.max(1) as f64)
    }
}

/// Sum over rows of |top-k(p) ∩ top-k(q)| / k (k capped at the row width).
fn top_k_overlap(p: &Tensor, q: &Tensor, k: usize) -> Result<f64> {
    let k = k.clamp(1, p.dim(1)?);
    let top = |x: &Tensor| -> Result<Vec<Vec<u32>>> {
        Ok(x.arg_sort_last_dim(false)?
            .narrow(1, 0, k)?
            .to_vec2::<u32>()?)
    };
    let (tp, tq) = (top(p)?, top(q)?);
    Ok(tp
        .iter()
        .zip(&tq)
        .map(|(a, b)| a.iter().filter(|t| b.contains(t)).count() as f64 / k as f64)
        .sum())
}

impl Task for AlignTask<'_> {
    fn metric_name(&self) -> String {
        format!("valid top-{} coverage", self.cfg.k)
    }

    fn num_samples(&self) -> usize {
        self.samples.len()
    }

    /// History length dominates; the tree adds at most (L - 1) * (K + 1) nodes on top.
    fn sample_len(&self, i: usize) -> usize {
        self.samples[i].history.len() * self.data.levels + self.beams[i].len()
    }

    fn loss(&mut self, w: &Weights, batch: &[usize], step: usize) -> Result<Tensor> {
        let seed = self.cfg.optim.seed ^ (step as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut snap = None;
        let mut ex = Vec::with_capacity(batch.len());
        for &i in batch {
            let align = self.align_set(i, w, &mut snap, &mut rng)?;
            ex.push(rec_example(self.data, &self.samples[i], align));
        }
        let batch = TreeBatch::new(&ex, &self.device)?;
        let hidden = batch.hidden(w.model(), true)?;
        let rec = batch.rec_loss(w.model(), &hidden)?;
        let alpha = self.cfg.effective_alpha();
        if alpha == 0.0 || batch.align.is_empty() {
            return Ok(rec);
        }
        let align = self.align_loss(w, &batch, &hidden)?;
        Ok(((rec * (1.0 - alpha))? + (align * alpha)?)?)
    }

    fn validate(&mut self, model: &Llm) -> Result<Validation> {
        let loss = valid_loss(
            model,
            self.data,
            &self.valid,
            self.cfg.optim.batch_size,
            &self.device,
        )?;
        let metric = match self.valid.is_empty() {
            true => None,
            false => Some(self.coverage(model, &self.valid)?),
        };
        Ok(Validation { loss, metric })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::synth;

    #[test]
    fn dedup_maps_back() {
        let (d, inv) = dedup(&[7, 3, 7, 9, 3]);
        assert_eq!(d, vec![7, 3, 9]);
        assert_eq!(inv, vec![0, 1, 0, 2, 1]);
    }

    /// The shortcut projection equals the full logits restricted to A_l, tied or not.
    #[test]
    fn restricted_logits_match_full_projection() {
        let cat = synth::catalogue([5, 6, 6, 6], 80, 3);
        for tied in [false, true] {
            let mut cfg = ModelConfig::compact(cat.vocab.len(), 1, 32, 4, 2);
            cfg.tie_word_embeddings = tied;
            let llm = Llm::random(&cfg, cat.vocab.tokens().to_vec(), 0.2, 1, &Device::Cpu).unwrap();
            let toks = cat.vocab.level_tokens(2);
            let levels = Levels {
                ids: (0..cat.vocab.num_levels())
                    .map(|_| Tensor::new(toks.as_slice(), &Device::Cpu).unwrap())
                    .collect(),
                local: Vec::new(),
            };
            let hidden = Tensor::randn(0f32, 1.0, (6, 32), &Device::Cpu).unwrap();
            let rows = [4u32, 1, 4, 0, 5];
            let got = levels
                .restricted(&llm.model, &hidden, &rows, 2, &Device::Cpu)
                .unwrap();
            let ids = Tensor::new(toks.as_slice(), &Device::Cpu).unwrap();
            let want = TreeBatch::logits(&llm.model, &hidden, &rows)
                .unwrap()
                .index_select(&ids, 1)
                .unwrap();
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-5, "tied {tied}");
        }
    }
}
