//! Chooses the drafted width N (and optionally the drafted depth gamma) for each beam size K by
//! timing a few candidates.
//!
//! The best N depends on the device as much as on the draft. Where a pass costs in proportion to
//! its tokens (a CPU), every drafted beam makes the target's tree pass dearer, so a small N that
//! still covers the target's top-K most of the time wins: on the 2-core CPU, K = 1 runs fastest
//! with N = 3 or 4, not the paper's 40. Where a pass costs about the same for 20 or 400 tokens (a GPU
//! with small batches), a wide N buys acceptance for free. Rather than guess, `bench --tune-n`
//! times the candidates on the validation prompts of users the benchmark does not measure (so the
//! choice is not fitted to the users it is scored on) and keeps the fastest.
//!
//! The explorer tunes the same way, in the background and with clearly slower candidates dropped
//! early ([`Prune`]), and keeps what it found in a small [`ShapeCache`] keyed by everything the
//! timings depend on ([`ShapeKey`]: device and machine, both models, the dataset, mode and K), so
//! the next start on the same machine is tuned at once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::Sample;
use crate::decode::params::MAX_WIDTH;
use crate::decode::{speculative, DecodeParams, Mode};
use crate::ids::PrefixAutomaton;
use crate::model::Llm;
use crate::Result;

/// Candidate widths for beam size `k`: K times 1, 1.5, 2, 3, 4, 6 and 8 (rounded up), capped at
/// `max_n` and at [`MAX_WIDTH`] (but never below K, which strict verification needs).
pub fn width_candidates(k: usize, max_n: usize) -> Vec<usize> {
    let cap = max_n.min(MAX_WIDTH).max(k);
    let mut v: Vec<usize> = [2, 3, 4, 6, 8, 12, 16]
        .iter()
        .map(|&half| k.saturating_mul(half).div_ceil(2).min(cap))
        .collect();
    v.dedup();
    v
}

/// One candidate draft shape and what it cost on the tuning users.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WidthTrial {
    pub n: usize,
    /// Drafted steps per round (0 in reports written before depth was tuned).
    #[serde(default)]
    pub gamma: usize,
    /// Mean speculative milliseconds per tuning user.
    pub speculative_ms: f64,
    /// Mean accepted drafted steps per tuning user.
    pub accepted_steps: f64,
}

/// The draft shape chosen for one K, with every trial behind the choice.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WidthChoice {
    pub k: usize,
    pub n: usize,
    #[serde(default)]
    pub gamma: usize,
    pub users: usize,
    pub trials: Vec<WidthTrial>,
}

/// Times speculative decoding for each candidate (N, gamma) on `prompts` and returns the
/// fastest (the smaller N, then the smaller gamma, on an exact tie). Candidates take turns per
/// user, starting at a different one each time, so drift in machine speed spreads over all of
/// them alike.
pub fn tune_width(
    target: &Llm,
    draft: &Llm,
    auto: &PrefixAutomaton,
    prompts: &[Vec<u32>],
    base: &DecodeParams,
    candidates: &[(usize, usize)],
    seed: u64,
) -> Result<WidthChoice> {
    let mut t = Tuner::new(prompts.to_vec(), base, candidates, seed, None)?;
    while t.step(target, draft, auto)? {}
    Ok(t.choice())
}

/// Dropping candidates that are clearly slower, once every candidate has been timed on a few
/// users: what lets the explorer tune in seconds rather than minutes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prune {
    /// Users every candidate is timed on before any is dropped, and between later rounds of
    /// dropping.
    pub every: usize,
    /// A candidate is dropped when its mean time exceeds the best one's by this share.
    pub slack: f64,
}

/// The tuner as a state machine: [`Tuner::step`] times one (user, candidate) pair, so a caller
/// can interleave tuning with its own work (the explorer tunes between decodes). The order is
/// the one [`tune_width`] documents.
pub struct Tuner {
    base: DecodeParams,
    params: Vec<DecodeParams>,
    prompts: Vec<Vec<u32>>,
    ms: Vec<f64>,
    runs: Vec<usize>,
    steps: Vec<usize>,
    alive: Vec<bool>,
    user: usize,
    turn: usize,
    prune: Option<Prune>,
    rng: rand_chacha::ChaCha8Rng,
}

impl Tuner {
    pub fn new(
        prompts: Vec<Vec<u32>>,
        base: &DecodeParams,
        candidates: &[(usize, usize)],
        seed: u64,
        prune: Option<Prune>,
    ) -> Result<Tuner> {
        let params: Vec<DecodeParams> = candidates
            .iter()
            .map(|&(n, gamma)| DecodeParams { n, gamma, ..*base })
            .collect();
        for p in &params {
            p.validate()?;
        }
        let c = params.len();
        Ok(Tuner {
            base: *base,
            params,
            prompts,
            ms: vec![0.0; c],
            runs: vec![0; c],
            steps: vec![0; c],
            alive: vec![true; c],
            user: 0,
            turn: 0,
            prune,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// Decodes the next (user, candidate) pair; false once every user has been timed.
    pub fn step(&mut self, target: &Llm, draft: &Llm, auto: &PrefixAutomaton) -> Result<bool> {
        let c = self.params.len();
        while self.user < self.prompts.len() && c > 0 {
            if self.turn == c {
                self.turn = 0;
                self.user += 1;
                self.maybe_prune();
                continue;
            }
            let i = (self.user + self.turn) % c;
            self.turn += 1;
            if !self.alive[i] {
                continue;
            }
            let t = Instant::now();
            let trace = speculative(
                target,
                draft,
                auto,
                &self.prompts[self.user],
                &self.params[i],
                &mut self.rng,
            )?;
            self.ms[i] += t.elapsed().as_secs_f64() * 1e3;
            self.runs[i] += 1;
            self.steps[i] += trace.accepted_steps();
            return Ok(true);
        }
        Ok(false)
    }

    fn maybe_prune(&mut self) {
        let Some(p) = self.prune else { return };
        if p.every == 0 || !self.user.is_multiple_of(p.every) {
            return;
        }
        let best = self.best_mean();
        for i in 0..self.params.len() {
            if self.alive[i] && self.mean(i) > best * (1.0 + p.slack) {
                self.alive[i] = false;
            }
        }
    }

    fn mean(&self, i: usize) -> f64 {
        self.ms[i] / self.runs[i].max(1) as f64
    }

    fn best_mean(&self) -> f64 {
        (0..self.params.len())
            .filter(|&i| self.alive[i] && self.runs[i] > 0)
            .map(|i| self.mean(i))
            .fold(f64::INFINITY, f64::min)
    }

    /// Decodes done, and done plus those left if no further candidate were dropped.
    pub fn progress(&self) -> (usize, usize) {
        let done: usize = self.runs.iter().sum();
        let alive = self.alive.iter().filter(|&&a| a).count();
        let left = self.prompts.len().saturating_sub(self.user) * alive;
        let this_user = (0..self.turn.min(self.params.len()))
            .filter(|t| self.alive[(self.user + t) % self.params.len()])
            .count();
        (done, done + left.saturating_sub(this_user))
    }

    /// The fastest candidate still in the running, with every trial.
    pub fn choice(&self) -> WidthChoice {
        let base = self.base;
        let users = self.prompts.len().max(1) as f64;
        let trials: Vec<WidthTrial> = self
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| WidthTrial {
                n: p.n,
                gamma: p.gamma,
                speculative_ms: if self.prune.is_none() {
                    self.ms[i] / users
                } else {
                    self.mean(i)
                },
                accepted_steps: if self.prune.is_none() {
                    self.steps[i] as f64 / users
                } else {
                    self.steps[i] as f64 / self.runs[i].max(1) as f64
                },
            })
            .collect();
        let best = trials
            .iter()
            .enumerate()
            .filter(|(i, _)| self.alive[*i] && self.runs[*i] > 0)
            .map(|(_, t)| t)
            .min_by(|a, b| {
                a.speculative_ms
                    .total_cmp(&b.speculative_ms)
                    .then(a.n.cmp(&b.n))
                    .then(a.gamma.cmp(&b.gamma))
            })
            .map_or((base.n, base.gamma), |t| (t.n, t.gamma));
        WidthChoice {
            k: base.k,
            n: best.0,
            gamma: best.1,
            users: self.prompts.len(),
            trials,
        }
    }
}

/// The (N, gamma) grid for beam size `k`: every width of [`width_candidates`] with every depth
/// in `gammas`.
pub fn shape_candidates(k: usize, max_n: usize, gammas: &[usize]) -> Vec<(usize, usize)> {
    width_candidates(k, max_n)
        .into_iter()
        .flat_map(|n| gammas.iter().map(move |&g| (n, g)))
        .collect()
}

/// Tuning users: the last `count` validation samples of users outside `measured`. A user's
/// validation prompt is its test prompt shifted by one item, so a measured user must not tune.
pub fn tuning_samples(valid: Vec<Sample>, measured: &HashSet<u32>, count: usize) -> Vec<Sample> {
    let mut free: Vec<Sample> = valid
        .into_iter()
        .filter(|s| !measured.contains(&s.user))
        .collect();
    let keep = count.min(free.len());
    free.split_off(free.len() - keep)
}

/// What a tuned shape is valid for: two runs with the same key time the same work on the same
/// hardware.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeKey {
    /// The device label (`cpu`, `cuda:0`).
    pub device: String,
    /// The machine the device is part of ([`machine`]).
    pub machine: String,
    /// Fingerprints of the two models ([`fingerprint_model`]) and the dataset
    /// ([`fingerprint_dataset`]).
    pub target: String,
    pub draft: String,
    pub dataset: String,
    pub mode: Mode,
    pub k: usize,
    pub history: usize,
    /// The tuner's settings (users, widths and depths tried), so a changed tuner re-tunes.
    pub tuner: String,
}

/// A shape chosen by timing, with what it was chosen for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TunedShape {
    pub key: ShapeKey,
    pub choice: WidthChoice,
    /// Wall time the tuning took.
    pub seconds: f64,
    /// When it was tuned (Unix seconds).
    pub when: u64,
}

/// The explorer's cache of tuned shapes: a small JSON file, written atomically.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShapeCache {
    pub version: u32,
    pub shapes: Vec<TunedShape>,
}

impl ShapeCache {
    pub const VERSION: u32 = 1;
    /// Entries kept (the oldest go first).
    pub const KEEP: usize = 64;

    /// Reads the cache. It is only a cache: a missing file reads as empty, and so does an
    /// unreadable or foreign one, with the reason returned for the log.
    pub fn load(path: &Path) -> (ShapeCache, Option<String>) {
        let empty = ShapeCache {
            version: Self::VERSION,
            shapes: Vec::new(),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (empty, None),
            Err(e) => return (empty, Some(format!("{}: {e}", path.display()))),
        };
        match serde_json::from_str::<ShapeCache>(&text) {
            Ok(c) if c.version == Self::VERSION => (c, None),
            Ok(c) => (
                empty,
                Some(format!(
                    "{}: cache version {} ignored (this build uses {})",
                    path.display(),
                    c.version,
                    Self::VERSION
                )),
            ),
            Err(e) => (
                empty,
                Some(format!(
                    "{}: ignored, not a shape cache: {e}",
                    path.display()
                )),
            ),
        }
    }

    pub fn get(&self, key: &ShapeKey) -> Option<&TunedShape> {
        self.shapes.iter().find(|s| s.key == *key)
    }

    /// Adds a shape, replacing one with the same key.
    pub fn put(&mut self, shape: TunedShape) {
        self.shapes.retain(|s| s.key != shape.key);
        self.shapes.push(shape);
        if self.shapes.len() > Self::KEEP {
            let drop = self.shapes.len() - Self::KEEP;
            self.shapes.drain(..drop);
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| crate::Error::data(path, format!("cannot serialise the cache: {e}")))?;
        crate::atomic::write(path, &json)
    }
}

/// Where the explorer caches tuned shapes: `$XDG_CACHE_HOME/atspeed/tuned-shapes.json`, else
/// `$HOME/.cache/atspeed/tuned-shapes.json`; `None` when neither is set.
pub fn default_cache_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("atspeed").join("tuned-shapes.json"))
}

/// The inference engine's revision, part of [`machine`]: raise it when pass costs change (new
/// kernels), so shapes tuned on the old engine are tuned again. 2: the CPU kernels
/// (`model::kernels`).
const ENGINE_REVISION: u32 = 2;

/// The machine timings come from: the CPU model, the threads available, the thread counts candle
/// and the kernels are told to use, and the engine's revision.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    format!(
        "{cpu}, {threads} threads, CANDLE_NUM_THREADS={}, RAYON_NUM_THREADS={}, engine {ENGINE_REVISION}",
        var("CANDLE_NUM_THREADS"),
        var("RAYON_NUM_THREADS")
    )
}

/// FNV-1a, 64 bits: a stable hash for fingerprints (not for security).
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
const FNV0: u64 = 0xcbf2_9ce4_8422_2325;

/// Name, size and modification time of every file in `dir` (not recursive), hashed, plus the
/// contents of `config.json` and each safetensors header: enough to notice a changed model or
/// dataset without reading its weights.
fn fingerprint_dir(dir: &Path) -> u64 {
    let mut h = fnv(FNV0, dir.to_string_lossy().as_bytes());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for f in files {
        let Ok(meta) = std::fs::metadata(&f) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
        h = fnv(h, name.unwrap_or_default().as_bytes());
        h = fnv(h, &meta.len().to_le_bytes());
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        h = fnv(h, &mtime.to_le_bytes());
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        if f.file_name().is_some_and(|n| n == "config.json") {
            if let Ok(b) = std::fs::read(&f) {
                h = fnv(h, &b);
            }
        } else if ext == "safetensors" {
            h = fnv(h, &safetensors_header(&f));
        }
    }
    h
}

/// The JSON header of a safetensors file (at most 16 MB of it), or nothing if unreadable.
fn safetensors_header(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut len = [0u8; 8];
    if f.read_exact(&mut len).is_err() {
        return Vec::new();
    }
    let n = u64::from_le_bytes(len).min(16 << 20);
    let mut out = Vec::new();
    let _ = f.take(n).read_to_end(&mut out);
    out
}

/// A model's fingerprint: its shape and, for a checkpoint, its folder's files.
pub fn fingerprint_model(llm: &Llm) -> String {
    match &llm.dir {
        Some(dir) => format!("{} {:016x}", llm.describe(), fingerprint_dir(dir)),
        None => format!("{} {} (in memory)", llm.name, llm.describe()),
    }
}

/// A dataset's fingerprint: its name and its folder's files.
pub fn fingerprint_dataset(data: &crate::data::Dataset) -> String {
    format!("{} {:016x}", data.name, fingerprint_dir(&data.dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(user: u32) -> Sample {
        Sample {
            user,
            history: vec![0],
            targets: Vec::new(),
            target_items: Vec::new(),
        }
    }

    #[test]
    fn tuning_users_are_never_measured_users() {
        let valid: Vec<Sample> = (1..=10).map(sample).collect();
        let users = |v: &[Sample]| v.iter().map(|s| s.user).collect::<Vec<_>>();
        let measured: HashSet<u32> = [8, 9, 10].into();
        assert_eq!(
            users(&tuning_samples(valid.clone(), &measured, 3)),
            [5, 6, 7]
        );
        // Fewer free users than asked for: all of them, none measured.
        let measured: HashSet<u32> = (1..=8).collect();
        assert_eq!(users(&tuning_samples(valid.clone(), &measured, 5)), [9, 10]);
        let measured: HashSet<u32> = (1..=10).collect();
        assert!(tuning_samples(valid, &measured, 5).is_empty());
    }

    fn key(k: usize) -> ShapeKey {
        ShapeKey {
            device: "cpu".into(),
            machine: machine(),
            target: "t".into(),
            draft: "d".into(),
            dataset: "x".into(),
            mode: Mode::Strict,
            k,
            history: 20,
            tuner: "v1".into(),
        }
    }

    #[test]
    fn the_cache_round_trips_and_ignores_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/shapes.json");
        let (mut c, why) = ShapeCache::load(&path);
        assert!(c.shapes.is_empty() && why.is_none());
        let shape = |k, n| TunedShape {
            key: key(k),
            choice: WidthChoice {
                k,
                n,
                gamma: 1,
                users: 3,
                trials: vec![],
            },
            seconds: 1.5,
            when: 7,
        };
        c.put(shape(20, 40));
        c.put(shape(5, 10));
        c.put(shape(20, 30));
        c.save(&path).unwrap();
        let (back, why) = ShapeCache::load(&path);
        assert!(why.is_none());
        assert_eq!(back.shapes.len(), 2);
        assert_eq!(back.get(&key(20)).unwrap().choice.n, 30);
        assert!(back.get(&key(3)).is_none());
        std::fs::write(&path, "{ nope").unwrap();
        let (c, why) = ShapeCache::load(&path);
        assert!(c.shapes.is_empty() && why.unwrap().contains("shapes.json"));
    }

    #[test]
    fn fingerprints_follow_the_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{\"a\": 1}").unwrap();
        let a = fingerprint_dir(dir.path());
        assert_eq!(a, fingerprint_dir(dir.path()));
        std::fs::write(dir.path().join("config.json"), "{\"a\": 2}").unwrap();
        assert_ne!(a, fingerprint_dir(dir.path()));
    }

    #[test]
    fn candidates_are_multiples_of_k_within_the_cap() {
        assert_eq!(width_candidates(1, 160), vec![1, 2, 3, 4, 6, 8]);
        assert_eq!(width_candidates(3, 160), vec![3, 5, 6, 9, 12, 18, 24]);
        assert_eq!(
            width_candidates(20, 160),
            vec![20, 30, 40, 60, 80, 120, 160]
        );
        assert_eq!(width_candidates(20, 50), vec![20, 30, 40, 50]);
        // The cap never drops a width below K.
        assert_eq!(width_candidates(20, 10), vec![20]);
        assert_eq!(
            shape_candidates(20, 30, &[1, 3]),
            vec![(20, 1), (20, 3), (30, 1), (30, 3)]
        );
    }
}
