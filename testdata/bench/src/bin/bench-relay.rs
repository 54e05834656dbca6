//! `bench-relay`: the floor for any stdio gateway.
//!
//! It starts its upstream and copies bytes both ways, with one thread per
//! direction doing `read` into a 64 KiB buffer and `write` of what it got,
//! and nothing else: no framing, no parsing, no buffering beyond one read.
//! A gateway cannot move bytes between the same pipes with fewer system
//! calls or context switches, so its numbers are the physical limit the
//! benchmark compares Gatekit with.
//!
//! ```text
//! bench-relay [--lines] UPSTREAM [ARGS…]
//! ```
//!
//! With `--lines` it is the floor for a gateway that must hold a whole
//! message before passing it on (as Gatekit must, to check it and record it
//! before forwarding): each direction reads up to a newline into a buffer it
//! reuses, then writes the line, still without looking inside. The
//! difference to the byte relay is what store-and-forward costs by itself.
//!
//! With `--smol` it is the byte relay again, written the way Gatekit's
//! smol runtime moves bytes: one thread, an `async-io` reactor, the pipes
//! set non-blocking and watched for readiness, the upstream started with
//! `async-process`, a task per direction. Its distance from the plain relay
//! is what that reactor costs by itself, the floor for the smol runtime.
//!
//! On the client's EOF it closes the upstream's stdin; when the upstream
//! closes its stdout it waits for it and exits with its code.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::thread;

const CHUNK: usize = 64 * 1024;

fn main() {
    let mut argv = std::env::args_os().skip(1).peekable();
    let lines = argv.next_if(|a| a == "--lines").is_some();
    let asynchronous = !lines && argv.next_if(|a| a == "--smol").is_some();
    let Some(program) = argv.next() else {
        eprintln!("usage: bench-relay [--lines | --smol] UPSTREAM [ARGS…]");
        std::process::exit(2);
    };
    let mut command = Command::new(&program);
    command
        .args(argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if asynchronous {
        std::process::exit(smol_relay::run(command));
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| cannot_start(&command, e));
    // Plain files on duplicates of fd 0 and 1: no std buffering in the way.
    let stdin = File::from(io::stdin().as_fd().try_clone_to_owned().expect("dup stdin"));
    let stdout = File::from(
        io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .expect("dup stdout"),
    );
    let upstream_in = child.stdin.take().expect("piped stdin");
    let upstream_out = child.stdout.take().expect("piped stdout");
    // Client → upstream. Dropping `upstream_in` at the client's EOF closes
    // the upstream's stdin.
    thread::spawn(move || {
        if lines {
            copy_lines(stdin, upstream_in)
        } else {
            copy(stdin, upstream_in)
        }
    });
    // Upstream → client, on this thread.
    if lines {
        copy_lines(upstream_out, stdout)
    } else {
        copy(upstream_out, stdout)
    }
    let code = child.wait().map_or(1, |s| s.code().unwrap_or(1));
    std::process::exit(code);
}

/// Says the upstream could not be started, and exits.
fn cannot_start(command: &Command, error: io::Error) -> ! {
    eprintln!(
        "bench-relay: cannot start {}: {error}",
        command.get_program().to_string_lossy()
    );
    std::process::exit(1);
}

/// Copies whole lines: read up to a newline, then write the line.
fn copy_lines<R: Read, W: Write>(from: R, mut to: W) {
    let mut from = BufReader::with_capacity(CHUNK, from);
    let mut line = Vec::with_capacity(CHUNK);
    loop {
        line.clear();
        match from.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        if to.write_all(&line).is_err() {
            return;
        }
    }
}

/// Copies until EOF or an error on either side.
fn copy<R: Read, W: Write>(mut from: R, mut to: W) {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if to.write_all(&buffer[..n]).is_err() {
            return;
        }
    }
}

/// The `--smol` relay: see the module docs.
mod smol_relay {
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    use smol::{Async, LocalExecutor};
    use std::fs::File;
    use std::io;
    use std::os::fd::AsFd;

    /// Runs the relay on `command`: its program and arguments (async-process
    /// does not carry std's stdio settings over, so they are set again).
    pub fn run(command: std::process::Command) -> i32 {
        let mut child = match async_process::Command::from(command)
            .stdin(async_process::Stdio::piped())
            .stdout(async_process::Stdio::piped())
            .stderr(async_process::Stdio::inherit())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                eprintln!("bench-relay: cannot start the upstream: {e}");
                return 1;
            }
        };
        let watched = |fd: io::Result<std::os::fd::OwnedFd>| {
            Async::new(File::from(fd.expect("dup"))).expect("a pipe the reactor can watch")
        };
        let stdin = watched(io::stdin().as_fd().try_clone_to_owned());
        let stdout = watched(io::stdout().as_fd().try_clone_to_owned());
        let upstream_in = child.stdin.take().expect("piped stdin");
        let upstream_out = child.stdout.take().expect("piped stdout");
        let executor = LocalExecutor::new();
        smol::block_on(executor.run(async {
            // Client → upstream; dropping `upstream_in` at the client's EOF
            // closes the upstream's stdin.
            let up = executor.spawn(copy(stdin, upstream_in));
            copy(upstream_out, stdout).await;
            drop(up);
            child.status().await.map_or(1, |s| s.code().unwrap_or(1))
        }))
    }

    async fn copy(
        mut from: impl smol::io::AsyncRead + Unpin,
        mut to: impl smol::io::AsyncWrite + Unpin,
    ) {
        let mut buffer = vec![0u8; super::CHUNK];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if to.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    }
}
