//! What `atspeed inspect` says about a checkpoint or an adapter folder, read from its config,
//! tokenizer and safetensors headers only: a 7B model is described without loading 13 GB.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::DType;
use safetensors::SafeTensors;

use super::config::ModelConfig;
use super::lora::{self, Adapter, AdapterInfo};
use super::tokenizer::{detect_style, ModelTokenizer, PromptStyle, TokenizerKind, TokenizerRules};
use super::{checkpoint, weights};
use crate::ids::vocab::parse_code_token;
use crate::{Error, Result};

pub struct CheckpointSummary {
    pub dir: PathBuf,
    /// The base checkpoint when `dir` is an adapter.
    pub base: Option<PathBuf>,
    pub config: ModelConfig,
    pub params: usize,
    pub stored: DType,
    pub tokenizer: TokenizerKind,
    pub tokens: usize,
    /// Item code tokens (`<a_12>`) per identifier level, and their id range.
    pub codes_per_level: Vec<usize>,
    pub code_ids: Option<(u32, u32)>,
    pub style: PromptStyle,
    /// Whether the style was declared in config.json (else detected from the tokenizer).
    pub style_declared: bool,
    pub adapter: Option<AdapterInfo>,
    /// Embedding rows an adapter saves (LC-Rec's resized vocabulary), if any.
    pub adapter_rows: Option<usize>,
    /// The tokenizer as loaded, and the folder it came from.
    pub loaded_tokenizer: ModelTokenizer,
    pub tokenizer_dir: PathBuf,
}

impl CheckpointSummary {
    /// What a token space needs of the checkpoint, without its weights.
    pub fn view(&self) -> crate::space::ModelView<'_> {
        crate::space::ModelView {
            path: &self.dir,
            config: &self.config,
            tokenizer: &self.loaded_tokenizer,
            tokenizer_dir: Some(&self.tokenizer_dir),
            style: self.style,
        }
    }
}

/// Describes the checkpoint (or adapter over `base`) in `dir`, and checks everything a load
/// would check except the weights' values: the config, the tokenizer against the embedding, the
/// tensor shapes in the headers against the config, and an adapter against its base.
/// `rules` chooses how the tokenizer files load (transformers 5 when `None`).
pub fn summarize(
    dir: &Path,
    base: Option<&Path>,
    rules: Option<TokenizerRules>,
) -> Result<CheckpointSummary> {
    let adapter = if lora::is_adapter(dir) {
        Some(Adapter::load(dir)?)
    } else {
        None
    };
    let ckpt = match &adapter {
        None => dir.to_path_buf(),
        Some(a) => base
            .map(Path::to_path_buf)
            .or_else(|| a.local_base())
            .ok_or_else(|| {
                Error::invalid(
                    "base",
                    format!(
                        "{} is a LoRA adapter for base {:?}, which is not a local folder: give the base checkpoint's folder",
                        dir.display(),
                        a.info.base_name
                    ),
                )
            })?,
    };
    let mut config = checkpoint::read_config(&ckpt)?;
    let tok_dir = match &adapter {
        Some(a) if a.info.dir.join(checkpoint::TOKENIZER).is_file() => a.info.dir.clone(),
        _ => ckpt.clone(),
    };
    let tok = checkpoint::read_tokenizer_as(
        &tok_dir,
        Some(&config.model_type),
        rules.unwrap_or_default(),
    )?;
    let mut found: HashMap<String, Vec<usize>> = HashMap::new();
    for file in weights::weight_files(&ckpt)? {
        let bytes = std::fs::File::open(&file).map_err(|e| Error::io(&file, e))?;
        // SAFETY: read-only mapping used for the header only (see weights::map_file).
        let map = unsafe { memmap2::Mmap::map(&bytes) }.map_err(|e| Error::io(&file, e))?;
        let st = SafeTensors::deserialize(&map)
            .map_err(|e| Error::model(&file, format!("corrupt safetensors: {e}")))?;
        for (name, v) in st.tensors() {
            found.insert(name, v.shape().to_vec());
        }
    }
    if adapter.is_none() {
        check_tokenizer_fits(&config, &tok, &tok_dir, false)?;
    }
    // The headers must hold what config.json implies (the weights themselves are not read).
    let expected = super::tensor_shapes(&config);
    for (name, shape) in &expected {
        match found.get(name) {
            Some(s) if s == shape => {}
            Some(s) => {
                return Err(Error::model(
                    &ckpt,
                    format!(
                    "weights do not fit config.json: {name} is {s:?}, the config implies {shape:?}"
                ),
                ))
            }
            None => {
                return Err(Error::model(
                    &ckpt,
                    format!("weights do not fit config.json: no tensor {name}"),
                ))
            }
        }
    }
    if let Some(a) = &adapter {
        let plan = a.plan(&ckpt, config.tie_word_embeddings, &|n| {
            found.get(n).cloned()
        })?;
        if let Some(v) = plan.vocab {
            config.vocab_size = v;
        }
        if plan.untie {
            config.tie_word_embeddings = false;
        }
    }
    let style = check_tokenizer_fits(&config, &tok, &tok_dir, adapter.is_some())?;
    let tokens = tok.vocab().len();
    let params = super::tensor_shapes(&config)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let mut codes_per_level: Vec<usize> = Vec::new();
    let mut lo_hi: Option<(u32, u32)> = None;
    for (id, t) in tok.vocab().iter().enumerate() {
        if let Some((level, _)) = parse_code_token(t) {
            if codes_per_level.len() <= level {
                codes_per_level.resize(level + 1, 0);
            }
            codes_per_level[level] += 1;
            let id = id as u32;
            lo_hi = Some(lo_hi.map_or((id, id), |(a, b)| (a.min(id), b.max(id))));
        }
    }
    Ok(CheckpointSummary {
        dir: dir.to_path_buf(),
        base: adapter.as_ref().map(|_| ckpt.clone()),
        stored: weights::stored_dtype(&ckpt)?,
        style,
        style_declared: config.prompt_style.is_some(),
        config,
        params,
        tokenizer: tok.kind.clone(),
        tokens,
        codes_per_level,
        code_ids: lo_hi,
        adapter_rows: adapter.as_ref().and_then(|a| a.saved_embedding_rows()),
        adapter: adapter.map(|a| a.info),
        loaded_tokenizer: tok,
        tokenizer_dir: tok_dir,
    })
}

/// The tokenizer must fit the embedding: exactly for compact vocabularies, within it otherwise
/// (LLM embeddings are often padded).
fn check_tokenizer_fits(
    config: &ModelConfig,
    tok: &super::tokenizer::ModelTokenizer,
    tok_dir: &Path,
    adapter: bool,
) -> Result<PromptStyle> {
    let style = detect_style(config.prompt_style.as_deref(), tok);
    let tokens = tok.vocab().len();
    let fits = match style {
        PromptStyle::Compact => tokens == config.vocab_size,
        PromptStyle::Reference => tokens <= config.vocab_size,
    };
    if !fits {
        let hint = if adapter {
            ": the adapter adds tokens but saves no embed_tokens/lm_head rows for them; export them as README \"Your own model\" shows"
        } else {
            ""
        };
        return Err(Error::model(
            tok_dir.join(checkpoint::TOKENIZER),
            format!(
                "has {tokens} tokens but the model's embedding has {} rows (config.json says vocab_size {}){hint}",
                config.vocab_size, config.vocab_size
            ),
        ));
    }
    Ok(style)
}

impl fmt::Display for CheckpointSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(f, "checkpoint {}", self.dir.display())?;
        if let (Some(a), Some(base)) = (&self.adapter, &self.base) {
            writeln!(
                f,
                "  adapter        LoRA r {}, alpha {}, on {} (merged at load over {})",
                a.r,
                a.alpha,
                a.target_modules.join(", "),
                base.display()
            )?;
        }
        writeln!(
            f,
            "  architecture   {} ({})",
            c.architectures.join(", "),
            c.model_type
        )?;
        writeln!(
            f,
            "  shape          {} layers, hidden {}, intermediate {}, {} heads of {} ({} key/value heads){}{}",
            c.num_hidden_layers,
            c.hidden_size,
            c.intermediate_size,
            c.num_attention_heads,
            c.head_dim(),
            c.kv_heads(),
            if c.qkv_bias() { ", q/k/v bias" } else { "" },
            if c.qk_norm() { ", q/k norm" } else { "" },
        )?;
        writeln!(
            f,
            "  parameters     {} ({}), stored as {}",
            self.params,
            super::human_count(self.params),
            super::checkpoint::dtype_name(self.stored)
        )?;
        let rows = match (&self.adapter, self.adapter_rows) {
            (Some(_), Some(r)) => format!("{r}, saved in the adapter"),
            (Some(_), None) if self.tokens > c.vocab_size => format!(
                "{} in the base, and the adapter saves none: export them (README, \"Your own model\")",
                c.vocab_size
            ),
            _ => c.vocab_size.to_string(),
        };
        writeln!(
            f,
            "  tokenizer      {}, {} tokens (embedding rows {rows})",
            self.tokenizer, self.tokens
        )?;
        let levels: Vec<String> = self
            .codes_per_level
            .iter()
            .enumerate()
            .map(|(l, n)| format!("{} {n}", (b'a' + l as u8) as char))
            .collect();
        match self.code_ids {
            Some((lo, hi)) => writeln!(
                f,
                "  code tokens    {} found (per level: {}), ids {lo}..={hi}",
                self.codes_per_level.iter().sum::<usize>(),
                levels.join(", ")
            )?,
            None => writeln!(
                f,
                "  code tokens    none: add the dataset's <a_N>..<d_N> tokens to the tokenizer"
            )?,
        }
        writeln!(
            f,
            "  prompt style   {} ({})",
            self.style.name(),
            if self.style_declared {
                "config.json says so"
            } else {
                "detected from the tokenizer"
            }
        )?;
        writeln!(
            f,
            "  positions      up to {}, rope theta {}",
            c.max_position_embeddings, c.rope_theta
        )?;
        write!(f, "  tied embedding {}", c.tie_word_embeddings)
    }
}
