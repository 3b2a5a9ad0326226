//! Random checkpoints of any size, written tensor by tensor: `atspeed new-model` makes a 7B-shaped
//! LLaMA in bf16 (13.5 GB) on a machine that could not hold it in f32, for measuring the engine at
//! LLM scale. Values are the ones [`super::Llm::random`] draws (the same sequence, normal with
//! the given std, unit norms, zero biases), rounded to the stored dtype.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::DType;
use half::{bf16, f16};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use super::checkpoint::{self, CONFIG, TOKENIZER, WEIGHTS, WEIGHTS_INDEX};
use super::config::ModelConfig;
use super::tensor_shapes;
use super::tokenizer::tokenizer_json;
use crate::{Error, Result};

/// Largest shard written (Hugging Face's usual 5 GB shards would need that much memory here).
const SHARD_BYTES: usize = 2 << 30;
/// Largest model written: 200B parameters (a 70B LLaMA has 70B); each tensor at most 4 GB.
pub const MAX_PARAMS: usize = 200_000_000_000;
const MAX_TENSOR_BYTES: usize = 4 << 30;

/// Writes a random checkpoint of `cfg` over `vocab` into `dir` (which must not exist yet, or be
/// empty): config.json, tokenizer.json, and model.safetensors or shards with their index.
pub fn write_random(
    cfg: &ModelConfig,
    vocab: &[String],
    std: f32,
    seed: u64,
    dtype: DType,
    dir: &Path,
) -> Result<usize> {
    cfg.validate()
        .map_err(|m| Error::invalid("model shape", m))?;
    super::check_std(std)?;
    let shapes = tensor_shapes(cfg);
    let total: usize = shapes
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let largest = shapes
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() * dtype.size_in_bytes())
        .max()
        .unwrap_or(0);
    if total > MAX_PARAMS || largest > MAX_TENSOR_BYTES {
        return Err(Error::invalid(
            "model shape",
            format!(
                "{total} parameters, the largest tensor {largest} bytes: at most {MAX_PARAMS} parameters and {MAX_TENSOR_BYTES} bytes per tensor"
            ),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut cfg = cfg.clone();
    cfg.torch_dtype = checkpoint::dtype_name(dtype).into();
    let json = serde_json::to_vec_pretty(&cfg).expect("config serialises");
    checkpoint::write_atomic(&dir.join(CONFIG), &json)?;
    let tok = serde_json::to_vec(&tokenizer_json(vocab)).expect("json");
    checkpoint::write_atomic(&dir.join(TOKENIZER), &tok)?;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, std).expect("valid normal");
    let mut shards: Vec<(PathBuf, Vec<String>)> = Vec::new();
    let mut pending: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut params = 0usize;
    let flush = |pending: &mut Vec<(String, Vec<usize>, Vec<u8>)>,
                 shards: &mut Vec<(PathBuf, Vec<String>)>|
     -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let path = dir.join(format!("shard-{:05}.safetensors.tmp", shards.len() + 1));
        write_safetensors(&path, pending, dtype)?;
        shards.push((path, pending.iter().map(|p| p.0.clone()).collect()));
        pending.clear();
        Ok(())
    };
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        params += n;
        let values = (0..n).map(|_| {
            if name.ends_with("norm.weight") {
                1.0
            } else if name.ends_with(".bias") {
                0.0
            } else {
                normal.sample(&mut rng)
            }
        });
        let bytes = encode(values, n, dtype);
        if pending_bytes + bytes.len() > SHARD_BYTES && !pending.is_empty() {
            flush(&mut pending, &mut shards)?;
            pending_bytes = 0;
        }
        pending_bytes += bytes.len();
        pending.push((name, shape, bytes));
    }
    flush(&mut pending, &mut shards)?;
    // Final names: one file, or model-0000i-of-0000n with an index.
    if shards.len() == 1 {
        let dst = dir.join(WEIGHTS);
        std::fs::rename(&shards[0].0, &dst).map_err(|e| Error::io(&dst, e))?;
    } else {
        let total = shards.len();
        let mut map = BTreeMap::new();
        for (i, (tmp, names)) in shards.iter().enumerate() {
            let file = format!("model-{:05}-of-{total:05}.safetensors", i + 1);
            let dst = dir.join(&file);
            std::fs::rename(tmp, &dst).map_err(|e| Error::io(&dst, e))?;
            for n in names {
                map.insert(n.clone(), file.clone());
            }
        }
        let index = serde_json::json!({
            "metadata": {"total_size": params * dtype.size_in_bytes()},
            "weight_map": map,
        });
        checkpoint::write_atomic(
            &dir.join(WEIGHTS_INDEX),
            &serde_json::to_vec_pretty(&index).expect("json"),
        )?;
    }
    Ok(params)
}

fn encode(values: impl Iterator<Item = f32>, n: usize, dtype: DType) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * dtype.size_in_bytes());
    match dtype {
        DType::BF16 => values.for_each(|x| out.extend_from_slice(&bf16::from_f32(x).to_le_bytes())),
        DType::F16 => values.for_each(|x| out.extend_from_slice(&f16::from_f32(x).to_le_bytes())),
        _ => values.for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
    out
}

/// One safetensors file from already-encoded tensors.
fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    dtype: DType,
) -> Result<()> {
    let st = match dtype {
        DType::BF16 => "BF16",
        DType::F16 => "F16",
        _ => "F32",
    };
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": st, "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    // The data must start 8-byte aligned.
    while !(8 + h.len()).is_multiple_of(8) {
        h.push(b' ');
    }
    let io = |e| Error::io(path, e);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    f.write_all(&(h.len() as u64).to_le_bytes()).map_err(io)?;
    f.write_all(&h).map_err(io)?;
    for (_, _, bytes) in tensors {
        f.write_all(bytes).map_err(io)?;
    }
    f.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn streamed_checkpoint_equals_llm_random() {
        let vocab: Vec<String> = crate::ids::SPECIALS
            .iter()
            .map(|s| s.to_string())
            .chain(["<a_0>", "<b_0>", "<c_0>", "<d_0>"].map(String::from))
            .collect();
        let cfg = ModelConfig::compact(vocab.len(), 2, 16, 2, 1);
        let dir = tempfile::tempdir().unwrap();
        write_random(&cfg, &vocab, 0.1, 3, DType::F32, dir.path()).unwrap();
        let a = super::super::Llm::load(dir.path(), &Device::Cpu).unwrap();
        let b = super::super::Llm::random(&cfg, vocab, 0.1, 3, &Device::Cpu).unwrap();
        for ((n, x), (_, y)) in a
            .model
            .named_tensors()
            .unwrap()
            .iter()
            .zip(b.model.named_tensors().unwrap())
        {
            let d = (x - &y)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(d, 0.0, "{n}");
        }
    }
}
