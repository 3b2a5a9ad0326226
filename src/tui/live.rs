//! Live exploration: the engine that decodes with real models on the dataset.
//!
//! The explorer's users are the dataset's test users (or one chosen user first); their history
//! and ground truth are turned into display text once, up front, so the UI never touches the
//! dataset. Each decode runs the target-only beam search (the baseline) and the speculative
//! decoder on the same prompt, both timed on the same device by the decode module, one right
//! after the other and in alternating order (as the bench does), so a busy moment of the machine
//! hits both sides alike.
//!
//! **The fair default.** With tuning on, the engine times drafted shapes (N, gamma) for the
//! current mode, draft and K in the background ([`crate::eval::tune::Tuner`], dropping clearly
//! slower shapes early) on the validation prompts of users the explorer never shows or measures,
//! and reports the fastest; the app then switches to it. Shapes are cached
//! ([`crate::eval::tune::ShapeCache`]) under a key of device, machine, both models, dataset,
//! mode and K, so the next start on the same machine is tuned at once.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::engine::Engine;
use super::state::{App, EngineEvent, Params, Preset, TuneFor, TunedShape};
use crate::data::{Dataset, Sample};
use crate::decode::{beam_search, speculative, DecodeParams};
use crate::eval::tune::{
    fingerprint_dataset, fingerprint_model, machine, shape_candidates, tuning_samples, Prune,
    ShapeCache, ShapeKey, Tuner, WidthChoice,
};
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
    /// How the drafted shape is tuned.
    pub tune: TuneSettings,
}

/// How the live explorer tunes its drafted shape.
#[derive(Clone, Debug)]
pub struct TuneSettings {
    /// Validation users each shape is timed on; 0 turns tuning off.
    pub users: usize,
    /// The shape cache file; `None` keeps tuned shapes for this run only.
    pub cache: Option<PathBuf>,
    /// N or gamma were given by hand: start on them instead of a preset.
    pub custom: bool,
    /// Widest N tried (the widths are K..8K up to this).
    pub max_n: usize,
}

impl TuneSettings {
    /// Tuning off: the parameters as given.
    pub fn off() -> Self {
        TuneSettings {
            users: 0,
            cache: None,
            custom: true,
            max_n: 160,
        }
    }
}

/// Users every shape is timed on before clearly slower ones are dropped, and the slack.
const PRUNE: Prune = Prune {
    every: 8,
    slack: 0.25,
};
/// How often tuning reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

pub struct LiveEngine {
    dataset: Dataset,
    target: Llm,
    space: TokenSpace,
    drafts: Vec<(String, Llm)>,
    samples: Vec<Sample>,
    seed: u64,
    /// Decodes so far: which side runs first alternates.
    decodes: u64,
    warmed_up: bool,
    tuning: Option<Tuning>,
}

/// The engine's background tuning.
struct Tuning {
    settings: TuneSettings,
    /// Validation prompts of users the explorer never shows.
    prompts: Vec<Vec<u32>>,
    cache: ShapeCache,
    queue: VecDeque<TuneFor>,
    running: Option<Running>,
    device: String,
    machine: String,
    target: String,
    dataset: String,
    drafts: HashMap<String, String>,
    history: usize,
}

struct Running {
    what: TuneFor,
    key: ShapeKey,
    tuner: Tuner,
    started: Instant,
    reported: Instant,
}

impl Tuning {
    fn key(&self, what: &TuneFor) -> Option<ShapeKey> {
        Some(ShapeKey {
            device: self.device.clone(),
            machine: self.machine.clone(),
            target: self.target.clone(),
            draft: self.drafts.get(&what.draft)?.clone(),
            dataset: self.dataset.clone(),
            mode: what.mode,
            k: what.k,
            history: self.history,
            tuner: format!(
                "{} users, N K..8K up to {}, gamma 1-3, prune every {} by {}",
                self.prompts.len(),
                self.settings.max_n,
                PRUNE.every,
                PRUNE.slack
            ),
        })
    }
}

/// What the app is told about a choice.
fn tuned_shape(what: TuneFor, c: &WidthChoice, seconds: f64, cached: bool) -> TunedShape {
    let ms = |n: usize, g: usize| {
        c.trials
            .iter()
            .find(|t| t.n == n && t.gamma == g)
            .map(|t| t.speculative_ms)
    };
    TunedShape {
        what,
        n: c.n,
        gamma: c.gamma,
        users: c.users,
        seconds,
        cached,
        ms: ms(c.n, c.gamma).unwrap_or(0.0),
        paper_ms: ms(super::state::PAPER_N, super::state::PAPER_GAMMA),
    }
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
        let k = params.decode.k;
        let warm_up = !std::mem::replace(&mut self.warmed_up, true);
        let draft = self.draft(&params.draft)?;
        let spec = |rng: &mut ChaCha8Rng| {
            speculative(
                &self.target,
                draft,
                &self.space.trie,
                &prompt,
                &params.decode,
                rng,
            )
        };
        let base = || beam_search(&self.target, &self.space.trie, &prompt, k);
        if warm_up {
            // The first passes on a device pay for setup; keep them out of every timing.
            base()?;
            spec(&mut ChaCha8Rng::seed_from_u64(self.seed))?;
        }
        // Per-user seeds: a user's relaxed run is the same whichever order users are visited in.
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ u64::from(uid).wrapping_mul(0x9E37_79B9));
        // Both timed now, side by side, first one then the other.
        let (b, trace) = if self.decodes.is_multiple_of(2) {
            let b = base()?;
            (b, spec(&mut rng)?)
        } else {
            let t = spec(&mut rng)?;
            (base()?, t)
        };
        self.decodes += 1;
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

    fn tune(&mut self, what: TuneFor) -> Option<EngineEvent> {
        let Some(t) = &mut self.tuning else {
            return Some(EngineEvent::TuneFailed {
                what,
                message: "tuning is off".into(),
            });
        };
        let Some(key) = t.key(&what) else {
            return Some(EngineEvent::TuneFailed {
                message: format!("no draft model named {:?}", what.draft),
                what,
            });
        };
        if let Some(hit) = t.cache.get(&key) {
            return Some(EngineEvent::Tuned(tuned_shape(
                what,
                &hit.choice,
                hit.seconds,
                true,
            )));
        }
        let queued = t.queue.contains(&what) || t.running.as_ref().is_some_and(|r| r.what == what);
        if !queued {
            t.queue.push_back(what);
        }
        None
    }

    fn has_background(&self) -> bool {
        self.tuning
            .as_ref()
            .is_some_and(|t| t.running.is_some() || !t.queue.is_empty())
    }

    fn background(&mut self) -> Option<EngineEvent> {
        let t = self.tuning.as_mut()?;
        if t.running.is_none() {
            let what = t.queue.pop_front()?;
            let key = t.key(&what)?;
            let base = DecodeParams {
                mode: what.mode,
                n: what.k,
                k: what.k,
                gamma: 1,
                draft_mass: None,
            };
            let cands = shape_candidates(what.k, t.settings.max_n.max(what.k), &[1, 2, 3]);
            let tuner = match Tuner::new(t.prompts.clone(), &base, &cands, self.seed, Some(PRUNE)) {
                Ok(x) => x,
                Err(e) => {
                    return Some(EngineEvent::TuneFailed {
                        what,
                        message: e.to_string(),
                    })
                }
            };
            let now = Instant::now();
            t.running = Some(Running {
                what,
                key,
                tuner,
                started: now,
                reported: now,
            });
        }
        let r = t.running.as_mut()?;
        let draft = match self.drafts.iter().find(|(n, _)| *n == r.what.draft) {
            Some((_, m)) => m,
            None => {
                let what = t.running.take()?.what;
                return Some(EngineEvent::TuneFailed {
                    message: format!("no draft model named {:?}", what.draft),
                    what,
                });
            }
        };
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r.tuner.step(&self.target, draft, &self.space.trie)
        }));
        match stepped {
            Ok(Ok(true)) => {
                if r.reported.elapsed() < PROGRESS_EVERY {
                    return None;
                }
                r.reported = Instant::now();
                let (done, total) = r.tuner.progress();
                Some(EngineEvent::Tuning {
                    what: r.what.clone(),
                    done,
                    total,
                })
            }
            Ok(Ok(false)) => {
                let r = t.running.take()?;
                let choice = r.tuner.choice();
                let seconds = r.started.elapsed().as_secs_f64();
                let when = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let shape = tuned_shape(r.what, &choice, seconds, false);
                t.cache.put(crate::eval::tune::TunedShape {
                    key: r.key,
                    choice,
                    seconds,
                    when,
                });
                if let Some(path) = &t.settings.cache {
                    if let Err(e) = t.cache.save(path) {
                        log::warn!(target: "explorer", "tuned shapes not cached: {e}");
                    }
                }
                Some(EngineEvent::Tuned(shape))
            }
            Ok(Err(e)) => Some(EngineEvent::TuneFailed {
                what: t.running.take()?.what,
                message: e.to_string(),
            }),
            Err(_) => Some(EngineEvent::TuneFailed {
                what: t.running.take()?.what,
                message: "a tuning decode panicked".into(),
            }),
        }
    }
}

/// A sample as the panels show it.
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
                tokens: space.sequence(id),
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
            "target {} {}{} ({} profile)",
            ctx.target.config().model_type,
            ctx.target.describe(),
            if ctx.target.adapter.is_some() {
                " + LoRA"
            } else {
                ""
            },
            ctx.space.profile.name
        ),
        drafts: ctx
            .drafts
            .iter()
            .map(|(n, m)| format!("{n} {}", m.describe()))
            .collect(),
        device: ctx.device.clone(),
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
        levels: ds.levels,
        length: ctx.space.trie.depth(),
        fixed_before: ctx.space.before.len(),
        max_accepted: Some(
            ctx.space.trie.forced()[..ctx.space.trie.depth() - 1]
                .iter()
                .filter(|&&f| !f)
                .count(),
        ),
    };
    let users = samples
        .iter()
        .map(|s| user_view(&ds, &ctx.space, s))
        .collect();
    let mut params = ctx.params.clone();
    params.draft = params.draft.min(ctx.drafts.len() - 1);
    let mut app = App::new(header, users, params);
    app.startup_notes.push(format!(
        "profile {} ({})",
        ctx.space.profile.name, ctx.space.profile_why
    ));
    app.startup_notes.extend(ctx.space.notes.iter().cloned());
    if let Some(c) = crate::decode::ScoreTolerance::caveat(ctx.target.model.dtype()) {
        app.startup_notes.push(c);
    }
    let tuning = tuning(
        &ds,
        &ctx.space,
        &samples,
        (&ctx.target, &ctx.drafts),
        &ctx.device,
        ctx.history,
        ctx.tune.clone(),
    );
    if let Some(t) = &tuning {
        app.enable_tuning(Preset::Tuned, t.settings.custom);
    }
    let engine = LiveEngine {
        dataset: ds,
        target: ctx.target,
        space: ctx.space,
        drafts: ctx.drafts,
        samples,
        seed: ctx.seed,
        decodes: 0,
        warmed_up: false,
        tuning,
    };
    Ok((app, engine))
}

/// The background tuning, unless it is off or no validation user is left to tune on.
fn tuning(
    ds: &Dataset,
    space: &TokenSpace,
    shown: &[Sample],
    (target, drafts): (&Llm, &[(String, Llm)]),
    device: &str,
    history: usize,
    settings: TuneSettings,
) -> Option<Tuning> {
    if settings.users == 0 {
        return None;
    }
    let measured: HashSet<u32> = shown.iter().map(|s| s.user).collect();
    // A history the target's token space cannot encode is skipped, not fatal for tuning.
    let prompts: Vec<Vec<u32>> =
        tuning_samples(ds.valid_samples(history), &measured, settings.users)
            .iter()
            .filter_map(|s| space.prompt(ds, &s.history).ok())
            .collect();
    if prompts.is_empty() {
        log::warn!(target: "explorer", "no validation user outside the explored ones: no tuning");
        return None;
    }
    let (cache, why) = match &settings.cache {
        Some(p) => ShapeCache::load(p),
        None => (ShapeCache::default(), None),
    };
    if let Some(why) = why {
        log::warn!(target: "explorer", "{why}");
    }
    Some(Tuning {
        prompts,
        cache,
        queue: VecDeque::new(),
        running: None,
        device: device.to_string(),
        machine: machine(),
        target: fingerprint_model(target),
        dataset: fingerprint_dataset(ds),
        drafts: drafts
            .iter()
            .map(|(n, m)| (n.clone(), fingerprint_model(m)))
            .collect(),
        history,
        settings,
    })
}

/// Runs the live explorer until the user quits.
pub fn run_explorer(ctx: ExplorerContext) -> crate::Result<()> {
    let (app, engine) = live_app(ctx)?;
    super::terminal::run_app(app, Box::new(engine))
}
