//! The compact vocabulary: four specials, then every code token of the dataset, level by level,
//! each level sorted by its code number. The order is fixed so a checkpoint's embedding rows mean
//! the same thing on every machine; `tokenizer.json` and `config.json` record it for Python.

use std::collections::HashMap;

use crate::text::quoted;

/// Characters of a bad token shown in an error message.
const SHOWN: usize = 40;

/// Tokens per item identifier (levels a, b, c, d).
pub const ID_LEN: usize = 4;
pub const PAD: u32 = 0;
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;
pub const SEP: u32 = 3;
pub const SPECIALS: [&str; 4] = ["<pad>", "<bos>", "<eos>", "<sep>"];

/// An item identifier as vocabulary ids.
pub type Identifier = [u32; ID_LEN];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    tokens: Vec<String>,
    index: HashMap<String, u32>,
    /// Identifier level (0-based) of every token; `None` for specials.
    level: Vec<Option<u8>>,
    /// Display-only vocabularies (see [`Vocab::from_names`]): tokens by id, beyond `tokens`.
    sparse: HashMap<u32, String>,
}

/// Splits `<a_47>` into its level (0 for `a`) and code (47).
pub fn parse_code_token(s: &str) -> Option<(usize, u32)> {
    let inner = s.strip_prefix('<')?.strip_suffix('>')?;
    let (letter, code) = inner.split_once('_')?;
    let mut chars = letter.chars();
    let c = chars.next()?;
    if chars.next().is_some() || !c.is_ascii_lowercase() {
        return None;
    }
    let level = (c as u8 - b'a') as usize;
    if level >= ID_LEN {
        return None;
    }
    Some((level, code.parse().ok()?))
}

impl Vocab {
    /// Builds the vocabulary from identifier strings. Errors name the first bad token.
    pub fn from_codes<'a, I>(codes: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = &'a [String]>,
    {
        let mut per_level: Vec<Vec<u32>> = vec![Vec::new(); ID_LEN];
        for ident in codes {
            if ident.len() != ID_LEN {
                return Err(format!(
                    "identifier {} has {} tokens, expected {ID_LEN}",
                    quoted(&ident.concat(), SHOWN),
                    ident.len()
                ));
            }
            for (pos, tok) in ident.iter().enumerate() {
                match parse_code_token(tok) {
                    Some((level, code)) if level == pos => per_level[level].push(code),
                    Some((level, _)) => {
                        return Err(format!(
                            "token {} is a level-{} code at position {}",
                            quoted(tok, SHOWN),
                            level + 1,
                            pos + 1
                        ))
                    }
                    None => {
                        return Err(format!(
                            "token {} is not a code like <a_12>",
                            quoted(tok, SHOWN)
                        ))
                    }
                }
            }
        }
        let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        let mut level = vec![None; SPECIALS.len()];
        for (l, codes) in per_level.iter_mut().enumerate() {
            codes.sort_unstable();
            codes.dedup();
            for c in codes.iter() {
                tokens.push(format!("<{}_{}>", (b'a' + l as u8) as char, c));
                level.push(Some(l as u8));
            }
        }
        Ok(Self::from_parts(tokens, level))
    }

    /// Rebuilds a vocabulary from its token list (e.g. read back from `tokenizer.json`).
    pub fn from_tokens(tokens: Vec<String>) -> Result<Self, String> {
        if tokens.len() < SPECIALS.len() || tokens[..SPECIALS.len()] != SPECIALS {
            return Err(format!(
                "vocabulary must start with the specials {SPECIALS:?}"
            ));
        }
        if tokens.len() > u32::MAX as usize {
            return Err(format!("{} tokens do not fit 32-bit ids", tokens.len()));
        }
        let mut level = vec![None; SPECIALS.len()];
        let mut seen = std::collections::HashSet::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate().skip(SPECIALS.len()) {
            let (l, _) = parse_code_token(t)
                .ok_or_else(|| format!("token {i} ({}) is not a code", quoted(t, SHOWN)))?;
            if !seen.insert(t.as_str()) {
                return Err(format!("token {i} ({}) appears twice", quoted(t, SHOWN)));
            }
            level.push(Some(l as u8));
        }
        Ok(Self::from_parts(tokens, level))
    }

    fn from_parts(tokens: Vec<String>, level: Vec<Option<u8>>) -> Self {
        let index = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        Vocab {
            tokens,
            index,
            level,
            sparse: HashMap::new(),
        }
    }

    /// A vocabulary for display only, from (id, token) pairs: a model with an LLM tokenizer
    /// generates only code tokens, so only those need names. Other ids print as `<unk:ID>`.
    pub fn from_names(names: &[(u32, String)]) -> Self {
        let sparse: HashMap<u32, String> = names.iter().cloned().collect();
        Vocab {
            tokens: Vec::new(),
            index: sparse.iter().map(|(&i, t)| (t.clone(), i)).collect(),
            level: Vec::new(),
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
    pub fn level(&self, id: u32) -> Option<usize> {
        match self.level.get(id as usize) {
            Some(l) => l.map(|l| l as usize),
            None => self
                .sparse
                .get(&id)
                .and_then(|t| parse_code_token(t))
                .map(|(l, _)| l),
        }
    }
    /// All token ids of identifier level `l` (0-based), ascending.
    pub fn level_tokens(&self, l: usize) -> Vec<u32> {
        (0..self.tokens.len() as u32)
            .filter(|&i| self.level(i) == Some(l))
            .collect()
    }
    /// Maps an identifier given as strings to ids.
    pub fn identifier(&self, codes: &[String]) -> Option<Identifier> {
        if codes.len() != ID_LEN {
            return None;
        }
        let mut out = [0; ID_LEN];
        for (o, c) in out.iter_mut().zip(codes) {
            *o = self.id(c)?;
        }
        Some(out)
    }
    /// Concatenated text of a token sequence, e.g. `<a_1><b_2>`.
    pub fn render(&self, ids: &[u32]) -> String {
        ids.iter().map(|&i| self.token(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(s: [&str; 4]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn order_is_specials_then_levels_by_code() {
        let a = ident(["<a_10>", "<b_3>", "<c_0>", "<d_2>"]);
        let b = ident(["<a_2>", "<b_3>", "<c_1>", "<d_2>"]);
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
        assert_eq!(v.identifier(&b), Some([4, 6, 8, 9]));
        let again = Vocab::from_tokens(v.tokens().to_vec()).unwrap();
        assert_eq!(again, v);
    }

    #[test]
    fn rejects_bad_tokens() {
        let short = ident(["<a_1>", "<b_1>", "<c_1>", "<d_1>"])[..3].to_vec();
        assert!(Vocab::from_codes([short.as_slice()])
            .unwrap_err()
            .contains("3 tokens"));
        let swapped = ident(["<b_1>", "<a_1>", "<c_1>", "<d_1>"]);
        assert!(Vocab::from_codes([swapped.as_slice()])
            .unwrap_err()
            .contains("position 1"));
        let junk = ident(["a1", "<b_1>", "<c_1>", "<d_1>"]);
        assert!(Vocab::from_codes([junk.as_slice()]).is_err());
    }
}
