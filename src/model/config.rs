//! `config.json` of a Hugging Face decoder checkpoint (LLaMA, Qwen2, Qwen3), plus the few fields
//! this project adds so a compact-prompt model carries its own special token ids.
//!
//! Reading is strict where a silent default would compute something else than the checkpoint's
//! authors did: an architecture, an activation, a rope type or an attention variant this decoder
//! does not implement is an error naming the field, and every size is bounded before anything is
//! allocated from it. Fields that do not change the computation (dropout, initializer range,
//! `use_cache`...) are ignored.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{BOS, EOS, PAD, SEP};

/// The decoder families this project runs. They share one tree-attention decoder and differ in
/// a few switches (see [`ModelConfig::qkv_bias`] and [`ModelConfig::qk_norm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// LLaMA (and LC-Rec / the reference's LLaMA-7B recommenders).
    Llama,
    /// Qwen2 / Qwen2.5: bias on the q, k and v projections.
    Qwen2,
    /// Qwen3: RMSNorm on every head of q and k before the rotary embedding; explicit head_dim.
    Qwen3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    /// From `model_type`, else from `architectures`.
    fn detect(model_type: Option<&str>, architectures: &[String]) -> Result<Arch, String> {
        let from_type = |t: &str| match t {
            "llama" => Some(Arch::Llama),
            "qwen2" => Some(Arch::Qwen2),
            "qwen3" => Some(Arch::Qwen3),
            _ => None,
        };
        let from_class = |c: &str| match c {
            "LlamaForCausalLM" => Some(Arch::Llama),
            "Qwen2ForCausalLM" => Some(Arch::Qwen2),
            "Qwen3ForCausalLM" => Some(Arch::Qwen3),
            _ => None,
        };
        if let Some(t) = model_type {
            return from_type(t)
                .ok_or_else(|| format!("model_type {t:?} is not supported (llama, qwen2, qwen3)"));
        }
        match architectures.first() {
            None => Ok(Arch::Llama),
            Some(c) => from_class(c).ok_or_else(|| {
                format!(
                    "architectures {c:?} is not supported (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)"
                )
            }),
        }
    }
}

/// Largest sizes a config may declare. Far above any model this runs (LLaMA-70B has 80 layers,
/// hidden 8192; Qwen2 has a 152k vocabulary), low enough that nothing sized from them can
/// exhaust memory before the weights themselves are checked.
pub const MAX_LAYERS: usize = 1024;
pub const MAX_HIDDEN: usize = 1 << 16;
pub const MAX_VOCAB: usize = 1 << 22;
pub const MAX_HEADS: usize = 1024;
pub const MAX_POSITIONS: usize = 1 << 24;

/// A decoder's configuration. Serialises to a Hugging Face `config.json` that transformers loads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    #[serde(default = "default_arch")]
    pub architectures: Vec<String>,
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one attention head; `hidden_size / num_attention_heads` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Bias on the attention projections (LLaMA: q, k, v and o; Qwen3: q, k, v). Qwen2 always
    /// has q, k, v bias.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attention_bias: bool,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Separator between history and generated identifier in the compact prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sep_token_id: Option<u32>,
    #[serde(default = "default_dtype")]
    pub torch_dtype: String,
    /// "compact" (this project's models) or "reference" (instruction template through an LLM
    /// tokenizer). Absent in checkpoints made elsewhere: the style is then detected from the
    /// tokenizer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_style: Option<String>,
}

fn default_arch() -> Vec<String> {
    vec![Arch::Llama.class().into()]
}
fn default_model_type() -> String {
    Arch::Llama.name().into()
}
fn default_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_max_pos() -> usize {
    512
}
fn default_dtype() -> String {
    "float32".into()
}

impl ModelConfig {
    /// A compact-prompt LLaMA config for a vocabulary of `vocab_size` tokens.
    pub fn compact(
        vocab_size: usize,
        layers: usize,
        hidden: usize,
        heads: usize,
        kv_heads: usize,
    ) -> Self {
        ModelConfig {
            architectures: default_arch(),
            model_type: default_model_type(),
            vocab_size,
            hidden_size: hidden,
            // SwiGLU's usual 8/3 expansion, rounded to a multiple of 32.
            intermediate_size: (hidden * 8 / 3).div_ceil(32) * 32,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv_heads),
            head_dim: None,
            attention_bias: false,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            max_position_embeddings: 512,
            tie_word_embeddings: false,
            bos_token_id: Some(BOS),
            eos_token_id: Some(EOS),
            pad_token_id: Some(PAD),
            sep_token_id: Some(SEP),
            torch_dtype: "float32".into(),
            prompt_style: Some("compact".into()),
        }
    }

    /// Reads a Hugging Face `config.json`: field aliases across transformers versions
    /// (`rope_theta` at the top level or in `rope_parameters` / `rope_scaling`, `dtype` or
    /// `torch_dtype`, token ids as numbers or lists), and an error naming the field for anything
    /// this decoder would compute differently.
    pub fn from_json(v: &Value) -> Result<ModelConfig, String> {
        let obj = v.as_object().ok_or("config.json must be a JSON object")?;
        let field = |name: &str| obj.get(name).filter(|x| !x.is_null());
        let architectures: Vec<String> = match field("architectures") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(String::from)
                        .ok_or("architectures must list strings")
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("architectures must be a list".into()),
        };
        let model_type = match field("model_type") {
            None => None,
            Some(x) => Some(x.as_str().ok_or("model_type must be a string")?),
        };
        let arch = Arch::detect(model_type, &architectures)?;
        let size = |name: &str, max: usize| -> Result<usize, String> {
            let x = field(name).ok_or_else(|| format!("{name} is missing"))?;
            let n = x
                .as_u64()
                .ok_or_else(|| format!("{name} must be a non-negative integer, not {x}"))?;
            if n == 0 || n > max as u64 {
                return Err(format!("{name} = {n} is out of range (1..={max})"));
            }
            Ok(n as usize)
        };
        let opt_size = |name: &str, max: usize| -> Result<Option<usize>, String> {
            match field(name) {
                None => Ok(None),
                Some(_) => size(name, max).map(Some),
            }
        };
        let flag = |name: &str| -> Result<bool, String> {
            match field(name) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(x) => Err(format!("{name} must be true or false, not {x}")),
            }
        };
        let float = |name: &str, default: f64| -> Result<f64, String> {
            match field(name) {
                None => Ok(default),
                Some(x) => x
                    .as_f64()
                    .filter(|f| f.is_finite() && *f > 0.0)
                    .ok_or_else(|| format!("{name} must be a positive number, not {x}")),
            }
        };
        // Special token ids are informative only (decoding generates exactly the identifier's
        // tokens and never stops on one), so an odd value, such as the -1 of old LLaMA-1
        // configs, is ignored rather than refused. Lists (several end tokens) give their first.
        let token = |name: &str| -> Result<Option<u32>, String> {
            let id = match field(name) {
                Some(Value::Array(a)) => a.first().cloned(),
                other => other.cloned(),
            };
            Ok(id
                .and_then(|v| v.as_u64())
                .filter(|&n| n < MAX_VOCAB as u64)
                .map(|n| n as u32))
        };

        // What this decoder does not implement is refused, not approximated.
        if let Some(act) = field("hidden_act").or_else(|| field("hidden_activation")) {
            if act.as_str() != Some("silu") {
                return Err(format!(
                    "hidden_act {act} is not supported (SwiGLU with silu only)"
                ));
            }
        }
        if flag("mlp_bias")? {
            return Err("mlp_bias = true is not supported".into());
        }
        if flag("use_sliding_window")? {
            return Err("use_sliding_window = true is not supported (full attention only)".into());
        }
        if let Some(Value::Array(types)) = field("layer_types") {
            if let Some(t) = types.iter().find(|t| t.as_str() != Some("full_attention")) {
                return Err(format!(
                    "layer_types contains {t}: only full_attention layers are supported"
                ));
            }
        }
        let rope_theta = rope_theta(obj)?;

        let hidden_size = size("hidden_size", MAX_HIDDEN)?;
        let num_attention_heads = size("num_attention_heads", MAX_HEADS)?;
        let torch_dtype = match field("torch_dtype").or_else(|| field("dtype")) {
            None => default_dtype(),
            Some(x) => x
                .as_str()
                .ok_or_else(|| format!("dtype must be a string, not {x}"))?
                .to_string(),
        };
        let prompt_style = match field("prompt_style") {
            None => None,
            Some(x) => Some(
                x.as_str()
                    .ok_or_else(|| format!("prompt_style must be a string, not {x}"))?
                    .to_string(),
            ),
        };
        let cfg = ModelConfig {
            architectures: if architectures.is_empty() {
                vec![arch.class().into()]
            } else {
                architectures
            },
            model_type: arch.name().into(),
            vocab_size: size("vocab_size", MAX_VOCAB)?,
            hidden_size,
            intermediate_size: size("intermediate_size", MAX_HIDDEN * 16)?,
            num_hidden_layers: size("num_hidden_layers", MAX_LAYERS)?,
            num_attention_heads,
            num_key_value_heads: opt_size("num_key_value_heads", MAX_HEADS)?,
            head_dim: opt_size("head_dim", MAX_HIDDEN)?,
            attention_bias: flag("attention_bias")?,
            rms_norm_eps: float("rms_norm_eps", default_eps())?,
            rope_theta,
            // Transformers' defaults when the field is absent: LLaMA 2048, Qwen 32768.
            max_position_embeddings: opt_size("max_position_embeddings", MAX_POSITIONS)?.unwrap_or(
                match arch {
                    Arch::Llama => 2048,
                    Arch::Qwen2 | Arch::Qwen3 => 32768,
                },
            ),
            tie_word_embeddings: flag("tie_word_embeddings")?,
            bos_token_id: token("bos_token_id")?,
            eos_token_id: token("eos_token_id")?,
            pad_token_id: token("pad_token_id")?,
            sep_token_id: token("sep_token_id")?,
            torch_dtype,
            prompt_style,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn arch(&self) -> Arch {
        Arch::detect(Some(&self.model_type), &self.architectures).unwrap_or(Arch::Llama)
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether q, k and v carry a bias (Qwen2 always; LLaMA and Qwen3 when `attention_bias`).
    pub fn qkv_bias(&self) -> bool {
        self.arch() == Arch::Qwen2 || self.attention_bias
    }

    /// Whether o carries a bias (LLaMA and Qwen3 with `attention_bias`, as transformers builds
    /// them; never in Qwen2).
    pub fn o_bias(&self) -> bool {
        self.arch() != Arch::Qwen2 && self.attention_bias
    }

    /// Whether each head of q and k goes through its own RMSNorm before the rotary embedding.
    pub fn qk_norm(&self) -> bool {
        self.arch() == Arch::Qwen3
    }

    /// Checks the shape constraints the forward pass relies on, and the size bounds.
    pub fn validate(&self) -> Result<(), String> {
        let bounded = [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_HIDDEN),
            ("intermediate_size", self.intermediate_size, MAX_HIDDEN * 16),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, MAX_HEADS),
            ("num_key_value_heads", self.kv_heads(), MAX_HEADS),
            ("head_dim", self.head_dim(), MAX_HIDDEN),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_POSITIONS,
            ),
        ];
        for (name, v, max) in bounded {
            if v == 0 || v > max {
                return Err(format!("{name} = {v} is out of range (1..={max})"));
            }
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {} (and no head_dim is given)",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!("head dimension {} must be even", self.head_dim()));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!(
                "rms_norm_eps {} must be positive",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!("rope_theta {} must be positive", self.rope_theta));
        }
        if let Some(s) = &self.prompt_style {
            if s != "compact" && s != "reference" {
                return Err(format!("prompt_style {s:?} is not compact or reference"));
            }
        }
        Ok(())
    }
}

/// The rotary base: `rope_theta` at the top level (transformers 4), or inside `rope_parameters`
/// (transformers 5) or `rope_scaling`. Only the default rotary embedding is implemented; a
/// scaled one (linear, dynamic, yarn, llama3...) is an error naming its type.
fn rope_theta(obj: &serde_json::Map<String, Value>) -> Result<f64, String> {
    let number = |key: &str, v: &Value| -> Result<Option<f64>, String> {
        match v {
            Value::Null => Ok(None),
            v => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("{key} must be a number, not {v}")),
        }
    };
    let mut theta = match obj.get("rope_theta") {
        Some(v) => number("rope_theta", v)?,
        None => None,
    };
    for key in ["rope_parameters", "rope_scaling"] {
        let Some(p) = obj.get(key).filter(|x| !x.is_null()) else {
            continue;
        };
        let p = p
            .as_object()
            .ok_or_else(|| format!("{key} must be an object"))?;
        let kind = p
            .get("rope_type")
            .or_else(|| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if kind != "default" {
            return Err(format!(
                "{key}.rope_type {kind:?} is not supported (only the default rotary embedding)"
            ));
        }
        if let Some(t) = p.get("rope_theta") {
            theta = number(&format!("{key}.rope_theta"), t)?.or(theta);
        }
    }
    let t = theta.unwrap_or_else(default_rope_theta);
    if !(t.is_finite() && t > 0.0) {
        return Err(format!("rope_theta {t} must be a positive number"));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_type": "llama", "vocab_size": 10, "hidden_size": 8,
            "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2})
    }

    fn with(key: &str, v: Value) -> Value {
        let mut b = base();
        b[key] = v;
        b
    }

    #[test]
    fn reads_transformers_4_and_5_forms() {
        let c = ModelConfig::from_json(&base()).unwrap();
        assert_eq!((c.kv_heads(), c.head_dim(), c.rope_theta), (2, 4, 10_000.0));
        assert_eq!(c.prompt_style, None);
        let c = ModelConfig::from_json(&with(
            "rope_parameters",
            json!({"rope_type": "default", "rope_theta": 1e6}),
        ))
        .unwrap();
        assert_eq!(c.rope_theta, 1e6);
        let c = ModelConfig::from_json(&with("rope_theta", json!(5e5))).unwrap();
        assert_eq!(c.rope_theta, 5e5);
        let c = ModelConfig::from_json(&with("eos_token_id", json!([7, 9]))).unwrap();
        assert_eq!(c.eos_token_id, Some(7));
        // LLaMA-1's pad -1 is not an id, and not a reason to refuse the model.
        let c = ModelConfig::from_json(&with("pad_token_id", json!(-1))).unwrap();
        assert_eq!(c.pad_token_id, None);
        assert_eq!(c.max_position_embeddings, 2048);
        let mut q = with("model_type", json!("qwen3"));
        q["head_dim"] = json!(6);
        let c = ModelConfig::from_json(&q).unwrap();
        assert_eq!(
            (c.arch(), c.head_dim(), c.qk_norm()),
            (Arch::Qwen3, 6, true)
        );
        let c = ModelConfig::from_json(&with("model_type", json!("qwen2"))).unwrap();
        assert!(c.qkv_bias() && !c.o_bias());
    }

    #[test]
    fn refuses_what_it_would_compute_differently() {
        let err = |v: Value| ModelConfig::from_json(&v).unwrap_err();
        assert!(err(with("model_type", json!("gpt2"))).contains("model_type \"gpt2\""));
        assert!(err(with(
            "rope_scaling",
            json!({"rope_type": "llama3", "factor": 8.0})
        ))
        .contains("rope_scaling.rope_type \"llama3\""));
        assert!(err(with("hidden_act", json!("gelu"))).contains("hidden_act"));
        assert!(err(with("use_sliding_window", json!(true))).contains("use_sliding_window"));
        assert!(err(with("num_hidden_layers", json!(1_000_000_000)))
            .contains("num_hidden_layers = 1000000000 is out of range"));
        assert!(
            err(with("max_position_embeddings", json!(1e12))).contains("max_position_embeddings")
        );
        assert!(err(with("hidden_size", json!(0))).contains("hidden_size = 0"));
        assert!(err(with("hidden_size", json!(-3))).contains("hidden_size must be"));
        assert!(err(with("vocab_size", json!("big"))).contains("vocab_size must be"));
        assert!(err(json!([1, 2])).contains("JSON object"));
        assert!(err(with("rope_theta", json!("abc"))).contains("rope_theta must be a number"));
    }
}
