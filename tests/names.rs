//! Every enum a user types prints and parses back to itself (`Display` then `FromStr`), and an
//! unknown name is an error that lists the known ones.

use lmshape::Recompute;
use lmshape::framework::{Framework, Optimizer};
use lmshape::hardware::{Dtype, GemmPrecision};
use lmshape::parallel::{CpComm, EmbeddingSlots, ZeroStage};
use lmshape::scaling::LawChoice;
use std::fmt::Display;
use std::str::FromStr;

fn round_trip<T>(all: &[T])
where
    T: Display + FromStr<Err = lmshape::Error> + PartialEq + std::fmt::Debug,
{
    for v in all {
        let text = v.to_string();
        assert_eq!(&text.parse::<T>().unwrap(), v, "{text}");
    }
    let e = "no-such-name".parse::<T>().unwrap_err().to_string();
    assert!(e.contains("known:"), "{e}");
}

#[test]
fn names_round_trip() {
    round_trip(&Recompute::ALL);
    round_trip(&CpComm::ALL);
    round_trip(&ZeroStage::ALL);
    round_trip(&EmbeddingSlots::ALL);
    round_trip(&Framework::ALL);
    round_trip(&Optimizer::ALL);
    round_trip(&GemmPrecision::ALL);
    round_trip(&[
        Dtype::Fp32,
        Dtype::Tf32,
        Dtype::Fp16,
        Dtype::Bf16,
        Dtype::Fp8,
    ]);
    round_trip(&[
        LawChoice::Kaplan,
        LawChoice::Chinchilla,
        LawChoice::Besiroglu,
        LawChoice::ChinchillaApproach1,
        LawChoice::ChinchillaApproach2,
    ]);
}
