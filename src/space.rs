//! A model's token space for a dataset: which model token each item code is, the prompt the model
//! expects, and the decoding constraint over the model's own token ids.
//!
//! The dataset keeps identifiers as code strings (interned as its compact vocabulary ids); the
//! model side maps them here, so one dataset serves models of any prompt style. Code tokens are
//! looked up by their string in the model's tokenizer, never computed: LC-Rec adds only the codes
//! its index uses, in string order, after the base vocabulary. A dataset code the tokenizer lacks
//! is an error naming the token and the checkpoint.
//!
//! The recommender [`Profile`] says how prompts are built (compact ids, text pieces, or the
//! checkpoint's chat template), how items are written in them, the tokenizer's loading rules,
//! and the fixed tokens generated around the codes (MiniOneRec's `\n` + EOS), which the
//! constraint forces and the beams' scores include. Decoding runs in model ids throughout (prompt,
//! trie, traces); [`TokenSpace::identifier`] maps a generated sequence back to the dataset's
//! identifier for metrics and titles. Generated code tokens are always the code tokens' own ids,
//! however the prompt's text tokenizes.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::data::Dataset;
use crate::ids::{Identifier, PrefixAutomaton, SPECIALS};
use crate::model::{Llm, ModelConfig, ModelTokenizer, PromptStyle, TokenizerRules};
use crate::profile::chat::{self, Message};
use crate::profile::{self, Constraint, Profile, ProfileChoice, Prompt, SpecialTokens};
use crate::text::quoted;
use crate::{Error, Result};

/// The reference prompt (LC-Rec's instruction template, as the method's reference code fills it):
/// `{history}` is each history item's code tokens concatenated (`<a_1><b_2><c_3><d_4>`), items
/// joined by `", "`, oldest first. Encoded with the tokenizer's special tokens (BOS where the
/// tokenizer adds one), no trailing space or newline. (The `lc-rec` profile's one piece.)
pub const REFERENCE_TEMPLATE: &str = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nThe user has interacted with items {history} in chronological order. Can you predict the next possible item that the user may expect?\n\n### Response:";

/// What a token space needs of a model: its name, config, tokenizer and style, not its weights
/// (so `inspect` can build one for a 7B checkpoint from its files alone).
#[derive(Clone, Copy)]
pub struct ModelView<'a> {
    /// The model's folder (or name), for errors.
    pub path: &'a std::path::Path,
    pub config: &'a ModelConfig,
    pub tokenizer: &'a ModelTokenizer,
    /// Where the tokenizer files are, to read them again under other rules.
    pub tokenizer_dir: Option<&'a std::path::Path>,
    pub style: PromptStyle,
}

impl<'a> ModelView<'a> {
    pub fn of(llm: &'a Llm, path: &'a std::path::Path) -> Self {
        ModelView {
            path,
            config: llm.config(),
            tokenizer: &llm.tokenizer,
            tokenizer_dir: llm.tokenizer_dir.as_deref(),
            style: llm.style,
        }
    }
}

fn model_path(llm: &Llm) -> PathBuf {
    llm.dir.clone().unwrap_or_else(|| PathBuf::from(&llm.name))
}

/// Fails unless `model` was trained on exactly the dataset's vocabulary: same tokens, same ids.
/// The error names the first token that differs.
pub fn check_vocab(model: &Llm, data: &Dataset) -> Result<()> {
    check_tokens(&model.vocab, &model_path(model), data)
}

fn check_tokens(mine: &[String], path: &std::path::Path, data: &Dataset) -> Result<()> {
    let theirs = data.vocab.tokens();
    if mine == theirs {
        return Ok(());
    }
    let first = mine.iter().zip(theirs).position(|(a, b)| a != b);
    let detail = match first {
        Some(i) => format!(
            "token id {i} is {} in the model but {} in the dataset",
            quoted(&mine[i], 40),
            quoted(&theirs[i], 40)
        ),
        None => format!(
            "the model has {} tokens, the dataset {}",
            mine.len(),
            theirs.len()
        ),
    };
    Err(Error::model(
        path,
        format!(
            "vocabulary does not match dataset {} ({detail})",
            data.dir.display()
        ),
    ))
}

/// What the caller chose for a token space; `None`s are detected or taken from the profile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpaceOptions {
    pub profile: Option<ProfileChoice>,
    /// Overrides the profile's tokenizer rules.
    pub rules: Option<TokenizerRules>,
    /// Overrides the profile's `decode.score_fixed`.
    pub score_fixed: Option<bool>,
}

/// A model's view of a dataset (see the module documentation).
#[derive(Clone, Debug)]
pub struct TokenSpace {
    /// Compact vocabulary or an LLM tokenizer.
    pub style: PromptStyle,
    pub profile: Profile,
    /// Why this profile (detected, or asked for).
    pub profile_why: String,
    /// Model token id of every dataset vocabulary id (`None` for the dataset's specials with an
    /// LLM tokenizer, whose prompts do not use them).
    model_of: Vec<Option<u32>>,
    /// Dataset vocabulary id of every model token that is an item code.
    data_of: HashMap<u32, u32>,
    /// The decoding constraint over the model's ids: the fixed tokens before the codes, the
    /// codes (a trie of every item, or per level), the fixed tokens after.
    pub trie: PrefixAutomaton,
    /// Fixed tokens generated before and after the codes (forced; scored).
    pub before: Vec<u32>,
    pub after: Vec<u32>,
    /// Text appended to the prompt: the profile's `before` when fixed tokens are not scored.
    prompt_suffix: String,
    /// The chat template a chat profile renders.
    chat_template: Option<String>,
    /// Compact style: the model's `<bos>` and `<sep>`.
    bos: u32,
    sep: u32,
    tokenizer: ModelTokenizer,
    /// Identifier levels L.
    levels: usize,
    /// What loading found worth saying (code tokens split in the prompt, the fixed tokens).
    pub notes: Vec<String>,
    /// The model's name, for errors.
    model: PathBuf,
}

impl TokenSpace {
    /// Maps the dataset's codes into `llm`'s tokens with the detected profile.
    pub fn new(data: &Dataset, llm: &Llm) -> Result<TokenSpace> {
        Self::with_options(data, llm, &SpaceOptions::default())
    }

    /// Maps the dataset's codes into `llm`'s tokens with the profile `opts` chooses (detected
    /// when it chooses none).
    pub fn with_options(data: &Dataset, llm: &Llm, opts: &SpaceOptions) -> Result<TokenSpace> {
        let path = model_path(llm);
        Self::of_view(data, ModelView::of(llm, &path), opts)
    }

    /// [`TokenSpace::with_options`] for a model described by its files.
    pub fn of_view(data: &Dataset, llm: ModelView, opts: &SpaceOptions) -> Result<TokenSpace> {
        let resolved = match &opts.profile {
            Some(choice) => profile::Resolved {
                profile: Profile::load(choice)?,
                why: "chosen with --profile".into(),
            },
            None => profile::detect(&profile::Clues {
                compact: llm.style == PromptStyle::Compact,
                declared: llm.config.prompt_style.as_deref(),
                sid_markers: llm.tokenizer.token_to_id("<|sid_begin|>").is_some()
                    && llm.tokenizer.token_to_id("<|sid_end|>").is_some(),
                has_chat_template: llm.tokenizer.chat_template.is_some(),
                levels: data.levels,
            }),
        };
        let mut profile = resolved.profile;
        if let Some(f) = opts.score_fixed {
            profile.decode.score_fixed = Some(f);
        }
        if let Some(r) = opts.rules {
            profile.tokenizer.rules = Some(r);
        }
        Self::build(data, llm, profile, resolved.why)
    }

    /// The draft's view of the dataset under the target's profile (a draft is prompted exactly
    /// as its target).
    pub fn for_draft(&self, data: &Dataset, draft: &Llm) -> Result<TokenSpace> {
        let path = model_path(draft);
        Self::build(
            data,
            ModelView::of(draft, &path),
            self.profile.clone(),
            self.profile_why.clone(),
        )
    }

    fn build(data: &Dataset, llm: ModelView, profile: Profile, why: String) -> Result<TokenSpace> {
        let model = llm.path.to_path_buf();
        let compact_profile = matches!(profile.prompt, Prompt::Compact);
        if compact_profile != (llm.style == PromptStyle::Compact) {
            return Err(Error::invalid(
                "profile",
                if compact_profile {
                    format!("{} has an LLM tokenizer; the compact profile needs this project's word-level vocabulary", model.display())
                } else {
                    format!("{} has a compact word-level vocabulary, which cannot encode the {} profile's text", model.display(), profile.name)
                },
            ));
        }
        // The tokenizer as the profile's rules load it.
        let rules = profile.rules();
        let tokenizer = match (llm.tokenizer_dir, llm.style) {
            (Some(dir), PromptStyle::Reference) if rules != llm.tokenizer.rules => {
                ModelTokenizer::load_dir(dir, Some(&llm.config.model_type), rules)?
            }
            _ => llm.tokenizer.clone(),
        };
        if llm.style == PromptStyle::Reference {
            check_markers(&profile, &tokenizer, &model)?;
        }
        let vocab_size = llm.config.vocab_size as u32;
        let lookup = |token: &str| -> Result<u32> {
            match tokenizer.token_to_id(token) {
                Some(id) if id < vocab_size => Ok(id),
                Some(id) => Err(Error::model(
                    &model,
                    format!(
                        "token {token} has id {id}, beyond the model's {vocab_size} embedding rows"
                    ),
                )),
                None => Err(Error::model(
                    &model,
                    format!(
                        "the tokenizer has no token {} for an item code of dataset {} ({})",
                        quoted(token, 40),
                        data.dir.display(),
                        match llm.style {
                            PromptStyle::Reference => "add the dataset's code tokens to the tokenizer, as LC-Rec does, and fine-tune",
                            PromptStyle::Compact => "the model was trained on another catalogue",
                        }
                    ),
                )),
            }
        };
        // A compact model's vocabulary is the dataset's own, id for id: trained on it, and
        // sessions print its tokens with the dataset's vocabulary.
        if llm.style == PromptStyle::Compact {
            check_tokens(llm.tokenizer.vocab(), &model, data)?;
        }
        let mut model_of = Vec::with_capacity(data.vocab.len());
        let mut data_of = HashMap::new();
        for (id, token) in data.vocab.tokens().iter().enumerate() {
            let special = SPECIALS.contains(&token.as_str());
            let m = match (special, llm.style) {
                (true, PromptStyle::Reference) => None,
                _ => Some(lookup(token)?),
            };
            if let (Some(m), false) = (m, special) {
                data_of.insert(m, id as u32);
            }
            model_of.push(m);
        }
        let (bos, sep) = match llm.style {
            PromptStyle::Compact => (lookup(SPECIALS[1])?, lookup(SPECIALS[3])?),
            PromptStyle::Reference => (0, 0),
        };
        let map = |ident: &Identifier| -> Identifier {
            ident.map(|t| model_of[t as usize].expect("codes are mapped"))
        };
        let mut notes = Vec::new();
        // The fixed tokens around the codes, tokenized in context (the text after a code token
        // tokenizes as it does after the codes in the framework's own constraint).
        let fill = |text: &str| {
            fill_specials(text, &tokenizer, llm.config).map_err(|m| Error::model(&model, m))
        };
        let (before, after, prompt_suffix) = match (&profile.prompt, profile.decode.scores_fixed())
        {
            (Prompt::Compact, _) => (Vec::new(), Vec::new(), String::new()),
            (_, true) => {
                let first = data
                    .items
                    .first()
                    .ok_or_else(|| Error::data(&data.dir, "no items"))?;
                let (b, a) = fixed_tokens(
                    &tokenizer,
                    &fill(&profile.decode.before)?,
                    &data.vocab.render(first),
                    map(first).as_slice(),
                    &fill(&profile.decode.after)?,
                )
                .map_err(|m| Error::model(&model, m))?;
                (b, a, String::new())
            }
            (_, false) => (Vec::new(), Vec::new(), fill(&profile.decode.before)?),
        };
        if !before.is_empty() || !after.is_empty() {
            let show = |ids: &[u32]| -> String {
                tokenizer
                    .tokens(ids)
                    .iter()
                    .map(|t| quoted(t, 20))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            notes.push(format!(
                "fixed tokens generated around the codes (forced by the constraint, scored): before [{}], after [{}]",
                show(&before),
                show(&after)
            ));
        }
        let seqs: Vec<Vec<u32>> = data
            .items
            .iter()
            .map(|i| [before.as_slice(), map(i).as_slice(), after.as_slice()].concat())
            .collect();
        let trie = match profile.decode.constraint {
            Constraint::Trie => PrefixAutomaton::trie(&seqs),
            Constraint::PerLevel => {
                let mut sets: Vec<Vec<u32>> = before.iter().map(|&t| vec![t]).collect();
                for l in 0..data.levels {
                    let mut s: Vec<u32> = data.items.iter().map(|i| map(i)[l]).collect();
                    s.sort_unstable();
                    s.dedup();
                    sets.push(s);
                }
                sets.extend(after.iter().map(|&t| vec![t]));
                PrefixAutomaton::per_depth(&sets)
            }
        }
        .map_err(|m| Error::data(&data.dir, m))?;
        let chat_template = match &profile.prompt {
            Prompt::Chat { template: Some(path), .. } => Some(
                std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?,
            ),
            Prompt::Chat { .. } => Some(tokenizer.chat_template.clone().ok_or_else(|| {
                Error::model(
                    &model,
                    format!(
                        "has no chat template (chat_template.jinja, or tokenizer_config.json's chat_template), which the {} profile renders: give one with a profile's prompt.template",
                        profile.name
                    ),
                )
            })?),
            _ => None,
        };
        let space = TokenSpace {
            style: llm.style,
            profile,
            profile_why: why,
            trie,
            before,
            after,
            prompt_suffix,
            chat_template,
            model_of,
            data_of,
            bos,
            sep,
            levels: data.levels,
            tokenizer,
            notes,
            model,
        };
        let mut space = space;
        if llm.style == PromptStyle::Reference {
            // The prompt must render (a broken chat template fails here, not mid-run), and
            // whether the history's code tokens stay whole is worth saying.
            let probe: Vec<u32> = (0..data.num_items().min(3) as u32).collect();
            space.prompt(data, &probe)?;
            if let Some(n) = space.split_note(data) {
                space.notes.push(n);
            }
            space.notes.extend(space.tokenizer.notes.iter().cloned());
        }
        Ok(space)
    }

    /// The tokenizer the prompts are encoded with.
    pub fn tokenizer(&self) -> &ModelTokenizer {
        &self.tokenizer
    }

    /// What `inspect` says of the token space: the profile and why, the tokenizer rules and what
    /// they changed, the fixed tokens, the constraint.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "  profile        {} ({})\n",
            self.profile.name, self.profile_why
        );
        if !self.profile.description.is_empty() {
            out.push_str(&format!("                 {}\n", self.profile.description));
        }
        if self.style == PromptStyle::Reference {
            out.push_str(&format!(
                "  tokenizer as   {} rules{}\n",
                self.tokenizer.rules.name(),
                match self.tokenizer.rules {
                    TokenizerRules::Transformers =>
                        " (AutoTokenizer.from_pretrained in transformers 5)",
                    TokenizerRules::Transformers4 => " (AutoTokenizer in transformers 4)",
                    TokenizerRules::File => " (tokenizer.json as written)",
                }
            ));
        }
        out.push_str(&format!(
            "  decoding       {} tokens per item ({} codes{}), {} constraint{}\n",
            self.trie.depth(),
            self.levels,
            if self.before.is_empty() && self.after.is_empty() {
                String::new()
            } else {
                format!(" + {} fixed", self.before.len() + self.after.len())
            },
            match self.profile.decode.constraint {
                Constraint::Trie => "trie",
                Constraint::PerLevel => "per-level",
            },
            if self.profile.decode.scores_fixed()
                || self.profile.decode.before.is_empty() && self.profile.decode.after.is_empty()
            {
                ""
            } else {
                "; fixed tokens skipped (--fixed-tokens skipped)"
            }
        ));
        for n in &self.notes {
            out.push_str(&format!("  note           {n}\n"));
        }
        out
    }

    /// A user's exact prompt for `inspect --user`: its text (pieces marked) and ids.
    pub fn describe_prompt(&self, data: &Dataset, history: &[u32]) -> Result<String> {
        let ids = self.prompt(data, history)?;
        let mut out = String::new();
        let pieces = self.prompt_pieces(data, history)?;
        if pieces.len() > 1 {
            out.push_str(&format!(
                "  prompt text    {} pieces, each encoded on its own:\n",
                pieces.len()
            ));
        } else {
            out.push_str("  prompt text\n");
        }
        for (i, (text, mode)) in pieces.iter().enumerate() {
            let how = match mode {
                SpecialTokens::All => "with the tokenizer's special tokens",
                SpecialTokens::None => "without special tokens",
                SpecialTokens::BosFirst => "BOS first, no other special tokens",
            };
            out.push_str(&format!("    [{}] ({how}) {:?}\n", i + 1, text));
        }
        let toks = match self.style {
            PromptStyle::Reference => self.tokenizer.tokens(&ids),
            PromptStyle::Compact => ids
                .iter()
                .map(|&i| data.vocab.token(i).into_owned())
                .collect(),
        };
        out.push_str(&format!("  prompt ids     {} tokens: {ids:?}\n", ids.len()));
        out.push_str(&format!("  prompt tokens  {}\n", toks.join(" ")));
        Ok(out)
    }

    /// Says how many of the dataset's code tokens the prompt's tokenization splits into pieces
    /// (each checked at the start of a text and right after another code): transformers encodes
    /// them the same way, so a model fine-tuned with this tokenizer saw them so.
    fn split_note(&self, data: &Dataset) -> Option<String> {
        let codes: Vec<(u32, &str)> = data
            .vocab
            .tokens()
            .iter()
            .enumerate()
            .filter(|(_, t)| !SPECIALS.contains(&t.as_str()))
            .map(|(i, t)| (self.model_of[i].unwrap_or(0), t.as_str()))
            .collect();
        let anchor = codes.first()?;
        let mut split = Vec::new();
        for &(id, text) in &codes {
            let alone = self.tokenizer.encode_plain(text).ok()?;
            let after = self
                .tokenizer
                .encode_plain(&format!("{}{text}", anchor.1))
                .ok()?;
            let whole = alone == [id] && after == [anchor.0, id];
            if !whole {
                split.push((text, after));
            }
        }
        let (text, pieces) = split.first()?;
        Some(format!(
            "{} of {} code tokens encode in pieces in prompts under these tokenizer rules (e.g. {}{} -> {}); transformers does the same, so the model saw them so. Generated codes are the code tokens' own ids",
            split.len(),
            codes.len(),
            anchor.1,
            text,
            self.tokenizer.tokens(pieces).join(" ")
        ))
    }

    /// The history's items written as the profile writes them, joined.
    fn history_text(&self, data: &Dataset, history: &[u32]) -> Result<String> {
        let items: Vec<String> = history
            .iter()
            .enumerate()
            .map(|(i, &item)| {
                let ident = data.items.get(item as usize).ok_or_else(|| {
                    Error::invalid("history", format!("item {item} is not in the dataset"))
                })?;
                Ok(self
                    .profile
                    .items
                    .item
                    .replace("{codes}", &data.vocab.render(ident))
                    .replace("{title}", &data.title(item))
                    .replace("{position}", &(i + 1).to_string()))
            })
            .collect::<Result<_>>()?;
        Ok(items.join(&self.profile.items.separator))
    }

    /// The prompt's text pieces, each with whether it is encoded with the tokenizer's special
    /// tokens (text and chat profiles; empty for compact).
    pub fn prompt_pieces(
        &self,
        data: &Dataset,
        history: &[u32],
    ) -> Result<Vec<(String, SpecialTokens)>> {
        let hist = self.history_text(data, history)?;
        let mut out = match &self.profile.prompt {
            Prompt::Compact => return Ok(Vec::new()),
            Prompt::Text {
                pieces,
                special_tokens,
            } => pieces
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let mode = match special_tokens {
                        SpecialTokens::BosFirst if i > 0 => SpecialTokens::None,
                        m => *m,
                    };
                    (p.replace("{history}", &hist), mode)
                })
                .collect::<Vec<_>>(),
            Prompt::Chat {
                system,
                user,
                generation_prefix,
                variables,
                ..
            } => {
                let mut messages = Vec::new();
                if let Some(s) = system.as_ref().filter(|s| !s.is_empty()) {
                    messages.push(Message {
                        role: "system".into(),
                        content: s.replace("{history}", &hist),
                    });
                }
                messages.push(Message {
                    role: "user".into(),
                    content: user.replace("{history}", &hist),
                });
                let template = self.chat_template.as_deref().unwrap_or_default();
                let text = chat::render(
                    template,
                    &messages,
                    true,
                    &self.tokenizer.special_tokens,
                    variables,
                )
                .map_err(|m| Error::model(&self.model, m))?;
                vec![(format!("{text}{generation_prefix}"), SpecialTokens::None)]
            }
        };
        if let Some(last) = out.last_mut() {
            last.0.push_str(&self.prompt_suffix);
        }
        Ok(out)
    }

    /// The prompt for a history (0-based items, oldest first), in model ids.
    pub fn prompt(&self, data: &Dataset, history: &[u32]) -> Result<Vec<u32>> {
        if let Prompt::Compact = self.profile.prompt {
            let mut out = Vec::with_capacity(history.len() * data.levels + 2);
            out.push(self.bos);
            for &item in history {
                let ident = data.items.get(item as usize).ok_or_else(|| {
                    Error::invalid("history", format!("item {item} is not in the dataset"))
                })?;
                for &t in ident.iter() {
                    out.push(self.model_of[t as usize].expect("codes are mapped"));
                }
            }
            out.push(self.sep);
            return Ok(out);
        }
        let mut out = Vec::new();
        for (text, mode) in self.prompt_pieces(data, history)? {
            let ids = match mode {
                SpecialTokens::All => self.tokenizer.encode(&text),
                SpecialTokens::None => self.tokenizer.encode_plain(&text),
                SpecialTokens::BosFirst => self.tokenizer.encode_plain(&text).map(|ids| {
                    let bos = self.tokenizer.special_id("bos_token");
                    bos.into_iter().chain(ids).collect()
                }),
            }
            .map_err(|m| Error::model(&self.model, m))?;
            out.extend(ids);
        }
        Ok(out)
    }

    /// The dataset identifier of a generated sequence (model ids, fixed tokens included), if
    /// it is one.
    pub fn identifier(&self, tokens: &[u32]) -> Option<Identifier> {
        if tokens.len() != self.trie.depth() {
            return None;
        }
        let codes = tokens.get(self.before.len()..self.before.len() + self.levels)?;
        let ids: Option<Vec<u32>> = codes.iter().map(|t| self.data_of.get(t).copied()).collect();
        Identifier::new(&ids?)
    }

    /// A dataset identifier in the model's token ids (the codes alone).
    pub fn model_tokens(&self, ident: &Identifier) -> Identifier {
        ident.map(|t| self.model_of[t as usize].expect("codes are mapped"))
    }

    /// The whole generated sequence of an item: fixed tokens and codes, in model ids.
    pub fn sequence(&self, ident: &Identifier) -> Vec<u32> {
        [
            self.before.as_slice(),
            self.model_tokens(ident).as_slice(),
            self.after.as_slice(),
        ]
        .concat()
    }

    /// The identifiers of ranked beams, in order, skipping anything that is not one.
    pub fn identifiers<'a>(
        &self,
        beams: impl IntoIterator<Item = &'a crate::decode::BeamView>,
    ) -> Vec<Identifier> {
        beams
            .into_iter()
            .filter_map(|b| self.identifier(&b.tokens))
            .collect()
    }

    /// The model token of each dataset code token and fixed token, by model id: what a session
    /// needs to print generated tokens without the model.
    pub fn code_names(&self, data: &Dataset) -> Vec<(u32, String)> {
        let mut v: Vec<(u32, String)> = self
            .data_of
            .iter()
            .map(|(&m, &d)| (m, data.vocab.token(d).into_owned()))
            .collect();
        for &t in self.before.iter().chain(&self.after) {
            if !v.iter().any(|(id, _)| *id == t) {
                v.push((t, fixed_name(&self.tokenizer, t)));
            }
        }
        v.sort();
        v
    }

    /// Fails unless `draft` sees the dataset exactly as this (the target's) space does: same
    /// profile, the same model id for every code, the same fixed tokens and the same prompts.
    pub fn check_draft(&self, draft: &TokenSpace, data: &Dataset) -> Result<()> {
        let differ = |m: String| {
            Error::model(
                &draft.model,
                format!(
                    "draft and target {} disagree on the token space: {m}",
                    self.model.display()
                ),
            )
        };
        if self.style != draft.style {
            return Err(differ(format!(
                "the draft uses the {} prompt style, the target the {}",
                draft.style.name(),
                self.style.name()
            )));
        }
        if let Some((i, (a, b))) = self
            .model_of
            .iter()
            .zip(&draft.model_of)
            .enumerate()
            .find(|(_, (a, b))| a != b)
        {
            return Err(differ(format!(
                "code token {} is id {} in the target but {} in the draft",
                data.vocab.token(i as u32),
                a.map_or("-".into(), |x| x.to_string()),
                b.map_or("-".into(), |x| x.to_string())
            )));
        }
        if (&self.before, &self.after) != (&draft.before, &draft.after) {
            return Err(differ(format!(
                "the fixed tokens differ: target {:?} / {:?}, draft {:?} / {:?}",
                self.before, self.after, draft.before, draft.after
            )));
        }
        // Same codes; the prompt's other tokens must agree too (one prompt feeds both models).
        let probe: Vec<u32> = (0..data.num_items().min(3) as u32).collect();
        if self.prompt(data, &probe)? != draft.prompt(data, &probe)? {
            return Err(differ(
                "their tokenizers encode the same prompt differently".into(),
            ));
        }
        Ok(())
    }
}

/// The special-looking markers a profile writes around the codes (`<|sid_begin|>`) must be
/// tokens of the tokenizer: one that is not would be encoded in pieces, silently, and a
/// checkpoint without it was trained with another format.
fn check_markers(profile: &Profile, tok: &ModelTokenizer, model: &std::path::Path) -> Result<()> {
    let re = regex::Regex::new(r"<\|[^<>|\s]+\|>").expect("valid pattern");
    let mut texts = vec![
        ("items.item", profile.items.item.as_str()),
        ("decode.before", profile.decode.before.as_str()),
        ("decode.after", profile.decode.after.as_str()),
    ];
    if let Prompt::Chat {
        generation_prefix, ..
    } = &profile.prompt
    {
        texts.push(("prompt.generation_prefix", generation_prefix.as_str()));
    }
    for (field, text) in texts {
        for m in re.find_iter(text) {
            if tok.token_to_id(m.as_str()).is_none() {
                return Err(Error::model(
                    model,
                    format!(
                        "the {} profile's {field} writes {}, which is not a token of this tokenizer (a checkpoint of another format? --profile chooses another)",
                        profile.name,
                        m.as_str()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `{eos}`, `{bos}`, `{pad}` and `{unk}` in a profile's text, replaced by the tokenizer's own
/// token (tokenizer_config.json's, else config.json's `eos_token_id` / `bos_token_id`).
fn fill_specials(
    text: &str,
    tok: &ModelTokenizer,
    config: &ModelConfig,
) -> std::result::Result<String, String> {
    let mut out = text.to_string();
    for name in ["eos", "bos", "pad", "unk"] {
        let key = format!("{{{name}}}");
        if !out.contains(&key) {
            continue;
        }
        let from_config = match name {
            "eos" => config.eos_token_id,
            "bos" => config.bos_token_id,
            _ => None,
        }
        .and_then(|id| tok.vocab().get(id as usize).cloned());
        let token = tok
            .special_tokens
            .get(&format!("{name}_token"))
            .cloned()
            .or(from_config)
            .ok_or_else(|| {
                format!(
                    "the profile's {key} needs the tokenizer's {name}_token, which neither tokenizer_config.json nor config.json names"
                )
            })?;
        out = out.replace(&key, &token);
    }
    Ok(out)
}

/// The fixed tokens before and after the codes: `before + codes + after` encoded as one text
/// (as MiniOneRec builds its constraint from `"### Response:\n" + SID + "\n"`), split around
/// the codes' own ids. When the codes do not come out whole, the two texts are encoded alone.
fn fixed_tokens(
    tok: &ModelTokenizer,
    before: &str,
    codes_text: &str,
    codes: &[u32],
    after: &str,
) -> std::result::Result<(Vec<u32>, Vec<u32>), String> {
    if before.is_empty() && after.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let all = tok.encode_plain(&format!("{before}{codes_text}{after}"))?;
    if let Some(i) = all.windows(codes.len()).position(|w| w == codes) {
        return Ok((all[..i].to_vec(), all[i + codes.len()..].to_vec()));
    }
    let alone = |t: &str| {
        if t.is_empty() {
            Ok(Vec::new())
        } else {
            tok.encode_plain(t)
        }
    };
    Ok((alone(before)?, alone(after)?))
}

/// A readable name for a fixed token: its text with control characters escaped (`\n`).
fn fixed_name(tok: &ModelTokenizer, id: u32) -> String {
    let text = tok.decode(&[id]).unwrap_or_default();
    let text = if text.is_empty() {
        tok.tokens(&[id]).concat()
    } else {
        text
    };
    text.escape_debug().to_string()
}
