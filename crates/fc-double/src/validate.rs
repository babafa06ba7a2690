//! Body validation against a [`Shape`], with serde_json's messages and positions.
//!
//! Firecracker deserialises each body with `serde_json::from_slice` into
//! `#[serde(deny_unknown_fields)]` structs. This walks the bytes the way
//! serde_json's `Deserializer` does (same peeks, same eats, same places where
//! an error gets its position) so the double reports the same
//! `... at line L column C` text: positioned errors (type errors, syntax
//! errors) carry the offset where serde_json raised them, and custom errors
//! (unknown/missing/duplicate field, invalid MAC) take the position of the
//! enclosing object after its closing `}` was looked for.

use std::collections::HashSet;

pub use crate::lexer::JsonError;
use crate::lexer::{custom, one_of, Num, Reader};
use crate::schema::{Contract, Def, Shape};

/// Check `body` against `shape` as `serde_json::from_slice` would.
pub fn validate(contract: &Contract, shape: &Shape, body: &[u8]) -> Result<(), JsonError> {
    let mut r = Reader {
        s: body,
        i: 0,
        contract,
        depth: 0,
    };
    r.value(shape, false)?;
    // serde_json's `Deserializer::end`.
    match r.ws() {
        Some(_) => Err(r.peek_err("trailing characters")),
        None => Ok(()),
    }
}

impl Reader<'_> {
    fn value(&mut self, shape: &Shape, nullable: bool) -> Result<(), JsonError> {
        if nullable && self.ws() == Some(b'n') {
            self.i += 1;
            return self.ident(b"ull");
        }
        match shape {
            Shape::Str => self.string_value("a string").map(|_| ()),
            Shape::Mac => {
                let s = self.string_value("a string")?;
                if is_mac(&s) {
                    Ok(())
                } else {
                    Err(custom("The provided MAC address is invalid."))
                }
            }
            Shape::Bool => self.bool_value(),
            Shape::Int(ty) => self.int_value(ty),
            Shape::Enum {
                variants,
                case_insensitive,
            } => self.enum_value(variants, *case_insensitive),
            Shape::Struct(name) | Shape::Partial(name) => {
                let def = self
                    .contract
                    .def(name)
                    .ok_or_else(|| custom(format!("no definition {name}")))?;
                self.struct_value(def, matches!(shape, Shape::Partial(_)))
            }
            Shape::Array(inner) => self.seq_value(inner),
            Shape::Any => self.any_value(),
        }
    }

    fn string_value(&mut self, expected: &str) -> Result<String, JsonError> {
        match self.ws() {
            None => Err(self.expected_value_eof()),
            Some(b'"') => self.string().map_err(|e| self.fix(e)),
            Some(_) => Err(self.invalid_type(expected)),
        }
    }

    pub(crate) fn bool_value(&mut self) -> Result<(), JsonError> {
        match self.ws() {
            None => Err(self.expected_value_eof()),
            Some(b't') => {
                self.i += 1;
                self.ident(b"rue")
            }
            Some(b'f') => {
                self.i += 1;
                self.ident(b"alse")
            }
            Some(_) => Err(self.invalid_type("a boolean")),
        }
    }

    /// serde_json `parse_integer`/`parse_number`, leniently for floats.
    fn int_value(&mut self, ty: &str) -> Result<(), JsonError> {
        let n = match self.ws() {
            None => return Err(self.expected_value_eof()),
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(_) => return Err(self.invalid_type(ty)),
        };
        let (min, max): (i128, i128) = match ty {
            "u8" => (0, u8::MAX.into()),
            "u16" => (0, u16::MAX.into()),
            "u32" => (0, u32::MAX.into()),
            "u64" | "usize" => (0, u64::MAX.into()),
            "i32" => (i32::MIN.into(), i32::MAX.into()),
            _ => (i64::MIN.into(), i64::MAX.into()),
        };
        let v: i128 = match n {
            Num::U(v) => v.into(),
            Num::I(v) => v.into(),
            Num::F(_) => {
                return Err(self.fix(custom(format!(
                    "invalid type: {}, expected {ty}",
                    n.unexpected()
                ))))
            }
        };
        if v < min || v > max {
            return Err(self.fix(custom(format!(
                "invalid value: integer `{v}`, expected {ty}"
            ))));
        }
        Ok(())
    }

    /// serde_json's `deserialize_enum` for a unit-variant enum: a string, or
    /// the externally tagged `{"Variant": null}` form.
    fn enum_value(&mut self, variants: &[String], case_insensitive: bool) -> Result<(), JsonError> {
        match self.ws() {
            None => Err(self.expected_value_eof()),
            Some(b'"') => self.variant(variants, case_insensitive),
            Some(b'{') => {
                self.i += 1;
                self.enter()?;
                let ret = self.tagged_unit_variant(variants, case_insensitive);
                self.depth -= 1;
                ret?;
                match self.ws() {
                    Some(b'}') => {
                        self.i += 1;
                        Ok(())
                    }
                    Some(_) => Err(self.err("expected value")),
                    None => Err(self.err("EOF while parsing an object")),
                }
            }
            Some(_) => Err(self.peek_err("expected value")),
        }
    }

    /// The variant identifier (`deserialize_identifier`).
    fn variant(&mut self, variants: &[String], case_insensitive: bool) -> Result<(), JsonError> {
        match self.ws() {
            None => Err(self.expected_value_eof()),
            Some(b'"') => {
                let s = self.string()?;
                let known = variants
                    .iter()
                    .any(|v| *v == s || (case_insensitive && v.eq_ignore_ascii_case(&s)));
                if known {
                    return Ok(());
                }
                let names: Vec<&str> = variants.iter().map(String::as_str).collect();
                Err(self.fix(custom(format!(
                    "unknown variant `{s}`, expected {}",
                    one_of(&names)
                ))))
            }
            Some(_) => Err(self.invalid_type("variant identifier")),
        }
    }

    /// `VariantAccess`: identifier, colon, then the unit value `null`.
    fn tagged_unit_variant(
        &mut self,
        variants: &[String],
        case_insensitive: bool,
    ) -> Result<(), JsonError> {
        match self.ws() {
            Some(b'"') => {}
            Some(b'}') => return Err(self.peek_err("expected value")),
            Some(_) => return Err(self.peek_err("key must be a string")),
            None => return Err(self.peek_err("EOF while parsing an object")),
        }
        self.variant(variants, case_insensitive)?;
        match self.ws() {
            Some(b':') => self.i += 1,
            Some(_) => return Err(self.peek_err("expected `:`")),
            None => return Err(self.peek_err("EOF while parsing an object")),
        }
        match self.ws() {
            None => Err(self.expected_value_eof()),
            Some(b'n') => {
                self.i += 1;
                self.ident(b"ull")
            }
            Some(_) => Err(self.invalid_type("unit")),
        }
    }

    pub(crate) fn enter(&mut self) -> Result<(), JsonError> {
        self.depth += 1;
        if self.depth > 128 {
            return Err(self.err("recursion limit exceeded"));
        }
        Ok(())
    }

    fn struct_value(&mut self, def: &Def, partial: bool) -> Result<(), JsonError> {
        match self.ws() {
            None => Err(self.expected_value_eof()),
            Some(b'{') => {
                self.i += 1;
                self.enter()?;
                let ret = self.fields(def, partial);
                self.depth -= 1;
                let end = self.end_map();
                match (ret, end) {
                    (Err(e), _) | (Ok(()), Err(e)) => Err(self.fix(e)),
                    (Ok(()), Ok(())) => Ok(()),
                }
            }
            Some(_) => Err(self.invalid_type(&format!("struct {}", def.rust_name))),
        }
    }

    /// serde_json's `MapAccess` driving a derived `visit_map`.
    fn fields(&mut self, def: &Def, partial: bool) -> Result<(), JsonError> {
        let mut seen = HashSet::new();
        let mut first = true;
        loop {
            match self.ws() {
                None => return Err(self.peek_err("EOF while parsing an object")),
                Some(b'}') => break,
                Some(b',') if !first => {
                    self.i += 1;
                    self.ws();
                }
                Some(_) if first => {}
                Some(_) => return Err(self.peek_err("expected `,` or `}`")),
            }
            first = false;
            let key = match self.peek() {
                Some(b'"') => self.string()?,
                Some(b'}') => return Err(self.peek_err("trailing comma")),
                Some(_) => return Err(self.peek_err("key must be a string")),
                None => return Err(self.peek_err("EOF while parsing a value")),
            };
            let Some(field) = def.fields.iter().find(|f| f.name == key) else {
                let names: Vec<&str> = def.fields.iter().map(|f| f.name.as_str()).collect();
                return Err(custom(if names.is_empty() {
                    format!("unknown field `{key}`, there are no fields")
                } else {
                    format!("unknown field `{key}`, expected {}", one_of(&names))
                }));
            };
            if !seen.insert(field.name.clone()) {
                return Err(custom(format!("duplicate field `{key}`")));
            }
            match self.ws() {
                Some(b':') => self.i += 1,
                Some(_) => return Err(self.peek_err("expected `:`")),
                None => return Err(self.peek_err("EOF while parsing an object")),
            }
            self.value(&field.shape, field.nullable || partial)?;
        }
        if !partial {
            if let Some(missing) = def
                .fields
                .iter()
                .find(|f| f.required && !seen.contains(&f.name))
            {
                return Err(custom(format!("missing field `{}`", missing.name)));
            }
        }
        Ok(())
    }

    fn seq_value(&mut self, inner: &Shape) -> Result<(), JsonError> {
        match self.ws() {
            None => Err(self.expected_value_eof()),
            Some(b'[') => {
                self.i += 1;
                self.enter()?;
                let ret = self.elements(|r| r.value(inner, false));
                self.depth -= 1;
                let end = self.end_seq();
                match (ret, end) {
                    (Err(e), _) | (Ok(()), Err(e)) => Err(self.fix(e)),
                    (Ok(()), Ok(())) => Ok(()),
                }
            }
            Some(_) => Err(self.invalid_type("a sequence")),
        }
    }
}

/// Firecracker's `MacAddr::from_str`: six `:`-separated two-digit hex bytes.
pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
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
