//! Sequence files (`sequential_{train,valid,test}.txt`): one line per user, `uid item item ...`,
//! 1-based ids. Parsed with `split_ascii_whitespace` and integer parsing only, so loading a
//! dataset the size of Beauty costs milliseconds.

use std::path::Path;

use crate::error::{Error, Result};

/// Reads a sequence file into per-user lists (index = uid - 1) of 0-based item ids.
pub fn read_sequences(path: &Path, num_items: usize) -> Result<Vec<Vec<u32>>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_sequences(path, &text, num_items)
}

/// Parses the text of a sequence file. Every uid must be unique and within `1..=lines`, which
/// with one line per user means the file holds users `1..=lines` exactly.
pub fn parse_sequences(path: &Path, text: &str, num_items: usize) -> Result<Vec<Vec<u32>>> {
    // Trailing blank lines are tolerated (editors add them); blank lines elsewhere are not.
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let n = lines.len();
    let mut users: Vec<Option<(usize, Vec<u32>)>> = vec![None; n];
    for (i, line) in lines.iter().enumerate() {
        let lineno = i + 1;
        let parse_err = |msg: String| Error::Parse {
            path: path.to_path_buf(),
            line: lineno,
            msg,
        };
        let mut tokens = line.split_ascii_whitespace();
        let Some(uid_tok) = tokens.next() else {
            return Err(parse_err("empty line".into()));
        };
        let uid = parse_int(uid_tok).ok_or_else(|| parse_err(not_int("user", uid_tok)))?;
        let slot = uid
            .checked_sub(1)
            .and_then(|u| users.get_mut(u))
            .ok_or_else(|| parse_err(format!("user id {uid} out of range 1..={n}")))?;
        if let Some((first, _)) = slot {
            return Err(parse_err(format!(
                "user {uid} appears twice (first on line {first})"
            )));
        }
        let items = tokens
            .map(|tok| parse_item(tok, num_items).map_err(&parse_err))
            .collect::<Result<Vec<u32>>>()?;
        *slot = Some((lineno, items));
    }
    // n unique uids in 1..=n fill every slot.
    Ok(users
        .into_iter()
        .map(|u| u.map(|(_, items)| items).unwrap_or_default())
        .collect())
}

fn parse_int(tok: &str) -> Option<usize> {
    tok.parse().ok()
}

fn not_int(what: &str, tok: &str) -> String {
    format!(
        "expected an integer {what} id, found {}",
        crate::text::quoted(tok, 40)
    )
}

/// Parses a 1-based item id into a 0-based one, checking it against the index.
fn parse_item(tok: &str, num_items: usize) -> std::result::Result<u32, String> {
    let item = parse_int(tok).ok_or_else(|| not_int("item", tok))?;
    if item == 0 || item > num_items {
        return Err(format!(
            "item {item} out of range 1..={num_items} (the index has {num_items} items)"
        ));
    }
    Ok((item - 1) as u32)
}
