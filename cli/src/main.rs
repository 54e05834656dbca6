//! `gatekit`: the command-line entry point of the Gatekit MCP gateway.
//!
//! This crate only parses arguments, sets up logging, loads the config and
//! hands a `Gateway` to a runtime. Protocol and policy live in `gatekit-core`.
#![forbid(unsafe_code)]

mod check;
mod config_file;
mod demo;
mod demo_server;
mod logging;
mod replay;
mod shell_words;
mod startup_failure;

use argh::FromArgs;
use gatekit_core::config::{AuditingPlugin, SecurityPlugin};
use gatekit_core::{audit_sinks, Gateway};
use gatekit_runtime_std::{AuditFile, RunOptions, UpstreamCommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Gatekit: an MCP gateway. Point your MCP client (Claude Desktop, Claude
/// Code, Cursor, VS Code) at `gatekit --config FILE` instead of the MCP
/// server: Gatekit starts the server named in the config, passes every
/// message through, writes an audit log and enforces the tool policy.
#[derive(FromArgs, Debug)]
struct Args {
    /// the configuration file (YAML) to run with
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,

    /// log every message in both directions to stderr (debug level)
    #[argh(switch, short = 'v')]
    verbose: bool,

    /// record the session into this capture file, for `gatekit replay`
    /// (overrides proxy.capture_file)
    #[argh(option)]
    capture: Option<PathBuf>,

    /// which runtime drives the gateway: std (threads, the default) or smol
    /// (async); both behave the same
    #[argh(option, default = "Runtime::Std")]
    runtime: Runtime,

    /// print the version and exit
    #[argh(switch, short = 'V')]
    version: bool,

    #[argh(subcommand)]
    command: Option<Command>,
}

/// The runtime that moves the bytes; the gateway is the same either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runtime {
    /// `gatekit-runtime-std`: blocking threads.
    Std,
    /// `gatekit-runtime-smol`: one thread running smol tasks.
    Smol,
}

impl std::str::FromStr for Runtime {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "std" => Ok(Runtime::Std),
            "smol" => Ok(Runtime::Smol),
            _ => Err(format!(
                "unknown runtime `{name}`: expected `std` or `smol`"
            )),
        }
    }
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Command {
    Check(check::CheckArgs),
    Replay(replay::ReplayArgs),
    Demo(demo::DemoArgs),
    DemoServer(demo::DemoServerArgs),
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    if args.version {
        println!("gatekit {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let code = match args.command {
        Some(Command::Check(check_args)) => check::run(&check_args),
        Some(Command::Replay(replay_args)) => replay::run(&replay_args),
        Some(Command::Demo(demo_args)) => demo::run(&demo_args),
        Some(Command::DemoServer(server_args)) => demo::serve(&server_args),
        None => match args.config {
            Some(path) => run_gateway(path, args.verbose, args.capture, args.runtime),
            None => {
                eprintln!(
                    "gatekit: missing --config FILE (see `gatekit --help`; try `gatekit demo`)"
                );
                2
            }
        },
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Expands `{timestamp}` (UTC, `20240616T103015Z`) and `{pid}` in a
/// configured capture path, so every session gets its own file.
fn capture_path(template: &str) -> PathBuf {
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    PathBuf::from(
        template
            .replace("{timestamp}", &stamp)
            .replace("{pid}", &std::process::id().to_string()),
    )
}

/// Runs the gateway on stdin/stdout until the client or the upstream leaves.
fn run_gateway(path: PathBuf, verbose: bool, capture: Option<PathBuf>, runtime: Runtime) -> i32 {
    logging::init(verbose);
    log::info!(target: "gatekit.main", "Loading configuration from {}", path.display());
    let loaded = match config_file::load(&path) {
        Ok(loaded) => loaded,
        Err(error) => return startup_failure::report(&error.to_string()),
    };
    log::info!(target: "gatekit.main", "Starting Gatekit MCP Gateway");
    let config = &loaded.config;
    for entry in &config.plugins.auditing {
        let AuditingPlugin::FileAuditing(file) = &entry.plugin;
        if entry.enabled {
            log::info!(target: "gatekit.plugins.manager", "Loaded auditing plugin: file_auditing");
            log::info!(
                target: "gatekit.plugins.manager",
                "file_auditing writes {} records (mode {}) to {}",
                file.format.as_str(),
                file.mode.as_str(),
                file.output_file
            );
        } else {
            log::info!(target: "gatekit.plugins.manager", "Skipping disabled auditing plugin: file_auditing");
        }
    }
    for entry in &config.plugins.security {
        let name = match &entry.plugin {
            SecurityPlugin::ToolAllowlist(_) => "tool_allowlist",
        };
        if entry.enabled {
            log::info!(target: "gatekit.plugins.manager", "Loaded security plugin: {name}");
        } else {
            log::info!(target: "gatekit.plugins.manager", "Skipping disabled security plugin: {name}");
        }
    }
    let audit_files = audit_sinks(config)
        .map(|(sink, file)| AuditFile {
            sink,
            path: PathBuf::from(&file.output_file),
            backup_count: file.backup_count,
            critical: file.critical,
        })
        .collect();
    let mut argv = loaded.upstream_argv.clone();
    let program = argv.remove(0);
    let options = RunOptions {
        upstream: UpstreamCommand {
            program,
            args: argv,
        },
        audit_files,
        capture: capture.or_else(|| config.proxy.capture_file.as_deref().map(capture_path)),
    };
    if let Some(capture) = &options.capture {
        log::info!(target: "gatekit.main", "Recording this session to {}", capture.display());
    }
    let gateway = Gateway::new(config);
    let result = match runtime {
        Runtime::Std => gatekit_runtime_std::run(gateway, options),
        Runtime::Smol => gatekit_runtime_smol::run(gateway, options),
    };
    match result {
        Ok(code) => code,
        Err(error) => startup_failure::report(&format!("cannot start: {error}")),
    }
}
