//! The opening handshake (RFC 6455 section 4): parse and answer an upgrade request as a server,
//! write a request and check the answer as a client.

use crate::error::error_messages;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha1::{Digest, Sha1};

/// How many headers a request or response may have.
pub const MAX_HEADERS: usize = 64;

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Room for the headers of one request head, which [`Request::parse`] fills and the
/// [`Request`] borrows: make one with `Headers::new()` next to the head it is for.
#[derive(Debug)]
pub struct Headers<'b>([httparse::Header<'b>; MAX_HEADERS]);

impl Headers<'_> {
    /// Room for [`MAX_HEADERS`] headers.
    pub fn new() -> Self {
        Headers([httparse::EMPTY_HEADER; MAX_HEADERS])
    }
}

impl Default for Headers<'_> {
    fn default() -> Self {
        Headers::new()
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 section 4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    BASE64.encode(sha.finalize())
}

/// A fresh random `Sec-WebSocket-Key`: 16 random bytes, base64-encoded.
pub fn new_key() -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&super::message::random_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&super::message::random_u64().to_le_bytes());
    BASE64.encode(bytes)
}

/// Finds the end of an HTTP header block as bytes trickle in, scanning each byte once.
///
/// A request is parsed only when its blank line has arrived, never again from the start on
/// every new byte.
#[derive(Debug, Default, Clone, Copy)]
pub struct HeadScanner {
    /// Bytes already searched (a request head is far below 4 GiB; past that, the search
    /// only starts earlier than it could).
    scanned: u32,
}

impl HeadScanner {
    /// Looks for `\r\n\r\n` in `buf` (which only ever grows at the end between calls) and
    /// returns the length of the header block, blank line included, once it is there.
    ///
    /// A bare LF (not after a CR) ends the block where it stands: such a head is malformed
    /// ([`Request::parse`] refuses it), and is answered at once rather than waiting for a
    /// `\r\n\r\n` that a bare-LF client never sends.
    pub fn find_end(&mut self, buf: &[u8]) -> Option<usize> {
        let from = (self.scanned as usize).min(buf.len());
        self.scanned = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        (from..buf.len())
            .filter(|&i| buf[i] == b'\n')
            .find(|&i| i == 0 || buf[i - 1] != b'\r' || buf[..=i].ends_with(b"\r\n\r\n"))
            .map(|i| i + 1)
    }
}

/// A parsed HTTP request head: what the handler sees when deciding on an upgrade.
#[derive(Debug)]
pub struct Request<'h, 'b> {
    method: &'b str,
    path: &'b str,
    version: u8,
    headers: &'h [httparse::Header<'b>],
}

/// Why a request head could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Not valid HTTP/1.x (answered with 400).
    Malformed,
    /// More than [`MAX_HEADERS`] headers (answered with 431).
    TooManyHeaders,
}

error_messages!(ParseError {
    ParseError::Malformed => ("malformed HTTP request head"),
    ParseError::TooManyHeaders => ("too many headers"),
});

impl<'h, 'b> Request<'h, 'b> {
    /// Parses a complete header block, as delimited by [`HeadScanner`], keeping its headers
    /// in `headers`.
    ///
    /// # Errors
    ///
    /// [`ParseError::Malformed`] for a head that is not a complete HTTP/1.x request,
    /// [`ParseError::TooManyHeaders`] for more than [`MAX_HEADERS`] headers.
    pub fn parse(
        head: &'b [u8],
        headers: &'h mut Headers<'b>,
    ) -> Result<Request<'h, 'b>, ParseError> {
        // httparse takes bare LF line ends; RFC 6455 section 4.1 asks for CRLF.
        let bare_lf = head
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'));
        if bare_lf {
            return Err(ParseError::Malformed);
        }
        let mut req = httparse::Request::new(&mut headers.0);
        match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(ParseError::Malformed),
            Err(httparse::Error::TooManyHeaders) => return Err(ParseError::TooManyHeaders),
            Err(_) => return Err(ParseError::Malformed),
        }
        match (req.method, req.path, req.version) {
            (Some(method), Some(target), Some(version)) => Ok(Request {
                method,
                path: resource_name(target),
                version,
                headers: req.headers,
            }),
            _ => Err(ParseError::Malformed),
        }
    }

    /// The request method, e.g. `GET`.
    pub fn method(&self) -> &'b str {
        self.method
    }

    /// The resource name the request target names, e.g. `/chat?token=abc`: an absolute
    /// `http`/`https` target (`http://example.com/chat?token=abc`) gives its path and query
    /// (`/` for none). Any other target that does not start with `/` (`*`, `example.com:80`)
    /// is kept as it came, and an upgrade asking for it is refused with 400.
    pub fn path(&self) -> &'b str {
        self.path
    }

    /// The minor HTTP version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub fn http_minor_version(&self) -> u8 {
        self.version
    }

    /// All headers, names and raw values, in the order they came.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&'b str, &'b [u8])> + '_ {
        self.headers.iter().map(|h| (h.name, h.value))
    }

    /// The first header called `name` (any case) whose value is valid UTF-8 (see
    /// [`headers`](Self::headers) for the raw bytes).
    pub fn header(&self, name: &str) -> Option<&'b str> {
        self.header_values(name).next()
    }

    /// Every value of the headers called `name` (any case) that is valid UTF-8; others
    /// (RFC 7230's obs-text, bytes 0x80-0xFF, which need not be UTF-8) are skipped.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b str> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
    }

    /// The `Origin` header, if any.
    pub fn origin(&self) -> Option<&'b str> {
        self.header("origin")
    }

    /// The value of query parameter `name` in the request target, as sent (not
    /// percent-decoded); `Some("")` for a parameter without a value.
    pub fn query(&self, name: &str) -> Option<&'b str> {
        let (_, query) = self.path.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }

    /// The value of cookie `name` from the `Cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<&'b str> {
        self.header_values("cookie")
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                (key == name).then_some(value)
            })
    }

    /// The subprotocols the client offers in `Sec-WebSocket-Protocol`, in its order.
    pub fn protocols<'s>(&'s self) -> impl Iterator<Item = &'b str> + 's {
        comma_tokens(self.header_values("sec-websocket-protocol"))
    }

    /// Whether any `name` header holds `token` in its comma-separated list (any case).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        comma_tokens(self.header_values(name)).any(|t| t.eq_ignore_ascii_case(token))
    }

    /// Whether the client asks for a WebSocket upgrade at all (as opposed to a plain GET).
    pub fn wants_websocket(&self) -> bool {
        self.has_token("upgrade", "websocket") || self.header("sec-websocket-key").is_some()
    }

    /// Checks the request against RFC 6455 section 4.2.1 and returns the key to answer.
    ///
    /// Beyond what httparse refuses (control bytes in a header value, obs-fold: 400 as
    /// `malformed request`), it answers 400 to a request target that is neither a path nor an
    /// absolute `http`/`https` URI (RFC 7230 section 5.3 allows `*` for OPTIONS only), to
    /// a byte outside visible ASCII (obs-text) in a header the handshake reads, whose
    /// grammars are ASCII only (RFC 6455 section 4.3, RFC 6454, RFC 3986), so that none is
    /// skipped as unreadable, and to more than one `Sec-WebSocket-Version`, in several lines
    /// or as a list in one (the same thing, RFC 7230 section 3.2.2; RFC 6455 section 11.3.5
    /// allows one). Obs-text in other headers is accepted as the opaque data RFC 7230
    /// section 3.2.4 says it is.
    ///
    /// # Errors
    ///
    /// The [`Rejection`] to answer with: the HTTP status for what is wrong.
    pub fn validate_upgrade(&self) -> Result<&'b str, Rejection> {
        if self.method != "GET" {
            return Err(Rejection::MethodNotAllowed);
        }
        if self.version != 1 {
            return Err(Rejection::BadRequest(BadRequest::HttpVersion));
        }
        if !self.path.starts_with('/') {
            return Err(Rejection::BadRequest(BadRequest::Target));
        }
        let unreadable = |h: &httparse::Header<'_>| {
            HANDSHAKE_HEADERS
                .iter()
                .any(|n| h.name.eq_ignore_ascii_case(n))
                && !h
                    .value
                    .iter()
                    .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        };
        if self.headers.iter().any(unreadable) {
            return Err(Rejection::BadRequest(BadRequest::NonAscii));
        }
        let mut versions = self
            .header_values("sec-websocket-version")
            .flat_map(|v| v.split(','))
            .map(str::trim);
        match (versions.next(), versions.next()) {
            (Some("13"), None) => {}
            (_, Some(_)) => {
                return Err(Rejection::BadRequest(BadRequest::VersionRepeated));
            }
            // Draft-75/76 clients send no version: they get 426 with the one we speak.
            _ => return Err(Rejection::UnsupportedVersion),
        }
        if !self.has_token("upgrade", "websocket") {
            return Err(Rejection::BadRequest(BadRequest::NoUpgrade));
        }
        if !self.has_token("connection", "upgrade") {
            return Err(Rejection::BadRequest(BadRequest::NoConnectionUpgrade));
        }
        if self.header("host").is_none_or(|h| h.trim().is_empty()) {
            return Err(Rejection::BadRequest(BadRequest::NoHost));
        }
        let repeated = |name: &str| {
            let mut named = (self.headers.iter()).filter(|h| h.name.eq_ignore_ascii_case(name));
            named.nth(1).is_some()
        };
        // RFC 7230 section 5.4: more than one Host header gets 400.
        if repeated("host") {
            return Err(Rejection::BadRequest(BadRequest::HostRepeated));
        }
        // RFC 6454 section 7.3: a client sends one Origin; with two, an origin check could
        // pass on one and the page come from the other.
        if repeated("origin") {
            return Err(Rejection::BadRequest(BadRequest::OriginRepeated));
        }
        let mut keys = self.header_values("sec-websocket-key");
        let key = keys.next().map(str::trim).unwrap_or("");
        let decoded_len = BASE64.decode(key).map_or(0, |k| k.len());
        if decoded_len != 16 || keys.next().is_some() {
            return Err(Rejection::BadRequest(BadRequest::InvalidKey));
        }
        Ok(key)
    }
}

/// The headers [`Request::validate_upgrade`] reads, whose values must be visible ASCII.
const HANDSHAKE_HEADERS: [&str; 8] = [
    "host",
    "upgrade",
    "connection",
    "origin",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
];

/// The resource name of a request target (RFC 6455 section 3): an origin-form target as it
/// is; an absolute `http`/`https` URI (RFC 6455 section 4.2.1, and RFC 7230 section 5.3.2
/// says a server must accept the absolute form) without its scheme and authority. Any other
/// target is returned as it is, for [`Request::validate_upgrade`] to refuse.
fn resource_name(target: &str) -> &str {
    let rest = ["http://", "https://"].into_iter().find_map(|scheme| {
        let head = target.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme)
            .then(|| &target[scheme.len()..])
    });
    let Some(rest) = rest else {
        return target;
    };
    match rest.find(['/', '?', '#']) {
        None if !rest.is_empty() => "/",
        Some(at) if at > 0 && rest[at..].starts_with('/') => &rest[at..],
        _ => target, // no host, or a query with no path
    }
}

/// Splits comma-separated header values into trimmed, non-empty tokens.
fn comma_tokens<'b>(values: impl Iterator<Item = &'b str>) -> impl Iterator<Item = &'b str> {
    values
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Why an upgrade request is refused, and the HTTP status it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// 400: the request is not a valid upgrade; the cause says what is wrong.
    BadRequest(BadRequest),
    /// 405: the method is not GET.
    MethodNotAllowed,
    /// 426 with `Sec-WebSocket-Version: 13`: a version other than 13 (or none).
    UnsupportedVersion,
    /// 431: the header block is larger than the limit, or has too many headers.
    HeadersTooLarge,
}

error_messages!(Rejection {
    Rejection::BadRequest(why) => ("{why}"),
    Rejection::MethodNotAllowed => ("method not allowed"),
    Rejection::UnsupportedVersion => ("WebSocket version 13 required"),
    Rejection::HeadersTooLarge => ("request header fields too large"),
});

impl Rejection {
    /// The response for this rejection: its status, with its message as the body.
    pub fn response(self) -> HttpResponse {
        let text = |status| HttpResponse::text(status, &self.to_string());
        match self {
            Rejection::BadRequest(_) => text(400),
            Rejection::MethodNotAllowed => text(405).header("Allow", "GET"),
            Rejection::UnsupportedVersion => text(426).header("Sec-WebSocket-Version", "13"),
            Rejection::HeadersTooLarge => text(431),
        }
    }
}

impl From<ParseError> for Rejection {
    /// 400 for a malformed head, 431 for too many headers.
    fn from(e: ParseError) -> Rejection {
        match e {
            ParseError::Malformed => Rejection::BadRequest(BadRequest::Malformed),
            ParseError::TooManyHeaders => Rejection::HeadersTooLarge,
        }
    }
}

/// What is wrong with a request refused with 400 ([`Rejection::BadRequest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadRequest {
    /// Not a complete HTTP/1.x request head.
    Malformed,
    /// An HTTP version other than 1.1.
    HttpVersion,
    /// A request target that is neither a path nor an absolute `http`/`https` URI.
    Target,
    /// A byte outside visible ASCII in a header the handshake reads.
    NonAscii,
    /// More than one `Sec-WebSocket-Version`.
    VersionRepeated,
    /// No `Upgrade: websocket`.
    NoUpgrade,
    /// No `Connection: Upgrade`.
    NoConnectionUpgrade,
    /// No `Host`, or an empty one.
    NoHost,
    /// More than one `Host` header.
    HostRepeated,
    /// More than one `Origin` header.
    OriginRepeated,
    /// A `Sec-WebSocket-Key` missing, repeated, or not 16 bytes in base64.
    InvalidKey,
}

error_messages!(BadRequest {
    BadRequest::Malformed => ("malformed request"),
    BadRequest::HttpVersion => ("HTTP/1.1 required"),
    BadRequest::Target => ("request target must be a path or an http(s) URI"),
    BadRequest::NonAscii => ("non-ASCII byte in a WebSocket header"),
    BadRequest::VersionRepeated => ("more than one Sec-WebSocket-Version"),
    BadRequest::NoUpgrade => ("Upgrade: websocket missing"),
    BadRequest::NoConnectionUpgrade => ("Connection: Upgrade missing"),
    BadRequest::NoHost => ("Host missing"),
    BadRequest::HostRepeated => ("more than one Host header"),
    BadRequest::OriginRepeated => ("more than one Origin header"),
    BadRequest::InvalidKey => ("invalid Sec-WebSocket-Key"),
});

/// A plain HTTP response: an error for a refused upgrade, or a page for a plain GET.
///
/// wsloop closes the connection after sending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    /// A response with `status`, a `Content-Type` and a body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: &str) -> HttpResponse {
        HttpResponse::new(status, "text/plain; charset=utf-8", body)
    }

    /// The 426 page a plain GET gets by default.
    pub fn upgrade_required() -> HttpResponse {
        HttpResponse::text(
            426,
            "This is a WebSocket server: connect with a WebSocket client.",
        )
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
    }

    /// Adds a header. Names and values must not contain CR or LF (they are dropped if so).
    pub fn header(mut self, name: &str, value: &str) -> HttpResponse {
        let clean = |s: &str| !s.contains(['\r', '\n']);
        if clean(name) && clean(value) {
            self.headers.push((name.into(), value.into()));
        }
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Writes the whole response, with `Content-Length` and `Connection: close`, to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::fmt::Write as _;
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let _ = write!(
            head,
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        );
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&self.body);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Writes the `101 Switching Protocols` answer for `key`, with the chosen subprotocol and
/// extensions, if any.
pub fn write_accept(
    out: &mut Vec<u8>,
    key: &str,
    protocol: Option<&str>,
    extensions: Option<&str>,
) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    let accept = accept_key(key.as_bytes());
    let headers = [
        ("Sec-WebSocket-Accept", Some(accept.as_str())),
        ("Sec-WebSocket-Protocol", protocol),
        ("Sec-WebSocket-Extensions", extensions),
    ];
    for (name, value) in headers {
        if let Some(value) = value {
            for part in [name, ": ", value, "\r\n"] {
                out.extend_from_slice(part.as_bytes());
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a client's upgrade request.
pub fn write_request(
    out: &mut Vec<u8>,
    host: &str,
    path: &str,
    key: &str,
    protocols: &[&str],
    extensions: Option<&str>,
) {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !protocols.is_empty() {
        req.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            protocols.join(", ")
        ));
    }
    if let Some(ext) = extensions {
        req.push_str(&format!("Sec-WebSocket-Extensions: {ext}\r\n"));
    }
    req.push_str("\r\n");
    out.extend_from_slice(req.as_bytes());
}

/// What a server's accepted answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Accepted {
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
    /// The server's `Sec-WebSocket-Extensions`, if any.
    pub extensions: Option<String>,
}

/// Why a server's answer to an upgrade request does not complete the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseError {
    /// Not a complete HTTP/1.x response head.
    Malformed,
    /// The server answered with another status than 101.
    Status {
        /// The status code.
        code: u16,
        /// The reason phrase.
        reason: String,
    },
    /// No `Upgrade: websocket`.
    NoUpgrade,
    /// No `Connection: Upgrade`.
    NoConnectionUpgrade,
    /// `Sec-WebSocket-Accept` missing or not the one for our key.
    WrongAccept,
    /// The server chose a subprotocol the client did not offer.
    UnofferedProtocol(String),
    /// The response head is larger than a client accepts (64 KiB).
    HeadTooLarge,
    /// `Sec-WebSocket-Extensions` is not an acceptable answer to what was offered.
    Extensions(super::deflate::ExtensionResponseError),
}

error_messages!(ResponseError {
    ResponseError::Malformed => ("malformed HTTP response"),
    ResponseError::Status { code, reason } => ("server answered {code} {reason}"),
    ResponseError::NoUpgrade => ("response lacks Upgrade: websocket"),
    ResponseError::NoConnectionUpgrade => ("response lacks Connection: Upgrade"),
    ResponseError::WrongAccept => ("wrong Sec-WebSocket-Accept"),
    ResponseError::UnofferedProtocol(p) => ("server chose subprotocol {p:?}, which was not offered"),
    ResponseError::HeadTooLarge => ("response head too large"),
    ResponseError::Extensions(e) => ("bad Sec-WebSocket-Extensions: {e}"),
});

/// Checks a server's complete answer head against the `key` the client sent.
///
/// Returns the server's choices.
///
/// # Errors
///
/// A [`ResponseError`] saying why the answer does not complete the handshake: a refusal's
/// status line, a missing header, a wrong `Sec-WebSocket-Accept` or an unoffered subprotocol.
pub fn check_response(
    head: &[u8],
    key: &str,
    protocols: &[&str],
) -> Result<Accepted, ResponseError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(ResponseError::Malformed),
    }
    if resp.code != Some(101) {
        return Err(ResponseError::Status {
            code: resp.code.unwrap_or(0),
            reason: resp.reason.unwrap_or("").to_owned(),
        });
    }
    let get = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    if !get("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(ResponseError::NoUpgrade);
    }
    if !get("connection").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    }) {
        return Err(ResponseError::NoConnectionUpgrade);
    }
    if get("sec-websocket-accept") != Some(accept_key(key.as_bytes()).as_str()) {
        return Err(ResponseError::WrongAccept);
    }
    let protocol = get("sec-websocket-protocol").map(str::to_owned);
    if let Some(p) = &protocol {
        if !protocols.contains(&p.as_str()) {
            return Err(ResponseError::UnofferedProtocol(p.clone()));
        }
    }
    Ok(Accepted {
        protocol,
        extensions: get("sec-websocket-extensions").map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_accept_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn scanner_finds_the_blank_line_split_anywhere() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nEXTRA";
        for split in 0..req.len() {
            let mut s = HeadScanner::default();
            let first = s.find_end(&req[..split]);
            let end = first.or_else(|| s.find_end(req));
            assert_eq!(end, Some(req.len() - 5), "split at {split}");
        }
    }

    #[test]
    fn scanner_stops_at_a_bare_lf_and_parse_refuses_it() {
        let req = b"GET / HTTP/1.1\nHost: x\n\n";
        assert_eq!(HeadScanner::default().find_end(req), Some(15));
        let crlf_then_lf = b"GET / HTTP/1.1\r\nHost: x\r\n\n";
        assert_eq!(HeadScanner::default().find_end(crlf_then_lf), Some(26));
        let mut headers = Headers::new();
        let parsed = Request::parse(crlf_then_lf, &mut headers);
        assert_eq!(parsed.err(), Some(ParseError::Malformed));
    }

    fn validate(raw: &str) -> Result<String, Rejection> {
        let mut headers = Headers::new();
        let req = Request::parse(raw.as_bytes(), &mut headers).unwrap();
        req.validate_upgrade().map(str::to_owned)
    }

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn validation_table() {
        assert_eq!(validate(GOOD), Ok("dGhlIHNhbXBsZSBub25jZQ==".into()));
        let cases: &[(&str, &str, Rejection)] = &[
            ("GET /chat", "POST /chat", Rejection::MethodNotAllowed),
            (
                "HTTP/1.1\r\nHost",
                "HTTP/1.0\r\nHost",
                Rejection::BadRequest(BadRequest::HttpVersion),
            ),
            ("Version: 13", "Version: 8", Rejection::UnsupportedVersion),
            (
                "Upgrade: WebSocket",
                "Upgrade: h2c",
                Rejection::BadRequest(BadRequest::NoUpgrade),
            ),
            (
                "keep-alive, Upgrade",
                "keep-alive",
                Rejection::BadRequest(BadRequest::NoConnectionUpgrade),
            ),
            ("Host: a\r\n", "", Rejection::BadRequest(BadRequest::NoHost)),
            (
                "Host: a\r\n",
                "Host: a\r\nhost: b\r\n",
                Rejection::BadRequest(BadRequest::HostRepeated),
            ),
            (
                "Host: a\r\n",
                "Host: a\r\nOrigin: http://a\r\norigin: http://evil\r\n",
                Rejection::BadRequest(BadRequest::OriginRepeated),
            ),
            (
                "dGhlIHNhbXBsZSBub25jZQ==",
                "dGhlIHNhbXBsZQ==",
                Rejection::BadRequest(BadRequest::InvalidKey),
            ),
            (
                "dGhlIHNhbXBsZSBub25jZQ==",
                "not base64!",
                Rejection::BadRequest(BadRequest::InvalidKey),
            ),
        ];
        for (from, to, want) in cases {
            assert_eq!(validate(&GOOD.replace(from, to)), Err(*want), "{to}");
        }
    }

    /// `validate` for a request that is not UTF-8; `Err(None)` if it does not even parse.
    fn validate_bytes(raw: &[u8]) -> Result<String, Option<Rejection>> {
        let mut headers = Headers::new();
        let req = Request::parse(raw, &mut headers).map_err(|_| None)?;
        req.validate_upgrade().map(str::to_owned).map_err(Some)
    }

    #[test]
    fn request_targets() {
        let target = |t: &str| {
            let raw = GOOD.replace("GET /chat ", &format!("GET {t} "));
            let mut headers = Headers::new();
            let req = Request::parse(raw.as_bytes(), &mut headers).unwrap();
            (req.path().to_owned(), req.validate_upgrade().err())
        };
        let bad = Some(Rejection::BadRequest(BadRequest::Target));
        let cases = [
            ("/chat?a=1", "/chat?a=1", None),
            ("http://example.com/chat?a=1", "/chat?a=1", None),
            ("HTTPS://example.com:8443/x", "/x", None),
            ("http://example.com", "/", None),
            ("*", "*", bad),
            ("example.com:80", "example.com:80", bad),
            ("ws://example.com/chat", "ws://example.com/chat", bad),
            ("http:///chat", "http:///chat", bad),
            ("http://example.com?a=1", "http://example.com?a=1", bad),
        ];
        for (sent, path, err) in cases {
            assert_eq!(target(sent), (path.to_owned(), err), "{sent}");
        }
    }

    #[test]
    fn one_version_only() {
        let two = GOOD.replace(
            "Version: 13\r\n",
            "Version: 13\r\nSec-WebSocket-Version: 8\r\n",
        );
        let list = GOOD.replace("Version: 13", "Version: 13, 8");
        let empty_then_13 = GOOD.replace(
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Version:\r\nSec-WebSocket-Version: 13",
        );
        for raw in [two, list, empty_then_13] {
            let want = Rejection::BadRequest(BadRequest::VersionRepeated);
            assert_eq!(validate(&raw), Err(want), "{raw}");
        }
        let none = GOOD.replace("Sec-WebSocket-Version: 13\r\n", "");
        assert_eq!(validate(&none), Err(Rejection::UnsupportedVersion));
        let spaced = GOOD.replace("Version: 13", "Version:  13 ");
        assert!(validate(&spaced).is_ok());
    }

    #[test]
    fn header_bytes() {
        let with = |line: &[u8]| {
            let mut raw = GOOD.as_bytes()[..GOOD.len() - 2].to_vec();
            raw.extend_from_slice(line);
            raw.extend_from_slice(b"\r\n\r\n");
            validate_bytes(&raw)
        };
        // Control bytes and obs-fold: not HTTP (httparse refuses them).
        for line in [
            &b"X-A: a\x00b"[..],
            b"X-A: a\x7fb",
            b"X-A: a\x1bb",
            b"X-A: a\r\n b",
        ] {
            assert_eq!(with(line), Err(None), "{line:?}");
        }
        // Obs-text and tabs in other headers are opaque data, and pass.
        for line in [
            &b"User-Agent: caf\xc3\xa9"[..],
            b"X-A: \xff\xfe",
            b"X-A: a\tb",
        ] {
            assert!(with(line).is_ok(), "{line:?}");
        }
        // Obs-text in a header the handshake reads: 400 (checked before repeats), even in a
        // second Origin, or in a Sec-WebSocket-Key that would be skipped.
        let non_ascii = Err(Some(Rejection::BadRequest(BadRequest::NonAscii)));
        for line in [
            &b"Origin: http://caf\xc3\xa9.example"[..],
            b"Origin: http://a.example\r\nOrigin: \xff",
            b"Sec-WebSocket-Key: \xff",
            b"Sec-WebSocket-Protocol: chat\xa0",
            b"Sec-WebSocket-Extensions: permessage-deflate\xff",
            b"connection: upgrade\x80",
        ] {
            assert_eq!(with(line), non_ascii, "{line:?}");
        }
        let raw = GOOD.replace("Host: a", "Host: \u{e9}");
        assert_eq!(validate_bytes(raw.as_bytes()), non_ascii);
    }

    #[test]
    fn headers_that_are_not_utf8_are_skipped_by_name() {
        let raw = b"GET / HTTP/1.1\r\nX-A: \xff\r\nx-a: b\r\n\r\n";
        let mut headers = Headers::new();
        let req = Request::parse(raw, &mut headers).unwrap();
        assert_eq!(req.header("x-a"), Some("b"));
        assert_eq!(req.header_values("X-A").collect::<Vec<_>>(), ["b"]);
        assert_eq!(req.headers().next().map(|h| h.1), Some(&b"\xff"[..]));
    }

    #[test]
    fn query_and_cookie_lookups() {
        let raw = GOOD
            .replace("GET /chat ", "GET /chat?token=abc&flag&x=1 ")
            .replace(
                "\r\n\r\n",
                "\r\nCookie: a=1; session=s3cr3t\r\nCookie: b=2\r\n\r\n",
            );
        let mut headers = Headers::new();
        let req = Request::parse(raw.as_bytes(), &mut headers).unwrap();
        assert_eq!(req.query("token"), Some("abc"));
        assert_eq!(req.query("flag"), Some(""));
        assert_eq!(req.query("nope"), None);
        assert_eq!(req.cookie("session"), Some("s3cr3t"));
        assert_eq!(req.cookie("b"), Some("2"));
        assert_eq!(req.cookie("c"), None);
    }

    #[test]
    fn protocols_are_split_and_trimmed() {
        let raw = GOOD.replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Protocol:echo\r\n\r\n",
        );
        let mut headers = Headers::new();
        let req = Request::parse(raw.as_bytes(), &mut headers).unwrap();
        assert_eq!(
            req.protocols().collect::<Vec<_>>(),
            ["chat", "superchat", "echo"]
        );
    }

    #[test]
    fn client_checks_the_servers_answer() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let mut out = Vec::new();
        write_accept(&mut out, key, Some("chat"), None);
        assert_eq!(
            check_response(&out, key, &["chat"]),
            Ok(Accepted {
                protocol: Some("chat".into()),
                extensions: None
            })
        );
        assert_eq!(
            check_response(&out, key, &[]),
            Err(ResponseError::UnofferedProtocol("chat".into()))
        );
        assert_eq!(
            check_response(&out, "AAAAAAAAAAAAAAAAAAAAAA==", &["chat"]),
            Err(ResponseError::WrongAccept)
        );
        let mut refused = Vec::new();
        HttpResponse::text(403, "no").write_to(&mut refused);
        assert_eq!(
            check_response(&refused, key, &[]),
            Err(ResponseError::Status {
                code: 403,
                reason: "Forbidden".into()
            })
        );
        assert_eq!(
            check_response(&refused, key, &[]).unwrap_err().to_string(),
            "server answered 403 Forbidden"
        );
    }
}
