//! Typed configuration, in the YAML shape the tutorial documents.
//!
//! Every check happens while deserialising ("parse, don't validate"), so a
//! YAML front end reports each mistake with its key path and line. Spellings
//! from older Gatekit documentation (`jsonl`, `simple`, `all_events`, `file`,
//! `max_size_mb`) are accepted as aliases so copied configs keep working.
//! This module reads no files: the caller hands in parsed data and resolves
//! paths.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// A whole Gatekit configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How the gateway talks to the client and which server it starts.
    pub proxy: ProxyConfig,
    /// Auditing and security plugins.
    #[serde(default)]
    pub plugins: PluginsConfig,
}

/// The `proxy:` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Only `stdio` exists today; the key is accepted because the tutorial sets it.
    #[serde(default)]
    pub transport: Transport,
    /// The real MCP server the gateway starts.
    pub upstream: UpstreamConfig,
    /// Bounds on what a peer can make the gateway hold.
    #[serde(default)]
    pub limits: Limits,
    /// Record every session into this capture file, for `gatekit replay`.
    /// `{timestamp}` and `{pid}` in the name are replaced when the gateway
    /// starts, so each session gets its own file. Relative to the config file.
    #[serde(default)]
    pub capture_file: Option<String>,
}

/// How the client reaches the gateway.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// JSON-RPC lines over stdin/stdout.
    #[default]
    Stdio,
}

/// The `proxy.upstream:` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The server's command line: a string split like a shell would split it,
    /// or a list of arguments taken as they are.
    pub command: CommandLine,
    /// A name for the server, written to audit records as `server_name`.
    #[serde(default)]
    pub name: Option<String>,
}

/// An upstream command as written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// `command: "npx pkg ~/dir"`: split by the caller (quotes, escapes, `~`).
    Shell(String),
    /// `command: ["npx", "pkg", "/dir"]`: already split.
    Argv(Vec<String>),
}

impl<'de> Deserialize<'de> for CommandLine {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CommandVisitor;
        impl<'de> Visitor<'de> for CommandVisitor {
            type Value = CommandLine;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command line string or a list of arguments")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CommandLine, E> {
                if v.trim().is_empty() {
                    return Err(E::custom("the upstream command is empty"));
                }
                Ok(CommandLine::Shell(v.to_owned()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<CommandLine, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    argv.push(arg);
                }
                if argv.is_empty() {
                    return Err(de::Error::custom("the upstream command is empty"));
                }
                Ok(CommandLine::Argv(argv))
            }
        }
        deserializer.deserialize_any(CommandVisitor)
    }
}

/// Bounds that keep a misbehaving peer from exhausting memory.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest accepted line (one JSON-RPC message), in bytes. Longer lines
    /// are discarded and, when they were requests, answered with an error.
    #[serde(deserialize_with = "at_least_1k")]
    pub max_message_bytes: usize,
    /// Most client requests that may wait for the upstream at once.
    #[serde(deserialize_with = "at_least_one")]
    pub max_in_flight_requests: usize,
    /// Answer a client request with an error (and cancel it at the server)
    /// when the upstream has not answered it within this many milliseconds.
    /// No timeout when absent.
    #[serde(deserialize_with = "timeout_ms")]
    pub request_timeout_ms: Option<u64>,
}

/// The longest request timeout accepted: 30 days (a larger number is a
/// mistake, not a wish for "forever"; leave the key out for no timeout).
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 30 * 24 * 60 * 60 * 1000;

fn at_least_1k<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let bytes = usize::deserialize(deserializer)?;
    if bytes < 1024 {
        return Err(de::Error::custom(format_args!(
            "max_message_bytes must be at least 1024 (an MCP initialize alone is hundreds of bytes), got {bytes}"
        )));
    }
    Ok(bytes)
}

fn at_least_one<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(deserializer)?;
    if n == 0 {
        return Err(de::Error::custom(
            "max_in_flight_requests must be at least 1",
        ));
    }
    Ok(n)
}

fn timeout_ms<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let ms = u64::deserialize(deserializer)?;
    if ms == 0 || ms > MAX_REQUEST_TIMEOUT_MS {
        return Err(de::Error::custom(format_args!(
            "request_timeout_ms must be between 1 and {MAX_REQUEST_TIMEOUT_MS} (30 days), got {ms}; leave it out for no timeout"
        )));
    }
    Ok(Some(ms))
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024 * 1024,
            max_in_flight_requests: 1024,
            request_timeout_ms: None,
        }
    }
}

/// The `plugins:` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Where audit records go.
    #[serde(default)]
    pub auditing: Vec<PluginEntry<AuditingPlugin>>,
    /// What may pass.
    #[serde(default)]
    pub security: Vec<PluginEntry<SecurityPlugin>>,
}

/// One `- policy: ... enabled: ... config: ...` item.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginEntry<P> {
    /// A disabled plugin is parsed (so typos are still caught) but not run.
    pub enabled: bool,
    /// The plugin and its settings.
    pub plugin: P,
}

/// The auditing plugins Gatekit knows.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditingPlugin {
    /// Writes records to a file (`policy: file_auditing`).
    FileAuditing(FileAuditingConfig),
}

/// The security plugins Gatekit knows.
#[derive(Debug, Clone, PartialEq)]
pub enum SecurityPlugin {
    /// Restricts which tools may be listed and called (`policy: tool_allowlist`).
    ToolAllowlist(ToolAllowlistConfig),
}

/// A family of plugins, naming its members for `policy:`.
pub trait PluginKind: Sized {
    /// What the list is called in messages (`auditing`, `security`).
    const CATEGORY: &'static str;
    /// The accepted `policy:` names.
    const NAMES: &'static [&'static str];
    /// Reads the `config:` value for the named policy.
    fn deserialize_config<'de, D: Deserializer<'de>>(
        policy: &str,
        deserializer: D,
    ) -> Result<Self, D::Error>;
}

impl PluginKind for AuditingPlugin {
    const CATEGORY: &'static str = "auditing";
    const NAMES: &'static [&'static str] = &["file_auditing"];
    fn deserialize_config<'de, D: Deserializer<'de>>(
        policy: &str,
        deserializer: D,
    ) -> Result<Self, D::Error> {
        match policy {
            "file_auditing" => {
                FileAuditingConfig::deserialize(deserializer).map(AuditingPlugin::FileAuditing)
            }
            other => Err(de::Error::unknown_variant(other, Self::NAMES)),
        }
    }
}

impl PluginKind for SecurityPlugin {
    const CATEGORY: &'static str = "security";
    const NAMES: &'static [&'static str] = &["tool_allowlist"];
    fn deserialize_config<'de, D: Deserializer<'de>>(
        policy: &str,
        deserializer: D,
    ) -> Result<Self, D::Error> {
        match policy {
            "tool_allowlist" => {
                ToolAllowlistConfig::deserialize(deserializer).map(SecurityPlugin::ToolAllowlist)
            }
            other => Err(de::Error::unknown_variant(other, Self::NAMES)),
        }
    }
}

impl<'de, P: PluginKind> Deserialize<'de> for PluginEntry<P> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntryVisitor(std::marker::PhantomData))
    }
}

struct EntryVisitor<P>(std::marker::PhantomData<P>);

/// Deserialises `config:` for a policy already named, so errors inside it
/// keep their location in the source file.
struct ConfigSeed<'p, P>(&'p str, std::marker::PhantomData<P>);

impl<'de, P: PluginKind> DeserializeSeed<'de> for ConfigSeed<'_, P> {
    type Value = P;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<P, D::Error> {
        P::deserialize_config(self.0, deserializer)
    }
}

impl<'de, P: PluginKind> Visitor<'de> for EntryVisitor<P> {
    type Value = PluginEntry<P>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an {} plugin with `policy`, `enabled` and `config`",
            P::CATEGORY
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut policy: Option<String> = None;
        let mut enabled: Option<bool> = None;
        let mut plugin: Option<P> = None;
        let mut early_config: Option<serde_json::Value> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "policy" | "handler" => {
                    if policy.is_some() {
                        return Err(de::Error::duplicate_field("policy"));
                    }
                    let name: String = map.next_value()?;
                    if !P::NAMES.contains(&name.as_str()) {
                        return Err(de::Error::custom(format_args!(
                            "unknown {} policy `{name}`, expected one of: {}",
                            P::CATEGORY,
                            P::NAMES.join(", ")
                        )));
                    }
                    policy = Some(name);
                }
                "enabled" => {
                    if enabled.is_some() {
                        return Err(de::Error::duplicate_field("enabled"));
                    }
                    enabled = Some(map.next_value()?);
                }
                "config" => {
                    if plugin.is_some() || early_config.is_some() {
                        return Err(de::Error::duplicate_field("config"));
                    }
                    match &policy {
                        Some(name) => {
                            plugin =
                                Some(map.next_value_seed(ConfigSeed::<P>(
                                    name,
                                    std::marker::PhantomData,
                                ))?)
                        }
                        // `config` before `policy`: keep it and read it once the
                        // policy is known (the location of errors inside it is lost).
                        None => early_config = Some(map.next_value()?),
                    }
                }
                other => {
                    return Err(de::Error::unknown_field(
                        other,
                        &["policy", "enabled", "config"],
                    ));
                }
            }
        }
        let policy = policy.ok_or_else(|| de::Error::missing_field("policy"))?;
        let plugin = match (plugin, early_config) {
            (Some(plugin), _) => plugin,
            (None, Some(value)) => {
                P::deserialize_config(&policy, value).map_err(de::Error::custom)?
            }
            (None, None) => {
                P::deserialize_config(&policy, serde_json::Value::Object(Default::default()))
                    .map_err(de::Error::custom)?
            }
        };
        Ok(PluginEntry {
            enabled: enabled.unwrap_or(true),
            plugin,
        })
    }
}

/// Settings of the `file_auditing` plugin.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileAuditingConfig {
    /// The log file. Relative paths are relative to the config file.
    #[serde(alias = "file", default = "default_output_file")]
    pub output_file: String,
    /// How each record is written.
    #[serde(default)]
    pub format: AuditFormat,
    /// Which events are written.
    #[serde(default)]
    pub mode: AuditMode,
    /// Rotate before the file would grow past this size.
    #[serde(alias = "max_size_mb", default = "default_max_file_size")]
    pub max_file_size_mb: FileSizeMb,
    /// How many rotated files (`audit.log.1` … `audit.log.N`) to keep.
    #[serde(default = "default_backup_count")]
    pub backup_count: u32,
    /// When true, the gateway refuses to run without a working audit log.
    #[serde(default = "default_true")]
    pub critical: bool,
    /// CSV settings (only read with `format: csv`).
    #[serde(default)]
    pub csv_config: CsvConfig,
}

fn default_output_file() -> String {
    "logs/audit.log".to_owned()
}
fn default_max_file_size() -> FileSizeMb {
    FileSizeMb(10.0)
}
fn default_backup_count() -> u32 {
    5
}
fn default_true() -> bool {
    true
}

/// The record layouts of `file_auditing`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuditFormat {
    /// One JSON object per line (`jsonl` is the older name).
    #[default]
    #[serde(alias = "jsonl")]
    Json,
    /// One human-readable line per event (`simple` is the older name).
    #[serde(alias = "simple")]
    Line,
    /// Key=value lines with every detail, for debugging.
    Debug,
    /// Comma-separated values with a header row.
    Csv,
}

impl AuditFormat {
    /// The canonical name, as written in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditFormat::Json => "json",
            AuditFormat::Line => "line",
            AuditFormat::Debug => "debug",
            AuditFormat::Csv => "csv",
        }
    }
}

/// Which events a `file_auditing` plugin writes.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuditMode {
    /// Every event (`all_events` is the older name).
    #[default]
    #[serde(alias = "all_events")]
    All,
    /// Only security decisions that stopped or changed something (blocks,
    /// filtered tool lists) and protocol errors.
    SecurityOnly,
    /// Only the traffic itself: requests, responses and notifications.
    OperationsOnly,
}

impl AuditMode {
    /// The canonical name, as written in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditMode::All => "all",
            AuditMode::SecurityOnly => "security_only",
            AuditMode::OperationsOnly => "operations_only",
        }
    }
}

/// A file size in mebibytes; fractions are allowed (`0.5`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FileSizeMb(pub f64);

impl FileSizeMb {
    /// The size in bytes (at least one).
    pub fn bytes(self) -> u64 {
        ((self.0 * 1024.0 * 1024.0).round() as u64).max(1)
    }
}

impl<'de> Deserialize<'de> for FileSizeMb {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mb = f64::deserialize(deserializer)?;
        if !mb.is_finite() || mb <= 0.0 {
            return Err(de::Error::custom(format_args!(
                "max_file_size_mb must be a positive number of MiB, got {mb}"
            )));
        }
        Ok(FileSizeMb(mb))
    }
}

/// `csv_config:` of `file_auditing`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CsvConfig {
    /// The field separator: one ASCII character.
    pub delimiter: CsvDelimiter,
    /// When fields are quoted.
    pub quote_style: CsvQuoteStyle,
}

impl Default for CsvConfig {
    fn default() -> Self {
        CsvConfig {
            delimiter: CsvDelimiter(b','),
            quote_style: CsvQuoteStyle::Minimal,
        }
    }
}

/// A CSV delimiter: exactly one ASCII character that is not a quote or newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvDelimiter(pub u8);

impl<'de> Deserialize<'de> for CsvDelimiter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let text = if text == "\\t" { "\t".to_owned() } else { text };
        match text.as_bytes() {
            [b] if b.is_ascii() && !matches!(b, b'"' | b'\n' | b'\r') => Ok(CsvDelimiter(*b)),
            _ => Err(de::Error::custom(format_args!(
                "csv delimiter must be one ASCII character other than a quote or newline, got {text:?}"
            ))),
        }
    }
}

/// CSV quoting, with the names Python's `csv` module uses.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CsvQuoteStyle {
    /// Quote only fields that need it.
    #[default]
    Minimal,
    /// Quote every field.
    All,
    /// Quote every field that is not a number.
    Nonnumeric,
    /// Never quote; characters that would need quoting are escaped with `\`.
    None,
}

/// Settings of the `tool_allowlist` plugin.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ToolAllowlistConfig {
    /// Whether `tools` lists what is allowed or what is blocked.
    pub mode: ListMode,
    /// Tool names, compared exactly (case-sensitive, no normalisation).
    #[serde(default)]
    pub tools: Vec<String>,
    /// The error message a blocked call is answered with.
    #[serde(default = "default_block_message")]
    pub block_message: String,
}

fn default_block_message() -> String {
    "Tool access denied by security policy".to_owned()
}

/// How `tool_allowlist` reads its `tools` list.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListMode {
    /// Only the listed tools may be listed and called.
    Allowlist,
    /// Every tool but the listed ones may be listed and called.
    Blocklist,
}

impl ListMode {
    /// The name used in config files and audit metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            ListMode::Allowlist => "allowlist",
            ListMode::Blocklist => "blocklist",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_reads_config_given_before_policy() {
        let value = serde_json::json!({
            "config": {"mode": "blocklist", "tools": ["rm"]},
            "policy": "tool_allowlist"
        });
        let entry: PluginEntry<SecurityPlugin> = serde_json::from_value(value).unwrap();
        assert!(entry.enabled);
        let SecurityPlugin::ToolAllowlist(cfg) = entry.plugin;
        assert_eq!(cfg.mode, ListMode::Blocklist);
        assert_eq!(cfg.block_message, "Tool access denied by security policy");
    }

    #[test]
    fn entry_rejects_unknown_policy_and_keys() {
        let err = serde_json::from_value::<PluginEntry<SecurityPlugin>>(
            serde_json::json!({"policy": "nope"}),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown security policy `nope`"),
            "{err}"
        );
        let err = serde_json::from_value::<PluginEntry<AuditingPlugin>>(
            serde_json::json!({"policy": "file_auditing", "colour": 1}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn file_auditing_defaults_and_aliases() {
        let entry: PluginEntry<AuditingPlugin> = serde_json::from_value(serde_json::json!({
            "policy": "file_auditing",
            "config": {"file": "a.log", "format": "simple", "mode": "all_events", "max_size_mb": 0.5}
        }))
        .unwrap();
        let AuditingPlugin::FileAuditing(cfg) = entry.plugin;
        assert_eq!(cfg.output_file, "a.log");
        assert_eq!(cfg.format, AuditFormat::Line);
        assert_eq!(cfg.mode, AuditMode::All);
        assert_eq!(cfg.max_file_size_mb.bytes(), 512 * 1024);
        assert_eq!(cfg.backup_count, 5);
        assert!(cfg.critical);
        let err = serde_json::from_value::<FileAuditingConfig>(
            serde_json::json!({"max_file_size_mb": 0}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("positive"), "{err}");
    }
}
