//! The event-loop glue: terminal setup and restore, the tokio loop joining input, engine events
//! and a redraw tick, and the side effects the app queues (engine requests, session files).
//!
//! Everything interesting is in [`super::state`]; this file only moves events and effects.

use std::io::stdout;
use std::path::PathBuf;
use std::time::Duration;

use crossterm::event::{DisableMouseCapture, EnableMouseCapture, EventStream};
use crossterm::execute;
use futures::StreamExt;
use ratatui::DefaultTerminal;
use tokio::sync::mpsc::UnboundedReceiver;

use super::engine::{Engine, Worker, ENGINE_THREAD};
use super::state::{update, Action, App, Command, EngineEvent};
use super::{keys, render};
use crate::{Error, Result};

/// Redraw period: keeps the spinner moving and the log fresh while the engine works.
const TICK: Duration = Duration::from_millis(100);
/// Where `r` saves sessions.
pub const SESSIONS_DIR: &str = "sessions";

/// Restores the terminal when dropped, so every exit path (return, `?`, unwinding) leaves a usable
/// shell behind.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> Result<(DefaultTerminal, TerminalGuard)> {
        let terminal = ratatui::try_init()
            .map_err(|e| Error::Terminal(format!("cannot initialise the terminal: {e}")))?;
        install_panic_hook();
        let guard = TerminalGuard;
        execute!(stdout(), EnableMouseCapture)
            .map_err(|e| Error::Terminal(format!("cannot enable mouse capture: {e}")))?;
        Ok((terminal, guard))
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = execute!(stdout(), DisableMouseCapture);
        ratatui::restore();
    }
}

/// Runs before ratatui's hook (installed by `try_init`, restoring raw mode and the alternate
/// screen). A panic on the engine thread is caught there and reported in the UI as a failed decode,
/// so it must not tear the terminal down: it only goes to the log. Any other panic also releases
/// the mouse, which ratatui does not know about, then restores and prints as usual.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(ENGINE_THREAD) {
            log::error!(target: "explorer", "engine panic: {info}");
            return;
        }
        let _ = execute!(stdout(), DisableMouseCapture);
        previous(info);
    }));
}

/// Sends the tui-logger widget the log records. Fails when another logger is already installed
/// (e.g. the binary set up env_logger); the log panel then shows the explorer's narration.
fn init_logger() -> bool {
    if tui_logger::init_logger(log::LevelFilter::Debug).is_err() {
        return false;
    }
    tui_logger::set_default_level(log::LevelFilter::Info);
    true
}

/// Runs the explorer until the user quits. Builds its own runtime: call it from synchronous code
/// (not from inside another tokio runtime).
pub fn run_app(mut app: App, engine: Box<dyn Engine>) -> Result<()> {
    app.use_tui_logger = init_logger();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Error::Terminal(format!("cannot start the event loop runtime: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::spawn(engine, tx);
    let (mut terminal, guard) = TerminalGuard::enter()?;
    let result = runtime.block_on(event_loop(&mut terminal, &mut app, &worker, rx));
    drop(guard);
    // Joins the engine thread after the terminal is back, so a slow last decode does not leave
    // the screen frozen.
    drop(worker);
    result
}

async fn event_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    worker: &Worker,
    mut engine_events: UnboundedReceiver<EngineEvent>,
) -> Result<()> {
    let size = terminal
        .size()
        .map_err(|e| Error::Terminal(format!("reading the size: {e}")))?;
    update(
        app,
        Action::Resize {
            width: size.width,
            height: size.height,
        },
    );
    app.start();
    let mut input = EventStream::new();
    let mut tick = tokio::time::interval(TICK);
    let mut latency = Latency::default();
    // Input redraws at once; engine news (an auto-run sends many) waits for the next tick, so
    // drawing never takes much of the CPU the timed decodes run on.
    let mut draw_now = true;
    let mut dirty = false;
    loop {
        perform(app, worker)?;
        if app.quit {
            latency.report();
            return Ok(());
        }
        if draw_now || (dirty && !app.auto) {
            terminal
                .draw(|f| render(app, f))
                .map_err(|e| Error::Terminal(format!("drawing: {e}")))?;
            latency.drawn();
            dirty = false;
        }
        let action = tokio::select! {
            ev = input.next() => match ev {
                Some(Ok(ev)) => {
                    latency.input();
                    draw_now = true;
                    keys::action(app, &ev)
                }
                Some(Err(e)) => return Err(Error::Terminal(format!("reading terminal input: {e}"))),
                None => return Ok(()),
            },
            ev = engine_events.recv() => match ev {
                Some(ev) => {
                    draw_now = false;
                    dirty = true;
                    Some(Action::Engine(ev))
                }
                None => return Err(Error::Terminal("the engine thread stopped unexpectedly".into())),
            },
            _ = tick.tick() => {
                // The spinner moves while something runs; otherwise only news is drawn.
                draw_now = dirty || app.running();
                Some(Action::Tick)
            }
        };
        if let Some(a) = action {
            update(app, a);
        }
    }
}

/// Input-to-redraw latency: from the moment a terminal event is read to the end of the draw that
/// follows it (update, effects and render included). Logged on quit; with
/// `ATSPEED_LATENCY_FILE=path` also written there as JSON, for measuring the explorer under load.
#[derive(Default)]
struct Latency {
    pending: Option<std::time::Instant>,
    samples_ms: Vec<f64>,
}

impl Latency {
    fn input(&mut self) {
        self.pending.get_or_insert_with(std::time::Instant::now);
    }

    fn drawn(&mut self) {
        if let Some(t) = self.pending.take() {
            self.samples_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }

    fn report(&mut self) {
        if self.samples_ms.is_empty() {
            return;
        }
        let v = &mut self.samples_ms;
        v.sort_by(f64::total_cmp);
        let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        let summary = serde_json::json!({
            "events": v.len(),
            "mean_ms": v.iter().sum::<f64>() / v.len() as f64,
            "p50_ms": pct(0.5),
            "p95_ms": pct(0.95),
            "max_ms": pct(1.0),
        });
        log::info!(target: "explorer", "input-to-redraw latency: {summary}");
        if let Ok(path) = std::env::var("ATSPEED_LATENCY_FILE") {
            let _ = std::fs::write(path, summary.to_string());
        }
    }
}

/// Carries out the commands the last updates queued.
fn perform(app: &mut App, worker: &Worker) -> Result<()> {
    let commands: Vec<Command> = std::mem::take(&mut app.outbox);
    for cmd in commands {
        match cmd {
            Command::SaveSession(session) => {
                let path = session_path();
                let result = session
                    .save(&path)
                    .map(|()| path.display().to_string())
                    .map_err(|e| format!("cannot save the session: {e}"));
                update(app, Action::Saved(result));
            }
            Command::ExportRound { user, round, run } => {
                let result =
                    super::export::write_round(&app.vocab, &app.header.device, user, round, &run)
                        .map_err(|e| format!("cannot write the round: {e}"));
                update(app, Action::Saved(result));
            }
            other => {
                if !worker.send(other) {
                    return Err(Error::Terminal(
                        "the engine thread stopped unexpectedly".into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `sessions/session-<unix seconds>.json`, made unique if a file of that name exists.
fn session_path() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dir = PathBuf::from(SESSIONS_DIR);
    let mut path = dir.join(format!("session-{secs}.json"));
    let mut i = 1;
    while path.exists() {
        path = dir.join(format!("session-{secs}-{i}.json"));
        i += 1;
    }
    path
}
