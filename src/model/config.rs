//! `config.json` of a Hugging Face LLaMA checkpoint, plus the few fields this project adds so a
//! compact-prompt model carries its own special token ids.

use serde::{Deserialize, Serialize};

use crate::ids::{BOS, EOS, PAD, SEP};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
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
    #[serde(default)]
    pub sep_token_id: Option<u32>,
    #[serde(default = "default_dtype")]
    pub torch_dtype: String,
    /// "compact" (this project's models) or "reference" (instruction template, LLaMA tokenizer).
    #[serde(default = "default_prompt_style")]
    pub prompt_style: String,
}

fn default_arch() -> Vec<String> {
    vec!["LlamaForCausalLM".into()]
}
fn default_model_type() -> String {
    "llama".into()
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
fn default_prompt_style() -> String {
    "compact".into()
}

impl LlamaConfig {
    /// A compact-prompt config for a vocabulary of `vocab_size` tokens.
    pub fn compact(
        vocab_size: usize,
        layers: usize,
        hidden: usize,
        heads: usize,
        kv_heads: usize,
    ) -> Self {
        LlamaConfig {
            architectures: default_arch(),
            model_type: default_model_type(),
            vocab_size,
            hidden_size: hidden,
            // SwiGLU's usual 8/3 expansion, rounded to a multiple of 32.
            intermediate_size: (hidden * 8 / 3).div_ceil(32) * 32,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv_heads),
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            max_position_embeddings: 512,
            tie_word_embeddings: false,
            bos_token_id: Some(BOS),
            eos_token_id: Some(EOS),
            pad_token_id: Some(PAD),
            sep_token_id: Some(SEP),
            torch_dtype: "float32".into(),
            prompt_style: default_prompt_style(),
        }
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks the shape constraints the forward pass relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.kv_heads() == 0 || !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!("head dimension {} must be even", self.head_dim()));
        }
        if self.num_hidden_layers == 0 || self.vocab_size == 0 {
            return Err("num_hidden_layers and vocab_size must be positive".into());
        }
        Ok(())
    }
}
