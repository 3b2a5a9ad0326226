//! The LLaMA decoder and its checkpoints.

mod cache;
pub mod checkpoint;
mod config;
mod llama;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

pub use cache::KvCache;
pub use config::LlamaConfig;
pub use llama::{Llama, Rotary};

use crate::{Error, Result};

/// A loaded model: weights, the vocabulary it was trained on, and where it came from.
#[derive(Clone, Debug)]
pub struct Llm {
    pub model: Llama,
    /// Token strings in id order (from `tokenizer.json`).
    pub vocab: Vec<String>,
    /// Display name: the folder name, or what the caller chose.
    pub name: String,
    pub dir: Option<PathBuf>,
}

impl Llm {
    /// Loads a checkpoint folder on `device`. Weights are converted to `dtype`.
    pub fn load_as(dir: &Path, device: &Device, dtype: DType) -> Result<Llm> {
        if !dir.is_dir() {
            return Err(Error::model(
                dir,
                "not a checkpoint folder (missing or not a directory)",
            ));
        }
        let cfg = checkpoint::read_config(dir)?;
        let vocab = checkpoint::read_tokenizer_vocab(dir)?;
        if vocab.len() != cfg.vocab_size {
            return Err(Error::model(
                dir.join(checkpoint::TOKENIZER),
                format!(
                    "has {} tokens but config.json says vocab_size {}",
                    vocab.len(),
                    cfg.vocab_size
                ),
            ));
        }
        let weights = checkpoint::read_weights(dir, dtype, device)?;
        let vb = VarBuilder::from_tensors(weights, dtype, device);
        let mut model = Llama::new(&cfg, vb)
            .map_err(|e| Error::model(dir, format!("weights do not fit config.json: {e}")))?;
        model.fuse_projections()?;
        Ok(Llm {
            model,
            vocab,
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string()),
            dir: Some(dir.to_path_buf()),
        })
    }

    /// Loads in the device's natural dtype: f32 (CPU inference is always f32).
    pub fn load(dir: &Path, device: &Device) -> Result<Llm> {
        Self::load_as(dir, device, DType::F32)
    }

    /// A randomly initialised model (normal(0, `std`) weights, unit norms; Hugging Face uses
    /// std 0.02), deterministic in `seed` and independent of the device. Tests use a larger std
    /// so the random model's distributions are peaked and float near-ties are rare.
    pub fn random(
        cfg: &LlamaConfig,
        vocab: Vec<String>,
        std: f32,
        seed: u64,
        device: &Device,
    ) -> Result<Llm> {
        check_new_shape(cfg)?;
        if !(std.is_finite() && std > 0.0) {
            return Err(Error::invalid(
                "std",
                format!("{std} is not a positive standard deviation"),
            ));
        }
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
        Ok(Llm {
            model,
            vocab,
            name: "random".into(),
            dir: None,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        self.model.config()
    }
    pub fn device(&self) -> &Device {
        self.model.device()
    }

    pub fn num_params(&self) -> usize {
        self.model
            .named_tensors()
            .iter()
            .map(|(_, t)| t.elem_count())
            .sum()
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

    /// What `atspeed inspect` prints about a checkpoint.
    pub fn summary(&self) -> String {
        let c = self.config();
        let mut s = String::new();
        if let Some(dir) = &self.dir {
            s.push_str(&format!("checkpoint {}\n", dir.display()));
        }
        s.push_str(&format!(
            "  architecture   {} ({})\n",
            c.architectures.join(", "),
            c.model_type
        ));
        s.push_str(&format!(
            "  shape          {} layers, hidden {}, intermediate {}, {} heads ({} key/value heads)\n",
            c.num_hidden_layers,
            c.hidden_size,
            c.intermediate_size,
            c.num_attention_heads,
            c.kv_heads()
        ));
        s.push_str(&format!(
            "  parameters     {} ({})\n",
            self.num_params(),
            human_count(self.num_params())
        ));
        s.push_str(&format!("  stored dtype   {}\n", c.torch_dtype));
        s.push_str(&format!(
            "  vocabulary     {} tokens ({} prompt style)\n",
            c.vocab_size, c.prompt_style
        ));
        s.push_str(&format!(
            "  positions      up to {}, rope theta {}\n",
            c.max_position_embeddings, c.rope_theta
        ));
        s.push_str(&format!("  tied embedding {}", c.tie_word_embeddings));
        s
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
        for (name, t) in self.model.named_tensors() {
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
        let tok = serde_json::to_vec(&checkpoint::tokenizer_json(&self.vocab)).expect("json");
        checkpoint::write_atomic(&dir.join(checkpoint::TOKENIZER), &tok)
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
                "prompt",
                format!("position {p} exceeds the model's max_position_embeddings {max}"),
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

/// A compact-prompt config for a new model over `vocab` tokens ([`LlamaConfig::compact`]), with
/// every size checked first ([`check_new_shape`]): flags and files can ask for anything.
pub fn compact_config(
    vocab: usize,
    layers: usize,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
) -> Result<LlamaConfig> {
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
    let cfg = LlamaConfig::compact(vocab, layers, hidden, heads, kv_heads);
    check_new_shape(&cfg)?;
    Ok(cfg)
}

/// Checks the shape of a model about to be created, before any weight is allocated: every size
/// at least 1, heads dividing the width into an even head size, key/value heads dividing the
/// heads, and at most [`MAX_NEW_PARAMS`] parameters. Errors name the parameter (`layers`,
/// `hidden`, `heads`, `kv_heads`).
pub fn check_new_shape(cfg: &LlamaConfig) -> Result<()> {
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
    if params > MAX_NEW_PARAMS as u128 {
        return Err(Error::invalid(
            "model shape",
            format!(
                "{layers} layers of width {hidden} over {} tokens make {params} parameters, \
                 more than the {MAX_NEW_PARAMS} a model made here may have",
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

fn random_weights(
    cfg: &LlamaConfig,
    std: f32,
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let normal =
        Normal::new(0.0f32, std).map_err(|e| Error::invalid("std", format!("{std}: {e}")))?;
    let h = cfg.hidden_size;
    let hd = cfg.head_dim();
    let mut shapes: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![cfg.vocab_size, h])];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        shapes.push((
            format!("{p}.self_attn.q_proj.weight"),
            vec![cfg.num_attention_heads * hd, h],
        ));
        shapes.push((
            format!("{p}.self_attn.k_proj.weight"),
            vec![cfg.kv_heads() * hd, h],
        ));
        shapes.push((
            format!("{p}.self_attn.v_proj.weight"),
            vec![cfg.kv_heads() * hd, h],
        ));
        shapes.push((
            format!("{p}.self_attn.o_proj.weight"),
            vec![h, cfg.num_attention_heads * hd],
        ));
        shapes.push((
            format!("{p}.mlp.gate_proj.weight"),
            vec![cfg.intermediate_size, h],
        ));
        shapes.push((
            format!("{p}.mlp.up_proj.weight"),
            vec![cfg.intermediate_size, h],
        ));
        shapes.push((
            format!("{p}.mlp.down_proj.weight"),
            vec![h, cfg.intermediate_size],
        ));
        shapes.push((format!("{p}.input_layernorm.weight"), vec![h]));
        shapes.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
    }
    shapes.push(("model.norm.weight".into(), vec![h]));
    if !cfg.tie_word_embeddings {
        shapes.push(("lm_head.weight".into(), vec![cfg.vocab_size, h]));
    }
    let mut out = HashMap::new();
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else {
            (0..n).map(|_| normal.sample(&mut rng)).collect()
        };
        out.insert(name, Tensor::from_vec(data, shape, device)?);
    }
    Ok(out)
}
