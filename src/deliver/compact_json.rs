//! The body exactly as Node's `JSON.stringify(JSON.parse(body))` writes it.
//!
//! Zoom's Node SDK (`@zoom/rivet`) and Zoom's sample code do not verify `x-zm-signature` over the
//! bytes they received: they parse the body and verify over `JSON.stringify` of the result. Any
//! body not already in that form (spaces, `\/`, `\u00e9`, `1.0`, a key given twice …) fails their
//! check. A `zoom`-scheme subscription with `body_format = "compact"` therefore sends, and signs,
//! the bytes those consumers will compute, so their check passes on every event.
//!
//! The rules are ECMAScript's, not serde_json's, because the consumer runs ECMAScript:
//! - **Parse** (`JSON.parse`): strict JSON; strings become UTF-16 code units (so `\ud800` alone
//!   is kept, and `\ud83d\ude00` pairs into one character); every number becomes an IEEE double;
//!   a key given twice keeps its **last** value at its **first** position.
//! - **Object key order** (`OrdinaryOwnPropertyKeys`): keys that are array indices (`"0"`, `"7"`,
//!   up to 2³² − 2, no leading zeros) come first in ascending numeric order, then the others in
//!   the order they were first seen.
//! - **Strings** (`QuoteJSONString`): only `"`, `\`, control characters (`\b \f \n \r \t`, else
//!   `\u00xx`) and lone surrogates (`\udxxx`) are escaped, in lowercase hex; everything else,
//!   U+2028/U+2029 and `/` included, is written as is.
//! - **Numbers** (`Number::toString`): shortest round-trip digits, exponent form from 1e21 and
//!   below 1e-6, `-0` as `0`; a number too large for a double (`1e400`) is Infinity, which
//!   `JSON.stringify` writes as `null`. The digits come from `ryu-js`, which implements exactly
//!   that algorithm.
//!
//! Invalid UTF-8 is decoded as Node decodes a request body (`Buffer.toString()`: each maximal
//! invalid subpart becomes U+FFFD), so the result is what the consumer sees after its own decode.

use std::collections::HashMap;

/// Deeper nesting is refused: `JSON.stringify` recurses and Node throws `RangeError` well before
/// stack exhaustion in any case, and zoomhook's own ingest refuses bodies nested more than 128
/// deep, so no stored Zoom event comes near this.
pub const MAX_DEPTH: usize = 512;

/// Why a body has no compact form (it is not JSON as `JSON.parse` reads it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the body cannot be written in compact form: {message} at byte {offset}")]
pub struct CompactError {
    /// Byte offset in the (UTF-8 decoded) body where parsing stopped.
    pub offset: usize,
    pub message: &'static str,
}

/// `JSON.stringify(JSON.parse(body))` as Node produces it, as UTF-8 bytes.
pub fn compact(body: &[u8]) -> Result<Vec<u8>, CompactError> {
    let text = String::from_utf8_lossy(body);
    let mut parser = Parser {
        src: text.as_bytes(),
        pos: 0,
    };
    parser.skip_whitespace();
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos != parser.src.len() {
        return Err(parser.error("unexpected text after the JSON value"));
    }
    let mut out = String::with_capacity(body.len());
    value.write(&mut out);
    Ok(out.into_bytes())
}

/// A parsed value whose scalars are already in their output form: what `JSON.stringify` writes
/// for a string, number or literal depends only on that value, so only objects need a structure
/// (for duplicate keys and key order).
enum Node {
    /// A string (quoted and escaped), a number or `true`/`false`/`null`, as written out.
    Scalar(String),
    Array(Vec<Node>),
    Object(Object),
}

/// An object's members in first-seen order, with an index to find a repeated key.
#[derive(Default)]
struct Object {
    /// `(key as written out, with its quotes; value)`.
    members: Vec<(String, Node)>,
    /// Where each key sits in `members`. The written-out form identifies a key: `QuoteJSONString`
    /// is one-to-one on code-unit sequences.
    index: HashMap<String, usize>,
}

impl Object {
    /// `CreateDataProperty`: a repeated key replaces the value and keeps its first position.
    fn insert(&mut self, key: String, value: Node) {
        match self.index.get(&key) {
            Some(&at) => self.members[at].1 = value,
            None => {
                self.index.insert(key.clone(), self.members.len());
                self.members.push((key, value));
            }
        }
    }
}

impl Node {
    fn write(&self, out: &mut String) {
        match self {
            Node::Scalar(text) => out.push_str(text),
            Node::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Node::Object(object) => {
                // Array-index keys first, ascending; then the others in insertion order.
                let mut indexed: Vec<(u32, &(String, Node))> = object
                    .members
                    .iter()
                    .filter_map(|m| array_index(&m.0).map(|n| (n, m)))
                    .collect();
                indexed.sort_by_key(|(n, _)| *n);
                let named = object
                    .members
                    .iter()
                    .filter(|m| array_index(&m.0).is_none());
                out.push('{');
                for (i, (key, value)) in
                    indexed.into_iter().map(|(_, m)| m).chain(named).enumerate()
                {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(key);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// The numeric value of a key (given with its quotes) that ECMAScript treats as an array index:
/// the canonical decimal form of an integer below 2³² − 1. Digits are never escaped on output,
/// so the written-out form is the key itself.
fn array_index(quoted: &str) -> Option<u32> {
    let key = quoted.strip_prefix('"')?.strip_suffix('"')?;
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if key.len() > 1 && key.starts_with('0') {
        return None;
    }
    key.parse::<u32>().ok().filter(|&n| n != u32::MAX)
}

struct Parser<'a> {
    /// Valid UTF-8 (decoded lossily from the body).
    src: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: &'static str) -> CompactError {
        CompactError {
            offset: self.pos,
            message,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    /// `JSON.parse` allows exactly these four; not U+FEFF, not other Unicode spaces.
    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect_literal(&mut self, word: &'static str) -> Result<Node, CompactError> {
        if self.src[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(Node::Scalar(word.to_owned()))
        } else {
            Err(self.error("unexpected token"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, CompactError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Node::Scalar(self.string()?)),
            Some(b't') => self.expect_literal("true"),
            Some(b'f') => self.expect_literal("false"),
            Some(b'n') => self.expect_literal("null"),
            Some(b'-' | b'0'..=b'9') => Ok(Node::Scalar(self.number()?)),
            Some(_) => Err(self.error("unexpected token")),
            None => Err(self.error("unexpected end of JSON input")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Node, CompactError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested deeper than 512 levels"));
        }
        self.pos += 1; // `{`
        let mut object = Object::default();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Node::Object(object));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.string()?;
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.error("expected `:` after a key"));
            }
            self.pos += 1;
            self.skip_whitespace();
            let value = self.value(depth)?;
            object.insert(key, value);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Node::Object(object));
                }
                _ => return Err(self.error("expected `,` or `}` in an object")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Node, CompactError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested deeper than 512 levels"));
        }
        self.pos += 1; // `[`
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Node::Array(items));
        }
        loop {
            self.skip_whitespace();
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Node::Array(items));
                }
                _ => return Err(self.error("expected `,` or `]` in an array")),
            }
        }
    }

    /// A string literal as `JSON.stringify` writes it back (with its quotes).
    fn string(&mut self) -> Result<String, CompactError> {
        self.pos += 1; // opening quote
        let mut units: Vec<u16> = Vec::new();
        loop {
            let Some(byte) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            match byte {
                b'"' => {
                    self.pos += 1;
                    break;
                }
                b'\\' => {
                    self.pos += 1;
                    let unit = match self.peek() {
                        Some(b'"') => 0x22,
                        Some(b'\\') => 0x5c,
                        Some(b'/') => 0x2f,
                        Some(b'b') => 0x08,
                        Some(b'f') => 0x0c,
                        Some(b'n') => 0x0a,
                        Some(b'r') => 0x0d,
                        Some(b't') => 0x09,
                        Some(b'u') => {
                            let hex = self
                                .src
                                .get(self.pos + 1..self.pos + 5)
                                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                                .ok_or_else(|| self.error("bad \\u escape"))?;
                            // Four ASCII hex digits: valid UTF-8 and a valid u16.
                            let hex = std::str::from_utf8(hex)
                                .map_err(|_| self.error("bad \\u escape"))?;
                            let unit = u16::from_str_radix(hex, 16)
                                .map_err(|_| self.error("bad \\u escape"))?;
                            self.pos += 4;
                            unit
                        }
                        _ => return Err(self.error("bad escape in a string")),
                    };
                    self.pos += 1;
                    units.push(unit);
                }
                0x00..=0x1f => return Err(self.error("control character in a string")),
                _ => {
                    let rest = &self.src[self.pos..];
                    // `src` is valid UTF-8 and `pos` is on a character boundary here.
                    let ch = std::str::from_utf8(&rest[..utf8_len(byte).min(rest.len())])
                        .ok()
                        .and_then(|s| s.chars().next())
                        .ok_or_else(|| self.error("invalid UTF-8"))?;
                    let mut buf = [0u16; 2];
                    units.extend_from_slice(ch.encode_utf16(&mut buf));
                    self.pos += ch.len_utf8();
                }
            }
        }
        Ok(quote(&units))
    }

    /// A number as `Number::toString` writes the double it parses to.
    fn number(&mut self) -> Result<String, CompactError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("no digits in a number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(self.error("no digits after `.`"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(self.error("no digits in an exponent"));
            }
            self.digits();
        }
        // The grammar above is ASCII, and Rust's parser rounds correctly, as ECMAScript requires.
        let text = std::str::from_utf8(&self.src[start..self.pos])
            .map_err(|_| self.error("invalid number"))?;
        let value: f64 = text.parse().map_err(|_| self.error("invalid number"))?;
        Ok(number_to_string(value))
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }
}

/// Length of the UTF-8 sequence a leading byte starts.
fn utf8_len(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

/// `JSON.stringify` of a number: `Number::toString`, with non-finite values as `null`.
fn number_to_string(value: f64) -> String {
    if !value.is_finite() {
        "null".to_owned()
    } else if value == 0.0 {
        // Both zeros: (-0).toString() is "0".
        "0".to_owned()
    } else {
        ryu_js::Buffer::new().format_finite(value).to_owned()
    }
}

/// `QuoteJSONString` over UTF-16 code units.
fn quote(units: &[u16]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(units.len() + 2);
    out.push('"');
    for item in char::decode_utf16(units.iter().copied()) {
        match item {
            Ok('"') => out.push_str("\\\""),
            Ok('\\') => out.push_str("\\\\"),
            Ok('\u{8}') => out.push_str("\\b"),
            Ok('\u{c}') => out.push_str("\\f"),
            Ok('\n') => out.push_str("\\n"),
            Ok('\r') => out.push_str("\\r"),
            Ok('\t') => out.push_str("\\t"),
            Ok(c) if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            Ok(c) => out.push(c),
            // A surrogate without its partner.
            Err(lone) => {
                let _ = write!(out, "\\u{:04x}", lone.unpaired_surrogate());
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(body: &str) -> String {
        match compact(body.as_bytes()) {
            Ok(bytes) => String::from_utf8(bytes).unwrap_or_default(),
            Err(e) => format!("error: {e}"),
        }
    }

    // Expected values are what Node 20 prints for `JSON.stringify(JSON.parse(body))`; the
    // integration test `zoom_dropin` compares a larger corpus with a running `node`.
    #[test]
    fn spacing_escapes_and_numbers_follow_ecmascript() {
        assert_eq!(c(r#" { "a" : [ 1 , 2 ] } "#), r#"{"a":[1,2]}"#);
        assert_eq!(
            c(r#""\/\u00e9\u2028\b\u0001\u001F""#),
            "\"/é\u{2028}\\b\\u0001\\u001f\""
        );
        assert_eq!(
            c(r#""\ud83d\ude00 \uD800x\uDC00""#),
            r#""😀 \ud800x\udc00""#
        );
        assert_eq!(c("1.0"), "1");
        assert_eq!(c("-0"), "0");
        assert_eq!(c("1e21"), "1e+21");
        assert_eq!(c("123456789012345678901"), "123456789012345680000");
        assert_eq!(c("12345678901234567890"), "12345678901234567000");
        assert_eq!(c("0.000001"), "0.000001");
        assert_eq!(c("0.0000001"), "1e-7");
        assert_eq!(c("1e400"), "null");
        assert_eq!(c("-1e-400"), "0");
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_at_the_first_position_and_indices_go_first() {
        assert_eq!(c(r#"{"a":1,"b":2,"a":3}"#), r#"{"a":3,"b":2}"#);
        assert_eq!(
            c(r#"{"b":1,"10":2,"2":3,"01":4,"4294967295":5,"4294967294":6}"#),
            r#"{"2":3,"10":2,"4294967294":6,"b":1,"01":4,"4294967295":5}"#
        );
        assert_eq!(c(r#"{"\u0031":1,"a":2}"#), r#"{"1":1,"a":2}"#);
    }

    #[test]
    fn what_json_parse_refuses_is_an_error() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "+1",
            "\"\t\"",
            "\"\\x\"",
            "nul",
            "\u{feff}{}",
            "{} x",
            "NaN",
            "'a'",
        ] {
            assert!(compact(bad.as_bytes()).is_err(), "{bad:?} must be refused");
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(compact(deep.as_bytes()).is_err());
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(c(&ok), ok);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters_as_node_decodes_it() {
        assert_eq!(
            compact(b"\"a\xffb\"").ok(),
            Some("\"a\u{fffd}b\"".as_bytes().to_vec())
        );
    }
}
