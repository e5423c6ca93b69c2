//! The command line: argument parsing and the offline commands (`review`, `inject`, `certs`).
//! The binary edge: errors become a line on stderr and an exit code here.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::engine::config::Config;
use crate::engine::inject::Policy;
use crate::server::args::ServeArgs;

#[derive(Parser, Debug)]
#[command(
    name = "sidecar-injector",
    version,
    about = "Kubernetes sidecar injection webhook"
)]
pub struct Cli {
    /// Injection config (YAML); without it the embedded default applies.
    #[arg(
        long,
        global = true,
        env = "SIDECAR_INJECTOR_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTPS webhook server.
    Serve(Box<ServeArgs>),
    /// Answer one AdmissionReview request (JSON) exactly as the server would.
    Review(ReviewArgs),
    /// Inject sidecars into manifests (YAML or JSON, multi-document) and print them as YAML.
    Inject(InjectArgs),
    /// Write a CA and a serving certificate and key (ca.crt, tls.crt, tls.key).
    Certs(CertsArgs),
    /// Ask the cluster whether pods and workloads are (or would be) injected, and why.
    /// Exit 0: all are; 1: some are not; 2: the cluster could not be asked.
    Check(crate::cluster::check::CheckArgs),
    /// Restart the workloads whose pods run stale sidecars (`--stale`), one at a time, each
    /// until available. Exit 0: done; 1: a workload did not become available; 2: an error.
    Rollout(crate::cluster::rollout::RolloutArgs),
}

#[derive(Args, Debug)]
pub struct InputArgs {
    /// Input file; `-` or none reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// `enabled` answers like `/mutate?policy=enabled` (inject unless the pod opts out).
    #[arg(
        long,
        default_value = "disabled",
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::PossibleValuesParser::new(Policy::NAMES),
            |name: String| Policy::from_name(&name).unwrap_or_default(),
        )
    )]
    pub policy: Policy,
}

#[derive(Args, Debug)]
pub struct ReviewArgs {
    #[command(flatten)]
    pub input: InputArgs,
}

#[derive(Args, Debug)]
pub struct InjectArgs {
    #[command(flatten)]
    pub input: InputArgs,
}

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// DNS names (or IP addresses) of the serving certificate.
    #[arg(long = "dns", value_name = "NAME", required = true, num_args = 1..)]
    pub dns: Vec<String>,
}

fn read_input(file: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    match file {
        Some(p) if p != Path::new("-") => std::fs::read(p).map(|b| buf = b),
        _ => std::io::stdin().read_to_end(&mut buf).map(|_| ()),
    }
    .with_context(|| {
        format!(
            "cannot read {}",
            file.map_or("standard input".into(), |p| p.display().to_string())
        )
    })?;
    Ok(buf)
}

/// Prints the answer; `Ok(false)` for input the server would answer with HTTP 400/413.
fn review(config: &Config, args: &ReviewArgs) -> anyhow::Result<bool> {
    let body = read_input(args.input.file.as_deref())?;
    match crate::engine::admission::review(&body, args.input.policy, config) {
        Ok(answer) => {
            std::io::stdout().write_all(&answer.body)?;
            Ok(true)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(false)
        }
    }
}

fn inject(config: &Config, args: &InjectArgs) -> anyhow::Result<bool> {
    let bytes = read_input(args.input.file.as_deref())?;
    let text = String::from_utf8(bytes).context("the input is not UTF-8 text")?;
    let report = crate::engine::manifest::inject(&text, args.input.policy, config)?;
    // With a denial the run fails as a whole: stderr says only what must be fixed.
    if !report.denials.is_empty() {
        for line in &report.denials {
            eprintln!("{line}");
        }
        return Ok(false);
    }
    for line in report.unchanged.iter().chain(&report.warnings) {
        eprintln!("{line}");
    }
    std::io::stdout().write_all(report.output.as_bytes())?;
    Ok(true)
}

/// Writes through a temporary file in the same directory and renames it into place: the file
/// is whole or absent, and a key gets mode 0600 whatever mode an older file had.
fn write_file(path: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn certs(args: &CertsArgs) -> anyhow::Result<bool> {
    let g = crate::tls::generate::generate(&args.dns)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    write_file(&args.out.join("ca.crt"), &g.ca_pem, false)?;
    write_file(&args.out.join("tls.crt"), &g.cert_pem, false)?;
    write_file(&args.out.join("tls.key"), &g.key_pem, true)?;
    eprintln!(
        "wrote {0}/ca.crt, {0}/tls.crt and {0}/tls.key for {1}",
        args.out.display(),
        args.dns.join(", ")
    );
    Ok(true)
}

fn check(args: &crate::cluster::check::CheckArgs, config: Option<&Path>) -> anyhow::Result<bool> {
    let findings = block_on(crate::cluster::check::run(args, config))??;
    let text = match args.output {
        crate::cluster::check::Format::Table => crate::cluster::check::table(&findings),
        crate::cluster::check::Format::Json => serde_json::to_string_pretty(&findings)? + "\n",
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(findings.iter().all(|f| f.result.ok()))
}

fn rollout(args: &crate::cluster::rollout::RolloutArgs) -> anyhow::Result<bool> {
    Ok(block_on(crate::cluster::rollout::run(args))??)
}

/// Runs one cluster command: a single thread is plenty for a handful of API calls.
fn block_on<F: std::future::Future>(command: F) -> std::io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(command))
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    let config = || {
        let config = Config::load(cli.config.as_deref())?;
        for warning in &config.warnings {
            eprintln!("sidecar-injector: warning: {warning}");
        }
        anyhow::Ok(config)
    };
    match &cli.command {
        Command::Review(args) => review(&config()?, args),
        Command::Inject(args) => inject(&config()?, args),
        Command::Certs(args) => certs(args),
        Command::Check(args) => check(args, cli.config.as_deref()),
        Command::Rollout(args) => rollout(args),
        Command::Serve(args) => crate::server::serve(args, cli.config.clone()).map(|()| true),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `check` keeps 1 for "not injected" (`rollout` for "not available"), so it cannot also
    // mean "could not ask".
    let error_code = match cli.command {
        Command::Check(_) | Command::Rollout(_) => 2,
        _ => 1,
    };
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sidecar-injector: {e:#}");
            ExitCode::from(error_code)
        }
    }
}
