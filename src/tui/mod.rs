//! The terminal explorer (behind the default `tui` feature).
//!
//! Shape: the **state** ([`state::App`]) with pure transitions ([`update`] over [`Action`]s),
//! which never calls view code; the **view** ([`view::render`]), which draws the screen from the
//! state; the **key table** ([`keys::BINDINGS`]), from which input dispatch, the footer and the
//! help are all made; an engine thread that decodes users and streams [`EngineEvent`]s back; and
//! the event-loop glue that joins them to a terminal. Live exploration and session replay share
//! all of it: they differ only in the [`engine::Engine`] behind the thread.

pub mod engine;
pub mod export;
pub mod fixtures;
pub mod keys;
pub mod live;
pub mod replay;
pub mod state;
pub mod terminal;
pub mod view;

#[cfg(test)]
mod tests;

pub use live::{run_explorer, ExplorerContext};
pub use state::{phase, update, Action, App, Command, EngineEvent, Params};
pub use view::render;

use std::path::Path;

/// Replays a recorded session (no model needed). Errors name the file.
pub fn run_replay(path: &Path) -> crate::Result<()> {
    let session = crate::session::Session::load(path)?;
    let (app, engine) = replay::replay_app(&session, path);
    terminal::run_app(app, Box::new(engine))
}

/// Runs the explorer on synthetic traces: a look at the interface without data or models.
pub fn run_demo() -> crate::Result<()> {
    let app = fixtures::app(12);
    terminal::run_app(app, Box::new(fixtures::FixtureEngine { users: 12 }))
}
