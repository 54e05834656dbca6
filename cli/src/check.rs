//! `gatekit check`: validate a config and say, in plain words, what the
//! gateway would do with it — without starting anything.

use crate::config_file;
use argh::FromArgs;
use gatekit_core::config::{AuditingPlugin, ListMode, SecurityPlugin};
use std::path::{Path, PathBuf};

/// validate a configuration file and print what Gatekit would do with it
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check")]
pub struct CheckArgs {
    /// the configuration file (YAML) to check
    #[argh(option, short = 'c')]
    pub config: PathBuf,
}

/// Prints the summary to stdout; returns 0 when the config is valid.
pub fn run(args: &CheckArgs) -> i32 {
    let loaded = match config_file::load(&args.config) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return 1;
        }
    };
    println!("{}", describe(&loaded));
    if let Some(warning) = program_warning(&loaded.upstream_argv[0]) {
        println!("warning: {warning}");
    }
    0
}

/// The human-readable summary of a loaded config.
pub fn describe(loaded: &config_file::LoadedConfig) -> String {
    let config = &loaded.config;
    let mut out = format!("Configuration {} is valid.\n\n", loaded.path.display());
    out.push_str(&format!(
        "Upstream server (started over stdio, in its own process group):\n  {}\n",
        quote_argv(&loaded.upstream_argv)
    ));
    if let Some(name) = &config.proxy.upstream.name {
        out.push_str(&format!("  name in audit records: {name}\n"));
    }
    out.push_str("\nAuditing:\n");
    if config.plugins.auditing.is_empty() {
        out.push_str("  none (no audit log is written)\n");
    }
    for entry in &config.plugins.auditing {
        let AuditingPlugin::FileAuditing(file) = &entry.plugin;
        let state = if entry.enabled { "" } else { " [disabled]" };
        out.push_str(&format!(
            "  file_auditing{state}: {} records, mode {}, to {}\n    rotate before {} bytes, keep {} backups; {}\n",
            file.format.as_str(),
            file.mode.as_str(),
            file.output_file,
            file.max_file_size_mb.bytes(),
            file.backup_count,
            if file.critical {
                "critical: the gateway will not run without this log"
            } else {
                "not critical: the gateway keeps running if the log fails"
            }
        ));
    }
    out.push_str("\nSecurity:\n");
    if config.plugins.security.is_empty() {
        out.push_str("  none (every message passes)\n");
    }
    for entry in &config.plugins.security {
        let SecurityPlugin::ToolAllowlist(list) = &entry.plugin;
        let state = if entry.enabled { "" } else { " [disabled]" };
        let rule = match list.mode {
            ListMode::Allowlist => "only these tools are listed and callable",
            ListMode::Blocklist => "every tool except these is listed and callable",
        };
        out.push_str(&format!(
            "  tool_allowlist{state} ({}): {rule}: {}\n    blocked calls are answered with: {:?}\n",
            list.mode.as_str(),
            if list.tools.is_empty() {
                "(none)".to_owned()
            } else {
                list.tools.join(", ")
            },
            list.block_message
        ));
    }
    let limits = config.proxy.limits;
    out.push_str(&format!(
        "\nLimits: messages up to {} bytes, up to {} requests in flight.",
        limits.max_message_bytes, limits.max_in_flight_requests
    ));
    out
}

fn quote_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-~".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Says when the upstream program cannot be found or run from here.
fn program_warning(program: &str) -> Option<String> {
    let path = Path::new(program);
    if program.contains('/') {
        return (!path.is_file()).then(|| format!("upstream program {program} does not exist"));
    }
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    (!found).then(|| format!("upstream program `{program}` is not on PATH here"))
}
