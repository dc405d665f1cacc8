//! Inspect a Hugging Face `config.json`: exact parameters per component and FLOPs per token.
//!
//! `cargo run --release --example inspect_config -- PATH/config.json [--seq-len S] [--json]`
//! (without PATH: the bundled `examples/configs/llama-2-7b.json`).

mod common;

use common::{Args, die, grouped, or_die, si};
use lmshape::flops::{self, FlopsConvention, ParamBasis};
use lmshape::model::hf::from_hf_config_str;
use lmshape::{Recompute, Transformer};
use serde_json::json;

const USAGE: &str = "usage: inspect_config [PATH/config.json] [--seq-len S] [--json]";
const DEFAULT_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/configs/llama-2-7b.json"
);

fn main() {
    let args = Args::parse(&["seq-len"], &["json"], USAGE);
    let path = args
        .positional
        .first()
        .cloned()
        .unwrap_or_else(|| DEFAULT_CONFIG.to_string());
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| die(&format!("cannot read {path}: {e}")));
    let model = or_die(from_hf_config_str(&text));
    let seq = args.get_u64("seq-len", model.max_positions);
    let report = or_die(Report::new(&model, seq));
    if args.flag("json") {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).unwrap()
        );
    } else {
        report.print(&path);
    }
}

struct Report {
    model: Transformer,
    counts: lmshape::ParamCounts,
    seq: u64,
    matmul: lmshape::TokenFlops,
    summary: flops::FlopsSummary,
    palm_non_embedding: f64,
    causal: lmshape::TokenFlops,
}

impl Report {
    fn new(model: &Transformer, seq: u64) -> lmshape::Result<Report> {
        let conv = FlopsConvention::megatron(seq, Recompute::None);
        Ok(Report {
            model: *model,
            counts: model.param_counts()?,
            seq,
            matmul: flops::matmul_flops_per_token(model, &conv)?,
            summary: flops::summary(model, seq)?,
            palm_non_embedding: flops::palm_flops_per_token(
                model,
                seq,
                ParamBasis::NonEmbedding,
                false,
            )?,
            causal: flops::matmul_flops_per_token(
                model,
                &FlopsConvention {
                    causal: true,
                    ..conv
                },
            )?,
        })
    }

    fn to_json(&self) -> serde_json::Value {
        let c = &self.counts;
        let s = &self.summary;
        json!({
            "model": self.model,
            "params": {
                "total": c.total_params,
                "non_embedding": c.non_embedding_params,
                "embedding": c.embedding_params,
                "token_embedding": c.token_embedding_params,
                "position_embedding": c.position_embedding_params,
                "embedding_norm": c.embedding_norm_params,
                "embedding_projection": c.embedding_projection_params,
                "attention": c.attention_params,
                "mlp": c.mlp_params,
                "layer_norms": c.layer_norm_params,
                "final_norm": c.final_norm_params,
                "output_head": c.output_head_params,
                "per_layer": c.layer.total_params(),
            },
            "flops_per_token": {
                "seq_len": self.seq,
                "convention": "every matmul of the layers and the logits, full attention, backward = 2x forward (Narayanan et al. 2021 derivation of eq. 3)",
                "forward": self.matmul.forward_flops,
                "training": self.matmul.model_flops(),
                "training_causal": self.causal.model_flops(),
                "kaplan_forward": s.kaplan_forward,
                "kaplan_training": s.kaplan_training,
                "palm_model": s.palm_model,
                "palm_model_non_embedding": self.palm_non_embedding,
                "megatron_full_recompute": s.megatron_full_recompute,
                "chinchilla_forward": s.chinchilla.forward_flops,
                "chinchilla_training": s.chinchilla.model_flops(),
            },
        })
    }

    fn print(&self, path: &str) {
        let m = &self.model;
        let c = &self.counts;
        println!("{path}");
        println!(
            "  vocab {}  hidden {}  layers {}  heads {} (kv {}, dim {})  ffn {}  positions {}",
            m.vocab_size,
            m.hidden_size,
            m.num_layers,
            m.num_heads,
            m.num_kv_heads,
            m.head_dim,
            m.ffn_size,
            m.max_positions
        );
        println!(
            "  mlp {:?}  norm {:?}  position {:?}  biases {:?}  tied {}  block {:?}",
            m.arch.mlp,
            m.arch.norm,
            m.arch.position,
            m.arch.biases,
            m.arch.tied_embeddings,
            m.arch.block
        );
        println!("\nparameters");
        let rows = [
            ("token embedding", c.token_embedding_params),
            ("position embedding", c.position_embedding_params),
            ("embedding norm", c.embedding_norm_params),
            ("embedding projections", c.embedding_projection_params),
            ("attention", c.attention_params),
            ("mlp", c.mlp_params),
            ("layer norms", c.layer_norm_params),
            ("final norm", c.final_norm_params),
            ("output head (untied)", c.output_head_params),
        ];
        for (name, n) in rows {
            println!("  {name:<24}{:>20}  {:>8}", grouped(n), si(n as f64));
        }
        println!(
            "  {:<24}{:>20}  {:>8}",
            "total",
            grouped(c.total_params),
            si(c.total_params as f64)
        );
        println!(
            "  {:<24}{:>20}  {:>8}",
            "non-embedding (Kaplan N)",
            grouped(c.non_embedding_params),
            si(c.non_embedding_params as f64)
        );
        let s = &self.summary;
        println!("\nFLOPs per token at context {}", self.seq);
        let rows = [
            ("matmul forward", self.matmul.forward_flops),
            ("matmul training (3x)", self.matmul.model_flops()),
            ("  same, causal attention", self.causal.model_flops()),
            ("Kaplan forward", s.kaplan_forward),
            ("Kaplan training", s.kaplan_training),
            ("PaLM model FLOPs", s.palm_model),
            ("Megatron eq.3 (recompute)", s.megatron_full_recompute),
            ("Chinchilla app. F", s.chinchilla.model_flops()),
        ];
        for (name, f) in rows {
            println!("  {name:<28}{f:>14.4e}");
        }
    }
}
