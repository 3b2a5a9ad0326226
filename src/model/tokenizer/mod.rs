//! A checkpoint's tokenizer (`tokenizer.json`, read with the `tokenizers` crate, the library
//! transformers' fast tokenizers are) and the prompt style it implies. What transformers changes
//! at load from `tokenizer_config.json` is applied first ([`transformers`]), so a prompt encodes
//! as `AutoTokenizer.from_pretrained(DIR)` encodes it; what was changed is kept for `inspect`.
//!
//! Two prompt styles exist:
//! - **compact**: this project's models. A word-level tokenizer over exactly the specials
//!   (`<pad>`, `<bos>`, `<eos>`, `<sep>`) and the dataset's code tokens; the prompt is
//!   `<bos>` + the history's code tokens + `<sep>`.
//! - **reference**: any real LLM tokenizer (SentencePiece-style or byte-level BPE) with the code
//!   tokens added, as LC-Rec and the method's reference code make them; the prompt is the
//!   instruction template of [`crate::space::REFERENCE_TEMPLATE`], encoded by this tokenizer.
//!
//! The style comes from `config.json`'s `prompt_style` when present (this project writes it),
//! else from the tokenizer: a word-level tokenizer whose every token is a special or a code token
//! is compact, anything else is reference.

pub mod transformers;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use transformers::TokenizerRules;

use crate::ids::vocab::parse_code_token;
use crate::ids::SPECIALS;
use crate::{Error, Result};

/// Files beside tokenizer.json that transformers reads at load.
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
pub const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";
/// Largest tokenizer.json read (Qwen3's is 11 MB, LLaMA-3's 9 MB).
const MAX_TOKENIZER_BYTES: u64 = 64 << 20;
/// Largest tokenizer_config.json / chat template read (LLaMA-3's config is 50 KB).
const MAX_TOKENIZER_CONFIG_BYTES: u64 = 4 << 20;

/// How a model's prompt is built (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptStyle {
    Compact,
    Reference,
}

impl PromptStyle {
    pub fn name(self) -> &'static str {
        match self {
            PromptStyle::Compact => "compact",
            PromptStyle::Reference => "reference",
        }
    }
}

impl std::str::FromStr for PromptStyle {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "compact" => Ok(PromptStyle::Compact),
            "reference" => Ok(PromptStyle::Reference),
            _ => Err(Error::invalid(
                "prompt",
                format!("unknown prompt style {s:?} (compact or reference)"),
            )),
        }
    }
}

/// What kind of tokenizer a checkpoint carries, for `inspect` and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    /// One token per word: this project's compact vocabularies.
    WordLevel,
    /// BPE over bytes (GPT-2, Qwen).
    ByteLevelBpe,
    /// BPE with the `▁` word marker and byte fallback (LLaMA's SentencePiece converted).
    SentencePieceBpe,
    Other(String),
}

impl std::fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenizerKind::WordLevel => write!(f, "word-level"),
            TokenizerKind::ByteLevelBpe => write!(f, "byte-level BPE"),
            TokenizerKind::SentencePieceBpe => write!(f, "SentencePiece-style BPE (byte fallback)"),
            TokenizerKind::Other(s) => write!(f, "{s}"),
        }
    }
}

/// A loaded tokenizer with its vocabulary in id order.
#[derive(Clone)]
pub struct ModelTokenizer {
    pub kind: TokenizerKind,
    inner: Arc<tokenizers::Tokenizer>,
    /// Token text of every id (empty for ids the tokenizer does not define).
    vocab: Vec<String>,
    /// The loading rules applied, and what they changed relative to tokenizer.json.
    pub rules: TokenizerRules,
    pub notes: Vec<String>,
    /// The special tokens tokenizer_config.json (or special_tokens_map.json) names, e.g.
    /// `eos_token` -> `<|endoftext|>`: what a chat template sees, and where EOS comes from.
    pub special_tokens: BTreeMap<String, String>,
    /// The checkpoint's chat template (`chat_template.jinja`, else tokenizer_config.json's
    /// `chat_template`), if it has one.
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for ModelTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTokenizer")
            .field("kind", &self.kind)
            .field("vocab", &self.vocab.len())
            .field("rules", &self.rules)
            .finish()
    }
}

/// Largest vocabulary a tokenizer may declare (ids beyond it are refused before allocating).
const MAX_TOKENS: usize = crate::model::config::MAX_VOCAB;

impl ModelTokenizer {
    /// Reads `tokenizer.json` alone, as written. Errors name the file.
    pub fn from_file(path: &Path) -> Result<ModelTokenizer> {
        let text = read_text(path, MAX_TOKENIZER_BYTES)?;
        Self::from_json_text(&text).map_err(|m| Error::model(path, m))
    }

    /// Reads a checkpoint folder's tokenizer as `rules` load it: tokenizer.json, changed as
    /// tokenizer_config.json makes transformers change it (see [`transformers`]), and the chat
    /// template and special tokens beside it. `model_type` is config.json's (it picks the
    /// tokenizer class when the config names none). Errors name the file.
    pub fn load_dir(
        dir: &Path,
        model_type: Option<&str>,
        rules: TokenizerRules,
    ) -> Result<ModelTokenizer> {
        let path = dir.join(crate::model::checkpoint::TOKENIZER);
        let text = read_text(&path, MAX_TOKENIZER_BYTES)?;
        let mut json: Value = serde_json::from_str(&text)
            .map_err(|e| Error::model(&path, format!("not JSON: {e}")))?;
        let cfg_path = dir.join(TOKENIZER_CONFIG);
        let config: Value = if cfg_path.is_file() {
            let t = read_text(&cfg_path, MAX_TOKENIZER_CONFIG_BYTES)?;
            let v: Value = serde_json::from_str(&t)
                .map_err(|e| Error::model(&cfg_path, format!("not JSON: {e}")))?;
            if !v.is_object() {
                return Err(Error::model(&cfg_path, "is not a JSON object"));
            }
            v
        } else {
            Value::Null
        };
        let notes = transformers::apply(&mut json, &config, model_type, rules);
        let mut tok = Self::from_json_value(&json).map_err(|m| Error::model(&path, m))?;
        tok.rules = rules;
        tok.notes = notes;
        // Special tokens: tokenizer_config.json, else special_tokens_map.json (older saves).
        let map_path = dir.join(SPECIAL_TOKENS_MAP);
        let map: Value = if map_path.is_file() {
            let t = read_text(&map_path, MAX_TOKENIZER_CONFIG_BYTES)?;
            serde_json::from_str(&t)
                .map_err(|e| Error::model(&map_path, format!("not JSON: {e}")))?
        } else {
            Value::Null
        };
        for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            if let Some(t) = transformers::special_token(&config, key)
                .or_else(|| transformers::special_token(&map, key))
            {
                tok.special_tokens.insert(key.to_string(), t);
            }
        }
        // The chat template: chat_template.jinja wins over the config's key (transformers 5).
        let jinja = dir.join(CHAT_TEMPLATE_FILE);
        tok.chat_template = if jinja.is_file() {
            Some(read_text(&jinja, MAX_TOKENIZER_CONFIG_BYTES)?)
        } else {
            match &config["chat_template"] {
                Value::String(s) => Some(s.clone()),
                // A list of named templates: the default one.
                Value::Array(list) => list
                    .iter()
                    .find(|t| t["name"] == "default")
                    .and_then(|t| t["template"].as_str())
                    .map(String::from),
                _ => None,
            }
        };
        Ok(tok)
    }

    /// A tokenizer from the text of a `tokenizer.json`.
    pub fn from_json_text(text: &str) -> std::result::Result<ModelTokenizer, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        Self::from_json_value(&json)
    }

    /// A tokenizer from a parsed `tokenizer.json`.
    fn from_json_value(json: &Value) -> std::result::Result<ModelTokenizer, String> {
        let text = json.to_string();
        let inner: tokenizers::Tokenizer = text
            .parse()
            .map_err(|e| format!("unreadable tokenizer: {e}"))?;
        let map = inner.get_vocab(true);
        let size = map.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        if size > MAX_TOKENS {
            return Err(format!(
                "token ids up to {size} exceed the largest supported vocabulary ({MAX_TOKENS})"
            ));
        }
        let mut vocab = vec![String::new(); size];
        for (t, id) in map {
            vocab[id as usize] = t;
        }
        Ok(ModelTokenizer {
            kind: kind_of(json),
            inner: Arc::new(inner),
            vocab,
            rules: TokenizerRules::File,
            notes: Vec::new(),
            special_tokens: BTreeMap::new(),
            chat_template: None,
        })
    }

    /// The id of a special token tokenizer_config.json names (`eos_token`, `bos_token`, ...).
    pub fn special_id(&self, key: &str) -> Option<u32> {
        self.special_tokens
            .get(key)
            .and_then(|t| self.token_to_id(t))
    }

    /// A word-level tokenizer over exactly `tokens` (specials first): what compact checkpoints
    /// carry, so Python transformers can load them and tokenize `<bos><a_1><b_2>...<sep>`.
    pub fn word_level(tokens: &[String]) -> ModelTokenizer {
        let text = tokenizer_json(tokens).to_string();
        Self::from_json_text(&text).expect("a word-level tokenizer over distinct tokens parses")
    }

    /// Token texts in id order.
    pub fn vocab(&self) -> &[String] {
        &self.vocab
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Encodes `text` as transformers' `tokenizer(text, add_special_tokens=True)` does.
    pub fn encode(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("cannot encode the prompt: {e}"))
    }

    /// Encodes `text` without special tokens (the post-processor adds nothing), as
    /// `tokenizer(text, add_special_tokens=False)` and `apply_chat_template` do.
    pub fn encode_plain(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("cannot encode {}: {e}", crate::text::quoted(text, 60)))
    }

    /// The text of `ids` (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> std::result::Result<String, String> {
        self.inner.decode(ids, false).map_err(|e| e.to_string())
    }

    /// The tokens of `text` as strings (for `inspect`).
    pub fn tokens(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&i| {
                self.vocab
                    .get(i as usize)
                    .cloned()
                    .unwrap_or_else(|| format!("<unk:{i}>"))
            })
            .collect()
    }

    /// The JSON of the tokenizer, for writing it back.
    pub fn to_json(&self) -> std::result::Result<String, String> {
        self.inner.to_string(false).map_err(|e| e.to_string())
    }

    /// Whether this looks like a compact vocabulary: word-level, and every token a special of the
    /// compact prompt or a code token such as `<a_12>`.
    pub fn is_compact(&self) -> bool {
        self.kind == TokenizerKind::WordLevel
            && self
                .vocab
                .iter()
                .all(|t| SPECIALS.contains(&t.as_str()) || parse_code_token(t).is_some())
    }

    /// How many tokens look like item code tokens (`<a_12>`), for `inspect`.
    pub fn code_token_count(&self) -> usize {
        self.vocab
            .iter()
            .filter(|t| parse_code_token(t).is_some())
            .count()
    }
}

/// The prompt style of a checkpoint: `config.json`'s `prompt_style` if it says, else detected
/// from the tokenizer (see the module documentation).
pub fn detect_style(declared: Option<&str>, tok: &ModelTokenizer) -> PromptStyle {
    match declared {
        Some("reference") => PromptStyle::Reference,
        Some(_) => PromptStyle::Compact,
        None if tok.is_compact() => PromptStyle::Compact,
        None => PromptStyle::Reference,
    }
}

/// Reads a text file of at most `max` bytes. Errors name the file.
fn read_text(path: &Path, max: u64) -> Result<String> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > max {
        return Err(Error::model(
            path,
            format!(
                "is {len} bytes, more than the {} MB a tokenizer file may have",
                max >> 20
            ),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

fn kind_of(json: &serde_json::Value) -> TokenizerKind {
    let model = &json["model"];
    let model_type = model["type"].as_str().unwrap_or("");
    let pre = &json["pre_tokenizer"];
    let mentions = |v: &serde_json::Value, ty: &str| v.to_string().contains(&format!("\"{ty}\""));
    match model_type {
        "WordLevel" => TokenizerKind::WordLevel,
        "BPE" if mentions(pre, "ByteLevel") => TokenizerKind::ByteLevelBpe,
        "BPE" if model["byte_fallback"].as_bool() == Some(true) => TokenizerKind::SentencePieceBpe,
        "" => TokenizerKind::Other("unknown".into()),
        other => TokenizerKind::Other(other.to_string()),
    }
}

/// A word-level `tokenizer.json` over exactly `tokens` (specials first).
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
