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
use crate::ids::{PrefixAutomaton, ID_LEN};
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
    for step in 0..ID_LEN {
        let nodes: Vec<NodeId> = beams.iter().map(|b| b.node).collect();
        let fed = state.missing(&tree, &nodes);
        let (logp, _) = state.feed(target, &tree, &fed, &nodes)?;
        passes += 1;
        let rows = Rows::from_tensor(&logp)?;
        let paths: Vec<Vec<u32>> = nodes.iter().map(|&n| tree.path(n)).collect();
        let cands = extensions(&tree, auto, &beams, |i| rows.row(i));
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
        // The last step's beams are final: nothing reads the cache again.
        if step + 1 < ID_LEN {
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
