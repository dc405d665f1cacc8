//! Types with rules that cannot be built invalid: [`checked_type!`] declares the type with its
//! fields private to the crate, read through getters, and a builder — the one way to set
//! them, also the type's serde form — whose `build` checks the type's rules. One field list
//! serves the type, its getters, the builder and its setters.

/// Declares `$name` (fields read through getters: `[copy]` by value, `[ref]` by reference)
/// and `$builder` (setters of the same names; `build` runs `$check` on the assembled value).
/// `$builder_name` is the builder's name as a string, for serde's `try_from`; a field marked
/// `default = "path"` may be left out of the serde form, one marked `with = "module"` is
/// written and read by that module.
macro_rules! checked_type {
    (
        $(#[$meta:meta])*
        pub struct $name:ident;
        $(#[$bmeta:meta])*
        pub struct $builder:ident = $builder_name:literal;
        check = $check:ident;
        fields {
            $( $(#[doc = $doc:literal])* $field:ident : $ty:ty [$by:ident $(, default = $def:literal)? $(, with = $with:literal)?] ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = $builder_name)]
        pub struct $name {
            $( $(#[doc = $doc])* $(#[serde(with = $with)])? pub(crate) $field: $ty, )*
        }

        $(#[$bmeta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct $builder {
            $( $(#[doc = $doc])* $(#[serde(default = $def)])? $(#[serde(with = $with)])? $field: $ty, )*
        }

        impl $builder {
            $(
                $(#[doc = $doc])*
                pub fn $field(mut self, $field: $ty) -> $builder {
                    self.$field = $field;
                    self
                }
            )*

            /// The value, if it obeys every rule of its type.
            ///
            /// # Errors
            /// The first rule broken, naming it and the values.
            pub fn build(self) -> $crate::error::Result<$name> {
                let value = $name {
                    $( $field: self.$field, )*
                };
                value.$check()?;
                Ok(value)
            }
        }

        impl TryFrom<$builder> for $name {
            type Error = $crate::error::Error;

            fn try_from(b: $builder) -> $crate::error::Result<$name> {
                b.build()
            }
        }

        impl $name {
            /// A builder holding this value's fields, to derive a variant (checked again by
            /// its `build`).
            pub fn to_builder(&self) -> $builder {
                $builder {
                    $( $field: self.$field.clone(), )*
                }
            }

            $( $crate::checked::checked_type!(@getter $by, $(#[doc = $doc])* $field : $ty); )*
        }
    };
    (@getter copy, $(#[doc = $doc:literal])* $field:ident : $ty:ty) => {
        $(#[doc = $doc])*
        pub fn $field(&self) -> $ty {
            self.$field
        }
    };
    (@getter ref, $(#[doc = $doc:literal])* $field:ident : $ty:ty) => {
        $(#[doc = $doc])*
        pub fn $field(&self) -> &$ty {
            &self.$field
        }
    };
}

pub(crate) use checked_type;

/// Serde for an upper bound that may be `f64::INFINITY` (no bound): JSON has no infinity, so
/// it is written as `null` and `null` reads back as no bound.
pub(crate) mod unbounded {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_infinite() && *x > 0.0 {
            s.serialize_none()
        } else {
            s.serialize_f64(*x)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}
