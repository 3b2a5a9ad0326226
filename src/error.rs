//! The library's error type. Every variant that comes from a file names the file, so the
//! binary can print one line that tells the user what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OS reason is part of the message and deliberately not exposed as `source()`:
    /// `{:#}` (anyhow) would print it twice otherwise.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    /// A malformed line or value inside a data file.
    #[error("{path}:{line}: {msg}")]
    Parse {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    /// A data file that parses but is inconsistent (unknown ids, wrong token counts...).
    #[error("{path}: {msg}")]
    Data { path: PathBuf, msg: String },
    /// A checkpoint folder that is missing pieces, corrupt, or does not fit the dataset.
    #[error("{path}: {msg}")]
    Model { path: PathBuf, msg: String },
    /// A bad parameter value or combination (N < K, unknown method...). `what` names the
    /// parameter as the library calls it (`k`, `n`, `draft_mass`); the command line maps it to
    /// its flag.
    #[error("{what}: {msg}")]
    Invalid { what: String, msg: String },
    /// The terminal could not be set up or read (the explorer).
    #[error("terminal: {0}")]
    Terminal(String),
    /// A check the program makes on its own results failed (strict output differing from the
    /// target's beam search, a selftest tolerance exceeded).
    #[error("{0}")]
    Failed(String),
    #[error("tensor error: {0}")]
    Candle(candle_core::Error),
    /// Stopped by a signal (SIGTERM, SIGINT, SIGHUP) after cleaning up; the binary exits with
    /// the conventional status 128 + the signal's number.
    #[error("interrupted by signal {0}")]
    Interrupted(i32),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<candle_core::Error> for Error {
    /// Without candle's backtrace (printed when RUST_BACKTRACE is set): an error is one line.
    fn from(e: candle_core::Error) -> Self {
        let mut e = e;
        while let candle_core::Error::WithBacktrace { inner, .. } = e {
            e = *inner;
        }
        Error::Candle(e)
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err,
        }
    }
    pub fn data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn model(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn invalid(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            msg: msg.into(),
        }
    }
}
