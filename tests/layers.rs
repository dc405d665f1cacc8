//! The crate's layers (see the crate docs, "Layers"): each top-level module may refer only to
//! the modules below it. This test reads every source file's `crate::` paths (outside
//! comments and unit tests) and fails on a reference the table does not allow, so an import
//! circle cannot come back unnoticed.

use std::collections::BTreeMap;
use std::path::Path;

/// What each top-level module may refer to (besides itself). `params` is the model's counts
/// (`model::params`, re-exported at the top).
const ALLOWED: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("numeric", &["error"]),
    ("checked", &["error"]),
    ("model", &["error", "numeric", "params"]),
    ("parallel", &["error", "checked", "model", "params"]),
    ("flops", &["error", "model", "params", "parallel"]),
    ("hardware", &["error", "numeric"]),
    ("framework", &["error", "parallel"]),
    ("system", &["error", "numeric", "hardware"]),
    (
        "memory",
        &[
            "error",
            "numeric",
            "model",
            "params",
            "parallel",
            "flops",
            "hardware",
            "framework",
        ],
    ),
    (
        "step",
        &[
            "error",
            "numeric",
            "model",
            "params",
            "parallel",
            "flops",
            "hardware",
            "framework",
            "memory",
            "system",
        ],
    ),
    ("heuristics", &["error", "model", "params"]),
    ("presets", &["error", "model", "heuristics"]),
    (
        "search",
        &[
            "error",
            "checked",
            "model",
            "params",
            "parallel",
            "flops",
            "heuristics",
        ],
    ),
    (
        "scaling",
        &["error", "numeric", "model", "params", "parallel"],
    ),
    (
        "plan",
        &[
            "error",
            "checked",
            "numeric",
            "model",
            "params",
            "parallel",
            "flops",
            "hardware",
            "framework",
            "memory",
            "system",
            "step",
            "heuristics",
            "presets",
            "search",
            "scaling",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The `crate::name` references of a line of code (comments cut off).
fn references(line: &str) -> Vec<String> {
    let code = match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    };
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.push(name);
        rest = after;
    }
    out
}

#[test]
fn modules_refer_only_to_lower_layers() {
    let mut allowed: BTreeMap<&str, Vec<&str>> =
        ALLOWED.iter().map(|&(m, a)| (m, a.to_vec())).collect();
    // Serving sits on the step model: what `step` may use, and `step` itself.
    let serve: Vec<&str> = allowed["step"].iter().copied().chain(["step"]).collect();
    allowed.insert("serve", serve);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut broken = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        // The crate root, and the `lmshape` command (a binary over the examples, not a layer).
        if top == "lib" || top == "bin" {
            continue;
        }
        let may = allowed
            .get(top.as_str())
            .unwrap_or_else(|| panic!("module {top} is missing from the layer table"));
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests (at the end of a file) may use anything.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            for name in references(line) {
                let ok = name == top
                    || may.contains(&name.as_str())
                    || (top == "model" && name == "params");
                if !ok {
                    broken.push(format!(
                        "{}:{}: {top} refers to crate::{name}",
                        rel.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layer rules broken:\n{}",
        broken.join("\n")
    );
}

/// The table itself has no cycle: ordering the modules so that each comes after everything it
/// may refer to succeeds (`params` counts as `model`, its home).
#[test]
fn layer_table_is_acyclic() {
    let home = |m: &str| if m == "params" { "model" } else { m }.to_string();
    let mut left: Vec<(String, Vec<String>)> = ALLOWED
        .iter()
        .map(|(m, deps)| {
            let deps = deps.iter().map(|d| home(d)).filter(|d| d != m).collect();
            (m.to_string(), deps)
        })
        .collect();
    let mut placed: Vec<String> = Vec::new();
    while !left.is_empty() {
        let Some(i) = left
            .iter()
            .position(|(_, deps)| deps.iter().all(|d| placed.contains(d)))
        else {
            panic!(
                "cycle among {:?}",
                left.iter().map(|(m, _)| m).collect::<Vec<_>>()
            );
        };
        placed.push(left.remove(i).0);
    }
}
