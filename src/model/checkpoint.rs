//! Hugging Face checkpoint folders: `config.json`, `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`) and `tokenizer.json`. Errors name the file at fault.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::config::LlamaConfig;
use crate::ids::SPECIALS;
use crate::{Error, Result};

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
pub const TOKENIZER: &str = "tokenizer.json";

pub fn read_config(dir: &Path) -> Result<LlamaConfig> {
    let path = dir.join(CONFIG);
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let cfg: LlamaConfig = serde_json::from_str(&text)
        .map_err(|e| Error::model(&path, format!("not a LLaMA config: {e}")))?;
    cfg.validate().map_err(|m| Error::model(&path, m))?;
    Ok(cfg)
}

/// The safetensors files of a checkpoint: the single file, or the shards of the index.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(WEIGHTS);
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join(WEIGHTS_INDEX);
    if !index.exists() {
        return Err(Error::model(
            dir,
            format!("no weights: neither {WEIGHTS} nor {WEIGHTS_INDEX} is present"),
        ));
    }
    let text = fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::model(&index, format!("malformed index: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::model(&index, "no weight_map object"))?;
    let files: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// Loads every tensor of the checkpoint on `device`, converted to `dtype`.
pub fn read_weights(dir: &Path, dtype: DType, device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut all = HashMap::new();
    for file in weight_files(dir)? {
        let bytes = fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| Error::model(&file, format!("corrupt safetensors: {e}")))?;
        for (name, t) in tensors {
            let t = t
                .to_dtype(dtype)
                .and_then(|t| t.to_device(device))
                .map_err(|e| Error::model(&file, format!("tensor {name}: {e}")))?;
            all.insert(name, t);
        }
    }
    Ok(all)
}

/// Vocabulary of `tokenizer.json` in id order.
pub fn read_tokenizer_vocab(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join(TOKENIZER);
    if !path.exists() {
        return Err(Error::model(
            &path,
            "missing (the vocabulary is read from it)",
        ));
    }
    let tok = tokenizers::Tokenizer::from_file(&path)
        .map_err(|e| Error::model(&path, format!("unreadable tokenizer: {e}")))?;
    let vocab = tok.get_vocab(true);
    let mut out = vec![String::new(); vocab.len()];
    for (t, id) in vocab {
        match out.get_mut(id as usize) {
            Some(slot) => *slot = t,
            None => return Err(Error::model(&path, format!("token id {id} out of range"))),
        }
    }
    Ok(out)
}

/// A word-level `tokenizer.json` over exactly `tokens` (specials first), so Python transformers
/// can load the checkpoint and tokenize compact prompts like `<bos><a_1><b_2>...<sep>`.
pub fn tokenizer_json(tokens: &[String]) -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "<[^<>]*>"},
            "behavior": "Isolated", "invert": false},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<pad>"}
    })
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

pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        _ => Err(Error::invalid(
            "dtype",
            format!("unknown dtype {s:?} (f32, f16, bf16)"),
        )),
    }
}
