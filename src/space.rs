//! A model's token space for a dataset: which model token each item code is, the prompt the model
//! expects, and the decoding constraint over the model's own token ids.
//!
//! The dataset keeps identifiers as code strings (interned as its compact vocabulary ids); the
//! model side maps them here, so one dataset serves models of either prompt style. Code tokens are
//! looked up by their string in the model's tokenizer, never computed: LC-Rec adds only the codes
//! its index uses, in string order, after the base vocabulary. A dataset code the tokenizer lacks
//! is an error naming the token and the checkpoint.
//!
//! Decoding runs in model ids throughout (prompt, trie, traces); [`TokenSpace::identifier`] maps a
//! generated beam back to the dataset's identifier for metrics and titles.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::data::Dataset;
use crate::ids::{Identifier, PrefixAutomaton, SPECIALS};
use crate::model::{Llm, ModelTokenizer, PromptStyle};
use crate::{Error, Result};

/// The reference prompt (LC-Rec's instruction template, as the method's reference code fills it):
/// `{history}` is each history item's code tokens concatenated (`<a_1><b_2><c_3><d_4>`), items
/// joined by `", "`, oldest first. Encoded with the tokenizer's special tokens (BOS where the
/// tokenizer adds one), no trailing space or newline.
pub const REFERENCE_TEMPLATE: &str = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nThe user has interacted with items {history} in chronological order. Can you predict the next possible item that the user may expect?\n\n### Response:";

/// Fails unless `model` was trained on exactly the dataset's vocabulary: same tokens, same ids.
/// The error names the first token that differs.
pub fn check_vocab(model: &Llm, data: &Dataset) -> Result<()> {
    let mine = &model.vocab;
    let theirs = data.vocab.tokens();
    if mine.as_slice() == theirs {
        return Ok(());
    }
    let path = model
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&model.name));
    let first = mine.iter().zip(theirs).position(|(a, b)| a != b);
    let detail = match first {
        Some(i) => format!(
            "token id {i} is {} in the model but {} in the dataset",
            crate::text::quoted(&mine[i], 40),
            crate::text::quoted(&theirs[i], 40)
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

/// A model's view of a dataset (see the module documentation).
#[derive(Clone, Debug)]
pub struct TokenSpace {
    pub style: PromptStyle,
    /// Model token id of every dataset vocabulary id (`None` for the dataset's specials in
    /// reference style, which the reference prompt does not use).
    model_of: Vec<Option<u32>>,
    /// Dataset vocabulary id of every model token that is an item code.
    data_of: HashMap<u32, u32>,
    /// The decoding constraint: a prefix trie over every item's identifier, in model ids.
    pub trie: PrefixAutomaton,
    /// Compact style: the model's `<bos>` and `<sep>`.
    bos: u32,
    sep: u32,
    tokenizer: ModelTokenizer,
    /// The model's name, for errors.
    model: PathBuf,
}

impl TokenSpace {
    /// Maps the dataset's codes into `llm`'s tokens, in the model's prompt style.
    pub fn new(data: &Dataset, llm: &Llm) -> Result<TokenSpace> {
        let model = llm.dir.clone().unwrap_or_else(|| PathBuf::from(&llm.name));
        let tok = &llm.tokenizer;
        let vocab_size = llm.config().vocab_size as u32;
        let lookup = |token: &str| -> Result<u32> {
            match tok.token_to_id(token) {
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
                        crate::text::quoted(token, 40),
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
            check_vocab(llm, data)?;
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
        let items: Vec<Identifier> = data.items.iter().map(map).collect();
        let trie = PrefixAutomaton::trie(&items).map_err(|m| Error::data(&data.dir, m))?;
        // The prompt must carry each code as its own token. A tokenizer.json converted from a
        // slow SentencePiece tokenizer can split `<b_69>` into `<`, `b`, `_`, ... when the added
        // tokens sit under its normalizer: the ids would then not be the ones the model was
        // fine-tuned on.
        if let (PromptStyle::Reference, Some(first)) = (llm.style, data.items.first()) {
            let text = data.vocab.render(first);
            let got = tok
                .encode_plain(&text)
                .map_err(|m| Error::model(&model, m))?;
            let want: Vec<u32> = map(first).to_vec();
            if got != want {
                return Err(Error::model(
                    &model,
                    format!(
                        "its tokenizer.json does not keep the code tokens whole: {text} encodes as {got:?}, not {want:?} (check the added tokens are not normalized; README \"Your own model\")"
                    ),
                ));
            }
        }
        Ok(TokenSpace {
            style: llm.style,
            trie,
            model_of,
            data_of,
            bos,
            sep,
            tokenizer: tok.clone(),
            model,
        })
    }

    /// The prompt for a history (0-based items, oldest first), in model ids.
    pub fn prompt(&self, data: &Dataset, history: &[u32]) -> Result<Vec<u32>> {
        let ident = |item: u32| -> Result<&Identifier> {
            data.items.get(item as usize).ok_or_else(|| {
                Error::invalid("history", format!("item {item} is not in the dataset"))
            })
        };
        match self.style {
            PromptStyle::Compact => {
                let mut out = Vec::with_capacity(history.len() * data.levels + 2);
                out.push(self.bos);
                for &item in history {
                    for &t in ident(item)?.iter() {
                        out.push(self.model_of[t as usize].expect("codes are mapped"));
                    }
                }
                out.push(self.sep);
                Ok(out)
            }
            PromptStyle::Reference => {
                let items: Vec<String> = history
                    .iter()
                    .map(|&item| Ok(data.vocab.render(ident(item)?)))
                    .collect::<Result<_>>()?;
                let text = REFERENCE_TEMPLATE.replace("{history}", &items.join(", "));
                self.tokenizer
                    .encode(&text)
                    .map_err(|m| Error::model(&self.model, m))
            }
        }
    }

    /// The dataset identifier of a generated beam (model ids), if it is one.
    pub fn identifier(&self, tokens: &[u32]) -> Option<Identifier> {
        if tokens.len() != self.trie.depth() {
            return None;
        }
        let codes: Option<Vec<u32>> = tokens
            .iter()
            .map(|t| self.data_of.get(t).copied())
            .collect();
        Identifier::new(&codes?)
    }

    /// A dataset identifier in the model's token ids.
    pub fn model_tokens(&self, ident: &Identifier) -> Identifier {
        ident.map(|t| self.model_of[t as usize].expect("codes are mapped"))
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

    /// The model token of each dataset code token, by model id: what a session needs to print
    /// generated tokens without the model.
    pub fn code_names(&self, data: &Dataset) -> Vec<(u32, String)> {
        let mut v: Vec<(u32, String)> = self
            .data_of
            .iter()
            .map(|(&m, &d)| (m, data.vocab.token(d).into_owned()))
            .collect();
        v.sort();
        v
    }

    /// Fails unless `draft` sees the dataset exactly as this (the target's) space does: same
    /// prompt style, the same model id for every code, and the same prompts.
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
