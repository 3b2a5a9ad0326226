//! Choosing where models run: `cpu`, `cuda` or `cuda:N` (CUDA only in builds with the `cuda`
//! feature; the default build and CI stay CPU-only).

use candle_core::Device;

use crate::{Error, Result};

pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                Error::invalid("device", format!("bad device {s:?} (cpu, cuda, cuda:N)"))
            })?,
        None => {
            return Err(Error::invalid(
                "device",
                format!("unknown device {s:?} (cpu, cuda, cuda:N)"),
            ))
        }
    };
    if !cfg!(feature = "cuda") {
        return Err(Error::invalid(
            "device",
            "this binary was built without CUDA; rebuild with `cargo build --release --features cuda`",
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| Error::invalid("device", format!("cannot open {s}: {e}")))
}

/// Short name for headers and reports.
pub fn label(d: &Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => match d.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            _ => "cuda".into(),
        },
        _ => format!("{:?}", d.location()),
    }
}

/// Waits for queued device work, so a timer read after it measures the work (no-op on CPU).
pub fn sync(d: &Device) -> Result<()> {
    Ok(d.synchronize()?)
}
