//! The examples as a user runs them: exit status and messages of the built binaries.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The example binary `name`, built by `cargo test` next to this test's own binary.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Closing the output pipe before the example writes (as `| head -1` does after its line)
/// ends the example cleanly instead of a panic on the broken pipe.
#[test]
fn closed_output_pipe_ends_quietly() {
    for name in ["budget", "enumerate_shapes", "inspect_config"] {
        let mut child = Command::new(example(name))
            .args(if name == "inspect_config" {
                vec![concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/examples/configs/gpt2.json"
                )]
            } else {
                vec![]
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}
