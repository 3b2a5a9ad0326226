//! A dataset folder in the reference layout: three sequence files, an identifier
//! index and optional titles, turned into samples (history + ground truth) for training, model
//! selection and evaluation.

mod index;
mod seq;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{Identifier, PrefixAutomaton, Vocab, BOS, SEP};

pub use index::TITLES_FILE;

/// History length H used by the reference (last 20 items).
pub const DEFAULT_HISTORY: usize = 20;
/// The three sequence files, in split order.
pub const SPLIT_FILES: [&str; 3] = [
    "sequential_train.txt",
    "sequential_valid.txt",
    "sequential_test.txt",
];

/// A loaded dataset. Items are 0-based everywhere (the sequence files' ids minus one), users are
/// 1-based uids stored at index `uid - 1`.
#[derive(Clone)]
pub struct Dataset {
    /// Folder name, e.g. "beauty".
    pub name: String,
    pub dir: PathBuf,
    /// Compact vocabulary over all identifiers of the index.
    pub vocab: Vocab,
    /// 0-based item id -> identifier as vocabulary ids.
    pub items: Vec<Identifier>,
    /// Title per 0-based item; all `None` when `titles.json` is absent.
    pub titles: Vec<Option<String>>,
    /// Per user (index = uid - 1), 0-based item ids, oldest first.
    pub train: Vec<Vec<u32>>,
    pub valid: Vec<Vec<u32>>,
    pub test: Vec<Vec<u32>>,
    /// Tokens per identifier (L): 1 to [`crate::ids::MAX_LEVELS`], the same for every item.
    pub levels: usize,
    /// Prefix trie over all items' identifiers: the decoding constraint of the compact prompt.
    pub trie: PrefixAutomaton,
    /// Identifiers shared by more than one item, sorted by identifier.
    pub collisions: Vec<(Identifier, Vec<u32>)>,
    /// Identifier -> items, so a generated identifier can be shown as all of its items.
    by_identifier: HashMap<Identifier, Vec<u32>>,
}

/// One prompt with its ground truth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// 1-based uid.
    pub user: u32,
    /// 0-based items, the last H, oldest first.
    pub history: Vec<u32>,
    /// Ground-truth identifiers, deduplicated, in order of first appearance. Metrics compare
    /// identifiers, so two items sharing one count once.
    pub targets: Vec<Identifier>,
    /// Ground-truth items (distinct, in order of first appearance), for display.
    pub target_items: Vec<u32>,
}

/// Size figures of a dataset, for `atspeed inspect` and for run reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetSummary {
    pub name: String,
    pub users: usize,
    pub items: usize,
    /// Items that have a title.
    pub titled_items: usize,
    pub train_interactions: usize,
    pub valid_interactions: usize,
    pub test_interactions: usize,
    /// Sliding-window training samples (every position >= 1 of every train list).
    pub train_samples: usize,
    /// Training samples of the reference (last position per user).
    pub train_samples_last_only: usize,
    pub valid_samples: usize,
    /// Users with at least one test item: the evaluation set.
    pub test_users: usize,
    pub vocab_size: usize,
    /// Tokens per identifier (L, the index's number of levels).
    #[serde(default = "lcrec_levels")]
    pub levels: usize,
    /// Distinct code tokens per identifier level.
    pub tokens_per_level: Vec<usize>,
    /// Identifiers shared by more than one item.
    pub collision_identifiers: usize,
    /// Items whose identifier is shared.
    pub collision_items: usize,
}

impl Dataset {
    /// Loads a dataset folder. Every error names the offending file (and line, for sequence files).
    pub fn load(dir: &Path) -> Result<Dataset> {
        let index_path = index::find_index(dir)?;
        let index::Index { vocab, items } = index::load_index(&index_path)?;
        let titles = index::load_titles(dir, items.len())?;
        let [train, valid, test] = read_splits(dir, items.len())?;
        let by_identifier = group_by_identifier(&items);
        let collisions = find_collisions(&by_identifier);
        let name = folder_name(dir);
        let trie = PrefixAutomaton::trie(&items).map_err(|m| Error::data(&index_path, m))?;
        if !collisions.is_empty() {
            log::info!(
                "{name}: {} identifiers are shared by {} items; a generated one maps to all of them",
                collisions.len(),
                collisions.iter().map(|(_, v)| v.len()).sum::<usize>()
            );
        }
        Ok(Dataset {
            name,
            dir: dir.to_path_buf(),
            vocab,
            levels: trie.depth(),
            trie,
            items,
            titles,
            train,
            valid,
            test,
            collisions,
            by_identifier,
        })
    }

    pub fn num_users(&self) -> usize {
        self.train.len()
    }

    pub fn num_items(&self) -> usize {
        self.items.len()
    }

    /// Items carrying identifier `id` (several when it collides); empty if none.
    pub fn items_of(&self, id: &Identifier) -> &[u32] {
        self.by_identifier.get(id).map_or(&[], |v| v.as_slice())
    }

    /// Display name of a 0-based item: its title, or "item <id>" without one.
    pub fn title(&self, item: u32) -> String {
        match self.titles.get(item as usize) {
            Some(Some(t)) => t.clone(),
            _ => format!("item {item}"),
        }
    }

    /// Training samples. Sliding windows by default (every position i >= 1 of a train list,
    /// target `train[i]`); `last_only` keeps only the last position per user, as the reference.
    pub fn train_samples(&self, history: usize, last_only: bool) -> Vec<Sample> {
        let mut out = Vec::new();
        for (u, seq) in self.train.iter().enumerate() {
            let first = if last_only { seq.len().max(2) - 1 } else { 1 };
            for i in first..seq.len() {
                out.push(self.sample(uid(u), last(&seq[..i], history), &seq[i..=i]));
            }
        }
        out
    }

    /// Validation samples: target = first valid item, history = last H train items. Users with
    /// no valid item or an empty history are skipped.
    pub fn valid_samples(&self, history: usize) -> Vec<Sample> {
        self.train
            .iter()
            .zip(&self.valid)
            .enumerate()
            .filter_map(|(u, (train, valid))| {
                let hist = last(train, history);
                let target = valid.first()?;
                (!hist.is_empty()).then(|| self.sample(uid(u), hist, std::slice::from_ref(target)))
            })
            .collect()
    }

    /// Test samples: all test items of a user as ground truth, history = last H of train + valid.
    /// Users with no test items are skipped.
    pub fn test_samples(&self, history: usize) -> Vec<Sample> {
        (0..self.num_users())
            .filter(|&u| !self.test[u].is_empty())
            .map(|u| self.test_style(u, history))
            .collect()
    }

    /// A test-style sample for any user (the targets may be empty), for the explorer's `--user`.
    pub fn user_sample(&self, uid: u32, history: usize) -> Result<Sample> {
        let n = self.num_users();
        match (uid as usize).checked_sub(1) {
            Some(u) if u < n => Ok(self.test_style(u, history)),
            _ => Err(Error::invalid(
                "user",
                format!("user {uid} is not in 1..={n} ({})", self.name),
            )),
        }
    }

    /// The compact prompt: BOS, each history item's identifier tokens, SEP.
    ///
    /// # Panics
    /// If a history item is not a 0-based item id of this dataset.
    pub fn prompt(&self, history: &[u32]) -> Vec<u32> {
        let mut out = Vec::with_capacity(history.len() * self.levels + 2);
        out.push(BOS);
        for &item in history {
            out.extend_from_slice(&self.items[item as usize]);
        }
        out.push(SEP);
        out
    }

    /// Size figures: users, items, interactions per split, sample counts, vocabulary, collisions.
    pub fn summary(&self) -> DatasetSummary {
        let total = |split: &[Vec<u32>]| split.iter().map(Vec::len).sum::<usize>();
        let tokens_per_level = (0..self.levels)
            .map(|l| self.vocab.level_tokens(l).len())
            .collect();
        DatasetSummary {
            name: self.name.clone(),
            users: self.num_users(),
            items: self.num_items(),
            titled_items: self.titles.iter().filter(|t| t.is_some()).count(),
            train_interactions: total(&self.train),
            valid_interactions: total(&self.valid),
            test_interactions: total(&self.test),
            train_samples: self.train.iter().map(|s| s.len().saturating_sub(1)).sum(),
            train_samples_last_only: self.train.iter().filter(|s| s.len() >= 2).count(),
            valid_samples: self.valid_samples(DEFAULT_HISTORY).len(),
            test_users: self.test.iter().filter(|s| !s.is_empty()).count(),
            vocab_size: self.vocab.len(),
            levels: self.levels,
            tokens_per_level,
            collision_identifiers: self.collisions.len(),
            collision_items: self.collisions.iter().map(|(_, v)| v.len()).sum(),
        }
    }

    /// Test-style sample for user index `u` (uid - 1).
    fn test_style(&self, u: usize, history: usize) -> Sample {
        let (train, valid) = (&self.train[u], &self.valid[u]);
        let from_valid = last(valid, history);
        let from_train = last(train, history - from_valid.len());
        let hist: Vec<u32> = from_train.iter().chain(from_valid).copied().collect();
        self.sample(uid(u), &hist, &self.test[u])
    }

    /// Builds a sample, deduplicating the ground truth by identifier and by item.
    fn sample(&self, user: u32, history: &[u32], truth: &[u32]) -> Sample {
        let mut targets = Vec::with_capacity(truth.len());
        let mut target_items = Vec::with_capacity(truth.len());
        for &item in truth {
            let id = self.items[item as usize];
            if !targets.contains(&id) {
                targets.push(id);
            }
            if !target_items.contains(&item) {
                target_items.push(item);
            }
        }
        Sample {
            user,
            history: history.to_vec(),
            targets,
            target_items,
        }
    }
}

impl fmt::Debug for Dataset {
    /// Only the headline figures: the full item lists would flood a test failure message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("users", &self.num_users())
            .field("items", &self.num_items())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for DatasetSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let levels: Vec<String> = self
            .tokens_per_level
            .iter()
            .enumerate()
            .map(|(l, n)| format!("{} {n}", (b'a' + l as u8) as char))
            .collect();
        writeln!(f, "dataset {}", self.name)?;
        writeln!(f, "  users          {}", self.users)?;
        writeln!(
            f,
            "  items          {} ({} with titles)",
            self.items, self.titled_items
        )?;
        writeln!(
            f,
            "  interactions   train {}, valid {}, test {}",
            self.train_interactions, self.valid_interactions, self.test_interactions
        )?;
        writeln!(
            f,
            "  train samples  {} sliding windows ({} last-only, as the reference)",
            self.train_samples, self.train_samples_last_only
        )?;
        writeln!(f, "  valid samples  {}", self.valid_samples)?;
        writeln!(f, "  test users     {}", self.test_users)?;
        writeln!(
            f,
            "  identifiers    {} tokens each (one per level)",
            self.levels
        )?;
        writeln!(
            f,
            "  vocabulary     {} tokens ({} specials; per level: {})",
            self.vocab_size,
            crate::ids::SPECIALS.len(),
            levels.join(", ")
        )?;
        write!(
            f,
            "  collisions     {} identifiers shared by {} items",
            self.collision_identifiers, self.collision_items
        )
    }
}

/// Reads the three sequence files, checking they describe the same users.
fn read_splits(dir: &Path, num_items: usize) -> Result<[Vec<Vec<u32>>; 3]> {
    let [train, valid, test] = SPLIT_FILES.map(|f| seq::read_sequences(&dir.join(f), num_items));
    let splits = [train?, valid?, test?];
    for (split, file) in splits.iter().zip(SPLIT_FILES).skip(1) {
        if split.len() != splits[0].len() {
            return Err(Error::data(
                dir.join(file),
                format!(
                    "{} users, but {} has {}: the splits must list the same users",
                    split.len(),
                    SPLIT_FILES[0],
                    splits[0].len()
                ),
            ));
        }
    }
    Ok(splits)
}

fn group_by_identifier(items: &[Identifier]) -> HashMap<Identifier, Vec<u32>> {
    let mut map: HashMap<Identifier, Vec<u32>> = HashMap::with_capacity(items.len());
    for (item, id) in items.iter().enumerate() {
        map.entry(*id).or_default().push(item as u32);
    }
    map
}

fn find_collisions(by_identifier: &HashMap<Identifier, Vec<u32>>) -> Vec<(Identifier, Vec<u32>)> {
    let mut out: Vec<(Identifier, Vec<u32>)> = by_identifier
        .iter()
        .filter(|(_, items)| items.len() > 1)
        .map(|(id, items)| (*id, items.clone()))
        .collect();
    out.sort_unstable();
    out
}

/// Folder name for reports; falls back to the path as given (e.g. for ".").
fn folder_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}

/// The last `h` elements of `seq`.
fn last(seq: &[u32], h: usize) -> &[u32] {
    &seq[seq.len().saturating_sub(h)..]
}

fn lcrec_levels() -> usize {
    crate::ids::LCREC_LEVELS
}

/// 1-based uid of user index `u`.
fn uid(u: usize) -> u32 {
    (u + 1) as u32
}
