//! RFC 8941 Structured Field Values, only as far as WebTransport needs them: Strings and
//! Lists of Strings.

use super::rules::is_tchar;

fn is_sf_string_serializable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// Serializes an sf-string (RFC 8941 §4.1.6): quoted, with `"` and `\` escaped. `None`
/// if `s` has characters other than printable ASCII (0x20-0x7e).
pub fn serialize_sf_string(s: &str) -> Option<String> {
    if !is_sf_string_serializable(s) {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

/// Serializes a List of sf-strings (RFC 8941 §4.1.1), members separated by `", "`.
/// `None` if any member cannot be an sf-string. An empty list gives an empty string,
/// which RFC 8941 says not to send at all.
pub fn serialize_sf_string_list<S: AsRef<str>>(items: &[S]) -> Option<String> {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&serialize_sf_string(item.as_ref())?);
    }
    Some(out)
}

/// Parses a field value that is a single Item whose bare item is a String (RFC 8941 §4.2
/// with field type "item"); parameters are checked for syntax and ignored.
pub fn parse_sf_string_item(value: &[u8]) -> Option<String> {
    let mut p = SfParser { input: value };
    p.skip_sp();
    let s = p.string()?;
    p.skip_parameters()?;
    p.skip_sp();
    p.input.is_empty().then_some(s)
}

/// Parses a field value that is a List whose members are all String items (RFC 8941 §4.2
/// with field type "list", §4.2.1); parameters are checked for syntax and ignored. `None`
/// if the value is not such a list (inner lists and non-string items included).
pub fn parse_sf_string_list(value: &[u8]) -> Option<Vec<String>> {
    let mut p = SfParser { input: value };
    let mut members = Vec::new();
    p.skip_sp();
    while !p.input.is_empty() {
        members.push(p.string()?);
        p.skip_parameters()?;
        p.skip_ows();
        if p.input.is_empty() {
            break;
        }
        p.expect(b',')?;
        p.skip_ows();
        // §4.2.1: a trailing comma fails parsing.
        if p.input.is_empty() {
            return None;
        }
    }
    Some(members)
}

/// A cursor over a structured field value; every method returns `None` on a syntax error.
struct SfParser<'a> {
    input: &'a [u8],
}

impl SfParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.first().copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let (&first, rest) = self.input.split_first()?;
        self.input = rest;
        Some(first)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.bump()? == c).then_some(())
    }

    fn eat_while(&mut self, f: impl Fn(u8) -> bool) -> usize {
        let n = self.input.iter().take_while(|&&b| f(b)).count();
        self.input = self.input.get(n..).unwrap_or_default();
        n
    }

    fn skip_sp(&mut self) {
        self.eat_while(|b| b == b' ');
    }

    fn skip_ows(&mut self) {
        self.eat_while(|b| b == b' ' || b == b'\t');
    }

    /// §4.2.5 Parsing a String.
    fn string(&mut self) -> Option<String> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            match self.bump()? {
                b'\\' => match self.bump()? {
                    c @ (b'"' | b'\\') => out.push(char::from(c)),
                    _ => return None,
                },
                b'"' => return Some(out),
                c if (0x20..=0x7e).contains(&c) => out.push(char::from(c)),
                _ => return None,
            }
        }
    }

    /// §4.2.3.2 Parsing Parameters, discarding them.
    fn skip_parameters(&mut self) -> Option<()> {
        while self.peek() == Some(b';') {
            self.bump();
            self.skip_sp();
            self.key()?;
            if self.peek() == Some(b'=') {
                self.bump();
                self.bare_item()?;
            }
        }
        Some(())
    }

    /// §4.2.3.3 Parsing a Key.
    fn key(&mut self) -> Option<()> {
        let first = self.bump()?;
        if !(first.is_ascii_lowercase() || first == b'*') {
            return None;
        }
        self.eat_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b));
        Some(())
    }

    /// §4.2.3.1 Parsing a Bare Item, discarding it.
    fn bare_item(&mut self) -> Option<()> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string().map(drop),
            b'*' | b'a'..=b'z' | b'A'..=b'Z' => {
                // §4.2.6 Parsing a Token.
                self.bump();
                self.eat_while(|b| is_tchar(b) || b == b':' || b == b'/');
                Some(())
            }
            b':' => {
                // §4.2.7 Parsing a Byte Sequence.
                self.bump();
                self.eat_while(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
                self.expect(b':')
            }
            b'?' => {
                // §4.2.8 Parsing a Boolean.
                self.bump();
                matches!(self.bump()?, b'0' | b'1').then_some(())
            }
            _ => None,
        }
    }

    /// §4.2.4 Parsing an Integer or Decimal, discarding it.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.bump();
        }
        let int_digits = self.eat_while(|b| b.is_ascii_digit());
        if int_digits == 0 {
            return None;
        }
        if self.peek() != Some(b'.') {
            return (int_digits <= 15).then_some(());
        }
        self.bump();
        let frac_digits = self.eat_while(|b| b.is_ascii_digit());
        (int_digits <= 12 && (1..=3).contains(&frac_digits)).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sf_string_serialization() {
        assert_eq!(serialize_sf_string("a").as_deref(), Some("\"a\""));
        assert_eq!(serialize_sf_string("").as_deref(), Some("\"\""));
        assert_eq!(
            serialize_sf_string(r#"a"b\c"#).as_deref(),
            Some(r#""a\"b\\c""#)
        );
        assert_eq!(serialize_sf_string("tab\there"), None);
        assert_eq!(serialize_sf_string("\u{e9}"), None);
        assert_eq!(serialize_sf_string_list::<&str>(&[]).as_deref(), Some(""));
        assert_eq!(
            serialize_sf_string_list(&["a", "b"]).as_deref(),
            Some(r#""a", "b""#)
        );
        assert_eq!(
            parse_sf_string_item(br#""a\"b\\c""#).as_deref(),
            Some(r#"a"b\c"#)
        );
        assert_eq!(parse_sf_string_item(b"\"a\" x"), None);
        assert_eq!(parse_sf_string_item(b""), None);
        assert_eq!(parse_sf_string_list(b""), Some(vec![]));
        assert_eq!(parse_sf_string_list(b"   "), Some(vec![]));
    }

    proptest! {
        #[test]
        fn sf_string_lists_round_trip(items in proptest::collection::vec("[ -~]{0,12}", 0..6)) {
            let s = serialize_sf_string_list(&items).unwrap();
            prop_assert_eq!(parse_sf_string_list(s.as_bytes()).unwrap(), items);
        }
    }
}
