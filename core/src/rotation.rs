//! The size-based rotation decision, made without touching a disk.
//!
//! The runtime reports how large the file was when it opened it; from then
//! on the core counts what it hands out, so the decision is deterministic and
//! replayable. A record is never split: if appending it would pass the limit,
//! the file is rotated first (unless the file is empty, so a record larger than
//! the limit still gets written, alone in its own file). Which backups to
//! keep is the runtime's part: it shifts `audit.log.N-1` to `audit.log.N`
//! and drops what would exceed `backup_count`.

/// Tracks one audit file's size and decides when it must rotate.
#[derive(Debug, Clone)]
pub(crate) struct RotationPlan {
    max_bytes: u64,
    current_bytes: u64,
}

impl RotationPlan {
    pub(crate) fn new(max_bytes: u64) -> Self {
        RotationPlan {
            max_bytes: max_bytes.max(1),
            current_bytes: 0,
        }
    }

    /// The runtime (re)opened the file, which holds `existing_bytes` already.
    pub(crate) fn opened(&mut self, existing_bytes: u64) {
        self.current_bytes = existing_bytes;
    }

    /// True when the current file is empty (a new file starts, e.g. for a CSV header).
    pub(crate) fn is_fresh(&self) -> bool {
        self.current_bytes == 0
    }

    /// Whether appending `len` more bytes must go to a fresh file.
    pub(crate) fn needs_rotation(&self, len: u64) -> bool {
        self.current_bytes > 0 && self.current_bytes.saturating_add(len) > self.max_bytes
    }

    /// Accounts for a write of `len` bytes, after rotating if `rotated`.
    pub(crate) fn record_write(&mut self, rotated: bool, len: u64) {
        if rotated {
            self.current_bytes = 0;
        }
        self.current_bytes = self.current_bytes.saturating_add(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rotation: &mut RotationPlan, len: u64) -> bool {
        let rotate = rotation.needs_rotation(len);
        rotation.record_write(rotate, len);
        rotate
    }

    #[test]
    fn rotates_before_a_record_that_would_pass_the_limit() {
        let mut rotation = RotationPlan::new(100);
        assert!(!plan(&mut rotation, 60));
        assert!(!plan(&mut rotation, 40)); // exactly at the limit is fine
        assert!(plan(&mut rotation, 1));
        assert!(!plan(&mut rotation, 99));
    }

    #[test]
    fn an_oversized_record_gets_a_file_of_its_own() {
        let mut rotation = RotationPlan::new(10);
        assert!(!plan(&mut rotation, 50)); // empty file: write it anyway
        assert!(plan(&mut rotation, 5));
        assert!(!plan(&mut rotation, 5));
    }

    #[test]
    fn counts_what_the_file_held_when_opened() {
        let mut rotation = RotationPlan::new(100);
        assert!(rotation.is_fresh());
        rotation.opened(95);
        assert!(!rotation.is_fresh());
        assert!(plan(&mut rotation, 10));
    }
}
