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

/// `inspect_config --json` on a mixture-of-experts config: the keys scripts read.
#[test]
fn inspect_config_json_has_the_moe_keys() {
    let out = Command::new(example("inspect_config"))
        .args([
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/configs/deepseek-v3.json"
            ),
            "--json",
            "--include-mtp",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &v["params"];
    // DeepSeek-V3: 671,026,419,200 in the causal LM, plus the MTP module on request.
    assert_eq!(
        p["total"].as_u64().unwrap(),
        671_026_419_200 + p["mtp"].as_u64().unwrap()
    );
    assert!(p["active"].as_u64().unwrap() > p["active_non_embedding_input"].as_u64().unwrap());
    for key in ["router", "routed_experts", "shared_experts"] {
        assert!(p["by_component"][key].as_u64().unwrap() > 0, "{key}");
    }
    let f = &v["flops_per_token"];
    assert!(f["forward_active"].as_f64().unwrap() > 0.0);
    assert!(f["training_active"].as_f64().unwrap() > f["forward_active"].as_f64().unwrap());
    let moe = &v["model"]["moe"];
    assert_eq!(moe["num_experts"], 256);
    assert_eq!(moe["top_k"], 8);
    assert_eq!(moe["expert_ffn_size"], 2048);
    assert_eq!(moe["num_shared_experts"], 1);
    assert_eq!(moe["dense_layers"], 3);
    // The keys that were there before keep working.
    assert!(v["memory"]["training"]["total_bytes"].as_u64().is_some());
    assert!(f["forward"].as_f64().is_some() && f["training"].as_f64().is_some());
}
