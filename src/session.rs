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

use crate::decode::trace::MAX_LENGTH;
use crate::decode::trace::{check_tokens, BeamView, DecodeTrace};
use crate::decode::DecodeParams;
use crate::eval::speed::UserSpeed;
use crate::ids::Vocab;
use crate::{Error, Result};

/// The format version this build writes and the only one it reads.
pub const SESSION_VERSION: u32 = 1;

/// Largest session file read: the shipped ones are under 1 MB, a long recording a few tens.
/// Anything bigger (or a device that never ends, such as `/dev/zero`) is refused before it is
/// read into memory.
pub const MAX_SESSION_BYTES: u64 = 256 << 20;

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

impl UserView {
    /// Checks the ground-truth identifiers against a vocabulary of `vocab` ids. Errors name the
    /// field relative to the view (`truth[1].tokens[3]: ...`).
    pub fn validate(&self, vocab: usize) -> std::result::Result<(), String> {
        for (i, t) in self.truth.iter().enumerate() {
            let f = format!("truth[{i}].tokens");
            if t.tokens.len() > MAX_LENGTH {
                return Err(format!(
                    "{f}: {} tokens, more than a decoded sequence's {MAX_LENGTH}",
                    t.tokens.len()
                ));
            }
            check_tokens(&t.tokens, vocab).map_err(|e| format!("truth[{i}].{e}"))?;
        }
        Ok(())
    }
}

impl Baseline {
    /// Checks the baseline's beams, passes and time for beam size `k` over `vocab` ids, for
    /// sequences of `length` tokens.
    pub fn validate(
        &self,
        k: usize,
        length: usize,
        vocab: usize,
    ) -> std::result::Result<(), String> {
        if self.beams.len() > k {
            return Err(format!(
                "beams: {} beams, more than K = {k}",
                self.beams.len()
            ));
        }
        for (i, b) in self.beams.iter().enumerate() {
            b.validate(None, length, vocab)
                .map_err(|e| format!("beams[{i}].{e}"))?;
        }
        // Target-only beam search runs one pass per token at most.
        if self.target_passes > length {
            return Err(format!(
                "target_passes: {} is more than {length} (one per token of the sequence)",
                self.target_passes
            ));
        }
        if !(self.time_ms.is_finite() && self.time_ms >= 0.0) {
            return Err(format!(
                "time_ms: {} is not a duration in milliseconds",
                self.time_ms
            ));
        }
        Ok(())
    }
}

impl UserRun {
    /// Checks the run's parameters, trace and baseline (see [`DecodeTrace::validate`]) against a
    /// vocabulary of `vocab` ids. Errors name the field relative to the run.
    pub fn validate(&self, vocab: usize) -> std::result::Result<(), String> {
        if self.params.decode != self.trace.params {
            return Err(format!(
                "params: {:?} differ from the trace's {:?}",
                self.params.decode, self.trace.params
            ));
        }
        self.trace
            .validate(vocab)
            .map_err(|e| format!("trace.{e}"))?;
        self.baseline
            .validate(self.trace.params.k, self.trace.length, vocab)
            .map_err(|e| format!("baseline.{e}"))
    }

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
    /// Identifier levels L (sessions written before identifiers had other lengths: 4).
    #[serde(default = "lcrec_levels")]
    pub levels: usize,
    /// Tokens per decoded sequence: L plus the format's fixed tokens.
    #[serde(default = "lcrec_levels")]
    pub length: usize,
    /// Fixed tokens generated before the codes (the codes are `fixed_before..fixed_before + L`
    /// of every sequence).
    #[serde(default)]
    pub fixed_before: usize,
    /// The most drafted steps a decode can accept (AS's top: L - 1, or L when fixed tokens
    /// follow the codes); `None` in sessions written before: L - 1.
    #[serde(default)]
    pub max_accepted: Option<usize>,
}

impl SessionHeader {
    /// The identifier codes of a decoded sequence (all of it when it is not a whole sequence).
    pub fn codes<'a>(&self, tokens: &'a [u32]) -> &'a [u32] {
        if tokens.len() == self.length && self.fixed_before + self.levels <= tokens.len() {
            &tokens[self.fixed_before..self.fixed_before + self.levels]
        } else {
            tokens
        }
    }

    /// The most drafted steps a decode accepts (see [`SessionHeader::max_accepted`]).
    pub fn most_accepted(&self) -> usize {
        self.max_accepted
            .unwrap_or(self.levels.saturating_sub(1))
            .min(crate::eval::speed::MAX_DRAFTED)
    }
}

/// Most token names a session header may list (a catalogue's codes and fixed tokens).
const MAX_NAMED_TOKENS: usize = 1 << 20;

fn lcrec_levels() -> usize {
    crate::ids::LCREC_LEVELS
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

    /// Checks every index and count of every record against the trace it describes and the
    /// header's vocabulary, so that the explorer can display anything that passes. The error
    /// names the field, e.g. `users[3].run.trace.rounds[0].nodes[7].parent: 99 is out of range
    /// (7 nodes)`.
    pub fn validate(&self) -> std::result::Result<(), String> {
        // A compact vocabulary bounds token ids by its length; an LLM tokenizer's session keeps
        // only the names of the tokens a decode generates (codes and fixed tokens), by id.
        let v = if self.header.vocab.is_empty() && !self.header.token_names.is_empty() {
            let n = self.header.token_names.len();
            if n > MAX_NAMED_TOKENS {
                return Err(format!(
                    "header.token_names: {n} names, more than {MAX_NAMED_TOKENS}"
                ));
            }
            self.header
                .token_names
                .iter()
                .map(|(id, _)| *id as usize + 1)
                .max()
                .unwrap_or(0)
        } else {
            Vocab::from_tokens(self.header.vocab.clone())
                .map_err(|e| format!("header.vocab: {e}"))?
                .len()
        };
        if self.users.is_empty() {
            return Err("users: the session records no users".into());
        }
        for (i, r) in self.users.iter().enumerate() {
            r.user
                .validate(v)
                .map_err(|e| format!("users[{i}].user.{e}"))?;
            r.run
                .validate(v)
                .map_err(|e| format!("users[{i}].run.{e}"))?;
        }
        Ok(())
    }

    /// Like [`Session::save`], but refuses to replace an existing file.
    pub fn save_new(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::data(path, format!("cannot serialise session: {e}")))?;
        crate::atomic::write_new(path, &json)
    }

    /// Reads a session, checking the version before the rest so an old or foreign file gets a
    /// message about the version rather than about some missing field, then every index and
    /// count ([`Session::validate`]). Any error names the file.
    pub fn load(path: &Path) -> Result<Session> {
        let text = read_bounded(path, MAX_SESSION_BYTES)?;
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
        drop(value);
        // From the text rather than the value, so the error has a line and column.
        let session: Session = serde_json::from_str(&text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            line: e.line(),
            msg: format!("malformed session: {e}"),
        })?;
        session.validate().map_err(|m| Error::data(path, m))?;
        Ok(session)
    }
}

/// Reads a UTF-8 file of at most `max` bytes, refusing a larger one (or an endless device)
/// without reading it all.
pub(crate) fn read_bounded(path: &Path, max: u64) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(path, e))?;
    if text.len() as u64 > max {
        return Err(Error::data(
            path,
            format!(
                "larger than {} MB: not a file this program wrote",
                max >> 20
            ),
        ));
    }
    Ok(text)
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
            levels: 4,
            length: 4,
            fixed_before: 0,
            max_accepted: None,
        });
        let params = DecodeParams {
            n: 2,
            k: 1,
            gamma: 1,
            ..Default::default()
        };
        let trace = DecodeTrace {
            length: 4,
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

    /// The shipped strict session as JSON, to break one field of it.
    fn shipped() -> serde_json::Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sessions/strict-demo.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Writes `v` and loads it: the error message, which must name the file.
    fn load_error(v: &serde_json::Value) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        std::fs::write(&path, v.to_string()).unwrap();
        let e = Session::load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    #[test]
    fn shipped_sessions_pass_validation() {
        for name in ["strict-demo.json", "relaxed-demo.json"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("sessions")
                .join(name);
            Session::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
        sample().validate().unwrap();
    }

    /// Issue 12: a node whose parent is out of range panicked the explorer's beam panel, and
    /// absurd counts froze or aborted it. Every index and count is now checked on load, and the
    /// error names the file and the field.
    #[test]
    fn session_indices_and_counts_are_validated_on_load() {
        let round = |v: &mut serde_json::Value| -> *mut serde_json::Value {
            &mut v["users"][0]["run"]["trace"]["rounds"][0] as *mut _
        };
        type Edit = fn(&mut serde_json::Value);
        let cases: Vec<(Edit, &str)> = vec![
            (
                |r| r["nodes"][47]["parent"] = 99.into(),
                "users[0].run.trace.rounds[0].nodes[47].parent: 99 is out of range (47 nodes before it)",
            ),
            (
                |r| r["accepted"] = 1_000_000_000u64.into(),
                "users[0].run.trace.rounds[0].accepted: 1000000000 is more than",
            ),
            (
                |r| r["drafted"] = u64::MAX.into(),
                "users[0].run.trace.rounds[0].drafted: 18446744073709551615 is more than",
            ),
            (
                |r| r["nodes"][3]["root"] = 50.into(),
                "rounds[0].nodes[3].root: 50 is out of range",
            ),
            (
                |r| r["nodes"][0]["depth"] = 9.into(),
                "rounds[0].nodes[0].depth: 9 is not in 1..=",
            ),
            (
                |r| r["nodes"][2]["token"] = 100_000.into(),
                "rounds[0].nodes[2].token: 100000 is not a token id",
            ),
            (
                |r| r["target_step"]["depth"] = 7.into(),
                "rounds[0].target_step.depth: 7 where",
            ),
            (
                |r| r["target_step"]["drafted_node"][0] = 4000.into(),
                "rounds[0].target_step.drafted_node[0]: 4000 is out of range",
            ),
            (
                |r| {
                    r["tree"]["mask_rows"].as_array_mut().unwrap().pop();
                },
                "rounds[0].tree.mask_rows: ",
            ),
            (
                |r| r["tree"]["mask_rows"][1][0] = 777.into(),
                "rounds[0].tree.mask_rows[1][0]: 777 is out of range",
            ),
            (
                |r| {
                    r["tree"]["positions"].as_array_mut().unwrap().pop();
                },
                "rounds[0].tree.positions: ",
            ),
            (
                |r| {
                    r["target_step"]["beams"][0]["tokens"]
                        .as_array_mut()
                        .unwrap()
                        .push(4.into());
                },
                "rounds[0].target_step.beams[0].tokens: ",
            ),
            (
                |r| r["round"] = 5.into(),
                "rounds[0].round: 5 where 0 was expected",
            ),
            (
                |r| r["times"]["verify_ms"] = (-1.0).into(),
                "rounds[0].times.verify_ms: -1 is not a duration",
            ),
            (
                |r| r["target_passes"] = u64::MAX.into(),
                "rounds[0].target_passes: 18446744073709551615 is more than 1",
            ),
        ];
        for (edit, want) in cases {
            let mut v = shipped();
            // SAFETY: the pointer is into `v`, alive and not otherwise borrowed here.
            edit(unsafe { &mut *round(&mut v) });
            let e = load_error(&v);
            assert!(e.contains(want), "{e}\nwanted {want}");
        }

        let mut v = shipped();
        v["users"][1]["run"]["trace"]["k"] = 1_000_000.into();
        v["users"][1]["run"]["params"]["k"] = 1_000_000.into();
        let e = load_error(&v);
        assert!(
            e.contains("users[1].run.trace.k: beam size K = 1000000"),
            "{e}"
        );

        let mut v = shipped();
        v["users"][2]["run"]["baseline"]["target_passes"] = u64::MAX.into();
        let e = load_error(&v);
        assert!(e.contains("users[2].run.baseline.target_passes: "), "{e}");

        let mut v = shipped();
        v["users"][1]["user"]["truth"][0]["tokens"][1] = 5000.into();
        let e = load_error(&v);
        assert!(e.contains("users[1].user.truth[0].tokens[1]: 5000"), "{e}");

        let mut v = shipped();
        v["header"]["vocab"][9] = "x".repeat(5_000_000).into();
        let e = load_error(&v);
        assert!(e.contains("header.vocab: token 9") && e.len() < 400, "{e}");

        let mut v = shipped();
        v["users"][0]["run"]["trace"]["rounds"] = serde_json::json!([]);
        v["users"][0]["run"]["trace"]["beams"][0]["score"] = serde_json::json!(null);
        let e = load_error(&v);
        assert!(e.contains("malformed session") && e.contains("line"), "{e}");

        let mut v = shipped();
        v["users"] = serde_json::json!([]);
        assert!(load_error(&v).contains("records no users"));
    }

    #[test]
    fn endless_or_huge_files_are_refused_unread() {
        let e = Session::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/dev/zero: ") && e.contains("larger than"),
            "{e}"
        );
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
