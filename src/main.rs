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
use atspeed::load::{load_compact, load_model, load_target, Placement};
use atspeed::model::{checkpoint, Llm};
use atspeed::space::TokenSpace;

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
    ///
    /// WS (walltime speedup) of a user = target-only beam search ms / speculative ms, same
    /// device, same process; reported as the ratio of totals and the mean of per-user ratios.
    /// AS (accepted steps) = drafted steps accepted per user over all its rounds (0..=3).
    /// Per-depth acceptance at drafted depth d = rounds that accepted d / rounds that examined d
    /// (a round examines its accepted depths and the first one it rejects).
    #[command(verbatim_doc_comment)]
    Bench(BenchArgs),
    /// Summarise a dataset folder or a checkpoint folder.
    Inspect {
        /// A dataset folder, a checkpoint folder or a LoRA adapter folder.
        dir: PathBuf,
        /// Base checkpoint of an adapter folder (default: its base_model_name_or_path).
        #[arg(long, value_name = "DIR")]
        base: Option<PathBuf>,
        /// With a checkpoint: the dataset whose codes it speaks; prints the recommender profile
        /// (detected, and why), the tokenizer rules and what they change, and the fixed tokens.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// With a checkpoint: print this user's exact prompt text and ids (the dataset defaults
        /// to the shipped one).
        #[arg(long, value_name = "UID")]
        user: Option<u32>,
        /// History length H of the prompt.
        #[arg(long, default_value_t = DEFAULT_HISTORY)]
        history: usize,
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// Write a randomly initialised checkpoint sized for a dataset's vocabulary.
    NewModel(NewModelArgs),
    /// Check a device: logits against the CPU f32 reference, strict exactness, a short bench.
    Selftest(SelftestArgs),
    /// Train a model (`train target`); compact-prompt models only.
    Train {
        #[command(subcommand)]
        what: TrainCommand,
    },
    /// Write the target's top-K beams for every training sample (the alignment teacher);
    /// compact-prompt targets only.
    Teacher(TeacherArgs),
    /// Train a draft aligned to the target; compact-prompt models only (reference-style LLM
    /// checkpoints are refused).
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

/// A count that must be at least 1 (a size, a number of epochs): 0 is a usage error.
fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

/// A standard deviation: a finite number above 0.
fn positive_std(s: &str) -> std::result::Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a positive finite standard deviation")),
        Err(e) => Err(e.to_string()),
    }
}

/// Optimisation flags shared by `train target` and `align`.
#[derive(Args)]
struct OptimArgs {
    #[arg(long, value_parser = at_least_one())]
    epochs: Option<usize>,
    #[arg(long, value_parser = at_least_one())]
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
    /// Replace a model already in OUT (without it, an existing model is never overwritten).
    #[arg(long)]
    force: bool,
    #[arg(long)]
    seed: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Model shape flags shared by `train target` and `align`; each overrides the trainer's default.
#[derive(Args)]
struct ShapeArgs {
    #[arg(long, value_parser = at_least_one())]
    layers: Option<usize>,
    #[arg(long, value_parser = at_least_one())]
    hidden: Option<usize>,
    #[arg(long, value_parser = at_least_one())]
    heads: Option<usize>,
    #[arg(long, value_parser = at_least_one())]
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
    /// Replace an existing OUT file.
    #[arg(long)]
    force: bool,
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

/// How a checkpoint's prompts are built: the recommender profile and its overrides.
#[derive(Args, Clone, Default)]
struct ProfileArgs {
    /// Recommender profile: how prompts are built and tokenized and which fixed tokens are
    /// generated around the codes. compact (this project's models), lc-rec (LC-Rec / AtSpeed),
    /// minionerec, openonerec, or a TOML/JSON profile file (README "Your own model"). Default:
    /// detected from the target checkpoint; `inspect DIR` says which and why.
    #[arg(long, value_name = "NAME|FILE")]
    profile: Option<String>,
    /// Old name of --profile: compact or reference (= lc-rec).
    #[arg(long, value_name = "STYLE", conflicts_with = "profile")]
    prompt: Option<String>,
    /// How tokenizer files load: transformers (5.x: tokenizer.json as changed by
    /// tokenizer_config.json, the default), transformers4, or tokenizer.json (as written).
    /// Default: the profile's.
    #[arg(long, value_name = "RULES")]
    tokenizer_rules: Option<String>,
    /// The profile's fixed tokens around the codes (MiniOneRec's "\n" + EOS after the SID):
    /// `scored` generates them and adds their log-probabilities to every beam's score, as the
    /// framework's own beam search does (default); `skipped` leaves them out, ranking beams on
    /// the codes alone.
    #[arg(long, value_name = "scored|skipped")]
    fixed_tokens: Option<String>,
}

#[derive(Args, Clone)]
struct Common {
    /// Dataset folder (reference layout).
    #[arg(long, default_value_os_t = default_asset("beauty"))]
    data: PathBuf,
    /// Target checkpoint folder, or a PEFT LoRA adapter folder (merged at load over its base).
    #[arg(long, default_value_os_t = default_asset("models/target"))]
    target: PathBuf,
    /// Base checkpoint of a --target adapter (default: the adapter's base_model_name_or_path,
    /// when that is a local folder).
    #[arg(long, value_name = "DIR")]
    target_base: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Weight dtype on the device: f32, f16, bf16, or auto (as stored: a 16-bit LLM stays
    /// 16-bit, no f32 copy).
    #[arg(long, default_value = "auto")]
    dtype: String,
    #[command(flatten)]
    profile: ProfileArgs,
    /// Base checkpoint of draft adapters (default: each adapter's base_model_name_or_path).
    #[arg(long, value_name = "DIR")]
    draft_base: Option<PathBuf>,
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
    /// Print the user, its prompt ids and the list (tokens, scores, items, titles) as JSON.
    #[arg(long)]
    json: bool,
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
    #[arg(long, default_value_t = 3, value_parser = at_least_one())]
    layers: usize,
    #[arg(long, default_value_t = 128, value_parser = at_least_one())]
    hidden: usize,
    #[arg(long, default_value_t = 4, value_parser = at_least_one())]
    heads: usize,
    #[arg(long, value_parser = at_least_one())]
    kv_heads: Option<usize>,
    /// MLP width (default: 8/3 of hidden, rounded up to a multiple of 32).
    #[arg(long)]
    intermediate: Option<usize>,
    /// Standard deviation of the normal initialisation (Hugging Face: 0.02).
    #[arg(long, default_value_t = 0.02, value_parser = positive_std, allow_negative_numbers = true)]
    std: f32,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[arg(long)]
    out: PathBuf,
    /// Replace a model already in OUT.
    #[arg(long)]
    force: bool,
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
    // candle 0.11 works out its thread count on every CPU matmul (parsing /proc/cpuinfo and the
    // CPU masks) unless RAYON_NUM_THREADS is set: settle it once, to the count candle would
    // choose, before any thread starts. The kernels' rayon pool reads the same variable.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var(
            "RAYON_NUM_THREADS",
            candle_core::utils::get_num_threads().to_string(),
        );
    }
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
        Err(e) => match e.downcast_ref::<atspeed::Error>() {
            // Stopped by a signal after restoring the terminal: the shell's convention
            // (128 + signal), and no message.
            Some(atspeed::Error::Interrupted(sig)) => {
                ExitCode::from(u8::try_from(128 + sig).unwrap_or(u8::MAX))
            }
            _ => {
                eprintln!("error: {}", cli_message(&e));
                ExitCode::FAILURE
            }
        },
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
    ("lr", "--lr"),
    ("out", "--out"),
    ("prompt", "--prompt"),
    ("profile", "--profile"),
    ("tokenizer_rules", "--tokenizer-rules"),
    ("fixed_tokens", "--fixed-tokens"),
    ("base", "--target-base/--draft-base (inspect: --base)"),
    ("force", "--force"),
    ("layers", "--layers"),
    ("hidden", "--hidden"),
    ("heads", "--heads"),
    ("kv_heads", "--kv-heads"),
    ("std", "--std"),
    ("max_n", "--max-n"),
    ("warmup", "--warmup"),
];

/// The error as one line, with a library parameter named by its command-line flag, both where
/// the error is about it and where its message mentions it in backquotes (`force`).
fn cli_message(e: &anyhow::Error) -> String {
    if let Some(atspeed::Error::Invalid { what, msg }) = e.downcast_ref::<atspeed::Error>() {
        let mut msg = msg.clone();
        for (p, flag) in FLAGS {
            msg = msg.replace(&format!("`{p}`"), flag);
        }
        return match FLAGS.iter().find(|(p, _)| p == what) {
            Some((_, flag)) => format!("{flag}: {msg}"),
            None => format!("{what}: {msg}"),
        };
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
        Some(Command::Inspect {
            dir,
            base,
            data,
            user,
            history,
            profile,
        }) => inspect(&dir, base.as_deref(), data, user, history, &profile),
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

impl ProfileArgs {
    /// The prompt style `--prompt` forces, and the token-space options.
    fn options(
        &self,
    ) -> Result<(
        Option<atspeed::model::PromptStyle>,
        atspeed::space::SpaceOptions,
    )> {
        let style: Option<atspeed::model::PromptStyle> =
            self.prompt.as_deref().map(str::parse).transpose()?;
        let mut space = atspeed::space::SpaceOptions {
            profile: self
                .profile
                .as_deref()
                .or(style.map(|s| s.name()))
                .map(atspeed::profile::ProfileChoice::parse),
            ..Default::default()
        };
        space.rules = self
            .tokenizer_rules
            .as_deref()
            .map(|r| {
                r.parse()
                    .map_err(|m: String| atspeed::Error::invalid("tokenizer_rules", m))
            })
            .transpose()?;
        space.score_fixed = match self.fixed_tokens.as_deref() {
            None => None,
            Some("scored") => Some(true),
            Some("skipped") => Some(false),
            Some(other) => {
                return Err(atspeed::Error::invalid(
                    "fixed_tokens",
                    format!("{other:?} is not scored or skipped"),
                )
                .into())
            }
        };
        Ok((style, space))
    }
}

impl Common {
    fn placement(&self) -> Result<Placement> {
        let mut at = Placement::parse(&self.device, &self.dtype)?;
        (at.prompt, at.space) = self.profile.options()?;
        Ok(at)
    }

    /// A draft from DIR (a checkpoint or an adapter), checked against the target's token space.
    fn draft(&self, dir: &Path, w: &Workload) -> Result<Llm> {
        Ok(atspeed::load::load_draft(
            dir,
            self.draft_base.as_deref(),
            &w.data,
            &w.at,
            &w.space,
        )?)
    }
}

/// What a decoding subcommand runs on: the dataset, the target and the dataset in the target's
/// token space, placed as the flags say.
struct Workload {
    at: Placement,
    data: Dataset,
    target: Llm,
    space: TokenSpace,
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

fn load_common(c: &Common) -> Result<Workload> {
    let at = c.placement()?;
    let data = Dataset::load(&c.data)?;
    let (target, space) = load_target(&c.target, c.target_base.as_deref(), &data, &at)?;
    Ok(Workload {
        at,
        data,
        target,
        space,
    })
}

#[cfg(feature = "tui")]
fn tui(a: TuiArgs) -> Result<()> {
    if a.demo {
        return Ok(atspeed::tui::run_demo()?);
    }
    let params = a.decode.params(a.k);
    params.validate()?;
    let w = load_common(&a.common)?;
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
        drafts.push((name, a.common.draft(&dir, &w)?));
    }
    Ok(atspeed::tui::run_explorer(atspeed::tui::ExplorerContext {
        device: label(&w.at.device),
        dataset: w.data,
        target: w.target,
        space: w.space,
        drafts,
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
    let w = load_common(&a.common)?;
    let draft = match &a.draft {
        Some(dir) => Some(a.common.draft(dir, &w)?),
        None => None,
    };
    let r = atspeed::eval::recommend::recommend(
        &w.data,
        &w.space,
        &w.target,
        draft.as_ref(),
        w.data.user_sample(a.user, a.common.history)?,
        &params,
        a.common.seed,
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r.to_json())?);
        return Ok(());
    }
    if let Some(c) = atspeed::decode::ScoreTolerance::caveat(w.target.model.dtype()) {
        println!("note: {c}");
    }
    println!("profile {} ({})", w.space.profile.name, w.space.profile_why);
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
    let w = load_common(&a.common)?;
    let draft = a.common.draft(&a.draft, &w)?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} users x K  {elapsed} (eta {eta})",
        )
        .expect("valid template"),
    );
    let report = run_bench(
        &w.data,
        &w.space,
        &w.target,
        &draft,
        &cfg,
        &label(&w.at.device),
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

fn inspect(
    dir: &Path,
    base: Option<&Path>,
    data: Option<PathBuf>,
    user: Option<u32>,
    history: usize,
    profile: &ProfileArgs,
) -> Result<()> {
    if !(dir.join(checkpoint::CONFIG).exists() || atspeed::model::lora::is_adapter(dir)) {
        println!("{}", Dataset::load(dir)?.summary());
        return Ok(());
    }
    let (_, opts) = profile.options()?;
    let summary = atspeed::model::summarize(dir, base, opts.rules)?;
    println!("{summary}");
    if let Some(c) = atspeed::decode::ScoreTolerance::caveat(summary.stored) {
        println!("  note           with --dtype auto (the default), {c}");
    }
    let data = match (data, user) {
        (Some(d), _) => d,
        (None, Some(_)) => default_asset("beauty"),
        (None, None) => return Ok(()),
    };
    let data = Dataset::load(&data)?;
    let space = atspeed::space::TokenSpace::of_view(&data, summary.view(), &opts)?;
    print!("{}", space.describe());
    if let Some(uid) = user {
        let sample = data.user_sample(uid, history)?;
        print!("{}", space.describe_prompt(&data, &sample.history)?);
    }
    Ok(())
}

fn new_model(a: NewModelArgs) -> Result<()> {
    atspeed::load::check_out_dir(&a.out, a.force)?;
    let dtype = checkpoint::parse_dtype(&a.dtype)?;
    let data = Dataset::load(&a.data)?;
    let kv = a.kv_heads.unwrap_or(a.heads);
    // Written tensor by tensor, so far larger than a model held in memory (a 7B shape in bf16).
    let max = atspeed::model::random::MAX_PARAMS as u64;
    let shape = [a.layers, a.hidden, a.heads, kv];
    let mut cfg = atspeed::model::compact_config(data.vocab.len(), shape, max)?;
    set(&mut cfg.intermediate_size, a.intermediate);
    atspeed::model::check_new_shape(&cfg, max)?;
    let mut params = 0;
    atspeed::atomic::write_dir(&a.out, |tmp| {
        params = atspeed::model::random::write_random(
            &cfg,
            data.vocab.tokens(),
            a.std,
            a.seed,
            dtype,
            tmp,
        )?;
        Ok(())
    })?;
    println!(
        "wrote {}Lx{} {} ({}) to {}",
        cfg.num_hidden_layers,
        cfg.hidden_size,
        atspeed::model::human_count(params),
        checkpoint::dtype_name(dtype),
        a.out.display()
    );
    Ok(())
}

fn selftest(a: SelftestArgs) -> Result<()> {
    let w = load_common(&a.common)?;
    let draft = a.common.draft(&a.draft, &w)?;
    let reference = load_model(
        &a.common.target,
        a.common.target_base.as_deref(),
        &Placement {
            prompt: w.at.prompt,
            space: w.at.space.clone(),
            ..Placement::cpu_f32()
        },
    )?;
    let r = atspeed::eval::selftest::run_selftest(
        &w.data,
        &w.space,
        &w.target,
        &draft,
        &reference,
        &w.at.device,
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
        o.force |= self.force;
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
    atspeed::load::check_out_file(&a.out, a.force)?;
    let at = Placement::parse(&a.device, "f32")?;
    let data = Dataset::load(&a.data)?;
    let target = load_compact(&a.target, &data, &at)?;
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
    let target = load_compact(&a.target, &data, &at)?;
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
