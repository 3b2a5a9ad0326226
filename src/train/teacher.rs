//! Teacher beams: the target's top-K trie-constrained beams for each training
//! sample, stored compactly (the target's full distributions are recomputed on the fly during
//! draft training instead: they would cost about 1 MB per sample).
//!
//! File layout: one JSON header line (format, the target's folder name and fingerprint, the
//! dataset, the sample settings, K, the record count, the token width), then per record,
//! little-endian: the sample index `u32` (into `Dataset::train_samples(history, last_only)`), the
//! beam count `u16`, the beams' tokens (`u16` when the vocabulary fits, else `u32`; L per beam),
//! and the beams' scores `f32`. Beauty with K = 20 takes about 240 bytes per sample.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use candle_core::DType;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::subset;
use super::target::identifier;
use crate::data::Dataset;
use crate::decode::beam_search;
use crate::ids::{Identifier, LCREC_LEVELS, MAX_LEVELS};
use crate::model::Llm;
use crate::{Error, Result};

const FORMAT: &str = "atspeed-teacher-beams";
const VERSION: u32 = 1;
/// Seed of the sample subset when `max_samples` caps the file.
const SUBSET_SEED: u64 = 0x7eac;
/// Values hashed per tensor by [`fingerprint`].
const FINGERPRINT_VALUES: usize = 256;
/// Longest header line read: a real one is a few hundred bytes.
const MAX_HEADER: u64 = 64 << 10;
/// Bytes of the smallest record: the sample index and a beam count of 0.
const MIN_RECORD: u64 = 4 + 2;

/// The beams of one training sample.
#[derive(Clone, Debug, PartialEq)]
pub struct TeacherRecord {
    /// Index into `Dataset::train_samples(history, last_only)`.
    pub sample: u32,
    /// Best first (at most K; fewer only when the catalogue has fewer items).
    pub beams: Vec<Identifier>,
    /// The target's log-probability of each beam.
    pub scores: Vec<f32>,
}

/// A teacher file read back by [`read_teacher`].
#[derive(Clone, Debug, PartialEq)]
pub struct TeacherFile {
    pub path: PathBuf,
    /// Folder name of the target that produced the beams.
    pub target: String,
    /// The target's [`fingerprint`].
    pub fingerprint: String,
    /// Dataset folder name.
    pub dataset: String,
    /// Number of training samples of the dataset with these settings (all of them, not only
    /// those in the file), to detect a file made for other data.
    pub train_samples: usize,
    pub history: usize,
    pub last_only: bool,
    /// Beam size K.
    pub k: usize,
    pub records: Vec<TeacherRecord>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    target: String,
    fingerprint: String,
    dataset: String,
    train_samples: usize,
    history: usize,
    last_only: bool,
    k: usize,
    records: usize,
    token_bytes: usize,
    /// Tokens per beam (the identifiers' L); files written before it existed hold 4.
    #[serde(default = "lcrec_levels")]
    levels: usize,
}

fn lcrec_levels() -> usize {
    LCREC_LEVELS
}

/// A short hash identifying a model's weights: FNV-1a over its config (dtype aside), vocabulary,
/// and the first values of every tensor. Computed from the loaded model rather than its files,
/// so it does not depend on where or how the checkpoint is stored.
pub fn fingerprint(llm: &Llm) -> Result<String> {
    let mut h = Fnv::new();
    let mut cfg = llm.config().clone();
    cfg.torch_dtype.clear();
    h.write(&serde_json::to_vec(&cfg).expect("config serialises"));
    for t in &llm.vocab {
        h.write(t.as_bytes());
        h.write(&[0]);
    }
    let mut tensors = llm.model.named_tensors()?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in tensors {
        h.write(name.as_bytes());
        let flat = t.flatten_all()?;
        let n = flat.elem_count().min(FINGERPRINT_VALUES);
        for v in flat
            .narrow(0, 0, n)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?
        {
            h.write(&v.to_le_bytes());
        }
    }
    Ok(format!("{:016x}", h.0))
}

/// 64-bit FNV-1a: tiny, stable across platforms and Rust versions (unlike `DefaultHasher`).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Runs the target's trie-constrained beam search (beam size `k`) on every training sample of
/// `data` (or a deterministic random subset of `max_samples`), and writes the beams to `out`.
pub fn build_teacher(
    target: &Llm,
    data: &Dataset,
    k: usize,
    history: usize,
    last_only: bool,
    max_samples: Option<usize>,
    out: &Path,
) -> Result<()> {
    crate::decode::params::check_k(k)?;
    check_target_vocab(target, data)?;
    let samples = data.train_samples(history, last_only);
    let chosen = subset(samples.len(), max_samples, SUBSET_SEED);
    let token_bytes = if target.vocab.len() <= u16::MAX as usize + 1 {
        2
    } else {
        4
    };
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        target: target.name.clone(),
        fingerprint: fingerprint(target)?,
        dataset: data.name.clone(),
        train_samples: samples.len(),
        history,
        last_only,
        k,
        records: chosen.len(),
        token_bytes,
        levels: data.levels,
    };
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    let mut w = BufWriter::new(tmp);
    let io = |e| Error::io(out, e);
    serde_json::to_writer(&mut w, &header).map_err(|e| Error::io(out, e.into()))?;
    w.write_all(b"\n").map_err(io)?;
    let bar = bar(chosen.len(), &format!("teacher beams K={k}"));
    for &i in &chosen {
        let beams = beam_search(target, &data.trie, &data.prompt(&samples[i].history), k)?;
        write_record(&mut w, i as u32, &beams.beams, token_bytes).map_err(io)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let tmp = w.into_inner().map_err(|e| Error::io(out, e.into_error()))?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(out).map_err(|e| Error::io(out, e.error))?;
    log::info!(
        "wrote {} teacher records to {}",
        chosen.len(),
        out.display()
    );
    Ok(())
}

/// The target must speak the dataset's vocabulary, or its beams mean nothing here.
pub(crate) fn check_target_vocab(target: &Llm, data: &Dataset) -> Result<()> {
    if target.vocab.as_slice() == data.vocab.tokens() {
        return Ok(());
    }
    let path = target
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&target.name));
    Err(Error::model(
        path,
        format!(
            "target vocabulary ({} tokens) differs from dataset {}'s ({} tokens)",
            target.vocab.len(),
            data.name,
            data.vocab.len()
        ),
    ))
}

fn bar(len: usize, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    let style =
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} (eta {eta})")
            .expect("valid template")
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(prefix.to_string());
    bar
}

fn write_record(
    w: &mut impl Write,
    sample: u32,
    beams: &[crate::decode::BeamView],
    token_bytes: usize,
) -> std::io::Result<()> {
    w.write_all(&sample.to_le_bytes())?;
    w.write_all(&(beams.len() as u16).to_le_bytes())?;
    for b in beams {
        for &t in &b.tokens {
            match token_bytes {
                2 => w.write_all(&(t as u16).to_le_bytes())?,
                _ => w.write_all(&t.to_le_bytes())?,
            }
        }
    }
    for b in beams {
        w.write_all(&b.score.to_le_bytes())?;
    }
    Ok(())
}

/// Reads a teacher file, checking that it was made by `expected_target` (same fingerprint).
pub fn read_teacher(path: &Path, expected_target: &Llm) -> Result<TeacherFile> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut r = BufReader::new(file);
    let mut line = String::new();
    (&mut r)
        .take(MAX_HEADER)
        .read_line(&mut line)
        .map_err(|e| Error::io(path, e))?;
    let header: Header = serde_json::from_str(line.trim_end())
        .ok()
        .filter(|h: &Header| h.format == FORMAT)
        .ok_or_else(|| Error::data(path, "not a teacher-beams file (bad header line)"))?;
    if header.version != VERSION || !matches!(header.token_bytes, 2 | 4) {
        return Err(Error::data(
            path,
            format!("unsupported teacher file version {}", header.version),
        ));
    }
    // The header's counts are checked against the file before anything is sized by them.
    let body = len.saturating_sub(line.len() as u64);
    if header.records as u64 > body / MIN_RECORD {
        return Err(Error::data(
            path,
            format!(
                "the header claims {} records, but the {body} bytes after it hold at most {}",
                header.records,
                body / MIN_RECORD
            ),
        ));
    }
    if header.levels == 0 || header.levels > MAX_LEVELS {
        return Err(Error::data(
            path,
            format!(
                "the header's levels = {} is not in 1..={MAX_LEVELS}",
                header.levels
            ),
        ));
    }
    if header.k == 0 || header.k > crate::decode::params::MAX_WIDTH {
        return Err(Error::data(
            path,
            format!(
                "the header's K = {} is not in 1..={}",
                header.k,
                crate::decode::params::MAX_WIDTH
            ),
        ));
    }
    let vocab = expected_target.vocab.len();
    let expected = fingerprint(expected_target)?;
    if header.fingerprint != expected {
        return Err(Error::data(
            path,
            format!(
                "teacher file was made by target '{}' (fingerprint {}), not by '{}' ({}); \
                 rebuild the teacher beams with this target",
                header.target, header.fingerprint, expected_target.name, expected
            ),
        ));
    }
    let mut records = Vec::with_capacity(header.records);
    for n in 0..header.records {
        let rec = read_record(&mut r, header.token_bytes, header.k, header.levels, vocab).map_err(
            |e| {
                Error::data(
                    path,
                    format!(
                        "truncated or corrupt at record {n} of {}: {e}",
                        header.records
                    ),
                )
            },
        )?;
        records.push(rec);
    }
    Ok(TeacherFile {
        path: path.to_path_buf(),
        target: header.target,
        fingerprint: header.fingerprint,
        dataset: header.dataset,
        train_samples: header.train_samples,
        history: header.history,
        last_only: header.last_only,
        k: header.k,
        records,
    })
}

/// One record of beams of at most `k` identifiers of `levels` tokens over a vocabulary of
/// `vocab` ids.
fn read_record(
    r: &mut impl Read,
    token_bytes: usize,
    k: usize,
    levels: usize,
    vocab: usize,
) -> std::io::Result<TeacherRecord> {
    let bad = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidData, msg);
    let sample = u32::from_le_bytes(read_array(r)?);
    let n = u16::from_le_bytes(read_array(r)?) as usize;
    if n > k {
        return Err(bad(format!("{n} beams, more than the header's K = {k}")));
    }
    let mut tokens = Vec::with_capacity(n * levels);
    for _ in 0..n * levels {
        let t = match token_bytes {
            2 => u16::from_le_bytes(read_array(r)?) as u32,
            _ => u32::from_le_bytes(read_array(r)?),
        };
        if t as usize >= vocab {
            return Err(bad(format!(
                "token id {t} outside the target's vocabulary of {vocab}"
            )));
        }
        tokens.push(t);
    }
    let beams = tokens.chunks(levels).filter_map(identifier).collect();
    let scores = (0..n)
        .map(|_| read_array(r).map(f32::from_le_bytes))
        .collect::<std::io::Result<_>>()?;
    Ok(TeacherRecord {
        sample,
        beams,
        scores,
    })
}

fn read_array<const N: usize>(r: &mut impl Read) -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    r.read_exact(&mut buf)?;
    Ok(buf)
}
