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

    pub(crate) fn number(&mut self) -> Result<Num, JsonError> {
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
            Some(b',') => Err(self.peek_err("trailing comma")),
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
            Num::F(v) => format!("floating point `{v:?}`"),
        }
    }
}
