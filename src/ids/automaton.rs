//! The decoding constraint as a tiny automaton: a state per prefix, and for each state the tokens
//! allowed next with the state they lead to. A prefix trie over the valid identifiers (only real
//! items can be generated) and the reference's per-level token sets (any combination of level
//! tokens, invalid items possible) are both automata of this shape, so beam search needs one code
//! path for both.

use super::{Identifier, Vocab, ID_LEN};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixAutomaton {
    /// `children[state]` = (token, next state), sorted by token.
    children: Vec<Vec<(u32, u32)>>,
}

impl PrefixAutomaton {
    pub const ROOT: u32 = 0;

    /// A prefix trie over the given identifiers (duplicates are fine).
    pub fn trie<'a>(identifiers: impl IntoIterator<Item = &'a Identifier>) -> Self {
        let mut children: Vec<Vec<(u32, u32)>> = vec![Vec::new()];
        for ident in identifiers {
            let mut state = 0usize;
            for &tok in ident.iter() {
                state = match children[state].iter().find(|(t, _)| *t == tok) {
                    Some(&(_, next)) => next as usize,
                    None => {
                        let next = children.len();
                        children.push(Vec::new());
                        children[state].push((tok, next as u32));
                        next
                    }
                };
            }
        }
        for c in &mut children {
            c.sort_unstable();
        }
        PrefixAutomaton { children }
    }

    /// The reference's constraint: at level l any level-l token of the vocabulary.
    pub fn per_level(vocab: &Vocab) -> Self {
        let mut children = Vec::with_capacity(ID_LEN + 1);
        for l in 0..ID_LEN {
            children.push(
                vocab
                    .level_tokens(l)
                    .into_iter()
                    .map(|t| (t, (l + 1) as u32))
                    .collect(),
            );
        }
        children.push(Vec::new());
        PrefixAutomaton { children }
    }

    /// Allowed next tokens from `state`, with the state each leads to.
    pub fn children(&self, state: u32) -> &[(u32, u32)] {
        self.children
            .get(state as usize)
            .map(|c| c.as_slice())
            .unwrap_or(&[])
    }

    /// The state after `prefix`, or `None` if it leaves the automaton.
    pub fn walk(&self, prefix: &[u32]) -> Option<u32> {
        let mut s = Self::ROOT;
        for &t in prefix {
            s = self
                .children(s)
                .binary_search_by_key(&t, |&(tok, _)| tok)
                .ok()
                .map(|i| self.children(s)[i].1)?;
        }
        Some(s)
    }

    /// The largest token id any state allows, or `None` for an empty automaton.
    pub fn max_token(&self) -> Option<u32> {
        self.children.iter().flatten().map(|&(t, _)| t).max()
    }

    pub fn num_states(&self) -> usize {
        self.children.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trie_allows_only_real_prefixes() {
        let ids = [[4, 6, 8, 9], [4, 7, 8, 9], [5, 6, 8, 9], [4, 6, 8, 9]];
        let t = PrefixAutomaton::trie(ids.iter());
        let root: Vec<u32> = t.children(0).iter().map(|c| c.0).collect();
        assert_eq!(root, [4, 5]);
        let s = t.walk(&[4]).unwrap();
        let next: Vec<u32> = t.children(s).iter().map(|c| c.0).collect();
        assert_eq!(next, [6, 7]);
        assert!(t.walk(&[5, 7]).is_none());
        let leaf = t.walk(&[5, 6, 8, 9]).unwrap();
        assert!(t.children(leaf).is_empty());
    }
}
