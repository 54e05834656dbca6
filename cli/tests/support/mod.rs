//! Shared helpers for Gatekit's end-to-end tests: they drive the real
//! `gatekit` binary over its stdin/stdout, like an MCP client does.
//!
//! Every read has a timeout ([`TIMEOUT`]) so a hang fails the test instead
//! of blocking CI; the timeouts only guard against hangs, no test measures
//! speed. Every gateway is started through [`gateway_command`].

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long to wait for any one message or event before calling it a hang.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// How long a gateway may take to exit. Its shutdown grace periods are 2 s
/// after closing the upstream's stdin and 2 s after SIGTERM; this bound only
/// guards against a gateway that never exits.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The block message of the tutorial's allowlist.
pub const BLOCK_MESSAGE: &str = "Tool access denied by security policy";

/// The tools the tutorial allows.
pub const TUTORIAL_TOOLS: [&str; 5] = [
    "read_file",
    "write_file",
    "create_directory",
    "list_directory",
    "search_files",
];

// ----- binaries -----

/// The `gatekit` binary under test.
pub fn gatekit_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gatekit"))
}

/// `gatekit` with `args`, for the subcommands (`check`, `demo`, `--version`).
pub fn gatekit(args: &[&str]) -> Command {
    let mut command = Command::new(gatekit_exe());
    command.args(args).env_remove("GATEKIT_LOG");
    command
}

/// The command that runs the gateway with `config`. Every test starts its
/// gateways through this function, so that when a second runtime lands
/// (`--runtime smol|std`) the whole suite runs against the runtime named in
/// `GATEKIT_TEST_RUNTIME` (CI runs the suite once per runtime).
pub fn gateway_command(config: &Path) -> Command {
    let mut command = Command::new(gatekit_exe());
    command.arg("--config").arg(config);
    if let Some(runtime) = std::env::var_os("GATEKIT_TEST_RUNTIME").filter(|r| !r.is_empty()) {
        command.arg("--runtime").arg(runtime);
    }
    // A developer's log filter would change what stderr shows.
    command.env_remove("GATEKIT_LOG");
    command
}

/// The workspace root (where `Cargo.lock`, `configs/` and `testdata/` are).
pub fn workspace_root() -> PathBuf {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR"));
    cli.parent().expect("cli/ has a parent").to_path_buf()
}

/// The `test-upstream` binary (crate `testdata/test-upstream`), brought up
/// to date by `cargo build` on first use in each test binary.
pub fn test_upstream_exe() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(find_or_build_test_upstream)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn find_or_build_test_upstream() -> Result<PathBuf, String> {
    let gatekit = gatekit_exe();
    let profile_dir = gatekit
        .parent()
        .ok_or("the gatekit binary has no directory")?;
    let exe = profile_dir.join(format!("test-upstream{}", std::env::consts::EXE_SUFFIX));
    // Always ask cargo: it is a quick no-op when the binary is up to date,
    // and a stale test server would test yesterday's behaviour.
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "-p", "gatekit-test-upstream"])
        .current_dir(workspace_root());
    if gatekit.to_string_lossy().contains("/release/") {
        build.arg("--release");
    }
    // Build next to the gatekit binary, wherever the outer cargo put it.
    if let Some(target_dir) = profile_dir.parent() {
        build.arg("--target-dir").arg(target_dir);
    }
    let output = build
        .output()
        .map_err(|e| format!("cannot run cargo to build test-upstream: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`cargo build -p gatekit-test-upstream` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "`cargo build -p gatekit-test-upstream` succeeded but {} is still missing",
            exe.display()
        ))
    }
}

/// The argv that starts `test-upstream` with `flags`.
pub fn test_upstream(flags: &[&str]) -> Vec<String> {
    let mut argv = vec![test_upstream_exe().to_string_lossy().into_owned()];
    argv.extend(flags.iter().map(|f| f.to_string()));
    argv
}

/// The argv prefix (`node <entry>`) that starts one of the real MCP servers
/// pinned in `testdata/package.json`, e.g. `server-filesystem`.
///
/// When node or the package is missing this fails the test if `CI=true`,
/// and otherwise prints why the test is skipped and returns `None`.
pub fn real_server(package: &str) -> Option<Vec<String>> {
    match find_real_server(package) {
        Ok(argv) => Some(argv),
        Err(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{why} (CI=true, so this is a failure, not a skip; {HOW_TO_INSTALL})");
            }
            // Straight to the stderr handle: libtest captures `eprintln!`,
            // and a skip must be visible without --nocapture.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {package} test: {why}; {HOW_TO_INSTALL}"
            );
            None
        }
    }
}

const HOW_TO_INSTALL: &str =
    "install Node.js and run `npm ci --prefix testdata` to run the real-server tests";

fn find_real_server(package: &str) -> Result<Vec<String>, String> {
    let node_ok = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !node_ok {
        return Err("`node` is not installed or not on PATH".to_owned());
    }
    let dir = workspace_root()
        .join("testdata/node_modules/@modelcontextprotocol")
        .join(package);
    let manifest_path = dir.join("package.json");
    let manifest = std::fs::read_to_string(&manifest_path)
        .map_err(|e| format!("cannot read {}: {e}", manifest_path.display()))?;
    let manifest: Value = serde_json::from_str(&manifest)
        .map_err(|e| format!("{} is not JSON: {e}", manifest_path.display()))?;
    let entry = match &manifest["bin"] {
        Value::String(path) => path.clone(),
        Value::Object(bins) => bins
            .values()
            .find_map(|v| v.as_str().map(str::to_owned))
            .ok_or_else(|| format!("{} has an empty `bin`", manifest_path.display()))?,
        _ => return Err(format!("{} has no `bin`", manifest_path.display())),
    };
    let entry = dir.join(entry);
    if !entry.is_file() {
        return Err(format!("{} is missing", entry.display()));
    }
    Ok(vec![
        "node".to_owned(),
        entry.to_string_lossy().into_owned(),
    ])
}

// ----- temporary directories -----

/// A fresh directory under the system temp dir, removed on drop. Its name
/// contains spaces, so every test also proves paths with spaces work.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `gatekit e2e <label> <pid>-<n>` under the temp dir.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("gatekit e2e {label} {}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        // The real filesystem server compares resolved paths (macOS /tmp is a link).
        let path = std::fs::canonicalize(&path).expect("a directory just created resolves");
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.path.join(relative)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ----- configs -----

/// A YAML flow list of strings. JSON strings are valid YAML double-quoted
/// scalars, so any path (spaces, quotes, `#`) survives.
pub fn yaml_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| serde_json::to_string(s.as_ref()).expect("strings serialise"))
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// The `security:` section of a config: a `tool_allowlist` in allowlist
/// mode with the tutorial's block message.
pub fn security_yaml<S: AsRef<str>>(tools: &[S]) -> String {
    format!(
        "  security:\n    - policy: \"tool_allowlist\"\n      enabled: true\n      config:\n        mode: \"allowlist\"\n        tools: {}\n        block_message: \"{BLOCK_MESSAGE}\"\n",
        yaml_list(tools)
    )
}

/// A gateway config in the tutorial's format, written by [`GatewayConfig::write`].
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The upstream argv (written in the list form).
    pub upstream: Vec<String>,
    /// `Some(tools)`: a `tool_allowlist` in allowlist mode with the tutorial's block message.
    pub allowed_tools: Option<Vec<String>>,
    /// `output_file` of the json `file_auditing` plugin (relative to the config).
    pub audit_file: String,
    /// `proxy.limits.max_message_bytes`, if set.
    pub max_message_bytes: Option<usize>,
    /// `proxy.limits.max_in_flight_requests`, if set.
    pub max_in_flight_requests: Option<usize>,
    /// `proxy.limits.request_timeout_ms`, if set.
    pub request_timeout_ms: Option<u64>,
    /// `max_file_size_mb` of the audit file (the tutorial's 10 by default).
    pub max_file_size_mb: f64,
    /// `backup_count` of the audit file (the tutorial's 5 by default).
    pub backup_count: u32,
}

impl GatewayConfig {
    /// Audit to `logs/audit.log`, no allowlist.
    pub fn new(upstream: Vec<String>) -> Self {
        GatewayConfig {
            upstream,
            allowed_tools: None,
            audit_file: "logs/audit.log".to_owned(),
            max_message_bytes: None,
            max_in_flight_requests: None,
            request_timeout_ms: None,
            max_file_size_mb: 10.0,
            backup_count: 5,
        }
    }

    /// Sets the audit file's rotation.
    pub fn rotate(mut self, max_file_size_mb: f64, backup_count: u32) -> Self {
        self.max_file_size_mb = max_file_size_mb;
        self.backup_count = backup_count;
        self
    }

    /// Only `tools` may be listed and called.
    pub fn allow(mut self, tools: &[&str]) -> Self {
        self.allowed_tools = Some(tools.iter().map(|t| t.to_string()).collect());
        self
    }

    /// Sets `proxy.limits.max_message_bytes`.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = Some(bytes);
        self
    }

    /// Sets `proxy.limits.max_in_flight_requests`.
    pub fn max_in_flight_requests(mut self, requests: usize) -> Self {
        self.max_in_flight_requests = Some(requests);
        self
    }

    /// Sets `proxy.limits.request_timeout_ms`.
    pub fn request_timeout_ms(mut self, ms: u64) -> Self {
        self.request_timeout_ms = Some(ms);
        self
    }

    /// The YAML text.
    pub fn yaml(&self) -> String {
        let mut text = String::from("proxy:\n  transport: stdio\n  upstream:\n");
        text.push_str(&format!("    command: {}\n", yaml_list(&self.upstream)));
        let limits = [
            (
                "max_message_bytes",
                self.max_message_bytes.map(|v| v as u64),
            ),
            (
                "max_in_flight_requests",
                self.max_in_flight_requests.map(|v| v as u64),
            ),
            ("request_timeout_ms", self.request_timeout_ms),
        ];
        if limits.iter().any(|(_, v)| v.is_some()) {
            text.push_str("  limits:\n");
            for (key, value) in limits {
                if let Some(value) = value {
                    text.push_str(&format!("    {key}: {value}\n"));
                }
            }
        }
        text.push_str("plugins:\n  auditing:\n    - policy: \"file_auditing\"\n      enabled: true\n      config:\n");
        text.push_str(&format!(
            "        output_file: {}\n        format: \"json\"\n        max_file_size_mb: {}\n        backup_count: {}\n",
            serde_json::to_string(&self.audit_file).expect("strings serialise"),
            self.max_file_size_mb,
            self.backup_count
        ));
        if let Some(tools) = &self.allowed_tools {
            text.push_str(&security_yaml(tools));
        }
        text
    }

    /// Writes `gatekit.yaml` into `dir` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("gatekit.yaml");
        write_file(&path, &self.yaml());
        path
    }

    /// Where the audit file lands for a config written into `dir`.
    pub fn audit_path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.audit_file)
    }
}

/// The tutorial's own config file (`configs/tutorials/2-implementing-audit-logging.yaml`).
pub fn tutorial_config_path() -> PathBuf {
    workspace_root().join("configs/tutorials/2-implementing-audit-logging.yaml")
}

/// The line of the tutorial config that starts the upstream through `npx`.
pub const TUTORIAL_COMMAND_LINE: &str =
    r#"command: "npx @modelcontextprotocol/server-filesystem ~/claude-sandbox/""#;

/// Copies the tutorial's config into `dir`, changing only the upstream
/// command (to `upstream`, in the list form), and returns the copy's path.
pub fn write_tutorial_config(dir: &Path, upstream: &[String]) -> PathBuf {
    let original = tutorial_config_path();
    let text = std::fs::read_to_string(&original)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", original.display()));
    assert!(
        text.contains(TUTORIAL_COMMAND_LINE),
        "{} no longer contains {TUTORIAL_COMMAND_LINE}",
        original.display()
    );
    let text = text.replace(
        TUTORIAL_COMMAND_LINE,
        &format!("command: {}", yaml_list(upstream)),
    );
    let path = dir.join("2-implementing-audit-logging.yaml");
    write_file(&path, &text);
    path
}

/// Writes a file, failing the test with the path on error.
pub fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

// ----- a client speaking to a process over stdio -----

/// A line the process wrote to stdout, kept both raw and parsed.
#[derive(Debug, Clone)]
pub struct Received {
    /// The line as written, without the newline.
    pub raw: String,
    /// The line parsed as JSON.
    pub value: Value,
}

/// How a session ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit status of the process.
    pub status: ExitStatus,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// Messages it wrote that the test had not consumed yet.
    pub unread: Vec<Value>,
}

/// An MCP client attached to a process (normally the gateway) over its
/// stdin/stdout. Stdout must carry JSON only: any other line fails the test.
/// The process is killed if the session is dropped while it still runs.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<Option<Vec<u8>>>,
    stdout_closed: bool,
    stderr: Arc<Mutex<String>>,
    stderr_done: Receiver<()>,
    /// Messages read while waiting for something else, in arrival order.
    unmatched: VecDeque<Received>,
    label: String,
}

impl Session {
    /// Starts the gateway with `config` (through [`gateway_command`]).
    pub fn gateway(config: &Path) -> Session {
        Session::spawn(gateway_command(config), "gatekit")
    }

    /// Starts `command` with piped stdin, stdout and stderr.
    pub fn spawn(mut command: Command, label: &str) -> Session {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label} ({command:?}): {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");

        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => {
                        let _ = line_tx.send(None);
                        return;
                    }
                    Ok(_) => {
                        if line_tx.send(Some(line)).is_err() {
                            return;
                        }
                    }
                }
            }
        });

        let stderr = Arc::new(Mutex::new(String::new()));
        let (done_tx, done_rx) = mpsc::channel();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr_pipe);
            let mut chunk = [0u8; 4096];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_str(&String::from_utf8_lossy(&chunk[..n])),
                }
            }
            let _ = done_tx.send(());
        });

        Session {
            child,
            stdin,
            stdout: line_rx,
            stdout_closed: false,
            stderr,
            stderr_done: done_rx,
            unmatched: VecDeque::new(),
            label: label.to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\n--- {} stderr so far ---\n{}",
            self.label,
            self.stderr_so_far()
        );
    }

    /// Writes raw bytes to the process's stdin.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let Some(stdin) = self.stdin.as_mut() else {
            self.fail("stdin is already closed");
        };
        if let Err(e) = stdin.write_all(bytes).and_then(|()| stdin.flush()) {
            self.fail(&format!("cannot write to {}'s stdin: {e}", self.label));
        }
    }

    /// Writes one line (a newline is added).
    pub fn send_line(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    /// Writes one message as a JSON line.
    pub fn send(&mut self, message: &Value) {
        self.send_line(&message.to_string());
    }

    /// Sends a notification.
    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request and returns its response (notifications and other
    /// messages that arrive meanwhile are kept for [`Self::take_unmatched`]).
    pub fn request(&mut self, id: Value, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.response(&id)
    }

    /// Sends `tools/call` and returns its response.
    pub fn call_tool(&mut self, id: Value, tool: &str, arguments: Value) -> Value {
        self.request(
            id,
            "tools/call",
            json!({"name": tool, "arguments": arguments}),
        )
    }

    /// Sends the MCP `initialize` request with `id` and returns its response.
    pub fn initialize(&mut self, id: Value) -> Value {
        self.request(
            id,
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {"sampling": {}},
                "clientInfo": {"name": "gatekit-e2e", "version": "1.0.0"}
            }),
        )
    }

    /// The next line from stdout, or `None` once stdout is closed.
    pub fn recv(&mut self) -> Option<Received> {
        if let Some(message) = self.unmatched.pop_front() {
            return Some(message);
        }
        self.recv_from_pipe(TIMEOUT)
    }

    fn recv_from_pipe(&mut self, timeout: Duration) -> Option<Received> {
        if self.stdout_closed {
            return None;
        }
        match self.stdout.recv_timeout(timeout) {
            Ok(Some(bytes)) => Some(self.parse_line(bytes)),
            Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                self.stdout_closed = true;
                None
            }
            Err(RecvTimeoutError::Timeout) => self.fail(&format!(
                "no message from {} within {TIMEOUT:?} (unread: {:?})",
                self.label, self.unmatched
            )),
        }
    }

    fn parse_line(&self, bytes: Vec<u8>) -> Received {
        let raw = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => self.fail(&format!("{} wrote non-UTF-8 to stdout: {e}", self.label)),
        };
        let raw = raw.strip_suffix('\n').unwrap_or(&raw).to_owned();
        match serde_json::from_str::<Value>(&raw) {
            Ok(value) if value.is_object() => Received { raw, value },
            _ => self.fail(&format!(
                "{} wrote a line that is not a JSON-RPC message to stdout (stdout must carry JSON-RPC only): {raw:?}",
                self.label
            )),
        }
    }

    /// Waits for the response with `id`, keeping everything else for later.
    pub fn response(&mut self, id: &Value) -> Value {
        self.response_raw(id).value
    }

    /// Like [`Self::response`], with the raw line.
    pub fn response_raw(&mut self, id: &Value) -> Received {
        let is_answer =
            |m: &Received| m.value.get("method").is_none() && m.value.get("id") == Some(id);
        if let Some(pos) = self.unmatched.iter().position(is_answer) {
            return self.unmatched.remove(pos).expect("position is in range");
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_from_pipe(left) {
                Some(message) if is_answer(&message) => return message,
                Some(other) => self.unmatched.push_back(other),
                None => self.fail(&format!(
                    "{} closed stdout before answering id {id} (unread: {:?})",
                    self.label, self.unmatched
                )),
            }
        }
    }

    /// Waits for a message that is a request (has `method` and `id`) from the
    /// other side, keeping everything else for later.
    pub fn incoming_request(&mut self) -> Value {
        let is_request =
            |m: &Received| m.value.get("method").is_some() && m.value.get("id").is_some();
        if let Some(pos) = self.unmatched.iter().position(is_request) {
            return self
                .unmatched
                .remove(pos)
                .expect("position is in range")
                .value;
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_from_pipe(left) {
                Some(message) if is_request(&message) => return message.value,
                Some(other) => self.unmatched.push_back(other),
                None => self.fail(&format!(
                    "{} closed stdout before sending a request",
                    self.label
                )),
            }
        }
    }

    /// The messages read while waiting for others (notifications, etc.).
    pub fn take_unmatched(&mut self) -> Vec<Value> {
        self.unmatched.drain(..).map(|m| m.value).collect()
    }

    /// Waits until stderr contains `needle`; returns all stderr so far.
    pub fn wait_for_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let text = self.stderr_so_far();
            if text.contains(needle) {
                return text;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "{needle:?} did not appear on stderr within {TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes the process's stdin (the client leaves).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the process to exit, killing it and failing after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    self.kill_with_descendants();
                    self.fail(&format!(
                        "{} did not exit within {timeout:?}; killed it",
                        self.label
                    ));
                }
                Err(e) => self.fail(&format!("cannot wait for {}: {e}", self.label)),
            }
        }
    }

    /// Waits for the process to exit by itself (stdin stays open), then
    /// collects what is left.
    pub fn finish_without_closing(mut self) -> Finished {
        let status = self.wait_exit(EXIT_TIMEOUT);
        self.collect(status)
    }

    /// Closes stdin, waits for the exit and collects what is left.
    pub fn finish(mut self) -> Finished {
        self.close_stdin();
        let status = self.wait_exit(EXIT_TIMEOUT);
        self.collect(status)
    }

    fn collect(&mut self, status: ExitStatus) -> Finished {
        let mut unread: Vec<Value> = self.take_unmatched();
        while let Some(message) = self.recv_from_pipe(TIMEOUT) {
            unread.push(message.value);
        }
        // A process that survived the gateway could hold stderr open: do not
        // wait for it forever, report what was written.
        let stderr_complete = self
            .stderr_done
            .recv_timeout(Duration::from_secs(5))
            .is_ok();
        let mut stderr = self.stderr_so_far();
        if !stderr_complete {
            stderr
                .push_str("\n[gatekit e2e: stderr was still open 5 s after the gateway exited]\n");
        }
        Finished {
            status,
            stderr,
            unread,
        }
    }
}

impl Session {
    /// Kills the process and everything it started, so a failed test leaves
    /// no upstream behind.
    fn kill_with_descendants(&mut self) {
        let tree: Vec<u32> = process_tree(self.child.id()).into_iter().collect();
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_all(&tree);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_with_descendants();
        }
    }
}

// ----- JSON-RPC helpers -----

/// The `error` of a response, checked to carry `code`; returns its message.
pub fn expect_error(response: &Value, code: i64) -> String {
    assert_eq!(
        response.pointer("/error/code").and_then(Value::as_i64),
        Some(code),
        "expected an error with code {code}, got {response}"
    );
    assert!(
        response.get("result").is_none(),
        "an error response has no result: {response}"
    );
    assert_eq!(response["jsonrpc"], "2.0", "{response}");
    response
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("error without a message: {response}"))
        .to_owned()
}

/// The text blocks of a successful `tools/call` result, joined.
pub fn result_text(response: &Value) -> String {
    assert!(
        response.get("error").is_none(),
        "expected a result, got {response}"
    );
    let content = response
        .pointer("/result/content")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no result.content in {response}"));
    content
        .iter()
        .filter_map(|c| c.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("")
}

/// The tool names of a `tools/list` response.
pub fn tool_names(response: &Value) -> Vec<String> {
    response
        .pointer("/result/tools")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no result.tools in {response}"))
        .iter()
        .map(|t| {
            t["name"]
                .as_str()
                .unwrap_or_else(|| panic!("tool without a name: {t}"))
                .to_owned()
        })
        .collect()
}

// ----- audit files -----

/// Reads a json audit file: every line must be one JSON object.
pub fn read_audit(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read audit file {}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the audit file ends with a partial line:\n{text}"
    );
    text.lines()
        .enumerate()
        .map(|(n, line)| match serde_json::from_str::<Value>(line) {
            Ok(value) if value.is_object() => value,
            _ => panic!(
                "audit line {} of {} is not a JSON object: {line}",
                n + 1,
                path.display()
            ),
        })
        .collect()
}

/// The records of one event type.
pub fn records<'a>(audit: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    audit
        .iter()
        .filter(|r| r["event_type"] == event_type)
        .collect()
}

/// The one record of `event_type` with this `request_id`.
pub fn record_for<'a>(audit: &'a [Value], event_type: &str, request_id: &str) -> &'a Value {
    let found: Vec<&Value> = audit
        .iter()
        .filter(|r| r["event_type"] == event_type && r["request_id"] == request_id)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {event_type} record for request {request_id}, found {}:\n{}",
        found.len(),
        show(audit)
    );
    found[0]
}

/// The audit records, one per line, for failure messages.
pub fn show(audit: &[Value]) -> String {
    audit
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks the fields every record has: an ISO 8601 UTC timestamp with
/// milliseconds (`2024-06-16T10:30:15.123Z`), in non-decreasing order, an
/// event type and a source.
pub fn check_common_fields(audit: &[Value]) {
    let known = [
        "REQUEST",
        "RESPONSE",
        "NOTIFICATION",
        "SECURITY_BLOCK",
        "TOOLS_FILTERED",
        "PROTOCOL_ERROR",
        "UPSTREAM_STARTED",
        "UPSTREAM_EXITED",
        "TIMEOUT",
    ];
    let mut previous = String::new();
    for record in audit {
        let ts = record["timestamp"]
            .as_str()
            .unwrap_or_else(|| panic!("no timestamp: {record}"));
        let b = ts.as_bytes();
        let shape_ok = b.len() == 24
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                19 => *c == b'.',
                23 => *c == b'Z',
                _ => c.is_ascii_digit(),
            });
        assert!(
            shape_ok,
            "timestamp {ts:?} is not like 2024-06-16T10:30:15.123Z: {record}"
        );
        assert!(
            ts >= previous.as_str(),
            "timestamps go backwards at {record}"
        );
        previous = ts.to_owned();
        let event = record["event_type"]
            .as_str()
            .unwrap_or_else(|| panic!("no event_type: {record}"));
        assert!(
            known.contains(&event),
            "unknown event_type {event}: {record}"
        );
        assert!(
            matches!(
                record["source"].as_str(),
                Some("client" | "server" | "gateway")
            ),
            "bad source: {record}"
        );
    }
}

/// Checks that Gatekit created the audit file owner-only (0600) and, since
/// the tests never create it, its directory 0700.
#[cfg(unix)]
pub fn check_private(audit_path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        mode(audit_path),
        0o600,
        "{} must be created 0600",
        audit_path.display()
    );
    let dir = audit_path.parent().expect("the audit file has a directory");
    assert_eq!(mode(dir), 0o700, "{} must be created 0700", dir.display());
}

// ----- processes -----

/// One line of `/proc/<pid>/stat`: (state, parent pid, process group).
fn proc_stat(pid: u32) -> Option<(char, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: skip to the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

fn all_processes() -> BTreeMap<u32, (char, u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?)))
        .collect()
}

/// Whether `pid` runs (zombies count as gone: they are only waiting to be reaped).
pub fn is_alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((state, _, _)) if state != 'Z' && state != 'X')
}

/// The process group of `pid`, if it runs.
pub fn process_group(pid: u32) -> Option<u32> {
    proc_stat(pid).map(|(_, _, pgrp)| pgrp)
}

/// Every live descendant of `pid`, and every live member of their process groups.
pub fn process_tree(pid: u32) -> BTreeSet<u32> {
    let table = all_processes();
    let mut found = BTreeSet::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for (&child, &(state, ppid, _)) in &table {
            if ppid == parent && state != 'Z' && found.insert(child) {
                queue.push(child);
            }
        }
    }
    let groups: BTreeSet<u32> = found
        .iter()
        .filter_map(|p| table.get(p).map(|s| s.2))
        .collect();
    for (&other, &(state, _, pgrp)) in &table {
        if groups.contains(&pgrp) && state != 'Z' && other != pid {
            found.insert(other);
        }
    }
    found
}

/// The processes of `pids` still alive after waiting up to `grace` for them
/// to go (a SIGKILLed process takes a moment to disappear).
pub fn survivors(pids: &BTreeSet<u32>, grace: Duration) -> Vec<u32> {
    let deadline = Instant::now() + grace;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|p| is_alive(*p)).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ps`-like description of `pids` for failure messages.
pub fn describe_processes(pids: &[u32]) -> String {
    pids.iter()
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            format!("{pid} {:?}: {cmdline}", proc_stat(*pid))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Kills those of `pids` still alive (cleanup after a failed test; they are
/// all processes the test started).
pub fn kill_all(pids: &[u32]) {
    for pid in pids.iter().filter(|p| is_alive(**p)) {
        let _ = Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Sends `signal` (e.g. `"TERM"`) to `pid`, as an MCP client stopping its
/// server would.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}
