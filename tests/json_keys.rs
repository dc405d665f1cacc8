//! The examples' `--json` keys are a public interface: scripts read them. Each case runs an
//! example and compares the set of key paths it prints (objects' keys joined by `.`, list
//! items as `[]`) with the set recorded in `tests/golden/`. A key may be added; a key in the
//! record that the output lacks is a renamed or dropped key, and fails. Run with
//! `LMSHAPE_BLESS=1` to record new keys after adding them on purpose.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

fn paths(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                paths(child, &p, out);
            }
        }
        serde_json::Value::Array(items) => {
            for child in items {
                paths(child, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

fn check(case: &str, name: &str, args: &[&str]) {
    let out = Command::new(example(name)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{case}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut got = BTreeSet::new();
    paths(&v, "", &mut got);
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{case}.keys"));
    if std::env::var_os("LMSHAPE_BLESS").is_some() {
        let old: BTreeSet<String> = std::fs::read_to_string(&file)
            .map(|t| t.lines().map(String::from).collect())
            .unwrap_or_default();
        let all: Vec<String> = old.union(&got).cloned().collect();
        std::fs::write(&file, all.join("\n") + "\n").unwrap();
        return;
    }
    let want: BTreeSet<String> = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{case}: {e}; record it with LMSHAPE_BLESS=1"))
        .lines()
        .map(String::from)
        .collect();
    let missing: Vec<&String> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{case}: keys renamed or dropped: {missing:?}"
    );
}

const DEEPSEEK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/configs/deepseek-v3.json"
);
const LLAMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/configs/llama-2-7b.json"
);

#[test]
fn serve_keys() {
    check("serve", "serve", &["--json", "--gpu-hour-cost", "2.5"]);
    check(
        "serve_sweep",
        "serve",
        &["--json", "--sweep", "--config", QWEN2],
    );
}

const QWEN2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/configs/qwen2-0.5b.json"
);

#[test]
fn budget_keys() {
    check("budget", "budget", &["--json"]);
}

#[test]
fn enumerate_shapes_keys() {
    check(
        "enumerate_shapes",
        "enumerate_shapes",
        &["--json", "--limit", "5"],
    );
    check(
        "enumerate_shapes_speed",
        "enumerate_shapes",
        &["--json", "--limit", "3", "--sort", "speed"],
    );
    check(
        "enumerate_shapes_moe",
        "enumerate_shapes",
        &[
            "--moe",
            "--json",
            "--limit",
            "5",
            "--target-params",
            "2e9",
            "--tp",
            "1",
            "--pp",
            "1",
            "--embedding-slots",
            "false",
            "--arch",
            "llama",
            "--vocab",
            "32000",
        ],
    );
}

/// A vision-language checkpoint: `params.total` is the checkpoint's, with the language
/// model, vision encoder and projector beside it.
#[test]
fn inspect_config_vision_keys() {
    let llava = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/configs/llava-1.5-7b.json"
    );
    check(
        "inspect_config_vision",
        "inspect_config",
        &[llava, "--json"],
    );
    let out = Command::new(example("inspect_config"))
        .args([llava, "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // llava-1.5-7b-hf's safetensors index: 14,126,854,144 bytes of fp16.
    assert_eq!(v["params"]["total"], 7_063_427_072u64);
    assert_eq!(v["params"]["language_model"], 6_738_939_904u64);
    assert_eq!(
        v["params"]["by_component"]["vision_encoder"],
        303_507_456u64
    );
    assert_eq!(
        v["params"]["by_component"]["multimodal_projector"],
        20_979_712u64
    );
}

#[test]
fn inspect_config_keys() {
    check(
        "inspect_config",
        "inspect_config",
        &[
            LLAMA,
            "--json",
            "--gpu",
            "h100-sxm",
            "--tp",
            "2",
            "--pp",
            "2",
            "--global-batch",
            "8",
        ],
    );
    check(
        "inspect_config_moe",
        "inspect_config",
        &[DEEPSEEK, "--json", "--include-mtp", "--gpu", "h200"],
    );
}

#[test]
fn fit_scaling_law_keys() {
    check(
        "fit_scaling_law",
        "fit_scaling_law",
        &["--json", "--bootstrap", "4"],
    );
}

#[test]
fn throughput_keys() {
    check(
        "throughput",
        "throughput",
        &[
            "--json",
            "--preset",
            "gpt3-13b",
            "--tp",
            "2",
            "--pp",
            "2",
            "--dp",
            "4",
            "--global-batch",
            "32",
        ],
    );
}

#[test]
fn plan_keys() {
    check("plan", "plan", &["--json", "--top", "3"]);
    check(
        "plan_moe",
        "plan",
        &[
            "--json",
            "--top",
            "2",
            "--moe",
            "--gpus",
            "64",
            "--weeks",
            "2",
            "--arch",
            "llama",
            "--vocab",
            "32000",
            "--token-floor",
            "none",
        ],
    );
}
