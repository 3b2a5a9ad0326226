//! What transformers does to a checkpoint's tokenizer files at load, so that a prompt encodes
//! here as `AutoTokenizer.from_pretrained(DIR)(text)` encodes it there.
//!
//! `tokenizer.json` is not the whole story. Measured against transformers 5.25 and 4.57 (the
//! tables and experiments are in the project's research notes; the rules below are the ones that
//! change ids):
//!
//! - **transformers 5** ([`TokenizerRules::Transformers`], the default). The class named by
//!   `tokenizer_config.json` (`tokenizer_class`, else the one registered for config.json's
//!   `model_type`) decides. `LlamaTokenizer` rebuilds the pipeline: no normalizer, a `Metaspace`
//!   pre-tokenizer (`split: false`) whose `prepend_scheme` comes from the config (`legacy: true`
//!   → "always"; `legacy` absent or false → "first"; `add_prefix_space: false` → "never"),
//!   whatever tokenizer.json says; a ByteLevel tokenizer.json under that class is loaded as it
//!   is instead (Llama-3 style). `Qwen2Tokenizer` rebuilds NFC + the Qwen split pattern +
//!   ByteLevel (`add_prefix_space` from the config). Both keep only the vocabulary, the merges
//!   and the post-processor of the file, and when the config lists `added_tokens_decoder`, that
//!   list replaces the file's added tokens. Any other class loads tokenizer.json whole, the
//!   config's `added_tokens_decoder` flags overriding the file's. `add_bos_token` and
//!   `add_eos_token` are dropped whenever tokenizer.json exists: its post-processor decides.
//! - **transformers 4** ([`TokenizerRules::Transformers4`]): tokenizer.json as it is, the config's
//!   added-token flags win, and `LlamaTokenizerFast` (and the other classes that did so) rebuilds
//!   the post-processor from `add_bos_token` (default true) and `add_eos_token` (default false).
//! - **the file** ([`TokenizerRules::File`]): tokenizer.json exactly as written (what a script
//!   that reproduced a slow SentencePiece tokenizer wrote, for instance).
//!
//! In all three a plain `tok(text)` call neither truncates nor pads, whatever tokenizer.json's
//! `truncation` and `padding` blocks say, so they are dropped (and said so).

use serde_json::{json, Map, Value};

/// Which library's loading rules tokenizer files follow (see the module documentation).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum TokenizerRules {
    /// transformers 5.x `AutoTokenizer` (the default).
    #[default]
    #[serde(rename = "transformers")]
    Transformers,
    /// transformers 4.x `AutoTokenizer`.
    #[serde(rename = "transformers4")]
    Transformers4,
    /// tokenizer.json as written, nothing changed but truncation and padding.
    #[serde(rename = "tokenizer.json")]
    File,
}

impl TokenizerRules {
    pub fn name(self) -> &'static str {
        match self {
            TokenizerRules::Transformers => "transformers",
            TokenizerRules::Transformers4 => "transformers4",
            TokenizerRules::File => "tokenizer.json",
        }
    }
}

impl std::str::FromStr for TokenizerRules {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "transformers" | "transformers5" => Ok(TokenizerRules::Transformers),
            "transformers4" => Ok(TokenizerRules::Transformers4),
            "tokenizer.json" | "file" => Ok(TokenizerRules::File),
            _ => Err(format!(
                "unknown tokenizer rules {s:?} (transformers, transformers4 or tokenizer.json)"
            )),
        }
    }
}

/// transformers' split pattern for Qwen2-family tokenizers (models/qwen2/tokenization_qwen2.py).
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer class transformers would build (`Fast` suffix removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenizerClass {
    /// `LlamaTokenizer`: Metaspace pipeline rebuilt from the config.
    Llama,
    /// `Qwen2Tokenizer`: NFC + split pattern + ByteLevel rebuilt.
    Qwen2,
    /// Anything else: tokenizer.json loaded whole (`TokenizersBackend`, `PreTrainedTokenizerFast`,
    /// and classes whose own pipelines are not emulated here).
    File(String),
}

/// The class transformers 5 resolves for a checkpoint: `tokenizer_config.json`'s
/// `tokenizer_class`, else the class registered for config.json's `model_type`; a Llama class
/// over a ByteLevel tokenizer.json loads the file (transformers does the same, with a warning).
pub fn resolve_class(
    config: &Value,
    model_type: Option<&str>,
    file_is_byte_level: bool,
) -> TokenizerClass {
    let declared = config["tokenizer_class"]
        .as_str()
        .map(|c| c.trim_end_matches("Fast"));
    let registered = match model_type {
        Some("qwen2" | "qwen2_moe" | "qwen3" | "qwen3_moe") => Some("Qwen2Tokenizer"),
        _ => None,
    };
    match declared.or(registered) {
        Some("LlamaTokenizer") if file_is_byte_level => {
            TokenizerClass::File("LlamaTokenizer (ByteLevel tokenizer.json)".into())
        }
        Some("LlamaTokenizer") => TokenizerClass::Llama,
        Some("Qwen2Tokenizer") => TokenizerClass::Qwen2,
        Some(other) => TokenizerClass::File(other.to_string()),
        None => TokenizerClass::File("TokenizersBackend".into()),
    }
}

/// A special token named in the config: a string, or an AddedToken object with `content`.
pub fn special_token(config: &Value, key: &str) -> Option<String> {
    match &config[key] {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

/// Rewrites a parsed tokenizer.json as `rules` load it with `config` (tokenizer_config.json,
/// `Value::Null` when absent). Returns what changed, one sentence each, for `inspect`.
pub fn apply(
    tok: &mut Value,
    config: &Value,
    model_type: Option<&str>,
    rules: TokenizerRules,
) -> Vec<String> {
    let mut notes = Vec::new();
    for block in ["truncation", "padding"] {
        if !tok[block].is_null() {
            tok[block] = Value::Null;
            notes.push(format!(
                "tokenizer.json's {block} block is not applied: a plain transformers call neither truncates nor pads"
            ));
        }
    }
    if rules == TokenizerRules::File {
        return notes;
    }
    let byte_level = tok.to_string().contains("\"ByteLevel\"");
    let class = resolve_class(config, model_type, byte_level);
    let decoder = config
        .get("added_tokens_decoder")
        .and_then(Value::as_object);
    match rules {
        TokenizerRules::Transformers => {
            match &class {
                TokenizerClass::Llama => llama_pipeline(tok, config, &mut notes),
                TokenizerClass::Qwen2 => qwen2_pipeline(tok, config, &mut notes),
                TokenizerClass::File(name) => notes.push(format!(
                    "tokenizer class {name}: tokenizer.json loads as written (transformers 5 TokenizersBackend)"
                )),
            }
            let replace = matches!(class, TokenizerClass::Llama | TokenizerClass::Qwen2);
            if let Some(d) = decoder {
                merge_added(tok, d, replace, &mut notes);
            }
            for key in ["add_bos_token", "add_eos_token"] {
                if config.get(key).is_some() {
                    notes.push(format!(
                        "tokenizer_config.json's {key} is ignored, as transformers 5 ignores it beside a tokenizer.json: its post-processor decides"
                    ));
                }
            }
        }
        TokenizerRules::Transformers4 => {
            if let Some(d) = decoder {
                merge_added(tok, d, false, &mut notes);
            }
            let declared = config["tokenizer_class"].as_str().unwrap_or("");
            let rebuilds = [
                "LlamaTokenizerFast",
                "GemmaTokenizerFast",
                "CodeLlamaTokenizerFast",
                "CohereTokenizerFast",
                "GPTNeoXTokenizerFast",
            ];
            if rebuilds.contains(&declared) {
                bos_eos_post_processor(tok, config, declared, &mut notes);
            }
        }
        TokenizerRules::File => {}
    }
    notes
}

/// transformers 5's LlamaTokenizer pipeline (see the module documentation).
fn llama_pipeline(tok: &mut Value, config: &Value, notes: &mut Vec<String>) {
    let legacy = config["legacy"].as_bool();
    let scheme = match (config["add_prefix_space"].as_bool(), legacy) {
        (Some(false), _) => "never",
        (_, Some(true)) => "always",
        _ => "first",
    };
    let why = match (config["add_prefix_space"].as_bool(), legacy) {
        (Some(false), _) => "add_prefix_space is false",
        (_, Some(true)) => "legacy is true",
        (_, Some(false)) => "legacy is false",
        _ => "legacy is absent",
    };
    let before = describe(&tok["normalizer"], &tok["pre_tokenizer"]);
    let metaspace = json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": scheme, "split": false});
    if tok["normalizer"].is_null() && tok["pre_tokenizer"] == metaspace {
        notes.push(format!(
            "LlamaTokenizer: Metaspace prepend_scheme \"{scheme}\" ({why} in tokenizer_config.json), as tokenizer.json already says"
        ));
    } else {
        notes.push(format!(
            "LlamaTokenizer: transformers 5 replaces tokenizer.json's {before} with Metaspace prepend_scheme \"{scheme}\" ({why} in tokenizer_config.json)"
        ));
    }
    tok["normalizer"] = Value::Null;
    tok["pre_tokenizer"] = metaspace;
    if let Some(m) = tok["model"].as_object_mut() {
        m.insert("fuse_unk".into(), json!(true));
        m.insert("byte_fallback".into(), json!(true));
    }
}

/// transformers 5's Qwen2Tokenizer pipeline.
fn qwen2_pipeline(tok: &mut Value, config: &Value, notes: &mut Vec<String>) {
    let prefix = config["add_prefix_space"].as_bool().unwrap_or(false);
    let normalizer = json!({"type": "NFC"});
    let pre = json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": true, "use_regex": false}
    ]});
    let same = tok["normalizer"] == normalizer && same_qwen_pre(&tok["pre_tokenizer"], &pre);
    if !same {
        notes.push(format!(
            "Qwen2Tokenizer: transformers 5 replaces tokenizer.json's {} with NFC and its split pattern + ByteLevel (add_prefix_space {prefix})",
            describe(&tok["normalizer"], &tok["pre_tokenizer"])
        ));
    }
    tok["normalizer"] = normalizer;
    tok["pre_tokenizer"] = pre;
}

/// Whether two Qwen pre-tokenizers split alike (trim_offsets changes offsets only).
fn same_qwen_pre(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(list) = v["pretokenizers"].as_array_mut() {
            for p in list {
                if let Some(o) = p.as_object_mut() {
                    o.remove("trim_offsets");
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}

/// A short description of a tokenizer.json's normalizer and pre-tokenizer, for notes.
fn describe(normalizer: &Value, pre: &Value) -> String {
    let name = |v: &Value| match v["type"].as_str() {
        None => "none".to_string(),
        Some("Sequence") => {
            let list = v["normalizers"]
                .as_array()
                .or(v["pretokenizers"].as_array());
            let inner: Vec<String> = list
                .into_iter()
                .flatten()
                .map(|x| x["type"].as_str().unwrap_or("?").to_string())
                .collect();
            inner.join("+")
        }
        Some("Metaspace") => format!(
            "Metaspace \"{}\"",
            v["prepend_scheme"].as_str().unwrap_or("always")
        ),
        Some(t) => t.to_string(),
    };
    format!(
        "normalizer {} / pre-tokenizer {}",
        name(normalizer),
        name(pre)
    )
}

/// Merges tokenizer_config.json's `added_tokens_decoder` into tokenizer.json's added tokens:
/// the config's flags win; with `replace` (LlamaTokenizer, Qwen2Tokenizer in transformers 5)
/// tokens only the file lists are dropped. A token the tokenizer lacks gets the next free id,
/// as the tokenizers library assigns it (not the id the config wrote).
fn merge_added(
    tok: &mut Value,
    decoder: &Map<String, Value>,
    replace: bool,
    notes: &mut Vec<String>,
) {
    let file: Vec<Value> = tok["added_tokens"].as_array().cloned().unwrap_or_default();
    let vocab_len = tok["model"]["vocab"]
        .as_object()
        .map(|m| m.len())
        .or_else(|| tok["model"]["vocab"].as_array().map(|a| a.len()))
        .unwrap_or(0);
    let vocab_id = |content: &str| -> Option<u64> {
        tok["model"]["vocab"].get(content).and_then(Value::as_u64)
    };
    let mut entries: Vec<(u64, &Value)> = decoder
        .iter()
        .filter_map(|(k, v)| Some((k.parse::<u64>().ok()?, v)))
        .collect();
    entries.sort_by_key(|e| e.0);
    let mut out: Vec<Value> = if replace { Vec::new() } else { file.clone() };
    let (mut changed, mut moved) = (0usize, Vec::new());
    for (idx, entry) in entries {
        let Some(content) = entry["content"].as_str() else {
            continue;
        };
        let flag = |k: &str, default: bool| entry[k].as_bool().unwrap_or(default);
        let special = flag("special", false);
        let mut added = json!({
            "content": content,
            "single_word": flag("single_word", false),
            "lstrip": flag("lstrip", false),
            "rstrip": flag("rstrip", false),
            "normalized": flag("normalized", !special),
            "special": special,
        });
        let existing = out.iter().position(|t| t["content"] == content);
        let id = match existing {
            Some(i) => out[i]["id"].as_u64().unwrap_or(idx),
            None => match vocab_id(content).or_else(|| {
                file.iter()
                    .find(|t| t["content"] == content)
                    .and_then(|t| t["id"].as_u64())
            }) {
                Some(id) => id,
                None => {
                    let next = out
                        .iter()
                        .filter_map(|t| t["id"].as_u64())
                        .map(|m| m + 1)
                        .max()
                        .unwrap_or(0)
                        .max(vocab_len as u64);
                    if next != idx {
                        moved.push(format!("{content} ({idx} -> {next})"));
                    }
                    next
                }
            },
        };
        added["id"] = json!(id);
        let before = file.iter().find(|t| t["content"] == content);
        if before
            .map(|b| strip_id(b) != strip_id(&added))
            .unwrap_or(true)
        {
            changed += 1;
        }
        match existing {
            Some(i) => out[i] = added,
            None => out.push(added),
        }
    }
    let dropped: Vec<String> = if replace {
        file.iter()
            .filter(|t| !out.iter().any(|o| o["content"] == t["content"]))
            .filter_map(|t| t["content"].as_str().map(String::from))
            .collect()
    } else {
        Vec::new()
    };
    if changed > 0 {
        notes.push(format!(
            "{changed} added tokens take their flags (normalized, special, lstrip/rstrip) from tokenizer_config.json's added_tokens_decoder, which wins over tokenizer.json"
        ));
    }
    if !dropped.is_empty() {
        notes.push(format!(
            "{} added tokens listed only in tokenizer.json are dropped, as transformers 5 drops them (e.g. {})",
            dropped.len(),
            crate::text::quoted(&dropped[0], 40)
        ));
    }
    if !moved.is_empty() {
        notes.push(format!(
            "{} added tokens get other ids than tokenizer_config.json writes (the next free ids, as transformers assigns them), e.g. {}",
            moved.len(),
            moved[0]
        ));
    }
    tok["added_tokens"] = Value::Array(out);
}

fn strip_id(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("id");
    }
    v
}

/// transformers 4's `update_post_processor`: BOS / EOS from the config's flags.
fn bos_eos_post_processor(tok: &mut Value, config: &Value, class: &str, notes: &mut Vec<String>) {
    let add_bos = config["add_bos_token"].as_bool().unwrap_or(true);
    let add_eos = config["add_eos_token"].as_bool().unwrap_or(false);
    let id_of = |t: &str| -> Option<u64> {
        tok["model"]["vocab"]
            .get(t)
            .and_then(Value::as_u64)
            .or_else(|| {
                tok["added_tokens"]
                    .as_array()?
                    .iter()
                    .find(|a| a["content"] == t)
                    .and_then(|a| a["id"].as_u64())
            })
    };
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Map::new();
    let bos = special_token(config, "bos_token").filter(|_| add_bos);
    let eos = special_token(config, "eos_token").filter(|_| add_eos);
    for (t, first) in [(&bos, true), (&eos, false)] {
        if let Some(t) = t {
            if let Some(id) = id_of(t) {
                specials.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
            }
            let _ = first;
        }
    }
    let special = |t: &String, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq = |s: &str, type_id: u32| json!({"Sequence": {"id": s, "type_id": type_id}});
    if let Some(b) = &bos {
        single.push(special(b, 0));
        pair.push(special(b, 0));
    }
    single.push(seq("A", 0));
    pair.push(seq("A", 0));
    if let Some(e) = &eos {
        single.push(special(e, 0));
        pair.push(special(e, 0));
    }
    if let Some(b) = &bos {
        pair.push(special(b, 1));
    }
    pair.push(seq("B", 1));
    if let Some(e) = &eos {
        pair.push(special(e, 1));
    }
    tok["post_processor"] = json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials});
    notes.push(format!(
        "{class}: transformers 4 rebuilds the post-processor from add_bos_token {add_bos} and add_eos_token {add_eos}"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_llama() -> Value {
        json!({
            "version": "1.0", "truncation": {"max_length": 16, "strategy": "LongestFirst", "stride": 0, "direction": "Right"},
            "padding": null,
            "added_tokens": [
                {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 9, "content": "<x>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false}
            ],
            "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]},
            "pre_tokenizer": null,
            "model": {"type": "BPE", "vocab": {"<unk>": 0, "a": 1}, "merges": []}
        })
    }

    #[test]
    fn llama_pipeline_follows_legacy() {
        for (cfg, scheme) in [
            (
                json!({"tokenizer_class": "LlamaTokenizerFast", "legacy": true}),
                "always",
            ),
            (json!({"tokenizer_class": "LlamaTokenizer"}), "first"),
            (
                json!({"tokenizer_class": "LlamaTokenizer", "legacy": false}),
                "first",
            ),
            (
                json!({"tokenizer_class": "LlamaTokenizer", "add_prefix_space": false}),
                "never",
            ),
        ] {
            let mut t = legacy_llama();
            let notes = apply(&mut t, &cfg, Some("llama"), TokenizerRules::Transformers);
            assert_eq!(t["pre_tokenizer"]["prepend_scheme"], scheme, "{cfg}");
            assert!(t["normalizer"].is_null() && t["truncation"].is_null());
            assert!(notes.iter().any(|n| n.contains("truncation")), "{notes:?}");
            assert!(notes.iter().any(|n| n.contains(scheme)), "{notes:?}");
        }
        // Under transformers 4 or the file's rules the file stands.
        let mut t = legacy_llama();
        apply(
            &mut t,
            &json!({"tokenizer_class": "LlamaTokenizer"}),
            None,
            TokenizerRules::File,
        );
        assert!(t["pre_tokenizer"].is_null());
        // A ByteLevel file under a Llama class loads as written.
        let mut t = legacy_llama();
        t["pre_tokenizer"] = json!({"type": "ByteLevel"});
        apply(
            &mut t,
            &json!({"tokenizer_class": "LlamaTokenizer"}),
            None,
            TokenizerRules::Transformers,
        );
        assert_eq!(t["pre_tokenizer"]["type"], "ByteLevel");
    }

    #[test]
    fn added_tokens_decoder_wins_and_replaces_for_rebuilt_classes() {
        let decoder = json!({
            "0": {"content": "<unk>", "special": true, "normalized": false},
            "9": {"content": "<x>", "special": true, "normalized": false, "rstrip": true},
            "12": {"content": "<z>", "special": false}
        });
        let cfg = json!({"tokenizer_class": "LlamaTokenizer", "added_tokens_decoder": decoder});
        let mut t = legacy_llama();
        let notes = apply(&mut t, &cfg, None, TokenizerRules::Transformers);
        let added = t["added_tokens"].as_array().unwrap();
        let x = added.iter().find(|a| a["content"] == "<x>").unwrap();
        assert_eq!(
            (
                x["id"].as_u64(),
                x["special"].as_bool(),
                x["rstrip"].as_bool()
            ),
            (Some(9), Some(true), Some(true))
        );
        // <z> is new: the next free id (10), not the config's 12.
        let z = added.iter().find(|a| a["content"] == "<z>").unwrap();
        assert_eq!(z["id"], 10);
        assert!(notes.iter().any(|n| n.contains("12 -> 10")), "{notes:?}");
        // A file-only token is dropped by a rebuilt class, kept by TokenizersBackend.
        let only = json!({"0": {"content": "<unk>", "special": true}});
        let mut t = legacy_llama();
        apply(
            &mut t,
            &json!({"tokenizer_class": "LlamaTokenizer", "added_tokens_decoder": only}),
            None,
            TokenizerRules::Transformers,
        );
        assert!(!t["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["content"] == "<x>"));
        let mut t = legacy_llama();
        apply(
            &mut t,
            &json!({"tokenizer_class": "PreTrainedTokenizerFast", "added_tokens_decoder": only}),
            None,
            TokenizerRules::Transformers,
        );
        assert!(t["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["content"] == "<x>"));
    }

    #[test]
    fn transformers4_rebuilds_bos_eos() {
        let mut t = legacy_llama();
        t["model"]["vocab"]["<s>"] = json!(2);
        t["model"]["vocab"]["</s>"] = json!(3);
        let cfg = json!({"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_eos_token": true});
        apply(&mut t, &cfg, None, TokenizerRules::Transformers4);
        let single = t["post_processor"]["single"].as_array().unwrap();
        assert_eq!(single.len(), 3);
        assert_eq!(
            t["post_processor"]["special_tokens"]["</s>"]["ids"],
            json!([3])
        );
        // Unchanged pipeline under transformers 4.
        assert!(t["pre_tokenizer"].is_null());
    }

    #[test]
    fn classes_resolve_as_transformers_does() {
        assert_eq!(
            resolve_class(&Value::Null, Some("qwen3"), true),
            TokenizerClass::Qwen2
        );
        assert_eq!(
            resolve_class(&Value::Null, Some("llama"), false),
            TokenizerClass::File("TokenizersBackend".into())
        );
        assert_eq!(
            resolve_class(
                &json!({"tokenizer_class": "Qwen2TokenizerFast"}),
                None,
                true
            ),
            TokenizerClass::Qwen2
        );
        assert!(matches!(
            resolve_class(
                &json!({"tokenizer_class": "PreTrainedTokenizerFast"}),
                Some("qwen2"),
                true
            ),
            TokenizerClass::File(_)
        ));
    }
}
