//! A cursor over JSON text for the hand-written parsers of the hot paths (the raw records
//! of the process stage's decoder, the processed records of the live store, the times of a
//! replay file's lines). Each parser accepts a subset of JSON written the way Contrail
//! writes it and hands anything else to a general parser (arrow-json, serde_json), which
//! decodes it or says why not, so a `None` from the cursor is never an error by itself.

use chrono::NaiveDate;

/// A position in a JSON text. It reads `str`s, not bytes: the caller checks the whole
/// payload is UTF-8 once (one pass, mostly ASCII), and the strings cut from it need no
/// check of their own.
pub(crate) struct Cursor<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self {
            text,
            b: text.as_bytes(),
            i: 0,
        }
    }

    /// A whole payload that is one JSON object: `field` is called with each key (without
    /// escapes), the cursor at its value, and must consume the value. `None` when the
    /// text is not such an object or `field` gives up.
    pub(crate) fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        if !self.eat(b'}') {
            loop {
                let key = self.string()?;
                if !self.eat(b':') {
                    return None;
                }
                field(self, key)?;
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b'}') {
                    break;
                }
                return None;
            }
        }
        self.at_end().then_some(())
    }

    /// Nothing but whitespace is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    /// Skips one value of any kind (nested at most `depth` arrays and objects deep),
    /// checking JSON's grammar: `None` when it is not a JSON value. Strings may hold
    /// escapes.
    pub(crate) fn skip_value(&mut self, depth: u32) -> Option<()> {
        self.ws();
        match *self.b.get(self.i)? {
            b'"' => self.skip_string(),
            b'{' | b'[' if depth == 0 => None,
            b'{' => {
                self.i += 1;
                if self.eat(b'}') {
                    return Some(());
                }
                loop {
                    self.skip_string()?;
                    if !self.eat(b':') {
                        return None;
                    }
                    self.skip_value(depth - 1)?;
                    if self.eat(b',') {
                        continue;
                    }
                    return self.eat(b'}').then_some(());
                }
            }
            b'[' => {
                self.i += 1;
                if self.eat(b']') {
                    return Some(());
                }
                loop {
                    self.skip_value(depth - 1)?;
                    if self.eat(b',') {
                        continue;
                    }
                    return self.eat(b']').then_some(());
                }
            }
            b't' => self.literal(b"true").then_some(()),
            b'f' => self.literal(b"false").then_some(()),
            b'n' => self.literal(b"null").then_some(()),
            _ => self.number().map(|_| ()),
        }
    }

    /// Skips a string, escapes included (`\u` with four hex digits).
    fn skip_string(&mut self) -> Option<()> {
        if !self.eat(b'"') {
            return None;
        }
        loop {
            let len = self.b[self.i..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
            self.i += len;
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => {
                    let escaped = *self.b.get(self.i + 1)?;
                    self.i += 2;
                    match escaped {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let hex = self.b.get(self.i..self.i + 4)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 4;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// Skips whitespace, then consumes `c` if it comes next.
    pub(crate) fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Skips whitespace, then consumes `literal` if it comes next.
    pub(crate) fn literal(&mut self, literal: &[u8]) -> bool {
        self.ws();
        if self.b[self.i..].starts_with(literal) {
            self.i += literal.len();
            true
        } else {
            false
        }
    }

    /// `null`, or what `value` parses.
    pub(crate) fn nullable<T>(
        &mut self,
        value: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<Option<T>> {
        if self.literal(b"null") {
            Some(None)
        } else {
            value(self).map(Some)
        }
    }

    /// A string without escapes.
    pub(crate) fn string(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.i;
        let len = self.b[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if self.b[start + len] != b'"' {
            return None;
        }
        self.i = start + len + 1;
        // Both ends are at ASCII quotes, so on character boundaries.
        self.text.get(start..start + len)
    }

    pub(crate) fn bool(&mut self) -> Option<bool> {
        if self.literal(b"true") {
            Some(true)
        } else if self.literal(b"false") {
            Some(false)
        } else {
            None
        }
    }

    /// A number in JSON's grammar: its text, and whether it is an integer (no fraction,
    /// no exponent).
    pub(crate) fn number(&mut self) -> Option<(&'a [u8], bool)> {
        self.ws();
        let start = self.i;
        let digits = |c: &mut Self| {
            let from = c.i;
            while c.b.get(c.i).is_some_and(u8::is_ascii_digit) {
                c.i += 1;
            }
            c.i - from
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        let int_digits = digits(self);
        if int_digits == 0 || (int_digits > 1 && self.b[int_start] == b'0') {
            return None;
        }
        let mut integer = true;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return None;
            }
            integer = false;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return None;
            }
            integer = false;
        }
        Some((&self.b[start..self.i], integer))
    }

    pub(crate) fn f64(&mut self) -> Option<f64> {
        let (text, _) = self.number()?;
        let v: f64 = lexical_core::parse(text).ok()?;
        v.is_finite().then_some(v)
    }

    pub(crate) fn i64(&mut self) -> Option<i64> {
        match self.number()? {
            (text, true) => lexical_core::parse(text).ok(),
            _ => None,
        }
    }

    pub(crate) fn i32(&mut self) -> Option<i32> {
        self.i64()?.try_into().ok()
    }

    /// `null` (`Some(false)`), or an array of integers and nulls into `values`
    /// (`Some(true)`).
    pub(crate) fn sensors(&mut self, values: &mut Vec<Option<i32>>) -> Option<bool> {
        if self.literal(b"null") {
            return Some(false);
        }
        self.array(|c| {
            values.push(c.nullable(Cursor::i32)?);
            Some(())
        })?;
        Some(true)
    }

    /// An array: `item` is called with the cursor at each element and must consume it.
    pub(crate) fn array(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if !self.eat(b'[') {
            return None;
        }
        if self.eat(b']') {
            return Some(());
        }
        loop {
            item(self)?;
            if self.eat(b',') {
                continue;
            }
            return self.eat(b']').then_some(());
        }
    }

    /// A UTC timestamp string, as microseconds since the epoch.
    pub(crate) fn timestamp(&mut self) -> Option<i64> {
        timestamp_micros(self.string()?.as_bytes())
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]` then `Z` or `+00:00`, as microseconds (the fraction
/// truncated to microseconds, as arrow-json does).
pub(crate) fn timestamp_micros(s: &[u8]) -> Option<i64> {
    let (secs, nanos) = timestamp_parts(s)?;
    Some(secs * 1_000_000 + i64::from(nanos / 1_000))
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]` then `Z` or `+00:00`, as seconds since the epoch and
/// nanoseconds. Not a leap second.
pub(crate) fn timestamp_parts(s: &[u8]) -> Option<(i64, u32)> {
    let number = |from: usize, to: usize| -> Option<u32> {
        let digits = s.get(from..to)?;
        digits.iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, c)| s.get(at) != Some(&c)) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(number(0, 4)? as i32, number(5, 7)?, number(8, 10)?)?;
    let time = date.and_hms_opt(number(11, 13)?, number(14, 16)?, number(17, 19)?)?;
    let mut i = 19;
    let mut nanos = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let len = i - start;
        if !(1..=9).contains(&len) {
            return None;
        }
        nanos = number(start, i)? * 10u32.pow(9 - len as u32);
    }
    if !matches!(&s[i..], b"Z" | b"+00:00") {
        return None;
    }
    Some((time.and_utc().timestamp(), nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let us = |s: &str| timestamp_micros(s.as_bytes());
        assert_eq!(us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(us("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(us("1970-01-01T00:00:00.123456789+00:00"), Some(123_456));
        assert_eq!(us("1969-12-31T23:59:59.9999999Z"), Some(-1));
        assert_eq!(us("2024-02-29T12:00:00Z"), Some(1_709_208_000_000_000));
        for refused in [
            "2023-02-29T12:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:59:60Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.1234567890Z",
            "2024-01-01T00:00:00+01:00",
            "2024-1-01T00:00:00Z",
        ] {
            assert_eq!(us(refused), None, "{refused}");
        }
    }
}
