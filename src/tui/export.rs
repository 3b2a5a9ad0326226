//! A round as a picture for slides: the explorer's `x` key and `atspeed replay --export-svg`.

use std::path::PathBuf;

use crate::ids::Vocab;
use crate::session::UserRun;
use crate::{Error, Result};

/// Writes round `round` of `run` as [`round_svg_name`] in the working folder; returns the path.
pub fn write_round(
    vocab: &Vocab,
    device: &str,
    user: u32,
    round: usize,
    run: &UserRun,
) -> Result<String> {
    let path = PathBuf::from(round_svg_name(user, round));
    let svg = round_svg(vocab, user, round, run, device)?;
    crate::plot::write_svg(&path, &svg)?;
    Ok(path.display().to_string())
}

/// The file name the explorer and `replay --export-svg` give a round's picture.
pub fn round_svg_name(user: u32, round: usize) -> String {
    format!("atspeed-user{user}-round{}.svg", round + 1)
}

/// One round of a recorded run as an SVG, titled with the user, the draft and the device.
pub fn round_svg(
    vocab: &Vocab,
    user: u32,
    round: usize,
    run: &UserRun,
    device: &str,
) -> Result<String> {
    let r = run.trace.rounds.get(round).ok_or_else(|| {
        Error::invalid(
            "round",
            format!(
                "user {user} has {} rounds, not {}",
                run.trace.rounds.len(),
                round + 1
            ),
        )
    })?;
    let title = format!(
        "user {user} · round {} of {} · draft {} · {device}",
        round + 1,
        run.trace.rounds.len(),
        run.params.draft
    );
    crate::plot::round_svg(r, &run.trace.params, vocab, &title)
}

/// Writes every round of every run recorded in a session into `dir`, named after the user, the
/// run's parameters and the round; returns the files written.
pub fn export_session(session: &std::path::Path, dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let s = crate::session::Session::load(session)?;
    let vocab = Vocab::from_tokens(s.header.vocab.clone())
        .map_err(|e| Error::data(session, format!("bad vocabulary: {e}")))?;
    let mut out = Vec::new();
    for rec in &s.users {
        let p = &rec.run.params;
        for round in 0..rec.run.trace.rounds.len() {
            let name = format!(
                "user{}-{}-{}-N{}-K{}-gamma{}-round{}.svg",
                rec.user.user,
                p.draft,
                p.decode.mode.name(),
                p.decode.n,
                p.decode.k,
                p.decode.gamma,
                round + 1
            );
            let svg = round_svg(&vocab, rec.user.user, round, &rec.run, &s.header.device)?;
            let path = dir.join(name);
            crate::plot::write_svg(&path, &svg)?;
            out.push(path);
        }
    }
    Ok(out)
}
