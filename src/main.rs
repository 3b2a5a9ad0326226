//! The `atspeed` command line: a thin layer over the library. With no subcommand it opens the
//! terminal explorer on the shipped demo assets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use atspeed::data::{Dataset, DEFAULT_HISTORY};
use atspeed::decode::{DecodeParams, Mode};
use atspeed::device::label;
use atspeed::eval::bench::{run_bench, BenchConfig};
use atspeed::load::{load_model, Placement};
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
    Replay {
        file: PathBuf,
        /// Instead of opening the explorer, write every recorded round as an SVG into this
        /// folder (for slides).
        #[arg(long, value_name = "DIR")]
        export_svg: Option<PathBuf>,
    },
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
    /// Validation users (never shown) each drafted shape (N, gamma) is timed on, in the
    /// background, to start on the fastest for this device; 0 keeps the paper's N 40, gamma 3
    /// (or --n / --gamma, which also turn the tuned start off).
    #[arg(long, default_value_t = 40)]
    tune_users: usize,
    /// Where tuned shapes are cached [default: $XDG_CACHE_HOME or ~/.cache, atspeed/tuned-shapes.json].
    #[arg(long, value_name = "FILE")]
    tune_cache: Option<PathBuf>,
    /// Set when --n or --gamma was given.
    #[arg(skip)]
    shape_given: bool,
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
    /// Draw WS and AS against K, and acceptance against N per drafted depth, as an SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
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
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let mut cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Some(Command::Tui(a)), Some(m)) = (&mut cli.command, matches.subcommand_matches("tui"))
    {
        a.shape_given = ["n", "gamma"]
            .iter()
            .any(|id| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine));
    }
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
            eprintln!("error: {}", cli_message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The parameters the library names in its errors, and the flags that set them.
const FLAGS: &[(&str, &str)] = &[
    ("k", "--k"),
    ("n", "--n"),
    ("gamma", "--gamma"),
    ("mode", "--mode"),
    ("draft_mass", "--draft-mass"),
    ("device", "--device"),
    ("dtype", "--dtype"),
    ("user", "--user"),
    ("users", "--users"),
    ("history", "--history"),
    ("draft", "--draft"),
    ("method", "--method"),
    ("alpha", "--alpha"),
    ("lambda", "--lambda"),
    ("temperature", "--temperature"),
    ("teacher", "--teacher"),
    ("resume", "--resume"),
    ("batch_size", "--batch-size"),
    ("epochs", "--epochs"),
    ("out", "--out"),
];

/// The error as one line, with a library parameter named by its command-line flag.
fn cli_message(e: &anyhow::Error) -> String {
    if let Some(atspeed::Error::Invalid { what, msg }) = e.downcast_ref::<atspeed::Error>() {
        if let Some((_, flag)) = FLAGS.iter().find(|(p, _)| p == what) {
            return format!("{flag}: {msg}");
        }
    }
    format!("{e:#}")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => tui(TuiArgs::parse_defaults()),
        Some(Command::Tui(a)) => tui(a),
        Some(Command::Replay { file, export_svg }) => replay(&file, export_svg.as_deref()),
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

impl Common {
    fn placement(&self) -> Result<Placement> {
        Ok(Placement::parse(&self.device, &self.dtype)?)
    }
}

impl DecodeArgs {
    /// The one conversion from decoding flags to the library's parameters.
    fn params(&self, k: usize) -> DecodeParams {
        DecodeParams {
            mode: self.mode,
            n: self.n,
            k,
            gamma: self.gamma,
            draft_mass: self.draft_mass,
        }
    }
}

/// The dataset and target of a decoding subcommand, placed as the flags say.
fn load_common(c: &Common) -> Result<(Placement, Dataset, Llm)> {
    let at = c.placement()?;
    let data = Dataset::load(&c.data)?;
    let target = load_model(&c.target, &data, &at)?;
    Ok((at, data, target))
}

#[cfg(feature = "tui")]
fn tui(a: TuiArgs) -> Result<()> {
    if a.demo {
        return Ok(atspeed::tui::run_demo()?);
    }
    let params = a.decode.params(a.k);
    params.validate()?;
    let (at, data, target) = load_common(&a.common)?;
    let specs = if a.drafts.is_empty() {
        let models = a.common.target.parent().unwrap_or(Path::new("."));
        atspeed::load::discover_drafts(models, &a.common.target)?
    } else {
        a.drafts
            .iter()
            .map(|s| atspeed::load::parse_named(s, "draft"))
            .collect::<atspeed::Result<_>>()?
    };
    if specs.is_empty() {
        bail!("no draft model: pass --draft NAME=DIR");
    }
    let mut drafts = Vec::new();
    for (name, dir) in specs {
        drafts.push((name, load_model(&dir, &data, &at)?));
    }
    Ok(atspeed::tui::run_explorer(atspeed::tui::ExplorerContext {
        dataset: data,
        target,
        drafts,
        device: label(&at.device),
        params: atspeed::tui::Params {
            decode: params,
            draft: 0,
        },
        seed: a.common.seed,
        history: a.common.history,
        user: a.user,
        tune: atspeed::tui::live::TuneSettings {
            users: a.tune_users,
            cache: a
                .tune_cache
                .or_else(atspeed::eval::tune::default_cache_path),
            custom: a.shape_given,
            max_n: 160,
        },
    })?)
}

#[cfg(feature = "tui")]
fn replay(file: &Path, export_svg: Option<&Path>) -> Result<()> {
    match export_svg {
        Some(dir) => {
            for path in atspeed::tui::export::export_session(file, dir)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        None => Ok(atspeed::tui::run_replay(file)?),
    }
}

#[cfg(not(feature = "tui"))]
fn tui(_: TuiArgs) -> Result<()> {
    bail!("this binary was built without the explorer (cargo feature `tui`)")
}

#[cfg(not(feature = "tui"))]
fn replay(_: &Path, _: Option<&Path>) -> Result<()> {
    bail!("this binary was built without the explorer (cargo feature `tui`)")
}

fn recommend(a: RecommendArgs) -> Result<()> {
    let params = a.decode.params(a.k);
    match &a.draft {
        Some(_) => params.validate()?,
        None => atspeed::decode::params::check_k(a.k)?,
    }
    let (at, data, target) = load_common(&a.common)?;
    let draft = match &a.draft {
        Some(dir) => Some(load_model(dir, &data, &at)?),
        None => None,
    };
    let r = atspeed::eval::recommend::recommend(
        &data,
        &target,
        draft.as_ref(),
        a.user,
        a.common.history,
        &params,
        a.common.seed,
    )?;
    println!("{r}");
    Ok(())
}

fn bench(a: BenchArgs) -> Result<()> {
    if a.tune_gamma && a.tune_n == 0 {
        bail!("--tune-gamma needs --tune-n USERS with USERS > 0");
    }
    let cfg = BenchConfig {
        decode: a.decode.params(a.k.first().copied().unwrap_or(1)),
        ks: a.k.clone(),
        tune_users: a.tune_n,
        max_n: a.max_n,
        tune_gamma: a.tune_gamma,
        users: a.users,
        warmup: a.warmup,
        history: a.common.history,
        seed: a.common.seed,
    };
    let (at, data, target) = load_common(&a.common)?;
    let draft = load_model(&a.draft, &data, &at)?;
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
        checkpoint::write_atomic(path, &serde_json::to_vec_pretty(&report)?)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &a.plot {
        atspeed::plot::write_svg(path, &atspeed::plot::bench_svg(&report)?)?;
        println!("wrote {}", path.display());
    }
    Ok(report.strict_verdict()?)
}

fn inspect(dir: &Path) -> Result<()> {
    if dir.join(checkpoint::CONFIG).exists() {
        println!("{}", Llm::load(dir, &candle_core::Device::Cpu)?.summary());
    } else {
        println!("{}", Dataset::load(dir)?.summary());
    }
    Ok(())
}

fn new_model(a: NewModelArgs) -> Result<()> {
    let data = Dataset::load(&a.data)?;
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
    let (at, data, target) = load_common(&a.common)?;
    let draft = load_model(&a.draft, &data, &at)?;
    let reference = load_model(&a.common.target, &data, &Placement::cpu_f32())?;
    let r = atspeed::eval::selftest::run_selftest(
        &data,
        &target,
        &draft,
        &reference,
        &at.device,
        a.users,
        a.bench_users,
    )?;
    println!("{r}");
    if let Some(path) = &a.json {
        checkpoint::write_atomic(path, &serde_json::to_vec_pretty(&r)?)?;
    }
    r.verdict()?;
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

fn train_target(a: TrainTargetArgs) -> Result<()> {
    let device = atspeed::device::parse_device(&a.optim.device)?;
    let data = Dataset::load(&a.data)?;
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
    println!(
        "{}",
        atspeed::train::train_target(&data, &cfg, &a.out, &device)?
    );
    Ok(())
}

fn teacher(a: TeacherArgs) -> Result<()> {
    let at = Placement::parse(&a.device, "f32")?;
    let data = Dataset::load(&a.data)?;
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
    let at = Placement::parse(&a.optim.device, "f32")?;
    let data = Dataset::load(&a.data)?;
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
    println!("{r}");
    Ok(())
}

fn report(specs: &[String]) -> Result<()> {
    let mut reports = Vec::new();
    for spec in specs {
        let (name, file) = atspeed::load::parse_named(spec, "report")?;
        // A bare FILE is named after its stem, not its file name.
        let name = if spec.contains('=') {
            name
        } else {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or(name)
        };
        reports.push((name, atspeed::eval::report::load_report(&file)?));
    }
    print!("{}", atspeed::eval::report::table1(&reports));
    Ok(())
}
