//! Every public entry point on arbitrary input: the Hugging Face config reader, parameter
//! counts (also of models built field by field, unvalidated), FLOPs, training and inference
//! memory, step time, shape enumeration, a small plan, scaling-law fits with their bootstrap,
//! measured-table timers, serving on the shipped machine profiles, and the scaling functions
//! at the edges of `f64`. Each must return
//! `Ok` or a typed error; a panic, an overflow trap or a hang is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmshape::hardware::{AnalyticalTimer, GpuSpec};
use lmshape::memory::{self, InferenceQuery, MemoryOptions};
use lmshape::search::ShapeSpace;
use lmshape::step::{self, Cluster, StepOptions};
use lmshape::{Architecture, ParallelLayout, Recompute, Schedule, Transformer, ZeroStage, flops};

/// Reads little numbers off the input, then zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// A value of up to `bytes` bytes, often small, sometimes huge.
    fn u64(&mut self, bytes: usize) -> u64 {
        (0..bytes).fold(0u64, |acc, _| (acc << 8) | u64::from(self.u8()))
    }

    fn f64(&mut self) -> f64 {
        f64::from_bits(self.u64(8))
    }
}

/// A layout from the bytes, through the public builder (`None` when it breaks a rule).
fn layout(b: &mut Bytes) -> Option<ParallelLayout> {
    ParallelLayout::builder()
        .tp(b.u64(1))
        .pp(b.u64(1))
        .dp(b.u64(2))
        .sequence_parallel(b.u8() & 1 == 1)
        .zero(ZeroStage::from_number(u64::from(b.u8() % 4)).unwrap_or_default())
        .micro_batch(b.u64(1))
        .global_batch(b.u64(3))
        .seq_len(b.u64(2))
        .recompute(
            [Recompute::None, Recompute::Selective, Recompute::Full][usize::from(b.u8() % 3)],
        )
        .schedule(match b.u8() % 3 {
            0 => Schedule::OneFOneB,
            _ => Schedule::Interleaved {
                virtual_stages: b.u64(1),
            },
        })
        .embedding_pipeline_slots(b.u8() & 1 == 1)
        .balanced_pipeline(b.u8() & 1 == 1)
        .first_stage_layers(match b.u8() % 3 {
            0 => None,
            _ => Some(b.u64(1)),
        })
        .last_stage_layers(match b.u8() % 3 {
            0 => None,
            _ => Some(b.u64(1)),
        })
        .cp(b.u64(1))
        .cp_comm(if b.u8() & 1 == 1 {
            lmshape::parallel::CpComm::A2a
        } else {
            lmshape::parallel::CpComm::P2p
        })
        .ep(b.u64(1))
        .etp(match b.u8() % 2 {
            0 => None,
            _ => Some(b.u64(1)),
        })
        .build()
        .ok()
}

fn model(b: &mut Bytes) -> Option<Transformer> {
    let arch = [
        Architecture::gpt2(),
        Architecture::llama(),
        Architecture::bloom(),
        Architecture::gpt_neox(),
        Architecture::falcon(),
    ][usize::from(b.u8() % 5)];
    let heads = b.u64(1);
    Transformer::builder()
        .vocab_size(b.u64(3))
        .hidden_size(b.u64(2))
        .num_layers(b.u64(1))
        .num_heads(heads)
        .num_kv_heads(b.u64(1))
        .head_dim(b.u64(2))
        .ffn_size(b.u64(3))
        .max_positions(b.u64(2))
        .arch(arch)
        .build()
        .ok()
}

fn exercise_model(m: &Transformer, b: &mut Bytes) {
    let _ = m.param_counts();
    let _ = flops::summary(m, b.u64(2));
    let Some(l) = layout(b) else {
        return;
    };
    // The layout's serde form obeys the same rules as its builder.
    let text = serde_json::to_string(&l).unwrap_or_default();
    assert_eq!(serde_json::from_str::<ParallelLayout>(&text).ok(), Some(l));
    let framework = memory::Framework::ALL[usize::from(b.u8() % 4)];
    let profile = memory::FrameworkProfile::of(framework);
    let opts = profile.memory_options(&MemoryOptions::default());
    let report = memory::training_memory(m, &l, &opts);
    if let Ok(report) = &report {
        if let Ok(d) = profile.most_loaded(report) {
            let _ = d.verdict(b.u64(6));
        }
    }
    // Checked once, the pair gives the same figures.
    if let Ok(placed) = lmshape::parallel::Placement::new(m, &l) {
        assert_eq!(memory::training_memory_placed(&placed, &opts), report);
        let _ = memory::least_recompute_placed(&placed, &opts, &profile, b.u64(6), 0.9);
    }
    let q = InferenceQuery {
        batch: b.u64(2),
        context: b.u64(3),
        weight_bytes: b.u64(1),
        kv_bytes: b.u64(1),
        tp: b.u64(1),
        pp: b.u64(1),
    };
    let _ = memory::inference_memory(m, &q);
    let _ = memory::max_inference_batch(m, &q, b.u64(6));
    // Step time only for modest models, so one input stays fast.
    if m.num_layers() <= 64 && l.global_batch() <= 4096 {
        let mut cluster = Cluster::selene();
        if b.u8() & 1 == 1 {
            cluster.inter_node_bytes_per_s = b.f64();
            cluster.software_efficiency = b.f64();
            cluster.collective_latency_seconds = b.f64();
        }
        let timer = AnalyticalTimer::new(GpuSpec::a100_80gb());
        let _ = step::step_time(m, &l, &cluster, &timer, &StepOptions::default());
    }
}

/// A law file read from arbitrary text, and the optimum's interval at an arbitrary budget.
fn exercise_law_file(b: &mut Bytes) {
    let flops = b.f64();
    if let Ok(text) = std::str::from_utf8(b.0) {
        if let Ok(file) = lmshape::scaling::LawFile::from_json(text) {
            let _ = file.optimum(flops);
        }
    }
}

/// A parametric fit on a few arbitrary runs from a small grid, then its bootstrap.
fn exercise_fit(b: &mut Bytes) {
    let n = 10 + usize::from(b.u8() % 6);
    let runs: Vec<lmshape::scaling::Run> = (0..n)
        .filter_map(|_| lmshape::scaling::Run::new(b.f64(), b.f64(), b.f64()).ok())
        .collect();
    let opts = lmshape::scaling::FitOptions {
        alpha_grid: vec![b.f64()],
        beta_grid: vec![0.3],
        e_grid: vec![b.f64()],
        a_grid: vec![5.0],
        b_grid: vec![b.f64()],
        max_iters: 1 + b.u64(1),
        threads: 1,
        ..Default::default()
    };
    if let Ok(fit) = lmshape::scaling::fit_parametric(&runs, &opts) {
        let _ = lmshape::scaling::bootstrap_standard_errors(
            &runs,
            &fit,
            &opts,
            2 + usize::from(b.u8() % 4),
            1,
        );
        let _ = fit.law.compute_optimal(b.f64());
    }
    let _ = lmshape::scaling::runs_from_csv(&String::from_utf8_lossy(b.0));
}

/// A measured table from arbitrary entries, asked for exact and missing shapes.
fn exercise_table(b: &mut Bytes) {
    use lmshape::hardware::{Gemm, GemmTimer, Missing, TableTimer};
    let entries: Vec<String> = (0..usize::from(b.u8() % 12))
        .map(|_| {
            format!(
                r#"{{"m":{},"n":{},"k":{},"batch":{},"dtype":"bf16","seconds":{:e}}}"#,
                b.u64(2),
                b.u64(2),
                b.u64(2),
                b.u64(1),
                f64::from(b.u8()) * 1e-6
            )
        })
        .collect();
    let text = format!(r#"{{"gpu":"a100-80gb","entries":[{}]}}"#, entries.join(","));
    if let Ok(t) = TableTimer::from_json(&text, Missing::ScaleNearest) {
        for _ in 0..4 {
            let _ = t.gemm_seconds(&Gemm::bf16(b.u64(3), b.u64(3), b.u64(3)));
        }
        let _ = t.check_gpu(&GpuSpec::h100_sxm());
        let m = lmshape::presets::by_name("gpt3-small");
        if let Ok(m) = m {
            let l = ParallelLayout::default();
            let _ = step::step_time(&m, &l, &Cluster::selene(), &t, &StepOptions::default());
        }
    }
}

/// A model built field by field through the public builder (and its serde form), then
/// counted and estimated when it builds.
fn exercise_literal(b: &mut Bytes) {
    let builder = Transformer::builder()
        .vocab_size(b.u64(2))
        .hidden_size(b.u64(2))
        .num_layers(b.u64(1))
        .num_heads(b.u64(1))
        .num_kv_heads(b.u64(1))
        .head_dim(b.u64(1))
        .ffn_size(b.u64(2))
        .max_positions(b.u64(2))
        .arch(Architecture::llama())
        .moe((b.u8() & 1 == 1).then(|| lmshape::model::Moe {
            num_experts: b.u64(1),
            top_k: b.u64(1),
            layer_period: b.u64(1),
            ..lmshape::model::Moe::routed(1, 1, 1)
        }));
    let via_serde = serde_json::to_string(&builder)
        .ok()
        .and_then(|t| serde_json::from_str::<Transformer>(&t).ok());
    let Ok(m) = builder.build() else {
        assert!(via_serde.is_none());
        return;
    };
    assert_eq!(via_serde, Some(m));
    let _ = m.param_counts();
    let _ = m.total_params();
    let _ = flops::summary(&m, b.u64(2));
    if let Some(l) = layout(b) {
        let _ = memory::training_memory(&m, &l, &MemoryOptions::default());
    }
}

/// Serving a model built from numbers on a shipped machine profile, with an arbitrary
/// deployment and workload.
fn exercise_serve(b: &mut Bytes) {
    use lmshape::serve::{Batching, Deployment, KvCacheDtype, WeightPrecision, Workload};
    let names = lmshape::system::SYSTEM_NAMES;
    let Ok(profile) =
        lmshape::system::SystemProfile::shared(names[usize::from(b.u8()) % names.len()])
    else {
        return;
    };
    let Some(m) = model(b) else { return };
    let weights = [
        WeightPrecision::Bf16,
        WeightPrecision::Fp8,
        WeightPrecision::Fp8Block,
        WeightPrecision::Nvfp4,
        WeightPrecision::Mxfp4,
    ];
    let d = Deployment {
        tp: b.u64(1),
        pp: b.u64(1),
        ep: b.u64(1),
        attention_dp: b.u64(1),
        weights: weights[usize::from(b.u8()) % weights.len()],
        kv_cache: if b.u8() & 1 == 1 {
            KvCacheDtype::Fp8
        } else {
            KvCacheDtype::Bf16
        },
        kv_block_tokens: b.u64(1),
        memory_utilization: b.f64(),
    };
    let w = Workload {
        isl: b.u64(3),
        osl: b.u64(3),
        concurrency: (b.u8() & 1 == 1).then(|| b.u64(2)),
        prefill_chunk_tokens: b.u64(2),
        batching: if b.u8() & 1 == 1 {
            Batching::Static
        } else {
            Batching::Continuous
        },
    };
    let _ = lmshape::serve::serve(&m, &profile, &d, &w);
}

/// The scaling functions at arbitrary floats.
fn exercise_floats(b: &mut Bytes) {
    use lmshape::scaling;
    let _ = scaling::training_flops(b.f64(), b.f64(), b.f64());
    let _ = scaling::gpu_hours_for(b.f64(), b.f64(), b.f64());
    let _ = scaling::tokens_for_flops(b.f64(), b.f64());
    let _ = scaling::PowerLawFrontier::KAPLAN.optimal(b.f64());
    let k = scaling::KaplanLaw {
        n_c: b.f64(),
        alpha_n: b.f64(),
        d_c: b.f64(),
        alpha_d: b.f64(),
    };
    let _ = k.loss(b.f64(), b.f64());
    if let Ok(law) = scaling::ParametricLaw::new(b.f64(), b.f64(), b.f64(), b.f64(), b.f64()) {
        let _ = law.compute_optimal(b.f64());
        let _ = law.tokens_for_loss(b.f64(), b.f64());
        let _ = law.inference_optimal(b.f64(), b.f64());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    match b.u8() % 10 {
        9 => exercise_law_file(&mut b),
        8 => exercise_serve(&mut b),
        4 => exercise_fit(&mut b),
        5 => exercise_table(&mut b),
        6 => exercise_literal(&mut b),
        7 => exercise_floats(&mut b),
        // A config text: the reader, then everything downstream of the model it gives.
        0 => {
            if let Ok(text) = std::str::from_utf8(b.0) {
                if let Ok(m) = lmshape::model::hf::from_hf_config_str(text) {
                    let mut rest = Bytes(text.as_bytes());
                    exercise_model(&m, &mut rest);
                }
                if let Ok(c) = lmshape::model::hf::checkpoint_from_hf_config_str(text) {
                    let _ = c.param_counts();
                    if let Some(v) = c.vision {
                        let _ = v.forward_flops_per_image(v.image_side());
                    }
                }
                let _ = serde_json::from_str::<Transformer>(text);
                let _ = serde_json::from_str::<ParallelLayout>(text);
            }
        }
        // A model built from numbers, sometimes with experts or latent attention.
        1 => {
            if let Some(mut m) = model(&mut b) {
                match b.u8() % 3 {
                    1 => {
                        let moe = lmshape::model::Moe {
                            num_shared_experts: b.u64(1),
                            shared_ffn_size: b.u64(2),
                            first_dense_layers: b.u64(1),
                            layer_period: b.u64(1),
                            ..lmshape::model::Moe::routed(b.u64(1), b.u64(1), b.u64(2))
                        };
                        if let Ok(x) = m.with_moe(moe) {
                            m = x;
                        }
                    }
                    2 => {
                        let mla = lmshape::model::LatentAttention {
                            q_lora_rank: (b.u8() & 1 == 1).then(|| b.u64(2)),
                            kv_lora_rank: b.u64(2),
                            qk_nope_head_dim: b.u64(1),
                            qk_rope_head_dim: b.u64(1),
                            v_head_dim: b.u64(1),
                        };
                        if let Ok(x) = m.with_latent_attention(mla) {
                            m = x;
                        }
                    }
                    _ => {}
                }
                exercise_model(&m, &mut b);
            }
        }
        // Shape enumeration on a small, arbitrary space.
        2 => {
            let built = ShapeSpace::around(
                b.u64(4),
                f64::from(b.u8()) / 256.0,
                Architecture::llama(),
                b.u64(3),
            )
            .map(|s| {
                s.to_builder()
                    .tp(b.u64(1))
                    .pp(b.u64(1))
                    .hidden_multiple(b.u64(2))
                    .embedding_pipeline_slots(b.u8() & 1 == 1)
                    .max_layers(b.u64(1))
                    .balanced_pipeline(b.u8() & 1 == 1)
            });
            let text = serde_json::to_string(&built.as_ref().ok()).unwrap_or_default();
            let via_serde = serde_json::from_str::<Option<ShapeSpace>>(&text)
                .ok()
                .flatten();
            // The serde form obeys the same rules as the builder.
            let result = built.and_then(|b| b.build());
            assert_eq!(via_serde.is_some(), result.is_ok());
            if let Ok(s) = result {
                let _ = s.check(b.u64(1), b.u64(2), b.u64(1));
                if let Ok(it) = s.iter() {
                    for _ in it.take(200) {}
                }
                let moe = lmshape::search::MoeSpace {
                    num_experts: vec![b.u64(1)],
                    granularities: vec![b.u64(1)],
                    shared_experts: vec![b.u64(1)],
                    ep: b.u64(1),
                    etp: b.u64(1),
                    ..lmshape::search::MoeSpace::new(s)
                };
                if let Ok(it) = moe.iter() {
                    for _ in it.take(50) {}
                }
            }
        }
        // A small plan.
        _ => {
            let lo = 1_000_000 + b.u64(3);
            let mut req = lmshape::PlanRequest::builder(
                Cluster::selene(),
                1 + b.u64(1) % 16,
                b.f64(),
                Architecture::llama(),
                1 + b.u64(2),
            )
            .param_range(Some((lo, lo + b.u64(2) * 16)))
            .global_batch(b.u64(1))
            .seq_len(b.u64(2))
            .token_floor(match b.u8() % 2 {
                0 => None,
                _ => Some(b.f64()),
            })
            .balanced_pipeline(b.u8() & 1 == 1)
            .cp_options(vec![b.u64(1)])
            .virtual_stage_options(vec![b.u64(1)]);
            if b.u8() & 1 == 1 {
                req = req.moe(Some(lmshape::plan::MoeSearch {
                    num_experts: vec![b.u64(1)],
                    granularities: vec![b.u64(1)],
                    ep_options: vec![b.u64(1)],
                    backbones: 2,
                    ..lmshape::plan::MoeSearch::default()
                }));
            }
            // The serde form obeys the same rules as the builder.
            let text = serde_json::to_string(&req).unwrap_or_default();
            let via_serde = serde_json::from_str::<lmshape::PlanRequest>(&text).ok();
            let Ok(req) = req.build() else {
                assert!(via_serde.is_none());
                return;
            };
            // (Equal up to the last digit serde_json's float parsing may round.)
            assert!(via_serde.is_some());
            let timer = AnalyticalTimer::new(GpuSpec::a100_80gb());
            if let Ok(mut p) = lmshape::plan::plan(&req, &timer) {
                let order = lmshape::plan::EquivalentOrder::ALL[usize::from(b.u8() % 5)];
                lmshape::plan::order_equivalents(&mut p.candidates, order);
                for c in p.candidates.iter().take(3) {
                    let _ = c.record();
                }
            }
        }
    }
});
