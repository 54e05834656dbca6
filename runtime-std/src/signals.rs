//! SIGTERM, SIGINT and SIGHUP to the gateway become an orderly shutdown.
//!
//! MCP clients stop a stdio server by closing its stdin and, if it lingers,
//! by signalling it. Killed by the default action, the gateway would leave
//! its upstream (in its own process group, so the signal does not reach it)
//! running as an orphan and its audit trail without an end. Instead the
//! signals are blocked in every thread and taken synchronously by one waiter
//! (`sigwait`), which turns them into events: the first starts the same
//! shutdown as client EOF, a second one ends the gateway at once (after
//! killing the upstream's process group).
//!
//! A child inherits its parent's signal mask through fork and exec (the
//! standard library does not reset it), so the upstream would start with
//! SIGTERM blocked and only SIGKILL could stop it. [`unblock_in_child`]
//! clears the mask between fork and exec.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;

/// The blocked termination signals, to wait for.
pub struct TerminationSignals {
    set: libc::sigset_t,
}

// SAFETY: a sigset_t is plain data; sharing it between threads is fine.
unsafe impl Send for TerminationSignals {}

impl std::fmt::Debug for TerminationSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TerminationSignals(SIGTERM, SIGINT, SIGHUP)")
    }
}

impl TerminationSignals {
    /// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and in every
    /// thread it starts afterwards. Call it before starting any thread.
    /// On Linux it also asks for SIGTERM when the parent process dies, so a
    /// gateway whose client crashed shuts down like any other.
    pub fn block() -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; sigaddset only
        // reads and writes that set; pthread_sigmask reads it and changes the
        // calling thread's mask. All arguments are valid pointers.
        let set = unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(set.as_mut_ptr(), signal);
            }
            let set = set.assume_init();
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            set
        };
        #[cfg(target_os = "linux")]
        // SAFETY: PR_SET_PDEATHSIG takes a signal number and changes only this
        // process's own setting.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
        }
        Ok(TerminationSignals { set })
    }

    /// Waits (blocking) for the next termination signal; returns its number.
    pub fn wait(&self) -> io::Result<i32> {
        let mut signal: libc::c_int = 0;
        // SAFETY: `self.set` was initialised in `block`; `signal` is a valid
        // place for the result.
        let rc = unsafe { libc::sigwait(&self.set, &mut signal) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(signal)
    }
}

/// Makes `command` start its process with an empty signal mask, whatever
/// the gateway has blocked, so the upstream can be stopped with SIGTERM and
/// still receives SIGINT and SIGHUP.
pub fn unblock_in_child(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called; sigemptyset and
    // pthread_sigmask (sigprocmask) are, and nothing is allocated.
    unsafe {
        command.pre_exec(|| {
            let mut empty = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(empty.as_mut_ptr());
            let rc = libc::pthread_sigmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(())
        });
    }
}

/// The conventional name of a termination signal, for logs.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
