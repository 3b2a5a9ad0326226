//! Item identifiers: the token vocabulary of the compact prompt and the prefix constraint that
//! keeps beam search on real items.

mod automaton;
pub mod vocab;

pub use automaton::PrefixAutomaton;
pub use vocab::{Identifier, Vocab, BOS, EOS, LCREC_LEVELS, MAX_LEVELS, PAD, SEP, SPECIALS};
