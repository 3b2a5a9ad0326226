//! A checkpoint's tokenizer (`tokenizer.json`, read with the `tokenizers` crate, the library
//! transformers' fast tokenizers are, so ids agree) and the prompt style it implies.
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

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::vocab::parse_code_token;
use crate::ids::SPECIALS;
use crate::{Error, Result};

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
}

impl std::fmt::Debug for ModelTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTokenizer")
            .field("kind", &self.kind)
            .field("vocab", &self.vocab.len())
            .finish()
    }
}

/// Largest vocabulary a tokenizer may declare (ids beyond it are refused before allocating).
const MAX_TOKENS: usize = crate::model::config::MAX_VOCAB;

impl ModelTokenizer {
    /// Reads `tokenizer.json`. Errors name the file.
    pub fn from_file(path: &Path) -> Result<ModelTokenizer> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_text(&text).map_err(|m| Error::model(path, m))
    }

    /// A tokenizer from the text of a `tokenizer.json`.
    pub fn from_json_text(text: &str) -> std::result::Result<ModelTokenizer, String> {
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
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
            kind: kind_of(&json),
            inner: Arc::new(inner),
            vocab,
        })
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

    /// Encodes `text` without special tokens.
    pub fn encode_plain(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("cannot encode {text:?}: {e}"))
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
