//! The decoder: RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention; LLaMA, and the
//! Qwen2 (bias on q, k, v) and Qwen3 (RMSNorm on each head of q and k) variants of it.
//!
//! Unlike candle-transformers' llama, the caller passes explicit position ids and an explicit
//! additive mask (tree attention needs both), asks for logits at chosen rows only, and owns the
//! [`KvCache`]. The same weights run two ways: the fused inference kernels (no autograd) and a
//! differentiable path built from plain ops for training.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};
use candle_transformers::utils::repeat_kv;

use super::cache::KvCache;
use super::config::ModelConfig;

#[derive(Clone, Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// Qwen3: RMSNorm weights over each head of q and k, applied before the rotary embedding.
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    eps: f32,
    /// q, k and v stacked into one projection for inference (see [`Llama::fuse_projections`]).
    qkv: Option<Linear>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

#[derive(Clone, Debug)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
    /// gate and up stacked for inference.
    gate_up: Option<Linear>,
}

#[derive(Clone, Debug)]
struct Block {
    attn: Attention,
    mlp: Mlp,
    norm_in: Tensor,
    norm_post: Tensor,
}

/// Rotary tables gathered for one pass's position ids.
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

/// The decoder's weights. Cheap to clone (tensors are reference counted).
#[derive(Clone, Debug)]
pub struct Llama {
    cfg: ModelConfig,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Linear,
    /// The rotary frequencies 1 / theta^(2i / head_dim), shaped [1, head_dim / 2].
    inv_freq: Tensor,
    dtype: DType,
    device: Device,
}

fn linear(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Linear> {
    linear_b(vb, in_dim, out_dim, false)
}

fn linear_b(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
    let w = vb.get((out_dim, in_dim), "weight")?;
    let b = if bias {
        Some(vb.get(out_dim, "bias")?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

impl Llama {
    /// Builds the decoder from tensors named as in Hugging Face's `LlamaForCausalLM`,
    /// `Qwen2ForCausalLM` or `Qwen3ForCausalLM`.
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        let hd = cfg.head_dim();
        let m = vb.pp("model");
        let embed_w = m.get((cfg.vocab_size, h), "embed_tokens.weight")?;
        let embed = Embedding::new(embed_w.clone(), h);
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let b = m.pp(format!("layers.{i}"));
            let a = b.pp("self_attn");
            let (qkv_bias, o_bias) = (cfg.qkv_bias(), cfg.o_bias());
            let norm = |name: &str| -> Result<Option<Tensor>> {
                cfg.qk_norm().then(|| a.get(hd, name)).transpose()
            };
            let attn = Attention {
                q: linear_b(a.pp("q_proj"), h, cfg.num_attention_heads * hd, qkv_bias)?,
                k: linear_b(a.pp("k_proj"), h, cfg.kv_heads() * hd, qkv_bias)?,
                v: linear_b(a.pp("v_proj"), h, cfg.kv_heads() * hd, qkv_bias)?,
                o: linear_b(a.pp("o_proj"), cfg.num_attention_heads * hd, h, o_bias)?,
                q_norm: norm("q_norm.weight")?,
                k_norm: norm("k_norm.weight")?,
                eps: cfg.rms_norm_eps as f32,
                qkv: None,
                heads: cfg.num_attention_heads,
                kv_heads: cfg.kv_heads(),
                head_dim: hd,
            };
            let p = b.pp("mlp");
            let mlp = Mlp {
                gate: linear(p.pp("gate_proj"), h, cfg.intermediate_size)?,
                up: linear(p.pp("up_proj"), h, cfg.intermediate_size)?,
                down: linear(p.pp("down_proj"), cfg.intermediate_size, h)?,
                gate_up: None,
            };
            blocks.push(Block {
                attn,
                mlp,
                norm_in: b.get(h, "input_layernorm.weight")?,
                norm_post: b.get(h, "post_attention_layernorm.weight")?,
            });
        }
        let norm = m.get(h, "norm.weight")?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::new(embed_w, None)
        } else {
            linear(vb.pp("lm_head"), h, cfg.vocab_size)?
        };
        let inv_freq = inv_freq(cfg, vb.device())?;
        Ok(Llama {
            cfg: cfg.clone(),
            embed,
            blocks,
            norm,
            lm_head,
            inv_freq,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Stacks q/k/v and gate/up into single projections used by the inference path: two matrix
    /// products per layer instead of five, and fewer copies (on a GPU, where small models are
    /// bound by kernel launches, fewer launches per pass). Only for frozen weights: the stacked
    /// copies would not follow optimizer updates, so training keeps the separate projections.
    ///
    /// The separate projections become views into the stacked ones, so the weights are held once
    /// (a 7B model stays 13.5 GB in bf16) and saving still finds every tensor by name.
    pub fn fuse_projections(&mut self) -> Result<()> {
        for b in &mut self.blocks {
            let a = &mut b.attn;
            let parts = [a.q.clone(), a.k.clone(), a.v.clone()];
            let fused = stack(&parts)?;
            [a.q, a.k, a.v] = unstack(&fused, &parts)?;
            a.qkv = Some(fused);
            let m = &mut b.mlp;
            let parts = [m.gate.clone(), m.up.clone()];
            let fused = stack(&parts)?;
            [m.gate, m.up] = unstack(&fused, &parts)?;
            m.gate_up = Some(fused);
        }
        Ok(())
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Gathers the rotary tables for position ids shaped [batch, seq].
    ///
    /// Computed for the pass's positions only (no table sized by max_position_embeddings):
    /// angle = position * inv_freq in f32, as transformers computes it.
    pub fn rotary(&self, positions: &Tensor) -> Result<Rotary> {
        let (b, t) = positions.dims2()?;
        let half = self.cfg.head_dim() / 2;
        let angles = positions
            .flatten_all()?
            .to_dtype(DType::F32)?
            .reshape((b * t, 1))?
            .broadcast_mul(&self.inv_freq)?;
        let cos = angles.cos()?.reshape((b, t, half))?;
        let sin = angles.sin()?.reshape((b, t, half))?;
        Ok(Rotary { cos, sin })
    }

    /// Runs the blocks and the final norm: hidden states [batch, seq, hidden].
    ///
    /// `mask` is additive, shaped [batch or 1, seq, cached + seq]; `cache`, when given, supplies
    /// the earlier entries and receives this pass's keys and values. `differentiable` selects the
    /// plain-op path that autograd can follow (training) instead of the fused kernels.
    pub fn hidden(
        &self,
        tokens: &Tensor,
        rotary: &Rotary,
        mask: &Tensor,
        mut cache: Option<&mut KvCache>,
        differentiable: bool,
    ) -> Result<Tensor> {
        let mask = mask.to_dtype(self.dtype)?.unsqueeze(1)?;
        let eps = self.cfg.rms_norm_eps as f32;
        let mut x = self.embed.forward(tokens)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let residual = &x;
            let h = rms_norm(&x, &block.norm_in, eps, differentiable)?;
            let h =
                block
                    .attn
                    .forward(&h, rotary, &mask, cache.as_deref_mut(), i, differentiable)?;
            let x1 = (residual + h)?;
            let h = rms_norm(&x1, &block.norm_post, eps, differentiable)?;
            let h = block.mlp.forward(&h, differentiable)?;
            x = (x1 + h)?;
        }
        rms_norm(&x, &self.norm, eps, differentiable)
    }

    /// Projects hidden states to vocabulary logits (always f32, whatever the weights' dtype).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)?.to_dtype(DType::F32)
    }

    /// Named weights in Hugging Face layout, for saving.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            self.embed.embeddings().clone(),
        )];
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let a = &b.attn;
            for (n, l) in [
                ("q_proj", &a.q),
                ("k_proj", &a.k),
                ("v_proj", &a.v),
                ("o_proj", &a.o),
            ] {
                out.push((format!("{p}.self_attn.{n}.weight"), l.weight().clone()));
                if let Some(bias) = l.bias() {
                    out.push((format!("{p}.self_attn.{n}.bias"), bias.clone()));
                }
            }
            for (n, w) in [("q_norm", &a.q_norm), ("k_norm", &a.k_norm)] {
                if let Some(w) = w {
                    out.push((format!("{p}.self_attn.{n}.weight"), w.clone()));
                }
            }
            let m = &b.mlp;
            for (n, l) in [
                ("gate_proj", &m.gate),
                ("up_proj", &m.up),
                ("down_proj", &m.down),
            ] {
                out.push((format!("{p}.mlp.{n}.weight"), l.weight().clone()));
            }
            out.push((format!("{p}.input_layernorm.weight"), b.norm_in.clone()));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                b.norm_post.clone(),
            ));
        }
        out.push(("model.norm.weight".into(), self.norm.clone()));
        if !self.cfg.tie_word_embeddings {
            out.push(("lm_head.weight".into(), self.lm_head.weight().clone()));
        }
        out
    }
}

/// Stacks linear layers along their outputs (weights and biases): one product for all of them.
fn stack(parts: &[Linear]) -> Result<Linear> {
    let w: Vec<&Tensor> = parts.iter().map(|l| l.weight()).collect();
    let w = Tensor::cat(&w, 0)?;
    let b = match parts.iter().map(|l| l.bias()).collect::<Option<Vec<_>>>() {
        Some(b) => Some(Tensor::cat(&b, 0)?),
        None => None,
    };
    Ok(Linear::new(w, b))
}

/// The layers of [`stack`] again, as views into the stacked weights (no copies).
fn unstack<const N: usize>(fused: &Linear, parts: &[Linear; N]) -> Result<[Linear; N]> {
    let mut at = 0;
    let mut out = Vec::with_capacity(N);
    for l in parts {
        let rows = l.weight().dim(0)?;
        let w = fused.weight().narrow(0, at, rows)?;
        let b = match fused.bias() {
            Some(b) => Some(b.narrow(0, at, rows)?),
            None => None,
        };
        out.push(Linear::new(w, b));
        at += rows;
    }
    Ok(out.try_into().expect("one view per part"))
}

fn inv_freq(cfg: &ModelConfig, device: &Device) -> Result<Tensor> {
    let half = cfg.head_dim() / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / (cfg.rope_theta as f32).powf(2.0 * i as f32 / cfg.head_dim() as f32))
        .collect();
    Tensor::from_vec(inv, (1, half), device)
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f32, differentiable: bool) -> Result<Tensor> {
    if differentiable {
        candle_nn::ops::rms_norm_slow(x, w, eps)
    } else {
        candle_nn::ops::rms_norm(x, w, eps)
    }
}

/// Rotary embedding (Hugging Face's rotate-half layout) for x [b, heads, t, d].
fn apply_rope(x: &Tensor, r: &Rotary, differentiable: bool) -> Result<Tensor> {
    let dtype = x.dtype();
    let (cos, sin) = (r.cos.to_dtype(dtype)?, r.sin.to_dtype(dtype)?);
    if !differentiable {
        return candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin);
    }
    let cos = Tensor::cat(&[&cos, &cos], D::Minus1)?.unsqueeze(1)?;
    let sin = Tensor::cat(&[&sin, &sin], D::Minus1)?.unsqueeze(1)?;
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        mask: &Tensor,
        cache: Option<&mut KvCache>,
        layer: usize,
        differentiable: bool,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (q, k, v) = match (&self.qkv, differentiable) {
            (Some(qkv), false) => {
                // One product, one layout copy: [b, t, heads + 2 kv, d] -> [b, heads + 2 kv, t, d].
                let all = qkv
                    .forward(x)?
                    .reshape((b, t, self.heads + 2 * self.kv_heads, self.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()?;
                let part = |from: usize, n: usize| all.narrow(1, from, n)?.contiguous();
                (
                    part(0, self.heads)?,
                    part(self.heads, self.kv_heads)?,
                    part(self.heads + self.kv_heads, self.kv_heads)?,
                )
            }
            _ => {
                let split = |l: &Linear, heads: usize| -> Result<Tensor> {
                    l.forward(x)?
                        .reshape((b, t, heads, self.head_dim))?
                        .transpose(1, 2)?
                        .contiguous()
                };
                (
                    split(&self.q, self.heads)?,
                    split(&self.k, self.kv_heads)?,
                    split(&self.v, self.kv_heads)?,
                )
            }
        };
        // Qwen3 normalises every head of q and k (over head_dim) before rotating them.
        let (q, k) = match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => (
                rms_norm(&q, qn, self.eps, differentiable)?,
                rms_norm(&k, kn, self.eps, differentiable)?,
            ),
            _ => (q, k),
        };
        let q = apply_rope(&q, rotary, differentiable)?;
        let k = apply_rope(&k, rotary, differentiable)?;
        let (k, v) = match cache {
            Some(c) => c.extend(layer, k, v)?,
            None => (k, v),
        };
        let rep = self.heads / self.kv_heads;
        let k = repeat_kv(k, rep)?.contiguous()?;
        let v = repeat_kv(v, rep)?.contiguous()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?;
        let probs = if differentiable {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, ()))?;
        self.o.forward(&out)
    }
}

impl Mlp {
    fn forward(&self, x: &Tensor, differentiable: bool) -> Result<Tensor> {
        let (g, u) = match (&self.gate_up, differentiable) {
            (Some(gu), false) => {
                let both = gu.forward(x)?;
                let i = both.dim(D::Minus1)? / 2;
                (both.narrow(D::Minus1, 0, i)?, both.narrow(D::Minus1, i, i)?)
            }
            _ => (self.gate.forward(x)?, self.up.forward(x)?),
        };
        self.down.forward(&(candle_nn::ops::silu(&g)? * u)?)
    }
}
