#![no_main]
//! Fuzzes the `review` input against the invariants the corpus replay test checks too.

#[path = "../../tests/common/invariants.rs"]
#[allow(dead_code)]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| invariants::check_review(data, &invariants::CONFIG));
