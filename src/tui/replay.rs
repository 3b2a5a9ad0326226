//! Replay: the explorer driven by a recorded session instead of models (teaching mode).
//!
//! The replay engine answers decode requests by looking the (user, parameters) pair up among the
//! recorded runs, so stepping, comparison and auto-run behave exactly as live. Moving to a user
//! recorded only with other parameters shows its first recorded run; changing a parameter to one
//! never recorded for the user gives a message listing what was.

use std::path::Path;

use super::engine::Engine;
use super::state::{App, Params};
use crate::session::{RunParams, Session, UserRecord, UserRun, UserView};

pub struct ReplayEngine {
    records: Vec<UserRecord>,
    /// Distinct user ids in recording order; the app's user index points here.
    users: Vec<u32>,
    /// The user of the last request: moving to another user may switch to its recorded
    /// parameters, changing a parameter on the same user may not.
    last_user: Option<usize>,
}

impl ReplayEngine {
    pub fn new(session: &Session) -> Self {
        let mut users = Vec::new();
        for r in &session.users {
            if !users.contains(&r.user.user) {
                users.push(r.user.user);
            }
        }
        ReplayEngine {
            records: session.users.clone(),
            users,
            last_user: None,
        }
    }
}

fn describe(p: &RunParams) -> String {
    format!(
        "{} N {} K {} gamma {} draft {}",
        p.decode.mode.name(),
        p.decode.n,
        p.decode.k,
        p.decode.gamma,
        p.draft
    )
}

impl Engine for ReplayEngine {
    fn decode(&mut self, user: usize, params: &RunParams) -> crate::Result<UserRun> {
        let id = *self.users.get(user).ok_or_else(|| {
            crate::Error::invalid("user", format!("no user #{user} in this session"))
        })?;
        let mine: Vec<&UserRecord> = self.records.iter().filter(|r| r.user.user == id).collect();
        let moved = self.last_user.replace(user) != Some(user);
        if let Some(r) = mine.iter().find(|r| r.run.params == *params) {
            return Ok(r.run.clone());
        }
        // Arriving at a user recorded only with other parameters: show its first recorded run
        // (the app adopts its parameters) rather than a gap.
        if moved {
            if let Some(r) = mine.first() {
                return Ok(r.run.clone());
            }
        }
        let recorded: Vec<String> = mine.iter().map(|r| describe(&r.run.params)).collect();
        Err(crate::Error::invalid(
            "replay",
            format!(
                "user {id} was not recorded with {}; recorded: {}",
                describe(params),
                recorded.join("; ")
            ),
        ))
    }

    fn num_users(&self) -> usize {
        self.users.len()
    }
}

/// The app and engine for a loaded session. Parameters start at the first record's, so the first
/// user replays without any key press finding a gap.
pub fn replay_app(session: &Session, path: &Path) -> (App, ReplayEngine) {
    let engine = ReplayEngine::new(session);
    let users: Vec<UserView> = engine
        .users
        .iter()
        .filter_map(|id| session.users.iter().find(|r| r.user.user == *id))
        .map(|r| r.user.clone())
        .collect();
    let first = &session.users[0].run.params;
    let mut header = session.header.clone();
    let draft = match header
        .drafts
        .iter()
        .position(|d| d.split_whitespace().next() == Some(first.draft.as_str()))
    {
        Some(i) => i,
        None => {
            // A session whose header lacks the draft still replays under its run name.
            header.drafts.push(first.draft.clone());
            header.drafts.len() - 1
        }
    };
    let params = Params {
        decode: first.decode,
        draft,
    };
    let mut app = App::new(header, users, params);
    app.replay = Some(path.display().to_string());
    (app, engine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures;

    #[test]
    fn replays_recorded_runs_and_explains_gaps() {
        let mut s = Session::new(fixtures::header());
        for id in [5, 9] {
            s.push(UserRecord {
                user: fixtures::user(id),
                run: fixtures::strict_run(id),
            });
        }
        let (app, mut eng) = replay_app(&s, Path::new("sessions/demo.json"));
        assert_eq!(app.users.len(), 2);
        assert_eq!(app.run_params(), s.users[0].run.params);
        let run = eng.decode(1, &app.run_params()).unwrap();
        assert_eq!(run, s.users[1].run);
        eng.decode(0, &app.run_params()).unwrap();
        let mut other = app.run_params();
        other.decode.n = 40;
        let e = eng.decode(0, &other).unwrap_err().to_string();
        assert!(e.contains("not recorded") && e.contains("N 6"), "{e}");
    }
}
