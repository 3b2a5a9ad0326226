//! Recommender profiles: how a framework writes its items into prompts, builds and tokenizes the
//! prompt, and which fixed tokens it generates around the codes (and scores).
//!
//! One [`Profile`] gathers the identifier format, the prompt and the tokenization rules. Built in
//! (`src/profile/builtin/*.toml`, readable as examples): `compact` (this project's models),
//! `lc-rec` (LC-Rec and the AtSpeed reference code; `reference` is its old name), `minionerec`
//! and `openonerec`. Anything else is a TOML or JSON file of the same fields, which may start
//! from a built-in with `extends = "NAME"` and override what differs. Unknown fields are errors
//! naming them. When no profile is asked for, [`detect`] picks one from the checkpoint where
//! that is unambiguous and says why.

pub mod chat;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::TokenizerRules;
use crate::{Error, Result};

/// Built-in profiles, by name, as TOML.
const BUILTIN: [(&str, &str); 4] = [
    ("compact", include_str!("builtin/compact.toml")),
    ("lc-rec", include_str!("builtin/lc-rec.toml")),
    ("minionerec", include_str!("builtin/minionerec.toml")),
    ("openonerec", include_str!("builtin/openonerec.toml")),
];

/// Largest profile file read.
const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// The names of the built-in profiles.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// A recommender profile (see the module documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub prompt: Prompt,
    #[serde(default)]
    pub items: ItemFormat,
    #[serde(default)]
    pub decode: DecodeFormat,
    #[serde(default)]
    pub tokenizer: Tokenization,
}

/// How the prompt is built.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Prompt {
    /// `<bos>` + the history items' code tokens + `<sep>`, in the compact vocabulary's ids.
    Compact,
    /// Text pieces with `{history}` filled in, each encoded on its own and concatenated (as
    /// MiniOneRec's evaluation builds its prompt); a single piece is one plain prompt.
    Text {
        pieces: Vec<String>,
        #[serde(default)]
        special_tokens: SpecialTokens,
    },
    /// The checkpoint's chat template (or `template`, a file relative to the profile's folder)
    /// rendered over a system turn (optional) and a user turn with `{history}` filled in, with
    /// `add_generation_prompt`, then `generation_prefix` appended (text the assistant turn
    /// starts with, prefilled and not scored); encoded without special tokens, as
    /// `apply_chat_template` encodes.
    Chat {
        #[serde(default)]
        system: Option<String>,
        user: String,
        #[serde(default)]
        generation_prefix: String,
        #[serde(default)]
        template: Option<PathBuf>,
        /// Extra template variables (`enable_thinking = false`).
        #[serde(default)]
        variables: BTreeMap<String, Value>,
    },
}

/// Which text pieces get the tokenizer's special tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpecialTokens {
    /// Every piece encoded as `tokenizer(text)` (with the post-processor: LLaMA's BOS).
    #[default]
    All,
    /// No piece gets any (`add_special_tokens=False`).
    None,
    /// The tokenizer's BOS token (when it has one) before the first piece, nothing else:
    /// MiniOneRec's `Tokenizer.encode(bos=True)` / `(bos=False)`.
    BosFirst,
}

/// How one history item is written in a prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ItemFormat {
    /// `{codes}` is the item's code tokens concatenated, `{title}` its title, `{position}` its
    /// 1-based place in the history.
    pub item: String,
    /// Between items.
    pub separator: String,
}

impl Default for ItemFormat {
    fn default() -> Self {
        ItemFormat {
            item: "{codes}".into(),
            separator: ", ".into(),
        }
    }
}

/// What is generated: text before and after the codes (fixed tokens the constraint forces), and
/// the constraint over the codes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeFormat {
    /// Generated before the codes (forced). `{eos}`, `{bos}` stand for the tokenizer's tokens.
    pub before: String,
    /// Generated after the codes (forced): MiniOneRec's `"\n{eos}"`.
    pub after: String,
    /// Whether the fixed tokens are generated and their log-probabilities count in the beams'
    /// scores, as the framework's own beam search counts them (default). `false` leaves them
    /// out: `before` is appended to the prompt and `after` is not generated, so beams are ranked
    /// on the codes alone (and a forced suffix costs no pass).
    pub score_fixed: Option<bool>,
    pub constraint: Constraint,
}

impl DecodeFormat {
    pub fn scores_fixed(&self) -> bool {
        self.score_fixed.unwrap_or(true)
    }
}

/// The decoding constraint over the codes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Constraint {
    /// A prefix trie of the catalogue's identifiers: only real items.
    #[default]
    Trie,
    /// Any code of level l at level l (LC-Rec's own evaluation): invalid items possible.
    PerLevel,
}

/// How the prompt's text is tokenized.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tokenization {
    /// `transformers` (5.x, the default), `transformers4`, or `tokenizer.json` as written.
    pub rules: Option<TokenizerRules>,
}

/// What the user asked for: a built-in name or a file.
#[derive(Clone, Debug, PartialEq)]
pub enum ProfileChoice {
    Builtin(String),
    File(PathBuf),
}

impl ProfileChoice {
    /// A built-in name (`reference` is `lc-rec`), else a path to a TOML or JSON file.
    pub fn parse(s: &str) -> ProfileChoice {
        let name = if s == "reference" { "lc-rec" } else { s };
        if BUILTIN.iter().any(|(n, _)| *n == name) {
            ProfileChoice::Builtin(name.to_string())
        } else {
            ProfileChoice::File(PathBuf::from(s))
        }
    }
}

impl Profile {
    /// A built-in profile by name.
    pub fn builtin(name: &str) -> Option<Profile> {
        let text = BUILTIN.iter().find(|(n, _)| *n == name)?.1;
        let v = toml_to_json(text).expect("built-in profiles are valid TOML");
        Some(from_value(v).expect("built-in profiles are valid"))
    }

    /// Loads what `choice` names; a file's relative paths (`template`) resolve against its
    /// folder. Errors name the file and the field.
    pub fn load(choice: &ProfileChoice) -> Result<Profile> {
        match choice {
            ProfileChoice::Builtin(name) => Profile::builtin(name).ok_or_else(|| {
                Error::invalid("profile", format!("unknown built-in profile {name:?}"))
            }),
            ProfileChoice::File(path) => Profile::from_file(path),
        }
    }

    /// Reads a profile file (`.toml`, else JSON).
    pub fn from_file(path: &Path) -> Result<Profile> {
        if !path.is_file() {
            return Err(Error::invalid(
                "profile",
                format!(
                    "{} is neither a built-in profile ({}) nor a profile file",
                    path.display(),
                    builtin_names().join(", ")
                ),
            ));
        }
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if len > MAX_PROFILE_BYTES {
            return Err(Error::data(path, format!("is {len} bytes: not a profile")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut v = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| Error::data(path, format!("not JSON: {e}")))?
        } else {
            toml_to_json(&text).map_err(|m| Error::data(path, m))?
        };
        if let Some(base) = v.get("extends").cloned() {
            let name = base.as_str().ok_or_else(|| {
                Error::data(path, "extends: must be the name of a built-in profile")
            })?;
            let text = BUILTIN
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| {
                    Error::data(
                        path,
                        format!(
                            "extends: {name:?} is not a built-in profile ({})",
                            builtin_names().join(", ")
                        ),
                    )
                })?
                .1;
            let mut merged = toml_to_json(text).expect("built-in profiles are valid TOML");
            v.as_object_mut().map(|o| o.remove("extends"));
            // A different prompt kind replaces the base's prompt instead of merging into it.
            if v["prompt"]["kind"].is_string() && v["prompt"]["kind"] != merged["prompt"]["kind"] {
                merged["prompt"] = Value::Null;
            }
            merge(&mut merged, v);
            v = merged;
        }
        let mut p = from_value(v).map_err(|m| Error::data(path, m))?;
        if let Prompt::Chat {
            template: Some(t), ..
        } = &mut p.prompt
        {
            if t.is_relative() {
                *t = path.parent().unwrap_or(Path::new(".")).join(&*t);
            }
        }
        p.check().map_err(|m| Error::data(path, m))?;
        Ok(p)
    }

    /// Checks what serde cannot: the placeholders of every text.
    pub fn check(&self) -> std::result::Result<(), String> {
        let pieces: Vec<&String> = match &self.prompt {
            Prompt::Compact => Vec::new(),
            Prompt::Text { pieces, .. } => {
                if pieces.is_empty() {
                    return Err("prompt.pieces: at least one piece".into());
                }
                pieces.iter().collect()
            }
            Prompt::Chat { user, .. } => vec![user],
        };
        if !pieces.is_empty() && !pieces.iter().any(|p| p.contains("{history}")) {
            return Err(
                "prompt: no piece holds {history}, so the history would not be in the prompt"
                    .into(),
            );
        }
        if !self.items.item.contains("{codes}") && !matches!(self.prompt, Prompt::Compact) {
            return Err("items.item: must hold {codes}".into());
        }
        Ok(())
    }

    /// The tokenizer rules this profile asks for (transformers 5 unless it says otherwise).
    pub fn rules(&self) -> TokenizerRules {
        self.tokenizer.rules.unwrap_or_default()
    }

    /// The profile as TOML, for `inspect` and for copying into a file of one's own.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot write the profile: {e}"))
    }
}

fn from_value(v: Value) -> std::result::Result<Profile, String> {
    serde_json::from_value(v).map_err(|e| format!("not a recommender profile: {e}"))
}

fn toml_to_json(text: &str) -> std::result::Result<Value, String> {
    let t: toml::Table = toml::from_str(text).map_err(|e| format!("not TOML: {e}"))?;
    serde_json::to_value(t).map_err(|e| format!("not a profile: {e}"))
}

/// Deep merge of objects: `over`'s values win, objects merge key by key.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// Why a profile was chosen, for `inspect` and headers.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub profile: Profile,
    pub why: String,
}

/// What the detection reads of a checkpoint.
pub struct Clues<'a> {
    /// A word-level vocabulary of exactly the specials and code tokens.
    pub compact: bool,
    /// config.json's `prompt_style` (this project writes it).
    pub declared: Option<&'a str>,
    /// Whether the tokenizer has OpenOneRec's `<|sid_begin|>` and `<|sid_end|>`.
    pub sid_markers: bool,
    pub has_chat_template: bool,
    /// The dataset's identifier length L.
    pub levels: usize,
}

/// The profile for a checkpoint when none was asked for, and why. Only unambiguous signs are
/// used: this project's compact vocabulary; OpenOneRec's SID markers; three-level identifiers on
/// an LLM tokenizer (MiniOneRec's; LC-Rec's are four-level); otherwise LC-Rec.
pub fn detect(c: &Clues) -> Resolved {
    let (name, why) = match c.declared {
        Some("compact") => ("compact", "config.json says prompt_style compact".to_string()),
        Some("reference") => ("lc-rec", "config.json says prompt_style reference (LC-Rec)".to_string()),
        _ if c.compact => (
            "compact",
            "a word-level tokenizer of exactly the specials and code tokens (this project's models)".to_string(),
        ),
        _ if c.sid_markers && c.has_chat_template => (
            "openonerec",
            "the tokenizer has <|sid_begin|> and <|sid_end|> and a chat template (OpenOneRec)".to_string(),
        ),
        _ if c.levels == 3 => (
            "minionerec",
            "3-level identifiers on an LLM tokenizer (MiniOneRec's layout; LC-Rec's are 4-level): --profile lc-rec to use LC-Rec's prompt".to_string(),
        ),
        _ => (
            "lc-rec",
            format!(
                "an LLM tokenizer with {}-level identifiers (LC-Rec's layout); --profile chooses another",
                c.levels
            ),
        ),
    };
    Resolved {
        profile: Profile::builtin(name).expect("built-in"),
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_round_trip() {
        for name in builtin_names() {
            let p = Profile::builtin(name).unwrap();
            assert_eq!(p.name, name);
            p.check().unwrap();
            let back: Profile = toml::from_str(&p.to_toml()).unwrap();
            assert_eq!(back, p, "{name}");
        }
        let m = Profile::builtin("minionerec").unwrap();
        assert_eq!(m.decode.after, "\n{eos}");
        assert!(
            matches!(m.prompt, Prompt::Text { ref pieces, special_tokens: SpecialTokens::BosFirst } if pieces.len() == 2)
        );
        assert_eq!(
            ProfileChoice::parse("reference"),
            ProfileChoice::Builtin("lc-rec".into())
        );
    }

    #[test]
    fn files_extend_builtins_and_unknown_fields_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("mine.toml");
        std::fs::write(&f, "extends = \"lc-rec\"\nname = \"lc-rec-eval\"\n[decode]\nafter = \"{eos}\"\nconstraint = \"per-level\"\n").unwrap();
        let p = Profile::from_file(&f).unwrap();
        assert_eq!(
            (p.name.as_str(), p.decode.after.as_str()),
            ("lc-rec-eval", "{eos}")
        );
        assert_eq!(p.decode.constraint, Constraint::PerLevel);
        assert!(matches!(p.prompt, Prompt::Text { .. }));
        std::fs::write(
            &f,
            "extends = \"lc-rec\"\nname = \"x\"\n[decode]\nafterwards = \"\"\n",
        )
        .unwrap();
        let e = Profile::from_file(&f).unwrap_err().to_string();
        assert!(e.contains("mine.toml") && e.contains("afterwards"), "{e}");
        std::fs::write(
            &f,
            "name = \"x\"\n[prompt]\nkind = \"text\"\npieces = [\"no history\"]\n",
        )
        .unwrap();
        let e = Profile::from_file(&f).unwrap_err().to_string();
        assert!(e.contains("{history}"), "{e}");
        let j = dir.path().join("chat.json");
        std::fs::write(
            &j,
            r#"{"extends": "openonerec", "name": "o", "prompt": {"template": "t.jinja"}}"#,
        )
        .unwrap();
        match Profile::from_file(&j).unwrap().prompt {
            Prompt::Chat {
                template: Some(t),
                generation_prefix,
                ..
            } => {
                assert_eq!(t, dir.path().join("t.jinja"));
                assert_eq!(generation_prefix, "<|sid_begin|>");
            }
            other => panic!("{other:?}"),
        }
        let e = Profile::load(&ProfileChoice::parse("/nonexistent/p.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither a built-in"), "{e}");
    }

    #[test]
    fn detection_says_why() {
        let c = |compact, sid, levels| Clues {
            compact,
            declared: None,
            sid_markers: sid,
            has_chat_template: true,
            levels,
        };
        assert_eq!(detect(&c(true, false, 4)).profile.name, "compact");
        assert_eq!(detect(&c(false, true, 3)).profile.name, "openonerec");
        assert_eq!(detect(&c(false, false, 3)).profile.name, "minionerec");
        let r = detect(&c(false, false, 4));
        assert_eq!(r.profile.name, "lc-rec");
        assert!(r.why.contains("4-level"));
    }
}
