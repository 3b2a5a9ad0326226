//! Small synthetic catalogues and models, made on the fly for tests, examples and `new-model`.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::ids::{Identifier, PrefixAutomaton, Vocab, MAX_LEVELS};

/// A random catalogue: `items` distinct identifiers drawn from `codes[l]` codes per level (L =
/// `codes.len()` levels, 1 to [`MAX_LEVELS`]).
pub struct Catalogue {
    pub vocab: Vocab,
    pub items: Vec<Identifier>,
    pub trie: PrefixAutomaton,
    /// Identifier strings per item, as in an index file.
    pub codes: Vec<Vec<String>>,
}

///
/// # Panics
/// If `codes` has no level, more than [`MAX_LEVELS`], or a level of no codes (test inputs).
pub fn catalogue(codes: impl AsRef<[usize]>, items: usize, seed: u64) -> Catalogue {
    let codes = codes.as_ref();
    assert!(
        (1..=MAX_LEVELS).contains(&codes.len()) && codes.iter().all(|&c| c > 0),
        "a catalogue needs 1..={MAX_LEVELS} levels of at least one code"
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let capacity: usize = codes.iter().fold(1usize, |a, &c| a.saturating_mul(c));
    let items = items.min(capacity);
    let mut seen = std::collections::HashSet::new();
    let mut strs = Vec::with_capacity(items);
    while strs.len() < items {
        let c: Vec<usize> = codes.iter().map(|&n| rng.random_range(0..n)).collect();
        if seen.insert(c.clone()) {
            strs.push(
                c.iter()
                    .enumerate()
                    .map(|(l, v)| format!("<{}_{}>", (b'a' + l as u8) as char, v))
                    .collect::<Vec<_>>(),
            );
        }
    }
    strs.shuffle(&mut rng);
    let vocab = Vocab::from_codes(strs.iter().map(|s| s.as_slice())).expect("valid codes");
    let ids: Vec<Identifier> = strs
        .iter()
        .map(|s| vocab.identifier(s).expect("in vocab"))
        .collect();
    let trie = PrefixAutomaton::trie(ids.iter()).expect("items of one length");
    Catalogue {
        vocab,
        items: ids,
        trie,
        codes: strs,
    }
}

/// A compact prompt over `len` random history items of the catalogue.
pub fn prompt<R: Rng>(cat: &Catalogue, len: usize, rng: &mut R) -> Vec<u32> {
    let mut p = vec![crate::ids::BOS];
    for _ in 0..len {
        p.extend_from_slice(&cat.items[rng.random_range(0..cat.items.len())]);
    }
    p.push(crate::ids::SEP);
    p
}
