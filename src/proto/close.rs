//! Close codes (RFC 6455 section 7.4) and close frame payloads.

use std::fmt;

use super::ProtocolError;

/// A close status code (RFC 6455 section 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation, idle timeout).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// 1005: no code was present (never sent in a frame).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1007: a message's data was not consistent with its type (e.g. invalid UTF-8).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message violated the endpoint's policy (also: write queue overflow).
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: a message was too big to process.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);

    /// Whether this code may appear in a close frame on the wire.
    ///
    /// 1000-1003 and 1007-1014 are defined or reserved for the protocol, 3000-4999 are for
    /// libraries and applications; 1004-1006, 1015, the rest of 1000-2999 and anything else are
    /// not to be sent.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> CloseCode {
        CloseCode(code)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Parses a received close payload: empty, or a sendable code followed by a UTF-8 reason.
///
/// # Errors
///
/// [`ProtocolError::BadCloseFrame`] for a 1-byte payload or a code that may not be sent,
/// [`ProtocolError::InvalidUtf8`] for a reason that is not UTF-8.
pub fn parse_close_payload(payload: &[u8]) -> Result<(Option<CloseCode>, &str), ProtocolError> {
    match payload {
        [] => Ok((None, "")),
        [_] => Err(ProtocolError::BadCloseFrame),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_sendable() {
                return Err(ProtocolError::BadCloseFrame);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok((Some(code), reason))
        }
    }
}

/// Writes a close payload: the code, then as much of `reason` as fits in 123 bytes, cut at a
/// character boundary. Returns the number of bytes written.
pub fn close_payload(code: CloseCode, reason: &str, out: &mut [u8; 125]) -> usize {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out[..2].copy_from_slice(&code.0.to_be_bytes());
    out[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    2 + end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_codes_follow_rfc_6455() {
        let valid = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        ];
        let invalid = [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ];
        for c in valid.into_iter().chain([3000, 3999, 4000, 4999]) {
            assert!(CloseCode(c).is_sendable(), "{c} should be valid");
        }
        for c in invalid {
            assert!(!CloseCode(c).is_sendable(), "{c} should be invalid");
        }
    }

    #[test]
    fn parses_close_payloads() {
        assert_eq!(parse_close_payload(b""), Ok((None, "")));
        assert_eq!(parse_close_payload(&[3]), Err(ProtocolError::BadCloseFrame));
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, b'o', b'k']),
            Ok((Some(CloseCode::NORMAL), "ok"))
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xED]),
            Err(ProtocolError::BadCloseFrame)
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, 0xFF]),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let mut out = [0u8; 125];
        let reason = "é".repeat(100); // 200 bytes
        let n = close_payload(CloseCode::NORMAL, &reason, &mut out);
        assert_eq!(n, 2 + 122);
        assert!(std::str::from_utf8(&out[2..n]).is_ok());
    }
}
