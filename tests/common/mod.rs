//! Shared test helpers.
#![allow(dead_code)]

use proptest::test_runner::{Config, FileFailurePersistence};

/// Proptest configuration that records failing cases in `proptest-regressions/NAME.txt`
/// (integration tests have no `lib.rs` beside them for proptest's default location).
pub fn proptest_config(file: &'static str, cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..Config::default()
    }
}
