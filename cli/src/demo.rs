//! `gatekit demo`: the tutorial, end to end, with nothing to install.
//!
//! It starts the real gateway (`gatekit --config …`, the same code path a
//! user runs) with the tutorial's policy, in front of a small filesystem MCP
//! server built into this binary (`gatekit demo-server`), plays the
//! tutorial's four test prompts as a client and prints what the client saw,
//! what the gateway logged and the audit records it wrote.

use argh::FromArgs;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// run the tutorial's audit-logging setup against a built-in filesystem server
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "demo")]
pub struct DemoArgs {
    /// keep the demo's temporary directory (sandbox, config, audit log)
    #[argh(switch)]
    pub keep: bool,
}

/// serve the demo's sandboxed filesystem over MCP stdio (used by `gatekit demo`)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "demo-server")]
pub struct DemoServerArgs {
    /// the directory the server may read and write
    #[argh(positional)]
    pub root: PathBuf,
}

const TUTORIAL_CONFIG: &str =
    include_str!("../../configs/tutorials/2-implementing-audit-logging.yaml");
const TUTORIAL_COMMAND: &str =
    r#"command: "npx @modelcontextprotocol/server-filesystem ~/claude-sandbox/""#;

/// Runs the built-in filesystem server.
pub fn serve(args: &DemoServerArgs) -> i32 {
    match crate::demo_server::run(&args.root) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("gatekit demo-server: {error}");
            1
        }
    }
}

/// Runs the demo; returns the exit code.
pub fn run(args: &DemoArgs) -> i32 {
    let dir = std::env::temp_dir().join(format!(
        "gatekit-demo-{}-{}",
        std::process::id(),
        unique_suffix()
    ));
    let result = run_in(&dir);
    if args.keep {
        println!("\nThe demo's files are kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("gatekit demo failed: {error}");
            1
        }
    }
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

fn run_in(dir: &Path) -> DemoResult<()> {
    let sandbox = dir.join("claude-sandbox");
    std::fs::create_dir_all(sandbox.join("projects"))?;
    std::fs::write(sandbox.join("readme.txt"), "Hello from the sandbox!\n")?;
    std::fs::write(sandbox.join("projects/info.txt"), "Project info\n")?;

    let exe = std::env::current_exe()?;
    let command = json!([
        exe.to_string_lossy(),
        "demo-server",
        sandbox.to_string_lossy()
    ]);
    if !TUTORIAL_CONFIG.contains(TUTORIAL_COMMAND) {
        return Err("the tutorial config no longer has the expected upstream command".into());
    }
    let config_text = TUTORIAL_CONFIG.replace(TUTORIAL_COMMAND, &format!("command: {command}"));
    let config_path = dir.join("2-implementing-audit-logging.yaml");
    std::fs::write(&config_path, config_text)?;

    println!("Gatekit demo: the tutorial's audit-logging config in front of a built-in filesystem server.");
    println!("  sandbox: {}", sandbox.display());
    println!(
        "  config:  {} (the tutorial's, with the built-in server as upstream)",
        config_path.display()
    );
    println!(
        "  gateway: {} --config {}\n",
        exe.display(),
        config_path.display()
    );

    let mut gateway = Command::new(&exe)
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let conversation = converse(&mut gateway, &sandbox);
    drop(gateway.stdin.take());
    let status = gateway.wait()?;
    let mut stderr = String::new();
    if let Some(mut err) = gateway.stderr.take() {
        err.read_to_string(&mut stderr)?;
    }
    conversation?;

    println!("\nWhat the gateway logged (stderr):");
    for line in stderr.lines() {
        println!("  {line}");
    }
    println!("  (gateway exited with {status})");

    let audit_path = dir.join("logs/audit.log");
    let audit = std::fs::read_to_string(&audit_path)?;
    println!(
        "\nAudit log {} ({} records):",
        audit_path.display(),
        audit.lines().count()
    );
    for line in audit.lines() {
        println!("  {line}");
    }
    Ok(())
}

/// A client speaking to the gateway over its stdin/stdout.
struct Client<'a> {
    stdin: &'a mut ChildStdin,
    stdout: BufReader<&'a mut std::process::ChildStdout>,
    next_id: u64,
}

impl Client<'_> {
    fn send(&mut self, message: &Value) -> DemoResult<()> {
        let mut line = serde_json::to_vec(message)?;
        line.push(b'\n');
        self.stdin.write_all(&line)?;
        self.stdin.flush()?;
        Ok(())
    }

    /// Sends a request and returns its response, skipping notifications.
    fn request(&mut self, method: &str, params: Value) -> DemoResult<Value> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line)? == 0 {
                return Err(
                    format!("the gateway closed its output before answering {method}").into(),
                );
            }
            let message: Value = serde_json::from_str(&line)?;
            if message.get("id") == Some(&json!(id)) {
                return Ok(message);
            }
        }
    }
}

fn converse(gateway: &mut Child, sandbox: &Path) -> DemoResult<()> {
    let (Some(stdin), Some(stdout)) = (gateway.stdin.as_mut(), gateway.stdout.as_mut()) else {
        return Err("the gateway's pipes are missing".into());
    };
    let mut client = Client {
        stdin,
        stdout: BufReader::new(stdout),
        next_id: 0,
    };
    let init = client.request(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "gatekit-demo", "version": env!("CARGO_PKG_VERSION")}}),
    )?;
    println!(
        "initialize → server {} (the upstream's own answer, passed through)",
        init.pointer("/result/serverInfo/name")
            .and_then(Value::as_str)
            .unwrap_or("?")
    );
    client.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;

    let list = client.request("tools/list", json!({}))?;
    let names: Vec<&str> = list
        .pointer("/result/tools")
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "tools/list → the client sees {} tools: {}",
        names.len(),
        names.join(", ")
    );
    println!("  (the server also offers delete_file; the allowlist filtered it out)\n");

    let root = sandbox.to_string_lossy();
    let prompts = [
        ("Can you list the files in my sandbox directory?", "list_directory", json!({"path": root})),
        (
            "Please create a test file called 'audit-test.txt' with the content 'Testing audit logging!'",
            "write_file",
            json!({"path": format!("{root}/audit-test.txt"), "content": "Testing audit logging!"}),
        ),
        ("Can you read the contents of the readme.txt file?", "read_file", json!({"path": format!("{root}/readme.txt")})),
        ("Can you delete the readme.txt file?", "delete_file", json!({"path": format!("{root}/readme.txt")})),
    ];
    for (n, (prompt, tool, arguments)) in prompts.into_iter().enumerate() {
        println!("{}. \"{prompt}\"", n + 1);
        println!("   → tools/call {tool} {arguments}");
        let response =
            client.request("tools/call", json!({"name": tool, "arguments": arguments}))?;
        println!("   ← {}", summarize(&response));
    }
    Ok(())
}

fn summarize(response: &Value) -> String {
    if let Some(error) = response.get("error") {
        return format!(
            "error {}: {}",
            error.get("code").unwrap_or(&Value::Null),
            error.get("message").and_then(Value::as_str).unwrap_or("")
        );
    }
    let text: Vec<&str> = response
        .pointer("/result/content")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|c| c.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    format!("result: {}", text.join(" ").replace('\n', " | "))
}
