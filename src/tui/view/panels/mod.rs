//! One file per panel. Each exposes `render(app, frame, area)` and reads only the [`App`] state
//! (and through it the trace and view-model), so every panel can be snapshot-tested alone.
//!
//! [`App`]: super::app::App

pub mod attention;
pub mod beams;
pub mod compare;
pub mod footer;
pub mod header;
pub mod help;
pub mod log;
pub mod recs;
pub mod speedup;
pub mod user;
