//! Small synthetic catalogues and models, made on the fly for tests, examples and `new-model`.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::ids::{Identifier, PrefixAutomaton, Vocab, ID_LEN};

/// A random catalogue: `items` distinct identifiers drawn from `codes[l]` codes per level.
pub struct Catalogue {
    pub vocab: Vocab,
    pub items: Vec<Identifier>,
    pub trie: PrefixAutomaton,
    /// Identifier strings per item, as in an index file.
    pub codes: Vec<Vec<String>>,
}

pub fn catalogue(codes: [usize; ID_LEN], items: usize, seed: u64) -> Catalogue {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let capacity: usize = codes.iter().product();
    let items = items.min(capacity);
    let mut seen = std::collections::HashSet::new();
    let mut strs = Vec::with_capacity(items);
    while strs.len() < items {
        let c: [usize; ID_LEN] = std::array::from_fn(|l| rng.random_range(0..codes[l]));
        if seen.insert(c) {
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
    let trie = PrefixAutomaton::trie(ids.iter());
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
