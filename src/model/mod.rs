//! The decoder (LLaMA, Qwen2, Qwen3) and its checkpoints: config, tokenizer, weights, adapters.

mod cache;
pub mod checkpoint;
pub mod config;
pub mod kernels;
mod llama;
pub mod lora;
pub mod random;
pub mod summary;
pub mod tokenizer;
pub mod weights;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

pub use cache::KvCache;
pub use config::{Arch, ModelConfig};
pub use llama::{Llama, Rotary};
pub use lora::AdapterInfo;
pub use summary::{summarize, CheckpointSummary};
pub use tokenizer::{ModelTokenizer, PromptStyle, TokenizerKind, TokenizerRules};

use crate::{Error, Result};

/// A loaded model: weights, its tokenizer and prompt style, and where it came from.
#[derive(Clone, Debug)]
pub struct Llm {
    pub model: Llama,
    /// Token strings in id order (from `tokenizer.json`).
    pub vocab: Vec<String>,
    pub tokenizer: ModelTokenizer,
    /// The folder the tokenizer files came from (the checkpoint's, or an adapter's own), so a
    /// profile with other tokenizer rules can read them again.
    pub tokenizer_dir: Option<PathBuf>,
    /// Compact vocabulary or an LLM tokenizer (detected, or chosen at load).
    pub style: PromptStyle,
    /// The LoRA adapter merged into the weights, if any.
    pub adapter: Option<AdapterInfo>,
    /// Display name: the folder name, or what the caller chose.
    pub name: String,
    pub dir: Option<PathBuf>,
}

/// How to load a checkpoint: where it runs, in which dtype, over which base (for an adapter
/// folder), and with which prompt style.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub device: Device,
    /// `None`: the dtype the checkpoint is stored in (no conversion, no f32 copy of a 16-bit
    /// model).
    pub dtype: Option<DType>,
    /// The base checkpoint of an adapter folder; `None` uses the adapter's
    /// `base_model_name_or_path` when it names a local folder.
    pub base: Option<PathBuf>,
    /// Overrides the detected prompt style.
    pub prompt: Option<PromptStyle>,
    /// How the tokenizer files load (default: as transformers 5 loads them).
    pub tokenizer_rules: Option<TokenizerRules>,
}

impl LoadOptions {
    pub fn new(device: &Device, dtype: Option<DType>) -> LoadOptions {
        LoadOptions {
            device: device.clone(),
            dtype,
            base: None,
            prompt: None,
            tokenizer_rules: None,
        }
    }
}

/// The folder name of `dir`, for display.
fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

impl Llm {
    /// Loads a checkpoint folder, or an adapter folder over its base (see [`LoadOptions`]).
    pub fn load_with(dir: &Path, opts: &LoadOptions) -> Result<Llm> {
        if !dir.is_dir() {
            return Err(Error::model(
                dir,
                "not a checkpoint folder (missing or not a directory)",
            ));
        }
        let mut adapter = if lora::is_adapter(dir) {
            Some(lora::Adapter::load(dir)?)
        } else {
            if opts.base.is_some() {
                return Err(Error::invalid(
                    "base",
                    format!(
                        "{} is a full checkpoint, not a LoRA adapter: a base applies to adapter folders only",
                        dir.display()
                    ),
                ));
            }
            None
        };
        let ckpt = match &adapter {
            None => dir.to_path_buf(),
            Some(a) => opts.base.clone().or_else(|| a.local_base()).ok_or_else(|| {
                Error::invalid(
                    "base",
                    format!(
                        "{} is a LoRA adapter for base {:?}, which is not a local checkpoint folder: give the base checkpoint's folder",
                        dir.display(),
                        a.info.base_name
                    ),
                )
            })?,
        };
        let mut cfg = checkpoint::read_config(&ckpt)?;
        // An adapter that resized the vocabulary carries its own tokenizer.
        let tok_dir = match &adapter {
            Some(a) if a.info.dir.join(checkpoint::TOKENIZER).is_file() => a.info.dir.clone(),
            Some(a)
                if a.info.dir.join("tokenizer.model").is_file()
                    || a.info.dir.join("added_tokens.json").is_file() =>
            {
                return Err(Error::model(
                    a.info.dir.join(checkpoint::TOKENIZER),
                    "missing: the adapter's tokenizer is saved only in the slow SentencePiece form (tokenizer.model, added_tokens.json); write tokenizer.json as README \"Your own model\" shows",
                ));
            }
            _ => ckpt.clone(),
        };
        let tokenizer = checkpoint::read_tokenizer_as(
            &tok_dir,
            Some(&cfg.model_type),
            opts.tokenizer_rules.unwrap_or_default(),
        )?;
        let dtype = match opts.dtype {
            Some(d) => d,
            None => weights::stored_dtype(&ckpt)?,
        };
        let mut tensors = weights::read_weights(&ckpt, dtype, &opts.device)?;
        if let Some(a) = &mut adapter {
            let plan = a.merge_into(&mut tensors, &ckpt, cfg.tie_word_embeddings)?;
            if let Some(v) = plan.vocab {
                cfg.vocab_size = v;
            }
            if plan.untie {
                cfg.tie_word_embeddings = false;
            }
        }
        // Every tensor must be one the config describes: a checkpoint with more layers than
        // config.json says, or a bias the architecture lacks, is not silently half-used.
        let expected: std::collections::HashSet<String> =
            tensor_shapes(&cfg).into_iter().map(|(n, _)| n).collect();
        let mut extra: Vec<&String> = tensors
            .keys()
            .filter(|n| !expected.contains(*n) && !n.ends_with("rotary_emb.inv_freq"))
            .collect();
        extra.sort();
        if let Some(n) = extra.first() {
            return Err(Error::model(
                &ckpt,
                format!(
                    "weights do not fit config.json: tensor {n} is not part of a {} with {} layers{}",
                    cfg.model_type,
                    cfg.num_hidden_layers,
                    if extra.len() > 1 {
                        format!(" ({} such tensors)", extra.len())
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        let style = opts
            .prompt
            .unwrap_or_else(|| tokenizer::detect_style(cfg.prompt_style.as_deref(), &tokenizer));
        if style == PromptStyle::Reference && tokenizer.is_compact() {
            return Err(Error::invalid(
                "prompt",
                format!(
                    "{} has a compact word-level vocabulary, which cannot encode the reference prompt's text",
                    dir.display()
                ),
            ));
        }
        let tokens = tokenizer.vocab().len();
        let fits = match style {
            // Compact vocabularies are exactly the model's rows.
            PromptStyle::Compact => tokens == cfg.vocab_size,
            // LLM embeddings are often padded beyond the tokenizer (Qwen2: 151,936 rows).
            PromptStyle::Reference => tokens <= cfg.vocab_size,
        };
        if !fits {
            let hint = match &adapter {
                Some(a) if a.info.replaced.is_empty() => format!(
                    ": the adapter's tokenizer adds tokens but {} does not save the new embedding rows (embed_tokens, lm_head); export them as README \"Your own model\" shows",
                    lora::ADAPTER_WEIGHTS
                ),
                _ => String::new(),
            };
            return Err(Error::model(
                tok_dir.join(checkpoint::TOKENIZER),
                format!(
                    "has {tokens} tokens but the model's embedding has {} rows (config.json says vocab_size {}){hint}",
                    cfg.vocab_size, cfg.vocab_size
                ),
            ));
        }
        let vb = VarBuilder::from_tensors(tensors, dtype, &opts.device);
        let mut model = Llama::new(&cfg, vb)
            .map_err(|e| Error::model(&ckpt, format!("weights do not fit config.json: {e}")))?;
        model.fuse_projections()?;
        Ok(Llm {
            model,
            vocab: tokenizer.vocab().to_vec(),
            tokenizer,
            tokenizer_dir: Some(tok_dir),
            style,
            adapter: adapter.map(|a| a.info),
            name: folder_name(dir),
            dir: Some(dir.to_path_buf()),
        })
    }

    /// Loads a checkpoint folder on `device`, weights converted to `dtype`.
    pub fn load_as(dir: &Path, device: &Device, dtype: DType) -> Result<Llm> {
        Self::load_with(dir, &LoadOptions::new(device, Some(dtype)))
    }

    /// Loads in f32 (the CPU's exact reference).
    pub fn load(dir: &Path, device: &Device) -> Result<Llm> {
        Self::load_as(dir, device, DType::F32)
    }

    /// A randomly initialised model (normal(0, `std`) weights, unit norms; Hugging Face uses
    /// std 0.02), deterministic in `seed` and independent of the device. Tests use a larger std
    /// so the random model's distributions are peaked and float near-ties are rare.
    pub fn random(
        cfg: &ModelConfig,
        vocab: Vec<String>,
        std: f32,
        seed: u64,
        device: &Device,
    ) -> Result<Llm> {
        check_new_shape(cfg, MAX_NEW_PARAMS)?;
        check_std(std)?;
        cfg.validate()
            .map_err(|m| Error::invalid("model shape", m))?;
        if vocab.len() != cfg.vocab_size {
            return Err(Error::invalid(
                "model shape",
                format!(
                    "vocabulary has {} tokens, config {}",
                    vocab.len(),
                    cfg.vocab_size
                ),
            ));
        }
        let tensors = random_weights(cfg, std, seed, device)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let mut model = Llama::new(cfg, vb)?;
        model.fuse_projections()?;
        let tokenizer = ModelTokenizer::word_level(&vocab);
        Ok(Llm {
            model,
            vocab,
            tokenizer,
            tokenizer_dir: None,
            style: PromptStyle::Compact,
            adapter: None,
            name: "random".into(),
            dir: None,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }
    pub fn device(&self) -> &Device {
        self.model.device()
    }

    pub fn num_params(&self) -> usize {
        self.model.num_params()
    }

    /// Short shape summary for headers, e.g. `8Lx256 3.1M`.
    pub fn describe(&self) -> String {
        let c = self.config();
        format!(
            "{}Lx{} {}",
            c.num_hidden_layers,
            c.hidden_size,
            human_count(self.num_params())
        )
    }

    /// Writes the checkpoint folder (config.json, model.safetensors, tokenizer.json) as a whole:
    /// into a temporary folder beside `dir`, which then replaces `dir` and everything in it. A
    /// crash leaves the old checkpoint or the new one, never a mix.
    pub fn save(&self, dir: &Path, dtype: DType) -> Result<()> {
        crate::atomic::write_dir(dir, |tmp| self.save_files(tmp, dtype))
    }

    /// Writes the checkpoint's three files into the existing folder `dir`, each atomically,
    /// leaving anything else there alone (the trainers' output folders, themselves published
    /// as a whole).
    pub fn save_files(&self, dir: &Path, dtype: DType) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut cfg = self.config().clone();
        cfg.torch_dtype = checkpoint::dtype_name(dtype).into();
        let json = serde_json::to_vec_pretty(&cfg).expect("config serialises");
        checkpoint::write_atomic(&dir.join(checkpoint::CONFIG), &json)?;
        let mut map = HashMap::new();
        for (name, t) in self.model.named_tensors()? {
            map.insert(name, t.to_dtype(dtype)?.to_device(&Device::Cpu)?);
        }
        let tmp = dir.join(format!("{}.tmp", checkpoint::WEIGHTS));
        candle_core::safetensors::save(&map, &tmp)
            .map_err(|e| Error::model(&tmp, e.to_string()))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        let dst = dir.join(checkpoint::WEIGHTS);
        std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
        // Compact vocabularies are written as this project defines them (byte-stable); any other
        // tokenizer is written back as it was read.
        let tok = match self.style {
            PromptStyle::Compact => {
                serde_json::to_string(&tokenizer::tokenizer_json(&self.vocab)).expect("json")
            }
            PromptStyle::Reference => self
                .tokenizer
                .to_json()
                .map_err(|m| Error::model(dir.join(checkpoint::TOKENIZER), m))?,
        };
        checkpoint::write_atomic(&dir.join(checkpoint::TOKENIZER), tok.as_bytes())
    }

    /// One inference pass over `tokens` at `positions` with the additive `mask`
    /// ([tokens, cache.len() + tokens], row-major), appending to `cache`. Returns log-softmax
    /// over the full vocabulary at the chosen `rows` (indices into `tokens`), as [rows, vocab].
    pub fn log_probs(
        &self,
        tokens: &[u32],
        positions: &[u32],
        mask: &[f32],
        cache: &mut KvCache,
        rows: &[u32],
    ) -> Result<Tensor> {
        let t = tokens.len();
        let s = cache.len() + t;
        let max = self.config().max_position_embeddings as u32;
        if let Some(&p) = positions.iter().find(|&&p| p >= max) {
            return Err(Error::invalid(
                "prompt tokens",
                format!("position {p} exceeds the model's max_position_embeddings {max}"),
            ));
        }
        if mask.len() != t * s || positions.len() != t {
            return Err(Error::invalid(
                "mask",
                format!(
                    "{} mask entries and {} positions for {t} tokens over {s} entries",
                    mask.len(),
                    positions.len()
                ),
            ));
        }
        let dev = self.device();
        let tok = Tensor::from_slice(tokens, (1, t), dev)?;
        let pos = Tensor::from_slice(positions, (1, t), dev)?;
        let mask = Tensor::from_slice(mask, (1, t, s), dev)?;
        let rotary = self.model.rotary(&pos)?;
        let hidden = self
            .model
            .hidden(&tok, &rotary, &mask, Some(cache), false)?;
        let idx = Tensor::from_slice(rows, rows.len(), dev)?;
        let picked = hidden.squeeze(0)?.index_select(&idx, 0)?;
        let logits = self.model.logits(&picked)?;
        Ok(candle_nn::ops::log_softmax(
            &logits,
            candle_core::D::Minus1,
        )?)
    }
}

/// Most parameters a model made here (a random or trained one) may have: 2^30, 4 GB in f32, far
/// beyond a generative recommender's size. Checked before anything is allocated.
pub const MAX_NEW_PARAMS: u64 = 1 << 30;
/// Most positions a model made here may hold (its rotary tables are sized by them).
pub const MAX_NEW_POSITIONS: usize = 1 << 16;

/// Widest hidden size, and most layers or heads, a model made here may have; far beyond any
/// recommender, and small enough that no product of them overflows.
pub const MAX_NEW_DIM: usize = 1 << 16;

/// A compact-prompt config for a new model over `vocab` tokens ([`ModelConfig::compact`]), with
/// every size checked first ([`check_new_shape`]): flags and files can ask for anything.
pub fn compact_config(
    vocab: usize,
    [layers, hidden, heads, kv_heads]: [usize; 4],
    max_params: u64,
) -> Result<ModelConfig> {
    for (what, v) in [
        ("layers", layers),
        ("hidden", hidden),
        ("heads", heads),
        ("kv_heads", kv_heads),
    ] {
        if v > MAX_NEW_DIM {
            return Err(Error::invalid(
                what,
                format!("{v} is more than {MAX_NEW_DIM}"),
            ));
        }
    }
    let cfg = ModelConfig::compact(vocab, layers, hidden, heads, kv_heads);
    check_new_shape(&cfg, max_params)?;
    Ok(cfg)
}

/// The initialisation's standard deviation (`Llm::random`, `new-model --std`): positive and finite.
pub fn check_std(std: f32) -> Result<()> {
    if std.is_finite() && std > 0.0 {
        return Ok(());
    }
    Err(Error::invalid(
        "std",
        format!("the initialisation's standard deviation must be a positive number, not {std}"),
    ))
}

/// Checks the shape of a model about to be created, before any weight is allocated: every size
/// at least 1, heads dividing the width into an even head size, key/value heads dividing the
/// heads, and at most [`MAX_NEW_PARAMS`] parameters. Errors name the parameter (`layers`,
/// `hidden`, `heads`, `kv_heads`).
pub fn check_new_shape(cfg: &ModelConfig, max_params: u64) -> Result<()> {
    let (layers, hidden, heads) = (
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.num_attention_heads,
    );
    let kv = cfg.kv_heads();
    for (what, v) in [
        ("layers", layers),
        ("hidden", hidden),
        ("heads", heads),
        ("kv_heads", kv),
    ] {
        if v == 0 {
            return Err(Error::invalid(what, "must be at least 1"));
        }
    }
    if !hidden.is_multiple_of(heads) || !(hidden / heads).is_multiple_of(2) {
        return Err(Error::invalid(
            "hidden",
            format!(
                "{hidden} does not split into {heads} heads of an even size (hidden must be a \
                 multiple of 2 x heads)"
            ),
        ));
    }
    if !heads.is_multiple_of(kv) {
        return Err(Error::invalid(
            "kv_heads",
            format!("{kv} does not divide the {heads} heads"),
        ));
    }
    if cfg.vocab_size == 0 {
        return Err(Error::invalid("vocabulary", "no tokens"));
    }
    if cfg.max_position_embeddings == 0 || cfg.max_position_embeddings > MAX_NEW_POSITIONS {
        return Err(Error::invalid(
            "history",
            format!(
                "{} positions: a model holds 1 to {MAX_NEW_POSITIONS}",
                cfg.max_position_embeddings
            ),
        ));
    }
    // In u128, so no product of flag values can overflow.
    let (h, v, l) = (hidden as u128, cfg.vocab_size as u128, layers as u128);
    let hd = h / heads as u128;
    let inter = cfg.intermediate_size as u128;
    let per_layer =
        2 * h * (heads as u128 * hd) + 2 * h * (kv as u128 * hd) + 3 * h * inter + 2 * h;
    let heads_out = if cfg.tie_word_embeddings { 1 } else { 2 };
    let params = heads_out * v * h + l * per_layer + h;
    if params > max_params as u128 {
        return Err(Error::invalid(
            "model shape",
            format!(
                "{layers} layers of width {hidden} over {} tokens make {params} parameters, \
                 more than the {max_params} a model made here may have",
                cfg.vocab_size
            ),
        ));
    }
    Ok(())
}

/// The additive mask of a plain causal sequence of `t` tokens, row-major [t, t].
pub fn causal_mask(t: usize) -> Vec<f32> {
    let mut mask = vec![f32::NEG_INFINITY; t * t];
    for i in 0..t {
        mask[i * t..=i * t + i].fill(0.0);
    }
    mask
}

pub fn human_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.0}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// Every weight a checkpoint of this config holds, with its shape, in Hugging Face names.
pub fn tensor_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden_size;
    let hd = cfg.head_dim();
    let (q, kv) = (cfg.num_attention_heads * hd, cfg.kv_heads() * hd);
    let mut shapes: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![cfg.vocab_size, h])];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let mut push = |name: &str, shape: Vec<usize>| shapes.push((format!("{p}.{name}"), shape));
        push("self_attn.q_proj.weight", vec![q, h]);
        push("self_attn.k_proj.weight", vec![kv, h]);
        push("self_attn.v_proj.weight", vec![kv, h]);
        push("self_attn.o_proj.weight", vec![h, q]);
        if cfg.qkv_bias() {
            push("self_attn.q_proj.bias", vec![q]);
            push("self_attn.k_proj.bias", vec![kv]);
            push("self_attn.v_proj.bias", vec![kv]);
        }
        if cfg.o_bias() {
            push("self_attn.o_proj.bias", vec![h]);
        }
        if cfg.qk_norm() {
            push("self_attn.q_norm.weight", vec![hd]);
            push("self_attn.k_norm.weight", vec![hd]);
        }
        push("mlp.gate_proj.weight", vec![cfg.intermediate_size, h]);
        push("mlp.up_proj.weight", vec![cfg.intermediate_size, h]);
        push("mlp.down_proj.weight", vec![h, cfg.intermediate_size]);
        push("input_layernorm.weight", vec![h]);
        push("post_attention_layernorm.weight", vec![h]);
    }
    shapes.push(("model.norm.weight".into(), vec![h]));
    if !cfg.tie_word_embeddings {
        shapes.push(("lm_head.weight".into(), vec![cfg.vocab_size, h]));
    }
    shapes
}

fn random_weights(
    cfg: &ModelConfig,
    std: f32,
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let normal =
        Normal::new(0.0f32, std).map_err(|e| Error::invalid("std", format!("{std}: {e}")))?;
    let shapes = tensor_shapes(cfg);
    let mut out = HashMap::new();
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            (0..n).map(|_| normal.sample(&mut rng)).collect()
        };
        out.insert(name, Tensor::from_vec(data, shape, device)?);
    }
    Ok(out)
}
