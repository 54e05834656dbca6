//! Replays every input of the committed fuzz corpus through the same
//! invariant checks the fuzz target runs, so what fuzzing once found (or
//! covered) stays checked in the ordinary test run, on a stable toolchain.

mod invariants;

#[test]
fn every_corpus_input_keeps_the_invariants() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/gateway_session");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("readable entry").path())
        .collect();
    entries.sort();
    assert!(
        entries.len() >= 10,
        "the corpus in {} is missing",
        dir.display()
    );
    let mut failures = Vec::new();
    for path in &entries {
        let data = std::fs::read(path).expect("readable corpus file");
        if let Err(panic) = std::panic::catch_unwind(|| invariants::check_session(&data)) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{}: {message}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "corpus inputs broke an invariant:\n{}",
        failures.join("\n")
    );
}
