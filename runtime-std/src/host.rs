//! What every runtime does around the gateway, whatever its I/O: record
//! each input when capturing, carry out audit writes (reporting a failure
//! before the next output is polled, so the gateway can withhold the
//! message whose record was lost), tell the gateway about client EOF once,
//! and turn termination signals into a shutdown. A runtime only moves the
//! bytes of the [`HostAction`]s it is handed and runs the timer.

use crate::audit_files::{AuditFiles, WriteOutcome};
use crate::capture::Recorder;
use crate::signals;
use gatekit_core::{ExitStatus, Gateway, Input, Output, UpstreamSignal};
use jiff::Timestamp;

/// Something that happened, as a runtime reports it.
#[derive(Debug)]
pub enum HostEvent {
    /// Bytes read from the client.
    ClientBytes(Vec<u8>),
    /// The client closed stdin, or stopped reading stdout (either may
    /// happen, even both; the gateway is told once).
    ClientEof,
    /// Bytes read from the upstream's stdout.
    UpstreamBytes(Vec<u8>),
    /// The upstream closed its stdout.
    UpstreamEof,
    /// The upstream process exited.
    UpstreamExited(ExitStatus),
    /// The gateway was sent SIGTERM, SIGINT or SIGHUP.
    Signal(i32),
    /// The deadline of the last [`HostAction::Wait`] passed.
    Deadline,
}

/// What the runtime must do next: the gateway's outputs, less the audit
/// writes the host has already carried out.
#[derive(Debug, PartialEq, Eq)]
pub enum HostAction {
    /// Queue these bytes for the client.
    ToClient(Vec<u8>),
    /// Queue these bytes for the upstream's stdin.
    ToUpstream(Vec<u8>),
    /// Close the upstream's stdin once its queue is written.
    CloseUpstreamInput,
    /// Signal the upstream's process group.
    SignalUpstream(UpstreamSignal),
    /// Let the client take its last bytes, kill the upstream's group, exit.
    Exit(i32),
    /// Nothing more until the next event or this deadline.
    Wait(Option<Timestamp>),
}

/// The gateway with its audit files and recorder.
#[derive(Debug)]
pub struct GatewayHost {
    gateway: Gateway,
    audit: AuditFiles,
    recorder: Option<Recorder>,
    client_eof_fed: bool,
    signalled: bool,
}

impl GatewayHost {
    /// Wraps an opened set of audit files and an optional recorder, and tells
    /// the gateway how each audit file stands. Carry out the actions that
    /// follow ([`GatewayHost::next_action`]) before anything else.
    pub fn new(gateway: Gateway, audit: AuditFiles, recorder: Option<Recorder>) -> Self {
        let mut host = GatewayHost {
            gateway,
            audit,
            recorder,
            client_eof_fed: false,
            signalled: false,
        };
        for state in host.audit.open_states() {
            let now = Timestamp::now();
            if let Some(recorder) = &mut host.recorder {
                recorder.record(now, &state.input());
            }
            host.gateway.handle_input(state.input(), now);
        }
        host
    }

    /// Hands one input to the gateway, recording it first when capturing.
    pub fn handle(&mut self, input: Input<'_>) {
        let now = Timestamp::now();
        if let Some(recorder) = &mut self.recorder {
            recorder.record(now, &input);
        }
        self.gateway.handle_input(input, now);
    }

    /// Hands one event to the gateway. Returns an exit code when the event
    /// means stopping at once (a second termination signal); otherwise
    /// carry out the actions that follow.
    pub fn event(&mut self, event: HostEvent) -> Option<i32> {
        match event {
            HostEvent::ClientBytes(bytes) => self.handle(Input::ClientBytes(&bytes)),
            HostEvent::ClientEof => self.client_eof(),
            HostEvent::UpstreamBytes(bytes) => self.handle(Input::UpstreamBytes(&bytes)),
            HostEvent::UpstreamEof => self.handle(Input::UpstreamEof),
            HostEvent::UpstreamExited(status) => self.handle(Input::UpstreamExited(status)),
            HostEvent::Deadline => self.handle(Input::Timeout),
            HostEvent::Signal(signal) if self.signalled => {
                log::warn!(target: crate::LOG_TARGET, "received {} again; stopping now", signals::name(signal));
                return Some(128 + signal);
            }
            HostEvent::Signal(signal) => {
                log::info!(target: crate::LOG_TARGET, "received {}; shutting down", signals::name(signal));
                self.signalled = true;
                // The same orderly shutdown as a client that hung up.
                self.client_eof();
            }
        }
        None
    }

    fn client_eof(&mut self) {
        if !self.client_eof_fed {
            self.client_eof_fed = true;
            self.handle(Input::ClientEof);
        }
    }

    /// The next thing to do. Audit writes are carried out here, in order,
    /// before the message they describe is handed out.
    pub fn next_action(&mut self) -> HostAction {
        loop {
            return match self.gateway.poll_output() {
                Output::Audit(write) => {
                    match self.audit.write(&write) {
                        Ok(WriteOutcome::Appended) => {}
                        Ok(WriteOutcome::Reopened(existing_bytes)) => {
                            self.handle(Input::AuditFileOpened {
                                sink: write.sink,
                                existing_bytes,
                            })
                        }
                        Err(error) => {
                            let reason = error.to_string();
                            self.handle(Input::AuditWriteFailed {
                                sink: write.sink,
                                reason: &reason,
                            });
                        }
                    }
                    continue;
                }
                Output::ToClient(bytes) => HostAction::ToClient(bytes),
                Output::ToUpstream(bytes) => HostAction::ToUpstream(bytes),
                Output::CloseUpstreamInput => HostAction::CloseUpstreamInput,
                Output::SignalUpstream(signal) => HostAction::SignalUpstream(signal),
                Output::Exit(code) => HostAction::Exit(code),
                Output::Wait(deadline) => HostAction::Wait(deadline),
            };
        }
    }
}

/// The messages for each peer handed out while one input's actions are
/// carried out, gathered so that each peer gets one write per chunk read,
/// however many messages it held. A runtime adds every forward here and
/// takes both out before any other action (closing the upstream's stdin
/// must come after what was queued for it) and at the end.
#[derive(Debug, Default)]
pub struct PendingWrites {
    to_client: Vec<u8>,
    to_upstream: Vec<u8>,
}

impl PendingWrites {
    /// Adds the bytes of a forward for the client.
    pub fn to_client(&mut self, bytes: Vec<u8>) {
        append(&mut self.to_client, bytes);
    }

    /// Adds the bytes of a forward for the upstream.
    pub fn to_upstream(&mut self, bytes: Vec<u8>) {
        append(&mut self.to_upstream, bytes);
    }

    /// Takes what was gathered: (for the client, for the upstream), each
    /// `None` when nothing was.
    pub fn take(&mut self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let take = |bytes: &mut Vec<u8>| (!bytes.is_empty()).then(|| std::mem::take(bytes));
        (take(&mut self.to_client), take(&mut self.to_upstream))
    }
}

/// Adds `bytes` to `pending`, taking the buffer itself when nothing is
/// pending yet (the common case of one message, and the only copy-free one
/// for a large message).
fn append(pending: &mut Vec<u8>, bytes: Vec<u8>) {
    if pending.is_empty() {
        *pending = bytes;
    } else {
        pending.extend_from_slice(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_are_gathered_per_peer_in_order() {
        let mut pending = PendingWrites::default();
        assert_eq!(pending.take(), (None, None));
        pending.to_upstream(b"a\n".to_vec());
        pending.to_client(b"x\n".to_vec());
        pending.to_upstream(b"b\n".to_vec());
        assert_eq!(
            pending.take(),
            (Some(b"x\n".to_vec()), Some(b"a\nb\n".to_vec()))
        );
        assert_eq!(pending.take(), (None, None));
    }
}
