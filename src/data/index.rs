//! The identifier index (`*.LCRec-1e-3lr.json`) and the optional `titles.json`.
//!
//! Both are JSON objects keyed by the 0-based item id as a string. Keys are parsed once into
//! integers so a gap in the ids is reported by number instead of surfacing later as a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ids::{Identifier, Vocab};

/// File name of the optional titles map.
pub const TITLES_FILE: &str = "titles.json";
/// Suffix of the reference's identifier index, preferred when several JSON files are present.
const INDEX_SUFFIX: &str = ".LCRec-1e-3lr.json";

/// The parsed index: the vocabulary it induces and every item's identifier as token ids.
pub struct Index {
    pub vocab: Vocab,
    pub items: Vec<Identifier>,
}

/// Finds the identifier index in `dir`: the reference's file name if present, else the only other
/// JSON file. Guessing between several candidates would silently pick the wrong codebook.
pub fn find_index(dir: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut preferred = Vec::new();
    let mut others = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(INDEX_SUFFIX) {
            preferred.push(path);
        } else if name.ends_with(".json") && name != TITLES_FILE {
            others.push(path);
        }
    }
    let mut candidates = if preferred.is_empty() {
        others
    } else {
        preferred
    };
    match candidates.len() {
        1 => Ok(candidates.swap_remove(0)),
        0 => Err(Error::data(
            dir,
            "no identifier index (*.LCRec-1e-3lr.json or another *.json besides titles.json)",
        )),
        _ => {
            let mut names: Vec<String> = candidates
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            names.sort();
            Err(Error::data(
                dir,
                format!(
                    "ambiguous identifier index, candidates: {}",
                    names.join(", ")
                ),
            ))
        }
    }
}

/// Reads a JSON object keyed by 0-based item id.
fn read_json_map<V: serde::de::DeserializeOwned>(path: &Path) -> Result<HashMap<String, V>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::data(path, format!("malformed JSON: {e}")))
}

/// Parses a key as a 0-based item id.
fn item_key(path: &Path, key: &str) -> Result<usize> {
    key.parse().map_err(|_| {
        Error::data(
            path,
            format!("key {} is not an item id", crate::text::quoted(key, 40)),
        )
    })
}

/// Places the index entries by item id, checking that ids are exactly `0..len`.
fn order_codes(path: &Path, map: HashMap<String, Vec<String>>) -> Result<Vec<Vec<String>>> {
    let n = map.len();
    let mut slots: Vec<Option<Vec<String>>> = vec![None; n];
    for (key, codes) in map {
        let id = item_key(path, &key)?;
        if let Some(slot) = slots.get_mut(id) {
            *slot = Some(codes);
        }
        // An id >= n implies some id below n is missing; that one is reported below.
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(id, codes)| {
            codes.ok_or_else(|| {
                Error::data(path, format!("item {id} missing (expected ids 0..{n})"))
            })
        })
        .collect()
}

/// Loads the identifier index and builds the vocabulary over all of its code tokens.
pub fn load_index(path: &Path) -> Result<Index> {
    let codes = order_codes(path, read_json_map(path)?)?;
    // Every identifier has the index's number of levels: the first item's.
    if let Some(first) = codes.first() {
        if let Some((id, c)) = codes
            .iter()
            .enumerate()
            .find(|(_, c)| c.len() != first.len())
        {
            return Err(Error::data(
                path,
                format!(
                    "item {id} has {} tokens, expected {} as item 0 has: every identifier of an index has the same number of levels",
                    c.len(),
                    first.len()
                ),
            ));
        }
    }
    let vocab =
        Vocab::from_codes(codes.iter().map(|c| c.as_slice())).map_err(|m| Error::data(path, m))?;
    let items = codes
        .iter()
        .enumerate()
        .map(|(id, c)| {
            vocab.identifier(c).ok_or_else(|| {
                Error::data(
                    path,
                    format!(
                        "item {id}: unknown token in {}",
                        crate::text::quoted(&c.concat(), 40)
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Index { vocab, items })
}

/// Loads `titles.json` if present; all `None` otherwise. Titles of unknown ids are ignored (a
/// titles file may cover a larger catalogue than the index).
pub fn load_titles(dir: &Path, num_items: usize) -> Result<Vec<Option<String>>> {
    let path = dir.join(TITLES_FILE);
    let mut titles = vec![None; num_items];
    if !path.exists() {
        return Ok(titles);
    }
    let map: HashMap<String, Option<String>> = read_json_map(&path)?;
    for (key, title) in map {
        let id = item_key(&path, &key)?;
        if let Some(slot) = titles.get_mut(id) {
            *slot = title;
        }
    }
    Ok(titles)
}
