//! Body validation: a schema-driven `DeserializeSeed` run by serde_json's own `Deserializer`.
//!
//! Firecracker deserialises each body with `serde_json::from_slice` into
//! `#[serde(deny_unknown_fields)]` structs. [`validate`] drives serde_json the
//! way those derived types do (`deserialize_map` for a struct, an identifier
//! per key, `deserialize_option` for an `Option` field, the Rust integer type
//! for an integer, `deserialize_enum` for a unit-variant enum), so tokens,
//! type errors, syntax errors and their `at line L column C` positions are
//! serde_json's by construction. Only the texts serde builds from its
//! `&'static` name lists (unknown/missing/duplicate field, unknown variant)
//! are spelled here, as `serde::de::Error::custom` with the same wording.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess};
use serde::de::{Error as _, VariantAccess, Visitor};
use serde::Deserialize;

use crate::schema::{Contract, Def, Shape};

/// A body that Firecracker's deserialiser would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub msg: String,
    /// `(line, column)` as serde_json counts them; `None` when it gave none.
    pub pos: Option<(usize, usize)>,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some((l, c)) => write!(f, "{} at line {l} column {c}", self.msg),
            None => f.write_str(&self.msg),
        }
    }
}

impl std::error::Error for JsonError {}

impl From<serde_json::Error> for JsonError {
    fn from(e: serde_json::Error) -> Self {
        let text = e.to_string();
        if e.line() == 0 {
            return JsonError {
                msg: text,
                pos: None,
            };
        }
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        JsonError {
            msg: text.strip_suffix(&suffix).unwrap_or(&text).to_string(),
            pos: Some((e.line(), e.column())),
        }
    }
}

/// Check `body` against `shape` as `serde_json::from_slice` would.
pub fn validate(contract: &Contract, shape: &Shape, body: &[u8]) -> Result<(), JsonError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    Check {
        contract,
        shape,
        nullable: false,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(())
}

/// Firecracker's `MacAddr::from_str`: six `:`-separated two-digit hex bytes.
pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// serde's `OneOf` list: "`a`", "`a` or `b`", "one of `a`, `b`, `c`".
fn one_of<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    match names.as_slice() {
        [a] => a.clone(),
        [a, b] => format!("{a} or {b}"),
        _ => format!("one of {}", names.join(", ")),
    }
}

/// One value of `shape`; `nullable` wraps it in an `Option`.
#[derive(Clone, Copy)]
struct Check<'a> {
    contract: &'a Contract,
    shape: &'a Shape,
    nullable: bool,
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.nullable {
            return d.deserialize_option(Nullable(Check {
                nullable: false,
                ..self
            }));
        }
        match self.shape {
            Shape::Str => String::deserialize(d).map(drop),
            Shape::Mac => {
                if is_mac(&String::deserialize(d)?) {
                    Ok(())
                } else {
                    Err(D::Error::custom("The provided MAC address is invalid."))
                }
            }
            Shape::Bool => bool::deserialize(d).map(drop),
            Shape::Int(ty) => integer(ty, d),
            Shape::Enum {
                variants,
                case_insensitive,
            } => {
                let v = Variant {
                    variants,
                    case_insensitive: *case_insensitive,
                };
                d.deserialize_enum("", &[], v)
            }
            Shape::Struct(name) | Shape::Partial(name) => {
                let def = self
                    .contract
                    .def(name)
                    .ok_or_else(|| D::Error::custom(format!("no definition {name}")))?;
                // `deserialize_map`, not `_struct`: the yaml allows objects only,
                // so a struct written as a JSON array is a type error here.
                d.deserialize_map(Struct {
                    contract: self.contract,
                    def,
                    partial: matches!(self.shape, Shape::Partial(_)),
                })
            }
            Shape::Array(inner) => d.deserialize_seq(Seq(Check {
                shape: inner,
                ..self
            })),
            Shape::Any => serde_json::Value::deserialize(d).map(drop),
        }
    }
}

/// The Rust integer type Firecracker holds the field in.
fn integer<'de, D: Deserializer<'de>>(ty: &str, d: D) -> Result<(), D::Error> {
    match ty {
        "u8" => u8::deserialize(d).map(drop),
        "u16" => u16::deserialize(d).map(drop),
        "u32" => u32::deserialize(d).map(drop),
        "u64" => u64::deserialize(d).map(drop),
        "usize" => usize::deserialize(d).map(drop),
        "i32" => i32::deserialize(d).map(drop),
        _ => i64::deserialize(d).map(drop),
    }
}

/// `Option<T>`: `null`, or the inner value.
struct Nullable<'a>(Check<'a>);

impl<'de> Visitor<'de> for Nullable<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("option")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.deserialize(d)
    }
}

/// `Vec<T>`.
struct Seq<'a>(Check<'a>);

impl<'de> Visitor<'de> for Seq<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self.0)?.is_some() {}
        Ok(())
    }
}

/// A derived unit-variant enum: its identifier, then the unit value.
#[derive(Clone, Copy)]
struct Variant<'a> {
    variants: &'a [String],
    case_insensitive: bool,
}

impl<'de> Visitor<'de> for Variant<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("variant identifier")
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let ((), unit) = data.variant_seed(self)?;
        unit.unit_variant()
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        let ci = self.case_insensitive;
        if (self.variants.iter()).any(|v| v == s || (ci && v.eq_ignore_ascii_case(s))) {
            return Ok(());
        }
        Err(E::custom(match self.variants {
            [] => format!("unknown variant `{s}`, there are no variants"),
            vs => format!(
                "unknown variant `{s}`, expected {}",
                one_of(vs.iter().map(String::as_str))
            ),
        }))
    }
}

impl<'de> DeserializeSeed<'de> for Variant<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_identifier(self)
    }
}

/// A derived `deny_unknown_fields` struct (every field optional when `partial`).
struct Struct<'a> {
    contract: &'a Contract,
    def: &'a Def,
    partial: bool,
}

impl<'de> Visitor<'de> for Struct<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "struct {}", self.def.rust_name)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let fields = &self.def.fields;
        let mut seen = vec![false; fields.len()];
        while let Some(i) = map.next_key_seed(Key(self.def))? {
            let field = &fields[i];
            if std::mem::replace(&mut seen[i], true) {
                return Err(A::Error::custom(format!(
                    "duplicate field `{}`",
                    field.name
                )));
            }
            map.next_value_seed(Check {
                contract: self.contract,
                shape: &field.shape,
                nullable: field.nullable || self.partial,
            })?;
        }
        let missing = (fields.iter().zip(&seen)).find(|(f, seen)| f.required && !**seen);
        match missing {
            Some((f, _)) if !self.partial => {
                Err(A::Error::custom(format!("missing field `{}`", f.name)))
            }
            _ => Ok(()),
        }
    }
}

/// A struct's field identifier: its index, or `unknown field`.
struct Key<'a>(&'a Def);

impl<'de> Visitor<'de> for Key<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field identifier")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<usize, E> {
        if let Some(i) = self.0.fields.iter().position(|f| f.name == s) {
            return Ok(i);
        }
        Err(E::custom(match self.0.fields.as_slice() {
            [] => format!("unknown field `{s}`, there are no fields"),
            fs => format!(
                "unknown field `{s}`, expected {}",
                one_of(fs.iter().map(|f| f.name.as_str()))
            ),
        }))
    }
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_identifier(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(def: &str, body: &str) -> Result<(), String> {
        let c = Contract::vendored().unwrap();
        validate(&c, &Shape::Struct(def.into()), body.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn positions_match_serde_json() {
        assert_eq!(
            check(
                "MachineConfiguration",
                "{\"vcpu_count\": 300, \"mem_size_mib\": 1}"
            )
            .unwrap_err(),
            "invalid value: integer `300`, expected u8 at line 1 column 18"
        );
        assert_eq!(
            check(
                "MachineConfiguration",
                "{\"vcpu_count\": 1.5, \"mem_size_mib\": 1}"
            )
            .unwrap_err(),
            "invalid type: floating point `1.5`, expected u8 at line 1 column 18"
        );
        assert_eq!(
            check("MachineConfiguration", "{\n \"vcpu_count\": -1}").unwrap_err(),
            "invalid value: integer `-1`, expected u8 at line 2 column 17"
        );
        assert_eq!(
            check("BootSource", "{\"kernel_image_path\": [1]}").unwrap_err(),
            "invalid type: sequence, expected a string at line 1 column 22"
        );
        assert_eq!(
            check("Vm", "{\"state\": \"Paused\"} x").unwrap_err(),
            "trailing characters at line 1 column 21"
        );
        assert_eq!(
            check("Vm", "{\"state\": \"Paused\",}").unwrap_err(),
            "trailing comma at line 1 column 20"
        );
        assert_eq!(
            check("Vm", "{\"state\": \"Paused\", \"state\": \"Paused\"}").unwrap_err(),
            "duplicate field `state` at line 1 column 27"
        );
        assert_eq!(
            check("Vm", "").unwrap_err(),
            "EOF while parsing a value at line 1 column 0"
        );
    }

    #[test]
    fn null_only_where_the_rust_field_is_an_option() {
        assert!(check(
            "BootSource",
            r#"{"kernel_image_path": "k", "boot_args": null}"#
        )
        .is_ok());
        assert_eq!(
            check(
                "MachineConfiguration",
                r#"{"vcpu_count": 1, "mem_size_mib": 1, "smt": null}"#
            )
            .unwrap_err(),
            "invalid type: null, expected a boolean at line 1 column 48"
        );
    }

    #[test]
    fn mac_shape() {
        assert!(is_mac("06:00:AC:10:00:02"));
        assert!(!is_mac("06:00:ac:10:00"));
        assert!(!is_mac("06:00:ac:10:00:2"));
    }
}
