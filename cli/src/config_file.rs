//! Loading a config file: YAML into the core's typed [`Config`], then the
//! parts that depend on where the file lives (relative paths, `~`, splitting
//! the upstream command).

use crate::shell_words;
use gatekit_core::config::{AuditingPlugin, CommandLine};
use gatekit_core::Config;
use std::fmt;
use std::path::{Path, PathBuf};

/// A config that loaded, with every path made absolute.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The config file, absolute.
    pub path: PathBuf,
    /// The typed config; each `output_file` is already absolute.
    pub config: Config,
    /// The upstream command, split into program and arguments.
    pub upstream_argv: Vec<String>,
}

/// Why a config could not be used. The message names the file, the key and
/// the line wherever the YAML parser could tell.
#[derive(Debug)]
pub struct ConfigError {
    path: PathBuf,
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration {}: {}",
            self.path.display(),
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Reads, parses and resolves the config file at `path`.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let fail = |message: String| ConfigError {
        path: path.to_path_buf(),
        message,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
    let absolute =
        std::path::absolute(path).map_err(|e| fail(format!("cannot resolve the path: {e}")))?;
    parse(&text, &absolute, home_dir().as_deref()).map_err(|message| ConfigError {
        path: absolute.clone(),
        message,
    })
}

/// Parses config text as if it were the file at `path` (absolute).
pub fn parse(text: &str, path: &Path, home: Option<&str>) -> Result<LoadedConfig, String> {
    if text.trim().is_empty() {
        return Err(
            "the file is empty; it needs at least `proxy: { upstream: { command: ... } }`"
                .to_owned(),
        );
    }
    let mut config: Config = serde_yaml::from_str(text).map_err(describe_yaml_error)?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let upstream_argv = match &config.proxy.upstream.command {
        CommandLine::Shell(line) => shell_words::split(line, home)
            .map_err(|e| format!("proxy.upstream.command: {e}: {line:?}"))?,
        CommandLine::Argv(argv) => argv
            .iter()
            .map(|a| shell_words::expand_tilde(a, home))
            .collect(),
    };
    for (index, entry) in config.plugins.auditing.iter_mut().enumerate() {
        let AuditingPlugin::FileAuditing(file) = &mut entry.plugin;
        if file.output_file.trim().is_empty() {
            return Err(format!(
                "plugins.auditing[{index}].config.output_file: must not be empty"
            ));
        }
        let expanded = PathBuf::from(shell_words::expand_tilde(&file.output_file, home));
        let resolved = if expanded.is_absolute() {
            expanded
        } else {
            dir.join(expanded)
        };
        file.output_file = resolved.to_string_lossy().into_owned();
    }
    if let Some(capture) = &mut config.proxy.capture_file {
        let expanded = PathBuf::from(shell_words::expand_tilde(capture, home));
        let resolved = if expanded.is_absolute() {
            expanded
        } else {
            dir.join(expanded)
        };
        *capture = resolved.to_string_lossy().into_owned();
    }
    Ok(LoadedConfig {
        path: path.to_path_buf(),
        config,
        upstream_argv,
    })
}

fn describe_yaml_error(error: serde_yaml::Error) -> String {
    let message = error.to_string();
    match error.location() {
        Some(loc) if !message.contains(" at line ") => {
            format!("{message} (line {}, column {})", loc.line(), loc.column())
        }
        _ => message,
    }
}

fn home_dir() -> Option<String> {
    std::env::var("HOME").ok().filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TUTORIAL: &str =
        include_str!("../../configs/tutorials/2-implementing-audit-logging.yaml");

    fn parse_at(text: &str) -> Result<LoadedConfig, String> {
        parse(text, Path::new("/etc/gatekit/cfg.yaml"), Some("/home/u"))
    }

    #[test]
    fn the_tutorial_config_loads() {
        let loaded = parse_at(TUTORIAL).unwrap();
        assert_eq!(
            loaded.upstream_argv,
            [
                "npx",
                "@modelcontextprotocol/server-filesystem",
                "/home/u/claude-sandbox/"
            ]
        );
        let AuditingPlugin::FileAuditing(file) = &loaded.config.plugins.auditing[0].plugin;
        assert_eq!(file.output_file, "/etc/gatekit/logs/audit.log");
        assert_eq!(file.max_file_size_mb.bytes(), 10 * 1024 * 1024);
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let err = parse_at("proxy:\n  upstream:\n    command: x\nplugins:\n  auditing:\n    - policy: file_auditing\n      config:\n        formt: json\n").unwrap_err();
        assert!(err.contains("plugins.auditing[0].config"), "{err}");
        assert!(err.contains("unknown field `formt`"), "{err}");
        assert!(err.contains("line 8"), "{err}");

        let err = parse_at("proxy:\n  upstream:\n    command: x\nplugins:\n  security:\n    - policy: tool_allowlist\n      config:\n        mode: maybe\n").unwrap_err();
        assert!(err.contains("plugins.security[0].config.mode"), "{err}");
        assert!(err.contains("unknown variant `maybe`"), "{err}");
        assert!(err.contains("line 8"), "{err}");

        let err = parse_at("proxy:\n  upstream: {}\n").unwrap_err();
        assert!(err.contains("missing field `command`"), "{err}");
        assert!(err.contains("line 2"), "{err}");

        let err = parse_at("proxy:\n  upstream:\n    command: \"a 'b\"\n").unwrap_err();
        assert!(
            err.contains("proxy.upstream.command: unclosed ' quote"),
            "{err}"
        );
    }

    #[test]
    fn paths_resolve_against_the_config_directory_and_home() {
        let text = "proxy:\n  upstream:\n    command: [\"~/bin/server\", \"--root\", \"~/data\"]\nplugins:\n  auditing:\n    - policy: file_auditing\n      config: {output_file: \"~/audit.log\"}\n    - policy: file_auditing\n      config: {output_file: \"/var/log/a.log\"}\n    - policy: file_auditing\n      config: {output_file: \"rel/b.log\"}\n";
        let loaded = parse_at(text).unwrap();
        assert_eq!(
            loaded.upstream_argv,
            ["/home/u/bin/server", "--root", "/home/u/data"]
        );
        let files: Vec<String> = loaded
            .config
            .plugins
            .auditing
            .iter()
            .map(|e| {
                let AuditingPlugin::FileAuditing(f) = &e.plugin;
                f.output_file.clone()
            })
            .collect();
        assert_eq!(
            files,
            [
                "/home/u/audit.log",
                "/var/log/a.log",
                "/etc/gatekit/rel/b.log"
            ]
        );
    }

    #[test]
    fn empty_files_get_a_helpful_message() {
        assert!(parse_at("\n  \n")
            .unwrap_err()
            .contains("the file is empty"));
    }
}
