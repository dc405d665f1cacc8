//! The shipped profiles, embedded in the library and parsed once on first use.

use super::SystemProfile;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Names of the shipped profiles.
pub const SYSTEM_NAMES: [&str; 9] = [
    "dgx-a100",
    "dgx-h100",
    "dgx-h200",
    "dgx-b200",
    "gb200-nvl72",
    "dgx-b300",
    "gb300-nvl72",
    "simumax-b200",
    "jean-zay",
];

/// The JSON of a shipped profile (`jean-zay` is derived from `dgx-a100`).
fn text(name: &str) -> Option<&'static str> {
    Some(match name {
        "dgx-a100" => include_str!("profiles/dgx-a100.json"),
        "dgx-h100" => include_str!("profiles/dgx-h100.json"),
        "dgx-h200" => include_str!("profiles/dgx-h200.json"),
        "dgx-b200" => include_str!("profiles/dgx-b200.json"),
        "gb200-nvl72" => include_str!("profiles/gb200-nvl72.json"),
        "dgx-b300" => include_str!("profiles/dgx-b300.json"),
        "gb300-nvl72" => include_str!("profiles/gb300-nvl72.json"),
        "simumax-b200" => include_str!("profiles/simumax-b200.json"),
        _ => return None,
    })
}

/// The measured DGX (or NVL72) profile of a GPU preset, when one ships: the profile
/// `--gpu NAME` uses by default. GPUs without one keep the analytical model.
///
/// ```
/// assert_eq!(lmshape::system::default_system_for_gpu("h100-sxm"), Some("dgx-h100"));
/// assert_eq!(lmshape::system::default_system_for_gpu("mi300x"), None);
/// ```
pub fn default_system_for_gpu(gpu: &str) -> Option<&'static str> {
    Some(match gpu {
        "a100-80gb" => "dgx-a100",
        "h100-sxm" => "dgx-h100",
        "h200" => "dgx-h200",
        "b200" => "dgx-b200",
        "gb200" => "gb200-nvl72",
        "b300" => "dgx-b300",
        "gb300" => "gb300-nvl72",
        _ => return None,
    })
}

/// Jean Zay's A100 partition as BigScience used it for BLOOM: the DGX A100 kernel tables with
/// its network, 4 × 100 Gb/s Omni-Path per node of 8 GPUs (`bloom_throughput_tp8.json`).
fn jean_zay() -> Result<SystemProfile> {
    let mut p = SystemProfile::from_json(text("dgx-a100").unwrap_or_default())?;
    p.name = "jean-zay".into();
    p.network.nic_bytes_per_s = 4.0 * 100e9 / 8.0;
    p.provenance.network =
        "4 x 100 Gb/s Omni-Path per node (BigScience's Jean Zay A100 partition); not measured here: an assumption".into();
    p.provenance.node = "Jean Zay A100 partition: 8 A100-SXM4-80GB per node, NVLink 3".into();
    // BigScience's 2022 software ran 23–46% below these kernels' speed on its own machine
    // (recorded by tests/timing.rs); calibrate a profile on your steps to remove it.
    p.validation = Some(super::Validation {
        runs: 23,
        ratio_low: 0.6831,
        ratio_high: 1.1,
        basis: "BigScience's 23 measured A100 rows of tests/data/bloom_throughput_tp8.json, untuned (tests/timing.rs)".into(),
    });
    Ok(p)
}

fn cache() -> &'static Mutex<HashMap<String, Arc<SystemProfile>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<SystemProfile>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A shipped profile, parsed once and shared.
pub(crate) fn shared(name: &str) -> Result<Arc<SystemProfile>> {
    let key = name.to_ascii_lowercase();
    if let Some(p) = cache().lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(p);
    }
    let profile = match key.as_str() {
        "jean-zay" => jean_zay()?,
        other => match text(other) {
            Some(t) => SystemProfile::from_json(t)?,
            None => {
                return Err(Error::UnknownName {
                    kind: "system",
                    name: name.into(),
                    known: SYSTEM_NAMES.join(", "),
                });
            }
        },
    };
    let arc = Arc::new(profile);
    if let Ok(mut c) = cache().lock() {
        c.insert(key, arc.clone());
    }
    Ok(arc)
}

/// A shipped profile by name, owned.
pub(crate) fn load(name: &str) -> Result<SystemProfile> {
    Ok((*shared(name)?).clone())
}
