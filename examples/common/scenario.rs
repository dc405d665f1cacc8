//! Named sets of assumptions (`--scenario NAME`): each flag's default under it. The planner
//! takes every assumption; `throughput` and `inspect_config` take the training setup
//! ([`SETUP_FLAGS`]), so the same scenario means the same framework, optimizer, context,
//! attention kernel, parallelism and recomputation in every tool.

/// A named set of assumptions: each flag's default under it.
pub struct Scenario {
    /// The name `--scenario` takes.
    pub name: &'static str,
    /// What it assumes, in words.
    pub about: &'static str,
    /// `(flag id, value)` defaults.
    pub defaults: &'static [(&'static str, &'static str)],
}

/// Llama-3-style dense training as teams run it in 2026: grouped-query attention (8 kv heads),
/// SwiGLU with a 3.5·d FFN, rotary positions, a 128k vocabulary, sequence 8192,
/// FlashAttention without dropout, Megatron-Core with the distributed optimizer and sequence
/// parallelism, the least recomputation that fits, no token floor, the Besiroglu refit, and the
/// budget at the pick's predicted MFU.
const DENSE_2026: &[(&str, &str)] = &[
    ("framework", "megatron-core"),
    ("zero", "1"),
    ("arch", "llama"),
    ("vocab", "128256"),
    ("seq_len", "8192"),
    ("kv_heads", "8"),
    ("ffn", "3.5d"),
    ("flash", "true"),
    ("no_dropout", "true"),
    ("sequence_parallel", "true"),
    ("recompute", "auto"),
    ("token_floor", "none"),
    ("law", "besiroglu"),
    ("global_batch", "1024"),
    ("mfu", "predicted"),
];

/// The scenarios, the first the planner's default.
pub const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "bloom-2022",
        about: "BigScience's 2022 decision: BLOOM architecture (ALiBi, GELU, vocabulary 250880), sequence 2048, Megatron-DeepSpeed with bf16 at ZeRO 0 (DeepSpeed's BF16_Optimizer), full recomputation, standard attention with dropout, a 350B-token floor, Kaplan's law",
        defaults: &[("framework", "megatron-deepspeed")],
    },
    Scenario {
        name: "dense-2026",
        about: "a Llama-3-style dense run: GQA with 8 kv heads, SwiGLU FFN 3.5d, RoPE, vocabulary 128256, sequence 8192, FlashAttention, no dropout, Megatron-Core with the distributed optimizer (ZeRO 1) and sequence parallelism, the least recomputation that fits, no token floor, the Besiroglu refit, the budget at the pick's predicted MFU",
        defaults: DENSE_2026,
    },
    Scenario {
        name: "moe-2026",
        about: "dense-2026 with fine-grained mixture-of-experts variants of the best dense shapes",
        defaults: DENSE_2026,
    },
];

/// The flags of the training setup, the part of a scenario every tool takes (the model's own
/// flags differ between tools: the planner searches shapes, the others read one model).
pub const SETUP_FLAGS: [&str; 7] = [
    "framework",
    "zero",
    "seq_len",
    "flash",
    "no_dropout",
    "sequence_parallel",
    "recompute",
];

/// The scenario the command line names (`--scenario NAME`), read before the flags so that its
/// defaults become theirs; `None` when it names none.
pub fn given<T: clap::CommandFactory>() -> Option<&'static Scenario> {
    let named = super::flag_value("--scenario")?;
    Some(
        SCENARIOS
            .iter()
            .find(|s| s.name == named)
            .unwrap_or_else(|| {
                super::cli::usage_error::<T>(format!(
                    "unknown scenario {named:?} (known: {})",
                    SCENARIOS.map(|s| s.name).join(", ")
                ))
            }),
    )
}

/// [`given`], or the planner's default scenario.
pub fn named<T: clap::CommandFactory>() -> &'static Scenario {
    given::<T>().unwrap_or(&SCENARIOS[0])
}

/// The setup defaults of `scenario` ([`SETUP_FLAGS`]) after `base`, for a tool that reads one
/// model: the scenario's replace the tool's own where both set a flag.
pub fn setup_defaults(
    base: &[(&'static str, &'static str)],
    scenario: Option<&Scenario>,
) -> Vec<(&'static str, &'static str)> {
    let mut out = base.to_vec();
    if let Some(s) = scenario {
        out.extend(
            s.defaults
                .iter()
                .filter(|(id, _)| SETUP_FLAGS.contains(id))
                .copied(),
        );
    }
    out
}

/// The setup a tool runs under `scenario`, as the flags leave it, in one line.
pub fn setup_line(
    scenario: &Scenario,
    setup: &super::cli::SetupArgs,
    layout: &super::cli::LayoutArgs,
    seq_len: &str,
) -> String {
    format!(
        "== scenario {}: the training setup in effect: {} under {}, ZeRO {}, sequence {seq_len}, {}{}{}, recompute {}",
        scenario.name,
        setup
            .optimizer
            .map_or("the engine's optimizer".to_string(), |o| format!(
                "{o} optimizer"
            )),
        setup.framework,
        layout.zero.number(),
        if setup.flash {
            "FlashAttention"
        } else {
            "standard attention"
        },
        if setup.no_dropout {
            ", no dropout"
        } else {
            ", dropout"
        },
        if layout.sequence_parallel {
            ", sequence parallelism"
        } else {
            ""
        },
        clap::ValueEnum::to_possible_value(&layout.recompute)
            .map_or_else(String::new, |v| v.get_name().to_string()),
    )
}
