//! Training batches in tree layout.
//!
//! A sample is scored on several identifiers at once (the ground truth and up to K teacher or
//! draft beams), and they share the prompt and many prefixes. Each batch row therefore holds the
//! prompt once, followed by every distinct identifier prefix of length 1..L-1 as a tree node
//! (the last identifier token is only ever predicted, never fed). A node attends to the prompt,
//! its ancestors and itself, and sits at position `prompt_len - 1 + depth`, exactly as in
//! speculative verification, so one pass yields the next-token logits of every
//! sequence at every level. Plain target training is the special case of one sequence per row.
//!
//! Rows have different lengths (users with fewer than H history items, different trees), so they
//! are left-padded with PAD; position ids count from the first real token; the additive mask
//! `[b, t, t]` hides pad keys, and a pad query row sees only itself so its softmax stays finite.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::losses;
use crate::ids::{Identifier, PAD};
use crate::model::Llama;
use crate::{Error, Result};

/// Additive mask value of a hidden key.
const HIDDEN: f32 = f32::NEG_INFINITY;

/// One sample to score: its prompt and the identifiers for each loss term.
#[derive(Clone, Debug)]
pub(crate) struct Example {
    pub prompt: Vec<u32>,
    /// Identifiers scored by the recommendation loss (the ground truth).
    pub rec: Vec<Identifier>,
    /// Identifiers scored by the alignment loss (ground truth, teacher or draft beams).
    pub align: Vec<Identifier>,
}

/// Where to read the logits of a set of sequences: for each level l (L of them, the
/// identifiers' length), one entry per (sample, sequence) in batch order, with the same count at
/// every level.
#[derive(Clone, Debug, Default)]
pub(crate) struct Group {
    /// Flat index (`row * width + column`) of the hidden state that predicts level l.
    pub rows: Vec<Vec<u32>>,
    /// The sequence's token at level l (a vocabulary id).
    pub labels: Vec<Vec<u32>>,
}

impl Group {
    /// Sequences in the group (entries per level).
    pub fn len(&self) -> usize {
        self.rows.first().map_or(0, Vec::len)
    }
    /// Levels of the group's identifiers (0 when empty).
    pub fn levels(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(crate) struct TreeBatch {
    /// [b, width] u32.
    pub tokens: Tensor,
    /// [b, width] u32.
    pub positions: Tensor,
    /// [b, width, width] f32, additive.
    pub mask: Tensor,
    pub rec: Group,
    pub align: Group,
    /// Highest position id used, to check against the model's `max_position_embeddings`.
    pub max_position: u32,
}

/// One row before padding.
struct Layout {
    tokens: Vec<u32>,
    positions: Vec<u32>,
    /// Parent index of each entry (prompt tokens: the previous one, depth-1 nodes: the last
    /// prompt token), `None` for the first token.
    parent: Vec<Option<usize>>,
    prompt_len: usize,
    /// Identifier prefix (length 1..L-1) -> entry index.
    nodes: HashMap<Vec<u32>, usize>,
}

impl Layout {
    fn new(ex: &Example) -> Self {
        let p = ex.prompt.len();
        let mut l = Layout {
            tokens: ex.prompt.clone(),
            positions: (0..p as u32).collect(),
            parent: (0..p).map(|i| i.checked_sub(1)).collect(),
            prompt_len: p,
            nodes: HashMap::new(),
        };
        for id in ex.rec.iter().chain(&ex.align) {
            l.insert(id);
        }
        l
    }

    /// Adds the nodes of `id`'s prefixes that are not in the tree yet.
    fn insert(&mut self, id: &Identifier) {
        for depth in 1..id.len() {
            let key = id[..depth].to_vec();
            if self.nodes.contains_key(&key) {
                continue;
            }
            let parent = self.entry(&id[..depth - 1]);
            self.nodes.insert(key, self.tokens.len());
            self.tokens.push(id[depth - 1]);
            self.positions.push((self.prompt_len - 1 + depth) as u32);
            self.parent.push(Some(parent));
        }
    }

    /// Entry whose hidden state predicts the token after `prefix` (the last prompt token for
    /// the empty prefix).
    fn entry(&self, prefix: &[u32]) -> usize {
        if prefix.is_empty() {
            self.prompt_len - 1
        } else {
            self.nodes[prefix]
        }
    }

    /// Keys visible to entry `i`: for a prompt token the prompt up to itself, for a node the
    /// whole prompt plus its ancestors and itself.
    fn visible(&self, i: usize) -> Vec<usize> {
        if i < self.prompt_len {
            return (0..=i).collect();
        }
        let mut keys: Vec<usize> = (0..self.prompt_len).collect();
        let mut cur = Some(i);
        while let Some(c) = cur.filter(|&c| c >= self.prompt_len) {
            keys.push(c);
            cur = self.parent[c];
        }
        keys
    }
}

impl TreeBatch {
    /// Lays out `examples` (every prompt non-empty) on `device`.
    pub fn new(examples: &[Example], device: &Device) -> Result<Self> {
        let layouts: Vec<Layout> = examples.iter().map(Layout::new).collect();
        let b = layouts.len();
        let width = layouts.iter().map(|l| l.tokens.len()).max().unwrap_or(1);
        let mut tokens = vec![PAD; b * width];
        let mut positions = vec![0u32; b * width];
        let mut mask = vec![HIDDEN; b * width * width];
        let (mut rec, mut align) = (Group::default(), Group::default());
        for (r, (layout, ex)) in layouts.iter().zip(examples).enumerate() {
            let offset = width - layout.tokens.len();
            let row = r * width;
            tokens[row + offset..row + width].copy_from_slice(&layout.tokens);
            positions[row + offset..row + width].copy_from_slice(&layout.positions);
            fill_mask(
                &mut mask[row * width..(row + width) * width],
                layout,
                width,
                offset,
            );
            let flat = |entry: usize| (row + offset + entry) as u32;
            push_group(&mut rec, &ex.rec, layout, flat);
            push_group(&mut align, &ex.align, layout, flat);
        }
        let max_position = positions.iter().copied().max().unwrap_or(0);
        Ok(TreeBatch {
            tokens: Tensor::from_vec(tokens, (b, width), device)?,
            positions: Tensor::from_vec(positions, (b, width), device)?,
            mask: Tensor::from_vec(mask, (b, width, width), device)?,
            rec,
            align,
            max_position,
        })
    }
}

impl TreeBatch {
    /// Hidden states of every entry under `model`, flattened to `[b * width, hidden]`. The
    /// batch moves to the model's device, so a frozen target may live elsewhere.
    pub fn hidden(&self, model: &Llama, differentiable: bool) -> Result<Tensor> {
        let max = model.config().max_position_embeddings as u32;
        if self.max_position >= max {
            return Err(Error::invalid(
                "history",
                format!(
                    "position {} exceeds the model's max_position_embeddings {max}",
                    self.max_position
                ),
            ));
        }
        let dev = model.device();
        let positions = self.positions.to_device(dev)?;
        let rotary = model.rotary(&positions)?;
        let tokens = self.tokens.to_device(dev)?;
        let mask = self.mask.to_device(dev)?;
        let h = model.hidden(&tokens, &rotary, &mask, None, differentiable)?;
        let (b, t, d) = h.dims3()?;
        Ok(h.reshape((b * t, d))?)
    }

    /// Full-vocabulary logits `[rows, vocab]` at the flat entries `rows` of `hidden`.
    pub fn logits(model: &Llama, hidden: &Tensor, rows: &[u32]) -> Result<Tensor> {
        let idx = Tensor::from_slice(rows, rows.len(), hidden.device())?;
        Ok(model.logits(&hidden.index_select(&idx, 0)?)?)
    }

    /// L_rec of the `rec` group: full-vocabulary cross-entropy, averaged over levels.
    pub fn rec_loss(&self, model: &Llama, hidden: &Tensor) -> Result<Tensor> {
        let levels = self.rec.levels();
        let mut total: Option<Tensor> = None;
        for l in 0..levels {
            let logits = Self::logits(model, hidden, &self.rec.rows[l])?;
            let labels = Tensor::from_slice(&self.rec.labels[l], self.rec.len(), hidden.device())?;
            let loss = losses::rec_loss(&logits, &labels)?;
            total = Some(match total {
                Some(t) => (t + loss)?,
                None => loss,
            });
        }
        let total = total.ok_or_else(|| Error::Failed("a batch without identifiers".into()))?;
        Ok((total / levels as f64)?)
    }
}

/// Mask block `[width, width]` of one row: pad queries see themselves, real ones their keys.
fn fill_mask(block: &mut [f32], layout: &Layout, width: usize, offset: usize) {
    for q in 0..offset {
        block[q * width + q] = 0.0;
    }
    for i in 0..layout.tokens.len() {
        let q = offset + i;
        for k in layout.visible(i) {
            block[q * width + offset + k] = 0.0;
        }
    }
}

fn push_group(g: &mut Group, ids: &[Identifier], layout: &Layout, flat: impl Fn(usize) -> u32) {
    for id in ids {
        if g.rows.len() < id.len() {
            g.rows.resize(id.len(), Vec::new());
            g.labels.resize(id.len(), Vec::new());
        }
        for l in 0..id.len() {
            g.rows[l].push(flat(layout.entry(&id[..l])));
            g.labels[l].push(id[l]);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::decode::beam_search;
    use crate::model::{Llm, ModelConfig};
    use crate::synth;

    fn ex(prompt: &[u32], rec: &[Identifier], align: &[Identifier]) -> Example {
        Example {
            prompt: prompt.to_vec(),
            rec: rec.to_vec(),
            align: align.to_vec(),
        }
    }

    #[test]
    fn shares_prefixes_and_left_pads() {
        let a = Identifier::from([10, 20, 30, 40]);
        let b = Identifier::from([10, 21, 31, 41]);
        let batch = TreeBatch::new(
            &[ex(&[1, 5, 3], &[a], &[a, b]), ex(&[1, 3], &[b], &[])],
            &Device::Cpu,
        )
        .unwrap();
        // Row 0: prompt 3 + nodes {10, 10-20, 10-20-30, 10-21, 10-21-31} = 8 entries.
        let toks = batch.tokens.to_vec2::<u32>().unwrap();
        assert_eq!(toks[0], vec![1, 5, 3, 10, 20, 30, 21, 31]);
        assert_eq!(toks[1], vec![PAD, PAD, PAD, 1, 3, 10, 21, 31]);
        let pos = batch.positions.to_vec2::<u32>().unwrap();
        assert_eq!(pos[0], vec![0, 1, 2, 3, 4, 5, 4, 5]);
        assert_eq!(pos[1], vec![0, 0, 0, 0, 1, 2, 3, 4]);
        // Level 0 of every sequence reads the last prompt token; level 3 of a reads 10-20-30.
        assert_eq!(batch.rec.rows[0], vec![2, 8 + 4]);
        assert_eq!(batch.rec.rows[3], vec![5, 8 + 7]);
        assert_eq!(batch.align.rows[2], vec![4, 6]);
        assert_eq!(batch.align.labels[1], vec![20, 21]);
        let mask = batch.mask.to_vec3::<f32>().unwrap();
        // Node 10-21 (col 6) sees the prompt, 10 and itself, not 10-20 or 10-20-30.
        let seen: Vec<usize> = (0..8).filter(|&k| mask[0][6][k] == 0.0).collect();
        assert_eq!(seen, vec![0, 1, 2, 3, 6]);
        // Pad rows see only themselves; real rows never see pads.
        let pad: Vec<usize> = (0..8).filter(|&k| mask[1][1][k] == 0.0).collect();
        assert_eq!(pad, vec![1]);
        assert!((0..3).all(|k| mask[1][5][k] == HIDDEN));
        assert_eq!(batch.max_position, 5);
    }

    /// Sum of the batch's full-vocabulary log-probs along each `align` sequence of row `r`.
    fn sequence_scores(llm: &Llm, batch: &TreeBatch, differentiable: bool) -> Vec<f32> {
        let hidden = batch.hidden(&llm.model, differentiable).unwrap();
        let mut scores = vec![0.0f32; batch.align.len()];
        for l in 0..batch.align.levels() {
            let logits = TreeBatch::logits(&llm.model, &hidden, &batch.align.rows[l]).unwrap();
            let lp = candle_nn::ops::log_softmax(&logits, 1).unwrap();
            let lp = lp.to_vec2::<f32>().unwrap();
            for (i, s) in scores.iter_mut().enumerate() {
                *s += lp[i][batch.align.labels[l][i] as usize];
            }
        }
        scores
    }

    /// The padded tree batch (both forward paths) reproduces beam search's scores, which come
    /// from the KV-cached inference path: positions, masks and padding are right.
    #[test]
    fn tree_batch_matches_beam_search_scores() {
        let cat = synth::catalogue([5, 6, 6, 6], 80, 3);
        let cfg = ModelConfig::compact(cat.vocab.len(), 2, 32, 4, 2);
        let llm = Llm::random(&cfg, cat.vocab.tokens().to_vec(), 0.15, 9, &Device::Cpu).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let prompts = [
            synth::prompt(&cat, 2, &mut rng),
            synth::prompt(&cat, 7, &mut rng),
        ];
        let mut examples = Vec::new();
        let mut want = Vec::new();
        for p in &prompts {
            let out = beam_search(&llm, &cat.trie, p, 6).unwrap();
            let ids: Vec<Identifier> = out
                .beams
                .iter()
                .map(|b| Identifier::new(&b.tokens).unwrap())
                .collect();
            want.extend(out.beams.iter().map(|b| b.score));
            examples.push(ex(p, &ids[..1], &ids));
        }
        let batch = TreeBatch::new(&examples, &Device::Cpu).unwrap();
        for differentiable in [false, true] {
            let got = sequence_scores(&llm, &batch, differentiable);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "{differentiable}: {g} vs {w}");
            }
        }
    }
}
