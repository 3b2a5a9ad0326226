//! Reading a checkpoint's weights: memory-mapped safetensors, one file or the shards listed in
//! `model.safetensors.index.json`, each tensor converted once into the dtype it will run in.
//!
//! Memory at LLM scale: a 7B model in bf16 is 13.5 GB, so the loader never holds a second copy.
//! Each tensor is copied out of the mapping straight into its run-time dtype, then the mapped
//! pages it came from are released (`madvise(MADV_DONTNEED)`), so resident memory grows by the
//! weights' size only, not by the file's as well. Untrusted files: shard paths must stay inside
//! the checkpoint folder, every tensor must be f32, f16 or bf16 (an integer tensor would be
//! reinterpreted), and every weight must be finite; errors name the file and the tensor.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Component, Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use super::checkpoint::{WEIGHTS, WEIGHTS_INDEX};
use crate::{Error, Result};

/// The safetensors files of a checkpoint: the single file, or the shards of the index.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(WEIGHTS);
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join(WEIGHTS_INDEX);
    if !index.exists() {
        return Err(Error::model(
            dir,
            format!("no weights: neither {WEIGHTS} nor {WEIGHTS_INDEX} is present"),
        ));
    }
    let text = fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::model(&index, format!("malformed index: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::model(&index, "no weight_map object"))?;
    let mut files = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| {
            Error::model(&index, format!("weight_map[{tensor:?}] is not a file name"))
        })?;
        files.insert(shard_path(dir, file).map_err(|m| Error::model(&index, m))?);
    }
    if files.is_empty() {
        return Err(Error::model(&index, "weight_map lists no files"));
    }
    Ok(files.into_iter().collect())
}

/// A shard named by the index, which must stay inside the checkpoint folder: a plain relative
/// path with no `..` and not absolute. Links are followed (the Hugging Face hub cache links every
/// file of a snapshot into a blob store), but what they reach must be a regular file.
fn shard_path(dir: &Path, file: &str) -> std::result::Result<PathBuf, String> {
    let rel = Path::new(file);
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain || file.is_empty() {
        return Err(format!(
            "shard {} is not a file inside the checkpoint folder",
            crate::text::quoted(file, 80)
        ));
    }
    Ok(dir.join(rel))
}

/// Reads every tensor of the checkpoint into `dtype` on `device`.
pub fn read_weights(dir: &Path, dtype: DType, device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut all = HashMap::new();
    for file in weight_files(dir)? {
        read_file(&file, Some(dtype), device, &mut all)?;
    }
    Ok(all)
}

/// The dtype most of a checkpoint's weights are stored in (for `--dtype auto`), read from the
/// safetensors headers only.
pub fn stored_dtype(dir: &Path) -> Result<DType> {
    let mut counts: HashMap<DType, usize> = HashMap::new();
    for file in weight_files(dir)? {
        let map = map_file(&file)?;
        let st = SafeTensors::deserialize(&map)
            .map_err(|e| Error::model(&file, format!("corrupt safetensors: {e}")))?;
        for (_, view) in st.tensors() {
            if let Ok(d) = candle_dtype(view.dtype()) {
                *counts.entry(d).or_default() += view.data().len();
            }
        }
    }
    Ok(counts
        .into_iter()
        .max_by_key(|&(_, bytes)| bytes)
        .map(|(d, _)| d)
        .unwrap_or(DType::F32))
}

/// Reads every tensor of one safetensors file (an adapter's, say) into `dtype` (`None`: as
/// stored) on `device`.
pub fn read_file_tensors(
    file: &Path,
    dtype: Option<DType>,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    read_file(file, dtype, device, &mut out)?;
    Ok(out)
}

fn map_file(file: &Path) -> Result<memmap2::Mmap> {
    // A FIFO or a device would block or never end: only regular files are weights.
    let meta = fs::metadata(file).map_err(|e| Error::io(file, e))?;
    if !meta.is_file() {
        return Err(Error::model(file, "is not a regular file"));
    }
    let f = fs::File::open(file).map_err(|e| Error::io(file, e))?;
    // SAFETY: the mapping is read-only and private to this load; a file changed on disk while
    // it loads can at worst give wrong weights (then caught by the checks below or not at all,
    // as with any read), never memory unsafety in this process's own allocations.
    unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(file, e))
}

fn candle_dtype(d: Dtype) -> std::result::Result<DType, String> {
    match d {
        Dtype::F32 => Ok(DType::F32),
        Dtype::F16 => Ok(DType::F16),
        Dtype::BF16 => Ok(DType::BF16),
        other => Err(format!(
            "is stored as {other:?}; weights must be F32, F16 or BF16"
        )),
    }
}

fn read_file(
    file: &Path,
    dtype: Option<DType>,
    device: &Device,
    out: &mut HashMap<String, Tensor>,
) -> Result<()> {
    let map = map_file(file)?;
    let st = SafeTensors::deserialize(&map)
        .map_err(|e| Error::model(file, format!("corrupt safetensors: {e}")))?;
    let base = map.as_ptr() as usize;
    for (name, view) in st.tensors() {
        let bad = |m: String| Error::model(file, format!("tensor {name} {m}"));
        let stored = candle_dtype(view.dtype()).map_err(bad)?;
        let shape = view.shape().to_vec();
        let bytes = view.data();
        let t = convert(bytes, stored, dtype.unwrap_or(stored), &shape).map_err(bad)?;
        let t = if device.is_cpu() {
            t
        } else {
            t.to_device(device)
                .map_err(|e| Error::model(file, format!("tensor {name}: {e}")))?
        };
        // The copy is made: give the mapped pages back, so resident memory holds the weights
        // once. Best effort: an unsupported advice only costs memory.
        let offset = bytes.as_ptr() as usize - base;
        // SAFETY: MADV_DONTNEED on a read-only file mapping only drops cached pages; a later
        // read (none happens for this range) would fault them in again from the file.
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, bytes.len())
        };
        out.insert(name.to_string(), t);
    }
    Ok(())
}

/// One tensor from its little-endian bytes into `want`, refusing non-finite values.
fn convert(
    bytes: &[u8],
    stored: DType,
    want: DType,
    shape: &[usize],
) -> std::result::Result<Tensor, String> {
    let dev = &Device::Cpu;
    let finite = |ok: bool, i: usize| {
        if ok {
            Ok(())
        } else {
            Err(format!(
                "has a non-finite value at element {i} (NaN or infinity): the checkpoint is corrupt"
            ))
        }
    };
    let overflow = |i: usize| {
        format!("overflows {want:?} at element {i}: convert to a wider dtype (--dtype f32 or bf16)")
    };
    macro_rules! read {
        ($ty:ty, $n:expr, $from:expr, $to:expr) => {{
            let mut v: Vec<$ty> = Vec::with_capacity(bytes.len() / $n);
            for (i, c) in bytes.chunks_exact($n).enumerate() {
                let x = $from(c);
                finite(x.is_finite(), i)?;
                let y: $ty = $to(x);
                // f32 or bf16 values beyond f16's range become infinite in f16.
                if !y.is_finite() {
                    return Err(overflow(i));
                }
                v.push(y);
            }
            Tensor::from_vec(v, shape, dev).map_err(|e| e.to_string())
        }};
    }
    let f32_of = |c: &[u8]| f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    let bf16_of = |c: &[u8]| bf16::from_le_bytes([c[0], c[1]]);
    let f16_of = |c: &[u8]| f16::from_le_bytes([c[0], c[1]]);
    match (stored, want) {
        (DType::F32, DType::F32) => read!(f32, 4, f32_of, |x| x),
        (DType::F32, DType::BF16) => read!(bf16, 4, f32_of, bf16::from_f32),
        (DType::F32, DType::F16) => read!(f16, 4, f32_of, f16::from_f32),
        (DType::BF16, DType::BF16) => read!(bf16, 2, bf16_of, |x| x),
        (DType::BF16, DType::F32) => read!(f32, 2, bf16_of, |x: bf16| x.to_f32()),
        (DType::BF16, DType::F16) => read!(f16, 2, bf16_of, |x: bf16| f16::from_f32(x.to_f32())),
        (DType::F16, DType::F16) => read!(f16, 2, f16_of, |x| x),
        (DType::F16, DType::F32) => read!(f32, 2, f16_of, |x: f16| x.to_f32()),
        (DType::F16, DType::BF16) => read!(bf16, 2, f16_of, |x: f16| bf16::from_f32(x.to_f32())),
        (s, w) => Err(format!("cannot convert {s:?} to {w:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_paths_stay_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "../../../../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "",
            "./../x",
        ] {
            assert!(shard_path(dir.path(), bad).is_err(), "{bad}");
        }
        assert!(shard_path(dir.path(), "model-00001-of-00002.safetensors").is_ok());
        assert!(shard_path(dir.path(), "sub/shard.safetensors").is_ok());
    }

    #[test]
    fn conversion_refuses_non_finite_values() {
        let bytes: Vec<u8> = [1.0f32, f32::NAN]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let e = convert(&bytes, DType::F32, DType::BF16, &[2]).unwrap_err();
        assert!(e.contains("element 1"), "{e}");
        let ok: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let t = convert(&ok, DType::F32, DType::BF16, &[2]).unwrap();
        assert_eq!(t.dtype(), DType::BF16);
        assert_eq!(
            t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(),
            [1.5, -2.0]
        );
        assert!(candle_dtype(Dtype::I32).unwrap_err().contains("I32"));
        let big: Vec<u8> = 1e6f32.to_le_bytes().to_vec();
        let e = convert(&big, DType::F32, DType::F16, &[1]).unwrap_err();
        assert!(e.contains("overflows F16"), "{e}");
    }
}
