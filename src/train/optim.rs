//! AdamW with global-norm clipping and a warm-up + cosine learning-rate schedule.
//!
//! candle-nn's `AdamW` keeps its moments private (so a resumed run would restart them from zero)
//! and decays every tensor; this one saves and restores its moments and, as is usual for LLaMA
//! training, does not decay the 1-D RMSNorm gains.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};

use super::weights::Weights;
use crate::{Error, Result};

/// File of the optimizer moments inside a checkpoint folder.
pub const MOMENTS_FILE: &str = "optimizer.safetensors";

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

pub(crate) struct AdamW {
    slots: Vec<Slot>,
    /// Updates applied so far (bias correction).
    pub t: usize,
    weight_decay: f64,
}

impl AdamW {
    pub fn new(w: &Weights, weight_decay: f64) -> Result<Self> {
        let slots = w
            .sorted_vars()
            .into_iter()
            .map(|(name, var)| {
                let m = var.as_tensor().zeros_like()?;
                let v = m.clone();
                let decay = var.rank() > 1;
                Ok(Slot {
                    name,
                    var,
                    m,
                    v,
                    decay,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW {
            slots,
            t: 0,
            weight_decay,
        })
    }

    /// Clips the gradients to global norm `clip` (0 = off), applies one update at learning rate
    /// `lr`, and returns the gradient norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr: f64, clip: f64) -> Result<f64> {
        let norm = global_norm(grads, self.slots.iter().map(|s| &s.var))?;
        let scale = if clip > 0.0 && norm > clip {
            clip / norm
        } else {
            1.0
        };
        self.t += 1;
        let bias1 = 1.0 - BETA1.powi(self.t as i32);
        let bias2 = 1.0 - BETA2.powi(self.t as i32);
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let g = (g.detach() * scale)?;
            s.m = ((&s.m * BETA1)? + (&g * (1.0 - BETA1))?)?;
            s.v = ((&s.v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
            let update = ((&s.m / bias1)? / ((&s.v / bias2)?.sqrt()? + EPS)?)?;
            let theta = s.var.as_tensor().detach();
            let theta = if s.decay {
                (theta * (1.0 - lr * self.weight_decay))?
            } else {
                theta
            };
            s.var.set(&(theta - (update * lr)?)?)?;
        }
        Ok(norm)
    }

    /// Writes the moments (as `m.<name>` / `v.<name>`) to `dir/optimizer.safetensors`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut map = HashMap::new();
        for s in &self.slots {
            map.insert(format!("m.{}", s.name), s.m.to_device(&Device::Cpu)?);
            map.insert(format!("v.{}", s.name), s.v.to_device(&Device::Cpu)?);
        }
        let path = dir.join(MOMENTS_FILE);
        candle_core::safetensors::save(&map, &path).map_err(|e| Error::model(&path, e.to_string()))
    }

    /// Restores moments written by [`AdamW::save`] and the update count `t`.
    pub fn load(&mut self, dir: &Path, t: usize) -> Result<()> {
        let path = dir.join(MOMENTS_FILE);
        let device = self.slots.first().map(|s| s.var.device().clone());
        let Some(device) = device else { return Ok(()) };
        let mut map = candle_core::safetensors::load(&path, &device)
            .map_err(|e| Error::model(&path, format!("unreadable optimizer state: {e}")))?;
        for s in &mut self.slots {
            let mut take = |key: String| {
                map.remove(&key)
                    .filter(|t| t.dims() == s.var.dims())
                    .ok_or_else(|| Error::model(&path, format!("missing or misshapen {key}")))
            };
            s.m = take(format!("m.{}", s.name))?;
            s.v = take(format!("v.{}", s.name))?;
        }
        self.t = t;
        Ok(())
    }
}

/// L2 norm of all gradients together, read back with one device synchronisation.
fn global_norm<'a>(grads: &GradStore, vars: impl Iterator<Item = &'a Var>) -> Result<f64> {
    let squares: Vec<Tensor> = vars
        .filter_map(|v| grads.get(v.as_tensor()))
        .map(|g| g.sqr()?.sum_all())
        .collect::<candle_core::Result<_>>()?;
    if squares.is_empty() {
        return Ok(0.0);
    }
    let total = Tensor::stack(&squares, 0)?.sum_all()?.to_scalar::<f32>()?;
    Ok((total as f64).sqrt())
}

/// Learning rate at optimizer step `step` (0-based): linear warm-up from `peak / warmup` to
/// `peak` over `warmup` steps, then cosine decay to `peak * min_ratio` at `total` steps.
pub fn lr_at(step: usize, peak: f64, warmup: usize, total: usize, min_ratio: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    let floor = peak * min_ratio;
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((lr_at(0, 1.0, 4, 10, 0.1) - 0.25).abs() < 1e-12);
        assert!((lr_at(3, 1.0, 4, 10, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_at(4, 1.0, 4, 10, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_at(7, 1.0, 4, 10, 0.1) - 0.55).abs() < 1e-12);
        assert!((lr_at(10, 1.0, 4, 10, 0.1) - 0.1).abs() < 1e-12);
        assert!((lr_at(50, 1.0, 0, 10, 0.0)).abs() < 1e-12);
    }

    #[test]
    fn clipping_bounds_the_update_norm() {
        let x = Var::new(&[3.0f32, 4.0], &Device::Cpu).unwrap();
        let loss = (x.as_tensor() * 1.0).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let norm = global_norm(&grads, [&x].into_iter()).unwrap();
        assert!((norm - 2f64.sqrt()).abs() < 1e-6);
    }
}
