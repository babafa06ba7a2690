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
use std::fmt;

use crate::schema::{Contract, Def, Shape};

/// A body that Firecracker's deserialiser would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub msg: String,
    /// `(line, column)` as serde_json counts them; `None` until fixed.
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

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
    contract: &'a Contract,
    depth: usize,
}

fn custom(msg: impl Into<String>) -> JsonError {
    JsonError {
        msg: msg.into(),
        pos: None,
    }
}

/// serde's `OneOf` list: "`a`", "`a` or `b`", "one of `a`, `b`, `c`".
fn one_of(names: &[&str]) -> String {
    match names {
        [] => "nothing".to_string(),
        [a] => format!("`{a}`"),
        [a, b] => format!("`{a}` or `{b}`"),
        _ => {
            let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!("one of {}", list.join(", "))
        }
    }
}

impl Reader<'_> {
    fn pos_of(&self, i: usize) -> (usize, usize) {
        let start = self.s[..i]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1);
        let line = 1 + self.s[..start].iter().filter(|b| **b == b'\n').count();
        (line, i - start)
    }
    /// serde_json `error`: at the current offset.
    fn err(&self, msg: impl Into<String>) -> JsonError {
        JsonError {
            msg: msg.into(),
            pos: Some(self.pos_of(self.i)),
        }
    }
    /// serde_json `peek_error`: one past the current offset.
    fn peek_err(&self, msg: impl Into<String>) -> JsonError {
        JsonError {
            msg: msg.into(),
            pos: Some(self.pos_of((self.i + 1).min(self.s.len()))),
        }
    }
    fn fix(&self, e: JsonError) -> JsonError {
        match e.pos {
            Some(_) => e,
            None => JsonError {
                pos: Some(self.pos_of(self.i)),
                ..e
            },
        }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
        self.peek()
    }

    /// Deserialize one value of `shape`; `nullable` is an `Option` wrapper.
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

    fn expected_value_eof(&self) -> JsonError {
        self.peek_err("EOF while parsing a value")
    }

    fn ident(&mut self, rest: &[u8]) -> Result<(), JsonError> {
        for want in rest {
            match self.peek() {
                None => return Err(self.err("EOF while parsing a value")),
                Some(c) => {
                    self.i += 1;
                    if c != *want {
                        return Err(self.err("expected ident"));
                    }
                }
            }
        }
        Ok(())
    }

    /// serde_json `peek_invalid_type`, then `fix_position`.
    fn invalid_type(&mut self, expected: &str) -> JsonError {
        let unexpected = match self.peek().unwrap_or(0) {
            b'n' => {
                self.i += 1;
                if let Err(e) = self.ident(b"ull") {
                    return e;
                }
                "null".to_string()
            }
            b't' => {
                self.i += 1;
                if let Err(e) = self.ident(b"rue") {
                    return e;
                }
                "boolean `true`".to_string()
            }
            b'f' => {
                self.i += 1;
                if let Err(e) = self.ident(b"alse") {
                    return e;
                }
                "boolean `false`".to_string()
            }
            b'-' | b'0'..=b'9' => match self.number() {
                Ok(n) => n.unexpected(),
                Err(e) => return e,
            },
            b'"' => match self.string() {
                Ok(s) => format!("string {s:?}"),
                Err(e) => return e,
            },
            b'[' => "sequence".to_string(),
            b'{' => "map".to_string(),
            _ => return self.peek_err("expected value"),
        };
        self.fix(custom(format!(
            "invalid type: {unexpected}, expected {expected}"
        )))
    }

    /// A string token starting at `"`; returns its decoded text.
    fn string(&mut self) -> Result<String, JsonError> {
        self.i += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("EOF while parsing a string"));
            };
            self.i += 1;
            match c {
                b'"' => return Ok(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.err("EOF while parsing a string"));
                    };
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4);
                            let code = hex
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok());
                            let Some(code) = code else {
                                return Err(self.err("invalid escape"));
                            };
                            self.i += 4;
                            let ch = char::from_u32(code).unwrap_or('\u{fffd}');
                            out.extend_from_slice(ch.to_string().as_bytes());
                        }
                        _ => return Err(self.err("invalid escape")),
                    }
                }
                0..=0x1f => {
                    return Err(self
                        .err("control character (\\u0000-\\u001F) found while parsing a string"))
                }
                _ => out.push(c),
            }
        }
    }

    fn string_value(&mut self, expected: &str) -> Result<String, JsonError> {
        match self.ws() {
            None => Err(self.expected_value_eof()),
            Some(b'"') => self.string().map_err(|e| self.fix(e)),
            Some(_) => Err(self.invalid_type(expected)),
        }
    }

    fn bool_value(&mut self) -> Result<(), JsonError> {
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
    fn number(&mut self) -> Result<Num, JsonError> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.peek_err("invalid number"));
                }
            }
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.i += 1;
                }
            }
            None => return Err(self.peek_err("EOF while parsing a value")),
            Some(_) => return Err(self.err("invalid number")),
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            float = true;
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.peek_err("invalid number"));
            }
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            float = true;
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.peek_err("invalid number"));
            }
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("0");
        let as_float = || Num::F(text.parse::<f64>().unwrap_or(f64::NAN));
        if float {
            return Ok(as_float());
        }
        Ok(if negative {
            match text.parse::<i64>() {
                Ok(0) | Err(_) => as_float(), // serde_json turns -0 and underflow into f64
                Ok(v) => Num::I(v),
            }
        } else {
            text.parse::<u64>().map_or_else(|_| as_float(), Num::U)
        })
    }

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

    fn enum_value(&mut self, variants: &[String], case_insensitive: bool) -> Result<(), JsonError> {
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
            Some(_) => Err(self.peek_err("expected value")),
        }
    }

    fn enter(&mut self) -> Result<(), JsonError> {
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

    fn end_map(&mut self) -> Result<(), JsonError> {
        match self.ws() {
            Some(b'}') => {
                self.i += 1;
                Ok(())
            }
            Some(b',') => Err(self.peek_err("trailing comma")),
            Some(_) => Err(self.peek_err("trailing characters")),
            None => Err(self.peek_err("EOF while parsing an object")),
        }
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

    fn elements(
        &mut self,
        mut each: impl FnMut(&mut Self) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        let mut first = true;
        loop {
            match self.ws() {
                None => return Err(self.peek_err("EOF while parsing a list")),
                Some(b']') => return Ok(()),
                Some(b',') if !first => {
                    self.i += 1;
                    match self.ws() {
                        Some(b']') => return Err(self.peek_err("trailing comma")),
                        None => return Err(self.peek_err("EOF while parsing a value")),
                        Some(_) => {}
                    }
                }
                Some(_) if first => {}
                Some(_) => return Err(self.peek_err("expected `,` or `]`")),
            }
            first = false;
            each(self)?;
        }
    }

    fn end_seq(&mut self) -> Result<(), JsonError> {
        match self.ws() {
            Some(b']') => {
                self.i += 1;
                Ok(())
            }
            Some(b',') => Err(self.peek_err("trailing comma")),
            Some(_) => Err(self.peek_err("trailing characters")),
            None => Err(self.peek_err("EOF while parsing a list")),
        }
    }

    /// Any JSON value (`serde_json::Value`).
    fn any_value(&mut self) -> Result<(), JsonError> {
        match self.ws() {
            None => Err(self.expected_value_eof()),
            Some(b'n') => {
                self.i += 1;
                self.ident(b"ull")
            }
            Some(b't' | b'f') => self.bool_value(),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            Some(b'"') => self.string().map(|_| ()),
            Some(b'[') => {
                self.i += 1;
                self.enter()?;
                let ret = self.elements(|r| r.any_value());
                self.depth -= 1;
                ret.and_then(|()| self.end_seq())
            }
            Some(b'{') => {
                self.i += 1;
                self.enter()?;
                let ret = self.any_entries();
                self.depth -= 1;
                ret.and_then(|()| self.end_map())
            }
            Some(_) => Err(self.peek_err("expected value")),
        }
    }

    fn any_entries(&mut self) -> Result<(), JsonError> {
        let mut first = true;
        loop {
            match self.ws() {
                None => return Err(self.peek_err("EOF while parsing an object")),
                Some(b'}') => return Ok(()),
                Some(b',') if !first => {
                    self.i += 1;
                    self.ws();
                }
                Some(_) if first => {}
                Some(_) => return Err(self.peek_err("expected `,` or `}`")),
            }
            first = false;
            match self.peek() {
                Some(b'"') => self.string()?,
                Some(b'}') => return Err(self.peek_err("trailing comma")),
                Some(_) => return Err(self.peek_err("key must be a string")),
                None => return Err(self.peek_err("EOF while parsing a value")),
            };
            match self.ws() {
                Some(b':') => self.i += 1,
                Some(_) => return Err(self.peek_err("expected `:`")),
                None => return Err(self.peek_err("EOF while parsing an object")),
            }
            self.any_value()?;
        }
    }
}

enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl Num {
    /// serde_json's `JsonUnexpected` text for a number.
    fn unexpected(&self) -> String {
        match self {
            Num::U(v) => format!("integer `{v}`"),
            Num::I(v) => format!("integer `{v}`"),
            Num::F(v) => format!("floating point `{v:?}`"),
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
