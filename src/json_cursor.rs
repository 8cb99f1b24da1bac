//! A cursor over JSON text for the hand-written parsers of the hot paths (the raw records
//! of the process stage's decoder, the processed records of the live store, the times of a
//! replay file's lines). Each parser accepts a subset of JSON written the way Contrail
//! writes it and hands anything else to a general parser (arrow-json, serde_json), which
//! decodes it or says why not, so a `None` from the cursor is never an error by itself.

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
        field: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        self.members(Self::string, field)
    }

    /// [`Self::object`] for a parser that knows its keys: `field` gets the key's id, its
    /// position in `keys`, or `None` for a key it does not know. `keys` lists the known keys
    /// in the order Contrail writes them; each key is first compared, as it stands in the
    /// text, with the known key after the last one read, and a match settles it without
    /// scanning and looking up the string. Any other key is read as [`Self::string`] reads
    /// it (an escape gives up) and looked up in `keys`.
    /// The keys in `keys` hold no `"`, `\` or control character, so `"key"` in the text is
    /// that key and no other.
    pub(crate) fn object_keyed(
        &mut self,
        keys: &[&str],
        field: impl FnMut(&mut Self, Option<u32>) -> Option<()>,
    ) -> Option<()> {
        let mut next: u32 = 0;
        self.members(
            |c| {
                c.ws();
                if let Some(key) = keys.get(next as usize) {
                    let at = c.i + 1 + key.len();
                    if c.b.get(c.i) == Some(&b'"')
                        && c.b.get(at) == Some(&b'"')
                        && &c.b[c.i + 1..at] == key.as_bytes()
                    {
                        c.i = at + 1;
                        let id = next;
                        next += 1;
                        return Some(Some(id));
                    }
                }
                let key = c.string()?;
                let id = keys.iter().position(|k| *k == key).map(|id| id as u32);
                if let Some(id) = id {
                    next = id + 1;
                }
                Some(id)
            },
            field,
        )
    }

    /// An object's members: `key` reads each key, `field` its value.
    fn members<K>(
        &mut self,
        mut key: impl FnMut(&mut Self) -> Option<K>,
        mut field: impl FnMut(&mut Self, K) -> Option<()>,
    ) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        if !self.eat(b'}') {
            loop {
                let key = key(self)?;
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
            self.i += string_end(&self.b[self.i..])?;
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
        let len = string_end(&self.b[start..])?;
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

    /// A number in JSON's grammar.
    pub(crate) fn number(&mut self) -> Option<Number<'a>> {
        self.ws();
        let start = self.i;
        let negative = self.b.get(self.i) == Some(&b'-');
        self.i += usize::from(negative);
        let int_start = self.i;
        let mut mantissa = 0u64;
        let int_digits = self.digits(&mut mantissa);
        if int_digits == 0 || (int_digits > 1 && self.b[int_start] == b'0') {
            return None;
        }
        let mut fraction = 0;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            fraction = self.digits(&mut mantissa);
            if fraction == 0 {
                return None;
            }
        }
        let exponent = matches!(self.b.get(self.i), Some(b'e' | b'E'));
        if exponent {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if self.digits(&mut 0) == 0 {
                return None;
            }
        }
        Some(Number {
            text: &self.b[start..self.i],
            negative,
            // 19 decimal digits always fit in a u64; more may have wrapped.
            mantissa: (int_digits + fraction <= 19).then_some(mantissa),
            fraction,
            exponent,
        })
    }

    /// Consumes ASCII digits, appending each to `value` (wrapping; the caller counts them),
    /// and gives how many there were.
    fn digits(&mut self, value: &mut u64) -> u32 {
        let from = self.i;
        while let Some(&d) = self.b.get(self.i).filter(|d| d.is_ascii_digit()) {
            *value = value.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            self.i += 1;
        }
        (self.i - from) as u32
    }

    pub(crate) fn f64(&mut self) -> Option<f64> {
        self.number()?.f64()
    }

    pub(crate) fn i64(&mut self) -> Option<i64> {
        self.number()?.i64()
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

/// Where the unescaped text of a string ends: the position of the first `"`, `\` or
/// control character in `b` (the closing quote, an escape, or a character JSON refuses in a
/// string), `None` if there is none. Eight bytes at a time: in each 64-bit word,
/// `(x - 0x01..01) & !x & 0x80..80` flags the bytes of `x` that are zero, and the lowest
/// flag is always a true one (a false flag needs a borrow, which only a true flag below it
/// starts); with `0x20..20` instead of `0x01..01` it flags the bytes below 0x20.
fn string_end(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let zero_flags = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut words = b.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let found = zero_flags(x ^ (ONES * u64::from(b'"')))
            | zero_flags(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH);
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let rest = words.remainder();
    rest.iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| at + p)
}

/// A JSON number the cursor read: its text, and its value parsed on the way where that is
/// exact (Clinger's fast path), lexical-core otherwise.
pub(crate) struct Number<'a> {
    pub(crate) text: &'a [u8],
    negative: bool,
    /// The digits, the fraction's included, as one integer (sign apart), when there are at
    /// most 19 of them.
    mantissa: Option<u64>,
    /// How many digits follow the point.
    fraction: u32,
    exponent: bool,
}

impl Number<'_> {
    /// No fraction and no exponent.
    fn is_integer(&self) -> bool {
        self.fraction == 0 && !self.exponent
    }

    /// The nearest `f64`, as lexical-core parses it; `None` if it is not finite.
    pub(crate) fn f64(&self) -> Option<f64> {
        const POWERS_OF_TEN: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
        ];
        match self.mantissa {
            // Both the mantissa (<= 2^53) and the power of ten (<= 10^22) are exact `f64`s,
            // and IEEE division rounds their exact quotient correctly.
            Some(m) if !self.exponent && m <= 1 << 53 && self.fraction <= 22 => {
                let v = m as f64 / POWERS_OF_TEN[self.fraction as usize];
                Some(if self.negative { -v } else { v })
            }
            _ => {
                let v: f64 = lexical_core::parse(self.text).ok()?;
                v.is_finite().then_some(v)
            }
        }
    }

    /// The integer, if the number is one and fits.
    pub(crate) fn i64(&self) -> Option<i64> {
        if !self.is_integer() {
            return None;
        }
        match self.mantissa.and_then(|m| i64::try_from(m).ok()) {
            Some(m) => Some(if self.negative { -m } else { m }),
            None => lexical_core::parse(self.text).ok(),
        }
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
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let secs =
        days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
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
    Some((secs, nanos))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date of the proleptic Gregorian calendar (year >= 0), the
/// inverse of `json_write`'s `civil_from_days` (H. Hinnant's algorithm: years counted from
/// March, in 400-year eras).
fn days_from_civil(year: u32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = i64::from((153 * ((month + 9) % 12) + 2) / 5 + day - 1);
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Known keys that are prefixes of each other, for [`Cursor::object_keyed`].
    const KEYS: [&str; 4] = ["ab", "a", "abc", "b"];

    fn lookup(key: &str) -> Option<u32> {
        KEYS.iter().position(|k| *k == key).map(|i| i as u32)
    }

    /// An object's key ids, `None` if the object was refused.
    type Ids = Option<Vec<Option<u32>>>;

    /// The ids `object_keyed` gives an object's keys, and what `object` and `lookup` give.
    fn keyed_and_looked_up(text: &str) -> (Ids, Ids) {
        let mut keyed = Vec::new();
        let a = Cursor::new(text)
            .object_keyed(&KEYS, |c, id| {
                keyed.push(id);
                c.skip_value(4)
            })
            .map(|()| keyed);
        let mut looked_up = Vec::new();
        let b = Cursor::new(text)
            .object(|c, key| {
                looked_up.push(lookup(key));
                c.skip_value(4)
            })
            .map(|()| looked_up);
        (a, b)
    }

    #[test]
    fn keyed_objects_read_known_keys_in_any_order() {
        let ids = |text| keyed_and_looked_up(text).0;
        assert_eq!(
            ids(r#"{"ab":1,"a":2,"abc":3,"b":4}"#),
            Some(vec![Some(0), Some(1), Some(2), Some(3)])
        );
        assert_eq!(ids(r#"{"abc":1,"ab":2}"#), Some(vec![Some(2), Some(0)]));
        // A prefix of the expected key, the expected key with more after it, unknown keys.
        assert_eq!(
            ids(r#"{"a":1,"abcd":2,"ab" : 3}"#),
            Some(vec![Some(1), None, Some(0)])
        );
        assert_eq!(
            ids(r#" { "b" :1 , "x":[1,{"ab":2}] } "#),
            Some(vec![Some(3), None])
        );
        assert_eq!(ids("{}"), Some(vec![]));
        // An escape gives up, as `string` does; so do a truncated key and a missing colon.
        assert_eq!(ids(r#"{"a\u0062":1}"#), None);
        assert_eq!(ids(r#"{"ab"#), None);
        assert_eq!(ids(r#"{"ab" 1}"#), None);
    }

    fn naive_string_end(b: &[u8]) -> Option<usize> {
        b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)
    }

    /// JSON numbers: a sign, an integer part, a fraction and an exponent, each of any
    /// length that matters to the fast path (19 digits, 2^53, 10^22) and beyond.
    fn json_number() -> impl Strategy<Value = String> {
        let int = prop_oneof![Just("0".to_string()), "[1-9][0-9]{0,24}"];
        let fraction = proptest::option::of("[0-9]{1,26}");
        let exponent = proptest::option::of("[eE][+-]?[0-9]{1,3}");
        (any::<bool>(), int, fraction, exponent).prop_map(|(minus, int, fraction, exponent)| {
            let mut s = String::new();
            if minus {
                s.push('-');
            }
            s.push_str(&int);
            if let Some(f) = fraction {
                s.push('.');
                s.push_str(&f);
            }
            s.push_str(&exponent.unwrap_or_default());
            s
        })
    }

    fn parsed(text: &str) -> (Option<u64>, Option<i64>) {
        let mut c = Cursor::new(text);
        let number = c.number().expect("a JSON number");
        assert_eq!(number.text, text.as_bytes());
        (number.f64().map(f64::to_bits), number.i64())
    }

    fn lexical(text: &str) -> (Option<u64>, Option<i64>) {
        let f = lexical_core::parse::<f64>(text.as_bytes()).ok();
        let is_integer = !text.contains(['.', 'e', 'E']);
        (
            f.filter(|v| v.is_finite()).map(f64::to_bits),
            is_integer
                .then(|| lexical_core::parse(text.as_bytes()).ok())
                .flatten(),
        )
    }

    proptest! {
        #[test]
        fn keyed_objects_give_the_ids_a_lookup_gives(
            members in proptest::collection::vec(
                (prop_oneof![Just("a"), Just("ab"), Just("abc"), Just("b"), Just("abd"), Just(""), Just("ba")],
                 "[ \t\n]{0,2}"),
                0..8,
            ),
        ) {
            let text = format!(
                "{{{}}}",
                members
                    .iter()
                    .enumerate()
                    .map(|(v, (k, ws))| format!("{ws}\"{k}\"{ws}:{v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let (keyed, looked_up) = keyed_and_looked_up(&text);
            prop_assert!(keyed.is_some(), "{}", text);
            prop_assert_eq!(keyed, looked_up, "{}", text);
        }

        #[test]
        fn string_end_finds_what_a_byte_at_a_time_scan_finds(
            b in proptest::collection::vec(
                prop_oneof![
                    8 => 0x20u8..0x7f,
                    2 => 0x80u8..=0xff,
                    1 => Just(b'"'),
                    1 => Just(b'\\'),
                    1 => 0u8..0x20,
                ],
                0..40,
            ),
        ) {
            prop_assert_eq!(string_end(&b), naive_string_end(&b));
        }

        #[test]
        fn numbers_parse_as_lexical_core_parses_them(text in json_number()) {
            prop_assert_eq!(parsed(&text), lexical(&text));
        }
    }

    #[test]
    fn numbers_at_the_fast_paths_edges() {
        for text in [
            "0",
            "-0",
            "-0.0",
            "0.1",
            "0.30000000000000004",
            "9007199254740992",
            "9007199254740993",
            "-9007199254740993.5",
            "1234567890123456789",
            "12345678901234567890",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "0.0000000000000000000001",
            "0.00000000000000000000001",
            "1e22",
            "1e23",
            "1.7976931348623157e308",
            "1e309",
            "-1e309",
            "4.9e-324",
            "51.123456789",
            "-0.000001",
        ] {
            assert_eq!(parsed(text), lexical(text), "{text}");
        }
        assert_eq!(parsed("-0").0, Some((-0.0f64).to_bits()));
        assert_eq!(parsed("-9223372036854775808").1, Some(i64::MIN));
        assert_eq!(parsed("0.1").0, Some(0.1f64.to_bits()));
        for refused in ["01", "-", "1.", ".5", "1e", "1e+", "+1"] {
            assert!(
                Cursor::new(refused)
                    .number()
                    .is_none_or(|n| n.text != refused.as_bytes()),
                "{refused}"
            );
        }
    }

    proptest! {
        /// The calendar by hand agrees with chrono's on every field, in range or not.
        #[test]
        fn timestamps_read_as_chrono_reads_their_fields(
            (year, month, day) in (0u32..=9999, 0u32..=13, 0u32..=32),
            (hour, minute, second) in (0u32..=24, 0u32..=60, 0u32..=60),
            fraction in proptest::option::of("[0-9]{1,9}"),
            utc_as_offset in any::<bool>(),
        ) {
            let text = format!(
                "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{}{}",
                fraction.as_ref().map(|f| format!(".{f}")).unwrap_or_default(),
                if utc_as_offset { "+00:00" } else { "Z" },
            );
            let nanos = fraction.map_or(0, |f| format!("{f:0<9}").parse::<u32>().unwrap());
            let chrono = chrono::NaiveDate::from_ymd_opt(year as i32, month, day)
                .and_then(|d| d.and_hms_opt(hour, minute, second))
                .map(|t| (t.and_utc().timestamp(), nanos));
            prop_assert_eq!(timestamp_parts(text.as_bytes()), chrono, "{}", text);
        }
    }

    #[test]
    fn timestamps() {
        let us = |s: &str| timestamp_micros(s.as_bytes());
        assert_eq!(us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(us("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(us("1970-01-01T00:00:00.123456789+00:00"), Some(123_456));
        assert_eq!(us("1969-12-31T23:59:59.9999999Z"), Some(-1));
        assert_eq!(us("2024-02-29T12:00:00Z"), Some(1_709_208_000_000_000));
        assert_eq!(us("2000-02-29T00:00:00Z"), Some(951_782_400_000_000));
        assert_eq!(us("0000-03-01T00:00:00Z"), Some(-62_162_035_200_000_000));
        assert_eq!(us("9999-12-31T23:59:59Z"), Some(253_402_300_799_000_000));
        for refused in [
            "2023-02-29T12:00:00Z",
            "1900-02-29T12:00:00Z",
            "2024-04-31T12:00:00Z",
            "2024-00-10T12:00:00Z",
            "2024-01-00T12:00:00Z",
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
