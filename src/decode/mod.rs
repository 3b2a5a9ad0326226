//! Decoding: target-only beam search (the baseline) and speculative beam decoding with strict
//! and relaxed verification, both over one tree-attention machinery.

mod beam;
pub mod select;
mod speculative;
pub mod trace;
pub mod tree;

pub use beam::{beam_search, sample_search, BeamOutcome};
pub use speculative::{check_same_vocab, sort_views, speculative, SpecParams};
pub use trace::{BeamView, DecodeTrace, Mode, PhaseTimes, RoundTrace, Verdict};
