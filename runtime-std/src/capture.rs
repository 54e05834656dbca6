//! Recording a session: every input the gateway is fed, with the time it
//! was fed, in the capture format of `gatekit_core::capture`.
//!
//! The recorder writes each line before the gateway sees the input, with one
//! unbuffered write, so a capture of a gateway that was killed still holds
//! everything up to the kill. Recording must never stop the gateway: if the
//! capture file fails, recording stops with one error in the log.

use gatekit_core::capture::{encode, CaptureHeader};
use gatekit_core::Input;
use jiff::Timestamp;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Writes a capture file.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    file: Option<File>,
}

impl Recorder {
    /// Creates (or truncates) the capture file and writes its header. The
    /// file holds everything the client and server said, so it is created
    /// owner-only, like the audit files.
    pub fn create(path: &Path, runtime: &str, now: Timestamp) -> io::Result<Self> {
        let describe = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot create capture file {}: {e}", path.display()),
            )
        };
        if let Some(parent) = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && !p.is_dir())
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(describe)?;
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(describe)?;
        file.write_all(&CaptureHeader::new(runtime, now).to_line())
            .map_err(describe)?;
        Ok(Recorder {
            path: path.to_owned(),
            file: Some(file),
        })
    }

    /// Records one input, fed at `now`.
    pub fn record(&mut self, now: Timestamp, input: &Input<'_>) {
        let Some(file) = &mut self.file else { return };
        if let Err(error) = file.write_all(&encode(now, input)) {
            log::error!(
                target: "gatekit.capture",
                "writing capture file {} failed: {error}; recording stops here",
                self.path.display()
            );
            self.file = None;
        }
    }
}
