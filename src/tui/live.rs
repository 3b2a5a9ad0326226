//! Live exploration: the engine that decodes with real models on the dataset.
//!
//! The explorer's users are the dataset's test users (or one chosen user first); their history
//! and ground truth are turned into display text once, up front, so the UI never touches the
//! dataset. Each decode runs the target-only beam search (the baseline) and the speculative
//! decoder on the same prompt, both timed on the same device by the decode module.

use std::collections::{BTreeMap, HashMap};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::engine::Engine;
use super::state::{App, Params};
use crate::data::{Dataset, Sample};
use crate::decode::{beam_search, speculative, BeamOutcome};
use crate::model::{Llm, PromptStyle};
use crate::session::{
    Baseline, HistoryEntry, RunParams, SessionHeader, TruthEntry, UserRun, UserView,
};
use crate::space::TokenSpace;
use crate::Error;

/// Everything the live explorer needs; the binary loads it (and reports load errors) first.
pub struct ExplorerContext {
    pub dataset: Dataset,
    pub target: Llm,
    /// The dataset in the target's token space (the drafts were checked to share it).
    pub space: TokenSpace,
    /// Draft models by name (one word, e.g. `atspeed-s`, `sft`: the header shows the name then
    /// the size); `params.draft` selects the one used at start.
    pub drafts: Vec<(String, Llm)>,
    /// The device as shown in the header, e.g. `cuda:0 (H100)` or `cpu`.
    pub device: String,
    pub params: Params,
    pub seed: u64,
    /// History length H of the prompts.
    pub history: usize,
    /// Start on this user (1-based uid); it is put first even if it has no test items.
    pub user: Option<u32>,
}

pub struct LiveEngine {
    dataset: Dataset,
    target: Llm,
    space: TokenSpace,
    drafts: Vec<(String, Llm)>,
    samples: Vec<Sample>,
    seed: u64,
    /// Target-only baselines by (user index, K): they do not depend on the draft, N, gamma or mode.
    baselines: HashMap<(usize, usize), BeamOutcome>,
    warmed_up: bool,
}

impl LiveEngine {
    fn draft(&self, name: &str) -> crate::Result<&Llm> {
        self.drafts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m)
            .ok_or_else(|| Error::invalid("draft", format!("no draft model named {name:?}")))
    }

    /// Identifier text -> titles of its items, for every beam either list recommends.
    fn titles<'a>(&self, beams: impl Iterator<Item = &'a [u32]>) -> BTreeMap<String, Vec<String>> {
        beams
            .map(|t| {
                let id = self.space.identifier(t);
                let titles = id
                    .map(|id| {
                        self.dataset
                            .items_of(&id)
                            .iter()
                            .map(|&i| crate::text::printable(&self.dataset.title(i)).into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                // Keyed by the identifier's code strings: how every view writes it.
                let key = id.map_or_else(String::new, |id| self.dataset.vocab.render(&id));
                (key, titles)
            })
            .collect()
    }
}

impl Engine for LiveEngine {
    fn decode(&mut self, user: usize, params: &RunParams) -> crate::Result<UserRun> {
        let sample = self
            .samples
            .get(user)
            .ok_or_else(|| Error::invalid("user", format!("no user #{user}")))?;
        let prompt = self.space.prompt(&self.dataset, &sample.history)?;
        let uid = sample.user;
        if !self.warmed_up {
            // The first pass on a device pays for kernel setup; keep it out of every timing.
            beam_search(&self.target, &self.space.trie, &prompt, params.decode.k)?;
            self.warmed_up = true;
        }
        let key = (user, params.decode.k);
        if !self.baselines.contains_key(&key) {
            let b = beam_search(&self.target, &self.space.trie, &prompt, params.decode.k)?;
            self.baselines.insert(key, b);
        }
        let draft = self.draft(&params.draft)?;
        // Per-user seeds: a user's relaxed run is the same whichever order users are visited in.
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ u64::from(uid).wrapping_mul(0x9E37_79B9));
        let trace = speculative(
            &self.target,
            draft,
            &self.space.trie,
            &prompt,
            &params.decode,
            &mut rng,
        )?;
        let b = &self.baselines[&key];
        let titles = self.titles(
            trace
                .beams
                .iter()
                .chain(&b.beams)
                .map(|b| b.tokens.as_slice()),
        );
        Ok(UserRun {
            params: params.clone(),
            baseline: Baseline {
                beams: b.beams.clone(),
                target_passes: b.target_passes,
                time_ms: b.time_ms,
            },
            trace,
            titles,
        })
    }

    fn num_users(&self) -> usize {
        self.samples.len()
    }
}

/// A sample as the panels show it: titles made printable, the ground truth in the model's token
/// ids (what the traces hold).
pub fn user_view(ds: &Dataset, space: &TokenSpace, s: &Sample) -> UserView {
    let title = |item: u32| crate::text::printable(&ds.title(item)).into_owned();
    UserView {
        user: s.user,
        history: s
            .history
            .iter()
            .map(|&item| HistoryEntry {
                item,
                title: title(item),
                ident: ds.vocab.render(&ds.items[item as usize]),
            })
            .collect(),
        truth: s
            .targets
            .iter()
            .map(|id| TruthEntry {
                tokens: space.model_tokens(id).to_vec(),
                ident: ds.vocab.render(id),
                titles: ds.items_of(id).iter().map(|&i| title(i)).collect(),
            })
            .collect(),
    }
}

/// The app and engine for a live exploration.
pub fn live_app(ctx: ExplorerContext) -> crate::Result<(App, LiveEngine)> {
    if ctx.drafts.is_empty() {
        return Err(Error::invalid(
            "draft",
            "the explorer needs at least one draft model",
        ));
    }
    ctx.params.decode.validate()?;
    let ds = ctx.dataset;
    let mut samples = ds.test_samples(ctx.history);
    if let Some(uid) = ctx.user {
        let s = ds.user_sample(uid, ctx.history)?;
        samples.retain(|x| x.user != uid);
        samples.insert(0, s);
    }
    if samples.is_empty() {
        return Err(Error::data(
            ds.dir.join(crate::data::SPLIT_FILES[2]),
            "no test users to explore",
        ));
    }
    let header = SessionHeader {
        dataset: ds.name.clone(),
        // Architecture and prompt style: what a user debugging their own model checks first.
        target: format!(
            "target {} {}{} ({} prompt)",
            ctx.target.config().model_type,
            ctx.target.describe(),
            if ctx.target.adapter.is_some() {
                " + LoRA"
            } else {
                ""
            },
            ctx.space.style.name()
        ),
        drafts: ctx
            .drafts
            .iter()
            .map(|(n, m)| format!("{n} {}", m.describe()))
            .collect(),
        device: ctx.device,
        seed: ctx.seed,
        // Compact: the dataset's vocabulary is the model's. Reference: only the code tokens, by
        // model id (a full LLM vocabulary would bloat every session file).
        vocab: match ctx.space.style {
            PromptStyle::Compact => ds.vocab.tokens().to_vec(),
            PromptStyle::Reference => Vec::new(),
        },
        token_names: match ctx.space.style {
            PromptStyle::Compact => Vec::new(),
            PromptStyle::Reference => ctx.space.code_names(&ds),
        },
    };
    let users = samples
        .iter()
        .map(|s| user_view(&ds, &ctx.space, s))
        .collect();
    let mut params = ctx.params;
    params.draft = params.draft.min(ctx.drafts.len() - 1);
    let app = App::new(header, users, params);
    let engine = LiveEngine {
        dataset: ds,
        target: ctx.target,
        space: ctx.space,
        drafts: ctx.drafts,
        samples,
        seed: ctx.seed,
        baselines: HashMap::new(),
        warmed_up: false,
    };
    Ok((app, engine))
}

/// Runs the live explorer until the user quits.
pub fn run_explorer(ctx: ExplorerContext) -> crate::Result<()> {
    let (app, engine) = live_app(ctx)?;
    super::terminal::run_app(app, Box::new(engine))
}
