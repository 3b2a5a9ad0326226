//! The facts the verifier records for the explorer, checked against brute force: the smallest
//! drafted width N that accepts a strict depth, the target beams the draft missed, and the
//! relaxed test of every examined beam.

mod common;

use atspeed::decode::trace::{DecodeTrace, RoundTrace, Verdict};
use atspeed::decode::{beam_order, speculative, DecodeParams, Mode};
use atspeed::ids::PrefixAutomaton;
use atspeed::model::Llm;
use atspeed::synth::{self, Catalogue};
use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn strict(n: usize, k: usize, gamma: usize) -> DecodeParams {
    DecodeParams {
        mode: Mode::Strict,
        n,
        k,
        gamma,
        draft_mass: None,
    }
}

/// The automaton state after `path`.
fn state_of(trie: &PrefixAutomaton, path: &[u32]) -> u32 {
    path.iter().fold(PrefixAutomaton::ROOT, |s, &t| {
        trie.children(s)
            .iter()
            .find(|c| c.0 == t)
            .expect("a path of the trie")
            .1
    })
}

/// A random strict case: catalogue, target, draft, prompt and parameters.
struct Case {
    cat: Catalogue,
    target: Llm,
    draft: Llm,
    prompt: Vec<u32>,
    k: usize,
    n: usize,
    gamma: usize,
}

fn case(i: u64, rng: &mut ChaCha8Rng) -> Case {
    let cat = synth::catalogue(
        [
            rng.random_range(4..10),
            rng.random_range(3..8),
            rng.random_range(2..6),
            rng.random_range(2..6),
        ],
        rng.random_range(30..200),
        i,
    );
    let target = model(&cat, 2, 32, 2000 + i);
    let draft = model(&cat, 1, 16, 6000 + i);
    let k = [1, 2, 3, 4, 6][rng.random_range(0..5)];
    let n = k + rng.random_range(0..6);
    let gamma = rng.random_range(1..=3);
    let prompt = synth::prompt(&cat, rng.random_range(0..6), rng);
    Case {
        cat,
        target,
        draft,
        prompt,
        k,
        n,
        gamma,
    }
}

fn decode(c: &Case, n: usize) -> DecodeTrace {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    speculative(
        &c.target,
        &c.draft,
        &c.cat.trie,
        &c.prompt,
        &strict(n, c.k, c.gamma),
        &mut rng,
    )
    .unwrap()
}

/// At depth 1 of the first round the smallest accepting N is exact: re-decoding with it
/// accepts the depth, and with one less it does not.
#[test]
fn smallest_accepting_n_at_depth_1_is_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut tight, mut checked) = (0, 0);
    for i in 0..60u64 {
        let c = case(i, &mut rng);
        let t = decode(&c, c.n);
        let check = &t.rounds[0].checks[0];
        assert_eq!(check.depth, 1);
        let need = check.n_needed.expect("strict records N needed");
        // Never below K, unless fewer than K candidates exist (then all of them).
        assert!(
            need >= c.k.min(check.candidates),
            "case {i}: N needed {need}, K {}",
            c.k
        );
        assert_eq!(check.accepted, need <= c.n, "case {i}");
        assert_eq!(check.accepted, t.rounds[0].accepted >= 1, "case {i}");
        let depth1 = |n: usize| decode(&c, n).rounds[0].checks[0].clone();
        let at = depth1(need.max(c.k));
        assert!(at.accepted, "case {i}: N = {need} must accept depth 1");
        assert_eq!(at.n_needed, Some(need), "case {i}");
        assert!(at.missed.is_empty());
        if need > c.k {
            let below = depth1(need - 1);
            assert!(!below.accepted, "case {i}: N = {} must not", need - 1);
            assert!(!below.missed.is_empty());
            tight += 1;
        }
        checked += 1;
    }
    eprintln!("{checked} cases, {tight} with N needed > K");
    assert!(tight >= 10, "too few informative cases: {tight}");
}

/// The draft's candidates at one depth of a round, recomputed from scratch: every allowed child
/// of the beams it expanded there, scored parent draft score + log q with q from a plain causal
/// pass of the draft (no tree, no cache), sorted best first. Returns the token paths in order.
fn draft_order(c: &Case, r: &RoundTrace, depth: usize) -> Vec<Vec<u32>> {
    let parents: Vec<(Vec<u32>, f32)> = if depth == 1 {
        r.roots
            .iter()
            .map(|b| (b.tokens.clone(), b.score))
            .collect()
    } else {
        r.nodes
            .iter()
            .enumerate()
            .filter(|(_, nd)| nd.depth == depth - 1)
            .map(|(i, nd)| (node_path(r, i), nd.draft_score))
            .collect()
    };
    let mut cands: Vec<(f32, Vec<u32>)> = Vec::new();
    for (path, score) in parents {
        let mut seq = c.prompt.clone();
        seq.extend(&path);
        let lq = plain_last_logp(&c.draft, &seq);
        for &(tok, _) in c.cat.trie.children(state_of(&c.cat.trie, &path)) {
            let mut p = path.clone();
            p.push(tok);
            cands.push((score + lq[tok as usize], p));
        }
    }
    cands.sort_by(|a, b| beam_order((a.0, &a.1), (b.0, &b.1)));
    cands.into_iter().map(|c| c.1).collect()
}

/// Identifier tokens of drafted node `i` (the round's root prefix included).
fn node_path(r: &RoundTrace, i: usize) -> Vec<u32> {
    let mut toks = Vec::new();
    let mut cur = Some(i);
    let mut root = 0;
    while let Some(j) = cur {
        toks.push(r.nodes[j].token);
        root = r.nodes[j].root;
        cur = r.nodes[j].parent;
    }
    toks.reverse();
    let mut path = r.roots[root].tokens.clone();
    path.extend(toks);
    path
}

/// The target's top-K at an examined depth, read from the trace: the kept drafted beams at an
/// accepted depth, the target's own step at the depth that ended the round.
fn target_top_k(r: &RoundTrace, depth: usize) -> Vec<Vec<u32>> {
    let check = &r.checks[depth - 1];
    if check.accepted {
        r.nodes
            .iter()
            .enumerate()
            .filter(|(_, nd)| nd.depth == depth && nd.verdict == Verdict::Accepted)
            .map(|(i, _)| node_path(r, i))
            .collect()
    } else {
        r.target_step
            .beams
            .iter()
            .map(|b| b.tokens.clone())
            .collect()
    }
}

/// At every examined depth of every round, N needed and the missed beams agree with a direct
/// recomputation from the draft's scores.
#[test]
fn smallest_accepting_n_and_missed_beams_match_a_recomputation() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let (mut deep, mut missed_seen, mut near_ties) = (0, 0, 0);
    for i in 0..40u64 {
        let c = case(i, &mut rng);
        let t = decode(&c, c.n);
        for r in &t.rounds {
            assert_eq!(r.checks.len(), r.examined(), "case {i} round {}", r.round);
            for check in &r.checks {
                let d = check.depth;
                let order = draft_order(&c, r, d);
                assert_eq!(order.len(), check.candidates, "case {i} depth {d}");
                let top = target_top_k(r, d);
                assert!(!top.is_empty() && top.len() <= c.k);
                let rank = |p: &Vec<u32>| order.iter().position(|x| x == p).unwrap() + 1;
                let worst = top.iter().map(rank).max().unwrap();
                let need = check.n_needed.unwrap();
                if worst != need {
                    // Only a float near-tie between the tree pass and the plain pass may move a
                    // rank: the two beams must score the same to 1e-5.
                    near_ties += 1;
                    assert!(near_ties <= 2, "case {i} depth {d}: {worst} vs {need}");
                    continue;
                }
                // Drafted beams are the draft's best-first prefix, with their ranks.
                let drafted: Vec<(usize, Vec<u32>)> = r
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, nd)| nd.depth == d)
                    .map(|(j, nd)| (nd.draft_rank.unwrap(), node_path(r, j)))
                    .collect();
                for (k, (dr, p)) in drafted.iter().enumerate() {
                    assert_eq!(*dr, k + 1);
                    assert_eq!(rank(p), *dr, "case {i} depth {d}");
                }
                // Missed: exactly the target's top-K beams not drafted, with their ranks.
                let not_drafted: Vec<&Vec<u32>> = top
                    .iter()
                    .filter(|p| !drafted.iter().any(|(_, q)| q == *p))
                    .collect();
                assert_eq!(check.missed.len(), not_drafted.len(), "case {i} depth {d}");
                assert_eq!(check.accepted, not_drafted.is_empty());
                for m in &check.missed {
                    assert!(not_drafted.contains(&&m.tokens));
                    assert_eq!(m.draft_rank, rank(&m.tokens));
                    assert!(m.draft_rank > drafted.len());
                    assert_eq!(top[m.target_rank - 1], m.tokens);
                    assert!(m.p > 0.0 && m.q > 0.0);
                }
                missed_seen += check.missed.len();
                deep += usize::from(d > 1);
            }
        }
    }
    eprintln!("{deep} deeper depths checked, {missed_seen} missed beams, {near_ties} near-ties");
    assert!(deep >= 20 && missed_seen >= 20, "{deep} {missed_seen}");
}

/// Every examined relaxed beam carries the u and p/q the rule compared, and its verdict is what
/// the rule says: failed when u > p/q, passed (kept or not) when u <= p/q.
#[test]
fn relaxed_verdicts_follow_the_recorded_test() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let (mut not_kept, mut failed, mut resampled) = (0, 0, 0);
    for i in 0..40u64 {
        let c = case(i, &mut rng);
        let params = DecodeParams {
            mode: Mode::Relaxed,
            ..strict(c.n + 2, c.k, c.gamma)
        };
        let t = speculative(
            &c.target,
            &c.draft,
            &c.cat.trie,
            &c.prompt,
            &params,
            &mut rng,
        )
        .unwrap();
        for r in &t.rounds {
            assert_eq!(r.checks.len(), r.examined());
            for check in &r.checks {
                let at: Vec<_> = r.nodes.iter().filter(|n| n.depth == check.depth).collect();
                let examined: Vec<_> = at.iter().filter(|n| n.test.is_some()).collect();
                assert_eq!(examined.len(), check.examined);
                let passed = examined.iter().filter(|n| n.test.unwrap().passed()).count();
                assert_eq!(passed, check.passed);
                assert_eq!(check.accepted, check.depth <= r.accepted);
                assert!(check.n_needed.is_none() && check.missed.is_empty());
                for (j, n) in r.nodes.iter().enumerate() {
                    if n.depth != check.depth {
                        continue;
                    }
                    assert!(!n.in_target_topk);
                    // A beam that failed can still be kept: drawn again at the depth that
                    // ended the round (only through the fallback to p, since its residual
                    // max(0, p - q) is 0).
                    let redrawn = r
                        .target_step
                        .drafted_node
                        .iter()
                        .zip(&r.target_step.draws)
                        .any(|(d, w)| *d == Some(j) && w.is_some_and(|w| w.fallback));
                    match (n.test, n.verdict) {
                        (None, v) => assert_eq!(v, Verdict::Pending),
                        (Some(x), Verdict::Failed) => {
                            assert!(x.u > x.ratio);
                            failed += 1;
                        }
                        (Some(x), Verdict::NotKept) => {
                            assert!(x.passed() && check.accepted);
                            not_kept += 1;
                        }
                        (Some(x), Verdict::Accepted) => assert!(x.passed() || redrawn),
                        (Some(_), v) => panic!("case {i}: verdict {v:?} in relaxed mode"),
                    }
                    if let Some(x) = n.test {
                        assert!((x.ratio - x.p / x.q).abs() <= 1e-12 * x.ratio.max(1.0));
                        assert!((0.0..1.0).contains(&x.u));
                    }
                }
                match &check.residual {
                    Some(res) => {
                        assert!(!check.accepted);
                        let step = &r.target_step;
                        let draws = step.draws.iter().flatten().count();
                        assert_eq!(draws, res.drawn);
                        assert_eq!(step.resampled.iter().filter(|&&x| x).count(), draws);
                        assert_eq!(check.passed + res.drawn, step.beams.len());
                        for d in step.draws.iter().flatten() {
                            assert!(d.prob > 0.0 && d.prob <= 1.0 + 1e-9);
                            assert!(d.fallback == res.fallback || !d.fallback);
                        }
                        assert!(res.mass >= 0.0 && res.mass <= 1.0 + 1e-9);
                        let total: f64 = res.top.iter().map(|e| e.r).sum();
                        assert!(total <= 1.0 + 1e-9);
                        resampled += 1;
                    }
                    None => assert!(check.accepted),
                }
            }
        }
    }
    eprintln!("{failed} failed, {not_kept} passed but not kept, {resampled} resampled steps");
    assert!(failed > 0 && not_kept > 0 && resampled > 0);
}
