//! atspeed: speculative beam decoding for LLM-based generative recommendation.
//!
//! The engine (`ids`, `data`, `model`, `decode`, `eval`, `train`) knows nothing about the terminal
//! explorer (`tui`), which only consumes the plain-data traces the decoder emits.

mod atomic;
pub mod decode;
pub mod device;
mod error;
pub mod ids;
pub mod model;
pub mod synth;

pub use error::{Error, Result};
pub mod data;
pub mod eval;
pub mod session;
pub mod train;
pub mod tui;
