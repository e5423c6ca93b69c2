#![no_main]
//! Fuzzes the `review` input; the invariants are those the corpus replay test checks.

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sidecar_injector::config::Config;

#[path = "../../tests/common/invariants.rs"]
mod invariants;
use invariants::*;

#[allow(dead_code)]
static CONFIG: LazyLock<Config> = LazyLock::new(|| Config::embedded().expect("embedded config"));

fuzz_target!(|data: &[u8]| {
    check_review(data, &CONFIG);
});
