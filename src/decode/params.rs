//! The decoding parameters: verification mode, drafted width N, beam size K, drafted depth gamma
//! and the adaptive width. One type, [`DecodeParams`], carries them through the CLI, the bench and
//! its tuner, the explorer, sessions and traces, so a setting cannot be dropped on the way.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How drafted steps are verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Top-K verification: lossless, output equals the target's own beam search.
    #[default]
    Strict,
    /// Sampling verification (accept if u <= p/q): approximately distribution-preserving.
    Relaxed,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::Relaxed => "relaxed",
        }
    }

    pub fn other(self) -> Mode {
        match self {
            Mode::Strict => Mode::Relaxed,
            Mode::Relaxed => Mode::Strict,
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "strict" => Ok(Mode::Strict),
            "relaxed" => Ok(Mode::Relaxed),
            _ => Err(Error::invalid(
                "mode",
                format!("unknown mode {s:?} (expected strict or relaxed)"),
            )),
        }
    }
}

/// Largest N or K accepted anywhere. Far beyond any useful setting (the paper uses N = 40), and
/// small enough that a decode stays cheap: the tree pass's mask and attention grow with the
/// square of the width. Measured on the 2-core CPU with the shipped Beauty models, one user at
/// K = 1024 takes 1.4 s and 120 MB target-only, 5 s and 250 MB speculatively at N = 1024; at
/// 4096 it was 24 s and 1.2 GB, and 85 s and 2.9 GB.
pub const MAX_WIDTH: usize = 1024;

/// Width, beam size, depth and verification rule of one decode.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodeParams {
    pub mode: Mode,
    /// Drafted beams per depth (N >= K).
    pub n: usize,
    /// Beam size: the number of recommendations. (Bench configurations, which hold several K,
    /// written before this field existed read back with K = 1 here.)
    #[serde(default = "one")]
    pub k: usize,
    /// Drafted steps per round at most.
    pub gamma: usize,
    /// Adaptive draft width (strict mode): at each drafted depth keep the draft's best beams
    /// only until they hold this share of its probability mass over the candidates (at least K,
    /// at most N). A confident draft then sends a smaller tree to the target; the verification
    /// rule, and so the output, is unchanged. `None` drafts N beams at every depth.
    #[serde(default)]
    pub draft_mass: Option<f32>,
}

fn one() -> usize {
    1
}

impl Default for DecodeParams {
    /// The paper's setting: strict, N = 40, K = 20, gamma = 3.
    fn default() -> Self {
        DecodeParams {
            mode: Mode::Strict,
            n: 40,
            k: 20,
            gamma: 3,
            draft_mass: None,
        }
    }
}

impl DecodeParams {
    /// The same parameters with another beam size (N follows when it would fall below K).
    pub fn with_k(self, k: usize) -> Self {
        DecodeParams {
            k,
            n: self.n.max(k),
            ..self
        }
    }

    /// Checks the parameters; errors name the parameter (`k`, `n`, `gamma`, `draft_mass`).
    pub fn validate(&self) -> Result<()> {
        check_k(self.k)?;
        if self.n < self.k {
            return Err(Error::invalid(
                "n",
                format!(
                    "N = {} drafted beams cannot cover K = {} (N must be >= K)",
                    self.n, self.k
                ),
            ));
        }
        if self.n > MAX_WIDTH {
            return Err(Error::invalid(
                "n",
                format!("N = {} is more than {MAX_WIDTH} drafted beams", self.n),
            ));
        }
        // Deeper than L - 1 drafts the same as L - 1 (the target always takes the last step);
        // the cap only keeps absurd values out.
        if self.gamma == 0 {
            return Err(Error::invalid(
                "gamma",
                "gamma = 0 drafted steps per round: must be at least 1 (a round uses at most L - 1: the target always takes an identifier's last token)",
            ));
        }
        if self.gamma > MAX_WIDTH {
            return Err(Error::invalid(
                "gamma",
                format!(
                    "gamma = {} is more than {MAX_WIDTH} drafted steps per round (a round uses at most L - 1 of them, 3 for 4-token identifiers)",
                    self.gamma
                ),
            ));
        }
        if let Some(m) = self.draft_mass {
            if self.mode == Mode::Relaxed {
                return Err(Error::invalid(
                    "draft_mass",
                    "adaptive width applies to strict mode (relaxed drafts are sampled)",
                ));
            }
            if !(m > 0.0 && m <= 1.0) {
                return Err(Error::invalid(
                    "draft_mass",
                    format!("{m} is not a probability mass in (0, 1]"),
                ));
            }
        }
        Ok(())
    }
}

/// Checks a beam size K on its own (target-only search has no N or gamma).
pub fn check_k(k: usize) -> Result<()> {
    if k == 0 {
        return Err(Error::invalid("k", "beam size K must be at least 1"));
    }
    if k > MAX_WIDTH {
        return Err(Error::invalid(
            "k",
            format!("beam size K = {k} is more than {MAX_WIDTH}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_parameter() {
        let ok = DecodeParams::default();
        assert!(ok.validate().is_ok());
        let err = |p: DecodeParams| match p.validate().unwrap_err() {
            Error::Invalid { what, .. } => what,
            e => panic!("{e}"),
        };
        assert_eq!(err(DecodeParams { k: 0, ..ok }), "k");
        assert_eq!(err(DecodeParams { n: 3, ..ok }), "n");
        assert_eq!(err(DecodeParams { n: 1 << 40, ..ok }), "n");
        assert_eq!(err(DecodeParams { gamma: 0, ..ok }), "gamma");
        assert!(DecodeParams { gamma: 7, ..ok }.validate().is_ok());
        let relaxed = DecodeParams {
            mode: Mode::Relaxed,
            draft_mass: Some(0.9),
            ..ok
        };
        assert_eq!(err(relaxed), "draft_mass");
        assert_eq!(
            err(DecodeParams {
                draft_mass: Some(f32::NAN),
                ..ok
            }),
            "draft_mass"
        );
        assert_eq!(ok.with_k(60).n, 60);
    }
}
