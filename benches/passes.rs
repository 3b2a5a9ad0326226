//! Times single decoder passes through the public API, shaped as decoding runs them.
//!
//! `cargo bench --bench passes -- DIR [--dtype f32|bf16] [--reps N] [--only SHAPE,...]
//! [--calibrate]` (DIR may also come from `ATSPEED_BENCH_MODEL`).
//!
//! Shapes (a synthetic 82-token prompt; attention cost does not depend on token values):
//! - `step1`: one token over the cached prompt (a one-beam step),
//! - `step20`: 20 sibling tokens over the cached prompt (a 20-beam step),
//! - `prefill82`: the prompt from an empty cache,
//! - `tree202`: the prompt plus a 3-depth, 40-wide tree (120 tokens) from an empty cache,
//!   scoring 121 rows, as a fused verification pass does.
//!
//! Each figure is the median of `--reps` timed passes after one untimed warm-up; the cache the
//! `step` shapes extend is rebuilt (untimed) before each pass. Effective rates: GB/s = weight
//! bytes / time, GFLOP/s = 2 * params * tokens / time (the linear layers; attention is extra).
//! The goals are the issue's: memory-bound passes within 1.5x of weight bytes / 24 GB/s,
//! prefills within 1.5x of 2 * params * tokens / 248 GFLOP/s (this machine's sgemm rate).
//! `--calibrate` re-measures both yardsticks here (one-thread sum over 1 GiB; a candle f32
//! 2048^3 matmul on the configured threads).

use std::path::PathBuf;
use std::time::Instant;

use atspeed::decode::tree::{ModelState, NodeId, Rows, Tree};
use atspeed::model::Llm;
use candle_core::{DType, Device, Tensor};

const PROMPT: usize = 82;
const STREAM_GBS: f64 = 24.0;
const SGEMM_GFLOPS: f64 = 248.0;

struct Args {
    dir: Option<PathBuf>,
    dtype: DType,
    reps: usize,
    only: Option<Vec<String>>,
    calibrate: bool,
    /// Seconds to loop each shape of `--only` (default all) for an outside profiler (steps
    /// through `Llm::log_probs` on one cache cut back after each).
    spin: Option<f64>,
    /// Time one layer's four products alone (`--kernel`), the inference kernel against candle.
    kernel: bool,
}

fn parse_args() -> Args {
    let mut dir = std::env::var_os("ATSPEED_BENCH_MODEL").map(PathBuf::from);
    let mut dtype = DType::F32;
    let mut reps = 7;
    let mut only = None;
    let mut calibrate = false;
    let mut spin = None;
    let mut kernel = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dtype" => {
                dtype = match it.next().as_deref() {
                    Some("f32") => DType::F32,
                    Some("bf16") => DType::BF16,
                    Some("f16") => DType::F16,
                    other => panic!("--dtype: f32, bf16 or f16, not {other:?}"),
                }
            }
            "--reps" => reps = it.next().and_then(|n| n.parse().ok()).expect("--reps N"),
            "--only" => {
                only = Some(
                    it.next()
                        .expect("--only SHAPE,...")
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            "--calibrate" => calibrate = true,
            "--kernel" => kernel = true,
            "--spin" => spin = Some(it.next().and_then(|n| n.parse().ok()).expect("--spin SECS")),
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            s if s.starts_with('-') => panic!("unknown option {s}"),
            s => dir = Some(PathBuf::from(s)),
        }
    }
    Args {
        dir,
        dtype,
        reps: reps.max(1),
        only,
        calibrate,
        spin,
        kernel,
    }
}

/// CPU time of all this process's threads so far, in ms (Linux schedstat; 0 elsewhere). On a
/// shared machine, wall time says what a pass cost while others ran too; CPU time says what it
/// cost the cores it got.
fn cpu_ms() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median, min and max wall milliseconds of `op` on a fresh state from `setup` (untimed), after
/// one warm-up, and the median CPU milliseconds (all threads).
fn time(
    reps: usize,
    setup: &dyn Fn() -> ModelState,
    op: &dyn Fn(&mut ModelState),
) -> (f64, f64, f64, f64) {
    op(&mut setup());
    let mut v = Vec::with_capacity(reps);
    let mut cpu = Vec::with_capacity(reps);
    for _ in 0..reps {
        let mut st = setup();
        let c = cpu_ms();
        let t = Instant::now();
        op(&mut st);
        v.push(t.elapsed().as_secs_f64() * 1e3);
        cpu.push(cpu_ms() - c);
    }
    let (lo, hi) = (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(0.0, f64::max),
    );
    (median(v), lo, hi, median(cpu))
}

fn calibrate() {
    // One thread summing 1 GiB of f32 (the memory yardstick).
    let n = (1usize << 30) / 4;
    let data: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let s: f32 = data
            .chunks_exact(16)
            .fold([0f32; 16], |mut acc, c| {
                for (a, x) in acc.iter_mut().zip(c) {
                    *a += x;
                }
                acc
            })
            .iter()
            .sum();
        std::hint::black_box(s);
        runs.push((n * 4) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    runs.sort_by(f64::total_cmp);
    println!(
        "calibrate: one-thread sum over 1 GiB: median {:.1} GB/s",
        runs[runs.len() / 2]
    );
    drop(data);
    let s = 2048;
    let a = Tensor::randn(0f32, 1.0, (s, s), &Device::Cpu).unwrap();
    let b = Tensor::randn(0f32, 1.0, (s, s), &Device::Cpu).unwrap();
    a.matmul(&b).unwrap();
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        std::hint::black_box(a.matmul(&b).unwrap());
        runs.push(2.0 * (s * s * s) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    runs.sort_by(f64::total_cmp);
    println!(
        "calibrate: candle f32 matmul {s}^3: median {:.0} GFLOP/s ({} threads)",
        runs[runs.len() / 2],
        candle_core::utils::get_num_threads()
    );
}

fn main() {
    let args = parse_args();
    if args.calibrate {
        calibrate();
    }
    if args.kernel {
        kernel_rates(args.dtype, args.reps);
        return;
    }
    let dir = args.dir.clone().unwrap_or_else(|| {
        panic!("usage: cargo bench --bench passes -- CHECKPOINT_DIR [--dtype bf16] [--reps N]")
    });
    let t = Instant::now();
    let llm = Llm::load_as(&dir, &Device::Cpu, args.dtype).expect("load the checkpoint");
    let params = llm.num_params();
    let cfg = llm.config().clone();
    let bytes = params as f64 * args.dtype.size_in_bytes() as f64;
    println!(
        "model {} ({} params, {:.2} GB as {:?}) loaded in {:.1} s; threads {} (candle/gemm); reps {}",
        llm.describe(),
        params,
        bytes / 1e9,
        args.dtype,
        t.elapsed().as_secs_f64(),
        candle_core::utils::get_num_threads(),
        args.reps
    );
    let vocab = cfg.vocab_size as u32;
    // Any in-vocabulary tokens will do (specials avoided).
    let prompt: Vec<u32> = (0..PROMPT as u32)
        .map(|i| 4 + (i * 37) % (vocab - 4))
        .collect();
    let (tree, root) = Tree::with_prompt(&prompt);
    let prompt_nodes: Vec<NodeId> = (0..PROMPT as NodeId).collect();

    // One or 20 children of the last prompt token.
    let mut step_tree = tree.clone();
    let beams: Vec<NodeId> = (0..20)
        .map(|i| step_tree.push(root, 4 + (i * 11) % (vocab - 4), 0))
        .collect();
    // The prompt plus three depths of 40 nodes.
    let mut big_tree = tree.clone();
    let mut fed = prompt_nodes.clone();
    let mut parents = vec![root];
    for d in 0..3u32 {
        let next: Vec<NodeId> = (0..40u32)
            .map(|i| {
                let p = parents[i as usize % parents.len()];
                big_tree.push(p, 4 + (d * 101 + i * 13) % (vocab - 4), 0)
            })
            .collect();
        fed.extend(&next);
        parents = next;
    }
    let want: Vec<NodeId> = fed[PROMPT - 1..].to_vec();

    let fresh = || ModelState::new(&llm);
    let cached = || {
        let mut st = ModelState::new(&llm);
        st.feed(&llm, &step_tree, &prompt_nodes, &[root]).unwrap();
        st
    };
    let run = |st: &mut ModelState, tree: &Tree, fed: &[NodeId], want: &[NodeId]| {
        let (lp, _) = st.feed(&llm, tree, fed, want).unwrap();
        std::hint::black_box(Rows::from_tensor(&lp).unwrap());
    };

    type Op<'a> = Box<dyn Fn(&mut ModelState) + 'a>;
    let shapes: Vec<(&str, usize, bool, bool, Op)> = vec![
        (
            "step1",
            1,
            true,
            true,
            Box::new(|st| run(st, &step_tree, &beams[..1], &beams[..1])),
        ),
        (
            "step20",
            20,
            true,
            true,
            Box::new(|st| run(st, &step_tree, &beams, &beams)),
        ),
        (
            "prefill82",
            PROMPT,
            false,
            false,
            Box::new(|st| run(st, &tree, &prompt_nodes, &[root])),
        ),
        (
            "tree202",
            fed.len(),
            false,
            false,
            Box::new(|st| run(st, &big_tree, &fed, &want)),
        ),
    ];
    println!(
        "{:<10} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9}  goal",
        "shape", "tokens", "ms", "min", "max", "cpu ms", "GB/s", "GFLOP/s", "goal ms"
    );
    for (name, tokens, on_cache, memory_bound, op) in &shapes {
        if let Some(only) = &args.only {
            if !only.iter().any(|o| o == name) {
                continue;
            }
        }
        if let Some(secs) = args.spin {
            if *on_cache {
                spin_step(&llm, &prompt, *tokens, secs);
            } else {
                let start = Instant::now();
                let mut n = 0;
                while start.elapsed().as_secs_f64() < secs {
                    op(&mut fresh());
                    n += 1;
                }
                println!("spin: {n} x {name}");
            }
            continue;
        }
        let setup: &dyn Fn() -> ModelState = if *on_cache { &cached } else { &fresh };
        let (ms, lo, hi, cpu) = time(args.reps, setup, op.as_ref());
        let flops = 2.0 * params as f64 * *tokens as f64;
        let gbs = bytes / (ms / 1e3) / 1e9;
        let gflops = flops / (ms / 1e3) / 1e9;
        let (goal, kind) = if *memory_bound {
            (1.5 * bytes / (STREAM_GBS * 1e9) * 1e3, "bandwidth")
        } else {
            (1.5 * flops / (SGEMM_GFLOPS * 1e9) * 1e3, "sgemm")
        };
        println!(
            "{name:<10} {tokens:>6} {ms:>9.1} {lo:>9.1} {hi:>9.1} {cpu:>9.1} {gbs:>8.2} {gflops:>9.1} {goal:>9.1}  {:.2}x of 1.5x-{kind} goal ({})",
            ms / goal,
            if ms <= goal { "met" } else { "not met" }
        );
    }
}

/// Repeats one `width`-token step over a cached prompt for `secs` seconds (the cache is cut back
/// to the prompt after each), so that a sampling profiler sees steps only.
fn spin_step(llm: &Llm, prompt: &[u32], width: usize, secs: f64) {
    use atspeed::model::{causal_mask, KvCache};
    let p = prompt.len();
    let mut cache = KvCache::new(llm.config().num_hidden_layers);
    let positions: Vec<u32> = (0..p as u32).collect();
    llm.log_probs(
        prompt,
        &positions,
        &causal_mask(p),
        &mut cache,
        &[p as u32 - 1],
    )
    .unwrap();
    let tokens: Vec<u32> = (0..width as u32).map(|i| 4 + i * 11).collect();
    let pos = vec![p as u32; width];
    // Each beam sees the prompt and itself.
    let s = p + width;
    let mut mask = vec![f32::NEG_INFINITY; width * s];
    for i in 0..width {
        mask[i * s..i * s + p].fill(0.0);
        mask[i * s + p + i] = 0.0;
    }
    let rows: Vec<u32> = (0..width as u32).collect();
    let start = Instant::now();
    let mut times = Vec::new();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        let lp = llm
            .log_probs(&tokens, &pos, &mask, &mut cache, &rows)
            .unwrap();
        std::hint::black_box(lp.to_vec2::<f32>().unwrap());
        times.push(t.elapsed().as_secs_f64() * 1e3);
        cache.truncate(p).unwrap();
    }
    let n = times.len();
    println!(
        "spin: {n} steps of {width} tokens, median {:.1} ms",
        median(times)
    );
}

/// One 1536-wide layer's products (fused qkv, o, fused gate/up, down) timed alone at several
/// row counts, through `atspeed::model::kernels` (packed weights) and through candle's matmul
/// (weights [n, k], as `Linear` computes `x · wᵀ`). The layer (113 MB in f32) does not fit the
/// caches.
fn kernel_rates(dtype: DType, reps: usize) {
    let dev = Device::Cpu;
    let shapes: Vec<(usize, usize)> = match std::env::var("KERNEL_SHAPE") {
        // e.g. KERNEL_SHAPE=1536x4096 (n x k) to time one product alone.
        Ok(s) => {
            let (n, k) = s.split_once('x').expect("KERNEL_SHAPE=NxK");
            vec![(n.parse().unwrap(), k.parse().unwrap())]
        }
        Err(_) => vec![(4608, 1536), (1536, 1536), (8192, 1536), (1536, 4096)],
    };
    let ws: Vec<Tensor> = shapes
        .iter()
        .map(|&(n, k)| {
            Tensor::randn(0f32, 0.02, (n, k), &dev)
                .and_then(|t| t.to_dtype(dtype))
                .unwrap()
        })
        .collect();
    let packed: Vec<_> = ws
        .iter()
        .map(|w| atspeed::model::kernels::Packed::from_tensor(w).unwrap())
        .collect();
    let params: usize = shapes.iter().map(|(n, k)| n * k).sum();
    let bytes = (params * dtype.size_in_bytes()) as f64;
    println!(
        "kernel: one layer, {params} params ({:.0} MB as {dtype:?}), {} threads, median of {reps}",
        bytes / 1e6,
        candle_core::utils::get_num_threads()
    );
    println!(
        "{:>4} {:>10} {:>8} {:>8} {:>8} {:>8} {:>10} {:>8} {:>8}",
        "m", "kernel ms", "min", "cpu ms", "GB/s", "GFLOP/s", "candle ms", "min", "GFLOP/s"
    );
    for m in [1usize, 20, 82, 202] {
        let xs: Vec<Tensor> = shapes
            .iter()
            .map(|&(_, k)| {
                Tensor::randn(0f32, 1.0, (1, m, k), &dev)
                    .and_then(|t| t.to_dtype(dtype))
                    .unwrap()
            })
            .collect();
        let ours = || {
            for (x, p) in xs.iter().zip(&packed) {
                let p = p.as_ref().expect("no kernel for this dtype on this CPU");
                std::hint::black_box(p.forward(x).unwrap());
            }
        };
        let theirs = || {
            for (x, w) in xs.iter().zip(&ws) {
                std::hint::black_box(x.broadcast_matmul(&w.t().unwrap()).unwrap());
            }
        };
        let t = |f: &dyn Fn()| {
            f();
            let c = cpu_ms();
            let v: Vec<f64> = (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            let cpu = (cpu_ms() - c) / reps as f64;
            (
                v.iter().copied().fold(f64::INFINITY, f64::min),
                median(v),
                cpu,
            )
        };
        let ((a_min, a, a_cpu), (b_min, b, _)) = (t(&ours), t(&theirs));
        let flops = 2.0 * (params * m) as f64;
        println!(
            "{m:>4} {a:>10.2} {a_min:>8.2} {a_cpu:>8.2} {:>8.1} {:>8.1} {b:>10.2} {b_min:>8.2} {:>8.1}",
            bytes / a / 1e6,
            flops / a / 1e6,
            flops / b / 1e6
        );
    }
}
