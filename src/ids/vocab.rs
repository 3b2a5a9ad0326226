//! Identifiers and the compact vocabulary.
//!
//! An item's identifier (semantic ID) is L code tokens, one per level: four in LC-Rec
//! (`<a_47><b_103><c_234><d_99>`), three in MiniOneRec (`<a_236><b_231><c_226>`) and OpenOneRec
//! (`<s_a_7><s_b_3><s_c_9>`). L comes from the dataset's index (1 to [`MAX_LEVELS`]) and the
//! token strings are whatever the index holds; a level is a position, not a letter.
//!
//! The compact vocabulary: four specials, then every code token of the dataset, level by level,
//! each level sorted by its code number (the digits the token ends with, then the text). The
//! order is fixed so a checkpoint's embedding rows mean the same thing on every machine;
//! `tokenizer.json` and `config.json` record it for Python.

use std::collections::HashMap;

use crate::text::quoted;

/// Characters of a bad token shown in an error message.
const SHOWN: usize = 40;

/// Most levels an identifier may have. Real semantic IDs have 3 or 4; 8 leaves room for deeper
/// codebooks while keeping [`Identifier`] a small `Copy` value.
pub const MAX_LEVELS: usize = 8;
/// Levels of the LC-Rec / AtSpeed identifiers the shipped demo uses (levels a, b, c, d); traces
/// and sessions written before identifiers had other lengths read back with it.
pub const LCREC_LEVELS: usize = 4;
pub const PAD: u32 = 0;
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;
pub const SEP: u32 = 3;
pub const SPECIALS: [&str; 4] = ["<pad>", "<bos>", "<eos>", "<sep>"];

/// An item identifier as token ids: 1 to [`MAX_LEVELS`] codes. A small `Copy` value (slots past
/// `len` are zero, so the derived equality, hash and order are those of the code slice, shorter
/// first among equal prefixes); it reads as a `&[u32]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier {
    len: u8,
    codes: [u32; MAX_LEVELS],
}

impl Identifier {
    /// The identifier of `codes`; `None` when empty or longer than [`MAX_LEVELS`].
    pub fn new(codes: &[u32]) -> Option<Identifier> {
        if codes.is_empty() || codes.len() > MAX_LEVELS {
            return None;
        }
        let mut out = [0; MAX_LEVELS];
        out[..codes.len()].copy_from_slice(codes);
        Some(Identifier {
            len: codes.len() as u8,
            codes: out,
        })
    }

    /// An identifier from an array of 1 to [`MAX_LEVELS`] codes, usable in constants.
    ///
    /// # Panics
    /// If `N` is 0 or more than [`MAX_LEVELS`] (a literal in code, never data).
    pub const fn from_array<const N: usize>(codes: [u32; N]) -> Identifier {
        assert!(N >= 1 && N <= MAX_LEVELS, "1..=MAX_LEVELS codes");
        let mut out = [0; MAX_LEVELS];
        let mut i = 0;
        while i < N {
            out[i] = codes[i];
            i += 1;
        }
        Identifier {
            len: N as u8,
            codes: out,
        }
    }

    /// The same identifier with every code mapped by `f` (e.g. into another token space).
    pub fn map(&self, mut f: impl FnMut(u32) -> u32) -> Identifier {
        let mut out = *self;
        for c in &mut out.codes[..self.len as usize] {
            *c = f(*c);
        }
        out
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.codes[..self.len as usize]
    }
}

impl std::ops::Deref for Identifier {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        self.as_slice()
    }
}

impl AsRef<[u32]> for Identifier {
    fn as_ref(&self) -> &[u32] {
        self.as_slice()
    }
}

impl std::fmt::Debug for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

impl<const N: usize> From<[u32; N]> for Identifier {
    /// # Panics
    /// If `N` is 0 or more than [`MAX_LEVELS`] (a literal in code, never data).
    fn from(codes: [u32; N]) -> Identifier {
        Identifier::from_array(codes)
    }
}

impl TryFrom<&[u32]> for Identifier {
    type Error = String;
    fn try_from(codes: &[u32]) -> Result<Identifier, String> {
        Identifier::new(codes).ok_or_else(|| {
            format!(
                "{} tokens are not an identifier (1 to {MAX_LEVELS})",
                codes.len()
            )
        })
    }
}

impl TryFrom<Vec<u32>> for Identifier {
    type Error = String;
    fn try_from(codes: Vec<u32>) -> Result<Identifier, String> {
        Identifier::try_from(codes.as_slice())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    tokens: Vec<String>,
    index: HashMap<String, u32>,
    /// Token ids of each identifier level (0-based), ascending; empty for a vocabulary read back
    /// without its index (see [`Vocab::from_tokens`]).
    levels: Vec<Vec<u32>>,
    /// Display-only vocabularies (see [`Vocab::from_names`]): tokens by id, beyond `tokens`.
    sparse: HashMap<u32, String>,
}

/// Splits a code token of the LC-Rec family (`<a_47>`, and OpenOneRec's `<s_a_47>`) into its
/// level letter's index (0 for `a`, up to [`MAX_LEVELS`] - 1) and its code (47). Only for
/// guessing levels where no index says them (a vocabulary read back alone, `inspect`): the
/// dataset's index is what defines an identifier's levels.
pub fn parse_code_token(s: &str) -> Option<(usize, u32)> {
    let inner = s.strip_prefix('<')?.strip_suffix('>')?;
    let inner = inner.strip_prefix("s_").unwrap_or(inner);
    let (letter, code) = inner.split_once('_')?;
    let mut chars = letter.chars();
    let c = chars.next()?;
    if chars.next().is_some() || !c.is_ascii_lowercase() {
        return None;
    }
    let level = (c as u8 - b'a') as usize;
    if level >= MAX_LEVELS || code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((level, code.parse().ok()?))
}

/// The order of code tokens within a level: by the number the token's text ends with (before
/// a closing `>`), then by the text. For `<a_N>` this is N's order, as this project has always
/// written compact vocabularies.
fn code_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn number(s: &str) -> Option<u64> {
        let s = s.strip_suffix('>').unwrap_or(s);
        let digits = s.len() - s.bytes().rev().take_while(|b| b.is_ascii_digit()).count();
        s[digits..].parse().ok()
    }
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// Longest code token text accepted (an identifier token, not a document).
const MAX_TOKEN_BYTES: usize = 256;

impl Vocab {
    /// Builds the vocabulary from identifier strings, all with the same number of levels (1 to
    /// [`MAX_LEVELS`]). Errors name the first bad identifier or token.
    pub fn from_codes<'a, I>(codes: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = &'a [String]>,
    {
        let mut per_level: Vec<Vec<&'a str>> = Vec::new();
        let mut len = None;
        for ident in codes {
            if ident.is_empty() || ident.len() > MAX_LEVELS {
                return Err(format!(
                    "identifier {} has {} tokens (1 to {MAX_LEVELS} levels are supported)",
                    quoted(&ident.concat(), SHOWN),
                    ident.len()
                ));
            }
            match len {
                None => {
                    len = Some(ident.len());
                    per_level = vec![Vec::new(); ident.len()];
                }
                Some(l) if l != ident.len() => {
                    return Err(format!(
                        "identifier {} has {} tokens, the ones before it {l}: every identifier of an index has the same number of levels",
                        quoted(&ident.concat(), SHOWN),
                        ident.len()
                    ))
                }
                Some(_) => {}
            }
            for (pos, tok) in ident.iter().enumerate() {
                check_code_token(tok)?;
                per_level[pos].push(tok.as_str());
            }
        }
        let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        let mut index: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut levels = Vec::with_capacity(per_level.len());
        for level in per_level.iter_mut() {
            level.sort_unstable_by(|a, b| code_order(a, b));
            level.dedup();
            let mut ids = Vec::with_capacity(level.len());
            for t in level.iter() {
                // A token shared by two levels keeps its first id.
                let id = *index.entry(t.to_string()).or_insert_with(|| {
                    tokens.push(t.to_string());
                    tokens.len() as u32 - 1
                });
                ids.push(id);
            }
            ids.sort_unstable();
            levels.push(ids);
        }
        Ok(Vocab {
            tokens,
            index,
            levels,
            sparse: HashMap::new(),
        })
    }

    /// Rebuilds a vocabulary from its token list (e.g. read back from `tokenizer.json`, or a
    /// session's header). Levels are guessed from LC-Rec-style names where the tokens have them.
    pub fn from_tokens(tokens: Vec<String>) -> Result<Self, String> {
        if tokens.len() < SPECIALS.len() || tokens[..SPECIALS.len()] != SPECIALS {
            return Err(format!(
                "vocabulary must start with the specials {SPECIALS:?}"
            ));
        }
        if tokens.len() > u32::MAX as usize {
            return Err(format!("{} tokens do not fit 32-bit ids", tokens.len()));
        }
        let mut index = HashMap::with_capacity(tokens.len());
        let mut levels: Vec<Vec<u32>> = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            if i >= SPECIALS.len() {
                check_code_token(t).map_err(|m| format!("token {i}: {m}"))?;
                if let Some((l, _)) = parse_code_token(t) {
                    if levels.len() <= l {
                        levels.resize(l + 1, Vec::new());
                    }
                    levels[l].push(i as u32);
                }
            }
            if index.insert(t.clone(), i as u32).is_some() {
                return Err(format!("token {i} ({}) appears twice", quoted(t, SHOWN)));
            }
        }
        Ok(Vocab {
            tokens,
            index,
            levels,
            sparse: HashMap::new(),
        })
    }

    /// A vocabulary for display only, from (id, token) pairs: a model with an LLM tokenizer
    /// generates only code tokens (and its format's fixed tokens), so only those need names.
    /// Other ids print as `<unk:ID>`.
    pub fn from_names(names: &[(u32, String)]) -> Self {
        let sparse: HashMap<u32, String> = names.iter().cloned().collect();
        Vocab {
            tokens: Vec::new(),
            index: sparse.iter().map(|(&i, t)| (t.clone(), i)).collect(),
            levels: Vec::new(),
            sparse,
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    pub fn id(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }
    /// Text of a token id; `<unk:ID>` for ids outside the vocabulary (never panics on bad input).
    pub fn token(&self, id: u32) -> std::borrow::Cow<'_, str> {
        match self
            .tokens
            .get(id as usize)
            .or_else(|| self.sparse.get(&id))
        {
            Some(t) => std::borrow::Cow::Borrowed(t.as_str()),
            None => std::borrow::Cow::Owned(format!("<unk:{id}>")),
        }
    }
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }
    /// Identifier levels the vocabulary knows of (L for one built from an index).
    pub fn num_levels(&self) -> usize {
        self.levels.len()
    }
    /// The first identifier level (0-based) token `id` belongs to, if any.
    pub fn level(&self, id: u32) -> Option<usize> {
        self.levels
            .iter()
            .position(|l| l.binary_search(&id).is_ok())
    }
    /// All token ids of identifier level `l` (0-based), ascending.
    pub fn level_tokens(&self, l: usize) -> Vec<u32> {
        self.levels.get(l).cloned().unwrap_or_default()
    }
    /// Maps an identifier given as strings to ids.
    pub fn identifier(&self, codes: &[String]) -> Option<Identifier> {
        let ids: Option<Vec<u32>> = codes.iter().map(|c| self.id(c)).collect();
        Identifier::new(&ids?)
    }
    /// Concatenated text of a token sequence, e.g. `<a_1><b_2>`.
    pub fn render(&self, ids: &[u32]) -> String {
        ids.iter().map(|&i| self.token(i)).collect()
    }
}

/// A code token must be non-empty, short, and free of whitespace and control characters: it is
/// one token of a tokenizer, looked up by its text, and printed on screens.
fn check_code_token(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("an empty code token".into());
    }
    if t.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "code token {} is longer than {MAX_TOKEN_BYTES} bytes",
            quoted(t, SHOWN)
        ));
    }
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "code token {} holds whitespace or a control character",
            quoted(t, SHOWN)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn order_is_specials_then_levels_by_code() {
        let a = ident(&["<a_10>", "<b_3>", "<c_0>", "<d_2>"]);
        let b = ident(&["<a_2>", "<b_3>", "<c_1>", "<d_2>"]);
        let v = Vocab::from_codes([a.as_slice(), b.as_slice()]).unwrap();
        let toks: Vec<&str> = v.tokens().iter().map(|s| s.as_str()).collect();
        assert_eq!(
            toks,
            [
                "<pad>", "<bos>", "<eos>", "<sep>", "<a_2>", "<a_10>", "<b_3>", "<c_0>", "<c_1>",
                "<d_2>"
            ]
        );
        assert_eq!(v.level(v.id("<c_1>").unwrap()), Some(2));
        assert_eq!(v.level(SEP), None);
        assert_eq!(v.num_levels(), 4);
        assert_eq!(v.identifier(&b), Some(Identifier::from([4, 6, 8, 9])));
        let again = Vocab::from_tokens(v.tokens().to_vec()).unwrap();
        assert_eq!(again, v);
    }

    #[test]
    fn any_level_count_and_token_names() {
        // OpenOneRec-style names, three levels; the level is the position, not the letter.
        let a = ident(&["<s_a_9>", "<s_b_10>", "<s_c_2>"]);
        let b = ident(&["<s_a_10>", "<s_b_1>", "<s_c_2>"]);
        let v = Vocab::from_codes([a.as_slice(), b.as_slice()]).unwrap();
        let toks: Vec<&str> = v.tokens()[4..].iter().map(|s| s.as_str()).collect();
        assert_eq!(
            toks,
            ["<s_a_9>", "<s_a_10>", "<s_b_1>", "<s_b_10>", "<s_c_2>"]
        );
        assert_eq!(v.num_levels(), 3);
        assert_eq!(v.identifier(&a).unwrap().len(), 3);
        // Plain names with one token shared by two levels: it keeps one id.
        let c = ident(&["x7", "x7"]);
        let d = ident(&["x2", "y"]);
        let w = Vocab::from_codes([c.as_slice(), d.as_slice()]).unwrap();
        assert_eq!(w.tokens()[4..], ["x2", "x7", "y"]);
        assert_eq!(w.level_tokens(1), [5, 6]);
        assert_eq!(
            w.identifier(&c).unwrap().as_slice(),
            [w.id("x7").unwrap(); 2]
        );
    }

    #[test]
    fn identifiers_compare_as_slices() {
        let x = Identifier::from([3, 1]);
        let y = Identifier::from([3, 1, 0]);
        assert_ne!(x, y);
        assert!(x < y);
        assert_eq!(x.map(|t| t + 1).as_slice(), [4, 2]);
        assert!(Identifier::new(&[]).is_none());
        assert!(Identifier::new(&[1; MAX_LEVELS + 1]).is_none());
        assert_eq!(format!("{x:?}"), "[3, 1]");
    }

    #[test]
    fn rejects_bad_identifiers() {
        let four = ident(&["<a_1>", "<b_1>", "<c_1>", "<d_1>"]);
        let three = four[..3].to_vec();
        let e = Vocab::from_codes([four.as_slice(), three.as_slice()]).unwrap_err();
        assert!(
            e.contains("3 tokens") && e.contains("same number of levels"),
            "{e}"
        );
        let nine: Vec<String> = (0..9).map(|i| format!("<a_{i}>")).collect();
        assert!(Vocab::from_codes([nine.as_slice()])
            .unwrap_err()
            .contains("1 to 8 levels"));
        let spaced = ident(&["<a 1>", "<b_1>"]);
        assert!(Vocab::from_codes([spaced.as_slice()])
            .unwrap_err()
            .contains("whitespace"));
        let empty = ident(&["", "<b_1>"]);
        assert!(Vocab::from_codes([empty.as_slice()]).is_err());
    }

    #[test]
    fn code_tokens_of_the_lcrec_family_parse() {
        assert_eq!(parse_code_token("<a_12>"), Some((0, 12)));
        assert_eq!(parse_code_token("<s_c_7>"), Some((2, 7)));
        assert_eq!(parse_code_token("<h_1>"), Some((7, 1)));
        for bad in ["<i_1>", "a_1", "<a_>", "<a_x>", "<ab_1>", "<A_1>"] {
            assert_eq!(parse_code_token(bad), None, "{bad}");
        }
    }
}
