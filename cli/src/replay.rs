//! `gatekit replay`: feed a capture into a fresh gateway and print what it
//! did, write the audit files it wrote, or compare two configs on it.
//!
//! The replay itself is `gatekit_core::replay`; this file reads the files,
//! prints and writes. See `docs/capture-format.md`.

use crate::config_file;
use argh::FromArgs;
use gatekit_core::audit_sinks;
use gatekit_core::replay::{replay, what_if, Capture, Chunking, RenderOptions, Transcript};
use gatekit_core::Config;
use gatekit_runtime_std::audit_files::{backup_path, AuditFiles};
use gatekit_runtime_std::AuditFile;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Exit code when the replay ran (and, with --diff, no decision changes).
const OK: i32 = 0;
/// Exit code of `--diff` when some decision changes.
const DECISIONS_CHANGE: i32 = 1;
/// Exit code for unreadable files and bad arguments.
const ERROR: i32 = 2;

/// replay a capture through a fresh gateway and print what it did
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "replay",
    note = "Prints one line per action (a message to the client or the upstream, an audit line, close, signal, exit) with the time of the input that caused it; the same capture and config print the same bytes anywhere. With --diff OLD.yaml it prints instead the client requests the --config (NEW) would decide differently from OLD. See docs/capture-format.md.",
    error_code(1, "with --diff: some decision changes"),
    error_code(2, "a file cannot be read or written")
)]
pub struct ReplayArgs {
    /// the configuration to replay with (for --diff: the NEW one)
    #[argh(option, short = 'c')]
    pub config: PathBuf,

    /// the capture file, recorded with `gatekit --capture FILE`
    #[argh(positional)]
    pub capture: PathBuf,

    /// what-if: compare with this OLD configuration (the one the capture was
    /// recorded with) and list the requests whose decision changes
    #[argh(option)]
    pub diff: Option<PathBuf>,

    /// also write the audit files into this directory, each under the file
    /// name its sink has in the config, with the bytes the live run wrote
    #[argh(option)]
    pub audit_dir: Option<PathBuf>,

    /// how to feed the recorded bytes: `recorded` (default), `bytes` (one
    /// byte at a time) or `lines` (one chunk per message); all three must
    /// print the same
    #[argh(option, default = "ChunkingArg(Chunking::AsRecorded)")]
    pub chunking: ChunkingArg,

    /// print every message in full (lines over 64 KiB are otherwise shortened
    /// to their start, length and fingerprint)
    #[argh(switch)]
    pub full: bool,
}

/// `--chunking` as argh reads it.
#[derive(Debug, Clone, Copy)]
pub struct ChunkingArg(Chunking);

impl FromStr for ChunkingArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "recorded" => Ok(ChunkingArg(Chunking::AsRecorded)),
            "bytes" => Ok(ChunkingArg(Chunking::ByteByByte)),
            "lines" => Ok(ChunkingArg(Chunking::WholeLines)),
            other => Err(format!(
                "unknown chunking `{other}`: expected recorded, bytes or lines"
            )),
        }
    }
}

/// Runs `gatekit replay`; returns the exit code.
pub fn run(args: &ReplayArgs) -> i32 {
    match try_run(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("gatekit replay: {message}");
            ERROR
        }
    }
}

fn try_run(args: &ReplayArgs) -> Result<i32, String> {
    let config = load_config(&args.config)?;
    let capture = read_capture(&args.capture)?;
    let mut stdout = std::io::stdout().lock();
    let print = |out: &mut dyn Write, text: &str| {
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write the output: {e}"))
    };
    if let Some(old_path) = &args.diff {
        if args.audit_dir.is_some() {
            return Err("--audit-dir cannot be used with --diff".to_owned());
        }
        let old = load_config(old_path)?;
        let result = what_if(&capture.inputs, &old, &config);
        let header = format!(
            "What-if on {}\n  OLD = {} (should be the config the capture was recorded with)\n  NEW = {}\n\n",
            args.capture.display(),
            old_path.display(),
            args.config.display()
        );
        print(&mut stdout, &header)?;
        print(&mut stdout, &result.render())?;
        return Ok(if result.changes_anything() {
            DECISIONS_CHANGE
        } else {
            OK
        });
    }
    let transcript = replay(&config, &capture.inputs, args.chunking.0);
    let options = RenderOptions {
        elide_lines_over: if args.full {
            None
        } else {
            RenderOptions::default().elide_lines_over
        },
    };
    print(&mut stdout, &transcript.render(options))?;
    if let Some(dir) = &args.audit_dir {
        write_audit_files(dir, &config, &transcript)?;
    }
    Ok(OK)
}

fn load_config(path: &Path) -> Result<Config, String> {
    config_file::load(path)
        .map(|loaded| loaded.config)
        .map_err(|e| e.to_string())
}

fn read_capture(path: &Path) -> Result<Capture, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read capture {}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "capture {} is not UTF-8 text (byte {}): is it a capture file?",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let capture = Capture::parse(&text).map_err(|e| format!("capture {}: {e}", path.display()))?;
    if capture.truncated {
        eprintln!(
            "gatekit replay: the last line of {} is cut off (the recording gateway was killed while writing it); replaying without it",
            path.display()
        );
    }
    Ok(capture)
}

/// Appends the live run's audit writes to fresh files in `dir`, one per
/// sink, each named like the sink's `output_file`.
fn write_audit_files(dir: &Path, config: &Config, transcript: &Transcript) -> Result<(), String> {
    let mut names = BTreeSet::new();
    let mut specs = Vec::new();
    for (sink, file) in audit_sinks(config) {
        let name = Path::new(&file.output_file)
            .file_name()
            .ok_or_else(|| format!("audit file {} has no file name", file.output_file))?;
        if !names.insert(name.to_owned()) {
            return Err(format!(
                "two audit sinks write files named {}; replay writes each under its file name, so they cannot share one --audit-dir",
                name.to_string_lossy()
            ));
        }
        let path = dir.join(name);
        for existing in [path.clone(), backup_path(&path, 1)] {
            if existing.exists() {
                return Err(format!(
                    "{} already exists; replay writes fresh audit files, so give --audit-dir an empty directory",
                    existing.display()
                ));
            }
        }
        specs.push(AuditFile {
            sink,
            path,
            backup_count: file.backup_count,
            critical: true,
        });
    }
    let mut files = AuditFiles::open(specs).map_err(|e| e.to_string())?;
    for write in transcript.audit_writes() {
        files.write(write).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_names_parse() {
        assert!(matches!(
            "bytes".parse::<ChunkingArg>(),
            Ok(ChunkingArg(Chunking::ByteByByte))
        ));
        assert!(matches!(
            "lines".parse::<ChunkingArg>(),
            Ok(ChunkingArg(Chunking::WholeLines))
        ));
        assert!("whole".parse::<ChunkingArg>().is_err());
    }
}
