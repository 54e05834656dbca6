//! Audit files on disk: opening them safely, appending records, rotating.
//!
//! The core formats each record and decides when a file must rotate (it
//! counts the bytes it hands out, starting from the size reported in
//! [`Input::AuditFileOpened`]); this module only carries that out. Each
//! record is appended with a single `write_all` and no user-space buffer, so
//! a record is in the file (in the kernel's page cache) before the message it
//! describes is forwarded: killing the gateway with SIGKILL never loses the
//! record of a request that was answered. No fsync: surviving a power cut is
//! not worth a disk flush per message.
//!
//! Audit files hold whatever the agent read and wrote, so a file Gatekit
//! creates is owner-only (0600) and so are the directories it creates for it
//! (0700). A file or directory that already exists keeps the permissions the
//! user gave it, also across rotation.

use gatekit_core::{AuditSinkId, AuditWrite, Input};
use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const LOG_TARGET: &str = "gatekit.audit";
/// Mode of an audit file Gatekit creates.
const NEW_FILE_MODE: u32 = 0o600;
/// Mode of a directory Gatekit creates for audit files.
const NEW_DIR_MODE: u32 = 0o700;

/// Where one audit sink of the gateway writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFile {
    /// The sink, as numbered by `gatekit_core::audit_sinks`.
    pub sink: AuditSinkId,
    /// The file, already resolved against the config file's directory.
    pub path: PathBuf,
    /// How many rotated files (`path.1` … `path.N`) to keep; 0 keeps none.
    pub backup_count: u32,
    /// A critical file that cannot be opened at startup stops the gateway
    /// from starting; a non-critical one is retried with every record.
    pub critical: bool,
}

/// The audit files of one gateway.
#[derive(Debug)]
pub struct AuditFiles {
    files: Vec<OpenAuditFile>,
}

#[derive(Debug)]
struct OpenAuditFile {
    spec: AuditFile,
    /// `None` while the file cannot be opened; reopened on the next write.
    file: Option<File>,
    /// The file's size as far as this process knows (what it held when
    /// opened plus what was appended), to undo a partial write.
    size: u64,
    /// Why the file could not be opened at startup, if it could not.
    open_error: Option<String>,
}

/// How one audit file stands after [`AuditFiles::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenState {
    sink: AuditSinkId,
    /// The size on disk, or why it could not be opened.
    state: Result<u64, String>,
}

impl OpenState {
    /// The input that tells the gateway about it.
    pub fn input(&self) -> Input<'_> {
        match &self.state {
            Ok(existing_bytes) => Input::AuditFileOpened {
                sink: self.sink,
                existing_bytes: *existing_bytes,
            },
            Err(reason) => Input::AuditWriteFailed {
                sink: self.sink,
                reason,
            },
        }
    }
}

/// What a successful [`AuditFiles::write`] did besides writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Appended to the file that was open.
    Appended,
    /// The file was broken and had to be reopened; it now holds this many
    /// bytes. Tell the gateway with [`Input::AuditFileOpened`].
    Reopened(u64),
}

impl AuditFiles {
    /// Opens every file for appending, creating missing files and
    /// directories. Fails on the first *critical* file that cannot be
    /// opened, with its path in the error, before anything has been started;
    /// a non-critical one is left closed and retried on every write.
    pub fn open(specs: Vec<AuditFile>) -> io::Result<Self> {
        let mut files = Vec::with_capacity(specs.len());
        for spec in specs {
            let opened = open_append(&spec.path, NEW_FILE_MODE)
                .and_then(|file| file.metadata().map(|m| (file, m.len())))
                .map_err(|e| with_path("cannot open audit file", &spec.path, e));
            match opened {
                Ok((file, size)) => files.push(OpenAuditFile {
                    spec,
                    file: Some(file),
                    size,
                    open_error: None,
                }),
                Err(error) if spec.critical => return Err(error),
                Err(error) => files.push(OpenAuditFile {
                    spec,
                    file: None,
                    size: 0,
                    open_error: Some(error.to_string()),
                }),
            }
        }
        Ok(AuditFiles { files })
    }

    /// What to tell the gateway about each file before anything else: the
    /// size already on disk (for its rotation plan), or why a non-critical
    /// file could not be opened. Feed each with [`OpenState::input`].
    pub fn open_states(&self) -> Vec<OpenState> {
        self.files
            .iter()
            .map(|f| OpenState {
                sink: f.spec.sink,
                state: match &f.open_error {
                    None => Ok(f.size),
                    Some(reason) => Err(reason.clone()),
                },
            })
            .collect()
    }

    /// Carries out one [`AuditWrite`]: reopens a broken file, rotates first
    /// if the core says so, then appends the bytes in one write.
    ///
    /// A record is never left torn: if the write fails part-way, the file is
    /// cut back to where the record began, and the file counts as broken
    /// until a later write manages to reopen it. A failed rotation is logged
    /// and the record is appended to the file still open, so it is not lost.
    /// The error returned names the file; report it to the gateway with
    /// [`Input::AuditWriteFailed`] before polling its next output.
    pub fn write(&mut self, write: &AuditWrite) -> io::Result<WriteOutcome> {
        let Some(entry) = self.files.iter_mut().find(|f| f.spec.sink == write.sink) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no audit file was opened for sink {}", write.sink.0),
            ));
        };
        entry.open_error = None;
        let reopened = entry.file.is_none();
        if write.rotate_first {
            if let Err(error) = entry.rotate() {
                log::error!(
                    target: LOG_TARGET,
                    "cannot rotate audit file {}: {error}; appending to the current file",
                    entry.spec.path.display()
                );
            }
        }
        if entry.file.is_none() {
            let file = open_append(&entry.spec.path, NEW_FILE_MODE)
                .map_err(|e| with_path("cannot open audit file", &entry.spec.path, e))?;
            entry.size = file
                .metadata()
                .map_err(|e| with_path("cannot read the size of audit file", &entry.spec.path, e))?
                .len();
            entry.file = Some(file);
        }
        let file = entry.file.as_mut().expect("opened just above");
        if let Err(error) = file.write_all(&write.bytes) {
            // Undo a partial append so no torn record stays behind, and
            // reopen before the next record.
            let _ = file.set_len(entry.size);
            entry.file = None;
            return Err(with_path(
                "cannot write audit file",
                &entry.spec.path,
                error,
            ));
        }
        entry.size += write.bytes.len() as u64;
        Ok(if reopened {
            WriteOutcome::Reopened(entry.size)
        } else {
            WriteOutcome::Appended
        })
    }
}

impl OpenAuditFile {
    /// Moves the current file to `path.1` (and older ones up) and opens a
    /// fresh file with the same permissions.
    fn rotate(&mut self) -> io::Result<()> {
        let mode = match &self.file {
            Some(file) => file.metadata()?.permissions().mode() & 0o7777,
            None => NEW_FILE_MODE,
        };
        shift_backups(&self.spec.path, self.spec.backup_count)?;
        self.file = None;
        let file = open_append(&self.spec.path, mode)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }
}

/// The path of the `n`th backup of `path`: `audit.log` → `audit.log.n`.
pub fn backup_path(path: &Path, n: u32) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Shifts `path.(N-1)` → `path.N` … `path` → `path.1`, so `path.1` is the
/// newest backup and what was `path.N` is gone (N = `backup_count`). With
/// `backup_count` 0 the file is simply removed. Missing files in the chain
/// are skipped. Backups numbered above N (from an earlier, larger
/// `backup_count`) are left alone.
pub fn shift_backups(path: &Path, backup_count: u32) -> io::Result<()> {
    if backup_count == 0 {
        return ignore_not_found(fs::remove_file(path));
    }
    // rename(2) replaces its target, so the oldest backup is overwritten by
    // the next oldest rather than deleted first.
    for n in (1..backup_count).rev() {
        ignore_not_found(fs::rename(backup_path(path, n), backup_path(path, n + 1)))?;
    }
    ignore_not_found(fs::rename(path, backup_path(path, 1)))
}

/// Opens `path` for appending. A missing file is created with `mode` (less
/// what the umask removes) and missing parent directories with 0700; what
/// exists keeps its permissions.
fn open_append(path: &Path, mode: u32) -> io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(NEW_DIR_MODE)
                .create(parent)?;
        }
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .open(path)
}

fn ignore_not_found(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn with_path(what: &str, path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "gatekit-runtime-std-{}-{n}-{name}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn sink(path: &Path, backup_count: u32) -> AuditFiles {
        AuditFiles::open(vec![AuditFile {
            sink: AuditSinkId(0),
            path: path.to_owned(),
            backup_count,
            critical: true,
        }])
        .expect("opens")
    }

    fn write(files: &mut AuditFiles, rotate_first: bool, bytes: &str) {
        files
            .write(&AuditWrite {
                sink: AuditSinkId(0),
                rotate_first,
                bytes: bytes.as_bytes().to_vec(),
            })
            .expect("writes");
    }

    fn read(path: &Path) -> Option<String> {
        fs::read_to_string(path).ok()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("exists").permissions().mode() & 0o777
    }

    #[test]
    fn rotation_keeps_at_most_n_backups_with_dot_1_newest() {
        let dir = TempDir::new("rotation");
        let path = dir.0.join("audit.log");
        let mut files = sink(&path, 2);
        write(&mut files, false, "r1\n");
        for record in ["r2\n", "r3\n", "r4\n", "r5\n"] {
            write(&mut files, true, record);
        }
        assert_eq!(read(&path).as_deref(), Some("r5\n"));
        assert_eq!(read(&backup_path(&path, 1)).as_deref(), Some("r4\n"));
        assert_eq!(read(&backup_path(&path, 2)).as_deref(), Some("r3\n"));
        assert_eq!(read(&backup_path(&path, 3)), None);
    }

    #[test]
    fn backup_count_zero_replaces_the_file() {
        let dir = TempDir::new("zero");
        let path = dir.0.join("audit.log");
        let mut files = sink(&path, 0);
        write(&mut files, false, "old\n");
        write(&mut files, true, "new\n");
        write(&mut files, false, "newer\n");
        assert_eq!(read(&path).as_deref(), Some("new\nnewer\n"));
        assert_eq!(read(&backup_path(&path, 1)), None);
    }

    #[test]
    fn records_are_never_split_across_files() {
        let dir = TempDir::new("split");
        let path = dir.0.join("audit.log");
        let backups = 3;
        let mut files = sink(&path, backups);
        // The core's rule: rotate before a record that would pass the limit,
        // unless the file is empty.
        let limit = 100;
        let mut current = 0;
        let records: Vec<String> = (0..40)
            .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i * 7 % 50)))
            .collect();
        for record in &records {
            let rotate = current > 0 && current + record.len() > limit;
            if rotate {
                current = 0;
            }
            current += record.len();
            write(&mut files, rotate, record);
        }
        let mut kept = String::new();
        for n in (1..=backups).rev() {
            let text = read(&backup_path(&path, n)).expect("backup exists");
            assert!(text.len() <= limit, "backup {n} is {} bytes", text.len());
            assert!(text.ends_with('\n'));
            kept.push_str(&text);
        }
        kept.push_str(&read(&path).expect("current file"));
        assert_eq!(read(&backup_path(&path, backups + 1)), None);
        // What is kept is exactly the last records, each whole.
        let all = records.concat();
        assert!(all.ends_with(&kept));
        let start = all.len() - kept.len();
        assert!(start == 0 || all.as_bytes()[start - 1] == b'\n');
    }

    #[test]
    fn creates_directories_0700_and_files_0600() {
        let dir = TempDir::new("modes");
        let path = dir.0.join("logs").join("nested").join("audit.log");
        let mut files = sink(&path, 1);
        write(&mut files, false, "a\n");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.0.join("logs")), 0o700);
        assert_eq!(mode(&dir.0.join("logs").join("nested")), 0o700);
        write(&mut files, true, "b\n");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&backup_path(&path, 1)), 0o600);
    }

    #[test]
    fn an_existing_file_keeps_its_permissions_and_reports_its_size() {
        let dir = TempDir::new("existing");
        let path = dir.0.join("audit.log");
        fs::write(&path, "0123456789").expect("written");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let mut files = sink(&path, 1);
        let states = files.open_states();
        assert_eq!(
            states.iter().map(OpenState::input).collect::<Vec<_>>(),
            vec![Input::AuditFileOpened {
                sink: AuditSinkId(0),
                existing_bytes: 10
            }]
        );
        write(&mut files, false, "a\n");
        assert_eq!(read(&path).as_deref(), Some("0123456789a\n"));
        assert_eq!(mode(&path), 0o644);
    }

    #[test]
    fn an_open_failure_names_the_path() {
        let dir = TempDir::new("failure");
        let blocker = dir.0.join("not-a-dir");
        fs::write(&blocker, "").expect("written");
        let path = blocker.join("audit.log");
        let error = AuditFiles::open(vec![AuditFile {
            sink: AuditSinkId(0),
            path: path.clone(),
            backup_count: 1,
            critical: true,
        }])
        .expect_err("a critical file that cannot open stops the start");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn a_write_for_an_unknown_sink_is_an_error() {
        let dir = TempDir::new("unknown");
        let mut files = sink(&dir.0.join("audit.log"), 1);
        let result = files.write(&AuditWrite {
            sink: AuditSinkId(7),
            rotate_first: false,
            bytes: b"x\n".to_vec(),
        });
        assert!(result.is_err());
    }

    #[test]
    fn a_non_critical_file_that_cannot_open_is_reported_and_retried() {
        let dir = TempDir::new("noncritical");
        // A directory where the file should be: it cannot be opened.
        let path = dir.0.join("audit.log");
        fs::create_dir(&path).expect("dir");
        let mut files = AuditFiles::open(vec![AuditFile {
            sink: AuditSinkId(0),
            path: path.clone(),
            backup_count: 1,
            critical: false,
        }])
        .expect("a non-critical file does not stop the start");
        let states = files.open_states();
        assert!(matches!(states[0].input(), Input::AuditWriteFailed { .. }));
        let record = AuditWrite {
            sink: AuditSinkId(0),
            rotate_first: false,
            bytes: b"a\n".to_vec(),
        };
        assert!(files.write(&record).is_err());
        fs::remove_dir(&path).expect("rmdir");
        assert_eq!(
            files.write(&record).expect("recovers"),
            WriteOutcome::Reopened(2)
        );
        assert_eq!(
            files.write(&record).expect("appends"),
            WriteOutcome::Appended
        );
        assert_eq!(read(&path).as_deref(), Some("a\na\n"));
    }
}
