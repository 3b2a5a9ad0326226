//! The explorer's state and its pure transitions.
//!
//! `update(&mut App, Action)` is the only way the state changes; it never blocks and never does
//! I/O. What must happen outside (ask the engine for a decode, write a session) is queued in
//! [`App::outbox`] as [`Command`]s that the event loop carries out. That split is what lets the
//! tests drive the whole explorer, engine replies included, without a terminal or a model.
//!
//! Every engine request carries a generation number; any change of user or parameters bumps it,
//! so a reply that arrives for an older request is recognised and dropped.

use std::path::PathBuf;

use crate::decode::{DecodeParams, Mode};
use crate::eval::speed::SpeedStats;
use crate::ids::Vocab;
use crate::session::{RunParams, Session, SessionHeader, UserRecord, UserRun, UserView};

pub mod phase;

/// Largest N the explorer lets you pick (wider beams only make the tree unreadable).
pub const MAX_N: usize = 256;
/// Narration lines kept for the built-in log view.
const NARRATION_KEEP: usize = 200;

/// The decoding parameters as the user adjusts them; `draft` indexes [`SessionHeader::drafts`].
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    pub decode: DecodeParams,
    pub draft: usize,
}

/// The paper's drafted shape: N 40, gamma 3.
pub const PAPER_N: usize = 40;
pub const PAPER_GAMMA: usize = 3;

/// Which drafted shape (N, gamma) the explorer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// The fastest shape for this device and these models, found by timing (see
    /// [`crate::eval::tune`]); the paper's until the tuning is done.
    Tuned,
    /// The paper's N 40, gamma 3.
    Paper,
}

/// What the mode, draft and K of a tuned shape are: tuning is per (mode, draft, K).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TuneFor {
    pub mode: Mode,
    pub draft: String,
    pub k: usize,
}

/// A shape the engine tuned (or found in its cache).
#[derive(Clone, Debug, PartialEq)]
pub struct TunedShape {
    pub what: TuneFor,
    pub n: usize,
    pub gamma: usize,
    /// Validation users it was timed on (never shown or measured by the explorer).
    pub users: usize,
    /// Wall time the tuning took, and whether it came from the cache.
    pub seconds: f64,
    pub cached: bool,
    /// Mean speculative milliseconds per tuning user of the chosen shape and of the paper's.
    pub ms: f64,
    pub paper_ms: Option<f64>,
}

/// The explorer's drafted-shape state: the preset in force and what tuning found.
#[derive(Clone, Debug, PartialEq)]
pub struct Shapes {
    /// The engine can tune (live exploration with tuning on).
    pub enabled: bool,
    pub preset: Preset,
    /// N or gamma was set by hand (flags or keys): presets do not touch them until `t`.
    pub custom: bool,
    pub tuned: Vec<TunedShape>,
    /// The tuning in progress: for what, decodes done and expected.
    pub tuning: Option<(TuneFor, usize, usize)>,
    /// Tunings asked for (asked once each).
    pub asked: Vec<TuneFor>,
    /// A tuned shape arrived while a user was being stepped through: it applies from the next
    /// user rather than pulling the round away.
    pub deferred: bool,
}

/// Below this size (but above the minimum the view can draw) panels are grouped into tabs.
pub const FULL_WIDTH: u16 = 100;
pub const FULL_HEIGHT: u16 = 32;

/// Whether a terminal of this size shows one group of panels at a time.
pub fn is_compact(width: u16, height: u16) -> bool {
    width < FULL_WIDTH || height < FULL_HEIGHT
}

/// The panels of the screen (what the view draws and focus and scrolling refer to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanelId {
    Header,
    Tabs,
    User,
    Beams,
    Attention,
    Compare,
    Recs,
    Speedup,
    Log,
    /// The compact layout's line of narration above the footer.
    Caption,
    Footer,
}

impl PanelId {
    /// The next panel that can take focus (scrollable ones), for Tab.
    pub fn next(self) -> PanelId {
        match self {
            PanelId::User => PanelId::Beams,
            PanelId::Beams => PanelId::Attention,
            PanelId::Attention => PanelId::Recs,
            _ => PanelId::User,
        }
    }
}

/// The tabs of the compact layout (small terminals show one group of panels at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Decode,
    Tree,
    Results,
    Log,
}

impl Tab {
    pub const ALL: [Tab; 4] = [Tab::Decode, Tab::Tree, Tab::Results, Tab::Log];
    pub fn title(self) -> &'static str {
        match self {
            Tab::Decode => "1 Decode",
            Tab::Tree => "2 Tree",
            Tab::Results => "3 Results",
            Tab::Log => "4 Log",
        }
    }
}

/// Something the engine thread reports.
#[derive(Clone, Debug)]
pub enum EngineEvent {
    /// One user decoded. `auto` marks results of an auto-run.
    Decoded {
        generation: u64,
        user: usize,
        run: Box<UserRun>,
        auto: bool,
    },
    /// The same user decoded with the current draft (`a`) and the comparison draft (`b`).
    /// `auto` marks results of an auto-run that compares.
    Compared {
        generation: u64,
        user: usize,
        a: Box<UserRun>,
        b: Box<UserRun>,
        auto: bool,
    },
    /// An auto-run reached the last user.
    AutoDone {
        generation: u64,
    },
    Failed {
        generation: u64,
        message: String,
    },
    /// Background tuning progress: decodes done of about `total`.
    Tuning {
        what: TuneFor,
        done: usize,
        total: usize,
    },
    /// A tuned shape is ready.
    Tuned(TunedShape),
    /// Tuning could not run (the message says why); the paper's shape stays.
    TuneFailed {
        what: TuneFor,
        message: String,
    },
}

impl EngineEvent {
    /// The reply to one user's decode (not an auto-run's): the run, or the error as a message.
    pub fn decoded(generation: u64, user: usize, result: crate::Result<UserRun>) -> EngineEvent {
        match result {
            Ok(run) => EngineEvent::Decoded {
                generation,
                user,
                run: Box::new(run),
                auto: false,
            },
            Err(e) => EngineEvent::Failed {
                generation,
                message: e.to_string(),
            },
        }
    }

    /// The request a reply answers; `None` for background news, which is never stale.
    pub fn generation(&self) -> Option<u64> {
        match self {
            EngineEvent::Decoded { generation, .. }
            | EngineEvent::Compared { generation, .. }
            | EngineEvent::AutoDone { generation }
            | EngineEvent::Failed { generation, .. } => Some(*generation),
            EngineEvent::Tuning { .. } | EngineEvent::Tuned(_) | EngineEvent::TuneFailed { .. } => {
                None
            }
        }
    }
}

/// Work for the world outside `update`.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Decode {
        generation: u64,
        user: usize,
        params: RunParams,
    },
    Compare {
        generation: u64,
        user: usize,
        params: RunParams,
        other_draft: String,
    },
    /// Decode users `from`, `from + 1`, .. until the generation changes; with `other_draft`,
    /// each with both drafts (an auto-run while comparing).
    Auto {
        generation: u64,
        from: usize,
        params: RunParams,
        other_draft: Option<String>,
    },
    /// Anything the engine is doing for an older generation may stop.
    Cancel { generation: u64 },
    /// Tune the drafted shape for this mode, draft and K in the background (queued, never
    /// replaced by newer requests).
    Tune(TuneFor),
    /// Save to a new file under `sessions/`.
    SaveSession(Box<Session>),
    /// Save to the path the user typed after a failed save; an existing file there is not
    /// replaced.
    SaveSessionAs {
        session: Box<Session>,
        path: PathBuf,
    },
    /// Write round `round` of the current user as an SVG (`x`).
    ExportRound {
        user: u32,
        round: usize,
        run: Box<UserRun>,
    },
}

/// User input and outside events, already decoded from terminal events.
#[derive(Clone, Debug)]
pub enum Action {
    /// Show the next phase (space).
    Step,
    /// Show the user's finished decode (enter).
    RunToEnd,
    NextUser,
    PrevUser,
    SearchStart,
    SearchInput(char),
    SearchBackspace,
    SearchSubmit,
    /// Editing the save-path prompt (open after a failed save).
    PathInput(char),
    PathBackspace,
    PathSubmit,
    ToggleMode,
    IncN,
    DecN,
    IncK,
    DecK,
    IncGamma,
    DecGamma,
    NextDraft,
    ToggleCompare,
    ToggleAuto,
    ToggleRecord,
    /// Switch the drafted shape between tuned and the paper's (`t`).
    TogglePreset,
    /// The attention panel's grid: next depth block, and coarser / finer cells.
    NextBlock,
    Zoom,
    /// The speedup panel's chart: WS per user, or acceptance against N.
    ToggleChart,
    /// Write the current round as an SVG.
    ExportRound,
    ToggleHelp,
    /// Esc: close the help or the search prompt.
    Close,
    /// Tab: next tab (compact layout) and next focused panel.
    NextFocus,
    SelectTab(Tab),
    /// Scroll the focused panel by rows / columns.
    Scroll {
        dy: i32,
        dx: i32,
    },
    /// Mouse wheel over a panel (the input glue finds the panel under the pointer): focuses
    /// and scrolls it.
    MouseScroll {
        panel: PanelId,
        dy: i32,
    },
    Resize {
        width: u16,
        height: u16,
    },
    Engine(EngineEvent),
    /// The event loop's answer to [`Command::SaveSession`], [`Command::SaveSessionAs`] and
    /// [`Command::ExportRound`]: the path written, or why nothing was.
    Saved(Result<String, String>),
    Tick,
    Quit,
}

/// What the step/run keys asked for while the decode was still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Show the start of the user (nothing drafted yet).
    Start,
    /// Show the first phase.
    Step,
    /// Show the finished user.
    End,
}

/// The current user's decode (and the comparison decode when comparing).
#[derive(Clone, Debug)]
pub struct Current {
    pub run: UserRun,
    pub other: Option<UserRun>,
    /// Phases shown so far (see [`phase::Cursor`]).
    pub cursor: phase::Cursor,
}

impl Current {
    pub fn finished(&self) -> bool {
        self.cursor >= phase::phases(&self.run.trace).len()
    }
}

/// Per-panel scroll offsets (rows, and columns for the attention grid). Updates only move them;
/// the view clamps them to the content when it draws (as ratatui's stateful widgets do), so the
/// state never needs to know how many rows a panel has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scroll {
    pub user: u16,
    pub beams: u16,
    pub grid_row: u16,
    pub grid_col: u16,
    pub recs: u16,
}

/// What the speedup panel's chart shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chart {
    /// Per-user WS and its running mean.
    Speedup,
    /// Acceptance against the drafted width N, per drafted depth (strict).
    Width,
}

/// Presentation state that is not about decoding.
#[derive(Clone, Debug)]
pub struct Ui {
    pub width: u16,
    pub height: u16,
    pub help: bool,
    /// The search prompt's text while it is open.
    pub search: Option<String>,
    /// The save-path prompt's text while it is open (after a failed save).
    pub save_path: Option<String>,
    pub tab: Tab,
    pub focus: PanelId,
    pub scroll: Scroll,
    /// The attention grid's depth block (1-based; 0 = the deepest visible) and tokens per cell.
    pub block: usize,
    pub zoom: usize,
    pub chart: Chart,
    /// The round the cursor was in when the panels last scrolled: scroll resets in a new round.
    pub scrolled_round: Option<usize>,
    /// Ticks since start: drives the spinner.
    pub ticks: u64,
}

#[derive(Clone, Debug)]
pub struct App {
    pub header: SessionHeader,
    pub vocab: Vocab,
    /// The file a replay was loaded from; `None` when exploring live.
    pub replay: Option<String>,
    pub users: Vec<UserView>,
    pub user: usize,
    pub params: Params,
    /// The drafted shape in force (tuned or the paper's) and the tuning behind it.
    pub shapes: Shapes,
    /// Bumped by every new request; replies for older ones are dropped.
    pub generation: u64,
    /// The generation of the request still running, if any.
    pub pending: Option<u64>,
    pub intent: Intent,
    pub current: Option<Current>,
    /// Comparing the current draft with another one (its index into the drafts).
    pub compare: Option<usize>,
    pub auto: bool,
    /// Statistics per parameter set, so toggling a parameter back finds its numbers again.
    pub stats: Vec<(RunParams, SpeedStats)>,
    /// Records of the users seen since `r` started a recording.
    pub recording: Option<Vec<UserRecord>>,
    /// The recording being saved, until the event loop answers with [`Action::Saved`].
    pub saving: Option<Box<Session>>,
    /// A recording whose save failed: kept until a save succeeds, so a recording is never
    /// dropped because a folder was not writable.
    pub unsaved: Option<Box<Session>>,
    /// Where the save-path prompt proposes to save when `sessions/` fails.
    pub fallback_dir: PathBuf,
    /// Quit once the pending save succeeds (the user quit while recording).
    pub quit_after_save: bool,
    /// The user was warned that quitting drops the unsaved recording; the next quit does.
    pub discard_armed: bool,
    /// Lines for the shell once the terminal is restored (where a recording went, or that it
    /// was dropped).
    pub farewell: Vec<String>,
    pub status: String,
    /// What the explorer narrated (phases, results); the log panel shows these when the
    /// tui-logger widget is not in use (tests, or another logger was installed first).
    pub narration: Vec<String>,
    /// Said once in the log when the explorer starts (the profile, a narrow dtype's caveat).
    pub startup_notes: Vec<String>,
    pub use_tui_logger: bool,
    pub outbox: Vec<Command>,
    pub quit: bool,
    pub ui: Ui,
}

impl App {
    /// A new explorer over `users`; nothing is requested until [`App::start`].
    pub fn new(header: SessionHeader, users: Vec<UserView>, params: Params) -> Self {
        // A compact vocabulary, or the code tokens of an LLM tokenizer by id; a vocabulary
        // that does not parse still prints ids as <unk:ID>: never fail here.
        let vocab = if header.vocab.is_empty() {
            Vocab::from_names(&header.token_names)
        } else {
            Vocab::from_tokens(header.vocab.clone())
                .unwrap_or_else(|_| Vocab::from_names(&header.token_names))
        };
        App {
            header,
            vocab,
            replay: None,
            users,
            user: 0,
            params,
            shapes: Shapes {
                enabled: false,
                preset: Preset::Paper,
                custom: true,
                tuned: Vec::new(),
                tuning: None,
                asked: Vec::new(),
                deferred: false,
            },
            generation: 0,
            pending: None,
            intent: Intent::Start,
            current: None,
            compare: None,
            auto: false,
            stats: Vec::new(),
            recording: None,
            saving: None,
            unsaved: None,
            fallback_dir: std::env::temp_dir(),
            quit_after_save: false,
            discard_armed: false,
            farewell: Vec::new(),
            status: String::new(),
            narration: Vec::new(),
            startup_notes: Vec::new(),
            use_tui_logger: false,
            outbox: Vec::new(),
            quit: false,
            ui: Ui {
                width: 120,
                height: 40,
                help: false,
                search: None,
                save_path: None,
                tab: Tab::Decode,
                focus: PanelId::Beams,
                scroll: Scroll::default(),
                block: 0,
                zoom: 1,
                chart: Chart::Speedup,
                scrolled_round: None,
                ticks: 0,
            },
        }
    }

    /// Lets the engine tune the drafted shape: the explorer starts on `preset` (tuned: the
    /// paper's shape until the tuning is done), unless `custom` (N or gamma given by hand).
    pub fn enable_tuning(&mut self, preset: Preset, custom: bool) {
        self.shapes.enabled = true;
        self.shapes.preset = preset;
        self.shapes.custom = custom;
    }

    /// Requests the first user.
    pub fn start(&mut self) {
        if self.users.is_empty() {
            self.status = "no users to explore".into();
            return;
        }
        self.apply_shape();
        self.request(Intent::Start);
    }

    /// What the current mode, draft and K would be tuned for.
    pub fn tune_for(&self) -> TuneFor {
        TuneFor {
            mode: self.params.decode.mode,
            draft: self.draft_name(self.params.draft),
            k: self.params.decode.k,
        }
    }

    /// The tuned shape for the current mode, draft and K, if known.
    pub fn tuned_shape(&self) -> Option<&TunedShape> {
        let f = self.tune_for();
        self.shapes.tuned.iter().find(|t| t.what == f)
    }

    /// Whether the tuning in progress is for the current mode, draft and K.
    pub fn tuning_current(&self) -> Option<(usize, usize)> {
        let f = self.tune_for();
        match &self.shapes.tuning {
            Some((w, done, total)) if *w == f => Some((*done, *total)),
            _ => None,
        }
    }

    /// Sets N and gamma from the preset in force (unless they were set by hand) and asks for a
    /// tuning the preset needs. Returns whether N or gamma changed.
    fn apply_shape(&mut self) -> bool {
        if self.shapes.enabled
            && self.shapes.preset == Preset::Tuned
            && self.tuned_shape().is_none()
        {
            let f = self.tune_for();
            if !self.shapes.asked.contains(&f) {
                self.shapes.asked.push(f.clone());
                self.outbox.push(Command::Tune(f));
            }
        }
        if self.shapes.custom {
            return false;
        }
        let (n, gamma) = match (self.shapes.preset, self.tuned_shape()) {
            (Preset::Tuned, Some(t)) => (t.n, t.gamma),
            _ => (PAPER_N, PAPER_GAMMA),
        };
        let p = &mut self.params.decode;
        let before = (p.n, p.gamma);
        p.n = n.max(p.k).min(MAX_N);
        p.gamma = gamma;
        before != (p.n, p.gamma)
    }

    /// Re-decodes with new parameters, keeping an auto-run going if one was.
    fn reshape(&mut self) {
        let auto = self.auto;
        self.params_changed();
        if auto {
            self.toggle_auto();
        }
    }

    fn on_tuned(&mut self, t: TunedShape) {
        if self
            .shapes
            .tuning
            .as_ref()
            .is_some_and(|(w, ..)| *w == t.what)
        {
            self.shapes.tuning = None;
        }
        let line = format!(
            "tuned for {} ({} {} K {}): N {} gamma {}, {:.1} ms per user{} on {} validation users{}",
            self.header.device,
            t.what.mode.name(),
            t.what.draft,
            t.what.k,
            t.n,
            t.gamma,
            t.ms,
            t.paper_ms
                .map(|p| format!(" (paper's N 40 gamma 3: {p:.1} ms)"))
                .unwrap_or_default(),
            t.users,
            if t.cached {
                " (from the cache)".to_string()
            } else {
                format!(" in {:.0} s", t.seconds)
            }
        );
        self.narrate(line);
        let current = t.what == self.tune_for();
        self.shapes.tuned.retain(|x| x.what != t.what);
        self.shapes.tuned.push(t);
        let stepping = !self.auto && self.current.as_ref().is_some_and(|c| c.cursor > 0);
        if current && self.shapes.preset == Preset::Tuned && !self.shapes.custom && stepping {
            self.shapes.deferred = true;
            self.status = "tuned shape ready: it applies from the next user".into();
        } else if current && self.apply_shape() {
            self.reshape();
        }
    }

    fn toggle_preset(&mut self) {
        if !self.shapes.enabled {
            self.status = "no tuning here (replay, demo, or --tune-users 0)".into();
            return;
        }
        self.shapes.preset = match self.shapes.preset {
            Preset::Tuned => Preset::Paper,
            Preset::Paper => Preset::Tuned,
        };
        self.shapes.custom = false;
        self.apply_shape();
        self.reshape();
    }

    /// Draft model name (the label's first word) at `i`.
    pub fn draft_name(&self, i: usize) -> String {
        self.header
            .drafts
            .get(i)
            .and_then(|d| d.split_whitespace().next())
            .unwrap_or("draft")
            .to_string()
    }

    /// Takes the parameters of a run the engine served (replay moves to a user's recorded
    /// parameters when the current ones were not recorded for that user).
    fn adopt(&mut self, p: &RunParams) {
        if *p == self.run_params() {
            return;
        }
        if let Some(d) = (0..self.header.drafts.len()).find(|&i| self.draft_name(i) == p.draft) {
            self.params.draft = d;
        }
        self.params.decode = p.decode;
    }

    pub fn run_params(&self) -> RunParams {
        RunParams {
            decode: self.params.decode,
            draft: self.draft_name(self.params.draft),
        }
    }

    pub fn user_view(&self) -> Option<&UserView> {
        self.users.get(self.user)
    }

    /// Statistics for the current parameters (empty when none were gathered yet).
    pub fn stats(&self) -> Option<&SpeedStats> {
        let p = self.run_params();
        self.stats.iter().find(|(k, _)| *k == p).map(|(_, s)| s)
    }

    pub fn running(&self) -> bool {
        self.pending.is_some()
    }

    fn narrate(&mut self, line: String) {
        log::info!(target: "explorer", "{line}");
        self.narration.push(line);
        if self.narration.len() > NARRATION_KEEP {
            let drop = self.narration.len() - NARRATION_KEEP;
            self.narration.drain(..drop);
        }
    }

    /// Asks the engine for the current user with the current parameters, replacing whatever was
    /// asked before.
    fn request(&mut self, intent: Intent) {
        self.generation += 1;
        self.auto = false;
        self.current = None;
        self.intent = intent;
        self.pending = Some(self.generation);
        self.ui.scroll = Scroll::default();
        self.ui.scrolled_round = None;
        let params = self.run_params();
        let cmd = match self.compare {
            Some(other) => Command::Compare {
                generation: self.generation,
                user: self.user,
                params,
                other_draft: self.draft_name(other),
            },
            None => Command::Decode {
                generation: self.generation,
                user: self.user,
                params,
            },
        };
        self.outbox.push(cmd);
    }

    /// Parameters changed: stop an auto-run and re-decode the current user.
    fn params_changed(&mut self) {
        // The header shows the new values; the log keeps the history of changes.
        let p = &self.params.decode;
        let line = format!(
            "parameters: {} N {} K {} gamma {}{} draft {}",
            p.mode.name(),
            p.n,
            p.k,
            p.gamma,
            p.draft_mass
                .map(|m| format!(" draft mass {m}"))
                .unwrap_or_default(),
            self.draft_name(self.params.draft)
        );
        self.status.clear();
        self.narrate(line);
        self.request(Intent::Start);
    }

    fn record_result(&mut self, user: usize, run: &UserRun) {
        let Some(view) = self.users.get(user).cloned() else {
            return;
        };
        let speed = run.speed(view.user);
        let line = format!(
            "user {} ({}): WS {:.2}x, target passes {}->{}, AS {}",
            view.user,
            run.params.draft,
            speed.ws(),
            speed.baseline_target_passes,
            speed.target_passes,
            speed.accepted_steps
        );
        match self.stats.iter_mut().find(|(k, _)| *k == run.params) {
            Some((_, s)) => s.record(speed),
            None => {
                let mut s = SpeedStats::default();
                s.record(speed);
                self.stats.push((run.params.clone(), s));
            }
        }
        self.narrate(line);
        if let Some(rec) = &mut self.recording {
            let r = UserRecord {
                user: view,
                run: run.clone(),
            };
            match rec
                .iter_mut()
                .find(|x| x.user.user == r.user.user && x.run.params == r.run.params)
            {
                Some(old) => *old = r,
                None => rec.push(r),
            }
        }
    }

    fn cursor_for(&self, run: &UserRun) -> phase::Cursor {
        match self.intent {
            Intent::Start => 0,
            Intent::Step => 1,
            Intent::End => phase::phases(&run.trace).len(),
        }
    }

    fn on_engine(&mut self, ev: EngineEvent) {
        match ev {
            EngineEvent::Tuning { what, done, total } => {
                self.shapes.tuning = Some((what, done, total));
                return;
            }
            EngineEvent::Tuned(t) => return self.on_tuned(t),
            EngineEvent::TuneFailed { what, message } => {
                if self
                    .shapes
                    .tuning
                    .as_ref()
                    .is_some_and(|(w, ..)| *w == what)
                {
                    self.shapes.tuning = None;
                }
                let line = format!("tuning failed, the paper's shape stays: {message}");
                log::warn!(target: "explorer", "{line}");
                self.narrate(line);
                return;
            }
            _ => {}
        }
        if ev.generation() != self.pending {
            // A reply to a request the user has since replaced.
            log::debug!(target: "explorer", "dropped a stale engine reply (generation {:?})", ev.generation());
            return;
        }
        match ev {
            EngineEvent::Decoded {
                user, run, auto, ..
            } => {
                self.record_result(user, &run);
                if auto {
                    // An auto-run shows each user finished as it goes by.
                    if self.user != user {
                        self.ui.scroll = Scroll::default();
                    }
                    self.user = user;
                    self.current = Some(Current {
                        cursor: phase::phases(&run.trace).len(),
                        run: *run,
                        other: None,
                    });
                } else {
                    self.pending = None;
                    self.adopt(&run.params);
                    let cursor = self.cursor_for(&run);
                    self.current = Some(Current {
                        run: *run,
                        other: None,
                        cursor,
                    });
                    self.narrate_cursor();
                }
                self.follow_round();
            }
            EngineEvent::Compared {
                user, a, b, auto, ..
            } => {
                self.record_result(user, &a);
                self.record_result(user, &b);
                let cursor = if auto {
                    if self.user != user {
                        self.ui.scroll = Scroll::default();
                    }
                    self.user = user;
                    phase::phases(&a.trace).len()
                } else {
                    self.pending = None;
                    self.cursor_for(&a)
                };
                self.current = Some(Current {
                    run: *a,
                    other: Some(*b),
                    cursor,
                });
            }
            EngineEvent::AutoDone { .. } => {
                self.pending = None;
                self.auto = false;
                self.status = "auto-run finished".into();
            }
            EngineEvent::Failed { message, .. } => {
                self.pending = None;
                self.auto = false;
                log::error!(target: "explorer", "{message}");
                self.status = message;
            }
            EngineEvent::Tuning { .. } | EngineEvent::Tuned(_) | EngineEvent::TuneFailed { .. } => {
            }
        }
    }

    fn narrate_cursor(&mut self) {
        if let Some(c) = &self.current {
            if let Some(line) = phase::narrate(&c.run.trace, c.cursor, &self.vocab) {
                self.narrate(line);
            }
        }
    }

    fn step(&mut self) {
        match &mut self.current {
            Some(c) if !c.finished() => {
                c.cursor += 1;
                self.narrate_cursor();
            }
            Some(_) => self.status = "user finished: n for the next user".into(),
            None if self.pending.is_some() && !self.auto => self.intent = Intent::Step,
            None => self.request(Intent::Step),
        }
        self.follow_round();
    }

    fn run_to_end(&mut self) {
        match &mut self.current {
            Some(c) if !self.auto => c.cursor = phase::phases(&c.run.trace).len(),
            Some(_) => {}
            None if self.pending.is_some() && !self.auto => self.intent = Intent::End,
            None => self.request(Intent::End),
        }
        self.follow_round();
    }

    /// The round the cursor shows, if any.
    pub fn shown_round(&self) -> Option<usize> {
        let c = self.current.as_ref()?;
        phase::view(&c.run.trace, c.cursor).map(|v| v.round.round)
    }

    /// Entering another round starts its panels at the top.
    fn follow_round(&mut self) {
        let round = self.shown_round();
        if round != self.ui.scrolled_round {
            self.ui.scrolled_round = round;
            let s = &mut self.ui.scroll;
            s.beams = 0;
            s.grid_row = 0;
            s.grid_col = 0;
        }
    }

    /// Queues the round on screen (or the last one of a finished user) for an SVG.
    fn export_round(&mut self) {
        let (Some(c), Some(u)) = (&self.current, self.user_view()) else {
            self.status = "nothing to export yet: decode a user first".into();
            return;
        };
        let round = self
            .shown_round()
            .unwrap_or(c.run.trace.rounds.len().saturating_sub(1));
        self.outbox.push(Command::ExportRound {
            user: u.user,
            round,
            run: Box::new(c.run.clone()),
        });
    }

    fn goto_user(&mut self, user: usize) {
        self.user = user;
        if std::mem::take(&mut self.shapes.deferred) {
            self.apply_shape();
        }
        self.request(Intent::Start);
    }

    /// Finds the next user (after the current one, wrapping) whose id equals the query or whose
    /// history or ground truth has a title containing it.
    fn search(&mut self, query: &str) {
        let q = query.trim().to_lowercase();
        if q.is_empty() {
            return;
        }
        let id: Option<u32> = q.parse().ok();
        let n = self.users.len();
        let found = (1..=n).map(|i| (self.user + i) % n).find(|&i| {
            let u = &self.users[i];
            match id {
                Some(id) => u.user == id,
                None => {
                    u.history
                        .iter()
                        .any(|h| h.title.to_lowercase().contains(&q))
                        || u.truth
                            .iter()
                            .flat_map(|t| &t.titles)
                            .any(|t| t.to_lowercase().contains(&q))
                }
            }
        });
        match found {
            Some(i) => {
                self.status = format!("found user {}", self.users[i].user);
                self.goto_user(i);
            }
            None => self.status = format!("no user matches {query:?}"),
        }
    }

    fn toggle_record(&mut self) {
        if self.recording.is_none() && self.unsaved.is_some() {
            // The last recording is still unsaved: finish that first.
            self.ask_save_path("the last recording is not saved yet");
            return;
        }
        match self.recording.take() {
            None => {
                let mut rec = Vec::new();
                if let (Some(c), Some(u)) = (&self.current, self.user_view()) {
                    rec.push(UserRecord {
                        user: u.clone(),
                        run: c.run.clone(),
                    });
                }
                self.recording = Some(rec);
                self.status = "recording: r again saves to sessions/".into();
            }
            Some(rec) if rec.is_empty() => {
                self.status = "recording stopped: nothing to save".into()
            }
            Some(rec) => {
                let mut s = Session::new(self.header.clone());
                for r in rec {
                    s.push(r);
                }
                self.status = format!("saving {} users...", s.users.len());
                let s = Box::new(s);
                self.saving = Some(s.clone());
                self.outbox.push(Command::SaveSession(s));
            }
        }
    }

    /// Users in the unsaved recording.
    fn unsaved_users(&self) -> usize {
        self.unsaved.as_ref().map_or(0, |s| s.users.len())
    }

    /// Where the save-path prompt starts: a file in the fallback folder.
    pub fn suggested_path(&self) -> String {
        self.fallback_dir
            .join("atspeed-session.json")
            .display()
            .to_string()
    }

    /// Opens the save-path prompt for the unsaved recording, saying why.
    fn ask_save_path(&mut self, why: &str) {
        let n = self.unsaved_users();
        self.status = format!(
            "{why}: recording of {n} users kept · enter a path to save it (esc: keep it for now)"
        );
        if self.ui.save_path.is_none() {
            self.ui.save_path = Some(self.suggested_path());
        }
    }

    fn saved(&mut self, result: Result<String, String>) {
        match result {
            Ok(path) => {
                self.saving = None;
                self.unsaved = None;
                self.ui.save_path = None;
                self.discard_armed = false;
                self.status = format!("session saved to {path}");
                self.narrate(self.status.clone());
                self.farewell.push(format!("session saved to {path}"));
                if self.quit_after_save {
                    self.quit = true;
                }
            }
            Err(e) => {
                log::error!(target: "explorer", "{e}");
                if let Some(s) = self.saving.take() {
                    self.unsaved = Some(s);
                }
                if self.unsaved.is_none() {
                    self.status = e;
                    return;
                }
                // A quit waiting on this save waits for the user instead.
                self.quit_after_save |= self.quit;
                self.quit = false;
                self.ask_save_path(&e);
            }
        }
    }

    fn submit_save_path(&mut self) {
        let Some(path) = self.ui.save_path.take() else {
            return;
        };
        let path = path.trim();
        match &self.unsaved {
            Some(s) if !path.is_empty() => {
                self.status = format!("saving {} users to {path}...", s.users.len());
                self.saving = Some(s.clone());
                self.outbox.push(Command::SaveSessionAs {
                    session: s.clone(),
                    path: PathBuf::from(path),
                });
            }
            Some(_) => self.ask_save_path("no path given"),
            None => {}
        }
    }

    /// The recording that would be lost on exit (running or unsaved), taken out of the app.
    pub fn take_unsaved(&mut self) -> Option<Session> {
        if let Some(s) = self.unsaved.take().or_else(|| self.saving.take()) {
            return Some(*s);
        }
        let rec = self.recording.take().filter(|r| !r.is_empty())?;
        let mut s = Session::new(self.header.clone());
        for r in rec {
            s.push(r);
        }
        Some(s)
    }

    fn quit(&mut self) {
        if self.unsaved.is_some() {
            if !self.discard_armed {
                // Warn and ask again; quitting once more drops the recording.
                self.discard_armed = true;
                self.status = format!(
                    "the recording of {} users is not saved: r asks for a path · q again quits \
                     without it",
                    self.unsaved_users()
                );
                return;
            }
            let n = self.unsaved_users();
            self.unsaved = None;
            self.farewell.push(format!(
                "warning: quit without saving the recording of {n} users"
            ));
        }
        // Quitting while recording keeps what was recorded.
        if self.recording.as_ref().is_some_and(|r| !r.is_empty()) {
            self.toggle_record();
            self.quit_after_save = true;
        }
        if self.auto || self.pending.is_some() {
            self.generation += 1;
            self.outbox.push(Command::Cancel {
                generation: self.generation,
            });
        }
        self.quit = true;
    }

    fn toggle_auto(&mut self) {
        if self.auto {
            self.generation += 1;
            self.auto = false;
            self.pending = None;
            self.outbox.push(Command::Cancel {
                generation: self.generation,
            });
            self.status = "auto-run stopped".into();
        } else if !self.users.is_empty() {
            self.generation += 1;
            self.auto = true;
            self.pending = Some(self.generation);
            self.outbox.push(Command::Auto {
                generation: self.generation,
                from: self.user,
                params: self.run_params(),
                other_draft: self.compare.map(|i| self.draft_name(i)),
            });
            self.status = "auto-run: a stops".into();
        }
    }

    fn select_tab(&mut self, tab: Tab) {
        self.ui.tab = tab;
        self.ui.focus = match tab {
            Tab::Decode => PanelId::Beams,
            Tab::Tree => PanelId::Attention,
            Tab::Results => PanelId::Recs,
            Tab::Log => PanelId::Log,
        };
    }

    /// Moves a panel's scroll offsets; the view clamps them to the content when it draws.
    fn scroll_panel(&mut self, panel: PanelId, dy: i32, dx: i32) {
        fn add(v: u16, d: i32) -> u16 {
            (v as i32 + d).clamp(0, u16::MAX as i32) as u16
        }
        let s = &mut self.ui.scroll;
        match panel {
            PanelId::User => s.user = add(s.user, dy),
            PanelId::Beams => s.beams = add(s.beams, dy),
            PanelId::Attention => {
                s.grid_row = add(s.grid_row, dy);
                s.grid_col = add(s.grid_col, dx);
            }
            PanelId::Recs => s.recs = add(s.recs, dy),
            _ => {}
        }
    }
}

/// Whether a command writes a session.
pub fn is_save(c: &Command) -> bool {
    matches!(c, Command::SaveSession(_) | Command::SaveSessionAs { .. })
}

/// Applies one action. Pure apart from `log` calls: effects go to `app.outbox`.
pub fn update(app: &mut App, action: Action) {
    // While the search prompt is open, keys edit the query.
    match action {
        Action::SearchInput(c) => {
            if let Some(q) = &mut app.ui.search {
                q.push(c);
            }
            return;
        }
        Action::SearchBackspace => {
            if let Some(q) = &mut app.ui.search {
                q.pop();
            }
            return;
        }
        Action::SearchSubmit => {
            if let Some(q) = app.ui.search.take() {
                app.search(&q);
            }
            return;
        }
        Action::PathInput(c) => {
            if let Some(p) = &mut app.ui.save_path {
                p.push(c);
            }
            return;
        }
        Action::PathBackspace => {
            if let Some(p) = &mut app.ui.save_path {
                p.pop();
            }
            return;
        }
        Action::PathSubmit => {
            app.submit_save_path();
            return;
        }
        _ => {}
    }
    match action {
        Action::Step => app.step(),
        Action::RunToEnd => app.run_to_end(),
        Action::NextUser | Action::PrevUser if !app.users.is_empty() => {
            let n = app.users.len();
            let next = match action {
                Action::NextUser => (app.user + 1) % n,
                _ => (app.user + n - 1) % n,
            };
            app.goto_user(next);
        }
        Action::NextUser | Action::PrevUser => {}
        Action::SearchStart => app.ui.search = Some(String::new()),
        Action::ToggleMode => {
            let p = &mut app.params.decode;
            p.mode = p.mode.other();
            // The adaptive width applies to strict drafts only.
            if p.mode == Mode::Relaxed {
                p.draft_mass = None;
            }
            app.apply_shape();
            app.params_changed();
        }
        Action::IncN | Action::DecN => {
            // Steps of 1 while small, 5 beyond 10: N = 40 is the usual setting.
            let p = &mut app.params.decode;
            let step = if p.n > 10 || (p.n == 10 && matches!(action, Action::IncN)) {
                5
            } else {
                1
            };
            let n = match action {
                Action::IncN => (p.n + step).min(MAX_N),
                _ => p.n.saturating_sub(step).max(p.k),
            };
            if n == p.n {
                app.status = format!("N stays {n} (K {} <= N <= {MAX_N})", p.k);
            } else {
                p.n = n;
                app.shapes.custom = true;
                app.params_changed();
            }
        }
        Action::IncK | Action::DecK => {
            let p = &mut app.params.decode;
            let k = match action {
                Action::IncK => (p.k + 1).min(MAX_N),
                _ => p.k.saturating_sub(1).max(1),
            };
            if k == p.k {
                app.status = format!("K stays {k}");
            } else {
                p.k = k;
                // N >= K always; raising K drags N along.
                p.n = p.n.max(k);
                app.apply_shape();
                app.params_changed();
            }
        }
        Action::IncGamma | Action::DecGamma => {
            // More than L - 1 drafted steps can never be used.
            let most = app.header.most_accepted().max(1);
            let p = &mut app.params.decode;
            let g = match action {
                Action::IncGamma => (p.gamma + 1).min(most),
                _ => p.gamma.saturating_sub(1).max(1),
            };
            if g == p.gamma {
                app.status = format!("gamma stays {g} (1..={most})");
            } else {
                p.gamma = g;
                app.shapes.custom = true;
                app.params_changed();
            }
        }
        Action::NextDraft => {
            if app.header.drafts.len() < 2 {
                app.status = "only one draft model is available".into();
            } else {
                app.params.draft = (app.params.draft + 1) % app.header.drafts.len();
                if app.compare == Some(app.params.draft) {
                    app.compare = Some((app.params.draft + 1) % app.header.drafts.len());
                }
                app.apply_shape();
                app.params_changed();
            }
        }
        Action::ToggleCompare => {
            if app.compare.is_some() {
                app.compare = None;
                app.request(Intent::End);
            } else if app.header.drafts.len() < 2 {
                app.status = "comparison needs two draft models".into();
            } else {
                app.compare = Some((app.params.draft + 1) % app.header.drafts.len());
                app.request(Intent::End);
            }
        }
        Action::ToggleAuto => app.toggle_auto(),
        Action::ToggleRecord => app.toggle_record(),
        Action::TogglePreset => app.toggle_preset(),
        Action::NextBlock => {
            app.ui.block = app.ui.block.wrapping_add(1) % app.header.length.max(1);
            app.ui.scroll.grid_row = 0;
            app.ui.scroll.grid_col = 0;
        }
        Action::Zoom => {
            app.ui.zoom = match app.ui.zoom {
                1 => 2,
                2 => 4,
                _ => 1,
            };
        }
        Action::ToggleChart => {
            app.ui.chart = match app.ui.chart {
                Chart::Speedup => Chart::Width,
                Chart::Width => Chart::Speedup,
            };
        }
        Action::ExportRound => app.export_round(),
        Action::ToggleHelp => app.ui.help = !app.ui.help,
        Action::Close => {
            app.ui.help = false;
            app.ui.search = None;
            if app.ui.save_path.take().is_some() {
                app.status = format!(
                    "recording of {} users not saved: r asks for a path again",
                    app.unsaved_users()
                );
            }
        }
        Action::NextFocus => {
            if is_compact(app.ui.width, app.ui.height) {
                // One group of panels at a time: Tab moves to the next group and focuses its
                // main panel, so the arrows scroll what is on screen.
                let i = Tab::ALL.iter().position(|t| *t == app.ui.tab).unwrap_or(0);
                app.select_tab(Tab::ALL[(i + 1) % Tab::ALL.len()]);
            } else {
                app.ui.focus = app.ui.focus.next();
            }
        }
        Action::SelectTab(t) => app.select_tab(t),
        Action::Scroll { dy, dx } => app.scroll_panel(app.ui.focus, dy, dx),
        Action::MouseScroll { panel, dy } => {
            app.ui.focus = panel;
            app.scroll_panel(panel, dy, 0);
        }
        Action::Resize { width, height } => {
            app.ui.width = width;
            app.ui.height = height;
        }
        Action::Engine(ev) => app.on_engine(ev),
        Action::Saved(result) => app.saved(result),
        Action::Tick => app.ui.ticks = app.ui.ticks.wrapping_add(1),
        Action::Quit => app.quit(),
        Action::SearchInput(_)
        | Action::SearchBackspace
        | Action::SearchSubmit
        | Action::PathInput(_)
        | Action::PathBackspace
        | Action::PathSubmit => {}
    }
}
