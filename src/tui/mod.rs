//! The terminal explorer.
//!
//! Shape: an [`App`] state with pure transitions ([`update`] over [`Action`]s) and a pure
//! [`render`]; an engine thread that decodes users and streams [`EngineEvent`]s back; and the
//! event-loop glue that joins them to a terminal. Live exploration and session replay share all of
//! it: they differ only in the [`engine::Engine`] behind the thread.

pub mod app;
pub mod engine;
pub mod fixtures;
pub mod keys;
pub mod layout;
pub mod live;
pub mod panels;
pub mod phase;
pub mod render;
pub mod replay;
pub mod stats;
pub mod terminal;
pub mod theme;

#[cfg(test)]
mod tests;

pub use app::{update, Action, App, Command, EngineEvent, Params};
pub use live::{run_explorer, ExplorerContext};
pub use render::render;

use std::path::Path;

/// Replays a recorded session (no model needed). Errors name the file.
pub fn run_replay(path: &Path) -> anyhow::Result<()> {
    let session = crate::session::Session::load(path)?;
    let (app, engine) = replay::replay_app(&session, path);
    terminal::run_app(app, Box::new(engine))
}

/// Runs the explorer on synthetic traces: a look at the interface without data or models.
pub fn run_demo() -> anyhow::Result<()> {
    let app = fixtures::app(12);
    terminal::run_app(app, Box::new(fixtures::FixtureEngine { users: 12 }))
}
