//! serde_json's token-level reading: positions, whitespace, strings, numbers, type errors.

use std::fmt;

use crate::schema::Contract;

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

pub(crate) struct Reader<'a> {
    pub(crate) s: &'a [u8],
    pub(crate) i: usize,
    pub(crate) contract: &'a Contract,
    pub(crate) depth: usize,
}

pub(crate) fn custom(msg: impl Into<String>) -> JsonError {
    JsonError {
        msg: msg.into(),
        pos: None,
    }
}

/// serde's `OneOf` list: "`a`", "`a` or `b`", "one of `a`, `b`, `c`".
pub(crate) fn one_of(names: &[&str]) -> String {
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
    pub(crate) fn pos_of(&self, i: usize) -> (usize, usize) {
        let start = self.s[..i]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1);
        let line = 1 + self.s[..start].iter().filter(|b| **b == b'\n').count();
        (line, i - start)
    }
    /// serde_json `error`: at the current offset.
    pub(crate) fn err(&self, msg: impl Into<String>) -> JsonError {
        JsonError {
            msg: msg.into(),
            pos: Some(self.pos_of(self.i)),
        }
    }
    /// serde_json `peek_error`: one past the current offset.
    pub(crate) fn peek_err(&self, msg: impl Into<String>) -> JsonError {
        JsonError {
            msg: msg.into(),
            pos: Some(self.pos_of((self.i + 1).min(self.s.len()))),
        }
    }
    pub(crate) fn fix(&self, e: JsonError) -> JsonError {
        match e.pos {
            Some(_) => e,
            None => JsonError {
                pos: Some(self.pos_of(self.i)),
                ..e
            },
        }
    }
    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    pub(crate) fn ws(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
        self.peek()
    }

    /// Deserialize one value of `shape`; `nullable` is an `Option` wrapper.
    pub(crate) fn expected_value_eof(&self) -> JsonError {
        self.peek_err("EOF while parsing a value")
    }

    pub(crate) fn ident(&mut self, rest: &[u8]) -> Result<(), JsonError> {
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
    pub(crate) fn invalid_type(&mut self, expected: &str) -> JsonError {
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
    pub(crate) fn string(&mut self) -> Result<String, JsonError> {
        self.i += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("EOF while parsing a string"));
            };
            self.i += 1;
            match c {
                b'"' => {
                    return String::from_utf8(out)
                        .map_err(|_| self.err("invalid unicode code point"))
                }
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
                            let ch = self.unicode_escape()?;
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

    /// serde_json's `decode_hex_escape`: four bytes are consumed, then judged.
    fn hex4(&mut self) -> Result<u16, JsonError> {
        let Some(h) = self.s.get(self.i..self.i + 4) else {
            self.i = self.s.len();
            return Err(self.err("EOF while parsing a string"));
        };
        self.i += 4;
        std::str::from_utf8(h)
            .ok()
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u16::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.err("invalid escape"))
    }

    /// serde_json's `parse_unicode_escape` (validating: surrogates must pair).
    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let n = self.hex4()?;
        if (0xDC00..=0xDFFF).contains(&n) {
            return Err(self.err("lone leading surrogate in hex escape"));
        }
        if !(0xD800..=0xDBFF).contains(&n) {
            return Ok(char::from_u32(n.into()).unwrap_or('\u{fffd}'));
        }
        for want in [b'\\', b'u'] {
            match self.peek() {
                None => return Err(self.err("EOF while parsing a string")),
                Some(c) => {
                    self.i += 1;
                    if c != want {
                        return Err(self.err("unexpected end of hex escape"));
                    }
                }
            }
        }
        let n2 = self.hex4()?;
        if !(0xDC00..=0xDFFF).contains(&n2) {
            return Err(self.err("lone leading surrogate in hex escape"));
        }
        let code = ((u32::from(n - 0xD800) << 10) | u32::from(n2 - 0xDC00)) + 0x1_0000;
        Ok(char::from_u32(code).unwrap_or('\u{fffd}'))
    }

    /// serde_json's `parse_integer` and friends, digit for digit: the same
    /// overflow fallbacks, the same (not always correctly rounded) float
    /// value, the same error positions.
    pub(crate) fn number(&mut self) -> Result<Num, JsonError> {
        let positive = self.peek() != Some(b'-');
        if !positive {
            self.i += 1;
        }
        let Some(c) = self.peek() else {
            return Err(self.err("EOF while parsing a value"));
        };
        self.i += 1;
        let mut significand: u64 = match c {
            b'0' => {
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.peek_err("invalid number"));
                }
                0
            }
            b'1'..=b'9' => u64::from(c - b'0'),
            _ => return Err(self.err("invalid number")),
        };
        if c != b'0' {
            while let Some(d @ b'0'..=b'9') = self.peek() {
                let digit = u64::from(d - b'0');
                if overflows(significand, digit, u64::MAX) {
                    // parse_long_integer: further integer digits only scale.
                    let mut exponent = 0i32;
                    while let Some(b'0'..=b'9') = self.peek() {
                        self.i += 1;
                        exponent += 1;
                    }
                    return self.float_tail(positive, significand, exponent).map(Num::F);
                }
                self.i += 1;
                significand = significand * 10 + digit;
            }
        }
        match self.peek() {
            Some(b'.' | b'e' | b'E') => self.float_tail(positive, significand, 0).map(Num::F),
            _ if positive => Ok(Num::U(significand)),
            _ => {
                let neg = (significand as i64).wrapping_neg();
                Ok(if neg >= 0 {
                    Num::F(-(significand as f64))
                } else {
                    Num::I(neg)
                })
            }
        }
    }

    /// `parse_decimal` / `parse_exponent` / `f64_from_parts`.
    fn float_tail(&mut self, positive: bool, mut sig: u64, mut exp: i32) -> Result<f64, JsonError> {
        if self.peek() == Some(b'.') {
            self.i += 1;
            let mut after = 0i32;
            let mut saw_digit = false;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                saw_digit = true;
                let digit = u64::from(d - b'0');
                if overflows(sig, digit, u64::MAX) {
                    while let Some(b'0'..=b'9') = self.peek() {
                        self.i += 1;
                    }
                    break;
                }
                self.i += 1;
                sig = sig * 10 + digit;
                after -= 1;
            }
            if !saw_digit {
                return Err(match self.peek() {
                    Some(_) => self.peek_err("invalid number"),
                    None => self.peek_err("EOF while parsing a value"),
                });
            }
            exp += after;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            let positive_exp = match self.peek() {
                Some(b'+') => {
                    self.i += 1;
                    true
                }
                Some(b'-') => {
                    self.i += 1;
                    false
                }
                _ => true,
            };
            let Some(c) = self.peek() else {
                return Err(self.err("EOF while parsing a value"));
            };
            self.i += 1;
            if !c.is_ascii_digit() {
                return Err(self.err("invalid number"));
            }
            let mut e = i32::from(c - b'0');
            while let Some(d @ b'0'..=b'9') = self.peek() {
                self.i += 1;
                let digit = i32::from(d - b'0');
                if overflows(e as u64, digit as u64, i32::MAX as u64) {
                    if sig != 0 && positive_exp {
                        return Err(self.err("number out of range"));
                    }
                    while let Some(b'0'..=b'9') = self.peek() {
                        self.i += 1;
                    }
                    return Ok(if positive { 0.0 } else { -0.0 });
                }
                e = e * 10 + digit;
            }
            exp = if positive_exp {
                exp.saturating_add(e)
            } else {
                exp.saturating_sub(e)
            };
        }
        let mut f = sig as f64;
        loop {
            match pow10(exp.unsigned_abs()) {
                Some(p) => {
                    if exp >= 0 {
                        f *= p;
                        if f.is_infinite() {
                            return Err(self.err("number out of range"));
                        }
                    } else {
                        f /= p;
                    }
                    break;
                }
                None => {
                    if f == 0.0 {
                        break;
                    }
                    if exp >= 0 {
                        return Err(self.err("number out of range"));
                    }
                    f /= 1e308;
                    exp += 308;
                }
            }
        }
        Ok(if positive { f } else { -f })
    }

    pub(crate) fn end_map(&mut self) -> Result<(), JsonError> {
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

    pub(crate) fn elements(
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

    pub(crate) fn end_seq(&mut self) -> Result<(), JsonError> {
        match self.ws() {
            Some(b']') => {
                self.i += 1;
                Ok(())
            }
            Some(b',') => {
                self.i += 1;
                match self.ws() {
                    Some(b']') => Err(self.peek_err("trailing comma")),
                    _ => Err(self.peek_err("trailing characters")),
                }
            }
            Some(_) => Err(self.peek_err("trailing characters")),
            None => Err(self.peek_err("EOF while parsing a list")),
        }
    }

    /// Any JSON value (`serde_json::Value`).
    pub(crate) fn any_value(&mut self) -> Result<(), JsonError> {
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

    pub(crate) fn any_entries(&mut self) -> Result<(), JsonError> {
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

pub(crate) enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl Num {
    /// serde_json's `JsonUnexpected` text for a number.
    pub(crate) fn unexpected(&self) -> String {
        match self {
            Num::U(v) => format!("integer `{v}`"),
            Num::I(v) => format!("integer `{v}`"),
            Num::F(v) => format!("floating point `{}`", json_float(*v)),
        }
    }
}

/// serde_json's text for a float in an error: shortest round-trip digits,
/// scientific (`1e+16`, `1e-6`) outside `1e-5 <= |v| < 1e16`, else decimal
/// with at least one fractional digit.
pub(crate) fn json_float(v: f64) -> String {
    let sci = format!("{:e}", v.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if v.is_sign_negative() { "-" } else { "" };
    if !(-5..16).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let plus = if exp >= 0 { "+" } else { "" };
        return format!("{sign}{first}{frac}e{plus}{exp}");
    }
    if exp < 0 {
        let zeros = "0".repeat((-exp - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let int_len = exp as usize + 1;
    let (int, frac) = if digits.len() > int_len {
        (digits[..int_len].to_string(), digits[int_len..].to_string())
    } else {
        (format!("{digits:0<int_len$}"), "0".to_string())
    };
    format!("{sign}{int}.{frac}")
}

/// serde_json's `overflow!(a * 10 + b, max)`.
fn overflows(a: u64, b: u64, max: u64) -> bool {
    a >= max / 10 && (a > max / 10 || b > max % 10)
}

/// serde_json's `POW10` table: the literals `1e0` ..= `1e308`.
fn pow10(e: u32) -> Option<f64> {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        (0..=308)
            .map(|i| format!("1e{i}").parse().unwrap_or(f64::INFINITY))
            .collect()
    });
    t.get(e as usize).copied()
}
