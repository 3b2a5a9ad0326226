//! Target-only decoding: the baseline the speculative path must reproduce (strict) or
//! approximate (relaxed).
//!
//! It is an efficient baseline on purpose: KV-cached, all beams in one pass per step (batch 1,
//! the beams' tokens sharing one cached prompt through the tree mask), so a measured speedup is
//! not bought with a handicapped reference.

use std::time::Instant;

use rand::Rng;

use super::select::{extensions, sample_k, top_k, Beam};
use super::trace::BeamView;
use super::tree::{ModelState, NodeId, Rows, Tree};
use crate::ids::PrefixAutomaton;
use crate::model::Llm;
use crate::{Error, Result};

/// Result of a target-only search.
#[derive(Clone, Debug, PartialEq)]
pub struct BeamOutcome {
    /// Final beams, best first.
    pub beams: Vec<BeamView>,
    pub target_passes: usize,
    pub time_ms: f64,
}

/// Trie-constrained beam search with beam size `k` (deterministic ties).
pub fn beam_search(
    target: &Llm,
    auto: &PrefixAutomaton,
    prompt: &[u32],
    k: usize,
) -> Result<BeamOutcome> {
    search(
        target,
        auto,
        prompt,
        k,
        None::<&mut rand_chacha::ChaCha8Rng>,
    )
}

/// Like [`beam_search`], but each step samples its `k` beams without replacement from the
/// sequence-level distribution over extensions (what relaxed mode approximates). With k = 1 this
/// is ancestral sampling restricted to valid identifiers.
pub fn sample_search<R: Rng>(
    target: &Llm,
    auto: &PrefixAutomaton,
    prompt: &[u32],
    k: usize,
    rng: &mut R,
) -> Result<BeamOutcome> {
    search(target, auto, prompt, k, Some(rng))
}

/// Checks what a search is given against the model: a non-empty prompt and a constraint whose
/// tokens all exist in the model's vocabulary (a token beyond it would index past the model's
/// log-probability rows).
pub(crate) fn check_inputs(prompt: &[u32], auto: &PrefixAutomaton, llm: &Llm) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::invalid("prompt tokens", "empty prompt"));
    }
    let v = llm.config().vocab_size as u32;
    if let Some(t) = prompt.iter().find(|&&t| t >= v) {
        return Err(Error::invalid(
            "prompt tokens",
            format!("token id {t} outside the model's vocabulary of {v}"),
        ));
    }
    if auto.children(PrefixAutomaton::ROOT).is_empty() {
        return Err(Error::invalid(
            "constraint",
            "no valid identifier to generate",
        ));
    }
    if let Some(t) = auto.max_token().filter(|&t| t >= v) {
        return Err(Error::invalid(
            "constraint",
            format!(
                "identifier token id {t} outside the model's vocabulary of {v}: the model does not speak this dataset's codes"
            ),
        ));
    }
    Ok(())
}

fn search<R: Rng>(
    target: &Llm,
    auto: &PrefixAutomaton,
    prompt: &[u32],
    k: usize,
    mut rng: Option<&mut R>,
) -> Result<BeamOutcome> {
    super::params::check_k(k)?;
    check_inputs(prompt, auto, target)?;
    let start = Instant::now();
    let (mut tree, root) = Tree::with_prompt(prompt);
    let mut state = ModelState::new(target);
    let mut beams = vec![Beam {
        node: root,
        score: 0.0,
    }];
    let mut passes = 0;
    let depth = auto.depth();
    let mut d = 0;
    while d < depth {
        // The beams' pending tokens, then the forced tokens that follow them (a format's fixed
        // tokens): one pass scores the forced steps too, so they never cost a pass of their own.
        // The last depth's token is never fed (nothing reads its row).
        let mut chain = vec![beams.clone()];
        while d + 1 < depth && auto.is_forced(d + 1) {
            let last = chain.last().expect("chain starts with the beams");
            let next: Vec<Beam> = last
                .iter()
                .map(|b| {
                    let &(token, state) = auto
                        .children(tree.node(b.node).state)
                        .first()
                        .expect("a forced depth allows one token");
                    Beam {
                        node: tree.push(b.node, token, state),
                        score: b.score,
                    }
                })
                .collect();
            chain.push(next);
            d += 1;
        }
        let want: Vec<NodeId> = chain.iter().flatten().map(|b| b.node).collect();
        let fed = state.missing(&tree, &want);
        let (logp, _) = state.feed(target, &tree, &fed, &want)?;
        passes += 1;
        let rows = Rows::from_tensor(&logp)?;
        // Forced steps: each beam's score gains its one token's log-probability.
        let mut row = 0;
        for w in 1..chain.len() {
            for i in 0..chain[w].len() {
                let parent = chain[w - 1][i];
                let token = tree.node(chain[w][i].node).token;
                chain[w][i].score = parent.score + rows.row(row + i)[token as usize];
            }
            row += chain[w - 1].len();
        }
        beams = chain.pop().expect("chain starts with the beams");
        let nodes: Vec<NodeId> = beams.iter().map(|b| b.node).collect();
        let paths: Vec<Vec<u32>> = nodes.iter().map(|&n| tree.path(n)).collect();
        let cands = extensions(&tree, auto, &beams, |i| rows.row(row + i));
        let chosen = match rng.as_deref_mut() {
            Some(r) => sample_k(cands, k, &paths, r),
            None => top_k(cands, k, &paths),
        };
        if chosen.is_empty() {
            return Err(Error::invalid(
                "constraint",
                "no valid identifier continues the current beams",
            ));
        }
        beams = chosen
            .iter()
            .map(|c| Beam {
                node: tree.push(beams[c.parent].node, c.token, c.state),
                score: c.score,
            })
            .collect();
        d += 1;
        // The last step's beams are final: nothing reads the cache again.
        if d < depth {
            let nodes: Vec<NodeId> = beams.iter().map(|b| b.node).collect();
            state.retain_ancestors_of(&tree, &nodes)?;
        }
    }
    Ok(BeamOutcome {
        beams: beams
            .iter()
            .map(|b| BeamView {
                tokens: tree.path(b.node),
                score: b.score,
            })
            .collect(),
        target_passes: passes,
        time_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}
