//! The size-based rotation decision, made without touching a disk.
//!
//! The runtime reports how large the file was when it opened it; from then
//! on the core counts what it hands out, so the decision is deterministic and
//! replayable. A record is never split: if appending it would pass the limit,
//! the file is rotated first (unless the file is empty, so a record larger than
//! the limit still gets written, alone in its own file).

/// Tracks one audit file's size and decides when it must rotate.
#[derive(Debug, Clone)]
pub(crate) struct RotationPlan {
    max_bytes: u64,
    current_bytes: u64,
}

impl RotationPlan {
    pub(crate) fn new(max_bytes: u64, _backup_count: u32) -> Self {
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
    #[allow(dead_code)]
    pub(crate) fn is_fresh(&self) -> bool {
        self.current_bytes == 0
    }

    /// Accounts for a write of `len` bytes; returns whether to rotate first.
    pub(crate) fn plan(&mut self, len: u64) -> bool {
        let rotate =
            self.current_bytes > 0 && self.current_bytes.saturating_add(len) > self.max_bytes;
        if rotate {
            self.current_bytes = 0;
        }
        self.current_bytes = self.current_bytes.saturating_add(len);
        rotate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_before_a_record_that_would_pass_the_limit() {
        let mut plan = RotationPlan::new(100, 5);
        assert!(!plan.plan(60));
        assert!(!plan.plan(40)); // exactly at the limit is fine
        assert!(plan.plan(1));
        assert!(!plan.plan(99));
    }

    #[test]
    fn an_oversized_record_gets_a_file_of_its_own() {
        let mut plan = RotationPlan::new(10, 1);
        assert!(!plan.plan(50)); // empty file: write it anyway
        assert!(plan.plan(5));
        assert!(!plan.plan(5));
    }

    #[test]
    fn counts_what_the_file_held_when_opened() {
        let mut plan = RotationPlan::new(100, 1);
        plan.opened(95);
        assert!(plan.plan(10));
    }
}
