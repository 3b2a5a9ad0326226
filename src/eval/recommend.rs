//! One user's recommendations: the history, the ground truth, and the top-K list with titles,
//! from target-only beam search or from speculative decoding (what `atspeed recommend` prints).

use std::fmt;

use rand::SeedableRng;

use crate::data::{Dataset, Sample};
use crate::decode::{beam_search, speculative, BeamView, DecodeParams};
use crate::ids::Identifier;
use crate::model::Llm;
use crate::space::TokenSpace;
use crate::text::printable;
use crate::Result;

/// A decoded user, ready to print.
pub struct Recommendation {
    pub sample: Sample,
    pub beams: Vec<BeamView>,
    /// How the list was made (search, passes, time).
    pub how: String,
    /// The prompt's model ids.
    pub prompt: Vec<u32>,
    pub target_passes: usize,
    /// The list as JSON rows (rank, tokens, score, identifier, items, titles, hit).
    rows: Vec<serde_json::Value>,
    profile: String,
    lines_history: Vec<String>,
    lines_truth: Vec<String>,
    lines_beams: Vec<String>,
}

/// Decodes a user's sample (see [`Dataset::user_sample`]) target-only, or speculatively when a
/// draft is given.
pub fn recommend(
    data: &Dataset,
    space: &TokenSpace,
    target: &Llm,
    draft: Option<&Llm>,
    sample: Sample,
    params: &DecodeParams,
    seed: u64,
) -> Result<Recommendation> {
    let prompt = space.prompt(data, &sample.history)?;
    let (beams, how, target_passes) = match draft {
        None => {
            let b = beam_search(target, &space.trie, &prompt, params.k)?;
            let how = format!(
                "target-only beam search, {} target passes, {:.1} ms",
                b.target_passes, b.time_ms
            );
            (b.beams, how, b.target_passes)
        }
        Some(draft) => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let t = speculative(target, draft, &space.trie, &prompt, params, &mut rng)?;
            let how = format!(
                "speculative ({}, N {} gamma {}), AS {}, {} target + {} draft passes, {:.1} ms",
                params.mode.name(),
                params.n,
                params.gamma,
                t.accepted_steps(),
                t.target_passes(),
                t.draft_passes(),
                t.speculative_ms()
            );
            let passes = t.target_passes();
            (t.beams, how, passes)
        }
    };
    let item_line = |item: u32| {
        format!(
            "  {}  {}",
            data.vocab.render(&data.items[item as usize]),
            printable(&data.title(item))
        )
    };
    let lines_history = sample.history.iter().map(|&i| item_line(i)).collect();
    let lines_truth = sample.target_items.iter().map(|&i| item_line(i)).collect();
    let mut rows = Vec::with_capacity(beams.len());
    let lines_beams = beams
        .iter()
        .enumerate()
        .map(|(rank, b)| {
            let ident: Option<Identifier> = space.identifier(&b.tokens);
            let hit = ident.is_some_and(|i| sample.targets.contains(&i));
            let items = ident
                .map(|i| data.items_of(&i).to_vec())
                .unwrap_or_default();
            let titles: Vec<String> = items
                .iter()
                .map(|&i| printable(&data.title(i)).into_owned())
                .collect();
            rows.push(serde_json::json!({
                "rank": rank + 1,
                "tokens": b.tokens,
                "score": b.score,
                "identifier": ident.map(|i| data.vocab.render(&i)),
                "items": items,
                "titles": titles,
                "hit": hit,
            }));
            format!(
                "{:>3} {} {:>9.4}  {}  {}",
                rank + 1,
                if hit { "*" } else { " " },
                b.score,
                ident.map_or_else(|| "?".repeat(4), |i| data.vocab.render(&i)),
                titles.join(" | ")
            )
        })
        .collect();
    Ok(Recommendation {
        sample,
        beams,
        how,
        prompt,
        target_passes,
        rows,
        profile: space.profile.name.clone(),
        lines_history,
        lines_truth,
        lines_beams,
    })
}

impl Recommendation {
    /// The user, its prompt ids and the list, as JSON (`recommend --json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "user": self.sample.user,
            "history": self.sample.history,
            "ground_truth": self.sample.target_items,
            "profile": self.profile,
            "prompt_ids": self.prompt,
            "how": self.how,
            "target_passes": self.target_passes,
            "beams": self.rows,
        })
    }
}

impl fmt::Display for Recommendation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "user {} - {} history items (oldest first):",
            self.sample.user,
            self.sample.history.len()
        )?;
        for l in &self.lines_history {
            writeln!(f, "{l}")?;
        }
        if !self.lines_truth.is_empty() {
            writeln!(f, "ground truth (test):")?;
            for l in &self.lines_truth {
                writeln!(f, "{l}")?;
            }
        }
        write!(
            f,
            "top {} recommendations ({}):",
            self.beams.len(),
            self.how
        )?;
        for l in &self.lines_beams {
            write!(f, "\n{l}")?;
        }
        Ok(())
    }
}
