//! The event-loop glue: terminal setup and restore, the tokio loop joining input, engine events
//! and a redraw tick, and the side effects the app queues (engine requests, session files).
//!
//! Everything interesting is in [`super::state`]; this file only moves events and effects.

use std::io::stdout;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossterm::event::{DisableMouseCapture, EnableMouseCapture, EventStream};
use crossterm::execute;
use futures::StreamExt;
use ratatui::DefaultTerminal;
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::engine::{Engine, Worker, ENGINE_THREAD};
use super::state::{update, Action, App, Command, EngineEvent};
use super::{keys, render};
use crate::{Error, Result};

/// Redraw period: keeps the spinner moving and the log fresh while the engine works.
const TICK: Duration = Duration::from_millis(100);
/// Where `r` saves sessions.
pub const SESSIONS_DIR: &str = "sessions";

/// Signals that stop the explorer cleanly: `timeout` and `kill` send SIGTERM, `kill -INT` SIGINT
/// (Ctrl-C itself arrives as a key in raw mode), and closing the terminal window SIGHUP.
pub const STOP_SIGNALS: [i32; 3] = [SIGTERM, SIGINT, SIGHUP];
/// How long the event loop has to stop after a signal before the terminal is restored and the
/// process exits from the signal thread (the main thread may be stuck in a long computation).
const SIGNAL_GRACE: Duration = Duration::from_secs(3);

/// Whether the terminal is in the explorer's modes (raw, alternate screen, mouse capture, cursor
/// hidden). Restoring is done once, by whichever path gets there first: the guard, the panic
/// hook, or the signal thread.
static ENTERED: AtomicBool = AtomicBool::new(false);

/// Leaves every mode the explorer set: raw mode off, mouse capture off, cursor shown, main
/// screen back. Safe to call from any thread and more than once.
pub fn restore_terminal() {
    if !ENTERED.swap(false, Ordering::SeqCst) {
        return;
    }
    // Raw mode first: it has the most side effects (ratatui does the same).
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = execute!(
        stdout(),
        DisableMouseCapture,
        crossterm::cursor::Show,
        crossterm::terminal::LeaveAlternateScreen
    );
}

/// Restores the terminal when dropped, so every exit path (return, `?`, unwinding) leaves a usable
/// shell behind. An abort (which unwinds nothing) is covered by a SIGABRT handler.
struct TerminalGuard {
    on_abort: Option<signal_hook::SigId>,
}

/// What the mouse, cursor and screen modes are undone with (crossterm's `DisableMouseCapture`,
/// `Show` and `LeaveAlternateScreen`), as plain bytes a signal handler can write.
const RESTORE_BYTES: &[u8] =
    b"\x1b[?1006l\x1b[?1015l\x1b[?1003l\x1b[?1002l\x1b[?1000l\x1b[?25h\x1b[?1049l";

/// The descriptor crossterm puts in raw mode: stdin when it is a terminal, else `/dev/tty`
/// (opened once and kept for the process's lifetime); `None` without a terminal.
fn tty_fd() -> Option<i32> {
    // SAFETY: plain libc calls on descriptors we check.
    let fd = unsafe {
        if libc::isatty(libc::STDIN_FILENO) == 1 {
            libc::STDIN_FILENO
        } else {
            libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR)
        }
    };
    (fd >= 0).then_some(fd)
}

/// A process outside the terminal's foreground process group is stopped (SIGTTOU) as soon as it
/// sets raw mode, and stays stopped even through SIGTERM: that is what `timeout` without
/// `--foreground` does to a program it starts. Refuse instead of hanging.
fn check_foreground(fd: i32) -> Result<()> {
    // SAFETY: plain libc queries.
    let (fg, mine) = unsafe { (libc::tcgetpgrp(fd), libc::getpgrp()) };
    if fg >= 0 && fg != mine {
        return Err(Error::Terminal(
            "the explorer is not in the terminal's foreground process group, where it could \
             not take the keyboard (under `timeout`, use `timeout --foreground`)"
                .into(),
        ));
    }
    Ok(())
}

/// On SIGABRT (an allocation failure, `abort()`), which unwinds nothing, restores the terminal
/// from inside the handler, with async-signal-safe calls only: the settings saved now (before
/// raw mode) and the bytes of [`RESTORE_BYTES`]. The process then aborts as it would have.
fn restore_on_abort(fd: i32) -> Option<signal_hook::SigId> {
    // SAFETY: tcgetattr fills a termios we own.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return None;
    }
    let handler = move || {
        // SAFETY: write(2), tcsetattr(3), signal(2) and raise(3) are async-signal-safe.
        unsafe {
            if ENTERED.swap(false, Ordering::SeqCst) {
                libc::write(
                    libc::STDOUT_FILENO,
                    RESTORE_BYTES.as_ptr().cast(),
                    RESTORE_BYTES.len(),
                );
                libc::tcsetattr(fd, libc::TCSANOW, &saved);
            }
            // Die of the signal as without this handler (abort() would re-raise it itself; a
            // SIGABRT sent by kill would not).
            libc::signal(libc::SIGABRT, libc::SIG_DFL);
            libc::raise(libc::SIGABRT);
        }
    };
    // SAFETY: the handler only uses an atomic and async-signal-safe calls.
    unsafe { signal_hook::low_level::register(libc::SIGABRT, handler) }.ok()
}

impl TerminalGuard {
    fn enter() -> Result<(DefaultTerminal, TerminalGuard)> {
        // ratatui's `try_init` installs a hook that restores only raw mode and the screen; keep
        // the hook from before it and install ours (below) in its place.
        let fd = tty_fd();
        if let Some(fd) = fd {
            check_foreground(fd)?;
        }
        let original = std::panic::take_hook();
        let on_abort = fd.and_then(restore_on_abort);
        let terminal = match ratatui::try_init() {
            Ok(t) => t,
            Err(e) => {
                if let Some(id) = on_abort {
                    signal_hook::low_level::unregister(id);
                }
                let _ = std::panic::take_hook();
                std::panic::set_hook(original);
                let _ = ratatui::try_restore();
                return Err(Error::Terminal(format!(
                    "cannot initialise the terminal: {e}"
                )));
            }
        };
        ENTERED.store(true, Ordering::SeqCst);
        let guard = TerminalGuard { on_abort };
        install_panic_hook(original);
        execute!(stdout(), EnableMouseCapture)
            .map_err(|e| Error::Terminal(format!("cannot enable mouse capture: {e}")))?;
        Ok((terminal, guard))
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
        if let Some(id) = self.on_abort.take() {
            signal_hook::low_level::unregister(id);
        }
    }
}

type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

/// A panic on the engine thread is caught there and reported in the UI as a failed decode, so
/// it must not tear the terminal down: it only goes to the log. Any other panic restores the
/// terminal (mouse and cursor included), then prints as the previous hook would.
fn install_panic_hook(previous: PanicHook) {
    let _ratatui = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(ENGINE_THREAD) {
            log::error!(target: "explorer", "engine panic: {info}");
            return;
        }
        restore_terminal();
        previous(info);
    }));
}

/// Watches for [`STOP_SIGNALS`] on a thread of its own. The first one is sent to the event loop,
/// which saves a running recording and returns, so the guard restores the terminal. Should the
/// loop not get there within [`SIGNAL_GRACE`], or a second signal arrive, the thread restores the
/// terminal itself and exits with status 128 + signal.
struct SignalWatch {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalWatch {
    fn start(tx: UnboundedSender<i32>) -> Result<SignalWatch> {
        let mut signals = signal_hook::iterator::Signals::new(STOP_SIGNALS)
            .map_err(|e| Error::Terminal(format!("cannot watch for signals: {e}")))?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("atspeed-signals".into())
            .spawn(move || {
                let mut first = true;
                for sig in signals.forever() {
                    if first && tx.send(sig).is_ok() {
                        first = false;
                        std::thread::spawn(move || {
                            std::thread::sleep(SIGNAL_GRACE);
                            exit_on_signal(sig);
                        });
                    } else {
                        exit_on_signal(sig);
                    }
                }
            })
            .map_err(|e| Error::Terminal(format!("cannot watch for signals: {e}")))?;
        Ok(SignalWatch {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Restores the terminal and exits as a process killed by `sig` conventionally does.
fn exit_on_signal(sig: i32) -> ! {
    restore_terminal();
    std::process::exit(128 + sig);
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
    for n in &app.startup_notes {
        log::info!(target: "explorer", "{n}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Error::Terminal(format!("cannot start the event loop runtime: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::spawn(engine, tx);
    let (sig_tx, sig_rx) = tokio::sync::mpsc::unbounded_channel();
    let signals = SignalWatch::start(sig_tx)?;
    let (mut terminal, guard) = TerminalGuard::enter()?;
    let result = runtime.block_on(event_loop(&mut terminal, &mut app, &worker, rx, sig_rx));
    drop(guard);
    drop(terminal);
    // What became of a recording, now that the shell can show it.
    for line in &app.farewell {
        eprintln!("{line}");
    }
    // Joins the engine thread after the terminal is back, so a slow last decode does not leave
    // the screen frozen.
    drop(worker);
    drop(signals);
    result
}

/// After a signal: saves what a quit would have saved, under `sessions/`, or in the fallback
/// folder when that fails (there is nobody to ask for a path), and notes where it went.
fn save_before_exit(app: &mut App) {
    let Some(session) = app.take_unsaved() else {
        return;
    };
    let n = session.users.len();
    let first = session_path();
    let fallback = unique_path(&app.fallback_dir);
    let note = match session.save_new(&first) {
        Ok(()) => format!("session of {n} users saved to {}", first.display()),
        Err(e) => match session.save_new(&fallback) {
            Ok(()) => format!(
                "{e}; session of {n} users saved to {} instead",
                fallback.display()
            ),
            Err(e2) => format!("warning: the recording of {n} users is lost: {e}; {e2}"),
        },
    };
    app.farewell.push(note);
}

async fn event_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    worker: &Worker,
    mut engine_events: UnboundedReceiver<EngineEvent>,
    mut signals: UnboundedReceiver<i32>,
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
            Some(sig) = signals.recv() => {
                save_before_exit(app);
                return Err(Error::Interrupted(sig));
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
                    .save_new(&path)
                    .map(|()| path.display().to_string())
                    .map_err(|e| format!("cannot save the session: {e}"));
                update(app, Action::Saved(result));
            }
            Command::SaveSessionAs { session, path } => {
                let result = session
                    .save_new(&path)
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
    unique_path(std::path::Path::new(SESSIONS_DIR))
}

/// `DIR/session-<unix seconds>.json`, made unique if a file of that name exists.
fn unique_path(dir: &std::path::Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut path = dir.join(format!("session-{secs}.json"));
    let mut i = 1;
    while path.exists() {
        path = dir.join(format!("session-{secs}-{i}.json"));
        i += 1;
    }
    path
}
