//! Loading what a command runs on: a dataset and checkpoints placed on a device, checked against
//! each other, and the draft models found beside a target.
//!
//! Every entry point (the command line, the explorer, tests) loads through here, so no model
//! reaches the decoder without its dataset mapped into its token space, and no draft without
//! the check that it sees that space as the target does.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::data::Dataset;
use crate::model::{checkpoint, Llm, LoadOptions, PromptStyle};
use crate::space::{SpaceOptions, TokenSpace};
use crate::{Error, Result};

/// Checks an output path before any work (see [`crate::atomic`]'s rules): an existing model
/// folder is replaced only with `force`, a folder of other things never; an existing file only
/// with `force`.
pub use crate::atomic::{check_out_dir, check_out_file};

/// Where and in which dtype models run, and with which prompt style.
#[derive(Clone, Debug)]
pub struct Placement {
    pub device: Device,
    /// `None`: each checkpoint's stored dtype.
    pub dtype: Option<DType>,
    /// Overrides the prompt style detected from each checkpoint.
    pub prompt: Option<PromptStyle>,
    /// The recommender profile, tokenizer rules and fixed-token scoring (detected or the
    /// profile's when unset).
    pub space: SpaceOptions,
}

impl Placement {
    /// `device` as `cpu`, `cuda` or `cuda:N`; `dtype` as `f32`, `f16`, `bf16` or `auto`.
    pub fn parse(device: &str, dtype: &str) -> Result<Placement> {
        Ok(Placement {
            device: crate::device::parse_device(device)?,
            dtype: checkpoint::parse_dtype_or_auto(dtype)?,
            prompt: None,
            space: SpaceOptions::default(),
        })
    }

    /// The CPU in f32: the reference every other placement is checked against.
    pub fn cpu_f32() -> Placement {
        Placement {
            device: Device::Cpu,
            dtype: Some(DType::F32),
            prompt: None,
            space: SpaceOptions::default(),
        }
    }

    fn options(&self, base: Option<&Path>) -> LoadOptions {
        LoadOptions {
            device: self.device.clone(),
            dtype: self.dtype,
            base: base.map(Path::to_path_buf),
            prompt: self.prompt,
            tokenizer_rules: self.space.rules,
        }
    }
}

/// Loads a checkpoint (or an adapter over `base`) as placed.
pub fn load_model(dir: &Path, base: Option<&Path>, at: &Placement) -> Result<Llm> {
    let t = std::time::Instant::now();
    let m = Llm::load_with(dir, &at.options(base))?;
    log::info!(
        "loaded {} ({} {} {:?}, {} prompt) in {:.2} s",
        dir.display(),
        m.config().model_type,
        m.describe(),
        m.model.dtype(),
        m.style.name(),
        t.elapsed().as_secs_f64()
    );
    Ok(m)
}

/// Loads the target and maps the dataset into its token space.
pub fn load_target(
    dir: &Path,
    base: Option<&Path>,
    data: &Dataset,
    at: &Placement,
) -> Result<(Llm, TokenSpace)> {
    let m = load_model(dir, base, at)?;
    let space = TokenSpace::with_options(data, &m, &at.space)?;
    log::info!(
        "{}: profile {} ({}), tokenizer rules {}",
        dir.display(),
        space.profile.name,
        space.profile_why,
        space.tokenizer().rules.name()
    );
    for n in &space.notes {
        log::info!("{}: {n}", dir.display());
    }
    if let Some(c) = crate::decode::ScoreTolerance::caveat(m.model.dtype()) {
        log::info!("{}: {c}", dir.display());
    }
    Ok((m, space))
}

/// Loads a draft and checks it sees the dataset as the target does (same code token ids, same
/// prompts).
pub fn load_draft(
    dir: &Path,
    base: Option<&Path>,
    data: &Dataset,
    at: &Placement,
    target: &TokenSpace,
) -> Result<Llm> {
    let m = load_model(dir, base, at)?;
    target.check_draft(&target.for_draft(data, &m)?, data)?;
    Ok(m)
}

/// Loads a model for training, which runs on the compact prompt only: its vocabulary must be
/// the dataset's, token for token.
pub fn load_compact(dir: &Path, data: &Dataset, at: &Placement) -> Result<Llm> {
    let m = load_model(dir, None, at)?;
    if m.style != PromptStyle::Compact {
        return Err(Error::model(
            dir,
            "is a reference-style checkpoint: training (train, teacher, align) runs on compact-prompt models only",
        ));
    }
    crate::space::check_vocab(&m, data)?;
    Ok(m)
}

/// A name and a path from `NAME=PATH`, or from a bare `PATH` (named after its last component).
/// An empty name or path is an error naming `what`.
pub fn parse_named(spec: &str, what: &str) -> Result<(String, PathBuf)> {
    let (name, path) = match spec.split_once('=') {
        Some((n, d)) => (n.trim().to_string(), PathBuf::from(d)),
        None => {
            let p = PathBuf::from(spec);
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, p)
        }
    };
    if name.is_empty() || path.as_os_str().is_empty() {
        return Err(Error::invalid(
            what,
            format!(
                "{} is not NAME=PATH with a non-empty name and path",
                crate::text::quoted(spec, 60)
            ),
        ));
    }
    Ok((name, path))
}

/// The draft models beside a target: every checkpoint folder in `models` except `target`,
/// named after its folder. The strict-aligned draft comes first (the explorer opens in strict
/// mode), then the relaxed-aligned one, then the rest by name.
pub fn discover_drafts(models: &Path, target: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = std::fs::read_dir(models).map_err(|e| Error::io(models, e))?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            (p.join(checkpoint::CONFIG).is_file() || crate::model::lora::is_adapter(p))
                && !same(p, target)
        })
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, p)
        })
        .collect();
    found.sort_by_key(|(name, _)| (name != "atspeed-s", name != "atspeed-r", name.clone()));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_paths() {
        assert_eq!(
            parse_named("s=a/b", "draft").unwrap(),
            ("s".to_string(), PathBuf::from("a/b"))
        );
        assert_eq!(
            parse_named("models/atspeed-s", "draft").unwrap().0,
            "atspeed-s"
        );
        for bad in ["=dir", "name=", "", "  =x"] {
            let e = parse_named(bad, "draft").unwrap_err().to_string();
            assert!(e.starts_with("draft"), "{e}");
        }
    }

    #[test]
    fn drafts_are_found_beside_the_target_in_a_stable_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["sft", "target", "atspeed-r", "atspeed-s", "notes"] {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            if name != "notes" {
                std::fs::write(d.join(checkpoint::CONFIG), "{}").unwrap();
            }
        }
        let found = discover_drafts(dir.path(), &dir.path().join("target")).unwrap();
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["atspeed-s", "atspeed-r", "sft"]);
    }
}
