//! The decoding constraint as a tiny automaton: a state per prefix, and for each state the tokens
//! allowed next with the state they lead to. A prefix trie over the valid sequences (only real
//! items can be generated) and per-depth token sets (LC-Rec's own constraint: any combination of
//! level tokens, invalid items possible) are both automata of this shape, so beam search needs
//! one code path for both.
//!
//! Every accepted sequence has the same length, the automaton's [`depth`](PrefixAutomaton::depth):
//! an identifier's L codes plus its format's fixed tokens (MiniOneRec's `\n` and EOS after the
//! codes, for example). A depth is *forced* when every state before it allows exactly one token:
//! such a step needs no choosing, so speculative decoding accepts it inside the round that
//! reaches it, and target-only beam search scores it in the pass that feeds its parent.

/// A constraint over fixed-length token sequences (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixAutomaton {
    /// `children[state]` = (token, next state), sorted by token.
    children: Vec<Vec<(u32, u32)>>,
    /// Length of every accepted sequence.
    depth: usize,
    /// `forced[d - 1]`: depth d allows exactly one token after every prefix that reaches it.
    forced: Vec<bool>,
}

impl PrefixAutomaton {
    pub const ROOT: u32 = 0;

    /// A prefix trie over `seqs` (duplicates are fine). Errors when they are empty or differ in
    /// length: every item's sequence has the same number of tokens.
    pub fn trie<S: AsRef<[u32]>>(seqs: impl IntoIterator<Item = S>) -> Result<Self, String> {
        let mut children: Vec<Vec<(u32, u32)>> = vec![Vec::new()];
        let mut depth = None;
        for seq in seqs {
            let seq = seq.as_ref();
            match depth {
                None if seq.is_empty() => return Err("an empty token sequence".into()),
                None => depth = Some(seq.len()),
                Some(d) if d != seq.len() => {
                    return Err(format!(
                        "token sequences of {d} and {} tokens: every item needs the same number",
                        seq.len()
                    ))
                }
                Some(_) => {}
            }
            let mut state = 0usize;
            for &tok in seq {
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
        let depth = depth.ok_or("no token sequence to constrain to")?;
        for c in &mut children {
            c.sort_unstable();
        }
        Ok(Self::finish(children, depth))
    }

    /// Any token of `sets[d]` at depth d + 1, whatever came before (LC-Rec's per-level
    /// constraint). Empty sets are an error (nothing could be generated).
    pub fn per_depth(sets: &[Vec<u32>]) -> Result<Self, String> {
        if sets.is_empty() {
            return Err("no depth to constrain".into());
        }
        let mut children = Vec::with_capacity(sets.len() + 1);
        for (d, set) in sets.iter().enumerate() {
            if set.is_empty() {
                return Err(format!("no token is allowed at depth {}", d + 1));
            }
            let mut c: Vec<(u32, u32)> = set.iter().map(|&t| (t, (d + 1) as u32)).collect();
            c.sort_unstable();
            c.dedup();
            children.push(c);
        }
        children.push(Vec::new());
        Ok(Self::finish(children, sets.len()))
    }

    /// Computes which depths are forced by walking the states depth by depth.
    fn finish(children: Vec<Vec<(u32, u32)>>, depth: usize) -> Self {
        let mut forced = Vec::with_capacity(depth);
        let mut frontier = vec![Self::ROOT];
        let mut seen = vec![false; children.len()];
        for _ in 0..depth {
            forced.push(frontier.iter().all(|&s| children[s as usize].len() == 1));
            let mut next = Vec::new();
            for &s in &frontier {
                for &(_, n) in &children[s as usize] {
                    if !std::mem::replace(&mut seen[n as usize], true) {
                        next.push(n);
                    }
                }
            }
            frontier = next;
        }
        PrefixAutomaton {
            children,
            depth,
            forced,
        }
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

    /// The length of every sequence the automaton accepts: the decode's number of steps.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Whether depth `d` (1-based) is forced: one allowed token after every prefix reaching it.
    pub fn is_forced(&self, d: usize) -> bool {
        d >= 1 && self.forced.get(d - 1).copied().unwrap_or(false)
    }

    /// Forced flag of every depth 1..=depth.
    pub fn forced(&self) -> &[bool] {
        &self.forced
    }

    /// Depths that need a choice (not forced): what AS and per-step acceptance count.
    pub fn free_depths(&self) -> usize {
        self.forced.iter().filter(|&&f| !f).count()
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
        let t = PrefixAutomaton::trie(ids.iter()).unwrap();
        let root: Vec<u32> = t.children(0).iter().map(|c| c.0).collect();
        assert_eq!(root, [4, 5]);
        let s = t.walk(&[4]).unwrap();
        let next: Vec<u32> = t.children(s).iter().map(|c| c.0).collect();
        assert_eq!(next, [6, 7]);
        assert!(t.walk(&[5, 7]).is_none());
        let leaf = t.walk(&[5, 6, 8, 9]).unwrap();
        assert!(t.children(leaf).is_empty());
        assert_eq!(t.depth(), 4);
        // Depth 3 has one child (8) after every depth-2 prefix, depth 4 one (9) after each.
        assert_eq!(t.forced(), [false, false, true, true]);
        assert_eq!(t.free_depths(), 2);
    }

    #[test]
    fn format_tokens_are_forced() {
        // MiniOneRec's shape: three codes, then "\n" (7) and EOS (2).
        let seqs = [
            [10, 20, 30, 7, 2],
            [10, 20, 31, 7, 2],
            [11, 20, 31, 7, 2],
            [11, 21, 30, 7, 2],
        ];
        let t = PrefixAutomaton::trie(seqs).unwrap();
        assert_eq!(t.forced(), [false, false, false, true, true]);
        assert!(t.is_forced(4) && !t.is_forced(0) && !t.is_forced(6));
        let p = PrefixAutomaton::per_depth(&[vec![5, 6], vec![9], vec![1, 2]]).unwrap();
        assert_eq!(p.forced(), [false, true, false]);
        assert_eq!(p.walk(&[6, 9, 1]), Some(3));
        assert!(p.walk(&[9]).is_none());
    }

    #[test]
    fn uneven_or_empty_input_is_an_error() {
        assert!(PrefixAutomaton::trie([vec![1, 2], vec![1]])
            .unwrap_err()
            .contains("same number"));
        assert!(PrefixAutomaton::trie(Vec::<Vec<u32>>::new()).is_err());
        assert!(PrefixAutomaton::trie([Vec::<u32>::new()]).is_err());
        assert!(PrefixAutomaton::per_depth(&[vec![1], vec![]]).is_err());
    }
}
