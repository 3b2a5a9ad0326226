//! Per-layer key/value cache that the decoders extend, compact and gather.
//!
//! The speculative loop keeps the target's cache as one flat sequence (batch 1) in which the
//! prompt and every live beam's tokens are entries and the attention mask says which entries a
//! token may see. Compaction after a round (`keep`) drops dead beams' entries so the cache never
//! grows with rejected drafts. Batched beam layouts (one row per beam) are supported as well
//! through `select_rows`.

use candle_core::{Result, Tensor};

#[derive(Clone, Debug, Default)]
pub struct KvCache {
    /// Per layer: keys and values shaped [batch, kv_heads, seq, head_dim].
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
        }
    }

    /// Cached entries along the sequence axis.
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some((k, _))) => k.dim(2).unwrap_or(0),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        for l in &mut self.layers {
            *l = None;
        }
    }

    /// Appends this pass's keys and values for `layer`, returning the full tensors to attend to.
    pub(crate) fn extend(
        &mut self,
        layer: usize,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let slot = &mut self.layers[layer];
        let (k, v) = match slot.take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
        };
        *slot = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Drops every entry at or after `len`.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        for (k, v) in self.layers.iter_mut().flatten() {
            let n = len.min(k.dim(2)?);
            *k = k.narrow(2, 0, n)?;
            *v = v.narrow(2, 0, n)?;
        }
        Ok(())
    }

    /// Keeps only the listed sequence entries, in the given order (cache compaction).
    pub fn keep(&mut self, entries: &[u32]) -> Result<()> {
        if entries.len() == self.len() && entries.iter().enumerate().all(|(i, &e)| i as u32 == e) {
            return Ok(());
        }
        for (k, v) in self.layers.iter_mut().flatten() {
            let idx = Tensor::from_slice(entries, entries.len(), k.device())?;
            *k = k.index_select(&idx, 2)?;
            *v = v.index_select(&idx, 2)?;
        }
        Ok(())
    }

    /// Gathers batch rows (beam reordering in a one-row-per-beam layout).
    pub fn select_rows(&mut self, rows: &[u32]) -> Result<()> {
        for (k, v) in self.layers.iter_mut().flatten() {
            let idx = Tensor::from_slice(rows, rows.len(), k.device())?;
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        Ok(())
    }
}
