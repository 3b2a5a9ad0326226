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

    /// Writes the checkpoint folder (config.json, model.safetensors, tokenizer.json).
    pub fn save(&self, dir: &Path, dtype: DType) -> Result<()> {
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
    let normal = Normal::new(0.0f32, std.max(1e-6)).expect("valid normal");
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
