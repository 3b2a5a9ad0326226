//! The engine thread: decodes on its own std thread (candle calls block) and streams results back.
//!
//! Requests arrive over a std channel; before starting one, the thread drains the queue and keeps
//! only the newest, so a burst of key presses (N up, up, up) costs one decode. Each request carries
//! the app's generation; the thread also checks a shared "latest generation" between the users of
//! an auto-run so that a newer request stops it promptly. Results that still arrive for an older
//! generation are dropped by the app.
//!
//! Tuning requests ([`Command::Tune`]) are queued in the engine instead, never dropped, and run
//! as background work one decode at a time: whenever no request waits, and a few decodes
//! between the users of an auto-run. The thread never runs two decodes at once, so a tuning
//! decode never shares the machine with a timed one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc::UnboundedSender;

use super::state::{Command, EngineEvent, TuneFor};
use crate::session::{RunParams, UserRun};

/// Name of the engine thread (the terminal's panic hook recognises it).
pub const ENGINE_THREAD: &str = "atspeed-engine";

/// Background decodes run between the users of an auto-run (tuning keeps moving, at about this
/// many tuning decodes per user decoded).
const BACKGROUND_PER_USER: usize = 3;

/// Something that can decode user `user` (an index into the app's user list).
pub trait Engine: Send + 'static {
    fn decode(&mut self, user: usize, params: &RunParams) -> crate::Result<UserRun>;
    fn num_users(&self) -> usize;
    /// Queues a tuning; may answer at once (a cached shape, or no tuning here).
    fn tune(&mut self, _what: TuneFor) -> Option<EngineEvent> {
        None
    }
    /// Whether background work is queued.
    fn has_background(&self) -> bool {
        false
    }
    /// One unit of background work (one tuning decode); what it has to report, if anything.
    fn background(&mut self) -> Option<EngineEvent> {
        None
    }
}

/// Handle to the engine thread. Dropping it closes the request channel, which ends the thread.
pub struct Worker {
    tx: Option<mpsc::Sender<Command>>,
    latest: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn spawn(mut engine: Box<dyn Engine>, events: UnboundedSender<EngineEvent>) -> Worker {
        let (tx, rx) = mpsc::channel::<Command>();
        let latest = Arc::new(AtomicU64::new(0));
        let seen = latest.clone();
        let handle = std::thread::Builder::new()
            .name(ENGINE_THREAD.into())
            .spawn(move || loop {
                let first = if engine.has_background() {
                    match rx.try_recv() {
                        Ok(c) => Some(c),
                        Err(TryRecvError::Empty) => None,
                        Err(TryRecvError::Disconnected) => break,
                    }
                } else {
                    match rx.recv() {
                        Ok(c) => Some(c),
                        Err(_) => break,
                    }
                };
                let Some(first) = first else {
                    // Nothing asked: a step of background work.
                    if let Some(ev) = engine.background() {
                        if events.send(ev).is_err() {
                            break;
                        }
                    }
                    continue;
                };
                // Tuning requests queue up; of the rest only the newest request matters.
                let mut next = Some(first);
                let mut newest = None;
                let mut alive = true;
                while let Some(c) = next {
                    match c {
                        Command::Tune(what) => {
                            if let Some(ev) = engine.tune(what) {
                                alive &= events.send(ev).is_ok();
                            }
                        }
                        other => newest = Some(other),
                    }
                    next = rx.try_recv().ok();
                }
                if !alive {
                    break;
                }
                if let Some(cmd) = newest {
                    let generation = generation_of(&cmd).unwrap_or(0);
                    // A panic in the model code must not take the explorer down: report it as
                    // a failed decode and keep serving.
                    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        serve(engine.as_mut(), cmd, &seen, &events)
                    }));
                    let alive = match served {
                        Ok(alive) => alive,
                        Err(payload) => events
                            .send(EngineEvent::Failed {
                                generation,
                                message: format!("engine panicked: {}", panic_text(&*payload)),
                            })
                            .is_ok(),
                    };
                    if !alive {
                        break;
                    }
                }
            })
            .expect("spawning the engine thread");
        Worker {
            tx: Some(tx),
            latest,
            handle: Some(handle),
        }
    }

    /// Queues a request. Returns false when the thread is gone.
    pub fn send(&self, cmd: Command) -> bool {
        if super::state::is_save(&cmd) || matches!(cmd, Command::ExportRound { .. }) {
            return true;
        }
        if let Some(g) = generation_of(&cmd) {
            self.latest.store(g, Ordering::SeqCst);
        }
        self.tx.as_ref().is_some_and(|tx| tx.send(cmd).is_ok())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.tx = None;
        // The thread finishes the decode it is in, then sees the closed channel. Waiting keeps
        // candle from being torn down under it at exit.
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The generation a request belongs to; `None` for work that no newer request replaces.
fn generation_of(cmd: &Command) -> Option<u64> {
    match cmd {
        Command::Decode { generation, .. }
        | Command::Compare { generation, .. }
        | Command::Auto { generation, .. }
        | Command::Cancel { generation } => Some(*generation),
        Command::Tune(_)
        | Command::SaveSession(_)
        | Command::SaveSessionAs { .. }
        | Command::ExportRound { .. } => None,
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs one request. Returns false when the app is gone (nobody listens any more).
fn serve(
    engine: &mut dyn Engine,
    cmd: Command,
    latest: &AtomicU64,
    events: &UnboundedSender<EngineEvent>,
) -> bool {
    let current = |g: u64| latest.load(Ordering::SeqCst) == g;
    let failed = |generation: u64, e: crate::Error| EngineEvent::Failed {
        generation,
        message: e.to_string(),
    };
    let ev = match cmd {
        Command::Decode {
            generation,
            user,
            params,
        } => {
            if !current(generation) {
                return true;
            }
            EngineEvent::decoded(generation, user, engine.decode(user, &params))
        }
        Command::Compare {
            generation,
            user,
            params,
            other_draft,
        } => {
            if !current(generation) {
                return true;
            }
            let other = RunParams {
                draft: other_draft,
                ..params.clone()
            };
            match engine
                .decode(user, &params)
                .and_then(|a| Ok((a, engine.decode(user, &other)?)))
            {
                Ok((a, b)) => EngineEvent::Compared {
                    generation,
                    user,
                    a: Box::new(a),
                    b: Box::new(b),
                    auto: false,
                },
                Err(e) => failed(generation, e),
            }
        }
        Command::Auto {
            generation,
            from,
            params,
            other_draft,
        } => {
            let other = other_draft.map(|draft| RunParams {
                draft,
                ..params.clone()
            });
            for user in from..engine.num_users() {
                if !current(generation) {
                    return true;
                }
                let decoded = engine.decode(user, &params).and_then(|a| {
                    let b = match &other {
                        Some(o) => Some(engine.decode(user, o)?),
                        None => None,
                    };
                    Ok((a, b))
                });
                let ev = match decoded {
                    Ok((run, None)) => EngineEvent::Decoded {
                        generation,
                        user,
                        run: Box::new(run),
                        auto: true,
                    },
                    Ok((a, Some(b))) => EngineEvent::Compared {
                        generation,
                        user,
                        a: Box::new(a),
                        b: Box::new(b),
                        auto: true,
                    },
                    Err(e) => {
                        return events.send(failed(generation, e)).is_ok();
                    }
                };
                if events.send(ev).is_err() {
                    return false;
                }
                // Tuning keeps moving during an auto-run.
                for _ in 0..BACKGROUND_PER_USER {
                    if !engine.has_background() || !current(generation) {
                        break;
                    }
                    if let Some(ev) = engine.background() {
                        if events.send(ev).is_err() {
                            return false;
                        }
                    }
                }
            }
            EngineEvent::AutoDone { generation }
        }
        Command::Cancel { .. }
        | Command::Tune(_)
        | Command::SaveSession(_)
        | Command::SaveSessionAs { .. }
        | Command::ExportRound { .. } => return true,
    };
    events.send(ev).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures;
    use std::time::Duration;

    /// Replies from fixtures, slowly, so requests pile up behind a running one.
    struct Slow;
    impl Engine for Slow {
        fn decode(&mut self, user: usize, p: &RunParams) -> crate::Result<UserRun> {
            std::thread::sleep(Duration::from_millis(30));
            let d = &p.decode;
            let mut run = fixtures::run(d.mode, d.n, d.k, d.gamma, user as u32, &[2]);
            run.params = p.clone();
            Ok(run)
        }
        fn num_users(&self) -> usize {
            3
        }
    }

    fn params(n: usize) -> RunParams {
        RunParams {
            decode: crate::decode::DecodeParams {
                n,
                k: 2,
                gamma: 3,
                ..Default::default()
            },
            draft: "x".into(),
        }
    }

    struct Boom;
    impl Engine for Boom {
        fn decode(&mut self, user: usize, p: &RunParams) -> crate::Result<UserRun> {
            if user == 0 {
                panic!("shape mismatch");
            }
            Slow.decode(user, p)
        }
        fn num_users(&self) -> usize {
            2
        }
    }

    #[test]
    fn a_panicking_decode_is_reported_and_the_thread_lives_on() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let w = Worker::spawn(Box::new(Boom), tx);
        w.send(Command::Decode {
            generation: 1,
            user: 0,
            params: params(4),
        });
        match rx.blocking_recv().unwrap() {
            EngineEvent::Failed {
                generation,
                message,
            } => {
                assert_eq!(generation, 1);
                assert!(message.contains("shape mismatch"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        w.send(Command::Decode {
            generation: 2,
            user: 1,
            params: params(4),
        });
        assert!(matches!(
            rx.blocking_recv().unwrap(),
            EngineEvent::Decoded { generation: 2, .. }
        ));
    }

    #[test]
    fn newest_request_wins_and_auto_runs_all_users() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let w = Worker::spawn(Box::new(Slow), tx);
        for (g, n) in [(1, 4), (2, 5), (3, 6)] {
            w.send(Command::Decode {
                generation: g,
                user: 0,
                params: params(n),
            });
        }
        let mut gens = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !gens.contains(&3) && std::time::Instant::now() < deadline {
            if let Ok(ev) = rx.try_recv() {
                gens.extend(ev.generation());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Generation 2 was queued behind 1 and replaced by 3 before it started.
        assert!(!gens.contains(&2), "{gens:?}");
        assert_eq!(gens.last(), Some(&3));

        w.send(Command::Auto {
            generation: 4,
            from: 0,
            params: params(4),
            other_draft: None,
        });
        let mut users = Vec::new();
        loop {
            match rx.blocking_recv().unwrap() {
                EngineEvent::Decoded { user, auto, .. } => {
                    assert!(auto);
                    users.push(user)
                }
                EngineEvent::AutoDone { generation } => {
                    assert_eq!(generation, 4);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(users, vec![0, 1, 2]);
    }
}
