//! Per-layer key/value cache that the decoders extend, compact and gather.
//!
//! The speculative loop keeps the target's cache as one flat sequence (batch 1) in which the
//! prompt and every live beam's tokens are entries and the attention mask says which entries a
//! token may see. Compaction after a round (`keep`) drops dead beams' entries so the cache never
//! grows with rejected drafts.
//!
//! Storage is preallocated and written in place: a pass copies only its own keys and values into
//! the buffer (no concatenation of the whole cache per pass, which on a GPU is an allocation and a
//! copy per layer per pass), and attention reads a view of the filled part. The buffer doubles
//! when it runs out.

use candle_core::{Result, Tensor};

/// Entries a fresh buffer holds: a Beauty prompt (82) plus a 120-token tree fits without growth.
const INITIAL_CAPACITY: usize = 256;

#[derive(Debug, Default)]
pub struct KvCache {
    /// Per layer: key and value buffers shaped [batch, kv_heads, capacity, head_dim].
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Filled entries per layer (all equal between passes).
    lens: Vec<usize>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
            lens: vec![0; num_layers],
        }
    }

    /// Cached entries along the sequence axis.
    pub fn len(&self) -> usize {
        self.lens.first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends this pass's keys and values for `layer`, returning views of everything cached
    /// for it (earlier entries first).
    pub(crate) fn extend(
        &mut self,
        layer: usize,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let batch = k.dim(0)?;
        // A different batch shape starts empty (its old entries belong to other rows).
        let same_batch = match &self.layers[layer] {
            Some((kb, _)) => kb.dim(0)? == batch,
            None => false,
        };
        if !same_batch {
            self.lens[layer] = 0;
        }
        let len = self.lens[layer];
        let needed = len + k.dim(2)?;
        let capacity = match &self.layers[layer] {
            Some((kb, _)) if same_batch => kb.dim(2)?,
            _ => 0,
        };
        if needed > capacity {
            let cap = needed.max(INITIAL_CAPACITY).next_power_of_two();
            let alloc = |t: &Tensor| -> Result<Tensor> {
                let (b, h, _, d) = t.dims4()?;
                Tensor::zeros((b, h, cap, d), t.dtype(), t.device())
            };
            let (kb, vb) = (alloc(&k)?, alloc(&v)?);
            if let Some((ok, ov)) = &self.layers[layer] {
                if len > 0 {
                    kb.slice_set(&ok.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                    vb.slice_set(&ov.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                }
            }
            self.layers[layer] = Some((kb, vb));
        }
        let (kb, vb) = self.layers[layer].as_ref().expect("allocated above");
        kb.slice_set(&k.contiguous()?, 2, len)?;
        vb.slice_set(&v.contiguous()?, 2, len)?;
        self.lens[layer] = needed;
        Ok((kb.narrow(2, 0, needed)?, vb.narrow(2, 0, needed)?))
    }

    /// Drops every entry at or after `len`.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        for l in self.lens.iter_mut() {
            *l = (*l).min(len);
        }
        Ok(())
    }

    /// Keeps only the listed entries, in the given order (cache compaction), in place.
    pub fn keep(&mut self, entries: &[u32]) -> Result<()> {
        let unchanged =
            entries.len() == self.len() && entries.iter().enumerate().all(|(i, &e)| i as u32 == e);
        if unchanged {
            return Ok(());
        }
        let mut idx: Option<Tensor> = None;
        for (slot, len) in self.layers.iter_mut().zip(self.lens.iter_mut()) {
            if let Some((kb, vb)) = slot {
                if !entries.is_empty() {
                    // One index upload for all layers.
                    let idx = match &idx {
                        Some(i) => i.clone(),
                        None => idx
                            .insert(Tensor::from_slice(entries, entries.len(), kb.device())?)
                            .clone(),
                    };
                    // The whole buffer is contiguous; the indices all fall in its filled part.
                    let k = kb.index_select(&idx, 2)?;
                    let v = vb.index_select(&idx, 2)?;
                    kb.slice_set(&k, 2, 0)?;
                    vb.slice_set(&v, 2, 0)?;
                }
            }
            *len = entries.len();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn entries(c: &KvCache, layer: usize) -> Vec<f32> {
        let (k, _) = c.layers[layer].as_ref().unwrap();
        k.narrow(2, 0, c.len())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn kv(vals: &[f32]) -> (Tensor, Tensor) {
        let t = Tensor::from_slice(vals, (1, 1, vals.len(), 1), &Device::Cpu).unwrap();
        (t.clone(), t)
    }

    #[test]
    fn extends_grows_compacts_and_truncates_in_place() {
        let mut c = KvCache::new(1);
        let (k, v) = kv(&[1.0, 2.0, 3.0]);
        c.extend(0, k, v).unwrap();
        // Past the initial capacity: the buffer doubles and keeps what it had.
        let many: Vec<f32> = (0..300).map(|i| 10.0 + i as f32).collect();
        let (k, v) = kv(&many);
        let (seen, _) = c.extend(0, k, v).unwrap();
        assert_eq!(seen.dim(2).unwrap(), 303);
        assert_eq!(c.len(), 303);
        assert_eq!(&entries(&c, 0)[..4], &[1.0, 2.0, 3.0, 10.0]);
        c.keep(&[2, 0, 5]).unwrap();
        assert_eq!(entries(&c, 0), vec![3.0, 1.0, 12.0]);
        let (k, v) = kv(&[7.0]);
        let (seen, _) = c.extend(0, k, v).unwrap();
        assert_eq!(
            seen.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![3.0, 1.0, 12.0, 7.0]
        );
        c.truncate(2).unwrap();
        assert_eq!(entries(&c, 0), vec![3.0, 1.0]);
    }
}
