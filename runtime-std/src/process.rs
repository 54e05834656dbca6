//! Starting the upstream server and signalling its process group.
//!
//! The upstream runs in a process group of its own, led by the child (so the
//! group id is the child's pid). A signal to the group reaches everything the
//! server started: `npx` and `uvx` run the real server as a grandchild, and
//! signalling only the wrapper leaves an orphaned server behind, the most
//! common complaint about stdio MCP. The standard library can create the group
//! (`CommandExt::process_group`) but cannot signal it; that one call is
//! `kill(2)` through `libc`, in [`ProcessGroup::signal`].
//!
//! Nothing here blocks or spawns threads, so an async runtime can reuse it:
//! `async_process::Command` converts from the `std::process::Command` that
//! [`command`] builds — but the conversion drops the stdio settings, so the
//! pipes must be set again on the converted command (runtime-smol does).

use gatekit_core::{ExitStatus, UpstreamSignal};
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};

/// The upstream server's command line, already split into words and with
/// `~` expanded (the CLI does that from `proxy.upstream.command`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamCommand {
    /// A program name looked up in `PATH`, or a path to it.
    pub program: String,
    /// Arguments, passed as they are: no shell sees them.
    pub args: Vec<String>,
}

/// Builds the command that starts the upstream: stdin, stdout and stderr
/// piped, and leading a new process group so [`ProcessGroup`] can stop
/// everything it starts.
///
/// Returned unspawned so that each runtime spawns it its own way.
pub fn command(upstream: &UpstreamCommand) -> Command {
    let mut command = Command::new(&upstream.program);
    command
        .args(&upstream.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // The gateway blocks termination signals (see `signals`); the upstream
    // must not inherit that, or SIGTERM could never stop it.
    crate::signals::unblock_in_child(&mut command);
    command
}

/// Says why `program` could not be started in words a user can act on. The
/// client shows it as the answer to its first request, since Claude Desktop
/// users never see stderr.
pub fn spawn_failure_reason(program: &str, error: &io::Error) -> String {
    match error.kind() {
        // execve reports a missing `#!` interpreter as ENOENT too; naming the
        // script as "not found" when it is right there would mislead.
        io::ErrorKind::NotFound if program.contains('/') && Path::new(program).is_file() => {
            format!("cannot run {program}: the interpreter named on its #! line was not found")
        }
        io::ErrorKind::NotFound => format!("command not found: {program}"),
        io::ErrorKind::PermissionDenied => format!("permission denied: {program}"),
        _ => format!("cannot run {program}: {error}"),
    }
}

/// Translates how a child ended into the core's terms.
pub fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signal)) => ExitStatus::Signal(signal),
        // `wait` only returns for a process that ended, which either exited
        // or was killed; keep the raw status rather than invent one.
        (None, None) => ExitStatus::Code(status.into_raw()),
    }
}

/// The upstream's process group. Dropping it kills the whole group with
/// SIGKILL, so no path out of a runtime (an exit, an error, a panic) leaves a
/// server or one of its helpers running.
#[derive(Debug)]
pub struct ProcessGroup {
    pgid: libc::pid_t,
}

impl ProcessGroup {
    /// The group led by the child with this `pid`, spawned from [`command`].
    ///
    /// Fails for pids 0 and 1 and for pids out of range: `kill(-1, …)` would
    /// signal every process the user owns, so such a value must never get
    /// this far.
    pub fn led_by(pid: u32) -> io::Result<Self> {
        match libc::pid_t::try_from(pid) {
            Ok(pgid) if pgid > 1 => Ok(ProcessGroup { pgid }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{pid} cannot be the id of the upstream's process group"),
            )),
        }
    }

    /// The group id (the leader's pid).
    pub fn id(&self) -> u32 {
        // `led_by` only accepts positive ids.
        self.pgid.unsigned_abs()
    }

    /// Sends `signal` to every process in the group. A group that no longer
    /// exists is not an error: that is the outcome a signal asks for.
    pub fn signal(&self, signal: UpstreamSignal) -> io::Result<()> {
        let signo = match signal {
            UpstreamSignal::Terminate => libc::SIGTERM,
            UpstreamSignal::Kill => libc::SIGKILL,
        };
        kill(-self.pgid, signo)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Err(error) = self.signal(UpstreamSignal::Kill) {
            log::warn!(
                target: "gatekit.proxy.server",
                "could not kill the upstream's process group {}: {error}",
                self.pgid
            );
        }
    }
}

/// `kill(2)`, with "no such process" counted as success.
#[allow(unsafe_code)]
fn kill(target: libc::pid_t, signo: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours; any
    // values are sound (wrong ones only fail with EINVAL or ESRCH).
    let result = unsafe { libc::kill(target, signo) };
    if result == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_spawn_failures() {
        let not_found = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(
            spawn_failure_reason("npx", &not_found),
            "command not found: npx"
        );
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(
            spawn_failure_reason("./x", &denied),
            "permission denied: ./x"
        );
    }

    #[test]
    fn a_missing_program_is_reported_by_name() {
        let program = "gatekit-test-no-such-program";
        let error = command(&UpstreamCommand {
            program: program.to_owned(),
            args: Vec::new(),
        })
        .spawn()
        .expect_err("the program does not exist");
        assert_eq!(
            spawn_failure_reason(program, &error),
            "command not found: gatekit-test-no-such-program"
        );
    }

    #[test]
    fn refuses_group_ids_that_would_signal_everything() {
        assert!(ProcessGroup::led_by(0).is_err());
        assert!(ProcessGroup::led_by(1).is_err());
        assert!(ProcessGroup::led_by(u32::MAX).is_err());
    }

    #[test]
    fn signals_reach_the_whole_group_and_report_how_it_ended() {
        let mut child = command(&UpstreamCommand {
            program: "sh".to_owned(),
            args: vec!["-c".to_owned(), "sleep 30 & wait".to_owned()],
        })
        .spawn()
        .expect("sh runs");
        let group = ProcessGroup::led_by(child.id()).expect("a child's pid");
        group
            .signal(UpstreamSignal::Terminate)
            .expect("signal sent");
        let status = child.wait().expect("the child ends");
        assert_eq!(exit_status(status), ExitStatus::Signal(libc::SIGTERM));
        // Signalling a group that is gone is fine.
        drop(group);
    }
}
