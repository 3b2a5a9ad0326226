//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`), merged into the base
//! weights at load: W' = W + s * B A for every targeted linear (embedding LoRA:
//! E' = E + s * (B A)^T), with s = alpha / r (alpha / sqrt(r) with rsLoRA) and r the rank of the
//! saved matrices, so decoding runs the plain decoder at full speed.
//!
//! LC-Rec adds the item code tokens to the tokenizer and resizes the embedding before training,
//! and saves the resized `embed_tokens` and `lm_head` in the adapter (`modules_to_save`); those
//! rows replace the base's (and untie a tied base). The method's reference code saves a plain LoRA
//! after resizing, so its adapters lack the new rows: that is an error telling how to export them
//! (README, "Your own model"). Shapes are checked against the base, so an adapter trained on
//! another base model is refused with the first module that does not fit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
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
    rslora: bool,
    /// PEFT's per-module alpha overrides, in the file's order (the first matching key wins).
    alpha_pattern: Vec<(regex::Regex, f64)>,
    /// Tensors in their stored dtype.
    tensors: HashMap<String, Tensor>,
}

/// Whether `dir` holds an adapter rather than a full checkpoint. LC-Rec writes the base's
/// config.json beside its adapter, so the test is the adapter config without model weights.
pub fn is_adapter(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
        && !dir.join(super::checkpoint::WEIGHTS).exists()
        && !dir.join(super::checkpoint::WEIGHTS_INDEX).exists()
}

/// A JSON object's entries in file order (PEFT matches pattern keys first to last).
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_unit<E>(self) -> std::result::Result<Ordered, E> {
                Ok(Ordered(Vec::new()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = m.next_entry::<String, Value>()? {
                    out.push(kv);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct Patterns {
    #[serde(default)]
    alpha_pattern: Option<Ordered>,
}

impl Adapter {
    /// Reads the adapter in `dir`.
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
            ("lora_bias", "a bias on lora_B"),
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
        let positive = |what: &str, x: &Value| -> Result<f64> {
            x.as_f64()
                .filter(|a| a.is_finite() && *a > 0.0)
                .ok_or_else(|| bad(format!("{what} must be a positive number, not {x}")))
        };
        let alpha = positive("lora_alpha", &v["lora_alpha"])?;
        let rslora = v["use_rslora"].as_bool() == Some(true);
        let target_modules = match &v["target_modules"] {
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        };
        let patterns: Patterns = serde_json::from_str(&text)
            .map_err(|e| bad(format!("malformed alpha_pattern: {e}")))?;
        let mut alpha_pattern = Vec::new();
        for (key, value) in patterns.alpha_pattern.map(|o| o.0).unwrap_or_default() {
            // PEFT: re.match(rf"(.*\.)?({key})$", module name).
            let re = regex::Regex::new(&format!(r"^(.*\.)?({key})$"))
                .map_err(|e| bad(format!("alpha_pattern key {key:?} is not a pattern: {e}")))?;
            alpha_pattern.push((re, positive(&format!("alpha_pattern[{key:?}]"), &value)?));
        }
        let weights = dir.join(ADAPTER_WEIGHTS);
        if !weights.is_file() {
            let hint = if dir.join("adapter_model.bin").is_file() {
                " (adapter_model.bin, a pickle, is not read: save it as safetensors with PEFT)"
            } else {
                ""
            };
            return Err(Error::model(dir, format!("no {ADAPTER_WEIGHTS}{hint}")));
        }
        // Stored dtype: a resized 152k-row embedding stays 16-bit; the merge works in f32 per
        // matrix.
        let tensors = super::weights::read_file_tensors(&weights, None, &Device::Cpu)?;
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
            rslora,
            alpha_pattern,
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

    /// The scaling of one module of rank `r`: alpha / r (alpha / sqrt(r) with rsLoRA), alpha
    /// from the first matching alpha_pattern key, else lora_alpha.
    fn scale_for(&self, module: &str, r: usize) -> f64 {
        let alpha = self
            .alpha_pattern
            .iter()
            .find(|(re, _)| re.is_match(module))
            .map_or(self.info.alpha, |(_, a)| *a);
        scaling(alpha, r, self.rslora)
    }

    /// Checks the adapter against the base's tensor shapes (`dims(name)`; `tied`: the base ties
    /// lm_head to the embedding) and lists what the merge will do. Reads no base weights, so
    /// `inspect` can run it on a 7B base.
    pub fn plan(
        &self,
        base: &Path,
        tied: bool,
        dims: &dyn Fn(&str) -> Option<Vec<usize>>,
    ) -> Result<MergePlan> {
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
        // Group the adapter's tensors by the module they change. Whole tensors are chosen by
        // name, never by their order: current PEFT saves a resized layer as `X.weight` and
        // `X.modules_to_save.weight` (the trained copy, used) and `X.original_module.weight`
        // (the base's rows, never used).
        let mut pairs: HashMap<String, (Option<String>, Option<String>, bool)> = HashMap::new();
        let mut best: HashMap<String, (WholeRole, String)> = HashMap::new();
        for key in self.tensors.keys() {
            let (k, role) = whole_role(key);
            if role == WholeRole::Original {
                continue;
            }
            match lora_part(&k) {
                Some((module, part)) => {
                    let e = pairs.entry(module).or_insert((None, None, false));
                    match part {
                        LoraPart::A { embedding } => (e.0, e.2) = (Some(key.clone()), embedding),
                        LoraPart::B { embedding } => (e.1, e.2) = (Some(key.clone()), embedding),
                    }
                }
                None if k.contains(".lora_") => {
                    return Err(Error::model(
                        &dir,
                        format!("tensor {key} is not a LoRA matrix this merge knows (lora_A, lora_B, lora_embedding_A/B weights)"),
                    ))
                }
                None => match best.get(&k) {
                    Some((r, _)) if *r >= role => {}
                    _ => {
                        best.insert(k, (role, key.clone()));
                    }
                },
            }
        }
        let mut whole: Vec<(String, String)> = best.into_iter().map(|(n, (_, k))| (n, k)).collect();
        let mut plan = MergePlan::default();
        whole.sort();
        for (name, key) in whole {
            let new_dims = self.tensors[&key].dims().to_vec();
            // A tied base has no lm_head tensor; the adapter's own lm_head unties it.
            let old_dims = match dims(&name) {
                Some(d) => d,
                None if name == "lm_head.weight" && tied => {
                    plan.untie = true;
                    dims("model.embed_tokens.weight")
                        .ok_or_else(|| misfit("the base has no embed_tokens".into()))?
                }
                None => {
                    return Err(misfit(format!(
                        "it saves {name}, which the base does not have"
                    )))
                }
            };
            let resized = old_dims.len() == 2
                && new_dims.len() == 2
                && old_dims[1] == new_dims[1]
                && (name.ends_with("embed_tokens.weight") || name.ends_with("lm_head.weight"));
            if old_dims != new_dims && !resized {
                return Err(misfit(format!(
                    "{name} is {new_dims:?} in the adapter but {old_dims:?} in the base"
                )));
            }
            if resized && name.ends_with("embed_tokens.weight") {
                plan.vocab = Some(new_dims[0]);
            }
            plan.replace.push((name, key));
        }
        // A resized embedding needs its output rows too, unless the model stays tied.
        if let Some(v) = plan.vocab {
            let head_rows = match plan.replace.iter().find(|(n, _)| n == "lm_head.weight") {
                Some((_, key)) => self.tensors[key].dims().first().copied(),
                None => dims("lm_head.weight").and_then(|d| d.first().copied()),
            };
            let still_tied = tied && !plan.untie;
            if !still_tied && head_rows != Some(v) {
                return Err(Error::model(
                    &dir,
                    format!(
                        "saves embed_tokens rows for {v} tokens but no lm_head rows to match (lm_head has {}): save both with modules_to_save",
                        head_rows.map_or("none".into(), |r| r.to_string())
                    ),
                ));
            }
        }
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
            // A module whose embedding was replaced above is adapted on the new rows.
            let w_dims = match plan.replace.iter().find(|(n, _)| *n == name) {
                Some((_, key)) => Some(self.tensors[key].dims().to_vec()),
                None => dims(&name),
            };
            let Some(w_dims) = w_dims else {
                return Err(misfit(format!(
                    "it adapts {module}, which the base does not have"
                )));
            };
            let (ad, bd) = (self.tensors[&a].dims(), self.tensors[&b].dims());
            if ad.len() != 2 || bd.len() != 2 || ad[0] != bd[1] {
                return Err(misfit(format!(
                    "LoRA {module}: A {ad:?} and B {bd:?} are not 2-D matrices of one rank"
                )));
            }
            // Linear: A [r, in], B [out, r], W [out, in]. Embedding: A [r, V], B [H, r], E [V, H].
            let update = if embedding {
                vec![ad[1], bd[0]]
            } else {
                vec![bd[0], ad[1]]
            };
            if update != w_dims {
                return Err(misfit(format!(
                    "LoRA {module} (A {ad:?}, B {bd:?}) gives a {update:?} update for a {w_dims:?} weight"
                )));
            }
            plan.merge.push(Merge {
                weight: name,
                a,
                b,
                embedding,
                scale: self.scale_for(&module, ad[0]),
            });
        }
        Ok(plan)
    }

    /// Merges the adapter into `weights` (named as in the base checkpoint, in their run-time
    /// dtype) following [`Adapter::plan`].
    pub fn merge_into(
        &mut self,
        weights: &mut HashMap<String, Tensor>,
        base: &Path,
        tied: bool,
    ) -> Result<MergePlan> {
        let dims = |n: &str| weights.get(n).map(|t| t.dims().to_vec());
        let plan = self.plan(base, tied, &dims)?;
        let dir = self.info.dir.clone();
        for (name, key) in &plan.replace {
            let like = weights
                .get(name)
                .or_else(|| weights.get("model.embed_tokens.weight"))
                .map(|w| (w.dtype(), w.device().clone()));
            let (dtype, device) = like.unwrap_or((DType::F32, Device::Cpu));
            let t = self.tensors[key].to_dtype(dtype)?.to_device(&device)?;
            weights.insert(name.clone(), t);
            self.info.replaced.push(name.clone());
        }
        for m in &plan.merge {
            let w = &weights[&m.weight];
            let a = self.tensors[&m.a].to_dtype(DType::F32)?;
            let b = self.tensors[&m.b].to_dtype(DType::F32)?;
            let delta = b.matmul(&a)?;
            let delta = if m.embedding {
                delta.t()?.contiguous()?
            } else {
                delta
            };
            let updated = (w.to_dtype(DType::F32)?.to_device(&Device::Cpu)? + (delta * m.scale)?)?;
            let largest = updated.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            if !largest.is_finite() {
                return Err(Error::model(
                    &dir,
                    format!("merging into {} gives non-finite weights", m.weight),
                ));
            }
            let updated = updated.to_dtype(w.dtype())?.to_device(w.device())?;
            weights.insert(m.weight.clone(), updated);
        }
        self.info.merged = plan.merge.len();
        Ok(plan)
    }
}

/// What merging an adapter does (see [`Adapter::plan`]).
#[derive(Debug, Default)]
pub struct MergePlan {
    /// Base tensors replaced whole: (base name, adapter key).
    pub replace: Vec<(String, String)>,
    pub merge: Vec<Merge>,
    /// Vocabulary size after a resize, if the adapter resized it.
    pub vocab: Option<usize>,
    /// The adapter saved an lm_head for a tied base.
    pub untie: bool,
}

#[derive(Debug)]
pub struct Merge {
    pub weight: String,
    a: String,
    b: String,
    embedding: bool,
    pub scale: f64,
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
    whole_role(key).0
}

/// What a saved tensor that is not a LoRA matrix is, by PEFT's names (strongest last).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum WholeRole {
    /// `X.original_module.weight`: the base's own rows, kept beside a trained copy.
    Original,
    /// `X.weight` (older PEFT, or the copy current PEFT writes under the plain name) and
    /// `X.base_layer.weight` (a resized base under a LoRA-adapted embedding).
    Plain,
    /// `X.modules_to_save[.ADAPTER].weight`: the trained copy.
    Trained,
}

/// The base name of a saved tensor (`base_model.model.` and PEFT's wrapper segments removed)
/// and its role.
fn whole_role(key: &str) -> (String, WholeRole) {
    let k = key.strip_prefix("base_model.model.").unwrap_or(key);
    if let Some(i) = k.find(".original_module.") {
        return (
            format!("{}.{}", &k[..i], last(&k[i..])),
            WholeRole::Original,
        );
    }
    if let Some(i) = k.find(".modules_to_save.") {
        return (format!("{}.{}", &k[..i], last(&k[i..])), WholeRole::Trained);
    }
    if let Some(i) = k.find(".base_layer.") {
        return (format!("{}.{}", &k[..i], last(&k[i..])), WholeRole::Plain);
    }
    (k.to_string(), WholeRole::Plain)
}

/// The last dotted segment (`weight`).
fn last(k: &str) -> &str {
    k.rsplit('.').next().unwrap_or(k)
}

enum LoraPart {
    A { embedding: bool },
    B { embedding: bool },
}

/// Splits `model.layers.0.self_attn.q_proj.lora_A.weight` (optionally with the adapter name,
/// `.lora_A.default.weight`) or `model.embed_tokens.lora_embedding_A[.default]` into the module
/// and the part. Anything else under `lora_` (a bias, DoRA magnitudes) is not a part.
fn lora_part(key: &str) -> Option<(String, LoraPart)> {
    for (marker, part, embedding) in [
        (".lora_A", true, false),
        (".lora_B", false, false),
        (".lora_embedding_A", true, true),
        (".lora_embedding_B", false, true),
    ] {
        let Some(i) = key.find(marker) else {
            continue;
        };
        let rest = &key[i + marker.len()..];
        let ok = if embedding {
            matches!(rest, "" | ".default")
        } else {
            matches!(rest, ".weight" | ".default.weight")
        };
        if !ok {
            return None;
        }
        let p = if part {
            LoraPart::A { embedding }
        } else {
            LoraPart::B { embedding }
        };
        return Some((key[..i].to_string(), p));
    }
    None
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
        assert_eq!(
            whole_role("base_model.model.lm_head.modules_to_save.weight"),
            ("lm_head.weight".into(), WholeRole::Trained)
        );
        assert_eq!(
            whole_role("base_model.model.model.embed_tokens.original_module.weight"),
            ("model.embed_tokens.weight".into(), WholeRole::Original)
        );
        assert_eq!(
            whole_role("base_model.model.model.embed_tokens.base_layer.weight").0,
            "model.embed_tokens.weight"
        );
        assert!(lora_part("model.embed_tokens.weight").is_none());
        assert!(lora_part("model.layers.0.self_attn.q_proj.lora_B.bias").is_none());
        assert_eq!(scaling(16.0, 4, false), 4.0);
        assert_eq!(scaling(16.0, 4, true), 8.0);
    }

    #[test]
    fn alpha_patterns_match_as_peft_does() {
        let re = |k: &str| regex::Regex::new(&format!(r"^(.*\.)?({k})$")).unwrap();
        let m = "model.layers.0.self_attn.q_proj";
        assert!(re("q_proj").is_match(m));
        assert!(re(r".*\.q_proj").is_match(m));
        assert!(re("layers.0.self_attn.q_proj").is_match(m));
        assert!(!re("proj").is_match(m));
        assert!(!re("k_proj").is_match(m));
        let o: Patterns =
            serde_json::from_str(r#"{"alpha_pattern": {"z": 1, "a": 2, "m": 3}}"#).unwrap();
        let keys: Vec<String> = o
            .alpha_pattern
            .unwrap()
            .0
            .into_iter()
            .map(|x| x.0)
            .collect();
        assert_eq!(keys, ["z", "a", "m"], "file order is kept");
    }
}
