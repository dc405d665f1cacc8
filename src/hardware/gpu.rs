//! GPU presets: the facts a model of speed and memory needs.
//!
//! Sources: NVIDIA A100 Tensor Core GPU Architecture whitepaper
//! (2020) and A100 datasheet (80GB: 2,039 GB/s), NVIDIA H100 Tensor Core GPU Architecture
//! whitepaper (2022; SXM5: 132 SMs, 989.4 dense BF16 TFLOP/s, 3.35 TB/s), NVIDIA H200 datasheet
//! (2024; 141 GB HBM3e, 4.8 TB/s, same GH100 compute as H100 SXM), NVIDIA H100 PCIe datasheet
//! (114 SMs, 756 dense BF16 TFLOP/s, 2.0 TB/s HBM2e), NVIDIA DGX B200 datasheet (8 B200: 72
//! PFLOPS FP8 training with sparsity, 1,440 GB HBM3e, 64 TB/s, NVLink 5 at 1.8 TB/s per GPU,
//! 8 × 400 Gb/s ConnectX-7 for the compute fabric), NVIDIA GB200 NVL72 datasheet (72 Blackwell
//! GPUs in one NVLink domain: 720 PFLOPS FP8 and 360 PFLOPS FP16/BF16 with sparsity, 13.4 TB HBM3e,
//! 576 TB/s), AMD Instinct MI300X and MI325X datasheets (304 CUs, 1,307.4 dense BF16 and
//! 2,614.9 dense FP8 TFLOP/s; 192 GB HBM3 at 5.3 TB/s and 256 GB HBM3E at 6 TB/s; seven
//! Infinity Fabric links of 128 GB/s). Dense (no sparsity) peaks: NVIDIA's Blackwell figures
//! are quoted with 2:4 sparsity and halved here. Memory capacities in bytes as the boards expose
//! them in binary units (80 GB boards carry 80 GiB); capacities that vendors state in decimal
//! gigabytes (H200 141 GB, B200 180 GB, GB200 186 GB, MI300X 192 GB, MI325X 256 GB) are
//! decimal.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Element type of a GEMM or a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dtype {
    /// IEEE single precision on CUDA cores.
    Fp32,
    /// TensorFloat-32 on Tensor Cores (fp32 storage).
    Tf32,
    /// IEEE half precision.
    Fp16,
    /// bfloat16.
    Bf16,
    /// 8-bit floating point (E4M3/E5M2), Hopper and later.
    Fp8,
    /// 4-bit floating point (E2M1) with block scales, Blackwell and later: NVFP4 (an FP8 scale
    /// per 16 values) or MXFP4 (an E8M0 scale per 32; OCP Microscaling Formats v1.0).
    Fp4,
}

impl Dtype {
    /// Bits per element in memory (block scales not counted).
    ///
    /// ```
    /// use lmshape::hardware::Dtype;
    /// assert_eq!((Dtype::Bf16.bits(), Dtype::Fp4.bits()), (16, 4));
    /// ```
    pub fn bits(self) -> u64 {
        match self {
            Dtype::Fp32 | Dtype::Tf32 => 32,
            Dtype::Fp16 | Dtype::Bf16 => 16,
            Dtype::Fp8 => 8,
            Dtype::Fp4 => 4,
        }
    }

    /// Whole bytes an element occupies on its own: [`Dtype::bits`] rounded up to a byte (FP4
    /// packs two values per byte; traffic is counted from the bits).
    ///
    /// ```
    /// assert_eq!(lmshape::hardware::Dtype::Bf16.bytes(), 2);
    /// ```
    pub fn bytes(self) -> u64 {
        self.bits().div_ceil(8)
    }

    /// Elements whose multiple a GEMM dimension should be for full Tensor Core speed: 16 bytes
    /// (NVIDIA "Matrix Multiplication Background" user guide, §"Tensor Core requirements":
    /// multiples of 8 fp16 elements, 4 tf32, 16 int8/fp8; 32 for 4-bit values).
    pub fn alignment_elements(self) -> u64 {
        128 / self.bits()
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dtype::Fp32 => "fp32",
            Dtype::Tf32 => "tf32",
            Dtype::Fp16 => "fp16",
            Dtype::Bf16 => "bf16",
            Dtype::Fp8 => "fp8",
            Dtype::Fp4 => "fp4",
        })
    }
}

impl std::str::FromStr for Dtype {
    type Err = Error;

    /// Parse `fp32`, `tf32`, `fp16`, `bf16`, `fp8`, `fp4` (and the long names `float32`, `float16`,
    /// `half`, `bfloat16`).
    ///
    /// ```
    /// use lmshape::hardware::Dtype;
    /// assert_eq!("bfloat16".parse::<Dtype>()?, Dtype::Bf16);
    /// assert_eq!(Dtype::Bf16.to_string(), "bf16");
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    fn from_str(s: &str) -> Result<Dtype> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "fp32" | "float32" => Dtype::Fp32,
            "tf32" => Dtype::Tf32,
            "fp16" | "float16" | "half" => Dtype::Fp16,
            "bf16" | "bfloat16" => Dtype::Bf16,
            "fp8" => Dtype::Fp8,
            "fp4" => Dtype::Fp4,
            _ => {
                return Err(Error::UnknownName {
                    kind: "dtype",
                    name: s.into(),
                    known: "fp32, tf32, fp16, bf16, fp8, fp4".into(),
                });
            }
        })
    }
}

/// The precision the linear layers' GEMMs run in (Micikevicius et al. 2022, "FP8 Formats for
/// Deep Learning"; NVIDIA Transformer Engine). In FP8 each GEMM input is cast (E4M3 forward,
/// E5M2 gradients) with a per-tensor scale; with MXFP8 (OCP Microscaling, Blackwell) each block
/// of 32 values carries its own 8-bit scale. Activations, communication and the output layer
/// stay in 16 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GemmPrecision {
    /// bf16/fp16 GEMMs.
    #[default]
    Bf16,
    /// FP8 GEMMs with per-tensor current scaling (Transformer Engine's
    /// `Float8CurrentScaling`): each tensor's amax is found before it is cast, one more read
    /// of its 16-bit values.
    Fp8,
    /// FP8 GEMMs with per-tensor MX block scaling (one E8M0 scale per 32 values), computed in
    /// the cast itself.
    Mxfp8,
    /// FP8 GEMMs with delayed scaling (Transformer Engine's `DelayedScaling`; Micikevicius et
    /// al. 2022 §4.3): the scale comes from the amax history of earlier steps and the amax is
    /// recorded during the cast, so no extra pass.
    Fp8Delayed,
}

impl GemmPrecision {
    /// Bytes written per cast element: the 8-bit value, plus MXFP8's scale byte per 32 values.
    pub fn cast_bytes(self) -> f64 {
        match self {
            GemmPrecision::Bf16 => 0.0,
            GemmPrecision::Fp8 | GemmPrecision::Fp8Delayed => 1.0,
            GemmPrecision::Mxfp8 => 1.0 + 1.0 / 32.0,
        }
    }

    /// Bytes read per cast element before the cast to find its scale: the 16-bit input again
    /// (`input_bytes`) under current scaling, nothing otherwise.
    ///
    /// ```
    /// use lmshape::hardware::GemmPrecision;
    /// assert_eq!(GemmPrecision::Fp8.scale_pass_bytes(2.0), 2.0);
    /// assert_eq!(GemmPrecision::Fp8Delayed.scale_pass_bytes(2.0), 0.0);
    /// ```
    pub fn scale_pass_bytes(self, input_bytes: f64) -> f64 {
        match self {
            GemmPrecision::Fp8 => input_bytes,
            _ => 0.0,
        }
    }

    /// Extra bytes per parameter of the low-precision weight copies Transformer Engine keeps
    /// between micro-batches: the cast weight and its transpose (the backward GEMMs need the
    /// other layout), each [`GemmPrecision::cast_bytes`].
    pub fn weight_copy_bytes(self) -> f64 {
        2.0 * self.cast_bytes()
    }

    /// The Tensor Core dtype the GEMMs run in.
    pub fn dtype(self) -> Dtype {
        match self {
            GemmPrecision::Bf16 => Dtype::Bf16,
            _ => Dtype::Fp8,
        }
    }
}

crate::error::named!(GemmPrecision, "precision", [
    Bf16 => "bf16",
    Fp8 => "fp8",
    Mxfp8 => "mxfp8",
    Fp8Delayed => "fp8-delayed",
]);

/// The facts of one GPU model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSpec {
    /// Short name (`a100-80gb`).
    pub name: String,
    /// Streaming multiprocessors (one tile per SM per wave).
    pub sm_count: u64,
    /// Dense fp32 (CUDA core) peak, FLOP/s.
    pub fp32_flops_per_s: f64,
    /// Dense tf32 Tensor Core peak, FLOP/s (0: not supported).
    pub tf32_flops_per_s: f64,
    /// Dense fp16 Tensor Core peak, FLOP/s.
    pub fp16_flops_per_s: f64,
    /// Dense bf16 Tensor Core peak, FLOP/s (0: not supported).
    pub bf16_flops_per_s: f64,
    /// Dense fp8 Tensor Core peak, FLOP/s (0: not supported).
    pub fp8_flops_per_s: f64,
    /// Dense 4-bit (NVFP4/MXFP4) Tensor Core peak, FLOP/s (0 or absent: not supported).
    #[serde(default)]
    pub fp4_flops_per_s: f64,
    /// HBM capacity.
    pub memory_bytes: u64,
    /// HBM bandwidth, bytes/s.
    pub memory_bytes_per_s: f64,
    /// NVLink bandwidth per GPU (both directions summed, as NVIDIA quotes it), bytes/s.
    pub nvlink_bytes_per_s: f64,
    /// Fraction of the dense Tensor Core peak a large, aligned cuBLAS GEMM sustains. An
    /// assumption of the analytical timer, not a datasheet fact: A100 0.85 (≈265 of 312
    /// TFLOP/s, the large-GEMM throughput in NVIDIA's "Matrix Multiplication Background"
    /// guide); Hopper and later 0.80, assumed lower than Ampere's because their clocks throttle
    /// under dense load. Measured tables give each machine's own figure instead.
    pub gemm_efficiency: f64,
    /// GPUs in the vendor's reference node for this GPU (DGX: 8).
    pub node_gpus: u64,
    /// Tensor Cores that apply OCP microscaling (MX) block scales in the GEMM (Blackwell and
    /// later; NVIDIA Blackwell architecture technical brief, 2024).
    #[serde(default)]
    pub mx_scaling: bool,
    /// Scale-out network of that reference node, all NICs together, bytes/s: DGX A100 8 × 200
    /// Gb/s HDR; DGX H100 and DGX H200 8 × 400 Gb/s NDR (NVIDIA DGX A100, DGX H100/H200
    /// datasheets).
    pub node_network_bytes_per_s: f64,
}

const GIB: u64 = 1 << 30;

impl GpuSpec {
    /// NVIDIA A100 SXM4 40GB.
    pub fn a100_40gb() -> GpuSpec {
        GpuSpec {
            name: "a100-40gb".into(),
            sm_count: 108,
            fp32_flops_per_s: 19.5e12,
            tf32_flops_per_s: 156e12,
            fp16_flops_per_s: 312e12,
            bf16_flops_per_s: 312e12,
            fp8_flops_per_s: 0.0,
            fp4_flops_per_s: 0.0,
            memory_bytes: 40 * GIB,
            memory_bytes_per_s: 1555e9,
            nvlink_bytes_per_s: 600e9,
            gemm_efficiency: 0.85,
            node_gpus: 8,
            node_network_bytes_per_s: 8.0 * 200e9 / 8.0,
            mx_scaling: false,
        }
    }

    /// NVIDIA A100 SXM4 80GB.
    pub fn a100_80gb() -> GpuSpec {
        GpuSpec {
            name: "a100-80gb".into(),
            memory_bytes: 80 * GIB,
            memory_bytes_per_s: 2039e9,
            ..GpuSpec::a100_40gb()
        }
    }

    /// NVIDIA H100 SXM5 80GB.
    pub fn h100_sxm() -> GpuSpec {
        GpuSpec {
            name: "h100-sxm".into(),
            sm_count: 132,
            fp32_flops_per_s: 66.9e12,
            tf32_flops_per_s: 494.7e12,
            fp16_flops_per_s: 989.4e12,
            bf16_flops_per_s: 989.4e12,
            fp8_flops_per_s: 1978.9e12,
            fp4_flops_per_s: 0.0,
            memory_bytes: 80 * GIB,
            memory_bytes_per_s: 3.35e12,
            nvlink_bytes_per_s: 900e9,
            gemm_efficiency: 0.80,
            node_gpus: 8,
            node_network_bytes_per_s: 8.0 * 400e9 / 8.0,
            mx_scaling: false,
        }
    }

    /// NVIDIA H200 SXM 141GB.
    pub fn h200() -> GpuSpec {
        GpuSpec {
            name: "h200".into(),
            memory_bytes: 141_000_000_000,
            memory_bytes_per_s: 4.8e12,
            ..GpuSpec::h100_sxm()
        }
    }

    /// NVIDIA H100 PCIe 80GB (HBM2e; NVLink bridges pair GPUs at 600 GB/s). Its reference
    /// node is an 8-GPU PCIe server; its network, 4 × 200 Gb/s, is an assumption (no DGX
    /// exists for it).
    pub fn h100_pcie() -> GpuSpec {
        GpuSpec {
            name: "h100-pcie".into(),
            sm_count: 114,
            fp32_flops_per_s: 51.2e12,
            tf32_flops_per_s: 378e12,
            fp16_flops_per_s: 756e12,
            bf16_flops_per_s: 756e12,
            fp8_flops_per_s: 1513e12,
            fp4_flops_per_s: 0.0,
            memory_bytes: 80 * GIB,
            memory_bytes_per_s: 2.0e12,
            nvlink_bytes_per_s: 600e9,
            gemm_efficiency: 0.80,
            node_gpus: 8,
            node_network_bytes_per_s: 4.0 * 200e9 / 8.0,
            mx_scaling: false,
        }
    }

    /// NVIDIA B200 (HGX/DGX B200): 148 SMs, 2.25 dense BF16, 4.5 dense FP8 and 9 dense FP4
    /// PFLOP/s (HGX B200 datasheet: 144 PFLOP/s FP4 over 8 GPUs with 2:4 sparsity), 180 GB
    /// HBM3e at 8 TB/s, NVLink 5 at 1.8 TB/s. The large-GEMM efficiency (0.80, as Hopper's) is
    /// an assumption to calibrate.
    pub fn b200() -> GpuSpec {
        GpuSpec {
            name: "b200".into(),
            sm_count: 148,
            fp32_flops_per_s: 80e12,
            tf32_flops_per_s: 1.1e15,
            fp16_flops_per_s: 2.25e15,
            bf16_flops_per_s: 2.25e15,
            fp8_flops_per_s: 4.5e15,
            fp4_flops_per_s: 9e15,
            memory_bytes: 180_000_000_000,
            memory_bytes_per_s: 8e12,
            nvlink_bytes_per_s: 1.8e12,
            gemm_efficiency: 0.80,
            node_gpus: 8,
            node_network_bytes_per_s: 8.0 * 400e9 / 8.0,
            mx_scaling: true,
        }
    }

    /// One Blackwell GPU of a GB200 NVL72 rack: 2.5 dense BF16, 5 dense FP8 and 10 dense FP4
    /// PFLOP/s (the rack: 1,440 PFLOP/s FP4 with 2:4 sparsity), 186 GB
    /// HBM3e at 8 TB/s, NVLink 5 at 1.8 TB/s across one 72-GPU NVLink domain (so tensor and
    /// expert parallelism can span the rack: the "node" here is the domain), one 400 Gb/s
    /// ConnectX-7 NIC per GPU for the scale-out fabric. Large-GEMM efficiency as for B200 (an
    /// assumption).
    pub fn gb200() -> GpuSpec {
        GpuSpec {
            name: "gb200".into(),
            bf16_flops_per_s: 2.5e15,
            fp16_flops_per_s: 2.5e15,
            tf32_flops_per_s: 1.25e15,
            fp8_flops_per_s: 5e15,
            fp4_flops_per_s: 10e15,
            memory_bytes: 186_000_000_000,
            node_gpus: 72,
            node_network_bytes_per_s: 72.0 * 400e9 / 8.0,
            ..GpuSpec::b200()
        }
    }

    /// NVIDIA B300 (HGX B300, Blackwell Ultra): B200's dense BF16 and FP8 peaks (2.25 and 4.5
    /// PFLOP/s; HGX B300: 36 and 72 PFLOP/s over 8 GPUs with 2:4 sparsity), 160 SMs (NVIDIA,
    /// "Inside NVIDIA Blackwell Ultra", 2025), 288 GB HBM3e at 8 TB/s (2.3 TB per HGX), NVLink
    /// 5 at 1.8 TB/s, one 800 Gb/s ConnectX-8 NIC per GPU. Large-GEMM efficiency as for B200
    /// (an assumption).
    ///
    /// ```
    /// use lmshape::hardware::{Dtype, GpuSpec};
    /// let (b300, b200) = (GpuSpec::b300(), GpuSpec::b200());
    /// assert_eq!(b300.peak_flops_per_s(Dtype::Bf16)?, b200.peak_flops_per_s(Dtype::Bf16)?);
    /// assert!(b300.memory_bytes > b200.memory_bytes);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    pub fn b300() -> GpuSpec {
        GpuSpec::blackwell_ultra("b300", GpuSpec::b200())
    }

    /// One Blackwell Ultra GPU of a GB300 NVL72 rack: GB200's dense BF16 and FP8 peaks (2.5 and
    /// 5 PFLOP/s; the rack: 360 and 720 PFLOP/s with sparsity), B300's 160 SMs and 288 GB
    /// HBM3e at 8 TB/s, one 72-GPU NVLink domain at 1.8 TB/s per GPU, one 800 Gb/s ConnectX-8
    /// NIC per GPU. Large-GEMM efficiency as for B200 (an assumption).
    ///
    /// ```
    /// let gb300 = lmshape::hardware::GpuSpec::by_name("gb300")?;
    /// assert_eq!(gb300.node_gpus, 72);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    pub fn gb300() -> GpuSpec {
        GpuSpec::blackwell_ultra("gb300", GpuSpec::gb200())
    }

    /// What Blackwell Ultra changes from its Blackwell counterpart `base`: 160 SMs, 288 GB of
    /// HBM3e, one 800 Gb/s ConnectX-8 NIC per GPU and 1.5× the dense FP4 peak (HGX B300: 108,
    /// GB300 NVL72: 1,080 dense FP4 PFLOP/s; 13.5 and 15 per GPU).
    fn blackwell_ultra(name: &str, base: GpuSpec) -> GpuSpec {
        GpuSpec {
            name: name.into(),
            fp4_flops_per_s: 1.5 * base.fp4_flops_per_s,
            sm_count: 160,
            memory_bytes: 288_000_000_000,
            node_network_bytes_per_s: base.node_gpus as f64 * 800e9 / 8.0,
            ..base
        }
    }

    /// AMD Instinct MI300X: 304 compute units, 1,307.4 dense BF16 and 2,614.9 dense FP8
    /// TFLOP/s, 192 GB HBM3 at 5.3 TB/s; eight GPUs per node fully connected by Infinity
    /// Fabric (seven 128 GB/s links each, no switch); 8 × 400 Gb/s per node. The tile model
    /// treats a compute unit like an SM; the large-GEMM efficiency, 0.65, is an assumption
    /// (public hipBLASLt results sit well below peak).
    pub fn mi300x() -> GpuSpec {
        GpuSpec {
            name: "mi300x".into(),
            sm_count: 304,
            fp32_flops_per_s: 163.4e12,
            tf32_flops_per_s: 653.7e12,
            fp16_flops_per_s: 1307.4e12,
            bf16_flops_per_s: 1307.4e12,
            fp8_flops_per_s: 2614.9e12,
            fp4_flops_per_s: 0.0,
            memory_bytes: 192_000_000_000,
            memory_bytes_per_s: 5.3e12,
            nvlink_bytes_per_s: 7.0 * 128e9,
            gemm_efficiency: 0.65,
            node_gpus: 8,
            node_network_bytes_per_s: 8.0 * 400e9 / 8.0,
            mx_scaling: false,
        }
    }

    /// AMD Instinct MI325X: MI300X's compute with 256 GB HBM3E at 6 TB/s.
    pub fn mi325x() -> GpuSpec {
        GpuSpec {
            name: "mi325x".into(),
            memory_bytes: 256_000_000_000,
            memory_bytes_per_s: 6e12,
            ..GpuSpec::mi300x()
        }
    }

    /// Every preset.
    pub fn presets() -> Vec<GpuSpec> {
        vec![
            GpuSpec::a100_40gb(),
            GpuSpec::a100_80gb(),
            GpuSpec::h100_sxm(),
            GpuSpec::h100_pcie(),
            GpuSpec::h200(),
            GpuSpec::b200(),
            GpuSpec::gb200(),
            GpuSpec::b300(),
            GpuSpec::gb300(),
            GpuSpec::mi300x(),
            GpuSpec::mi325x(),
        ]
    }

    /// Look a preset up by name (`a100-40gb`, `a100-80gb`/`a100`, `h100-sxm`/`h100`,
    /// `h100-pcie`, `h200`, `b200`, `gb200`, `b300`, `gb300`, `mi300x`, `mi325x`).
    ///
    /// ```
    /// let g = lmshape::hardware::GpuSpec::by_name("a100-80gb")?;
    /// assert_eq!(g.sm_count, 108);
    /// assert_eq!(g.peak_flops_per_s(lmshape::hardware::Dtype::Bf16)?, 312e12);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownName`] listing the presets.
    pub fn by_name(name: &str) -> Result<GpuSpec> {
        let n = name.to_ascii_lowercase().replace('_', "-");
        let alias = match n.as_str() {
            "a100" => "a100-80gb",
            "h100" | "h100-sxm5" => "h100-sxm",
            "h200-sxm" => "h200",
            other => other,
        };
        GpuSpec::presets()
            .into_iter()
            .find(|g| g.name == alias)
            .ok_or_else(|| Error::UnknownName {
                kind: "gpu",
                name: name.into(),
                known: GpuSpec::presets()
                    .iter()
                    .map(|g| g.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Whether a device name (a preset name or alias, or the name the driver reports, such as
    /// `NVIDIA H100 80GB HBM3` or `NVIDIA A100-SXM4-80GB`) names this GPU.
    ///
    /// ```
    /// use lmshape::hardware::GpuSpec;
    /// assert!(GpuSpec::h100_sxm().matches_device("NVIDIA H100 80GB HBM3"));
    /// assert!(!GpuSpec::h100_sxm().matches_device("NVIDIA H100 PCIe"));
    /// assert!(GpuSpec::a100_40gb().matches_device("NVIDIA A100-SXM4-40GB"));
    /// assert!(GpuSpec::gb200().matches_device("gb200"));
    /// ```
    pub fn matches_device(&self, device: &str) -> bool {
        if GpuSpec::by_name(device).is_ok_and(|g| g.name == self.name) {
            return true;
        }
        let d = device.to_ascii_lowercase();
        let preset = match () {
            _ if d.contains("gb300") => "gb300",
            _ if d.contains("gb200") => "gb200",
            _ if d.contains("b300") => "b300",
            _ if d.contains("b200") => "b200",
            _ if d.contains("h200") => "h200",
            _ if d.contains("h100") && d.contains("pcie") => "h100-pcie",
            _ if d.contains("h100") => "h100-sxm",
            _ if d.contains("a100") && d.contains("40gb") => "a100-40gb",
            _ if d.contains("a100") => "a100-80gb",
            _ if d.contains("mi325") => "mi325x",
            _ if d.contains("mi300") => "mi300x",
            _ => return false,
        };
        preset == self.name
    }

    /// Check that this GPU runs GEMMs in `precision`: FP8 needs an FP8 Tensor Core peak
    /// (Hopper, Blackwell, MI300), MXFP8 also MX block scaling ([`GpuSpec::mx_scaling`]).
    ///
    /// ```
    /// use lmshape::hardware::{GemmPrecision, GpuSpec};
    /// assert!(GpuSpec::h100_sxm().check_precision(GemmPrecision::Fp8).is_ok());
    /// let e = GpuSpec::a100_80gb().check_precision(GemmPrecision::Fp8).unwrap_err();
    /// assert!(e.to_string().contains("a100-80gb has no fp8"));
    /// assert!(GpuSpec::h100_sxm().check_precision(GemmPrecision::Mxfp8).is_err());
    /// ```
    ///
    /// # Errors
    /// [`Error::Inconsistent`] naming the GPU and the precision.
    pub fn check_precision(&self, precision: GemmPrecision) -> Result<()> {
        let has_peak = self.peak_flops_per_s(precision.dtype()).is_ok();
        if !has_peak || (precision == GemmPrecision::Mxfp8 && !self.mx_scaling) {
            return Err(Error::Inconsistent {
                rule: "the GPU must run its GEMMs in the precision asked for",
                detail: format!(
                    "{} has no {} Tensor Cores (precisions it runs: {})",
                    self.name,
                    precision,
                    GemmPrecision::ALL
                        .into_iter()
                        .filter(|p| self.check_precision_quiet(*p))
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(())
    }

    fn check_precision_quiet(&self, p: GemmPrecision) -> bool {
        self.peak_flops_per_s(p.dtype()).is_ok() && (p != GemmPrecision::Mxfp8 || self.mx_scaling)
    }

    /// Dense peak for a dtype; an error when the GPU lacks it.
    ///
    /// # Errors
    /// [`Error::Inconsistent`] when the GPU has no Tensor Core peak for `dtype`.
    pub fn peak_flops_per_s(&self, dtype: Dtype) -> Result<f64> {
        let p = match dtype {
            Dtype::Fp32 => self.fp32_flops_per_s,
            Dtype::Tf32 => self.tf32_flops_per_s,
            Dtype::Fp16 => self.fp16_flops_per_s,
            Dtype::Bf16 => self.bf16_flops_per_s,
            Dtype::Fp8 => self.fp8_flops_per_s,
            Dtype::Fp4 => self.fp4_flops_per_s,
        };
        if p > 0.0 && p.is_finite() {
            Ok(p)
        } else {
            Err(Error::Inconsistent {
                rule: "the gpu must support the dtype",
                detail: format!("{} has no {} peak", self.name, dtype),
            })
        }
    }
}
