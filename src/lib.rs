//! atspeed: speculative beam decoding for LLM-based generative recommendation.
//!
//! The engine (`ids`, `data`, `model`, `decode`, `eval`, `train`) knows nothing about the terminal
//! explorer (`tui`, behind the default `tui` feature), which only consumes the plain-data traces
//! the decoder emits. `load` is how every entry point gets a dataset and checked models.

pub mod atomic;
pub mod data;
pub mod decode;
pub mod device;
mod error;
pub mod eval;
pub mod ids;
pub mod load;
pub mod model;
pub mod plot;
pub mod profile;
pub mod session;
pub mod space;
pub mod synth;
pub mod text;
pub mod train;
#[cfg(feature = "tui")]
pub mod tui;

pub use error::{Error, Result};
