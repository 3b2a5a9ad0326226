//! Shared helpers for integration tests: tiny random catalogues and models.
#![allow(dead_code)]

use atspeed::model::{KvCache, Llm, ModelConfig};
use atspeed::synth::{self, Catalogue};
use candle_core::Device;

pub fn catalogue(seed: u64) -> Catalogue {
    synth::catalogue([6, 8, 8, 8], 120, seed)
}

/// A small random model over the catalogue's vocabulary. std 0.15 makes the distributions
/// peaked, so float near-ties between two kernels are rare.
pub fn model(cat: &Catalogue, layers: usize, hidden: usize, seed: u64) -> Llm {
    let cfg = ModelConfig::compact(cat.vocab.len(), layers, hidden, 4, 2);
    Llm::random(&cfg, cat.vocab.tokens().to_vec(), 0.15, seed, &Device::Cpu).unwrap()
}

/// Log-probs after running `tokens` as one plain causal sequence (no tree, no cache reuse).
pub fn plain_last_logp(llm: &Llm, tokens: &[u32]) -> Vec<f32> {
    let t = tokens.len();
    let mask = atspeed::model::causal_mask(t);
    let pos: Vec<u32> = (0..t as u32).collect();
    let mut cache = KvCache::new(llm.config().num_hidden_layers);
    let lp = llm
        .log_probs(tokens, &pos, &mask, &mut cache, &[t as u32 - 1])
        .unwrap();
    lp.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Raw logits at the prompt's last position, through the plain (non-tree) forward pass.
pub fn last_logits(m: &Llm, prompt: &[u32]) -> Vec<f32> {
    let t = prompt.len();
    let mask = atspeed::model::causal_mask(t);
    let pos: Vec<u32> = (0..t as u32).collect();
    let dev = m.device();
    let tok = candle_core::Tensor::from_slice(prompt, (1, t), dev).unwrap();
    let pos_t = candle_core::Tensor::from_slice(&pos, (1, t), dev).unwrap();
    let mask_t = candle_core::Tensor::from_slice(&mask, (1, t, t), dev).unwrap();
    let rotary = m.model.rotary(&pos_t).unwrap();
    let mut cache = KvCache::new(m.config().num_hidden_layers);
    let hidden = m
        .model
        .hidden(&tok, &rotary, &mask_t, Some(&mut cache), false)
        .unwrap();
    let last = hidden.squeeze(0).unwrap().narrow(0, t - 1, 1).unwrap();
    m.model
        .logits(&last)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}
