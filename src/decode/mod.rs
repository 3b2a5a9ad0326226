//! Decoding: target-only beam search (the baseline) and speculative beam decoding with strict
//! and relaxed verification, both over one tree-attention machinery.
//!
//! Where to find what: [`params`] (mode, N, K, gamma), [`tree`] (the token tree, masks, position
//! ids and each model's cache of it), [`beam`] (target-only search), `draft` (the draft's beam
//! search), `verify` (strict and relaxed verification), `speculative` (the round loop),
//! [`trace`] (what a round did), [`ranking`] (beam order and list comparison), [`select`]
//! (top-k and samplers).

mod beam;
mod draft;
pub mod params;
pub mod ranking;
pub mod select;
mod speculative;
pub mod trace;
pub mod tree;
mod verify;

pub use beam::{beam_search, sample_search, BeamOutcome};
pub use draft::drafted_levels;
pub use params::{DecodeParams, Mode};
pub use ranking::{
    beam_order, compare_lists, sort_views, ListComparison, ListMatch, ScoreTolerance,
};
pub use speculative::{check_same_vocab, speculative};
pub use trace::{BeamView, DecodeTrace, PhaseTimes, RoundTrace, Verdict};
