//! The things the client talks to, and one client session with each.
//!
//! Every target ends in the same `bench-echo` upstream; they differ in what
//! sits between the client and it:
//!
//! | target | the client spawns |
//! |---|---|
//! | `direct` | `bench-echo` itself |
//! | `relay` | `bench-relay bench-echo` (copies bytes, nothing else) |
//! | `line-relay` | `bench-relay --lines bench-echo` (copies whole lines: store-and-forward) |
//! | `relay-smol` | `bench-relay --smol bench-echo` (copies bytes as the smol runtime moves them) |
//! | `gatekit-<rt>` | `gatekit --config audit.yaml --runtime <rt>`: json audit + allowlist |
//! | `gatekit-<rt>-noaudit` | the same without the auditing plugin |

use crate::sys;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Tools in every `tools/list` answer of the echo.
pub const TOOLS: usize = 500;
pub use crate::tools_list::ALLOWED_TOOLS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Relay,
    /// The relay in `--lines` mode: store-and-forward, still no parsing.
    LineRelay,
    /// The relay in `--smol` mode: the smol runtime's way of moving bytes.
    SmolRelay,
    Gatekit {
        runtime: String,
        audit: bool,
        /// Another gatekit binary to compare with (`--compare LABEL=PATH`).
        binary: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub kind: Kind,
}

impl Target {
    pub fn direct() -> Self {
        Target {
            name: "direct".into(),
            kind: Kind::Direct,
        }
    }
    pub fn relay() -> Self {
        Target {
            name: "relay".into(),
            kind: Kind::Relay,
        }
    }
    pub fn line_relay() -> Self {
        Target {
            name: "line-relay".into(),
            kind: Kind::LineRelay,
        }
    }
    pub fn smol_relay() -> Self {
        Target {
            name: "relay-smol".into(),
            kind: Kind::SmolRelay,
        }
    }
    pub fn gatekit(runtime: &str, audit: bool) -> Self {
        let suffix = if audit { "" } else { "-noaudit" };
        Target {
            name: format!("gatekit-{runtime}{suffix}"),
            kind: Kind::Gatekit {
                runtime: runtime.to_owned(),
                audit,
                binary: None,
            },
        }
    }
    /// A gatekit built elsewhere (another branch), named `gatekit-<rt>@<label>`.
    pub fn gatekit_at(runtime: &str, audit: bool, label: &str, binary: &Path) -> Self {
        let mut target = Target::gatekit(runtime, audit);
        target.name = format!("{}@{label}", target.name);
        if let Kind::Gatekit { binary: b, .. } = &mut target.kind {
            *b = Some(binary.to_owned());
        }
        target
    }
    pub fn is_gatekit(&self) -> bool {
        matches!(self.kind, Kind::Gatekit { .. })
    }
    /// Whether the tool allowlist filters this target's `tools/list`.
    pub fn filters_tools(&self) -> bool {
        self.is_gatekit()
    }
}

/// Binaries and scratch files shared by every run.
pub struct Env {
    pub echo: PathBuf,
    pub relay: PathBuf,
    pub gatekit: PathBuf,
    pub scratch: PathBuf,
    configs: BTreeMap<bool, PathBuf>,
}

impl Env {
    pub fn new(bin_dir: &Path, gatekit: PathBuf, scratch: PathBuf) -> io::Result<Self> {
        let echo = bin_dir.join("bench-echo");
        let relay = bin_dir.join("bench-relay");
        for bin in [&echo, &relay, &gatekit] {
            if !bin.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "{} is missing: build with `cargo build --release --workspace` (or let the harness build, without --no-build)",
                        bin.display()
                    ),
                ));
            }
        }
        fs::create_dir_all(&scratch)?;
        let mut configs = BTreeMap::new();
        for audit in [true, false] {
            let path = scratch.join(if audit {
                "gatekit-audit.yaml"
            } else {
                "gatekit-noaudit.yaml"
            });
            fs::write(&path, config_yaml(&echo, &scratch, audit))?;
            configs.insert(audit, path);
        }
        Ok(Env {
            echo,
            relay,
            gatekit,
            scratch,
            configs,
        })
    }

    /// Starts `target` with piped stdin/stdout; its stderr goes to a log
    /// file in the scratch directory. `timeout` bounds the whole session: a
    /// target still running after it is killed, so a hang fails the run
    /// instead of stalling the benchmark.
    pub fn spawn(&self, target: &Target, timeout: Duration) -> io::Result<Session> {
        let echo_args = ["--tools".to_owned(), TOOLS.to_string()];
        let mut command = match &target.kind {
            Kind::Direct => {
                let mut c = Command::new(&self.echo);
                c.args(&echo_args);
                c
            }
            Kind::Relay => {
                let mut c = Command::new(&self.relay);
                c.arg(&self.echo).args(&echo_args);
                c
            }
            Kind::LineRelay => {
                let mut c = Command::new(&self.relay);
                c.arg("--lines").arg(&self.echo).args(&echo_args);
                c
            }
            Kind::SmolRelay => {
                let mut c = Command::new(&self.relay);
                c.arg("--smol").arg(&self.echo).args(&echo_args);
                c
            }
            Kind::Gatekit {
                runtime,
                audit,
                binary,
            } => {
                let mut c = Command::new(binary.as_deref().unwrap_or(&self.gatekit));
                c.arg("--config").arg(&self.configs[audit]);
                if runtime != "std" {
                    c.arg("--runtime").arg(runtime);
                }
                c
            }
        };
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.scratch.join(format!("{}.stderr.log", target.name)))?;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let pid = child.id();
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::with_capacity(64 * 1024, child.stdout.take().expect("piped"));
        Ok(Session {
            target: target.name.clone(),
            child,
            stdin: Some(stdin),
            stdout,
            pid,
            _watch: watchdog().watch(pid, timeout),
        })
    }
}

fn config_yaml(echo: &Path, scratch: &Path, audit: bool) -> String {
    let tools = ALLOWED_TOOLS
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let auditing = if audit {
        format!(
            r#"  auditing:
    - policy: "file_auditing"
      enabled: true
      config:
        output_file: "{}"
        format: "json"
        max_file_size_mb: 10
        backup_count: 5
"#,
            scratch.join("audit").join("audit.log").display()
        )
    } else {
        String::new()
    };
    // The tutorial's policy (json audit log with its rotation settings, a
    // tool allowlist), with the echo's tool on the list.
    format!(
        r#"# Written by gatekit-bench.
proxy:
  transport: stdio
  upstream:
    command: ["{}", "--tools", "{TOOLS}"]
plugins:
{auditing}  security:
    - policy: "tool_allowlist"
      enabled: true
      config:
        mode: "allowlist"
        tools: [{tools}]
        block_message: "Tool access denied by security policy"
"#,
        echo.display()
    )
}

/// A client connected to one running target.
pub struct Session {
    pub target: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
    _watch: Watch,
}

pub const INITIALIZE: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"gatekit-bench\",\"version\":\"0.1.0\"}}}\n";
const INITIALIZED: &[u8] = b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n";

impl Session {
    /// Writes bytes to the target's stdin in one `write_all`.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stdin
            .as_mut()
            .expect("stdin is here unless lent out")
            .write_all(bytes)
    }

    /// Reads one line (with its newline) into `line`, replacing its content.
    pub fn recv(&mut self, line: &mut Vec<u8>) -> io::Result<()> {
        line.clear();
        let n = self.stdout.read_until(b'\n', line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} closed its stdout", self.target),
            ));
        }
        Ok(())
    }

    /// One request, one answer.
    pub fn call(&mut self, request: &[u8], line: &mut Vec<u8>) -> io::Result<()> {
        self.send(request)?;
        self.recv(line)
    }

    /// The MCP handshake: `initialize`, its answer, `notifications/initialized`.
    pub fn initialize(&mut self) -> io::Result<()> {
        let mut line = Vec::new();
        self.call(INITIALIZE, &mut line)?;
        expect_result(&line, 0)?;
        self.send(INITIALIZED)
    }

    /// Lends stdin to a writer thread (see [`Session::give_back_stdin`]).
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("stdin is here")
    }

    pub fn give_back_stdin(&mut self, stdin: ChildStdin) {
        self.stdin = Some(stdin);
    }

    /// Peak RSS of the spawned process so far, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        sys::peak_rss_kib(self.pid)
    }

    /// Closes stdin (the MCP way to stop a stdio server), reads what is left
    /// and waits for the process to exit.
    pub fn finish(mut self) -> io::Result<()> {
        drop(self.stdin.take());
        let mut rest = Vec::new();
        loop {
            rest.clear();
            if self.stdout.read_until(b'\n', &mut rest)? == 0 {
                break;
            }
        }
        let status = self.child.wait()?;
        if !status.success() {
            return Err(io::Error::other(format!(
                "{} exited with {status} (see its stderr log)",
                self.target
            )));
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // After an error: do not leave the target behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Checks that `line` is a successful answer to request `id`.
pub fn expect_result(line: &[u8], id: u64) -> io::Result<()> {
    let prefix = format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":");
    if line.starts_with(prefix.as_bytes()) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "expected a result for id {id}, got: {}",
            String::from_utf8_lossy(&line[..line.len().min(300)])
        )))
    }
}

/// Kills targets that outlive their session's time limit.
struct Watchdog {
    deadlines: Mutex<BTreeMap<u32, Instant>>,
}

fn watchdog() -> &'static Arc<Watchdog> {
    static WATCHDOG: OnceLock<Arc<Watchdog>> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let dog = Arc::new(Watchdog {
            deadlines: Mutex::new(BTreeMap::new()),
        });
        let watcher = dog.clone();
        thread::Builder::new()
            .name("bench-watchdog".into())
            .spawn(move || loop {
                thread::sleep(Duration::from_millis(200));
                let now = Instant::now();
                let mut deadlines = watcher.deadlines.lock().unwrap();
                deadlines.retain(|&pid, deadline| {
                    if *deadline > now {
                        return true;
                    }
                    eprintln!("gatekit-bench: pid {pid} ran past its time limit; killing it");
                    // SAFETY: kill(2) with a pid we spawned and still track.
                    unsafe {
                        libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    }
                    false
                });
            })
            .expect("watchdog thread");
        dog
    })
}

impl Watchdog {
    fn watch(self: &Arc<Self>, pid: u32, timeout: Duration) -> Watch {
        self.deadlines
            .lock()
            .unwrap()
            .insert(pid, Instant::now() + timeout);
        Watch {
            pid,
            dog: self.clone(),
        }
    }
}

struct Watch {
    pid: u32,
    dog: Arc<Watchdog>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.dog.deadlines.lock().unwrap().remove(&self.pid);
    }
}
