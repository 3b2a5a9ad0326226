//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`), merged into the base
//! weights at load: W' = W + (alpha / r) * B A for every targeted linear (embedding LoRA:
//! E' = E + (alpha / r) * (B A)^T), so decoding runs the plain decoder at full speed.
//!
//! LC-Rec adds the item code tokens to the tokenizer and resizes the embedding before training,
//! and saves the resized `embed_tokens` and `lm_head` in the adapter (`modules_to_save`); those
//! rows replace the base's. The method's reference code saves a plain LoRA after resizing, so its
//! adapters lack the new rows: that is an error telling how to export them (README, "Your own
//! model"). Shapes are checked against the base, so an adapter trained on another base model is
//! refused with the first module that does not fit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use serde_json::Value;

use crate::{Error, Result};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// What an adapter is, for `inspect` and headers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdapterInfo {
    pub dir: PathBuf,
    /// `base_model_name_or_path` as the adapter records it.
    pub base_name: String,
    pub r: usize,
    pub alpha: f64,
    pub target_modules: Vec<String>,
    /// Linear and embedding matrices the merge changed.
    pub merged: usize,
    /// Whole tensors the adapter replaced (`modules_to_save`: the resized embedding, lm_head).
    pub replaced: Vec<String>,
}

/// A parsed adapter, ready to merge.
pub struct Adapter {
    pub info: AdapterInfo,
    /// Scaling per module name pattern (rank_pattern / alpha_pattern), else the default.
    scale: f64,
    rank_pattern: HashMap<String, usize>,
    alpha_pattern: HashMap<String, f64>,
    rslora: bool,
    tensors: HashMap<String, Tensor>,
}

/// Whether `dir` holds an adapter rather than a full checkpoint.
pub fn is_adapter(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file() && !dir.join(super::checkpoint::CONFIG).is_file()
}

impl Adapter {
    /// Reads the adapter in `dir` (weights in f32: they are small, and the merge is computed in
    /// f32 before rounding to the run-time dtype).
    pub fn load(dir: &Path) -> Result<Adapter> {
        let cfg_path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::model(&cfg_path, format!("malformed adapter config: {e}")))?;
        let bad = |m: String| Error::model(&cfg_path, m);
        let peft_type = v["peft_type"].as_str().unwrap_or("LORA");
        if peft_type != "LORA" {
            return Err(bad(format!(
                "peft_type {peft_type:?} is not supported (LoRA only)"
            )));
        }
        for (key, what) in [
            ("use_dora", "DoRA"),
            ("fan_in_fan_out", "fan_in_fan_out (Conv1D layers)"),
        ] {
            if v[key].as_bool() == Some(true) {
                return Err(bad(format!("{key}: {what} is not supported")));
            }
        }
        if let Some(b) = v["bias"].as_str().filter(|b| *b != "none") {
            return Err(bad(format!("bias {b:?} is not supported (only \"none\")")));
        }
        let r = v["r"]
            .as_u64()
            .filter(|&r| r > 0 && r <= 1 << 16)
            .ok_or_else(|| bad(format!("r must be a positive integer, not {}", v["r"])))?
            as usize;
        let alpha = v["lora_alpha"]
            .as_f64()
            .filter(|a| a.is_finite())
            .ok_or_else(|| {
                bad(format!(
                    "lora_alpha must be a number, not {}",
                    v["lora_alpha"]
                ))
            })?;
        let rslora = v["use_rslora"].as_bool() == Some(true);
        let target_modules = match &v["target_modules"] {
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        };
        let patterns = |key: &str| -> HashMap<String, f64> {
            v[key]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, x)| x.as_f64().map(|f| (k.clone(), f)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let rank_pattern = patterns("rank_pattern")
            .into_iter()
            .map(|(k, f)| (k, f as usize))
            .collect();
        let alpha_pattern = patterns("alpha_pattern");
        let weights = dir.join(ADAPTER_WEIGHTS);
        if !weights.is_file() {
            return Err(Error::model(
                dir,
                format!("no {ADAPTER_WEIGHTS} (adapter_model.bin is not supported: convert it with safetensors)"),
            ));
        }
        let tensors = read_adapter_tensors(&weights)?;
        Ok(Adapter {
            info: AdapterInfo {
                dir: dir.to_path_buf(),
                base_name: v["base_model_name_or_path"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                r,
                alpha,
                target_modules,
                merged: 0,
                replaced: Vec::new(),
            },
            scale: scaling(alpha, r, rslora),
            rank_pattern,
            alpha_pattern,
            rslora,
            tensors,
        })
    }

    /// Rows of the embedding the adapter saves (a resized vocabulary), if it saves one.
    pub fn saved_embedding_rows(&self) -> Option<usize> {
        self.tensors
            .iter()
            .find(|(k, _)| strip_prefix(k) == "model.embed_tokens.weight")
            .and_then(|(_, t)| t.dims().first().copied())
    }

    /// The base checkpoint folder: `base_model_name_or_path` when it names a local folder
    /// (relative to the adapter's folder, or as given).
    pub fn local_base(&self) -> Option<PathBuf> {
        let name = &self.info.base_name;
        if name.is_empty() {
            return None;
        }
        [self.info.dir.join(name), PathBuf::from(name)]
            .into_iter()
            .find(|p| p.join(super::checkpoint::CONFIG).is_file())
    }

    /// The scaling of one module: alpha / r (alpha / sqrt(r) with rsLoRA), with per-module
    /// overrides from rank_pattern / alpha_pattern (keys match a suffix of the module name).
    fn scale_for(&self, module: &str) -> f64 {
        let find = |m: &HashMap<String, f64>| {
            m.iter()
                .find(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}")))
                .map(|(_, v)| *v)
        };
        let ranks: HashMap<String, f64> = self
            .rank_pattern
            .iter()
            .map(|(k, v)| (k.clone(), *v as f64))
            .collect();
        match (find(&ranks), find(&self.alpha_pattern)) {
            (None, None) => self.scale,
            (r, a) => scaling(
                a.unwrap_or(self.info.alpha),
                r.map_or(self.info.r, |r| r as usize),
                self.rslora,
            ),
        }
    }

    /// Merges the adapter into `weights` (named as in the base checkpoint, in their run-time
    /// dtype). Returns the vocabulary size after the merge (changed when the adapter carries a
    /// resized embedding). `base` names the base folder in errors.
    pub fn merge_into(
        &mut self,
        weights: &mut HashMap<String, Tensor>,
        base: &Path,
    ) -> Result<Option<usize>> {
        let dir = self.info.dir.clone();
        let misfit = |m: String| {
            Error::model(
                &dir,
                format!(
                    "does not fit the base model {}: {m} (was the adapter trained on another base? its adapter_config.json names {:?})",
                    base.display(),
                    self.info.base_name
                ),
            )
        };
        // Group the adapter's tensors by the module they change.
        let mut pairs: HashMap<String, (Option<Tensor>, Option<Tensor>, bool)> = HashMap::new();
        let mut whole: Vec<(String, Tensor)> = Vec::new();
        for (key, t) in &self.tensors {
            let k = strip_prefix(key);
            if let Some((module, part)) = lora_part(&k) {
                let e = pairs.entry(module.clone()).or_insert((None, None, false));
                match part {
                    LoraPart::A { embedding } => {
                        e.0 = Some(t.clone());
                        e.2 = embedding;
                    }
                    LoraPart::B { embedding } => {
                        e.1 = Some(t.clone());
                        e.2 = embedding;
                    }
                }
            } else {
                whole.push((k, t.clone()));
            }
        }
        // Whole tensors first (a resized embedding must be in place before its LoRA delta).
        let mut vocab = None;
        for (name, t) in whole {
            let Some(old) = weights.get(&name) else {
                return Err(misfit(format!(
                    "it saves {name}, which the base does not have"
                )));
            };
            let (old_dims, new_dims) = (old.dims().to_vec(), t.dims().to_vec());
            let resized = old_dims.len() == 2
                && new_dims.len() == 2
                && old_dims[1] == new_dims[1]
                && (name.ends_with("embed_tokens.weight") || name.ends_with("lm_head.weight"));
            if old_dims != new_dims && !resized {
                return Err(misfit(format!(
                    "{name} is {new_dims:?} in the adapter but {old_dims:?} in the base"
                )));
            }
            if resized {
                vocab = Some(new_dims[0]);
            }
            let t = t.to_dtype(old.dtype())?.to_device(old.device())?;
            weights.insert(name.clone(), t);
            self.info.replaced.push(name);
        }
        let mut merged = 0;
        let mut modules: Vec<_> = pairs.into_iter().collect();
        modules.sort_by(|a, b| a.0.cmp(&b.0));
        for (module, (a, b, embedding)) in modules {
            let (Some(a), Some(b)) = (a, b) else {
                return Err(Error::model(
                    &dir,
                    format!("{module} has only one of its two LoRA matrices"),
                ));
            };
            let name = format!("{module}.weight");
            let Some(w) = weights.get(&name) else {
                return Err(misfit(format!(
                    "it adapts {module}, which the base does not have"
                )));
            };
            let (a, b) = (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
            // Linear: A [r, in], B [out, r], W [out, in]. Embedding: A [r, V], B [H, r], E [V, H].
            let delta = b.matmul(&a)?;
            let delta = if embedding {
                delta.t()?.contiguous()?
            } else {
                delta
            };
            if delta.dims() != w.dims() {
                return Err(misfit(format!(
                    "LoRA {module} (A {:?}, B {:?}) gives a {:?} update for a {:?} weight",
                    a.dims(),
                    b.dims(),
                    delta.dims(),
                    w.dims()
                )));
            }
            let scale = self.scale_for(&module);
            let updated = (w.to_dtype(DType::F32)?.to_device(&Device::Cpu)? + (delta * scale)?)?;
            let updated = updated.to_dtype(w.dtype())?.to_device(w.device())?;
            weights.insert(name, updated);
            merged += 1;
        }
        self.info.merged = merged;
        Ok(vocab)
    }
}

fn scaling(alpha: f64, r: usize, rslora: bool) -> f64 {
    if rslora {
        alpha / (r as f64).sqrt()
    } else {
        alpha / r as f64
    }
}

/// `base_model.model.X` -> `X`, without PEFT's adapter-name and wrapper segments.
fn strip_prefix(key: &str) -> String {
    let k = key.strip_prefix("base_model.model.").unwrap_or(key);
    k.replace(".modules_to_save.default", "")
        .replace(".original_module", "")
}

enum LoraPart {
    A { embedding: bool },
    B { embedding: bool },
}

/// Splits `model.layers.0.self_attn.q_proj.lora_A.weight` (optionally with the adapter name,
/// `.lora_A.default.weight`) into the module and the part.
fn lora_part(key: &str) -> Option<(String, LoraPart)> {
    for (marker, part) in [
        (".lora_A.", LoraPart::A { embedding: false }),
        (".lora_B.", LoraPart::B { embedding: false }),
        (".lora_embedding_A", LoraPart::A { embedding: true }),
        (".lora_embedding_B", LoraPart::B { embedding: true }),
    ] {
        if let Some(i) = key.find(marker) {
            return Some((key[..i].to_string(), part));
        }
    }
    None
}

fn read_adapter_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    // The checkpoint reader (float dtypes, finite values), in f32 for the merge.
    super::weights::read_file_tensors(path, DType::F32, &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_base_modules() {
        let (m, _) = lora_part(&strip_prefix(
            "base_model.model.model.layers.3.mlp.up_proj.lora_B.weight",
        ))
        .unwrap();
        assert_eq!(m, "model.layers.3.mlp.up_proj");
        let (m, p) = lora_part(&strip_prefix(
            "base_model.model.model.embed_tokens.lora_embedding_A.default",
        ))
        .unwrap();
        assert_eq!(m, "model.embed_tokens");
        assert!(matches!(p, LoraPart::A { embedding: true }));
        assert_eq!(
            strip_prefix("base_model.model.lm_head.modules_to_save.default.weight"),
            "lm_head.weight"
        );
        assert!(lora_part("model.embed_tokens.weight").is_none());
        assert_eq!(scaling(16.0, 4, false), 4.0);
        assert_eq!(scaling(16.0, 4, true), 8.0);
    }
}
