//! CPU kernels for the inference path's linear layers: `y = x · wᵀ` for a few to a few hundred
//! activation rows `x [m, k]` against a frozen weight `w [n, k]`.
//!
//! The weight is repacked once, when the model is readied for inference, into panels of
//! [`PANEL`] output columns stored `k`-major in 64-byte-aligned lines, so a panel is one
//! sequential stream. A register tile of up to [`MR`] activation rows by one panel keeps
//! `2 * MR` vector accumulators, broadcasts one activation per row and step, and multiplies it
//! into the panel's two vectors. Every tile of rows passes over a panel (or a chunk of a very long
//! one) while it sits in L2, so each weight byte comes from memory once per pass (a pass of a few
//! tokens is bound by that stream, helped by software prefetch and huge pages) and the
//! multiply-adds of a prefill run from cache. Threads take panels in turn.
//!
//! Kernels, chosen at run time:
//! - AVX-512F, f32 weights: 16-lane FMAs.
//! - AVX-512 BF16, bf16 weights and activations: `vdpbf16ps`, 32 exact products per
//!   instruction summed in f32, twice the f32 FMA rate. bf16 panels interleave `k` pairs
//!   (lane `c` of a line holds `w[c][k]` and `w[c][k + 1]`) so one broadcast pair feeds it.
//! - AVX-512F without BF16, bf16 weights: the pairs widened to f32 in registers, f32 FMAs.
//! - Portable Rust loops over the same panels: bf16 weights on CPUs without AVX-512 (f32
//!   weights there stay with candle's gemm), and a reference for tests.
//!
//! Each output sums its products in increasing `k` in one accumulator lane (pair by pair on the
//! BF16 path); chunking, the row tile it falls in and the thread that runs it change neither the
//! order nor the rounding (a chunk resumes from the stored f32 partial sum). So a token's row of a
//! product is bit-for-bit the same whichever tokens share its pass and however many threads run,
//! and each output is written by one task only: no races, no thread-count-dependent reductions.
//! Attention keeps that too where its own loops run (head sizes a multiple of 16 up to 128, with
//! AVX-512): a query row sees the same keys in the same order whatever else is in the pass, and
//! masked keys change no sum. Elsewhere it runs on `gemm`, whose order follows the pass's shape,
//! and the strict list comparison's tolerance covers the last bits (`decode::ranking`).

#[cfg(not(target_os = "linux"))]
use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;

use candle_core::{CpuStorage, DType, Device, Result, Tensor};
use half::bf16;
use rayon::prelude::*;

/// Output columns per packed panel: two 16-lane vectors.
pub const PANEL: usize = 32;
/// Activation rows per register tile (`2 * MR` accumulators of 32 registers).
pub const MR: usize = 12;
/// Bytes of a panel's `k` chunk that every row tile passes over before the next chunk. Measured
/// here (Zen 4, 1 MiB L2): whole panels (196 KiB for k = 1536 in f32, 512 KiB for k = 4096) beat
/// L1-sized chunks by 5-10% (the row tiles re-read the panel from L2 at full speed, and a chunk
/// boundary costs an accumulator round trip and a prefetch restart); the cap keeps a panel of a
/// very long `k` in L2.
const CHUNK_BYTES: usize = 512 * 1024;
/// How far ahead (in 128-byte panel steps, so 12 KiB) the kernels prefetch the panel: the first
/// row tile over a panel streams it from memory.
const PREFETCH_STEPS: usize = 96;
/// A product runs on the thread pool when it streams a weight of at least this many bytes (a
/// few-token pass is bound by that stream, and two cores stream more than one) ...
const PARALLEL_MIN_WEIGHT_BYTES: usize = 1 << 20;
/// ... or does at least this many multiply-adds. Below both, waking the pool costs more than it
/// saves: on the shipped 8x128 target, every product on one thread made a 20-token step 1.0 ms
/// instead of 1.4 ms.
const PARALLEL_MIN_MACS: usize = 1 << 22;
/// Below this many elements an element-wise step (rotary split, SwiGLU) runs on the calling
/// thread.
const PARALLEL_MIN_ELEMS: usize = 1 << 18;

/// Which kernel family runs (the fastest the CPU has, unless a test asks for another).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust loops.
    Portable,
    /// AVX-512F, BW and VL.
    Avx512,
    /// AVX-512F, BW, VL and BF16 (`vdpbf16ps`).
    Avx512Bf16,
}

impl Isa {
    /// The best kernel family this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::sync::OnceLock;
            static ISA: OnceLock<Isa> = OnceLock::new();
            *ISA.get_or_init(|| {
                let avx512 = is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl");
                if avx512 && is_x86_feature_detected!("avx512bf16") {
                    Isa::Avx512Bf16
                } else if avx512 {
                    Isa::Avx512
                } else {
                    Isa::Portable
                }
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Portable
    }

    /// Every family this CPU can run (for tests).
    pub fn available() -> Vec<Isa> {
        match Isa::detect() {
            Isa::Avx512Bf16 => vec![Isa::Portable, Isa::Avx512, Isa::Avx512Bf16],
            Isa::Avx512 => vec![Isa::Portable, Isa::Avx512],
            Isa::Portable => vec![Isa::Portable],
        }
    }
}

/// One 64-byte-aligned line of a packed panel: 16 f32, or 16 pairs of bf16.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u32; 16]);

/// Zeroed storage for packed panels, aligned to 2 MiB and backed by transparent huge pages where
/// Linux offers them (`madvise`). The kernels stream gigabytes through it: with 4 KiB pages every
/// 32 panel steps would cost a TLB miss, and the hardware prefetchers stop at every page boundary
/// (measured: a 20-token bf16 step on a 24x1536 model 9% slower without them).
///
/// On Linux the storage is an anonymous mapping, zeroed by the kernel as its pages are first
/// touched, so packing (on the thread pool) is the first and only pass over it: an allocator's
/// memset would fault in and, with `defrag=madvise`, compact every huge page on one thread first,
/// which took most of a 1B model's load time here.
struct Lines {
    ptr: NonNull<Line>,
    len: usize,
    /// The whole mapping (Linux): its start and length, for `munmap`.
    #[cfg(target_os = "linux")]
    map: (*mut libc::c_void, usize),
}

const HUGE_PAGE: usize = 2 << 20;

impl Lines {
    fn bytes(len: usize) -> usize {
        len.max(1) * size_of::<Line>()
    }

    /// Out of memory is an error (a model too large for the machine), not an abort.
    fn out_of_memory(bytes: usize) -> candle_core::Error {
        candle_core::Error::Msg(format!(
            "out of memory: {bytes} bytes for packed weights (the model does not fit in RAM)"
        ))
    }

    #[cfg(target_os = "linux")]
    fn zeroed(len: usize) -> Result<Lines> {
        let bytes = Self::bytes(len);
        // One huge page of slack to align the start to one.
        let map_len = bytes + HUGE_PAGE;
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(Self::out_of_memory(bytes));
        }
        let aligned = (raw as usize).next_multiple_of(HUGE_PAGE);
        // SAFETY: aligned..aligned + bytes lies inside the mapping; advice changes no contents,
        // and a refusal (THP off, old kernel) only leaves ordinary pages.
        unsafe { libc::madvise(aligned as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE) };
        Ok(Lines {
            ptr: NonNull::new(aligned as *mut Line).expect("mapping is not null"),
            len,
            map: (raw, map_len),
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn zeroed(len: usize) -> Result<Lines> {
        let layout = Layout::from_size_align(Self::bytes(len), HUGE_PAGE)
            .map_err(|_| Self::out_of_memory(Self::bytes(len)))?;
        // SAFETY: the layout has a non-zero size; zero bytes are valid Lines.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr =
            NonNull::new(raw as *mut Line).ok_or_else(|| Self::out_of_memory(layout.size()))?;
        Ok(Lines { ptr, len })
    }

    fn as_slice(&self) -> &[Line] {
        // SAFETY: ptr holds len initialised Lines for as long as self lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [Line] {
        // SAFETY: as above, and &mut self makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        // SAFETY: the mapping made in `zeroed`, unmapped once.
        unsafe {
            libc::munmap(self.map.0, self.map.1);
        }
        #[cfg(not(target_os = "linux"))]
        // SAFETY: allocated in `zeroed` with this very layout.
        unsafe {
            let layout = Layout::from_size_align(Self::bytes(self.len), HUGE_PAGE).expect("size");
            alloc::dealloc(self.ptr.as_ptr() as *mut u8, layout)
        }
    }
}

// SAFETY: Lines owns its buffer outright, like a Vec<Line>.
unsafe impl Send for Lines {}
// SAFETY: shared access is read-only (`as_slice`).
unsafe impl Sync for Lines {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    F32,
    Bf16,
}

/// A weight `[n, k]` packed into panels for [`Packed::matmul_f32`] / [`Packed::matmul_bf16`].
pub struct Packed {
    n: usize,
    k: usize,
    kind: Kind,
    /// Panel `p` holds columns `p * PANEL..`; within it, f32: two lines per `k` (columns 0-15,
    /// 16-31); bf16: two lines per pair `(k, k + 1)`, `k` even, each lane `w[k] | w[k+1] << 16`.
    /// Columns past `n` and the odd `k` past the end are zero.
    lines: Lines,
}

impl fmt::Debug for Packed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Packed({:?} [{}, {}])", self.kind, self.n, self.k)
    }
}

impl Packed {
    /// Lines per panel.
    fn panel_lines(&self) -> usize {
        match self.kind {
            Kind::F32 => 2 * self.k,
            Kind::Bf16 => 2 * self.k.div_ceil(2),
        }
    }

    /// Packs f32 `w [n, k]` (row-major).
    pub fn from_f32(w: &[f32], n: usize, k: usize) -> Result<Packed> {
        assert_eq!(w.len(), n * k, "w is not [n, k]");
        Packed::from_f32_parts(&[w], k)
    }

    /// Packs bf16 `w [n, k]` (row-major).
    pub fn from_bf16(w: &[bf16], n: usize, k: usize) -> Result<Packed> {
        assert_eq!(w.len(), n * k, "w is not [n, k]");
        Packed::from_bf16_parts(&[w], k)
    }

    /// Packs the f32 weights `parts` (row-major, `k` columns each) stacked along their rows.
    fn from_f32_parts(parts: &[&[f32]], k: usize) -> Result<Packed> {
        let n: usize = parts.iter().map(|p| p.len() / k.max(1)).sum();
        let mut lines = Lines::zeroed(n.div_ceil(PANEL) * 2 * k)?;
        let put = |panel: &mut [Line], c: usize, i0: usize, row: &[f32]| {
            for (i, v) in row.iter().enumerate() {
                panel[2 * (i0 + i) + c / 16].0[c % 16] = v.to_bits();
            }
        };
        fill_panels(&mut lines, k, 2 * k, put, parts);
        Ok(Packed {
            n,
            k,
            kind: Kind::F32,
            lines,
        })
    }

    /// Packs the bf16 weights `parts` (row-major, `k` columns each) stacked along their rows.
    fn from_bf16_parts(parts: &[&[bf16]], k: usize) -> Result<Packed> {
        let n: usize = parts.iter().map(|p| p.len() / k.max(1)).sum();
        let pairs = k.div_ceil(2);
        let mut lines = Lines::zeroed(n.div_ceil(PANEL) * 2 * pairs)?;
        let put = |panel: &mut [Line], c: usize, i0: usize, row: &[bf16]| {
            for (j, v) in row.iter().enumerate() {
                let i = i0 + j;
                let lane = &mut panel[2 * (i / 2) + c / 16].0[c % 16];
                *lane |= (v.to_bits() as u32) << (16 * (i % 2));
            }
        };
        fill_panels(&mut lines, k, 2 * pairs, put, parts);
        Ok(Packed {
            n,
            k,
            kind: Kind::Bf16,
            lines,
        })
    }

    /// Packs a CPU weight tensor `[n, k]` when a kernel here beats candle's matmul for it: bf16
    /// always, f32 with AVX-512. `None` otherwise (other devices, dtypes or CPUs).
    pub fn from_tensor(w: &Tensor) -> Result<Option<Packed>> {
        Packed::from_stacked(&[w])
    }

    /// As [`Packed::from_tensor`] for the weights `ws` (`[n_i, k]`, one dtype) stacked along
    /// their rows, without a stacked copy first.
    pub fn from_stacked(ws: &[&Tensor]) -> Result<Option<Packed>> {
        let Some(first) = ws.first() else {
            return Ok(None);
        };
        let (dtype, k) = (first.dtype(), first.dims().get(1).copied().unwrap_or(0));
        let fits = |w: &&Tensor| {
            matches!(w.device(), Device::Cpu)
                && w.rank() == 2
                && w.dtype() == dtype
                && w.dim(1).ok() == Some(k)
        };
        let kernel = match dtype {
            DType::F32 => Isa::detect() != Isa::Portable,
            DType::BF16 => true,
            _ => false,
        };
        if !kernel || !ws.iter().all(fits) {
            return Ok(None);
        }
        let ws = ws
            .iter()
            .map(|w| w.contiguous())
            .collect::<Result<Vec<_>>>()?;
        let held: Vec<_> = ws.iter().map(|w| w.storage_and_layout()).collect();
        let mut f32s = Vec::new();
        let mut bf16s = Vec::new();
        for (storage, layout) in &held {
            let (a, b) = layout
                .contiguous_offsets()
                .expect("contiguous() gives contiguous offsets");
            match &**storage {
                candle_core::Storage::Cpu(CpuStorage::F32(v)) => f32s.push(&v[a..b]),
                candle_core::Storage::Cpu(CpuStorage::BF16(v)) => bf16s.push(&v[a..b]),
                _ => return Ok(None),
            }
        }
        Ok(Some(match dtype {
            DType::F32 => Packed::from_f32_parts(&f32s, k)?,
            _ => Packed::from_bf16_parts(&bf16s, k)?,
        }))
    }

    /// Output features (`n`).
    pub fn out_dim(&self) -> usize {
        self.n
    }

    /// Input features (`k`).
    pub fn in_dim(&self) -> usize {
        self.k
    }

    /// The dtype the weight was packed from.
    pub fn dtype(&self) -> DType {
        match self.kind {
            Kind::F32 => DType::F32,
            Kind::Bf16 => DType::BF16,
        }
    }

    /// The bits of row `r` of the weight `w [n, k]` (f32 bits, or bf16 bits in the low half),
    /// read back out of the panels. Packing is a permutation, so this is exact.
    fn row_bits(&self, r: usize) -> impl Iterator<Item = u32> + '_ {
        let (p, c) = (r / PANEL, r % PANEL);
        let panel = &self.lines.as_slice()[p * self.panel_lines()..][..self.panel_lines()];
        let kind = self.kind;
        (0..self.k).map(move |i| match kind {
            Kind::F32 => panel[2 * i + c / 16].0[c % 16],
            Kind::Bf16 => (panel[2 * (i / 2) + c / 16].0[c % 16] >> (16 * (i % 2))) & 0xffff,
        })
    }

    /// Rows `ids` of the weight as a `[ids.len(), k]` tensor of its dtype: the embedding lookup
    /// of a tied LM head (whose dense copy the inference model no longer keeps), and
    /// [`Packed::to_tensor`].
    pub fn gather(&self, ids: &[u32]) -> Result<Tensor> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.n) {
            candle_core::bail!("row {bad} of a packed [{}, {}] weight", self.n, self.k);
        }
        let dims = (ids.len(), self.k);
        let rows = ids.iter().flat_map(|&i| self.row_bits(i as usize));
        match self.kind {
            Kind::F32 => Tensor::from_vec(rows.map(f32::from_bits).collect(), dims, &Device::Cpu),
            Kind::Bf16 => Tensor::from_vec(
                rows.map(|b| bf16::from_bits(b as u16)).collect(),
                dims,
                &Device::Cpu,
            ),
        }
    }

    /// The weight `[n, k]` again, bit for bit (for saving, or for a path that needs it dense).
    pub fn to_tensor(&self) -> Result<Tensor> {
        let ids: Vec<u32> = (0..self.n as u32).collect();
        self.gather(&ids)
    }

    /// `x · wᵀ` for a CPU tensor `x [.., k]` of the packed weight's dtype: `[.., n]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_as(x, true)
    }

    /// As [`Packed::forward`], but the f32 sums of bf16 products come back unrounded, as f32
    /// (for consumers that compute in f32 anyway).
    pub fn forward_f32(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_as(x, false)
    }

    fn forward_as(&self, x: &Tensor, round: bool) -> Result<Tensor> {
        let want = self.dtype();
        if x.dtype() != want || x.dims().last() != Some(&self.k) {
            candle_core::bail!(
                "packed linear [{}, {}] {want:?}: input {:?} {:?}",
                self.n,
                self.k,
                x.dims(),
                x.dtype()
            );
        }
        let mut dims = x.dims().to_vec();
        let m = x.elem_count() / self.k.max(1);
        *dims.last_mut().expect("rank >= 1") = self.n;
        let x = x.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("packed linear: input is not on the CPU");
        };
        let (a, b) = layout
            .contiguous_offsets()
            .expect("contiguous() gives contiguous offsets");
        let isa = Isa::detect();
        match cpu {
            CpuStorage::F32(v) => {
                let out = self.matmul_f32(&v[a..b], m, isa);
                Tensor::from_vec(out, dims, &Device::Cpu)
            }
            CpuStorage::BF16(v) if round => {
                let out = self.matmul_bf16(&v[a..b], m, isa);
                Tensor::from_vec(out, dims, &Device::Cpu)
            }
            CpuStorage::BF16(v) => {
                let mut out = vec![0f32; m * self.n];
                self.sums_bf16(&v[a..b], m, isa, &mut out);
                Tensor::from_vec(out, dims, &Device::Cpu)
            }
            _ => candle_core::bail!("packed linear: unsupported input dtype"),
        }
    }

    /// `x · wᵀ` for f32 `x [m, k]` (f32 panels only): `[m, n]`.
    pub fn matmul_f32(&self, x: &[f32], m: usize, isa: Isa) -> Vec<f32> {
        assert_eq!(self.kind, Kind::F32, "f32 input needs f32 panels");
        assert_eq!(x.len(), m * self.k, "x is not [m, k]");
        let tile: TileFn<f32> = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Bf16 => avx512::tile_f32,
            _ => portable::tile_f32,
        };
        let mut out = vec![0f32; m * self.n];
        self.run(x, m, CHUNK_BYTES / (PANEL * 4), tile, &mut out);
        out
    }

    /// `x · wᵀ` for bf16 `x [m, k]` (bf16 panels only), summed in f32 and rounded to bf16 once
    /// (as candle's widen, multiply, narrow does, without a widened copy of the weight).
    pub fn matmul_bf16(&self, x: &[bf16], m: usize, isa: Isa) -> Vec<bf16> {
        assert_eq!(self.kind, Kind::Bf16, "bf16 input needs bf16 panels");
        assert_eq!(x.len(), m * self.k, "x is not [m, k]");
        // The f32 sums live only until they are rounded: reuse one buffer per thread (taken out
        // while in use, so a nested call on this thread just allocates its own).
        thread_local!(static SUMS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) });
        let mut out = SUMS.with(|c| c.take());
        out.clear();
        out.resize(m * self.n, 0.0);
        self.sums_bf16(x, m, isa, &mut out);
        let rounded = to_bf16(&out);
        SUMS.with(|c| c.set(out));
        rounded
    }

    /// The f32 sums of `x · wᵀ` for bf16 `x [m, k]` into `out [m, n]`.
    fn sums_bf16(&self, x: &[bf16], m: usize, isa: Isa, out: &mut [f32]) {
        assert_eq!(self.kind, Kind::Bf16, "bf16 input needs bf16 panels");
        assert_eq!(x.len(), m * self.k, "x is not [m, k]");
        let chunk = CHUNK_BYTES / (PANEL * 2);
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => self.run(x, m, chunk, avx512::tile_bf16_dp, out),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                // The activations are few: widen them once; the weights widen in registers.
                let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
                self.run(&xf, m, chunk, avx512::tile_bf16_widen, out)
            }
            _ => {
                let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
                self.run(&xf, m, chunk, portable::tile_bf16, out)
            }
        }
    }

    /// Splits the panels over threads, and each panel's `k` into chunks of `chunk` (even) that
    /// every row tile passes over in turn.
    fn run<X: Sync>(&self, x: &[X], m: usize, chunk: usize, tile: TileFn<X>, out: &mut [f32]) {
        let (n, k) = (self.n, self.k);
        assert_eq!(out.len(), m * n, "out is not [m, n]");
        if m == 0 || n == 0 {
            return;
        }
        let panels = n.div_ceil(PANEL);
        let panel_lines = self.panel_lines();
        let m_tiles = m.div_ceil(MR);
        let out_ptr = OutPtr(out.as_mut_ptr());
        let x_ptr = x.as_ptr() as usize;
        let lines = self.lines.as_slice().as_ptr() as usize;
        let panel = move |p: usize| {
            let out_ptr = out_ptr;
            let cols = PANEL.min(n - p * PANEL);
            let mut k0 = 0;
            while k0 < k {
                let len = chunk.min(k - k0);
                // Line of the chunk's first k (f32: two per k; bf16: two per pair, k0 even).
                let line = match self.kind {
                    Kind::F32 => 2 * k0,
                    Kind::Bf16 => k0,
                };
                let mut r0 = 0;
                for t in 0..m_tiles {
                    // Tiles of nearly equal height (20 rows: 10 + 10, not 12 + 8).
                    let rows = (m - r0) / (m_tiles - t);
                    // SAFETY: rows r0..r0 + rows < m and k0..k0 + len <= k stay inside x
                    // ([m, k]); the chunk's lines are inside panel p; the tile writes rows
                    // r0..r0 + rows, columns p * PANEL..+cols of out ([m, n]), which only this
                    // task (panel p) writes.
                    unsafe {
                        tile(
                            (x_ptr as *const X).add(r0 * k + k0),
                            k,
                            (lines as *const Line).add(p * panel_lines + line) as *const u32,
                            len,
                            out_ptr.0.add(r0 * n + p * PANEL),
                            n,
                            rows,
                            cols,
                            k0 == 0,
                        );
                    }
                    r0 += rows;
                }
                k0 += len;
            }
        };
        let threads = rayon::current_num_threads();
        let weight_bytes = panels * panel_lines * size_of::<Line>();
        let small = m * n * k < PARALLEL_MIN_MACS && weight_bytes < PARALLEL_MIN_WEIGHT_BYTES;
        if threads <= 1 || panels == 1 || small {
            (0..panels).for_each(panel);
        } else {
            (0..panels).into_par_iter().for_each(panel);
        }
    }
}

/// Fills the panels of `lines` (`panel_lines` each) from the row-major weights `parts` (`k`
/// columns each) stacked along their rows, panels in parallel: `put(panel, c, i0, row)` stores
/// `row`, the values `i0..` of the panel's column `c`. Columns are taken in blocks of
/// [`PACK_BLOCK`] `k`, so the lines a block writes stay in L1 while the panel's rows are read in
/// short sequential runs (a whole column at a time writes one line per `k` across the panel).
fn fill_panels<T: Sync>(
    lines: &mut Lines,
    k: usize,
    panel_lines: usize,
    put: impl Fn(&mut [Line], usize, usize, &[T]) + Sync,
    parts: &[&[T]],
) {
    // The stacked weight's rows, in order.
    let rows: Vec<&[T]> = parts
        .iter()
        .flat_map(|p| p.chunks_exact(k.max(1)))
        .collect();
    let n = rows.len();
    let fill = |(p, panel): (usize, &mut [Line])| {
        let cols = PANEL.min(n - p * PANEL);
        for i0 in (0..k).step_by(PACK_BLOCK) {
            let len = PACK_BLOCK.min(k - i0);
            for c in 0..cols {
                put(panel, c, i0, &rows[p * PANEL + c][i0..][..len]);
            }
        }
    };
    let panels = n.div_ceil(PANEL);
    let chunks = lines.as_mut_slice().par_chunks_mut(panel_lines.max(1));
    chunks.enumerate().take(panels).for_each(fill);
}

/// `k` per block when packing (even, so bf16 pairs never straddle blocks).
const PACK_BLOCK: usize = 64;

/// One register tile over one chunk: `rows` (1..=MR) activation rows from `x` (row stride
/// `ldx`, already at the chunk's first k) against the chunk's `len` k of a panel (`w`, its first
/// line), adding into `out[r * ldo + c]` for `c < cols` (`first`: start from zero instead).
///
/// # Safety
/// `x` has `rows` rows of `len` readable elements at stride `ldx`; `w` has the chunk's lines;
/// `out` has `rows` rows of `cols` writable elements at stride `ldo`; the CPU runs the kernel.
type TileFn<X> = unsafe fn(
    x: *const X,
    ldx: usize,
    w: *const u32,
    len: usize,
    out: *mut f32,
    ldo: usize,
    rows: usize,
    cols: usize,
    first: bool,
);

/// A raw output pointer that tasks writing disjoint panels share.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes the columns of its own panel only (see `Packed::run`), and the
// buffer outlives the parallel loop that uses the pointer.
unsafe impl Send for OutPtr {}
// SAFETY: as above: no address is written by two tasks.
unsafe impl Sync for OutPtr {}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use half::bf16;

    use super::{MR, PREFETCH_STEPS};

    /// Dispatches a tile to the kernel monomorphised for its row count.
    macro_rules! dispatch {
        ($kernel:ident, $($arg:expr),*; $rows:expr) => {
            match $rows {
                1 => $kernel::<1>($($arg),*),
                2 => $kernel::<2>($($arg),*),
                3 => $kernel::<3>($($arg),*),
                4 => $kernel::<4>($($arg),*),
                5 => $kernel::<5>($($arg),*),
                6 => $kernel::<6>($($arg),*),
                7 => $kernel::<7>($($arg),*),
                8 => $kernel::<8>($($arg),*),
                9 => $kernel::<9>($($arg),*),
                10 => $kernel::<10>($($arg),*),
                11 => $kernel::<11>($($arg),*),
                MR => $kernel::<MR>($($arg),*),
                r => unreachable!("row tile of {r}"),
            }
        };
    }

    /// Asks for the two lines of a panel step ahead of use. A prefetch never faults, so it may
    /// point past the panel (it then fetches the next panel's start, or nothing).
    #[inline(always)]
    unsafe fn prefetch(p: *const u32) {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(0) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(16) as *const i8);
    }

    /// Store masks of a panel's two vectors for its first `cols` columns.
    #[inline(always)]
    fn masks(cols: usize) -> [__mmask16; 2] {
        let m = if cols >= 32 {
            u32::MAX
        } else {
            (1u32 << cols) - 1
        };
        [m as u16, (m >> 16) as u16]
    }

    /// Loads (or zeroes) the tile's accumulators.
    #[inline(always)]
    unsafe fn start<const R: usize>(
        out: *const f32,
        ldo: usize,
        mask: [__mmask16; 2],
        first: bool,
    ) -> [[__m512; 2]; R] {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        if !first {
            for (r, a) in acc.iter_mut().enumerate() {
                a[0] = _mm512_maskz_loadu_ps(mask[0], out.add(r * ldo));
                a[1] = _mm512_maskz_loadu_ps(mask[1], out.add(r * ldo + 16));
            }
        }
        acc
    }

    #[inline(always)]
    unsafe fn finish<const R: usize>(
        acc: &[[__m512; 2]; R],
        out: *mut f32,
        ldo: usize,
        mask: [__mmask16; 2],
    ) {
        for (r, a) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(out.add(r * ldo), mask[0], a[0]);
            _mm512_mask_storeu_ps(out.add(r * ldo + 16), mask[1], a[1]);
        }
    }

    /// f32 panels, f32 activations (see [`super::TileFn`]; needs AVX-512F/BW/VL).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile_f32(
        x: *const f32,
        ldx: usize,
        w: *const u32,
        len: usize,
        out: *mut f32,
        ldo: usize,
        rows: usize,
        cols: usize,
        first: bool,
    ) {
        dispatch!(f32_kernel, x, ldx, w as *const f32, len, out, ldo, cols, first; rows)
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn f32_kernel<const R: usize>(
        x: *const f32,
        ldx: usize,
        w: *const f32,
        len: usize,
        out: *mut f32,
        ldo: usize,
        cols: usize,
        first: bool,
    ) {
        let mask = masks(cols);
        let mut acc = start::<R>(out, ldo, mask, first);
        for i in 0..len {
            prefetch(w.wrapping_add(32 * (i + PREFETCH_STEPS)) as *const u32);
            let w0 = _mm512_load_ps(w.add(32 * i));
            let w1 = _mm512_load_ps(w.add(32 * i + 16));
            for (r, a) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*x.add(r * ldx + i));
                a[0] = _mm512_fmadd_ps(b, w0, a[0]);
                a[1] = _mm512_fmadd_ps(b, w1, a[1]);
            }
        }
        finish(&acc, out, ldo, mask);
    }

    /// bf16 pair panels, bf16 activations, `vdpbf16ps` (see [`super::TileFn`]; needs
    /// AVX-512F/BW/VL and BF16).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile_bf16_dp(
        x: *const bf16,
        ldx: usize,
        w: *const u32,
        len: usize,
        out: *mut f32,
        ldo: usize,
        rows: usize,
        cols: usize,
        first: bool,
    ) {
        dispatch!(bf16_dp_kernel, x as *const u16, ldx, w, len, out, ldo, cols, first; rows)
    }

    #[inline(always)]
    fn bh(v: __m512i) -> __m512bh {
        // SAFETY: both are 512 bits of plain data; the bits are read as 32 bf16.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn bf16_dp_kernel<const R: usize>(
        x: *const u16,
        ldx: usize,
        w: *const u32,
        len: usize,
        out: *mut f32,
        ldo: usize,
        cols: usize,
        first: bool,
    ) {
        let mask = masks(cols);
        let mut acc = start::<R>(out, ldo, mask, first);
        let pairs = len / 2;
        for j in 0..pairs {
            prefetch(w.wrapping_add(32 * (j + PREFETCH_STEPS)));
            let w0 = bh(_mm512_load_si512(w.add(32 * j) as *const _));
            let w1 = bh(_mm512_load_si512(w.add(32 * j + 16) as *const _));
            for (r, a) in acc.iter_mut().enumerate() {
                // x[k] in the low half, x[k + 1] in the high half, as the panel's lanes.
                let pair = (x.add(r * ldx + 2 * j) as *const i32).read_unaligned();
                let b = bh(_mm512_set1_epi32(pair));
                a[0] = _mm512_dpbf16_ps(a[0], b, w0);
                a[1] = _mm512_dpbf16_ps(a[1], b, w1);
            }
        }
        if len % 2 == 1 {
            // The last k of an odd row: its partner in the panel is zero, in x it is set zero.
            let j = pairs;
            let w0 = bh(_mm512_load_si512(w.add(32 * j) as *const _));
            let w1 = bh(_mm512_load_si512(w.add(32 * j + 16) as *const _));
            for (r, a) in acc.iter_mut().enumerate() {
                let b = bh(_mm512_set1_epi32(*x.add(r * ldx + 2 * j) as i32));
                a[0] = _mm512_dpbf16_ps(a[0], b, w0);
                a[1] = _mm512_dpbf16_ps(a[1], b, w1);
            }
        }
        finish(&acc, out, ldo, mask);
    }

    /// bf16 pair panels widened in registers, f32 activations (see [`super::TileFn`]; needs
    /// AVX-512F/BW/VL).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile_bf16_widen(
        x: *const f32,
        ldx: usize,
        w: *const u32,
        len: usize,
        out: *mut f32,
        ldo: usize,
        rows: usize,
        cols: usize,
        first: bool,
    ) {
        dispatch!(bf16_widen_kernel, x, ldx, w, len, out, ldo, cols, first; rows)
    }

    /// The even-`k` (low halves) and odd-`k` (high halves) weights of a pair line, as f32.
    #[inline(always)]
    unsafe fn split(v: __m512i) -> [__m512; 2] {
        let hi = _mm512_set1_epi32(0xffff_0000u32 as i32);
        [
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)),
            _mm512_castsi512_ps(_mm512_and_si512(v, hi)),
        ]
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn bf16_widen_kernel<const R: usize>(
        x: *const f32,
        ldx: usize,
        w: *const u32,
        len: usize,
        out: *mut f32,
        ldo: usize,
        cols: usize,
        first: bool,
    ) {
        let mask = masks(cols);
        let mut acc = start::<R>(out, ldo, mask, first);
        for j in 0..len.div_ceil(2) {
            prefetch(w.wrapping_add(32 * (j + PREFETCH_STEPS)));
            let [e0, o0] = split(_mm512_load_si512(w.add(32 * j) as *const _));
            let [e1, o1] = split(_mm512_load_si512(w.add(32 * j + 16) as *const _));
            let odd = 2 * j + 1 < len;
            for (r, a) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*x.add(r * ldx + 2 * j));
                a[0] = _mm512_fmadd_ps(b, e0, a[0]);
                a[1] = _mm512_fmadd_ps(b, e1, a[1]);
                if odd {
                    let b = _mm512_set1_ps(*x.add(r * ldx + 2 * j + 1));
                    a[0] = _mm512_fmadd_ps(b, o0, a[0]);
                    a[1] = _mm512_fmadd_ps(b, o1, a[1]);
                }
            }
        }
        finish(&acc, out, ldo, mask);
    }
}

mod portable {
    use super::{MR, PANEL};

    /// Adds a tile's sums into `out`: f32 panels (see [`super::TileFn`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile_f32(
        x: *const f32,
        ldx: usize,
        w: *const u32,
        len: usize,
        out: *mut f32,
        ldo: usize,
        rows: usize,
        cols: usize,
        first: bool,
    ) {
        // SAFETY: the caller's guarantees, passed on.
        unsafe {
            let line = |i: usize| w.add(PANEL * i);
            tile(x, ldx, len, out, ldo, rows, cols, first, line, |_, b| {
                f32::from_bits(b)
            })
        }
    }

    /// Adds a tile's sums into `out`: bf16 pair panels, f32 activations.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile_bf16(
        x: *const f32,
        ldx: usize,
        w: *const u32,
        len: usize,
        out: *mut f32,
        ldo: usize,
        rows: usize,
        cols: usize,
        first: bool,
    ) {
        // SAFETY: the caller's guarantees, passed on.
        unsafe {
            let line = |i: usize| w.add(PANEL * (i / 2));
            tile(x, ldx, len, out, ldo, rows, cols, first, line, |i, b| {
                f32::from_bits(((b >> (16 * (i % 2))) & 0xffff) << 16)
            })
        }
    }

    /// The tile loop of both: `line(i)` is the panel line holding `k = i`, and `value(i, lane)`
    /// reads that `k`'s weight out of a lane of it.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        x: *const f32,
        ldx: usize,
        len: usize,
        out: *mut f32,
        ldo: usize,
        rows: usize,
        cols: usize,
        first: bool,
        line: impl Fn(usize) -> *const u32,
        value: impl Fn(usize, u32) -> f32,
    ) {
        let mut acc = [[0f32; PANEL]; MR];
        // SAFETY (all reads and writes below): within the ranges the caller guarantees.
        unsafe {
            load(&mut acc, out, ldo, rows, cols, first);
            for i in 0..len {
                let w = std::slice::from_raw_parts(line(i), PANEL);
                for (r, a) in acc.iter_mut().enumerate().take(rows) {
                    let b = *x.add(r * ldx + i);
                    for (a, w) in a.iter_mut().zip(w) {
                        *a += b * value(i, *w);
                    }
                }
            }
            store(&acc, out, ldo, rows, cols);
        }
    }

    unsafe fn load(
        acc: &mut [[f32; PANEL]; MR],
        out: *const f32,
        ldo: usize,
        rows: usize,
        cols: usize,
        first: bool,
    ) {
        if !first {
            for (r, a) in acc.iter_mut().enumerate().take(rows) {
                for (c, a) in a.iter_mut().enumerate().take(cols) {
                    // SAFETY: (r, c) is inside the tile.
                    *a = unsafe { *out.add(r * ldo + c) };
                }
            }
        }
    }

    unsafe fn store(acc: &[[f32; PANEL]; MR], out: *mut f32, ldo: usize, rows: usize, cols: usize) {
        for (r, a) in acc.iter().enumerate().take(rows) {
            for (c, a) in a.iter().enumerate().take(cols) {
                // SAFETY: (r, c) is inside the tile.
                unsafe { *out.add(r * ldo + c) = *a };
            }
        }
    }
}

// The rest of a layer on the CPU inference path: rotary split, attention over the cache, SwiGLU.
// candle's ops for these are correct but each is a separate pass with an allocation and, for
// most, a hand-off to the thread pool; at a few tokens per pass those costs add up to tens of
// milliseconds. Here they run on the calling thread unless the work is large, in f32.

/// An f32 or bf16 element read as f32.
trait Elem: Copy + Send + Sync {
    fn f(self) -> f32;
}
impl Elem for f32 {
    #[inline(always)]
    fn f(self) -> f32 {
        self
    }
}
impl Elem for bf16 {
    #[inline(always)]
    fn f(self) -> f32 {
        self.to_f32()
    }
}

/// Rounds f32 to bf16 (to nearest even, as `half` does), 16 lanes at a time where AVX-512 is.
fn to_bf16(v: &[f32]) -> Vec<bf16> {
    let mut out = vec![bf16::ZERO; v.len()];
    #[cfg(target_arch = "x86_64")]
    if Isa::detect() != Isa::Portable {
        // SAFETY: the CPU has AVX-512F/BW/VL; both slices have v.len() elements.
        unsafe { vmath::to_bf16(v, &mut out) };
        return out;
    }
    for (o, v) in out.iter_mut().zip(v) {
        *o = bf16::from_f32(*v);
    }
    out
}

/// Borrows the contiguous data of a CPU tensor as f32 or bf16 and calls `f` with it.
fn with_data<R>(
    t: &Tensor,
    f32s: impl FnOnce(&[f32]) -> Result<R>,
    bf16s: impl FnOnce(&[bf16]) -> Result<R>,
) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("CPU kernels: tensor is not on the CPU");
    };
    let (a, b) = layout
        .contiguous_offsets()
        .expect("contiguous() gives contiguous offsets");
    match cpu {
        CpuStorage::F32(v) => f32s(&v[a..b]),
        CpuStorage::BF16(v) => bf16s(&v[a..b]),
        _ => candle_core::bail!("CPU kernels: f32 or bf16 tensors only"),
    }
}

/// A tensor of `dtype` (f32 or bf16) from f32 values.
fn tensor_as(v: Vec<f32>, dims: &[usize], dtype: DType) -> Result<Tensor> {
    match dtype {
        DType::BF16 => Tensor::from_vec(to_bf16(&v), dims, &Device::Cpu),
        _ => Tensor::from_vec(v, dims, &Device::Cpu),
    }
}

/// `sqrt(mean(x^2) + eps)`, the RMS norm's divisor: 16 running sums of squares (vectorisable),
/// added in a fixed order.
fn rms(x: &[f32], eps: f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    for (a, v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += v * v;
    }
    (acc.iter().sum::<f32>() / x.len().max(1) as f32 + eps).sqrt()
}

/// Qwen3's RMS norm over each head of q and of k (weights `[head_dim]`, f32), applied by
/// [`split_rope`] before the rotation, as `x / sqrt(mean(x^2) + eps) * w`.
#[derive(Clone, Copy)]
pub(crate) struct QkNorm<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub eps: f32,
}

/// Splits the fused q/k/v projection `qkv [b, t, (heads + 2 kv_heads) * d]` into q
/// `[b][heads][t][d]` (returned as f32 data), k and v (`[b, kv_heads, t, d]` f32 tensors, the
/// cache's entries), rotating q and k (rotate-half rotary embedding) by `cos`/`sin`
/// `[b or 1][t][d / 2]`. Same arithmetic as candle's `rope`, in f32.
#[allow(clippy::too_many_arguments)]
pub(crate) fn split_rope(
    qkv: &Tensor,
    cos: &[f32],
    sin: &[f32],
    heads: usize,
    kv_heads: usize,
    d: usize,
    qk_norm: Option<QkNorm>,
) -> Result<(Vec<f32>, Tensor, Tensor)> {
    let (b, t, width) = qkv.dims3()?;
    let half = d / 2;
    if width != (heads + 2 * kv_heads) * d || !d.is_multiple_of(2) {
        candle_core::bail!("split_rope: width {width} for {heads}+2x{kv_heads} heads of {d}");
    }
    if qk_norm.is_some_and(|n| n.q.len() != d || n.k.len() != d) {
        candle_core::bail!("split_rope: q/k norm weights are not [{d}]");
    }
    let rot_rows = cos.len() / (t * half).max(1);
    if cos.len() != sin.len() || rot_rows == 0 || (rot_rows != 1 && rot_rows != b) {
        candle_core::bail!("split_rope: rotary tables for {rot_rows} rows, batch {b}");
    }
    fn inner<T: Elem>(
        src: &[T],
        (b, t, heads, kv_heads, d): (usize, usize, usize, usize, usize),
        cos: &[f32],
        sin: &[f32],
        rot_rows: usize,
        qk_norm: Option<QkNorm>,
    ) -> [Vec<f32>; 3] {
        let half = d / 2;
        let width = (heads + 2 * kv_heads) * d;
        // One output block [t][d] per (batch row, head); `first` is the head's first column in
        // the fused row; `rotate` for q and k (v is copied), with the head's norm weights if any.
        let fill = |block: &mut [f32], bi: usize, first: usize, rotate: Option<Option<&[f32]>>| {
            for (i, out) in block.chunks_exact_mut(d).enumerate() {
                let x = &src[(bi * t + i) * width + first..][..d];
                for (o, x) in out.iter_mut().zip(x) {
                    *o = x.f();
                }
                let Some(norm) = rotate else { continue };
                if let (Some(w), Some(n)) = (norm, qk_norm) {
                    let m = rms(out, n.eps);
                    for (o, w) in out.iter_mut().zip(w) {
                        *o = *o / m * w;
                    }
                }
                let r = (bi % rot_rows) * t + i;
                let (c, s) = (&cos[r * half..][..half], &sin[r * half..][..half]);
                for j in 0..half {
                    let (x1, x2) = (out[j], out[j + half]);
                    out[j] = x1 * c[j] - x2 * s[j];
                    out[j + half] = x1 * s[j] + x2 * c[j];
                }
            }
        };
        let mut q = vec![0f32; b * heads * t * d];
        let mut k = vec![0f32; b * kv_heads * t * d];
        let mut v = vec![0f32; b * kv_heads * t * d];
        let parallel = b * t * width >= PARALLEL_MIN_ELEMS && rayon::current_num_threads() > 1;
        let run = |out: &mut [f32], n: usize, first: usize, rotate: Option<Option<&[f32]>>| {
            let block = |(bh, block): (usize, &mut [f32])| {
                fill(block, bh / n, first + (bh % n) * d, rotate)
            };
            match parallel {
                true => out.par_chunks_mut(t * d).enumerate().for_each(block),
                false => out.chunks_mut(t * d).enumerate().for_each(block),
            }
        };
        run(&mut q, heads, 0, Some(qk_norm.map(|n| n.q)));
        run(&mut k, kv_heads, heads * d, Some(qk_norm.map(|n| n.k)));
        run(&mut v, kv_heads, (heads + kv_heads) * d, None);
        [q, k, v]
    }
    let shape = (b, t, heads, kv_heads, d);
    let [q, k, v] = with_data(
        qkv,
        |x| Ok(inner(x, shape, cos, sin, rot_rows, qk_norm)),
        |x| Ok(inner(x, shape, cos, sin, rot_rows, qk_norm)),
    )?;
    let kv_dims = (b, kv_heads, t, d);
    Ok((
        q,
        Tensor::from_vec(k, kv_dims, &Device::Cpu)?,
        Tensor::from_vec(v, kv_dims, &Device::Cpu)?,
    ))
}

/// Scaled dot-product attention of q `[b][heads][t][d]` (f32 data) over the f32 tensors `k`
/// and `v` `[b, kv_heads, len, d]` (views of the cache are fine: rows must be contiguous) with
/// the additive `mask` `[b or 1][t][len]`; heads share kv heads in groups. Returns
/// `[b, t, heads * d]` in `dtype`. Products run through `gemm` on the calling thread (heads
/// in parallel when the work is large); softmax as candle's: max, exp, sum, divide.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    q: &[f32],
    k: &Tensor,
    v: &Tensor,
    mask: &[f32],
    heads: usize,
    t: usize,
    scale: f32,
    dtype: DType,
) -> Result<Tensor> {
    let (b, kv_heads, len, d) = k.dims4()?;
    if v.dims4()? != (b, kv_heads, len, d)
        || q.len() != b * heads * t * d
        || !heads.is_multiple_of(kv_heads)
    {
        candle_core::bail!("attention: q/k/v shapes disagree");
    }
    let mask_rows = mask.len() / (t * len).max(1);
    if mask_rows == 0 || (mask_rows != 1 && mask_rows != b) || mask.len() != mask_rows * t * len {
        candle_core::bail!(
            "attention: mask of {} for {t} x {len}, batch {b}",
            mask.len()
        );
    }
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (
        candle_core::Storage::Cpu(CpuStorage::F32(kd)),
        candle_core::Storage::Cpu(CpuStorage::F32(vd)),
    ) = (&*ks, &*vs)
    else {
        candle_core::bail!("attention: k and v must be f32 CPU tensors");
    };
    let (kst, vst) = (kl.stride(), vl.stride());
    if kst[3] != 1 || vst[3] != 1 || kst[2] != d || vst[2] != d {
        candle_core::bail!("attention: k/v rows must be contiguous");
    }
    // Largest element offset either view reaches, checked once for the unsafe reads below.
    let reach =
        |st: &[usize], start: usize| start + (b - 1) * st[0] + (kv_heads - 1) * st[1] + len * d;
    if len > 0
        && (reach(kst, kl.start_offset()) > kd.len() || reach(vst, vl.start_offset()) > vd.len())
    {
        candle_core::bail!("attention: k/v views exceed their storage");
    }
    let group = heads / kv_heads;
    // Plain AVX-512 loops (dot products for the scores, broadcast multiply-adds for the weighted
    // sum, skipping masked keys) compute each query row on its own, in an order that does not
    // depend on how many rows share the pass or where the masked keys sit: a row of a tree pass
    // is then bit-for-bit the row a beam-search step computes, and strict lists equal the
    // target's own exactly, in bf16 too. gemm (other head sizes, CPUs without AVX-512) sums
    // in another order per pass shape.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    let loops = d.is_multiple_of(16)
        && d <= 128
        && Isa::detect() != Isa::Portable
        && cfg!(target_arch = "x86_64");
    let mut out = vec![0f32; b * t * heads * d];
    if len == 0 || t == 0 {
        return tensor_as(out, &[b, t, heads * d], dtype);
    }
    let out_ptr = OutPtr(out.as_mut_ptr());
    let (kp, vp) = (kd.as_ptr() as usize, vd.as_ptr() as usize);
    let (k0, v0) = (kl.start_offset(), vl.start_offset());
    let head = move |bh: usize| {
        let out_ptr = out_ptr;
        let (bi, h) = (bh / heads, bh % heads);
        let g = h / group;
        let kg = (kp as *const f32).wrapping_add(k0 + bi * kst[0] + g * kst[1]);
        let vg = (vp as *const f32).wrapping_add(v0 + bi * vst[0] + g * vst[1]);
        let qh = &q[bh * t * d..][..t * d];
        let mut s = vec![0f32; t * len];
        let dst = out_ptr.0.wrapping_add(bi * t * heads * d + h * d);
        #[cfg(target_arch = "x86_64")]
        if loops {
            // SAFETY: the CPU has AVX-512F; d = 16 * chunks with chunks in 1..=8; q_h is [t, d],
            // k_g and v_g hold len rows of d contiguous f32 (checked above), s and m are [t, len], and
            // dst has t rows of d writable f32, heads * d apart, which only this head writes.
            unsafe {
                let m = &mask[(bi % mask_rows) * t * len..][..t * len];
                vmath::scores(
                    qh.as_ptr(),
                    kg,
                    t,
                    len,
                    d,
                    scale,
                    m.as_ptr(),
                    s.as_mut_ptr(),
                );
                for (row, m) in s.chunks_exact_mut(len).zip(m.chunks_exact(len)) {
                    softmax_row(row, m);
                }
                vmath::weighted_sum(s.as_ptr(), vg, t, len, d, dst, heads * d);
            }
            return;
        }
        // SAFETY: q_h is [t, d]; k_g and v_g hold len rows of d contiguous f32 inside their
        // storage (checked above); s is [t, len]; out rows are heads * d apart and this head
        // writes only its d columns of them.
        unsafe {
            gemm::gemm(
                t,
                len,
                d,
                s.as_mut_ptr(),
                1,
                len as isize,
                false,
                qh.as_ptr(),
                1,
                d as isize,
                kg,
                d as isize,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        let m = &mask[(bi % mask_rows) * t * len..][..t * len];
        for (row, m) in s.chunks_exact_mut(len).zip(m.chunks_exact(len)) {
            softmax_row(row, m);
        }
        // SAFETY: as above.
        unsafe {
            gemm::gemm(
                t,
                d,
                len,
                dst,
                1,
                (heads * d) as isize,
                false,
                s.as_ptr(),
                1,
                len as isize,
                vg,
                1,
                d as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    };
    let work = b * heads * t * len * d;
    if rayon::current_num_threads() > 1 && b * heads > 1 && work >= PARALLEL_MIN_MACS {
        (0..b * heads).into_par_iter().for_each(head);
    } else {
        (0..b * heads).for_each(head);
    }
    tensor_as(out, &[b, t, heads * d], dtype)
}

/// `row = softmax(row + mask)` in place.
fn softmax_row(row: &mut [f32], mask: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if Isa::detect() != Isa::Portable {
        // SAFETY: the CPU has AVX-512F; the slices are the same length.
        unsafe { vmath::softmax_row(row, mask) };
        return;
    }
    let mut max = f32::NEG_INFINITY;
    for (s, m) in row.iter_mut().zip(mask) {
        *s += m;
        max = max.max(*s);
    }
    let mut sum = 0f32;
    for s in row.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    for s in row.iter_mut() {
        *s /= sum;
    }
}

/// The residual add and the RMS norm that follows it, in one pass over `[.., h]` rows of f32 or
/// bf16: returns `(x + y, rms_norm(x + y) * w)`, or `(x, rms_norm(x) * w)` without `y`, in `x`'s
/// dtype (`y` may be unrounded f32 sums). As candle's ops: the sum rounded to the dtype, then
/// `v / sqrt(mean(v^2) + eps) * w` computed in f32 and rounded once (candle's bf16 norm rounds
/// the divisor and the quotient too).
pub(crate) fn add_rms_norm(
    x: &Tensor,
    y: Option<&Tensor>,
    w: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let dims = x.dims().to_vec();
    let h = *dims.last().unwrap_or(&0);
    if w.dims() != [h] || y.is_some_and(|y| y.dims() != dims) || h == 0 {
        candle_core::bail!("add_rms_norm: shapes {dims:?} {:?}", w.dims());
    }
    let dtype = x.dtype();
    let to_f32 = |t: &Tensor| -> Result<Vec<f32>> {
        with_data(
            t,
            |v| Ok(v.to_vec()),
            |v| Ok(v.iter().map(|b| b.to_f32()).collect()),
        )
    };
    let mut sum = to_f32(x)?;
    if let Some(y) = y {
        let y = to_f32(y)?;
        for (s, y) in sum.iter_mut().zip(&y) {
            *s += y;
        }
        if dtype == DType::BF16 {
            let rounded = to_bf16(&sum);
            for (s, r) in sum.iter_mut().zip(rounded) {
                *s = r.to_f32();
            }
        }
    }
    let w = to_f32(w)?;
    let mut out = vec![0f32; sum.len()];
    let row = |(o, s): (&mut [f32], &[f32])| {
        let m = rms(s, eps);
        for ((o, s), w) in o.iter_mut().zip(s).zip(&w) {
            *o = s / m * w;
        }
    };
    if sum.len() >= PARALLEL_MIN_ELEMS && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(h).zip(sum.par_chunks(h)).for_each(row);
    } else {
        out.chunks_mut(h).zip(sum.chunks(h)).for_each(row);
    }
    Ok((tensor_as(sum, &dims, dtype)?, tensor_as(out, &dims, dtype)?))
}

/// SwiGLU of the fused gate/up projection `gu [.., 2 * inter]` (f32 or bf16): `silu(gate) * up`,
/// `[.., inter]` in `dtype` (computed in f32, rounded once).
pub(crate) fn silu_mul(gu: &Tensor, dtype: DType) -> Result<Tensor> {
    let mut dims = gu.dims().to_vec();
    let width = *dims.last().unwrap_or(&0);
    if !width.is_multiple_of(2) {
        candle_core::bail!("silu_mul: odd width {width}");
    }
    let inter = width / 2;
    *dims.last_mut().expect("width checked") = inter;
    let rows = gu.elem_count() / width.max(1);
    fn inner<T: Elem>(src: &[T], rows: usize, inter: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * inter];
        let row = |(o, row): (&mut [f32], &[T])| {
            let (g, u) = row.split_at(inter);
            #[cfg(target_arch = "x86_64")]
            if Isa::detect() != Isa::Portable {
                // SAFETY: the CPU has AVX-512F/BW/VL; the three slices have inter elements.
                unsafe { vmath::silu_mul(g, u, o) };
                return;
            }
            for ((o, g), u) in o.iter_mut().zip(g).zip(u) {
                let g = g.f();
                *o = g / (1.0 + (-g).exp()) * u.f();
            }
        };
        if rows * inter >= PARALLEL_MIN_ELEMS && rayon::current_num_threads() > 1 {
            out.par_chunks_exact_mut(inter)
                .zip(src.par_chunks_exact(2 * inter))
                .for_each(row);
        } else {
            out.chunks_exact_mut(inter)
                .zip(src.chunks_exact(2 * inter))
                .for_each(row);
        }
        out
    }
    let out = with_data(
        gu,
        |x| Ok(inner(x, rows, inter)),
        |x| Ok(inner(x, rows, inter)),
    )?;
    tensor_as(out, &dims, dtype)
}

/// AVX-512 exp, softmax, SwiGLU and bf16 rounding.
#[cfg(target_arch = "x86_64")]
mod vmath {
    use std::arch::x86_64::*;

    use half::bf16;

    use super::Elem;

    /// `e^x` per lane (Cephes' expf: range reduction by ln 2, degree-6 polynomial, scale by 2^n;
    /// within 2 ulp), 0 below -87.3 (so a -inf mask entry gives exactly 0).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn exp(x: __m512) -> __m512 {
        let lo = _mm512_set1_ps(-87.336_55);
        let xc = _mm512_min_ps(_mm512_max_ps(x, lo), _mm512_set1_ps(88.722_83));
        let n = _mm512_roundscale_ps::<0x08>(_mm512_mul_ps(
            xc,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), xc);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let e = _mm512_add_ps(
            _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r),
            _mm512_set1_ps(1.0),
        );
        let y = _mm512_scalef_ps(e, n);
        _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, lo), y)
    }

    /// 16 elements from `p` (masked to the first `n`), as f32.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn load<T: Elem>(p: *const T, n: usize) -> __m512 {
        let m: __mmask16 = if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as u16
        };
        if size_of::<T>() == 4 {
            _mm512_maskz_loadu_ps(m, p as *const f32)
        } else {
            let h = _mm256_maskz_loadu_epi16(m, p as *const i16);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }

    /// `row = softmax(row + mask)`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn softmax_row(row: &mut [f32], mask: &[f32]) {
        let n = row.len().min(mask.len());
        let p = row.as_mut_ptr();
        let mut maxv = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i < n {
            let m: __mmask16 = if n - i >= 16 {
                0xffff
            } else {
                ((1u32 << (n - i)) - 1) as u16
            };
            let s = _mm512_add_ps(
                _mm512_maskz_loadu_ps(m, p.add(i)),
                _mm512_maskz_loadu_ps(m, mask.as_ptr().add(i)),
            );
            _mm512_mask_storeu_ps(p.add(i), m, s);
            maxv = _mm512_mask_max_ps(maxv, m, maxv, s);
            i += 16;
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(maxv));
        // The non-zero terms are summed in their order, lane by their rank among those terms
        // (packed through `buf`), not by their position in the row: masked keys (exactly zero
        // terms) sit at other positions in a tree pass than in a beam-search step, and the sum
        // must not notice, so a row's attention is bit-for-bit the same in both. A NaN term is
        // kept (unordered compare), so a NaN still shows.
        let mut sumv = _mm512_setzero_ps();
        let mut buf = [0f32; 32];
        let mut filled = 0usize;
        i = 0;
        while i < n {
            let m: __mmask16 = if n - i >= 16 {
                0xffff
            } else {
                ((1u32 << (n - i)) - 1) as u16
            };
            let e = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p.add(i)), max));
            let e = _mm512_maskz_mov_ps(m, e);
            _mm512_mask_storeu_ps(p.add(i), m, e);
            let keep = _mm512_mask_cmp_ps_mask::<_CMP_NEQ_UQ>(m, e, _mm512_setzero_ps());
            _mm512_mask_compressstoreu_ps(buf.as_mut_ptr().add(filled), keep, e);
            filled += keep.count_ones() as usize;
            if filled >= 16 {
                sumv = _mm512_add_ps(sumv, _mm512_loadu_ps(buf.as_ptr()));
                buf.copy_within(16..filled, 0);
                filled -= 16;
            }
            i += 16;
        }
        let rest = ((1u32 << filled) - 1) as u16;
        sumv = _mm512_add_ps(sumv, _mm512_maskz_loadu_ps(rest, buf.as_ptr()));
        let sum = _mm512_set1_ps(_mm512_reduce_add_ps(sumv));
        i = 0;
        while i < n {
            let m: __mmask16 = if n - i >= 16 {
                0xffff
            } else {
                ((1u32 << (n - i)) - 1) as u16
            };
            let s = _mm512_div_ps(_mm512_maskz_loadu_ps(m, p.add(i)), sum);
            _mm512_mask_storeu_ps(p.add(i), m, s);
            i += 16;
        }
    }

    /// `s[i][j] = scale * (q_i . k_j)` for `t` query rows and `len` keys of `d` (a multiple of
    /// 16, at most 128) contiguous f32: each dot product in 16 lanes, summed across lanes once.
    /// Entries whose `mask` (`[t][len]`) is -inf are left as they are (the softmax adds -inf to
    /// them whatever they hold): a causal prefill skips half its products, a tree pass most.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn scores(
        q: *const f32,
        k: *const f32,
        t: usize,
        len: usize,
        d: usize,
        scale: f32,
        mask: *const f32,
        s: *mut f32,
    ) {
        let chunks = d / 16;
        let masked = |i: usize, j: usize| *mask.add(i * len + j) == f32::NEG_INFINITY;
        for j in 0..len {
            let kj = k.add(j * d);
            let mut kv = [_mm512_setzero_ps(); 8];
            for (c, v) in kv.iter_mut().enumerate().take(chunks) {
                *v = _mm512_loadu_ps(kj.add(16 * c));
            }
            let mut i = 0;
            while i + 4 <= t {
                if (i..i + 4).all(|r| masked(r, j)) {
                    i += 4;
                    continue;
                }
                let mut acc = [_mm512_setzero_ps(); 4];
                for (c, v) in kv.iter().enumerate().take(chunks) {
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(_mm512_loadu_ps(q.add((i + r) * d + 16 * c)), *v, *a);
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    *s.add((i + r) * len + j) = _mm512_reduce_add_ps(*a) * scale;
                }
                i += 4;
            }
            while i < t {
                if masked(i, j) {
                    i += 1;
                    continue;
                }
                let mut a = _mm512_setzero_ps();
                for (c, v) in kv.iter().enumerate().take(chunks) {
                    a = _mm512_fmadd_ps(_mm512_loadu_ps(q.add(i * d + 16 * c)), *v, a);
                }
                *s.add(i * len + j) = _mm512_reduce_add_ps(a) * scale;
                i += 1;
            }
        }
    }

    /// `out_i = sum_j p[i][j] v_j` for `t` rows of `len` weights and `len` values of `d` (a
    /// multiple of 16, at most 128) contiguous f32, written to `out + i * ldo`. Zero weights
    /// (masked entries) are skipped.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted_sum(
        p: *const f32,
        v: *const f32,
        t: usize,
        len: usize,
        d: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        let chunks = d / 16;
        for i in 0..t {
            let mut acc = [_mm512_setzero_ps(); 8];
            for j in 0..len {
                let w = *p.add(i * len + j);
                if w == 0.0 {
                    continue;
                }
                let b = _mm512_set1_ps(w);
                let vj = v.add(j * d);
                for (c, a) in acc.iter_mut().enumerate().take(chunks) {
                    *a = _mm512_fmadd_ps(b, _mm512_loadu_ps(vj.add(16 * c)), *a);
                }
            }
            for (c, a) in acc.iter().enumerate().take(chunks) {
                _mm512_storeu_ps(out.add(i * ldo + 16 * c), *a);
            }
        }
    }

    /// `o = g / (1 + e^-g) * u`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn silu_mul<T: Elem>(g: &[T], u: &[T], o: &mut [f32]) {
        let n = o.len().min(g.len()).min(u.len());
        let mut i = 0;
        while i < n {
            let left = n - i;
            let gv = load(g.as_ptr().add(i), left);
            let uv = load(u.as_ptr().add(i), left);
            let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), gv));
            let s = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0), e));
            let m: __mmask16 = if left >= 16 {
                0xffff
            } else {
                ((1u32 << left) - 1) as u16
            };
            _mm512_mask_storeu_ps(o.as_mut_ptr().add(i), m, _mm512_mul_ps(s, uv));
            i += 16;
        }
    }

    /// f32 to bf16, rounding to nearest even (NaN stays NaN), as `half::bf16::from_f32`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn to_bf16(v: &[f32], out: &mut [bf16]) {
        let n = v.len().min(out.len());
        let mut i = 0;
        while i < n {
            let left = n - i;
            let m: __mmask16 = if left >= 16 {
                0xffff
            } else {
                ((1u32 << left) - 1) as u16
            };
            let x = _mm512_maskz_loadu_ps(m, v.as_ptr().add(i));
            let bits = _mm512_castps_si512(x);
            let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
            let rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
            let quiet = _mm512_or_si512(bits, _mm512_set1_epi32(0x0040_0000));
            let r = _mm512_srli_epi32::<16>(_mm512_mask_mov_epi32(rounded, nan, quiet));
            _mm256_mask_storeu_epi16(
                out.as_mut_ptr().add(i) as *mut i16,
                m,
                _mm512_cvtepi32_epi16(r),
            );
            i += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Checks `got` against an f64 `x · wᵀ`: each output within `tol` times the sum of the
    /// |products| behind it (a dot product's rounding error scales with that, not the result).
    fn check(got: &[f32], x: &[f32], w: &[f32], m: usize, k: usize, n: usize, tol: f64) {
        for r in 0..m {
            for c in 0..n {
                let prods = (0..k).map(|i| x[r * k + i] as f64 * w[c * k + i] as f64);
                let want: f64 = prods.clone().sum();
                let scale = prods.map(f64::abs).sum::<f64>().max(1e-30);
                let err = (got[r * n + c] as f64 - want).abs() / scale;
                assert!(
                    err <= tol,
                    "m {m} k {k} n {n} at ({r}, {c}): got {} want {want} (error {err:e})",
                    got[r * n + c]
                );
            }
        }
    }

    fn random(len: usize, rng: &mut impl Rng) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    #[test]
    fn packing_round_trips_bit_for_bit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for (k, n) in [(1, 1), (7, 5), (33, 40), (64, 65)] {
            let w = random(n * k, &mut rng);
            let t = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu).unwrap();
            let back = Packed::from_f32(&w, n, k).unwrap().to_tensor().unwrap();
            assert_eq!(back.flatten_all().unwrap().to_vec1::<f32>().unwrap(), w);
            let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
            let back = Packed::from_bf16(&wb, n, k).unwrap().to_tensor().unwrap();
            assert_eq!(back.flatten_all().unwrap().to_vec1::<bf16>().unwrap(), wb);
            let ids = [n as u32 - 1, 0, (n / 2) as u32];
            let rows = Packed::from_f32(&w, n, k).unwrap().gather(&ids).unwrap();
            let want = t
                .index_select(&Tensor::new(&ids, &Device::Cpu).unwrap(), 0)
                .unwrap();
            assert_eq!(
                rows.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
            assert!(Packed::from_f32(&w, n, k)
                .unwrap()
                .gather(&[n as u32])
                .is_err());
        }
    }

    /// (k, n): odd and even sizes, panels partly filled, chunks of several sizes (f32 chunks
    /// are 128 k, bf16 256 k).
    const SHAPES: [(usize, usize); 8] = [
        (1, 1),
        (7, 5),
        (16, 32),
        (33, 13),
        (100, 33),
        (129, 70),
        (257, 31),
        (1536, 6),
    ];

    #[test]
    fn f32_kernels_match_a_plain_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for isa in Isa::available() {
            for m in [1, 3, 20, 33] {
                for (k, n) in SHAPES {
                    let x = random(m * k, &mut rng);
                    let w = random(n * k, &mut rng);
                    let got = Packed::from_f32(&w, n, k).unwrap().matmul_f32(&x, m, isa);
                    // f32 sums of up to 1536 terms: far inside 1e-5 of the sum of |products|.
                    check(&got, &x, &w, m, k, n, 1e-5);
                }
            }
        }
    }

    #[test]
    fn bf16_kernels_match_a_plain_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for isa in Isa::available() {
            for m in [1, 3, 20, 33] {
                for (k, n) in SHAPES {
                    let xb: Vec<bf16> = random(m * k, &mut rng)
                        .into_iter()
                        .map(bf16::from_f32)
                        .collect();
                    let wb: Vec<bf16> = random(n * k, &mut rng)
                        .into_iter()
                        .map(bf16::from_f32)
                        .collect();
                    let got: Vec<f32> = Packed::from_bf16(&wb, n, k)
                        .unwrap()
                        .matmul_bf16(&xb, m, isa)
                        .iter()
                        .map(|v| v.to_f32())
                        .collect();
                    let x: Vec<f32> = xb.iter().map(|v| v.to_f32()).collect();
                    let w: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
                    // Exact products, f32 sums, one rounding to bf16 (2^-9 of the result).
                    check(&got, &x, &w, m, k, n, 4e-3);
                }
            }
        }
    }

    #[test]
    fn a_row_does_not_depend_on_the_other_rows_or_the_threads() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Several panels and chunks, enough work for the thread pool.
        let (k, n) = (600, 200);
        let w = random(n * k, &mut rng);
        let xs = random(33 * k, &mut rng);
        let xb: Vec<bf16> = xs.iter().map(|&v| bf16::from_f32(v)).collect();
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let (pf, pb) = (
            Packed::from_f32(&w, n, k).unwrap(),
            Packed::from_bf16(&wb, n, k).unwrap(),
        );
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        for isa in Isa::available() {
            let all = pf.matmul_f32(&xs, 33, isa);
            let some = pf.matmul_f32(&xs[..20 * k], 20, isa);
            let all_b = pb.matmul_bf16(&xb, 33, isa);
            for r in [0, 7, 19] {
                let one = pf.matmul_f32(&xs[r * k..(r + 1) * k], 1, isa);
                assert_eq!(one, all[r * n..(r + 1) * n], "{isa:?} row {r}: alone vs 33");
                assert_eq!(
                    one,
                    some[r * n..(r + 1) * n],
                    "{isa:?} row {r}: alone vs 20"
                );
                let one_b = pb.matmul_bf16(&xb[r * k..(r + 1) * k], 1, isa);
                assert_eq!(one_b, all_b[r * n..(r + 1) * n], "{isa:?} bf16 row {r}");
            }
            let single = one_thread.install(|| pf.matmul_f32(&xs, 33, isa));
            assert_eq!(single, all, "{isa:?}: one thread vs the default pool");
        }
    }

    #[test]
    fn forward_matches_candle() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let (m, k, n) = (5, 37, 11);
        let x = Tensor::from_vec(random(2 * m * k, &mut rng), (2, m, k), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(random(n * k, &mut rng), (n, k), &Device::Cpu).unwrap();
        let want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let (x, w) = (x.to_dtype(dtype).unwrap(), w.to_dtype(dtype).unwrap());
            let Some(p) = Packed::from_tensor(&w).unwrap() else {
                assert_eq!(dtype, DType::F32, "bf16 always packs");
                continue;
            };
            let got = p.forward(&x).unwrap();
            assert_eq!(got.dims(), &[2, m, n]);
            assert_eq!(got.dtype(), dtype);
            let diff = (got.to_dtype(DType::F32).unwrap() - &want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 0.05, "{dtype:?}: max |diff| {diff}");
        }
    }

    /// Plain f32 references for the layer helpers.
    fn rope_ref(x: &[f32], c: &[f32], s: &[f32]) -> Vec<f32> {
        let h = x.len() / 2;
        (0..2 * h)
            .map(|j| match j < h {
                true => x[j] * c[j] - x[j + h] * s[j],
                false => x[j - h] * s[j - h] + x[j] * c[j - h],
            })
            .collect()
    }

    #[test]
    fn split_rope_matches_a_plain_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        // Small (calling thread) and large enough for the thread pool; grouped kv heads.
        for (b, t) in [(2, 3), (1, 600)] {
            let (heads, kv, d) = (4, 2, 64);
            let width = (heads + 2 * kv) * d;
            let x = random(b * t * width, &mut rng);
            let (cos, sin) = (random(t * d / 2, &mut rng), random(t * d / 2, &mut rng));
            let qkv = Tensor::from_vec(x.clone(), (b, t, width), &Device::Cpu).unwrap();
            let (q, k, v) = split_rope(&qkv, &cos, &sin, heads, kv, d, None).unwrap();
            let k: Vec<f32> = k.flatten_all().unwrap().to_vec1().unwrap();
            let v: Vec<f32> = v.flatten_all().unwrap().to_vec1().unwrap();
            for bi in 0..b {
                for i in 0..t {
                    let row = &x[(bi * t + i) * width..][..width];
                    let (c, s) = (&cos[i * d / 2..][..d / 2], &sin[i * d / 2..][..d / 2]);
                    for h in 0..heads {
                        let got = &q[((bi * heads + h) * t + i) * d..][..d];
                        assert_eq!(got, rope_ref(&row[h * d..][..d], c, s), "q {bi} {i} {h}");
                    }
                    for h in 0..kv {
                        let at = ((bi * kv + h) * t + i) * d;
                        let want = rope_ref(&row[(heads + h) * d..][..d], c, s);
                        assert_eq!(&k[at..at + d], want, "k {bi} {i} {h}");
                        assert_eq!(&v[at..at + d], &row[(heads + kv + h) * d..][..d], "v");
                    }
                }
            }
        }
    }

    #[test]
    fn attention_matches_a_plain_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        // (t, len, d): a few tokens over a cache (AVX-512 loops where there are, head sizes 32
        // and 128); a long pass (gemm, thread pool); a head size the loops do not take (gemm).
        for (t, len, d) in [(3, 11, 32), (20, 102, 128), (64, 200, 32), (5, 40, 24)] {
            let (b, heads, kv, cap) = (1, 4, 2, len + 5);
            let q = random(b * heads * t * d, &mut rng);
            // k and v as views of a larger buffer, as the cache hands them out.
            let buf = |rng: &mut rand_chacha::ChaCha8Rng| {
                let t =
                    Tensor::from_vec(random(b * kv * cap * d, rng), (b, kv, cap, d), &Device::Cpu);
                t.unwrap().narrow(2, 0, len).unwrap()
            };
            let (k, v) = (buf(&mut rng), buf(&mut rng));
            // Each row sees a random half of the entries and always the first.
            let mask: Vec<f32> = (0..t * len)
                .map(|i| match i % len == 0 || rng.random_bool(0.5) {
                    true => 0.0,
                    false => f32::NEG_INFINITY,
                })
                .collect();
            let scale = 0.3;
            let got: Vec<f32> = attention(&q, &k, &v, &mask, heads, t, scale, DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let kd: Vec<f32> = k
                .contiguous()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let vd: Vec<f32> = v
                .contiguous()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for h in 0..heads {
                let g = h / (heads / kv);
                for i in 0..t {
                    let qi = &q[(h * t + i) * d..][..d];
                    let s: Vec<f64> = (0..len)
                        .map(|j| {
                            let kj = &kd[(g * len + j) * d..][..d];
                            let dot: f64 = qi.iter().zip(kj).map(|(a, b)| (a * b) as f64).sum();
                            dot * scale as f64 + mask[i * len + j] as f64
                        })
                        .collect();
                    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for c in 0..d {
                        let want: f64 = (0..len)
                            .map(|j| e[j] / sum * vd[(g * len + j) * d + c] as f64)
                            .sum();
                        let got = got[i * heads * d + h * d + c] as f64;
                        assert!(
                            (got - want).abs() < 1e-5,
                            "t {t} h {h} i {i} c {c}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn silu_mul_matches_a_plain_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // A few rows (calling thread) and enough for the thread pool; odd widths; big |g|.
        for (rows, inter) in [(3, 37), (70, 4100)] {
            let x: Vec<f32> = random(rows * 2 * inter, &mut rng)
                .iter()
                .map(|v| v * 30.0)
                .collect();
            let gu = Tensor::from_vec(x.clone(), (rows, 2 * inter), &Device::Cpu).unwrap();
            let got: Vec<f32> = silu_mul(&gu, DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for r in 0..rows {
                for c in 0..inter {
                    let (g, u) = (
                        x[r * 2 * inter + c] as f64,
                        x[r * 2 * inter + inter + c] as f64,
                    );
                    let want = g / (1.0 + (-g).exp()) * u;
                    let got = got[r * inter + c] as f64;
                    assert!(
                        (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "{r} {c}: {got} vs {want}"
                    );
                }
            }
            // bf16 in, bf16 out: within bf16 rounding of the f32 result.
            let gb = gu.to_dtype(DType::BF16).unwrap();
            let xb: Vec<f32> = gb
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let got: Vec<f32> = silu_mul(&gb, DType::BF16)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for r in 0..rows {
                for c in 0..inter {
                    let (g, u) = (
                        xb[r * 2 * inter + c] as f64,
                        xb[r * 2 * inter + inter + c] as f64,
                    );
                    let want = g / (1.0 + (-g).exp()) * u;
                    let got = got[r * inter + c] as f64;
                    assert!(
                        (got - want).abs() <= 4e-3 * want.abs() + 1e-30,
                        "bf16 {r} {c}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn bf16_rounding_matches_half() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let mut v: Vec<f32> = random(1000, &mut rng).iter().map(|x| x * 1e3).collect();
        // Ties, overflow, infinities, NaN, zeros, subnormals.
        v.extend([
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            0.0,
            -0.0,
            1e-40,
        ]);
        let got = to_bf16(&v);
        for (g, x) in got.iter().zip(&v) {
            let want = bf16::from_f32(*x);
            assert!(
                g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                "{x}: {g} vs {want}"
            );
        }
    }

    #[test]
    fn add_rms_norm_matches_candle() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        // A few rows and enough rows for the thread pool; a width that is not a multiple of 16.
        for rows in [3, 300] {
            let h = 1000;
            let t = |rng: &mut rand_chacha::ChaCha8Rng, n: usize, dims: &[usize]| {
                Tensor::from_vec(random(n, rng), dims, &Device::Cpu).unwrap()
            };
            let (x, y, w) = (
                t(&mut rng, rows * h, &[1, rows, h]),
                t(&mut rng, rows * h, &[1, rows, h]),
                t(&mut rng, h, &[h]),
            );
            for (dtype, tol) in [(DType::F32, 1e-5f32), (DType::BF16, 2e-2)] {
                let (x, y, w) = (
                    x.to_dtype(dtype).unwrap(),
                    y.to_dtype(dtype).unwrap(),
                    w.to_dtype(dtype).unwrap(),
                );
                let (sum, normed) = add_rms_norm(&x, Some(&y), &w, 1e-6).unwrap();
                let want_sum = (&x + &y).unwrap();
                let want = candle_nn::ops::rms_norm(&want_sum, &w, 1e-6).unwrap();
                let diff = |a: &Tensor, b: &Tensor| {
                    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
                        .unwrap()
                        .abs()
                        .unwrap()
                        .max_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                };
                assert_eq!(diff(&sum, &want_sum), 0.0, "{dtype:?} sum");
                assert!(
                    diff(&normed, &want) <= tol,
                    "{dtype:?} norm {}",
                    diff(&normed, &want)
                );
                let (same, normed) = add_rms_norm(&x, None, &w, 1e-6).unwrap();
                assert_eq!(diff(&same, &x), 0.0);
                let want = candle_nn::ops::rms_norm(&x, &w, 1e-6).unwrap();
                assert!(diff(&normed, &want) <= tol, "{dtype:?} norm alone");
            }
        }
    }
}
