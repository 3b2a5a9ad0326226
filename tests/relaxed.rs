//! Relaxed verification: with one drafted sequence (N = K = 1) it is plain speculative sampling,
//! so generated identifiers must follow the target's own distribution; with N > 1 drafts it only
//! approximates it, and this test measures by how much.

mod common;

use std::collections::HashMap;

use atspeed::decode::{sample_search, speculative, DecodeParams, Mode};
use atspeed::ids::{Identifier, PrefixAutomaton, LCREC_LEVELS as ID_LEN};
use atspeed::model::Llm;
use atspeed::synth;
use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Exact probability of every valid identifier under the target: at each level, softmax of the
/// target's log-probs restricted to the tokens the trie allows (what sampling draws from).
fn exact_distribution(
    llm: &Llm,
    trie: &PrefixAutomaton,
    prompt: &[u32],
) -> HashMap<Identifier, f64> {
    let mut out = HashMap::new();
    let mut stack = vec![(Vec::<u32>::new(), PrefixAutomaton::ROOT, 1.0f64)];
    while let Some((prefix, state, prob)) = stack.pop() {
        if prefix.len() == ID_LEN {
            out.insert(prefix.clone().try_into().unwrap(), prob);
            continue;
        }
        let mut seq = prompt.to_vec();
        seq.extend(&prefix);
        let lp = plain_last_logp(llm, &seq);
        let children = trie.children(state);
        let z: f64 = children
            .iter()
            .map(|&(t, _)| (lp[t as usize] as f64).exp())
            .sum();
        for &(t, s) in children {
            let mut p = prefix.clone();
            p.push(t);
            stack.push((p, s, prob * (lp[t as usize] as f64).exp() / z));
        }
    }
    out
}

/// Pearson chi-square of observed counts against expected probabilities, merging bins whose
/// expected count is below 5; returns (statistic, degrees of freedom).
fn chi_square(
    exact: &HashMap<Identifier, f64>,
    counts: &HashMap<Identifier, usize>,
    draws: usize,
) -> (f64, usize) {
    let mut bins: Vec<(f64, usize)> = exact
        .iter()
        .map(|(id, p)| (p * draws as f64, counts.get(id).copied().unwrap_or(0)))
        .collect();
    bins.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(f64, usize)> = Vec::new();
    let mut acc = (0.0, 0);
    for (e, o) in bins {
        acc = (acc.0 + e, acc.1 + o);
        if acc.0 >= 5.0 {
            merged.push(acc);
            acc = (0.0, 0);
        }
    }
    if acc.0 > 0.0 {
        match merged.last_mut() {
            Some(last) => *last = (last.0 + acc.0, last.1 + acc.1),
            None => merged.push(acc),
        }
    }
    let stat = merged
        .iter()
        .map(|(e, o)| (*o as f64 - e).powi(2) / e)
        .sum();
    (stat, merged.len() - 1)
}

/// Upper 0.1% point of chi-square with `df` degrees of freedom (Wilson-Hilferty).
fn chi_square_critical(df: usize) -> f64 {
    let d = df as f64;
    let z = 3.09;
    d * (1.0 - 2.0 / (9.0 * d) + z * (2.0 / (9.0 * d)).sqrt()).powi(3)
}

fn total_variation(
    exact: &HashMap<Identifier, f64>,
    counts: &HashMap<Identifier, usize>,
    draws: usize,
) -> f64 {
    let off_support: usize = counts
        .iter()
        .filter(|(id, _)| !exact.contains_key(*id))
        .map(|(_, c)| c)
        .sum();
    0.5 * exact
        .iter()
        .map(|(id, p)| (counts.get(id).copied().unwrap_or(0) as f64 / draws as f64 - p).abs())
        .sum::<f64>()
        + 0.5 * off_support as f64 / draws as f64
}

struct Setup {
    cat: synth::Catalogue,
    target: Llm,
    draft: Llm,
    prompt: Vec<u32>,
    exact: HashMap<Identifier, f64>,
}

fn setup() -> Setup {
    let cat = synth::catalogue([3, 3, 2, 2], 24, 11);
    // Flat-ish random models (std 0.05): many identifiers carry visible mass, and the draft
    // disagrees with the target enough that rejections and residual draws happen often.
    let cfg = atspeed::model::ModelConfig::compact(cat.vocab.len(), 1, 16, 2, 1);
    let target = Llm::random(
        &cfg,
        cat.vocab.tokens().to_vec(),
        0.6,
        1,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let draft = Llm::random(
        &cfg,
        cat.vocab.tokens().to_vec(),
        0.6,
        2,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let prompt = synth::prompt(&cat, 3, &mut rng);
    let exact = exact_distribution(&target, &cat.trie, &prompt);
    Setup {
        cat,
        target,
        draft,
        prompt,
        exact,
    }
}

fn draw(s: &Setup, n: usize, gamma: usize, draws: usize, seed: u64) -> HashMap<Identifier, usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = DecodeParams {
        mode: Mode::Relaxed,
        n,
        k: 1,
        gamma,
        draft_mass: None,
    };
    let mut counts = HashMap::new();
    for _ in 0..draws {
        let t = speculative(
            &s.target,
            &s.draft,
            &s.cat.trie,
            &s.prompt,
            &params,
            &mut rng,
        )
        .unwrap();
        let id: Identifier = t.beams[0].tokens.clone().try_into().unwrap();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

#[test]
fn relaxed_with_one_draft_is_exact_speculative_sampling() {
    let s = setup();
    let total: f64 = s.exact.values().sum();
    assert!((total - 1.0).abs() < 1e-9);
    let draws = 4000;
    for gamma in [1, 3] {
        let counts = draw(&s, 1, gamma, draws, 40 + gamma as u64);
        let (stat, df) = chi_square(&s.exact, &counts, draws);
        let tv = total_variation(&s.exact, &counts, draws);
        eprintln!(
            "N=1 K=1 gamma={gamma}: chi2 {stat:.1} (df {df}, 0.1% critical {:.1}), TV {tv:.4}",
            chi_square_critical(df)
        );
        assert!(
            stat < chi_square_critical(df),
            "gamma {gamma}: chi-square {stat} over {df} df"
        );
        assert!(tv < 0.05, "gamma {gamma}: total variation {tv}");
    }
    // Direct sampling from the target passes the same test (the reference sampler is right).
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut counts = HashMap::new();
    for _ in 0..draws {
        let b = sample_search(&s.target, &s.cat.trie, &s.prompt, 1, &mut rng).unwrap();
        *counts
            .entry(b.beams[0].tokens.clone().try_into().unwrap())
            .or_insert(0) += 1;
    }
    let (stat, df) = chi_square(&s.exact, &counts, draws);
    assert!(
        stat < chi_square_critical(df),
        "direct sampling: chi-square {stat} over {df} df"
    );
}

#[test]
fn relaxed_drift_grows_with_more_drafts() {
    // With N > 1 drafts each accepted with probability min(1, p/q) and one of the accepted kept
    // at random, the output leans toward min(p, q): the paper's "approximately equivalent".
    // Measure it, and check it is there: this test fails if relaxed mode ever becomes exact (or
    // drifts at N = 1), either of which would change what the explorer teaches.
    let s = setup();
    let draws = 3000;
    let mut tvs = Vec::new();
    for n in [1, 2, 4, 8] {
        let counts = draw(&s, n, 3, draws, 100 + n as u64);
        let tv = total_variation(&s.exact, &counts, draws);
        eprintln!(
            "relaxed drift K=1 N={n}: total variation vs target sampling {tv:.4} ({draws} draws)"
        );
        tvs.push(tv);
    }
    // One draft is exact (sampling noise only, about 0.03 at this many draws); every wider
    // draft drifts well beyond that noise (measured: 0.31 at N = 2, 0.43 at N = 4, 0.39 at N = 8).
    assert!(tvs[0] < 0.05, "N = 1 must be exact: TV {}", tvs[0]);
    for (n, tv) in [2, 4, 8].iter().zip(&tvs[1..]) {
        assert!(
            *tv > tvs[0] + 0.1,
            "N = {n}: TV {tv} is within sampling noise of N = 1 ({})",
            tvs[0]
        );
    }
}
