//! The explorer on a real pseudo-terminal: a signal (SIGTERM from `timeout`, SIGINT, SIGHUP)
//! leaves the terminal as it was (main screen, mouse capture off, cursor shown, cooked mode) and
//! the process exits with 128 + signal; a recording that cannot be saved under `sessions/` is
//! kept, and saved where the user says.

#![cfg(all(unix, feature = "tui"))]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process whose controlling terminal is a fresh pty, with everything it wrote.
struct OnPty {
    master: OwnedFd,
    /// Kept open so the pty's termios can be read after the child exits.
    slave: OwnedFd,
    child: Child,
    out: Vec<u8>,
}

impl OnPty {
    fn spawn(cwd: &Path, args: &[&str], env: &[(&str, &Path)]) -> OnPty {
        Self::spawn_program(env!("CARGO_BIN_EXE_atspeed"), cwd, args, env)
    }

    fn spawn_program(program: &str, cwd: &Path, args: &[&str], env: &[(&str, &Path)]) -> OnPty {
        let (mut m, mut s) = (0, 0);
        let ws = libc::winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: plain FFI with valid out-pointers.
        let rc =
            unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty returned two fresh descriptors we now own.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let fl = libc::fcntl(m, libc::F_GETFL);
            libc::fcntl(m, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(cwd)
            .env("TERM", "xterm-256color")
            .env_remove("RUST_LOG")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn atspeed");
        OnPty {
            master,
            slave,
            child,
            out: Vec::new(),
        }
    }

    /// Reads what is available now.
    fn pump(&mut self) {
        let mut buf = [0u8; 65536];
        loop {
            // SAFETY: reading into a buffer we own from a descriptor we own.
            let n =
                unsafe { libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
            self.out.extend_from_slice(&buf[..n as usize]);
        }
    }

    /// Reads until `needle` appears after byte `from` (or panics after `secs`).
    fn wait_for(&mut self, needle: &[u8], from: usize, secs: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            self.pump();
            if find(&self.out[from.min(self.out.len())..], needle).is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no {:?} within {secs} s; output:\n{}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(&self.out)
        );
    }

    fn send(&mut self, bytes: &[u8]) {
        // SAFETY: writing a buffer we own to a descriptor we own.
        let n = unsafe { libc::write(self.master.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(n, bytes.len() as isize);
    }

    /// Waits for the exit (panics after `secs`), draining the output meanwhile.
    fn exit_code(&mut self, secs: u64) -> Option<i32> {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            self.pump();
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                self.pump();
                return st.code();
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!(
                    "still running after {secs} s; output:\n{}",
                    String::from_utf8_lossy(&self.out)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the pty is back in cooked mode (canonical input, echo).
    fn cooked(&self) -> bool {
        // SAFETY: tcgetattr fills a termios we own.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::tcgetattr(self.slave.as_raw_fd(), &mut t) };
        assert_eq!(rc, 0);
        t.c_lflag & libc::ICANON != 0 && t.c_lflag & libc::ECHO != 0
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

const ENTER_ALT: &[u8] = b"\x1b[?1049h";
const LEAVE_ALT: &[u8] = b"\x1b[?1049l";
const SHOW_CURSOR: &[u8] = b"\x1b[?25h";
const MOUSE_ON: &[u8] = b"\x1b[?1000h";
const MOUSE_OFF: &[u8] = b"\x1b[?1000l";

/// Issue 12: SIGTERM (what `timeout` sends), SIGINT and SIGHUP left the terminal in the
/// alternate screen with mouse capture on and the cursor hidden.
#[test]
fn signals_restore_the_terminal_and_exit_128_plus_signal() {
    let dir = tempfile::tempdir().unwrap();
    for (sig, name) in [
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGHUP, "SIGHUP"),
    ] {
        let mut p = OnPty::spawn(dir.path(), &["tui", "--demo"], &[]);
        p.wait_for(ENTER_ALT, 0, 20);
        p.wait_for(b"atspeed", 0, 20);
        assert!(!p.cooked(), "{name}: the explorer runs in raw mode");
        // SAFETY: signalling our own child by its id.
        unsafe { libc::kill(p.child.id() as i32, sig) };
        let code = p.exit_code(10);
        assert_eq!(code, Some(128 + sig), "{name}");
        let out = &p.out;
        let entered = rfind(out, ENTER_ALT).unwrap();
        let tail = &out[entered..];
        assert!(
            find(out, MOUSE_ON).is_some(),
            "{name}: mouse capture was on"
        );
        for (seq, what) in [
            (LEAVE_ALT, "leave the alternate screen"),
            (MOUSE_OFF, "disable mouse capture"),
            (SHOW_CURSOR, "show the cursor"),
        ] {
            assert!(
                find(tail, seq).is_some(),
                "{name}: no sequence to {what}; output:\n{}",
                String::from_utf8_lossy(out)
            );
        }
        assert!(p.cooked(), "{name}: raw mode left on");
        let text = String::from_utf8_lossy(out);
        assert!(!text.contains("panicked"), "{name}: {text}");
    }
}

/// Issue 12's reproduction: `timeout` sends SIGTERM. With `--foreground` the explorer runs and
/// is stopped cleanly; without it `timeout` starts the explorer outside the terminal's foreground
/// group, where setting raw mode stops the process for good: it now says so and exits instead.
#[test]
fn under_timeout_the_explorer_stops_cleanly_or_says_why_not() {
    if Command::new("timeout").arg("--version").output().is_err() {
        eprintln!("no `timeout` here: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_atspeed");
    let mut p = OnPty::spawn_program(
        "timeout",
        dir.path(),
        &["--foreground", "2", bin, "tui", "--demo"],
        &[],
    );
    p.wait_for(ENTER_ALT, 0, 20);
    assert_eq!(p.exit_code(20), Some(124), "timeout's own status");
    let tail = &p.out[rfind(&p.out, ENTER_ALT).unwrap()..];
    for seq in [LEAVE_ALT, MOUSE_OFF, SHOW_CURSOR] {
        assert!(
            find(tail, seq).is_some(),
            "{}",
            String::from_utf8_lossy(&p.out)
        );
    }
    assert!(p.cooked());

    // From a shell, as a user types it (here the shell leads the session, so `timeout` can
    // move itself and the explorer into a group of their own).
    let line = format!("timeout 5 {bin} tui --demo");
    let mut p = OnPty::spawn_program("sh", dir.path(), &["-c", &line], &[]);
    assert_eq!(p.exit_code(20), Some(1));
    let text = String::from_utf8_lossy(&p.out);
    assert!(text.contains("foreground"), "{text}");
    assert!(find(&p.out, ENTER_ALT).is_none(), "{text}");
    assert!(p.cooked());
}

/// Issue 12: an abort (an allocation failure) left the terminal in the alternate screen. It
/// unwinds nothing, so a SIGABRT handler restores the terminal before the process dies.
#[test]
fn an_abort_restores_the_terminal_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = OnPty::spawn(dir.path(), &["tui", "--demo"], &[]);
    p.wait_for(ENTER_ALT, 0, 20);
    p.wait_for(b"atspeed", 0, 20);
    assert!(!p.cooked());
    // SAFETY: signalling our own child by its id.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGABRT) };
    let _ = p.exit_code(10);
    use std::os::unix::process::ExitStatusExt;
    let status = p.child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    let tail = &p.out[rfind(&p.out, ENTER_ALT).unwrap()..];
    for seq in [LEAVE_ALT, MOUSE_OFF, SHOW_CURSOR] {
        assert!(
            find(tail, seq).is_some(),
            "{:?} missing; output:\n{}",
            String::from_utf8_lossy(seq),
            String::from_utf8_lossy(&p.out)
        );
    }
    assert!(p.cooked(), "raw mode left on");
}

/// Issue 12: with `sessions/` not writable a recording was dropped without a word. On a real
/// terminal: the save fails, the explorer offers a path, saves there, and quits when asked.
/// (The screen is drawn as differences, so the test waits for the frame and then goes by
/// timing and by what ends up on disk rather than by words on the screen.)
#[test]
fn an_unsavable_recording_is_saved_where_the_user_says() {
    let dir = tempfile::tempdir().unwrap();
    // `sessions` is a file: the folder cannot be created.
    std::fs::write(dir.path().join("sessions"), "not a folder").unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let settle = |p: &mut OnPty| {
        std::thread::sleep(Duration::from_millis(700));
        p.pump();
    };
    let mut p = OnPty::spawn(dir.path(), &["tui", "--demo"], &[("TMPDIR", &tmp)]);
    p.wait_for(ENTER_ALT, 0, 20);
    settle(&mut p);
    // Record the first user, then quit: the save under sessions/ fails, so the explorer stays
    // and offers a path in the fallback folder; enter saves there and completes the quit.
    p.send(b"r");
    settle(&mut p);
    p.send(b"q");
    settle(&mut p);
    assert!(p.child.try_wait().unwrap().is_none(), "quit without saving");
    let mark = p.out.len();
    p.send(b"\r");
    p.wait_for(LEAVE_ALT, mark, 10);
    assert_eq!(p.exit_code(10), Some(0));
    let saved = tmp.join("atspeed-session.json");
    let text = String::from_utf8_lossy(&p.out);
    let s = atspeed::session::Session::load(&saved).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(s.users.len(), 1);
    assert!(
        text.contains(&format!("session saved to {}", saved.display())),
        "{text}"
    );

    // A signal while recording saves under the fallback folder and says where.
    let mut p = OnPty::spawn(dir.path(), &["tui", "--demo"], &[("TMPDIR", &tmp)]);
    p.wait_for(ENTER_ALT, 0, 20);
    settle(&mut p);
    p.send(b"r");
    settle(&mut p);
    // SAFETY: signalling our own child by its id.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    assert_eq!(p.exit_code(10), Some(128 + libc::SIGTERM));
    let text = String::from_utf8_lossy(&p.out);
    let fallback: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("session-")
        })
        .collect();
    assert_eq!(fallback.len(), 1, "{text}");
    atspeed::session::Session::load(&fallback[0]).unwrap();
    assert!(
        text.contains("saved to") && text.contains("instead"),
        "{text}"
    );
}
