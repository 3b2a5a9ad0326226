//! Recorded explorations: what the explorer showed, saved so it replays without any model.
//!
//! A session file is one JSON value with a `version` field, a header (dataset, model names,
//! device, the vocabulary needed to print token ids) and one record per explored user. A record
//! carries everything the panels display: the user's history and ground truth already turned into
//! text, the [`DecodeTrace`], the target-only baseline and the titles of every recommended
//! identifier. Replay therefore needs neither the dataset nor the checkpoints, which is the point:
//! a teacher can hand out a file that opens anywhere.
//!
//! The same view types ([`UserView`], [`UserRun`]) are what the live explorer fills from the
//! dataset, so the panels have a single source shape in both modes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::decode::trace::{BeamView, DecodeTrace};
use crate::decode::DecodeParams;
use crate::eval::speed::UserSpeed;
use crate::{Error, Result};

/// The format version this build writes and the only one it reads.
pub const SESSION_VERSION: u32 = 1;

/// One history item as displayed: its item id, title and identifier text (`<a_1><b_2>..`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub item: u32,
    pub title: String,
    pub ident: String,
}

/// One ground-truth identifier with the items (titles) it stands for; collisions map an
/// identifier to several items.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthEntry {
    pub tokens: Vec<u32>,
    pub ident: String,
    pub titles: Vec<String>,
}

/// A test user as the explorer shows it, independent of where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserView {
    /// The dataset's user id (1-based, as in the sequence files).
    pub user: u32,
    /// Oldest first.
    pub history: Vec<HistoryEntry>,
    pub truth: Vec<TruthEntry>,
}

impl UserView {
    /// Whether a generated identifier is one of the ground-truth items.
    pub fn is_hit(&self, tokens: &[u32]) -> bool {
        self.truth.iter().any(|t| t.tokens == tokens)
    }
}

/// The target-only beam search the speculative run is compared with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub beams: Vec<BeamView>,
    pub target_passes: usize,
    pub time_ms: f64,
}

/// The decoding parameters a run used, with the draft's name; also the key replay looks runs up
/// by. Stored flat (`mode`, `n`, `k`, `gamma`, `draft_mass`, `draft`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunParams {
    #[serde(flatten)]
    pub decode: DecodeParams,
    /// Name of the draft model.
    pub draft: String,
}

/// One user decoded once: the speculative trace, the baseline, and the titles needed to print
/// every identifier either list recommends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserRun {
    pub params: RunParams,
    pub trace: DecodeTrace,
    pub baseline: Baseline,
    /// Identifier text -> titles of the items it stands for.
    pub titles: BTreeMap<String, Vec<String>>,
}

impl UserRun {
    /// The speed metrics of this run (see [`crate::eval::speed`]).
    pub fn speed(&self, user: u32) -> UserSpeed {
        UserSpeed::new(
            user,
            &self.trace,
            self.baseline.time_ms,
            self.baseline.target_passes,
        )
    }
}

/// What the session was recorded with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionHeader {
    pub dataset: String,
    /// Target model name with its size, e.g. `target 8Lx256 3.1M`.
    pub target: String,
    /// Draft model names with their sizes, in the order the explorer offered them.
    pub drafts: Vec<String>,
    /// The device the timings come from.
    pub device: String,
    pub seed: u64,
    /// The compact vocabulary, so token ids print without the dataset.
    pub vocab: Vec<String>,
    /// For models with an LLM tokenizer (reference prompt style), the code tokens by model id
    /// instead of the whole vocabulary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_names: Vec<(u32, String)>,
}

/// One explored user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub user: UserView,
    pub run: UserRun,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub version: u32,
    pub header: SessionHeader,
    pub users: Vec<UserRecord>,
}

impl Session {
    pub fn new(header: SessionHeader) -> Self {
        Session {
            version: SESSION_VERSION,
            header,
            users: Vec::new(),
        }
    }

    /// Adds a record, replacing an earlier one for the same user and parameters so re-running a
    /// user does not duplicate it.
    pub fn push(&mut self, rec: UserRecord) {
        match self
            .users
            .iter_mut()
            .find(|r| r.user.user == rec.user.user && r.run.params == rec.run.params)
        {
            Some(old) => *old = rec,
            None => self.users.push(rec),
        }
    }

    /// Writes the session atomically: a temporary file in the same folder, fsync, then rename, so
    /// a crash never leaves a half-written session where a good one was.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::data(path, format!("cannot serialise session: {e}")))?;
        crate::atomic::write(path, &json)
    }

    /// Reads a session, checking the version before the rest so an old or foreign file gets a
    /// message about the version rather than about some missing field.
    pub fn load(path: &Path) -> Result<Session> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            line: e.line(),
            msg: format!("not a session file: {e}"),
        })?;
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == SESSION_VERSION as u64 => {}
            Some(v) => {
                return Err(Error::data(
                    path,
                    format!("session format version {v} is not supported (this build reads version {SESSION_VERSION})"),
                ))
            }
            None => {
                return Err(Error::data(
                    path,
                    "not a session file: no numeric \"version\" field",
                ))
            }
        }
        let session: Session = serde_json::from_value(value)
            .map_err(|e| Error::data(path, format!("malformed session: {e}")))?;
        if session.users.is_empty() {
            return Err(Error::data(path, "session records no users"));
        }
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Session {
        let mut s = Session::new(SessionHeader {
            dataset: "demo".into(),
            target: "target 2Lx32 0.1M".into(),
            drafts: vec!["sft 1Lx16 0.0M".into()],
            device: "cpu".into(),
            seed: 7,
            vocab: vec![
                "<pad>".into(),
                "<bos>".into(),
                "<eos>".into(),
                "<sep>".into(),
                "<a_1>".into(),
            ],
            token_names: Vec::new(),
        });
        let params = DecodeParams {
            n: 2,
            k: 1,
            gamma: 1,
            ..Default::default()
        };
        let trace = DecodeTrace {
            params,
            wall_ms: 1.0,
            rounds: vec![],
            beams: vec![BeamView {
                tokens: vec![4],
                score: -0.5,
            }],
        };
        s.push(UserRecord {
            user: UserView {
                user: 3,
                history: vec![HistoryEntry {
                    item: 1,
                    title: "Soap".into(),
                    ident: "<a_1>".into(),
                }],
                truth: vec![],
            },
            run: UserRun {
                params: RunParams {
                    decode: params,
                    draft: "sft".into(),
                },
                trace,
                baseline: Baseline {
                    beams: vec![],
                    target_passes: 4,
                    time_ms: 2.0,
                },
                titles: BTreeMap::new(),
            },
        });
        s
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/s.json");
        let s = sample();
        s.save(&path).unwrap();
        assert_eq!(Session::load(&path).unwrap(), s);
        // Only the session itself is left behind: the temporary file was renamed.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("s.json")]);
    }

    #[test]
    fn push_replaces_same_user_and_params() {
        let mut s = sample();
        let again = s.users[0].clone();
        s.push(again);
        assert_eq!(s.users.len(), 1);
    }

    #[test]
    fn bad_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{ not json").unwrap();
        let e = Session::load(&path).unwrap_err().to_string();
        assert!(e.contains("bad.json") && e.contains("not a session"), "{e}");

        let mut v = serde_json::to_value(sample()).unwrap();
        v["version"] = serde_json::json!(99);
        std::fs::write(&path, v.to_string()).unwrap();
        let e = Session::load(&path).unwrap_err().to_string();
        assert!(e.contains("bad.json") && e.contains("version 99"), "{e}");

        std::fs::write(&path, r#"{"version": 1, "header": {}}"#).unwrap();
        let e = Session::load(&path).unwrap_err().to_string();
        assert!(e.contains("bad.json") && e.contains("malformed"), "{e}");

        let e = Session::load(&dir.path().join("missing.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.json"), "{e}");
    }
}
