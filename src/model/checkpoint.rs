//! Hugging Face checkpoint folders: `config.json`, `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`, read by [`super::weights`]) and `tokenizer.json`. Errors name
//! the file at fault.

use std::fs;
use std::path::Path;

use candle_core::DType;

use super::config::ModelConfig;
use super::tokenizer::ModelTokenizer;
use crate::{Error, Result};

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
pub const TOKENIZER: &str = "tokenizer.json";

/// Largest `config.json` read (real ones are a few kilobytes).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

pub fn read_config(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join(CONFIG);
    let len = fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(Error::model(
            &path,
            format!("is {len} bytes; a config is a few kilobytes"),
        ));
    }
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::model(&path, format!("not JSON: {e}")))?;
    ModelConfig::from_json(&v).map_err(|m| Error::model(&path, m))
}

/// The checkpoint's `tokenizer.json`, as transformers 5 loads it beside its tokenizer_config.json.
pub fn read_tokenizer(dir: &Path) -> Result<ModelTokenizer> {
    read_tokenizer_as(dir, None, super::TokenizerRules::default())
}

/// The checkpoint's tokenizer as `rules` load it (see [`super::tokenizer::transformers`]);
/// `model_type` (config.json's) picks the tokenizer class when tokenizer_config.json names none.
pub fn read_tokenizer_as(
    dir: &Path,
    model_type: Option<&str>,
    rules: super::TokenizerRules,
) -> Result<ModelTokenizer> {
    let path = dir.join(TOKENIZER);
    if !path.exists() {
        let hint = if dir.join("tokenizer.model").exists() {
            " (only the slow SentencePiece tokenizer.model is here: write tokenizer.json with transformers, see README \"Your own model\")"
        } else {
            ""
        };
        return Err(Error::model(
            &path,
            format!("missing (the vocabulary is read from it){hint}"),
        ));
    }
    ModelTokenizer::load_dir(dir, model_type, rules)
}

/// Vocabulary of `tokenizer.json` in id order.
pub fn read_tokenizer_vocab(dir: &Path) -> Result<Vec<String>> {
    Ok(read_tokenizer(dir)?.vocab().to_vec())
}

/// Writes `bytes` to `path` atomically (see [`crate::atomic::write`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::atomic::write(path, bytes)
}

pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    }
}

/// `f32`, `f16`, `bf16` (or their torch names); `auto` is `None`: the checkpoint's stored dtype.
pub fn parse_dtype_or_auto(s: &str) -> Result<Option<DType>> {
    match s {
        "auto" => Ok(None),
        _ => parse_dtype(s).map(Some).map_err(|_| {
            Error::invalid(
                "dtype",
                format!("unknown dtype {s:?} (f32, f16, bf16, or auto for the stored one)"),
            )
        }),
    }
}

pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        _ => Err(Error::invalid(
            "dtype",
            format!("unknown dtype {s:?} (f32, f16 or bf16)"),
        )),
    }
}
