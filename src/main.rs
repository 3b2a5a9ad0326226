//! The `atspeed` command line: a thin layer over the library. With no subcommand it opens the
//! terminal explorer on the shipped demo assets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use atspeed::data::{Dataset, DEFAULT_HISTORY};
use atspeed::decode::{beam_search, speculative, Mode, SpecParams};
use atspeed::device::{label, parse_device};
use atspeed::eval::bench::{run_bench, BenchConfig};
use atspeed::model::{checkpoint, LlamaConfig, Llm};

#[derive(Parser)]
#[command(
    name = "atspeed",
    version,
    about = "Speculative beam decoding for LLM-based generative recommendation"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Open the terminal explorer (the default).
    Tui(TuiArgs),
    /// Replay a recorded session without any model.
    Replay { file: PathBuf },
    /// Print a user's history and top-K recommendations.
    Recommend(RecommendArgs),
    /// Measure target-only vs speculative decoding on test users.
    Bench(BenchArgs),
    /// Summarise a dataset folder or a checkpoint folder.
    Inspect { dir: PathBuf },
    /// Write a randomly initialised checkpoint sized for a dataset's vocabulary.
    NewModel(NewModelArgs),
    /// Check a device: logits against the CPU f32 reference, strict exactness, a short bench.
    Selftest(SelftestArgs),
    /// Train a model (`train target`).
    Train {
        #[command(subcommand)]
        what: TrainCommand,
    },
    /// Write the target's top-K beams for every training sample (the alignment teacher).
    Teacher(TeacherArgs),
    /// Train a draft aligned to the target.
    Align(AlignArgs),
    /// The paper's Table 1 from `bench --json` reports, each given as NAME=FILE.
    Report {
        #[arg(value_name = "NAME=FILE", required = true)]
        reports: Vec<String>,
    },
}

#[derive(Subcommand)]
enum TrainCommand {
    /// A LLaMA target from scratch on the compact prompt.
    Target(TrainTargetArgs),
}

/// Optimisation flags shared by `train target` and `align`.
#[derive(Args)]
struct OptimArgs {
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Train on a deterministic random subset of at most this many samples.
    #[arg(long)]
    max_samples: Option<usize>,
    /// Only the last training position per user (the reference's samples).
    #[arg(long)]
    last_only: bool,
    /// Validation samples per epoch.
    #[arg(long)]
    valid_users: Option<usize>,
    /// Epochs without improvement before stopping.
    #[arg(long)]
    patience: Option<usize>,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Continue from OUT/last if a previous run left its state there.
    #[arg(long)]
    resume: bool,
    #[arg(long)]
    seed: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Model shape flags shared by `train target` and `align`; each overrides the trainer's default.
#[derive(Args)]
struct ShapeArgs {
    #[arg(long)]
    layers: Option<usize>,
    #[arg(long)]
    hidden: Option<usize>,
    #[arg(long)]
    heads: Option<usize>,
    #[arg(long)]
    kv_heads: Option<usize>,
}

impl ShapeArgs {
    fn apply(
        &self,
        layers: &mut usize,
        hidden: &mut usize,
        heads: &mut usize,
        kv_heads: &mut usize,
    ) {
        set(layers, self.layers);
        set(hidden, self.hidden);
        set(heads, self.heads);
        set(kv_heads, self.kv_heads);
    }
}

#[derive(Args)]
struct TrainTargetArgs {
    #[arg(long, default_value_os_t = default_asset("beauty"))]
    data: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    shape: ShapeArgs,
    #[command(flatten)]
    optim: OptimArgs,
}

#[derive(Args)]
struct TeacherArgs {
    #[arg(long, default_value_os_t = default_asset("beauty"))]
    data: PathBuf,
    #[arg(long, default_value_os_t = default_asset("models/target"))]
    target: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Beams per sample.
    #[arg(long, default_value_t = 20)]
    k: usize,
    #[arg(long, default_value_t = DEFAULT_HISTORY)]
    history: usize,
    #[arg(long)]
    last_only: bool,
    #[arg(long)]
    max_samples: Option<usize>,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct AlignArgs {
    /// sft, wordkd, tvdkd, seqkd, atspeed-s or atspeed-r.
    #[arg(long)]
    method: String,
    #[arg(long, default_value_os_t = default_asset("beauty"))]
    data: PathBuf,
    #[arg(long, default_value_os_t = default_asset("models/target"))]
    target: PathBuf,
    /// Teacher beams from `atspeed teacher` (needed by seqkd, atspeed-s, atspeed-r).
    #[arg(long)]
    teacher: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    /// Weight of the alignment loss (paper: 0.7).
    #[arg(long)]
    alpha: Option<f64>,
    /// Temperature of the compared distributions (reference: 0.001).
    #[arg(long)]
    temperature: Option<f64>,
    /// Top-K of the objectives.
    #[arg(long)]
    k: Option<usize>,
    /// AtSpeed-S: share of samples trained on the draft's own beams.
    #[arg(long)]
    lambda: Option<f64>,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Start from this draft checkpoint instead of random weights.
    #[arg(long)]
    init: Option<PathBuf>,
    #[command(flatten)]
    optim: OptimArgs,
}

#[derive(Args)]
struct SelftestArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_os_t = default_asset("models/atspeed-s"))]
    draft: PathBuf,
    /// Users for the exactness check.
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Users for the short bench.
    #[arg(long, default_value_t = 100)]
    bench_users: usize,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct Common {
    /// Dataset folder (reference layout).
    #[arg(long, default_value_os_t = default_asset("beauty"))]
    data: PathBuf,
    /// Target checkpoint folder.
    #[arg(long, default_value_os_t = default_asset("models/target"))]
    target: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Weight dtype on the device: f32, f16 or bf16 (CPU: f32 is the fast and exact choice).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// History length H of the prompts.
    #[arg(long, default_value_t = DEFAULT_HISTORY)]
    history: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct DecodeArgs {
    /// strict (lossless) or relaxed (sampling verification).
    #[arg(long, default_value = "strict")]
    mode: Mode,
    /// Drafted beams per depth (N >= K).
    #[arg(long, default_value_t = 40)]
    n: usize,
    /// Drafted steps per round.
    #[arg(long, default_value_t = 3)]
    gamma: usize,
    /// Adaptive draft width (strict): keep the draft's best beams per depth only until they
    /// hold this share of its probability mass (at least K, at most N), e.g. 0.99.
    #[arg(long)]
    draft_mass: Option<f32>,
}

#[derive(Args)]
struct TuiArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Draft models as NAME=DIR (repeatable); default: every folder under assets/models except
    /// the target.
    #[arg(long = "draft", value_name = "NAME=DIR")]
    drafts: Vec<String>,
    /// Beam size K.
    #[arg(long, default_value_t = 20)]
    k: usize,
    /// Start on this user (1-based uid).
    #[arg(long)]
    user: Option<u32>,
    /// Show the interface on synthetic traces (no data or models needed).
    #[arg(long)]
    demo: bool,
}

#[derive(Args)]
struct RecommendArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Draft checkpoint: decode speculatively and report acceptance too.
    #[arg(long)]
    draft: Option<PathBuf>,
    /// 1-based user id.
    #[arg(long)]
    user: u32,
    #[arg(long, default_value_t = 10)]
    k: usize,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    decode: DecodeArgs,
    #[arg(long, default_value_os_t = default_asset("models/atspeed-s"))]
    draft: PathBuf,
    /// Beam sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3,5,10,20")]
    k: Vec<usize>,
    /// Test users to measure (0 = all).
    #[arg(long, default_value_t = 500)]
    users: usize,
    /// Users decoded untimed before measuring.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Choose N per K instead of --n: time widths from K to 8K (at most --max-n) on the
    /// validation prompts of this many users that are not measured, and keep the fastest.
    #[arg(long, value_name = "USERS", default_value_t = 0, conflicts_with = "n")]
    tune_n: usize,
    /// Widest N the tuner tries.
    #[arg(long, default_value_t = 160)]
    max_n: usize,
    /// With --tune-n, also try every drafted depth from 1 to --gamma.
    #[arg(long, requires = "tune_n")]
    tune_gamma: bool,
    /// Write the full report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct NewModelArgs {
    /// Dataset whose vocabulary the model covers.
    #[arg(long, default_value_os_t = default_asset("beauty"))]
    data: PathBuf,
    #[arg(long, default_value_t = 3)]
    layers: usize,
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Standard deviation of the normal initialisation (Hugging Face: 0.02).
    #[arg(long, default_value_t = 0.02)]
    std: f32,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[arg(long)]
    out: PathBuf,
}

/// `assets/NAME` in the working directory, else in the source tree the binary was built from.
fn default_asset(name: &str) -> PathBuf {
    let local = Path::new("assets").join(name);
    if local.exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let interactive = matches!(
        cli.command,
        None | Some(Command::Tui(_)) | Some(Command::Replay { .. })
    );
    if !interactive {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
            .format_timestamp(None)
            .init();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => tui(TuiArgs::parse_defaults()),
        Some(Command::Tui(a)) => tui(a),
        Some(Command::Replay { file }) => atspeed::tui::run_replay(&file),
        Some(Command::Recommend(a)) => recommend(a),
        Some(Command::Bench(a)) => bench(a),
        Some(Command::Inspect { dir }) => inspect(&dir),
        Some(Command::NewModel(a)) => new_model(a),
        Some(Command::Selftest(a)) => selftest(a),
        Some(Command::Train {
            what: TrainCommand::Target(a),
        }) => train_target(a),
        Some(Command::Teacher(a)) => teacher(a),
        Some(Command::Align(a)) => align(a),
        Some(Command::Report { reports }) => report(&reports),
    }
}

impl TuiArgs {
    fn parse_defaults() -> TuiArgs {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            a: TuiArgs,
        }
        Only::parse_from(["atspeed"]).a
    }
}

fn load_data(dir: &Path) -> Result<Dataset> {
    Ok(Dataset::load(dir)?)
}

/// Where and in which dtype models run, from the common flags.
struct Placement {
    device: candle_core::Device,
    dtype: candle_core::DType,
}

impl Common {
    fn placement(&self) -> Result<Placement> {
        Ok(Placement {
            device: parse_device(&self.device)?,
            dtype: checkpoint::parse_dtype(&self.dtype)?,
        })
    }
}

/// Loads a checkpoint and checks it speaks the dataset's vocabulary.
fn load_model(dir: &Path, data: &Dataset, at: &Placement) -> Result<Llm> {
    let m = Llm::load_as(dir, &at.device, at.dtype)?;
    if m.vocab != data.vocab.tokens() {
        bail!(
            "{}: vocabulary ({} tokens) does not match dataset {} ({} tokens)",
            dir.display(),
            m.vocab.len(),
            data.dir.display(),
            data.vocab.len()
        );
    }
    Ok(m)
}

fn tui(a: TuiArgs) -> Result<()> {
    if a.demo {
        return atspeed::tui::run_demo();
    }
    let at = a.common.placement()?;
    let data = load_data(&a.common.data)?;
    let target = load_model(&a.common.target, &data, &at)?;
    let mut drafts = Vec::new();
    if a.drafts.is_empty() {
        let models = a
            .common
            .target
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&models)
            .with_context(|| format!("listing drafts in {}", models.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(checkpoint::CONFIG).exists() && *p != a.common.target)
            .collect();
        // The strict-aligned draft first (the explorer opens in strict mode), then the relaxed
        // one, then the baselines by name.
        dirs.sort_by_key(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name != "atspeed-s", name != "atspeed-r", name)
        });
        for d in dirs {
            let name = d
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            drafts.push((name, load_model(&d, &data, &at)?));
        }
    } else {
        for spec in &a.drafts {
            let (name, dir) = spec
                .split_once('=')
                .map(|(n, d)| (n.to_string(), PathBuf::from(d)))
                .unwrap_or_else(|| {
                    let p = PathBuf::from(spec);
                    (
                        p.file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned(),
                        p,
                    )
                });
            drafts.push((name, load_model(&dir, &data, &at)?));
        }
    }
    if drafts.is_empty() {
        bail!("no draft model: pass --draft NAME=DIR");
    }
    SpecParams {
        mode: a.decode.mode,
        n: a.decode.n,
        k: a.k,
        gamma: a.decode.gamma,
        draft_mass: a.decode.draft_mass,
    }
    .validate()?;
    atspeed::tui::run_explorer(atspeed::tui::ExplorerContext {
        dataset: data,
        target,
        drafts,
        device: label(&at.device),
        params: atspeed::tui::Params {
            mode: a.decode.mode,
            n: a.decode.n,
            k: a.k,
            gamma: a.decode.gamma,
            draft: 0,
        },
        seed: a.common.seed,
        history: a.common.history,
        user: a.user,
    })
}

fn recommend(a: RecommendArgs) -> Result<()> {
    use rand::SeedableRng;
    let at = a.common.placement()?;
    let data = load_data(&a.common.data)?;
    let target = load_model(&a.common.target, &data, &at)?;
    let sample = data.user_sample(a.user, a.common.history)?;
    println!(
        "user {} - {} history items (oldest first):",
        sample.user,
        sample.history.len()
    );
    for item in &sample.history {
        println!(
            "  {}  {}",
            data.vocab.render(&data.items[*item as usize]),
            data.title(*item)
        );
    }
    if !sample.target_items.is_empty() {
        println!("ground truth (test):");
        for item in &sample.target_items {
            println!(
                "  {}  {}",
                data.vocab.render(&data.items[*item as usize]),
                data.title(*item)
            );
        }
    }
    let prompt = data.prompt(&sample.history);
    let (beams, how) = match &a.draft {
        None => {
            let b = beam_search(&target, &data.trie, &prompt, a.k)?;
            let how = format!(
                "target-only beam search, {} target passes, {:.1} ms",
                b.target_passes, b.time_ms
            );
            (b.beams, how)
        }
        Some(dir) => {
            let draft = load_model(dir, &data, &at)?;
            let params = SpecParams {
                mode: a.decode.mode,
                n: a.decode.n,
                k: a.k,
                gamma: a.decode.gamma,
                draft_mass: a.decode.draft_mass,
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.common.seed);
            let t = speculative(&target, &draft, &data.trie, &prompt, &params, &mut rng)?;
            let times = t.times();
            let how = format!(
                "speculative ({}, N {} gamma {}), {} accepted steps, {} target + {} draft passes, {:.1} ms",
                a.decode.mode.name(),
                a.decode.n,
                a.decode.gamma,
                t.accepted_steps(),
                t.target_passes(),
                t.draft_passes(),
                times.total_ms()
            );
            (t.beams, how)
        }
    };
    println!("top {} recommendations ({how}):", a.k);
    for (rank, b) in beams.iter().enumerate() {
        let ident: Option<atspeed::ids::Identifier> = b.tokens.clone().try_into().ok();
        let hit = ident.map(|i| sample.targets.contains(&i)).unwrap_or(false);
        let items = ident
            .map(|i| data.items_of(&i).to_vec())
            .unwrap_or_default();
        let titles: Vec<String> = items.iter().map(|&i| data.title(i)).collect();
        println!(
            "{:>3} {} {:>9.4}  {}  {}",
            rank + 1,
            if hit { "*" } else { " " },
            b.score,
            data.vocab.render(&b.tokens),
            titles.join(" | ")
        );
    }
    Ok(())
}

/// The dataset, target and draft a decoding subcommand runs on, placed as the flags say.
fn load_pair(common: &Common, draft: &Path) -> Result<(Placement, Dataset, Llm, Llm)> {
    let at = common.placement()?;
    let data = load_data(&common.data)?;
    let target = load_model(&common.target, &data, &at)?;
    let draft = load_model(draft, &data, &at)?;
    Ok((at, data, target, draft))
}

fn bench(a: BenchArgs) -> Result<()> {
    if a.tune_gamma && a.tune_n == 0 {
        bail!("--tune-gamma needs --tune-n USERS with USERS > 0");
    }
    let (at, data, target, draft) = load_pair(&a.common, &a.draft)?;
    let cfg = BenchConfig {
        mode: a.decode.mode,
        ks: a.k.clone(),
        n: a.decode.n,
        gamma: a.decode.gamma,
        draft_mass: a.decode.draft_mass,
        tune_users: a.tune_n,
        max_n: a.max_n,
        tune_gamma: a.tune_gamma,
        users: a.users,
        warmup: a.warmup,
        history: a.common.history,
        seed: a.common.seed,
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} users x K  {elapsed} (eta {eta})",
        )
        .expect("valid template"),
    );
    let report = run_bench(
        &data,
        &target,
        &draft,
        &cfg,
        &label(&at.device),
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    println!("{}", report.table());
    if let Some(path) = &a.json {
        let json = serde_json::to_vec_pretty(&report)?;
        checkpoint::write_atomic(path, &json)?;
        println!("wrote {}", path.display());
    }
    if a.decode.mode == Mode::Strict {
        let broken = report
            .per_k
            .iter()
            .find(|r| r.identical_fraction + r.near_tie_fraction < 1.0 - 1e-12);
        if let Some(r) = broken {
            bail!(
                "strict mode produced a list different from target-only beam search for K={} (identical {:.4}, near-ties {:.4})",
                r.k,
                r.identical_fraction,
                r.near_tie_fraction
            );
        }
    }
    Ok(())
}

fn inspect(dir: &Path) -> Result<()> {
    if dir.join(checkpoint::CONFIG).exists() {
        let m = Llm::load(dir, &candle_core::Device::Cpu)?;
        let c = m.config();
        println!("checkpoint {}", dir.display());
        println!(
            "  architecture   {} ({})",
            c.architectures.join(", "),
            c.model_type
        );
        println!(
            "  shape          {} layers, hidden {}, intermediate {}, {} heads ({} key/value heads)",
            c.num_hidden_layers,
            c.hidden_size,
            c.intermediate_size,
            c.num_attention_heads,
            c.kv_heads()
        );
        println!(
            "  parameters     {} ({})",
            m.num_params(),
            atspeed::model::human_count(m.num_params())
        );
        println!("  stored dtype   {}", c.torch_dtype);
        println!(
            "  vocabulary     {} tokens ({} prompt style)",
            c.vocab_size, c.prompt_style
        );
        println!(
            "  positions      up to {}, rope theta {}",
            c.max_position_embeddings, c.rope_theta
        );
        println!("  tied embedding {}", c.tie_word_embeddings);
        return Ok(());
    }
    let data = load_data(dir)?;
    println!("{}", data.summary());
    Ok(())
}

fn new_model(a: NewModelArgs) -> Result<()> {
    let data = load_data(&a.data)?;
    let kv = a.kv_heads.unwrap_or(a.heads);
    let cfg = LlamaConfig::compact(data.vocab.len(), a.layers, a.hidden, a.heads, kv);
    let dtype = checkpoint::parse_dtype(&a.dtype)?;
    let m = Llm::random(
        &cfg,
        data.vocab.tokens().to_vec(),
        a.std,
        a.seed,
        &candle_core::Device::Cpu,
    )?;
    m.save(&a.out, dtype)?;
    println!(
        "wrote {} ({}) to {}",
        m.describe(),
        checkpoint::dtype_name(dtype),
        a.out.display()
    );
    Ok(())
}

fn selftest(a: SelftestArgs) -> Result<()> {
    let (at, data, target, draft) = load_pair(&a.common, &a.draft)?;
    let cpu = Placement {
        device: candle_core::Device::Cpu,
        dtype: candle_core::DType::F32,
    };
    let reference = load_model(&a.common.target, &data, &cpu)?;
    let r = atspeed::eval::selftest::run_selftest(
        &data,
        &target,
        &draft,
        &reference,
        &at.device,
        a.users,
        a.bench_users,
    )?;
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!("selftest on {} ({})", r.device, r.logits.dtype);
    println!(
        "  logits vs CPU f32 over {} users: max abs {:.2e}, max rel {:.2e}, tolerance {:.1e} abs  {}",
        r.logits.users,
        r.logits.max_abs,
        r.logits.max_rel,
        r.logits.tolerance_abs,
        verdict(r.logits.pass)
    );
    println!(
        "  strict == target-only on {} users (N 40, K 20, gamma 3): {} identical, {} float near-ties  {}",
        r.exact.users,
        r.exact.identical,
        r.exact.near_ties,
        verdict(r.exact.pass)
    );
    println!("{}", r.bench.table());
    if let Some(path) = &a.json {
        checkpoint::write_atomic(path, &serde_json::to_vec_pretty(&r)?)?;
    }
    if !r.pass() {
        bail!("selftest failed on {}", r.device);
    }
    println!("selftest passed");
    Ok(())
}

/// Overrides `dst` with the flag's value when given.
fn set<T>(dst: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *dst = v;
    }
}

impl OptimArgs {
    /// Overrides the optimisation settings with the flags given.
    fn apply(&self, o: &mut atspeed::train::OptimConfig) {
        set(&mut o.epochs, self.epochs);
        set(&mut o.batch_size, self.batch_size);
        set(&mut o.lr, self.lr);
        set(&mut o.warmup_steps, self.warmup_steps);
        set(&mut o.patience, self.patience);
        set(&mut o.seed, self.seed);
        o.max_steps = self.max_steps.or(o.max_steps);
        o.resume |= self.resume;
    }

    /// Overrides the sample selection (fields of the trainer's own config) with the flags given.
    fn apply_samples(
        &self,
        max_samples: &mut Option<usize>,
        last_only: &mut bool,
        valid_users: &mut usize,
    ) {
        *max_samples = self.max_samples.or(*max_samples);
        *last_only |= self.last_only;
        set(valid_users, self.valid_users);
    }
}

fn print_report(r: &atspeed::train::TrainReport) {
    for e in &r.epochs {
        println!(
            "epoch {}: train loss {:.4}, valid loss {}, {} {}, {:.0} samples/s, {:.0} s",
            e.epoch + 1,
            e.train_loss,
            e.valid_loss
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "-".into()),
            r.metric,
            e.valid_metric
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "-".into()),
            e.samples_per_sec,
            e.seconds
        );
    }
    println!(
        "best {} {} at epoch {}; {} steps; model in {}",
        r.metric,
        r.best_metric
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "-".into()),
        r.best_epoch
            .map(|e| (e + 1).to_string())
            .unwrap_or_else(|| "-".into()),
        r.steps,
        r.out.display()
    );
}

fn train_target(a: TrainTargetArgs) -> Result<()> {
    let device = parse_device(&a.optim.device)?;
    let data = load_data(&a.data)?;
    let mut cfg = atspeed::train::TargetTrainConfig::default();
    a.shape.apply(
        &mut cfg.layers,
        &mut cfg.hidden,
        &mut cfg.heads,
        &mut cfg.kv_heads,
    );
    a.optim.apply(&mut cfg.optim);
    a.optim.apply_samples(
        &mut cfg.max_samples,
        &mut cfg.last_only,
        &mut cfg.valid_users,
    );
    let r = atspeed::train::train_target(&data, &cfg, &a.out, &device)?;
    print_report(&r);
    Ok(())
}

fn teacher(a: TeacherArgs) -> Result<()> {
    let at = Placement {
        device: parse_device(&a.device)?,
        dtype: candle_core::DType::F32,
    };
    let data = load_data(&a.data)?;
    let target = load_model(&a.target, &data, &at)?;
    atspeed::train::build_teacher(
        &target,
        &data,
        a.k,
        a.history,
        a.last_only,
        a.max_samples,
        &a.out,
    )?;
    println!("wrote teacher beams to {}", a.out.display());
    Ok(())
}

fn align(a: AlignArgs) -> Result<()> {
    let method: atspeed::train::AlignMethod = a.method.parse()?;
    let at = Placement {
        device: parse_device(&a.optim.device)?,
        dtype: candle_core::DType::F32,
    };
    let data = load_data(&a.data)?;
    let target = load_model(&a.target, &data, &at)?;
    let teacher = match &a.teacher {
        Some(p) => Some(atspeed::train::read_teacher(p, &target)?),
        None => None,
    };
    let mut cfg = atspeed::train::AlignConfig {
        method,
        ..Default::default()
    };
    set(&mut cfg.alpha, a.alpha);
    set(&mut cfg.temperature, a.temperature);
    set(&mut cfg.k, a.k);
    set(&mut cfg.lambda, a.lambda);
    a.shape.apply(
        &mut cfg.layers,
        &mut cfg.hidden,
        &mut cfg.heads,
        &mut cfg.kv_heads,
    );
    cfg.init = a.init.or(cfg.init);
    a.optim.apply(&mut cfg.optim);
    a.optim.apply_samples(
        &mut cfg.max_samples,
        &mut cfg.last_only,
        &mut cfg.valid_users,
    );
    let r =
        atspeed::train::align_draft(&target, teacher.as_ref(), &data, &cfg, &a.out, &at.device)?;
    print_report(&r);
    Ok(())
}

fn report(specs: &[String]) -> Result<()> {
    let mut reports = Vec::new();
    for spec in specs {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) => (n.to_string(), PathBuf::from(f)),
            None => {
                let p = PathBuf::from(spec);
                let stem = p
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                (stem, p)
            }
        };
        reports.push((name, atspeed::eval::report::load_report(&file)?));
    }
    print!("{}", atspeed::eval::report::table1(&reports));
    Ok(())
}
