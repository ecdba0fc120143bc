//! RESP2, the Redis serialization protocol, sans-IO: commands encoded as arrays of bulk
//! strings, and a borrowing parser of replies (including the push messages of a subscribed
//! connection, which RESP2 sends as arrays, and RESP3's `>` push and `_` null, which are read
//! the same way).

use std::fmt;
use std::io::Write;

/// Deepest nesting of arrays accepted in a reply (pub/sub replies have depth 1).
const MAX_DEPTH: usize = 8;
/// Most elements of one array accepted.
const MAX_ELEMENTS: usize = 1 << 20;
/// Largest bulk string accepted: Redis' own `proto-max-bulk-len` default.
const MAX_BULK: usize = 512 << 20;
/// Longest line (a simple string, an error or a length) accepted.
const MAX_LINE: usize = 64 * 1024;

/// Appends the header of an array of `n` elements.
pub(crate) fn write_array_header(out: &mut Vec<u8>, n: usize) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "*{n}\r\n");
}

/// Appends one bulk string made of the concatenation of `parts`.
pub(crate) fn write_bulk_parts(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let _ = write!(out, "${len}\r\n");
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a command: an array of bulk strings, one per argument.
pub(crate) fn write_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    write_array_header(out, args.len());
    for arg in args {
        write_bulk_parts(out, &[arg]);
    }
}

/// One reply, borrowing the bytes it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// `+OK`
    Simple(&'a [u8]),
    /// `-ERR ...`
    Error(&'a [u8]),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(&'a [u8]),
    /// `$-1`, `*-1` (RESP2) or `_` (RESP3).
    Nil,
    /// `*N` (RESP2) or `>N` (a RESP3 push).
    Array(Vec<Value<'a>>),
}

impl<'a> Value<'a> {
    /// The bytes of a bulk or simple string.
    pub(crate) fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Value::Bulk(b) | Value::Simple(b) => Some(b),
            _ => None,
        }
    }
}

/// Why a reply could not be parsed: the stream is not RESP (or exceeds a limit), and the
/// connection must be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// An unknown type byte.
    BadType(u8),
    /// A length or integer that is not a decimal number in range.
    BadNumber,
    /// A bulk string not followed by CRLF.
    MissingCrlf,
    /// Arrays nested deeper than the limit.
    TooDeep,
    /// A bulk string, array or line over its limit.
    TooLarge,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadType(b) => write!(f, "unknown RESP type byte 0x{b:02x}"),
            ParseError::BadNumber => f.write_str("malformed RESP number"),
            ParseError::MissingCrlf => f.write_str("RESP bulk string not followed by CRLF"),
            ParseError::TooDeep => f.write_str("RESP arrays nested too deep"),
            ParseError::TooLarge => f.write_str("RESP value over its size limit"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses one reply from the start of `buf`: `Ok(Some((value, bytes used)))`, `Ok(None)` if
/// `buf` holds only part of it (call again with more bytes), or an error.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Value<'_>, usize)>, ParseError> {
    let mut pos = 0;
    match value(buf, &mut pos, 0)? {
        Some(v) => Ok(Some((v, pos))),
        None => Ok(None),
    }
}

/// Parses the value at `*pos`, advancing it; `None` if incomplete.
fn value<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    depth: usize,
) -> Result<Option<Value<'a>>, ParseError> {
    let Some(line) = line(buf, pos)? else {
        return Ok(None);
    };
    let (&kind, rest) = line.split_first().ok_or(ParseError::BadType(b'\r'))?;
    Ok(Some(match kind {
        b'+' => Value::Simple(rest),
        b'-' => Value::Error(rest),
        b':' => Value::Integer(number(rest)?),
        b'_' if rest.is_empty() => Value::Nil,
        b'$' => {
            let len = number(rest)?;
            if len == -1 {
                return Ok(Some(Value::Nil));
            }
            let len = usize::try_from(len).map_err(|_| ParseError::BadNumber)?;
            if len > MAX_BULK {
                return Err(ParseError::TooLarge);
            }
            let start = *pos;
            let end = start + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ParseError::MissingCrlf);
            }
            *pos = end + 2;
            Value::Bulk(&buf[start..end])
        }
        b'*' | b'>' => {
            let n = number(rest)?;
            if n == -1 && kind == b'*' {
                return Ok(Some(Value::Nil));
            }
            let n = usize::try_from(n).map_err(|_| ParseError::BadNumber)?;
            if n > MAX_ELEMENTS {
                return Err(ParseError::TooLarge);
            }
            if depth + 1 > MAX_DEPTH {
                return Err(ParseError::TooDeep);
            }
            let mut items = Vec::with_capacity(n.min(16));
            for _ in 0..n {
                match value(buf, pos, depth + 1)? {
                    Some(v) => items.push(v),
                    None => return Ok(None),
                }
            }
            Value::Array(items)
        }
        other => return Err(ParseError::BadType(other)),
    }))
}

/// The line at `*pos` without its CRLF, advancing past it; `None` if incomplete.
fn line<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, ParseError> {
    let start = *pos;
    let window = &buf[start..buf.len().min(start + MAX_LINE + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(at) => {
            *pos = start + at + 2;
            Ok(Some(&buf[start..start + at]))
        }
        None if window.len() >= MAX_LINE + 2 => Err(ParseError::TooLarge),
        None => Ok(None),
    }
}

/// A decimal integer, optionally negative.
fn number(digits: &[u8]) -> Result<i64, ParseError> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(ParseError::BadNumber);
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(ParseError::BadNumber);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d - b'0')))
            .ok_or(ParseError::BadNumber)?;
    }
    Ok(if negative { -n } else { n })
}

/// A message a subscribed connection receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Push<'a> {
    /// A message on a channel subscribed to with SUBSCRIBE.
    Message {
        /// The channel.
        channel: &'a [u8],
        /// The payload.
        payload: &'a [u8],
    },
    /// A message on a channel matching a pattern subscribed to with PSUBSCRIBE.
    PMessage {
        /// The pattern it matched.
        pattern: &'a [u8],
        /// The channel.
        channel: &'a [u8],
        /// The payload.
        payload: &'a [u8],
    },
    /// The confirmation of a (p)(un)subscribe: its kind (`psubscribe`, ...), the channel or
    /// pattern, and how many subscriptions the connection now has.
    Subscription {
        /// `subscribe`, `psubscribe`, `unsubscribe` or `punsubscribe`.
        kind: &'a [u8],
        /// The channel or pattern.
        name: &'a [u8],
        /// The connection's subscription count after it.
        count: i64,
    },
    /// The answer to a PING sent while subscribed.
    Pong,
}

impl<'a> Push<'a> {
    /// Reads a reply received on a subscribed connection; `None` for anything else (an error
    /// reply, say).
    pub(crate) fn from_value(value: &Value<'a>) -> Option<Push<'a>> {
        let Value::Array(items) = value else {
            // RESP2 answers a PING on a subscribed connection with an array, RESP3 with +PONG.
            return match value {
                Value::Simple(s) if s.eq_ignore_ascii_case(b"pong") => Some(Push::Pong),
                _ => None,
            };
        };
        let kind = items.first()?.as_bytes()?;
        let kind_is = |name: &str| kind.eq_ignore_ascii_case(name.as_bytes());
        match items.as_slice() {
            [_, channel, payload] if kind_is("message") => Some(Push::Message {
                channel: channel.as_bytes()?,
                payload: payload.as_bytes()?,
            }),
            [_, pattern, channel, payload] if kind_is("pmessage") => Some(Push::PMessage {
                pattern: pattern.as_bytes()?,
                channel: channel.as_bytes()?,
                payload: payload.as_bytes()?,
            }),
            [_, name, Value::Integer(count)]
                if ["subscribe", "psubscribe", "unsubscribe", "punsubscribe"]
                    .iter()
                    .any(|k| kind_is(k)) =>
            {
                Some(Push::Subscription {
                    kind,
                    name: name.as_bytes().unwrap_or(b""),
                    count: *count,
                })
            }
            [_, _] if kind_is("pong") => Some(Push::Pong),
            _ => None,
        }
    }
}

/// Escapes the glob characters of `prefix` (`*`, `?`, `[`, `]`, `\`) for a PSUBSCRIBE pattern,
/// so that `<escaped prefix>*` matches exactly the channels that start with `prefix`.
pub(crate) fn glob_escape(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 4);
    for &b in prefix {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(args: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        write_command(&mut out, args);
        out
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(command(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            command(&[b"PUBLISH", b"ws:room", b"hi"]),
            b"*3\r\n$7\r\nPUBLISH\r\n$7\r\nws:room\r\n$2\r\nhi\r\n"
        );
        // Binary-safe: CRLF and NUL inside an argument, and the empty argument.
        assert_eq!(
            command(&[b"a\r\nb\0", b""]),
            b"*2\r\n$5\r\na\r\nb\0\r\n$0\r\n\r\n"
        );
        let mut out = Vec::new();
        write_array_header(&mut out, 3);
        write_bulk_parts(&mut out, &[b"PUBLISH"]);
        write_bulk_parts(&mut out, &[b"ws:", b"room"]);
        write_bulk_parts(&mut out, &[b"T", b"", b"hi"]);
        assert_eq!(out, command(&[b"PUBLISH", b"ws:room", b"Thi"]));
    }

    #[test]
    fn commands_round_trip_through_the_parser() {
        let big = vec![0xABu8; 100_000];
        let wire = command(&[b"SET", b"k", &big]);
        let (v, used) = parse(&wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Bulk(b"SET"),
                Value::Bulk(b"k"),
                Value::Bulk(&big)
            ])
        );
    }

    #[test]
    fn parses_every_reply_type() {
        let cases: &[(&[u8], Value<'_>)] = &[
            (b"+OK\r\n", Value::Simple(b"OK")),
            (b"+\r\n", Value::Simple(b"")),
            (
                b"-ERR unknown command\r\n",
                Value::Error(b"ERR unknown command"),
            ),
            (b":0\r\n", Value::Integer(0)),
            (b":-17\r\n", Value::Integer(-17)),
            (b":9223372036854775807\r\n", Value::Integer(i64::MAX)),
            (b"$0\r\n\r\n", Value::Bulk(b"")),
            (b"$4\r\na\r\nb\r\n", Value::Bulk(b"a\r\nb")),
            (b"$-1\r\n", Value::Nil),
            (b"*-1\r\n", Value::Nil),
            (b"_\r\n", Value::Nil),
            (b"*0\r\n", Value::Array(vec![])),
            (
                b"*3\r\n:1\r\n$1\r\nx\r\n*1\r\n+y\r\n",
                Value::Array(vec![
                    Value::Integer(1),
                    Value::Bulk(b"x"),
                    Value::Array(vec![Value::Simple(b"y")]),
                ]),
            ),
            (
                b">2\r\n$4\r\npong\r\n$0\r\n\r\n",
                Value::Array(vec![Value::Bulk(b"pong"), Value::Bulk(b"")]),
            ),
        ];
        for (wire, expected) in cases {
            let (v, used) = parse(wire).unwrap().unwrap_or_else(|| panic!("{wire:?}"));
            assert_eq!(&v, expected, "{}", String::from_utf8_lossy(wire));
            assert_eq!(used, wire.len());
        }
    }

    #[test]
    fn every_prefix_of_a_reply_is_incomplete() {
        let wire: &[u8] = b"*4\r\n$8\r\npmessage\r\n$4\r\nws:*\r\n$7\r\nws:room\r\n$5\r\nhello\r\n";
        for cut in 0..wire.len() {
            assert_eq!(parse(&wire[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse(wire).unwrap().unwrap().1, wire.len());
    }

    #[test]
    fn parses_back_to_back_replies_one_at_a_time() {
        let wire: &[u8] = b":1\r\n:2\r\n+OK\r\n";
        let mut pos = 0;
        let mut seen = Vec::new();
        while let Some((v, used)) = parse(&wire[pos..]).unwrap() {
            seen.push(v);
            pos += used;
        }
        assert_eq!(pos, wire.len());
        assert_eq!(
            seen,
            [Value::Integer(1), Value::Integer(2), Value::Simple(b"OK")]
        );
    }

    #[test]
    fn rejects_what_is_not_resp() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"?\r\n", ParseError::BadType(b'?')),
            (b"\r\n", ParseError::BadType(b'\r')),
            (b"HTTP/1.1 400\r\n", ParseError::BadType(b'H')),
            (b":\r\n", ParseError::BadNumber),
            (b":12a\r\n", ParseError::BadNumber),
            (b":99999999999999999999\r\n", ParseError::BadNumber),
            (b"$-2\r\n", ParseError::BadNumber),
            (b"*-5\r\n", ParseError::BadNumber),
            (b">-1\r\n", ParseError::BadNumber),
            (b"$3\r\nabcde\r\n", ParseError::MissingCrlf),
            (b"$999999999999\r\n", ParseError::TooLarge),
            (b"*99999999\r\n", ParseError::TooLarge),
        ];
        for (wire, expected) in cases {
            assert_eq!(
                parse(wire),
                Err(*expected),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        // Nesting past the limit.
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(&deep), Err(ParseError::TooDeep));
        let ok = [b"*1\r\n".repeat(MAX_DEPTH), b":1\r\n".to_vec()].concat();
        assert!(parse(&ok).unwrap().is_some());
        // A line that never ends.
        let long = [b"+".as_slice(), &vec![b'x'; MAX_LINE + 8]].concat();
        assert_eq!(parse(&long), Err(ParseError::TooLarge));
        assert_eq!(parse(&long[..MAX_LINE]), Ok(None));
    }

    #[test]
    fn reads_subscription_pushes() {
        let push = |wire: &[u8]| {
            let (v, _) = parse(wire).unwrap().unwrap();
            Push::from_value(&v).map(|p| format!("{p:?}"))
        };
        fn p(wire: &[u8]) -> Value<'_> {
            let (v, _) = parse(wire).unwrap().unwrap();
            assert!(Push::from_value(&v).is_some());
            v
        }
        let v = p(b"*4\r\n$8\r\npmessage\r\n$4\r\nws:*\r\n$7\r\nws:room\r\n$2\r\nhi\r\n");
        assert_eq!(
            Push::from_value(&v),
            Some(Push::PMessage {
                pattern: b"ws:*",
                channel: b"ws:room",
                payload: b"hi"
            })
        );
        let v = p(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$0\r\n\r\n");
        assert_eq!(
            Push::from_value(&v),
            Some(Push::Message {
                channel: b"c",
                payload: b""
            })
        );
        let v = p(b"*3\r\n$10\r\npsubscribe\r\n$4\r\nws:*\r\n:1\r\n");
        assert_eq!(
            Push::from_value(&v),
            Some(Push::Subscription {
                kind: b"psubscribe",
                name: b"ws:*",
                count: 1
            })
        );
        let v = p(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n");
        assert_eq!(
            Push::from_value(&v),
            Some(Push::Subscription {
                kind: b"unsubscribe",
                name: b"",
                count: 0
            })
        );
        // RESP3 push type, and both forms of PONG.
        let v = p(b">4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$1\r\nc\r\n$1\r\nx\r\n");
        assert!(matches!(
            Push::from_value(&v),
            Some(Push::PMessage { payload: b"x", .. })
        ));
        assert_eq!(
            push(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n").as_deref(),
            Some("Pong")
        );
        assert_eq!(push(b"+PONG\r\n").as_deref(), Some("Pong"));
        // Not pushes: an error, a wrong arity, a non-string kind, an integer.
        assert_eq!(push(b"-ERR nope\r\n"), None);
        assert_eq!(push(b"*2\r\n$7\r\nmessage\r\n$1\r\nc\r\n"), None);
        assert_eq!(push(b"*3\r\n:1\r\n$1\r\nc\r\n$1\r\nx\r\n"), None);
        assert_eq!(push(b":3\r\n"), None);
        assert_eq!(
            push(b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n:1\r\n$1\r\nx\r\n"),
            None
        );
    }

    #[test]
    fn escapes_glob_characters_of_a_prefix() {
        assert_eq!(glob_escape(b"ws:"), b"ws:");
        assert_eq!(glob_escape(b"a*b?[c]\\"), b"a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape(b""), b"");
    }
}
