//! Replays the fuzz corpus (fuzz/corpus/<target>/) through the fuzz targets' invariants, so
//! every input the fuzzers kept, crashes turned regressions included, is checked in CI.

#[path = "common/invariants.rs"]
mod invariants;

use std::path::Path;

fn replay(target: &str, check: impl Fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        assert!(outcome.is_ok(), "invariant broken by {}", path.display());
        n += 1;
    }
    n
}

#[test]
fn review_corpus_keeps_the_invariants() {
    let config = &*invariants::CONFIG;
    assert!(replay("review", |d| invariants::check_review(d, config)) > 0);
}

#[test]
fn inject_corpus_keeps_the_invariants() {
    let config = &*invariants::CONFIG;
    assert!(replay("inject", |d| invariants::check_inject(d, config)) > 0);
}

#[test]
fn config_corpus_keeps_the_invariants() {
    assert!(replay("config", invariants::check_config) > 0);
}
