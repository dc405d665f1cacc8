//! The crate's single error type.
//!
//! Every public computation returns [`Result`]; bad input becomes an [`Error`] variant that names
//! the rule broken and carries the offending values. Messages are lowercase without a trailing
//! period.

/// Everything that can go wrong in lmshape.
///
/// ```
/// use lmshape::{Error, Transformer, Architecture};
/// let err = Transformer::builder().vocab_size(50257).hidden_size(768).num_layers(12).num_heads(12).num_kv_heads(5).head_dim(64).ffn_size(3072).max_positions(1024).arch(Architecture::gpt2()).build().unwrap_err();
/// assert!(matches!(err, Error::NotDivisible { .. }));
/// assert!(err.to_string().contains("kv heads"));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A size that must be positive is zero.
    #[error("{field} must be positive, got 0")]
    ZeroSize {
        /// Name of the field.
        field: &'static str,
    },
    /// A divisibility rule is broken: `numerator % denominator != 0`.
    #[error(
        "{rule}: {numerator_name} = {numerator} is not divisible by {denominator_name} = {denominator}"
    )]
    NotDivisible {
        /// The rule, in words.
        rule: &'static str,
        /// Name of the quantity that must be divisible.
        numerator_name: &'static str,
        /// Its value.
        numerator: u64,
        /// Name of the divisor.
        denominator_name: &'static str,
        /// Its value.
        denominator: u64,
    },
    /// An integer computation would overflow `u64`.
    #[error("arithmetic overflow while computing {what}")]
    Overflow {
        /// What was being computed.
        what: &'static str,
    },
    /// A floating-point input is out of its domain (non-finite, non-positive, out of range).
    #[error("{field} must be {expected}, got {}", readable(*value))]
    InvalidValue {
        /// Name of the input.
        field: &'static str,
        /// The value given.
        value: f64,
        /// The domain, in words (e.g. "finite and positive").
        expected: &'static str,
    },
    /// A count is below the least a rule allows.
    #[error("{rule}: {field} = {value} is below the minimum {min}")]
    BelowMinimum {
        /// The rule, in words.
        rule: &'static str,
        /// Name of the quantity.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The least value allowed.
        min: u64,
    },
    /// A feature of the model or the layout that this estimate does not model yet.
    #[error("{what} is not modelled for {feature}")]
    Unsupported {
        /// The estimate.
        what: &'static str,
        /// The feature it does not cover.
        feature: &'static str,
    },
    /// A rule that ties several inputs together is broken.
    #[error("{rule}: {detail}")]
    Inconsistent {
        /// The rule, in words.
        rule: &'static str,
        /// The values involved.
        detail: String,
    },
    /// The text is not valid JSON (or not the expected JSON shape), with where the parser
    /// stopped.
    #[error("invalid json: {0}")]
    Json(#[source] JsonError),
    /// A Hugging Face config names a `model_type` this crate does not read.
    #[error("unsupported model_type {model_type:?}; supported: {supported}")]
    UnsupportedModelType {
        /// The model type found.
        model_type: String,
        /// Comma-separated list of supported model types.
        supported: String,
    },
    /// A required key is absent from a config.
    #[error("missing key {key:?} in config")]
    MissingKey {
        /// The key (or its aliases joined by `/`).
        key: String,
    },
    /// A config key holds a value of the wrong type or range.
    #[error("key {key:?} must be {expected}, found {found}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What was expected.
        expected: &'static str,
        /// What was found (as JSON text).
        found: String,
    },
    /// A CSV input is malformed.
    #[error("csv line {line}: {detail}")]
    Csv {
        /// 1-based line number (0 for the header or the whole file).
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// A fit could not be carried out (too few points, optimiser failure).
    #[error("fit failed: {0}")]
    Fit(String),
    /// A fit's input or result broke a rule of its own; the rule's error is the source.
    #[error("fit failed: {context}: {source}")]
    FitRejected {
        /// What was being checked.
        context: &'static str,
        /// The rule's error.
        #[source]
        source: Box<Error>,
    },
    /// A timer has no measurement for a GEMM and does not extrapolate.
    #[error("no timing for gemm m={m} n={n} k={k} batch={batch} in the table")]
    MissingTiming {
        /// Rows of the output.
        m: u64,
        /// Columns of the output.
        n: u64,
        /// Inner dimension.
        k: u64,
        /// Batch count.
        batch: u64,
    },
    /// A GPU backend is unavailable or failed (e.g. no CUDA driver).
    #[error("gpu backend: {0}")]
    Gpu(String),
    /// A name (preset, GPU, law, ...) is not known.
    #[error("unknown {kind} {name:?}; known: {known}")]
    UnknownName {
        /// What kind of name.
        kind: &'static str,
        /// The name given.
        name: String,
        /// Comma-separated list of known names.
        known: String,
    },
}

/// A float as people read it in a message: plain decimals between 0.001 and a million,
/// scientific notation outside (`1e300`, not three hundred digits), `NaN` and `inf` as such.
///
/// ```
/// assert_eq!(lmshape::error::readable(1e300), "1e300");
/// assert_eq!(lmshape::error::readable(0.745), "0.745");
/// assert_eq!(lmshape::error::readable(-2.5e-7), "-2.5e-7");
/// ```
pub fn readable(x: f64) -> String {
    let a = x.abs();
    if x.is_finite() && a != 0.0 && !(1e-3..1e6).contains(&a) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// Largest input text the parsers accept (a `config.json`, a runs CSV, a timing table): 64 MiB,
/// far above any real one (a 59,000-entry GEMM table is about 6 MB), so that a wrong path such
/// as a device file is refused instead of read without end.
pub const MAX_INPUT_BYTES: usize = 64 << 20;

/// Refuse input text longer than [`MAX_INPUT_BYTES`], naming what it was.
pub(crate) fn input_size(text: &str, what: &'static str) -> Result<()> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(Error::Inconsistent {
            rule: "input text is at most 64 MiB",
            detail: format!("the {what} holds {} bytes", text.len()),
        });
    }
    Ok(())
}

/// Names for an enum a user types: `ALL`, `NAMES`, `name()`, `Display` and a `FromStr` that
/// ignores case and takes `_` for `-` (an unknown name lists the known ones), so printing and
/// parsing round-trip from one table.
macro_rules! named {
    ($ty:ident, $kind:literal, [$($variant:ident => $name:literal),+ $(,)?]) => {
        impl $ty {
            /// Every value, in the order of `NAMES`.
            pub const ALL: [$ty; [$($name),+].len()] = [$($ty::$variant),+];
            /// The names it parses from and prints as.
            pub const NAMES: [&'static str; [$($name),+].len()] = [$($name),+];

            /// The name it prints as.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::error::Error;

            fn from_str(s: &str) -> $crate::error::Result<$ty> {
                let key = s.trim().to_ascii_lowercase().replace('_', "-");
                $ty::ALL
                    .into_iter()
                    .find(|v| v.name() == key)
                    .ok_or_else(|| $crate::error::Error::UnknownName {
                        kind: $kind,
                        name: s.to_string(),
                        known: $ty::NAMES.join(", "),
                    })
            }
        }
    };
}
pub(crate) use named;

/// Where and why JSON text failed to parse (kept from `serde_json`'s error, which is neither
/// `Clone` nor `PartialEq`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JsonError {
    /// The parser's message (it names the line and column).
    pub message: String,
    /// 1-based line where parsing stopped (0 when unknown).
    pub line: usize,
    /// 1-based column where parsing stopped (0 when unknown).
    pub column: usize,
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::Json(JsonError {
            message: e.to_string(),
            line: e.line(),
            column: e.column(),
        })
    }
}

/// Shorthand for `std::result::Result<T, lmshape::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// Checked `a * b` for any integer type, naming what overflowed.
pub(crate) fn mul<T: num_traits::CheckedMul>(a: T, b: T, what: &'static str) -> Result<T> {
    a.checked_mul(&b).ok_or(Error::Overflow { what })
}

/// Checked `a + b` for any integer type, naming what overflowed.
pub(crate) fn add<T: num_traits::CheckedAdd>(a: T, b: T, what: &'static str) -> Result<T> {
    a.checked_add(&b).ok_or(Error::Overflow { what })
}

/// A wide intermediate narrowed to `u64`, naming what did not fit.
pub(crate) fn to_u64<T: num_traits::ToPrimitive>(x: T, what: &'static str) -> Result<u64> {
    x.to_u64().ok_or(Error::Overflow { what })
}

/// Checked sum of a slice.
pub(crate) fn sum(xs: &[u64], what: &'static str) -> Result<u64> {
    xs.iter().try_fold(0u64, |acc, &x| add(acc, x, what))
}

/// Require `value > 0`.
pub(crate) fn positive(value: u64, field: &'static str) -> Result<u64> {
    if value == 0 {
        Err(Error::ZeroSize { field })
    } else {
        Ok(value)
    }
}

/// Require a finite, strictly positive float.
pub(crate) fn positive_f64(value: f64, field: &'static str) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(Error::InvalidValue {
            field,
            value,
            expected: "finite and positive",
        })
    }
}

/// Require a finite float `>= 0`.
pub(crate) fn non_negative_f64(value: f64, field: &'static str) -> Result<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(Error::InvalidValue {
            field,
            value,
            expected: "finite and non-negative",
        })
    }
}

/// Require a finite float in `[lo, hi]`; `expected` states the range in words.
pub(crate) fn in_range_f64(
    value: f64,
    lo: f64,
    hi: f64,
    field: &'static str,
    expected: &'static str,
) -> Result<f64> {
    if value.is_finite() && (lo..=hi).contains(&value) {
        Ok(value)
    } else {
        Err(Error::InvalidValue {
            field,
            value,
            expected,
        })
    }
}

/// Require a computed quantity to be finite and positive: inputs at the edge of `f64` (a budget
/// of 1e308 FLOPs, a width of zero) can make a formula return infinity, NaN or zero, which is
/// never a figure to print. `inputs` names the values it came from (called only on failure).
pub(crate) fn finite_result(
    value: f64,
    what: &'static str,
    inputs: impl FnOnce() -> String,
) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(Error::Inconsistent {
            rule: "a computed quantity must be a finite, positive number",
            detail: format!("{what} = {} from {}", readable(value), inputs()),
        })
    }
}

/// Require `numerator % denominator == 0` (denominator must be positive).
pub(crate) fn divisible(
    rule: &'static str,
    numerator_name: &'static str,
    numerator: u64,
    denominator_name: &'static str,
    denominator: u64,
) -> Result<()> {
    if denominator == 0 {
        return Err(Error::ZeroSize {
            field: denominator_name,
        });
    }
    if numerator % denominator != 0 {
        return Err(Error::NotDivisible {
            rule,
            numerator_name,
            numerator,
            denominator_name,
            denominator,
        });
    }
    Ok(())
}
