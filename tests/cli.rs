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

/// Runs an example with `args`: (exit code, stdout, stderr).
fn run(name: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(example(name)).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Malformed command lines are errors that name the flag, with status 2.
#[test]
fn malformed_command_lines_are_errors() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("budget", &["--json=false"], "--json"),
        (
            "budget",
            &["--gpus", "4", "--gpus", "8"],
            "cannot be used multiple times",
        ),
        ("budget", &["-tp", "4"], "unexpected argument"),
        ("budget", &["extra"], "unexpected argument"),
        ("budget", &["--hours", "-5"], "--hours"),
        ("budget", &["--gpu", "h100-80gb"], "did you mean h100-sxm"),
        ("budget", &["--token-floor", "1e30"], "token floor"),
        (
            "throughput",
            &["--arch", "llama", "--hidden", "4096", "--heads", "32"],
            "missing --layers, --vocab, --ffn",
        ),
        (
            "inspect_config",
            &["--virtual-stages", "2", "--pp", "1"],
            "needs a pipeline",
        ),
        (
            "plan",
            &["--min-aspect", "300", "--max-aspect", "100"],
            "aspect window is empty",
        ),
        (
            "plan",
            &["--tp-options", "16", "--gpus", "8"],
            "no layout of 8 GPUs satisfies the layout rules",
        ),
        (
            "plan",
            &[
                "--gpus",
                "16",
                "--hours",
                "100",
                "--min-params",
                "100000000000",
                "--max-params",
                "120000000000",
            ],
            "token floor must be reachable",
        ),
        (
            "plan",
            &["--order-equivalents", "time", "--token-floor", "none"],
            "needs a token floor",
        ),
        (
            "plan",
            &["--order-equivalents", "cheapest"],
            "unknown equivalent order",
        ),
        (
            "fit_scaling_law",
            &["--exclude-highest-loss", "240"],
            "needs at least 10",
        ),
    ];
    for (name, args, message) in cases {
        let (code, _, err) = run(name, args);
        assert_eq!(code, 2, "{name} {args:?}: {err}");
        assert!(err.contains(message), "{name} {args:?}: {err}");
        assert!(!err.contains("panicked"), "{name} {args:?}: {err}");
    }
}

/// Flags that used to be listed but rejected, or rejected in one example and accepted in
/// another, are accepted; whole numbers up to u64::MAX in scientific notation are read.
#[test]
fn documented_flags_are_accepted() {
    let cases: &[(&str, &[&str])] = &[
        (
            "enumerate_shapes",
            &[
                "--dp",
                "4",
                "--micro-batch",
                "1",
                "--global-batch",
                "64",
                "--gpu",
                "h100-sxm",
                "--limit",
                "2",
            ],
        ),
        ("budget", &["--law", "kaplan"]),
        ("budget", &["--param-cap", "1.8e19"]),
    ];
    for (name, args) in cases {
        let (code, _, err) = run(name, args);
        assert_eq!(code, 0, "{name} {args:?}: {err}");
    }
}

/// `--help` lists the GPU presets and each flag's default.
#[test]
fn help_lists_presets_and_defaults() {
    let (code, out, _) = run("plan", &["--help"]);
    assert_eq!(code, 0);
    for text in [
        "h100-sxm",
        "a100-80gb",
        "[default: 384]",
        "--token-floor",
        "--mark",
    ] {
        assert!(out.contains(text), "{text}: {out}");
    }
}

/// A shape given by flags counts what it says: Llama-2-7B's shape is 6.74B parameters.
#[test]
fn throughput_counts_the_shape_it_is_given() {
    let (code, out, err) = run(
        "throughput",
        &[
            "--arch",
            "llama",
            "--hidden",
            "4096",
            "--layers",
            "32",
            "--heads",
            "32",
            "--vocab",
            "32000",
            "--ffn",
            "11008",
            "--tp",
            "4",
            "--pp",
            "1",
            "--dp",
            "2",
            "--global-batch",
            "64",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let m: lmshape::Transformer = serde_json::from_value(v["model"].clone()).unwrap();
    assert_eq!(m.total_params().unwrap(), 6_738_415_616);
    // The memory verdict rides along.
    assert!(v["memory_fits"].is_boolean() && v["memory_bytes_per_gpu"].as_u64().is_some());
}

/// The training context is a stated default, not the model's longest context.
#[test]
fn inspect_config_states_its_training_context() {
    let dir = std::env::temp_dir().join(format!("lmshape-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("llama-3.1-8b.json");
    std::fs::write(
        &path,
        r#"{"model_type":"llama","hidden_size":4096,"intermediate_size":14336,"num_attention_heads":32,"num_key_value_heads":8,"num_hidden_layers":32,"vocab_size":128256,"max_position_embeddings":131072,"tie_word_embeddings":false}"#,
    )
    .unwrap();
    let (code, out, err) = run("inspect_config", &[path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("context 4096 (the default training context"),
        "{out}"
    );
    let (_, json, _) = run("inspect_config", &[path.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["flops_per_token"]["seq_len"], 4096);
    // At 4096 tokens one GPU holds about 8B × 18 bytes plus activations, far from 82,694 GiB.
    let gib = v["memory"]["training"]["total_bytes"].as_u64().unwrap() >> 30;
    assert!(gib < 400, "{gib} GiB");
}

/// Output that tells the truth: `--top` bounds the JSON, huge budgets print in scientific
/// notation, no debug names leak, and a GPU count that cannot split the batch says so.
#[test]
fn output_tells_the_truth() {
    let (code, out, err) = run("plan", &["--json", "--top", "3"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    // With --moe the mixture-of-experts candidates follow the dense ones, with their keys.
    let (code, out, err) = run("plan", &["--moe", "--json", "--top", "2"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let all = v.as_array().unwrap();
    assert_eq!(all.len(), 4);
    let moe = &all[3];
    for key in [
        "num_experts",
        "top_k",
        "expert_ffn_size",
        "active_params",
        "ep",
        "etp",
    ] {
        assert!(moe[key].is_u64(), "{key}: {moe}");
    }
    assert!(moe["active_params"].as_u64() < moe["params"].as_u64());
    assert!(all[0]["num_experts"].is_null() && all[0]["moe"] == false);

    // Mixture-of-experts shapes from enumerate_shapes: the keys, a valid expert split.
    let (code, out, err) = run(
        "enumerate_shapes",
        &[
            "--moe",
            "--target-params",
            "2e9",
            "--tolerance",
            "0.1",
            "--arch",
            "llama",
            "--vocab",
            "32000",
            "--tp",
            "1",
            "--pp",
            "1",
            "--embedding-slots",
            "false",
            "--ep",
            "8",
            "--limit",
            "5",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let shapes = v.as_array().unwrap();
    assert_eq!(shapes.len(), 5);
    for m in shapes {
        let n = |k: &str| m[k].as_u64().unwrap();
        assert_eq!(n("num_experts") % 8, 0);
        assert_eq!(
            (n("top_k") + n("num_shared_experts")) * n("expert_ffn_size"),
            n("ffn_size")
        );
        assert!(n("active_params") < n("params"));
    }

    let (code, out, _) = run("budget", &["--flops", "1e300"]);
    assert_eq!(code, 0);
    assert!(out.lines().all(|l| l.len() < 200), "{out}");

    let (_, out, _) = run("plan", &[]);
    for leak in ["TokenFloor", "recompute Full", "Only stage", "{ "] {
        assert!(!out.contains(leak), "{leak}: {out}");
    }
    let (_, out, _) = run("inspect_config", &[]);
    for leak in ["LinearBiases", "Learned {", "Only", "{:?}"] {
        assert!(!out.contains(leak), "{leak}: {out}");
    }

    let (code, out, _) = run("plan", &["--gpus", "7"]);
    assert_eq!(code, 0);
    assert!(out.contains("global batch must split"), "{out}");

    let (code, out, _) = run(
        "enumerate_shapes",
        &["--target-params", "1e6", "--tolerance", "0"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("no shape satisfies"), "{out}");
}

/// A CSV of identical runs does not constrain the fit: the error says so.
#[test]
fn identical_runs_do_not_constrain_a_fit() {
    let dir = std::env::temp_dir().join(format!("lmshape-cli-fit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("same.csv");
    let mut text = String::from("params,tokens,loss\n");
    for _ in 0..20 {
        text.push_str("1e9,2e10,2.5\n");
    }
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = run("fit_scaling_law", &[path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("do not constrain the fit"), "{err}");
}

/// The memory verdict: `inspect_config --framework --gpu` adds the reserved and device figures,
/// the verdict and the margin, overall and per stage; `plan --json` candidates carry theirs.
#[test]
fn memory_verdict_keys() {
    let (code, out, err) = run(
        "inspect_config",
        &[
            "--preset",
            "gpt3-175b",
            "--tp",
            "8",
            "--pp",
            "8",
            "--dp",
            "1",
            "--global-batch",
            "8",
            "--framework",
            "megatron-deepspeed",
            "--gpu",
            "a100-80gb",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = &v["memory"]["training"];
    let (total, reserved, device) = (
        t["total_bytes"].as_u64().unwrap(),
        t["reserved_bytes"].as_u64().unwrap(),
        t["device_bytes"].as_u64().unwrap(),
    );
    assert!(total <= reserved && reserved <= device);
    assert!(["fits", "tight", "oom"].contains(&t["verdict"].as_str().unwrap()));
    assert_eq!(t["fits"].as_bool().unwrap(), t["verdict"] == "fits");
    assert_eq!(
        t["margin_bytes"].as_i64().unwrap(),
        (80i64 << 30) - device as i64
    );
    for stage in ["first", "middle", "last"] {
        assert!(
            t["stages"][stage]["device_bytes"].as_u64().is_some(),
            "{stage}"
        );
        assert!(t["stages"][stage]["verdict"].is_string(), "{stage}");
        // Each stage at its peak moment, with the buffers alive then.
        assert!(
            ["backward", "embedding_backward"]
                .contains(&t["stages"][stage]["peak_moment"].as_str().unwrap()),
            "{stage}"
        );
        assert!(
            t["stages"][stage]["transient_bytes"].as_u64().is_some(),
            "{stage}"
        );
    }
    assert_eq!(t["buffers_bytes"], t["transient_bytes"]);
    let (code, out, err) = run("plan", &["--json", "--top", "2"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for c in v.as_array().unwrap() {
        assert!(
            c["memory_device_bytes_per_gpu"].as_u64().unwrap()
                >= c["memory_bytes_per_gpu"].as_u64().unwrap()
        );
        assert_eq!(c["verdict"], "fits");
    }
}

/// `inspect_config --svg` draws the memory picture; `plan --svg --mark` the decision chart.
#[test]
fn pictures_are_drawn() {
    let dir = std::env::temp_dir().join(format!("lmshape-cli-svg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let memory = dir.join("memory.svg");
    let (code, _, err) = run(
        "inspect_config",
        &[
            "--preset",
            "bloom-176b",
            "--tp",
            "4",
            "--pp",
            "12",
            "--dp",
            "8",
            "--embedding-slots",
            "--global-batch",
            "96",
            "--gpu",
            "a100-80gb",
            "--svg",
            memory.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let svg = std::fs::read_to_string(&memory).unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("a100-80gb capacity") && svg.contains("middle stage")
    );
    let chart = dir.join("plan.svg");
    let (code, _, err) = run(
        "plan",
        &["--svg", chart.to_str().unwrap(), "--mark", "14336,70,112"],
    );
    assert_eq!(code, 0, "{err}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.contains("recommended") && svg.contains("marked: 70 layers × 14336 hidden"));
}

/// Hostile command lines end with a message that names what the user typed: a CSV too short
/// for a fit blames the CSV (not `--exclude-highest-loss 0`), an absurd bootstrap size is
/// refused by its flag, a device file is refused as input, FP8 on an A100 names the GPU, and
/// a depth range that would never end is refused before any work.
#[test]
fn hostile_command_lines_get_clear_errors() {
    let dir = std::env::temp_dir().join(format!("lmshape-cli-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let nine = dir.join("nine.csv");
    let rows: String = (0..9)
        .map(|i| {
            format!(
                "{},{},{}\n",
                1e8 * 2f64.powi(i),
                1e9 * 3f64.powi(i),
                3.0 - 0.1 * f64::from(i)
            )
        })
        .collect();
    std::fs::write(&nine, format!("params,tokens,loss\n{rows}")).unwrap();
    let cases: [(&str, Vec<&str>, &str); 5] = [
        (
            "fit_scaling_law",
            vec![nine.to_str().unwrap()],
            "holds 9 runs",
        ),
        (
            "fit_scaling_law",
            vec!["--bootstrap", "1e19"],
            "--bootstrap",
        ),
        ("inspect_config", vec!["/dev/zero"], "larger than 64 MiB"),
        (
            "inspect_config",
            vec!["--gpu", "a100-80gb", "--precision", "fp8"],
            "a100-80gb has no fp8",
        ),
        (
            "enumerate_shapes",
            vec!["--min-layers", "1", "--max-layers", "18446744073709551615"],
            "100,000 depths",
        ),
    ];
    for (name, args, want) in cases {
        let (code, _, err) = run(name, &args);
        assert_eq!(code, 2, "{name} {args:?}: {err}");
        assert!(err.contains(want), "{name} {args:?}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

/// A law fitted to runs travels: `fit_scaling_law --out` writes it, `budget --law-file` plans
/// with it and lands on the law's own optimum for the budget (the fitted law's
/// `compute_optimal`, recomputed here from the file), `enumerate_shapes --law-file` predicts
/// each shape's loss with it, `plan --law-file` aims at its optimum and carries its refits,
/// and `--flops` intervals bracket the point estimate.
#[test]
fn fitted_law_file_round_trips_to_budget() {
    let dir = std::env::temp_dir().join(format!("lmshape-law-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("law.json");
    let path = file.to_str().unwrap();
    let (code, out, err) = run(
        "fit_scaling_law",
        &[
            "--bootstrap",
            "20",
            "--flops",
            "1e23",
            "--out",
            path,
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let fit: serde_json::Value = serde_json::from_str(&out).unwrap();
    let o = &fit["optima"][0];
    assert!(o["params_low"].as_f64() <= o["params"].as_f64());
    assert!(o["params"].as_f64() <= o["params_high"].as_f64());
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let law: lmshape::scaling::ParametricLaw = serde_json::from_value(doc["law"].clone()).unwrap();
    let (code, out, err) = run("budget", &["--law-file", path, "--json"]);
    assert_eq!(code, 0, "{err}");
    let b: serde_json::Value = serde_json::from_str(&out).unwrap();
    let flops = b["compute_flops"].as_f64().unwrap();
    let want = law.compute_optimal(flops).unwrap().params;
    assert_eq!(b["constrained"]["law"], "fitted");
    let got = b["constrained"]["params"].as_f64().unwrap();
    assert!((got / want - 1.0).abs() < 1e-9, "{got} vs {want}");
    let (code, _, err) = run("budget", &["--law-file", path, "--law", "kaplan"]);
    assert_eq!(code, 2, "{err}");
    // enumerate_shapes predicts each shape's loss under the file's law at --tokens: the
    // fitted law's own loss of the shape's total parameters.
    let (code, out, err) = run(
        "enumerate_shapes",
        &[
            "--law-file",
            path,
            "--tokens",
            "3e11",
            "--json",
            "--limit",
            "3",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let shapes: serde_json::Value = serde_json::from_str(&out).unwrap();
    for s in shapes.as_array().unwrap() {
        let n = s["params"].as_f64().unwrap();
        let want = law.loss(n, 3e11).unwrap();
        assert!((s["predicted_loss"].as_f64().unwrap() / want - 1.0).abs() < 1e-12);
    }
    let (code, _, err) = run("enumerate_shapes", &["--moe", "--law-file", path]);
    assert_eq!(code, 2, "{err}");
    // plan aims at the fitted law's own optimum for its budget and carries the refits.
    let (code, out, err) = run(
        "plan",
        &[
            "--law-file",
            path,
            "--token-floor",
            "none",
            "--gpus",
            "64",
            "--weeks",
            "2",
            "--report-json",
            "--top",
            "1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let p: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["request"]["law"]["kind"], "fitted");
    assert_eq!(p["request"]["law_samples"].as_array().unwrap().len(), 20);
    assert_eq!(p["target_binding"], "none");
    let flops = p["budget"]["compute_flops"].as_f64().unwrap();
    let want = law.compute_optimal(flops).unwrap().params;
    let got = p["target_params"].as_f64().unwrap();
    assert!((got / want - 1.0).abs() < 1e-9, "{got} vs {want}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each scenario's printed assumptions are the ones the plan used: the text's "in effect"
/// line and the request the JSON report reads back agree, and every flag still overrides.
#[test]
fn plan_scenarios_use_what_they_print() {
    let small = ["--gpus", "64", "--weeks", "1"];
    for (scenario, vocab, seq, framework, law, kv) in [
        (
            "bloom-2022",
            250880,
            2048,
            "megatron-deepspeed",
            "kaplan",
            None,
        ),
        (
            "dense-2026",
            128256,
            8192,
            "megatron-core",
            "besiroglu",
            Some(8),
        ),
        (
            "moe-2026",
            128256,
            8192,
            "megatron-core",
            "besiroglu",
            Some(8),
        ),
    ] {
        let mut args = vec!["--scenario", scenario, "--report-json"];
        args.extend(small);
        let (code, out, err) = run("plan", &args);
        assert_eq!(code, 0, "{scenario}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let r = &v["request"];
        assert_eq!(v["scenario"], scenario);
        assert_eq!(r["vocab_size"], vocab, "{scenario}");
        assert_eq!(r["seq_len"], seq, "{scenario}");
        assert_eq!(r["framework"], framework, "{scenario}");
        assert_eq!(r["law"]["kind"], law, "{scenario}");
        assert_eq!(r["kv_heads"]["value"].as_u64(), kv, "{scenario}");
        assert_eq!(r["moe"].is_null(), scenario != "moe-2026", "{scenario}");
        let mut args = vec!["--scenario", scenario];
        args.extend(small);
        let (code, out, err) = run("plan", &args);
        assert_eq!(code, 0, "{scenario}: {err}");
        let line = out.lines().find(|l| l.contains("in effect:")).unwrap();
        for want in [
            format!("vocabulary {vocab}"),
            format!("sequence {seq}"),
            format!("under {framework}"),
            format!("law {law}"),
        ] {
            assert!(line.contains(&want), "{scenario}: {want} not in {line}");
        }
    }
    // A flag overrides its scenario's default.
    let (code, out, err) = run(
        "plan",
        &[
            "--scenario",
            "dense-2026",
            "--seq-len",
            "4096",
            "--report-json",
            "--gpus",
            "64",
            "--weeks",
            "1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["request"]["seq_len"], 4096);
    let (code, _, err) = run("plan", &["--scenario", "gpt-1999"]);
    assert_eq!(code, 2);
    assert!(err.contains("bloom-2022"), "{err}");
}

/// A small 2026 plan: the dense scenario on 64 GPUs for a week.
const SMALL_2026: [&str; 6] = ["--scenario", "dense-2026", "--gpus", "64", "--weeks", "1"];

/// One set of defaults: the layout `plan` picks, run through `throughput` and `inspect_config`
/// with the same flags, gives the same step time and the same device memory, under
/// Megatron-Core and under Megatron-DeepSpeed at ZeRO 0 (where every tool takes the optimizer
/// DeepSpeed's engine picks, BF16_Optimizer); and with the setup named by the scenario alone
/// (`--scenario dense-2026` in every tool, no setup flags).
#[test]
fn plan_throughput_and_inspect_agree() {
    const SETUP: [&str; 5] = [
        "--seq-len",
        "8192",
        "--flash",
        "--no-dropout",
        "--sequence-parallel",
    ];
    for (framework, setup) in [
        (
            &["--framework", "megatron-core", "--zero", "1"][..],
            &SETUP[..],
        ),
        (
            &["--framework", "megatron-deepspeed", "--zero", "0"][..],
            &SETUP[..],
        ),
        (&[][..], &["--scenario", "dense-2026"][..]),
    ] {
        let mut args = SMALL_2026.to_vec();
        args.extend(["--json", "--top", "1"]);
        args.extend(framework);
        let (code, out, err) = run("plan", &args);
        assert_eq!(code, 0, "{err}");
        let c: serde_json::Value = serde_json::from_str(&out).unwrap();
        let c = &c[0];
        let n = |k: &str| c[k].as_u64().unwrap().to_string();
        assert_eq!(
            c["embedding_pipeline_slots"], false,
            "pick a shape without slots"
        );
        let dir = std::env::temp_dir().join(format!("lmshape-agree-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.json");
        std::fs::write(
            &config,
            format!(
                r#"{{"model_type":"llama","hidden_size":{},"intermediate_size":{},"num_attention_heads":{},"num_key_value_heads":{},"head_dim":{},"num_hidden_layers":{},"vocab_size":128256,"max_position_embeddings":8192,"tie_word_embeddings":false}}"#,
                n("hidden_size"), n("ffn_size"), n("num_heads"), n("kv_heads"), n("head_dim"), n("num_layers")
            ),
        )
        .unwrap();
        let recompute = c["recompute"].as_str().unwrap().to_string();
        let (tp, pp, dp, mb) = (n("tp"), n("pp"), n("dp"), n("micro_batch"));
        let mut common: Vec<&str> = setup.to_vec();
        common.extend([
            "--tp",
            &tp,
            "--pp",
            &pp,
            "--dp",
            &dp,
            "--micro-batch",
            &mb,
            "--global-batch",
            "1024",
            "--recompute",
            &recompute,
        ]);
        common.extend(framework);
        let path = config.to_str().unwrap();
        let mut t = vec!["--config", path, "--json"];
        t.extend(&common);
        let (code, out, err) = run("throughput", &t);
        assert_eq!(code, 0, "{err}");
        let th: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut i = vec![path, "--gpu", "a100-80gb", "--json"];
        i.extend(&common);
        let (code, out, err) = run("inspect_config", &i);
        assert_eq!(code, 0, "{err}");
        let ins: serde_json::Value = serde_json::from_str(&out).unwrap();
        let step = c["step_seconds"].as_f64().unwrap();
        assert!(
            (th["step_seconds"].as_f64().unwrap() / step - 1.0).abs() < 1e-9,
            "{framework:?}"
        );
        let device = c["memory_device_bytes_per_gpu"].as_u64().unwrap();
        assert_eq!(
            th["memory_device_bytes"].as_u64().unwrap(),
            device,
            "{framework:?}"
        );
        assert_eq!(
            ins["memory"]["training"]["device_bytes"].as_u64().unwrap(),
            device,
            "{framework:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `plan --serve-tokens` serves the shapes equivalent to the best on the same machine and
/// ranks them by training plus serving GPU-hours, cheapest first; on the analytical machine
/// (no measured kernels) it refuses, naming why.
#[test]
fn plan_prices_serving() {
    let mut args = SMALL_2026.to_vec();
    args.extend(["--serve-tokens", "1e12"]);
    let (code, out, err) = run("plan", &args);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<f64> = out
        .lines()
        .skip_while(|l| !l.contains("== training plus serving"))
        .skip(2)
        .take_while(|l| !l.contains("cheapest in total"))
        .filter_map(|l| l.split_whitespace().nth(7).map(str::to_string))
        .map(|h| {
            let (num, unit) = h.split_at(h.len() - 1);
            num.parse::<f64>().unwrap()
                * match unit {
                    "K" => 1e3,
                    "M" => 1e6,
                    "B" => 1e9,
                    _ => panic!("{h}"),
                }
        })
        .collect();
    assert!(!rows.is_empty(), "{out}");
    assert!(rows.windows(2).all(|w| w[0] <= w[1]), "{rows:?}");
    assert!(
        out.contains("Sardana et al. 2023 for the same loss"),
        "{out}"
    );
    let (code, _, err) = run(
        "plan",
        &[
            "--gpus",
            "64",
            "--weeks",
            "1",
            "--system",
            "analytical",
            "--serve-tokens",
            "1e12",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("measured machine profile"), "{err}");
}

/// A scenario names the same training setup in every tool: `inspect_config` and `throughput`
/// under `--scenario dense-2026` report Megatron-Core at sequence 8192 and name the scenario;
/// and `throughput` starts a model of the user's from one GPU, as `inspect_config` does.
#[test]
fn scenarios_and_defaults_agree_across_tools() {
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/configs/llama-2-7b.json"
    );
    let (code, out, err) = run(
        "inspect_config",
        &[config, "--scenario", "dense-2026", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["scenario"], "dense-2026");
    assert_eq!(v["memory"]["training"]["framework"], "megatron-core");
    let (code, out, err) = run(
        "throughput",
        &["--config", config, "--scenario", "dense-2026", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let t: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(t["scenario"], "dense-2026");
    assert_eq!(t["framework"], "megatron-core");
    assert_eq!(t["layout"]["seq_len"], 8192);
    assert_eq!(t["gpus"], 1);
    let (code, out, err) = run("throughput", &["--config", config, "--json"]);
    assert_eq!(code, 0, "{err}");
    let t: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (t["gpus"].as_u64(), t["layout"]["pp"].as_u64()),
        (Some(1), Some(1))
    );
    let (code, _, err) = run("throughput", &["--scenario", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown scenario"), "{err}");
}
