//! permessage-deflate (RFC 7692), sans-IO: extension offer parsing and parameter negotiation for
//! both roles, and the per-connection [`Inflater`] / [`Deflater`] on `flate2` raw deflate streams.
//!
//! What `flate2` 1.1 with the `zlib-rs` backend does, read in both crates' source:
//! - zlib-rs gives every inflate state a 32 KiB window whatever the window bits, and lets a
//!   back-reference reach anything in it: for raw inflate the window bits change neither memory nor
//!   what is accepted. So [`Inflater`] always inflates with 15 bits (flate2 cannot even open a raw
//!   8-bit inflater) and, when fewer were agreed, checks the distances itself (`window`).
//! - `Decompress::reset(false)`: before flate2 1.1.11 it reset the window to 15 bits whatever the
//!   constructor said (zlib-rs' `Inflate::reset` restores the default configuration); from 1.1.11
//!   on it keeps the window bits by re-creating, i.e. re-allocating, the state unless they are 15.
//!   With 15 bits, `reset` is the same on every 1.x and never allocates.
//! - `Compress::reset` keeps the window bits and level (zlib's `deflateReset`) and does not
//!   allocate. Measured: a deflate state takes about 250 KB at 9 window bits and 380 KB at 15
//!   (flate2 fixes zlib's `memLevel` at 8), an inflate state 48 KB; deflating with 9 bits is
//!   several times slower than with 15. [`Deflater::release_if_idle`] is what saves memory.
//! - Every `Compress::reset` clears a 128 KiB hash table and a 48 KiB symbol buffer, whatever the
//!   window: more work than deflating a 1 KiB message. So a message compressed on its own at
//!   level 1 and short enough goes through `fixed`, which keeps no state between messages.

use std::fmt::Write as _;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::Role;

mod fixed;
mod window;

use window::WindowCheck;

const NAME: &[u8] = b"permessage-deflate";
/// The end of every sync-flushed block: stripped by the sender (RFC 7692 7.2.1), appended back by
/// the receiver (7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The most output inflated by one call into zlib.
const MAX_CHUNK: usize = 64 * 1024;

/// permessage-deflate settings of one endpoint (server or client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Largest LZ77 window (log2) the server compresses with, 9..=15 (default 15).
    pub server_max_window_bits: u8,
    /// Largest LZ77 window (log2) the client may compress with, 9..=15 (default 15).
    pub client_max_window_bits: u8,
    /// Whether the server compresses each message on its own (default true): then one
    /// compressor serves every connection and a broadcast is compressed once; with false each
    /// connection keeps its own compressor (about 380 KB) for a better ratio on small messages.
    pub server_no_context_takeover: bool,
    /// Whether the client must compress each message on its own (default true): then an idle
    /// connection keeps no inflate state (about 48 KB otherwise).
    pub client_no_context_takeover: bool,
    /// zlib compression level, 0..=9 (default 1). At level 1, a message of up to 16 KiB that is
    /// compressed on its own (no context takeover) goes through wsloop's own fixed-Huffman
    /// encoder instead, the same kind of output as zlib's level 1 without its per-message reset.
    pub level: u32,
    /// Messages shorter than this many bytes are sent uncompressed (default 64).
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            level: 1,
            threshold: 64,
        }
    }
}

impl DeflateConfig {
    /// Checks every field's range.
    ///
    /// # Errors
    ///
    /// [`InvalidDeflateConfig`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), InvalidDeflateConfig> {
        for (field, bits) in [
            ("server_max_window_bits", self.server_max_window_bits),
            ("client_max_window_bits", self.client_max_window_bits),
        ] {
            if !(9..=15).contains(&bits) {
                return Err(InvalidDeflateConfig {
                    field,
                    range: (9, 15),
                    got: bits.into(),
                });
            }
        }
        if self.level > 9 {
            return Err(InvalidDeflateConfig {
                field: "level",
                range: (0, 9),
                got: self.level,
            });
        }
        Ok(())
    }
}

/// A [`DeflateConfig`] field out of its range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDeflateConfig {
    field: &'static str,
    range: (u32, u32),
    got: u32,
}

impl InvalidDeflateConfig {
    /// The field's name, as in [`DeflateConfig`].
    pub fn field(&self) -> &'static str {
        self.field
    }
}

crate::error::error_messages!(InvalidDeflateConfig {
    InvalidDeflateConfig { field, range: (min, max), got } => ("{field} must be {min}..={max}, got {got}"),
});

/// Why a client refuses the server's `Sec-WebSocket-Extensions` answer to its offer; the
/// connection must then fail (RFC 7692 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtensionResponseError {
    /// Not exactly one extension.
    NotOneExtension,
    /// An extension other than permessage-deflate.
    NotOffered,
    /// An unknown, repeated or invalid parameter.
    BadParameter,
    /// `client_max_window_bits` without a value.
    NoClientWindowBits,
    /// Window bits above what the client offered.
    WindowTooLarge,
}

crate::error::error_messages!(ExtensionResponseError {
    ExtensionResponseError::NotOneExtension => ("Sec-WebSocket-Extensions response: expected one extension"),
    ExtensionResponseError::NotOffered => ("Sec-WebSocket-Extensions response: names an extension we did not offer"),
    ExtensionResponseError::BadParameter => ("Sec-WebSocket-Extensions response: unknown, repeated or invalid parameter"),
    ExtensionResponseError::NoClientWindowBits => ("Sec-WebSocket-Extensions response: client_max_window_bits needs a value"),
    ExtensionResponseError::WindowTooLarge => ("Sec-WebSocket-Extensions response: window bits above what we offered"),
});

/// The negotiated parameters of one connection, the same on both ends. Outside negotiation,
/// build them from [`Params::default()`] with [`with_no_context_takeover`](Self::with_no_context_takeover)
/// and [`with_window_bits`](Self::with_window_bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Params {
    /// Window bits (8..=15) the server compresses with.
    pub server_max_window_bits: u8,
    /// Window bits (8..=15) the client compresses with.
    pub client_max_window_bits: u8,
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// The client's offer named `server_max_window_bits`, so the response must name it even at 15
    /// (RFC 7692 7.1.2.1).
    pub echo_server_max_window_bits: bool,
}

impl Default for Params {
    /// No parameters: 15-bit windows and context takeover both ways.
    fn default() -> Self {
        Self {
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            echo_server_max_window_bits: false,
        }
    }
}

impl Params {
    /// These parameters with the server's and the client's "no context takeover" set.
    pub fn with_no_context_takeover(mut self, server: bool, client: bool) -> Params {
        self.server_no_context_takeover = server;
        self.client_no_context_takeover = client;
        self
    }

    /// These parameters with the server's and the client's window bits (8..=15).
    pub fn with_window_bits(mut self, server: u8, client: u8) -> Params {
        self.server_max_window_bits = server;
        self.client_max_window_bits = client;
        self
    }

    /// The server's `Sec-WebSocket-Extensions` response value. `client_max_window_bits` is named
    /// only below 15, which [`negotiate`] produces only when the client offered it.
    pub fn response_header_value(&self) -> String {
        let server_bits = self.server_max_window_bits;
        let client_bits = self.client_max_window_bits;
        write_element(
            self.server_no_context_takeover,
            self.client_no_context_takeover,
            (server_bits < 15 || self.echo_server_max_window_bits).then_some(server_bits),
            (client_bits < 15).then_some(Some(client_bits)),
        )
    }
}

/// Server side: picks the first acceptable permessage-deflate offer among the values of every
/// `Sec-WebSocket-Extensions` request header, or `None` to run without compression. Offers with
/// unknown, duplicated or invalid parameters are skipped, as are other extensions.
pub fn negotiate<'a>(
    header_values: impl IntoIterator<Item = &'a [u8]>,
    cfg: &DeflateConfig,
) -> Option<Params> {
    header_values
        .into_iter()
        .flat_map(elements)
        .find_map(|element| {
            let (name, params) = element.ok()?;
            if !name.eq_ignore_ascii_case(NAME) {
                return None;
            }
            let offer = Offer::parse(&params)?;
            let server_max_window_bits = match offer.server_bits {
                // zlib cannot deflate raw data within a 256-byte window (it silently uses 512).
                Some(8) => return None,
                Some(bits) => bits.min(cfg.server_max_window_bits),
                None => cfg.server_max_window_bits,
            };
            // Without the parameter the client keeps its 15-bit window whatever we prefer.
            let client_max_window_bits = offer.client_bits.map_or(15, |bits| {
                bits.unwrap_or(15).min(cfg.client_max_window_bits)
            });
            Some(Params {
                server_max_window_bits,
                client_max_window_bits,
                server_no_context_takeover: offer.server_nct || cfg.server_no_context_takeover,
                // The client's parameter is only a hint unless we answer it, so answer it.
                client_no_context_takeover: offer.client_nct || cfg.client_no_context_takeover,
                echo_server_max_window_bits: offer.server_bits.is_some(),
            })
        })
}

/// Client side: the `Sec-WebSocket-Extensions` value to offer. It always carries
/// `client_max_window_bits`, which lets the server pick our window.
pub fn client_offer(cfg: &DeflateConfig) -> String {
    let (server_bits, client_bits) = (cfg.server_max_window_bits, cfg.client_max_window_bits);
    write_element(
        cfg.server_no_context_takeover,
        cfg.client_no_context_takeover,
        (server_bits < 15).then_some(server_bits),
        Some((client_bits < 15).then_some(client_bits)),
    )
}

/// Client side: checks the server's `Sec-WebSocket-Extensions` response to [`client_offer`] and
/// returns the parameters in force.
///
/// # Errors
///
/// Anything but one valid permessage-deflate element within what we offered is an
/// [`ExtensionResponseError`], after which the connection must fail.
pub fn parse_server_response(
    value: &[u8],
    cfg: &DeflateConfig,
) -> Result<Params, ExtensionResponseError> {
    let mut list = elements(value);
    let (name, params) = match (list.next(), list.next()) {
        (Some(Ok(element)), None) => element,
        _ => return Err(ExtensionResponseError::NotOneExtension),
    };
    if !name.eq_ignore_ascii_case(NAME) {
        return Err(ExtensionResponseError::NotOffered);
    }
    let offer = Offer::parse(&params).ok_or(ExtensionResponseError::BadParameter)?;
    let client_bits = match offer.client_bits {
        Some(Some(bits)) => bits,
        Some(None) => return Err(ExtensionResponseError::NoClientWindowBits),
        None => cfg.client_max_window_bits,
    };
    if offer
        .server_bits
        .is_some_and(|bits| bits > cfg.server_max_window_bits)
        || client_bits > cfg.client_max_window_bits
    {
        return Err(ExtensionResponseError::WindowTooLarge);
    }
    Ok(Params {
        // Absent though offered breaks RFC 7692 7.1.2.1 but is harmless: then it is 15.
        server_max_window_bits: offer.server_bits.unwrap_or(15),
        client_max_window_bits: client_bits,
        server_no_context_takeover: offer.server_nct,
        client_no_context_takeover: offer.client_nct || cfg.client_no_context_takeover,
        echo_server_max_window_bits: cfg.server_max_window_bits < 15,
    })
}

/// Writes an offer or a response; `Some(None)` names `client_max_window_bits` without a value.
fn write_element(snct: bool, cnct: bool, server: Option<u8>, client: Option<Option<u8>>) -> String {
    let mut s = String::from("permessage-deflate");
    if snct {
        s.push_str("; server_no_context_takeover");
    }
    if cnct {
        s.push_str("; client_no_context_takeover");
    }
    if let Some(bits) = server {
        let _ = write!(s, "; server_max_window_bits={bits}");
    }
    if let Some(bits) = client {
        s.push_str("; client_max_window_bits");
        if let Some(bits) = bits {
            let _ = write!(s, "={bits}");
        }
    }
    s
}

/// One extension parameter: its name and, if present, its value (quotes removed).
type Param<'a> = (&'a [u8], Option<Vec<u8>>);
/// One list element: an extension name and its parameters; `Err` if it is malformed.
type Element<'a> = Result<(&'a [u8], Vec<Param<'a>>), ()>;

/// The permessage-deflate parameters of one element, as written.
#[derive(Default)]
struct Offer {
    server_bits: Option<u8>,
    /// `Some(None)`: named without a value.
    client_bits: Option<Option<u8>>,
    server_nct: bool,
    client_nct: bool,
}

impl Offer {
    /// `None` if any parameter is unknown, repeated, or has an invalid or missing value.
    fn parse(params: &[Param<'_>]) -> Option<Offer> {
        const NAMES: [&[u8]; 4] = [
            b"server_max_window_bits",
            b"client_max_window_bits",
            b"server_no_context_takeover",
            b"client_no_context_takeover",
        ];
        let mut offer = Offer::default();
        let mut seen = [false; 4];
        for (key, value) in params {
            let k = NAMES.iter().position(|n| key.eq_ignore_ascii_case(n))?;
            if std::mem::replace(&mut seen[k], true) {
                return None;
            }
            match (k, value.as_deref()) {
                (0, Some(v)) => offer.server_bits = Some(window_bits(v)?),
                (1, Some(v)) => offer.client_bits = Some(Some(window_bits(v)?)),
                (1, None) => offer.client_bits = Some(None),
                (2, None) => offer.server_nct = true,
                (3, None) => offer.client_nct = true,
                _ => return None,
            }
        }
        Some(offer)
    }
}

/// `8..=15` written without leading zeros (RFC 7692 7.1.2).
fn window_bits(v: &[u8]) -> Option<u8> {
    match *v {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// Splits one header value into its elements (RFC 6455 9.1 with RFC 7230 list rules: empty
/// elements and optional whitespace allowed, values may be quoted strings).
fn elements(value: &[u8]) -> impl Iterator<Item = Element<'_>> {
    split_unquoted(value, b',')
        .filter(|e| !e.is_empty())
        .map(|element| {
            let mut parts = split_unquoted(element, b';');
            let name = parts.next().filter(|name| is_token(name)).ok_or(())?;
            let params = parts.map(|param| match param.iter().position(|&c| c == b'=') {
                Some(i) => Ok((
                    token(&param[..i])?,
                    Some(unquote(param[i + 1..].trim_ascii())?),
                )),
                None => Ok((token(param)?, None)),
            });
            Ok((name, params.collect::<Result<_, _>>()?))
        })
}

/// Splits at every `sep` outside quoted strings, trimming whitespace.
fn split_unquoted(s: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let (mut quoted, mut escaped) = (false, false);
    let at_sep = move |&c: &u8| {
        match c {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ => return c == sep && !quoted,
        }
        false
    };
    s.split(at_sep).map(<[u8]>::trim_ascii)
}

fn is_token(s: &[u8]) -> bool {
    let tchar = |c: &u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(c);
    !s.is_empty() && s.iter().all(tchar)
}

fn token(s: &[u8]) -> Result<&[u8], ()> {
    let s = s.trim_ascii();
    is_token(s).then_some(s).ok_or(())
}

/// A token, or a quoted string with its escapes resolved.
fn unquote(v: &[u8]) -> Result<Vec<u8>, ()> {
    let [b'"', inner @ .., b'"'] = v else {
        return token(v).map(<[u8]>::to_vec);
    };
    let (mut out, mut bytes) = (Vec::new(), inner.iter());
    while let Some(&c) = bytes.next() {
        match c {
            b'\\' => out.push(*bytes.next().ok_or(())?),
            b'"' => return Err(()),
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InflateError {
    /// The inflated message would exceed the size limit (close with 1009).
    TooBig,
    /// The payload is not a valid deflate stream (close with 1007).
    Corrupt,
}

crate::error::error_messages!(InflateError {
    InflateError::TooBig => ("inflated message exceeds the size limit"),
    InflateError::Corrupt => ("invalid compressed data"),
});

/// Decompresses the messages one connection receives. Holds no zlib state until the first
/// compressed message, and none between messages after [`release_if_idle`](Self::release_if_idle)
/// when the peer compresses each message on its own.
#[derive(Debug)]
pub struct Inflater {
    state: Option<Box<InflateState>>,
    /// The window (log2) the peer agreed to compress within.
    window_bits: u8,
    no_context_takeover: bool,
    /// The current message has had compressed bytes.
    fed: bool,
    /// The peer ended its deflate stream (BFINAL, RFC 7692 7.2.3.4) in the current message.
    ended: bool,
    /// The one `00` octet allowed after the final block has come.
    padded: bool,
}

/// The zlib state of a message in progress (or of the stream, with context takeover).
#[derive(Debug)]
struct InflateState {
    zlib: Decompress,
    /// Under 15 window bits: the peer's back-references, checked against the window.
    window: Option<WindowCheck>,
}

impl InflateState {
    fn new(window_bits: u8) -> Self {
        Self {
            zlib: Decompress::new_with_window_bits(false, 15),
            window: (window_bits < 15).then(|| WindowCheck::new(window_bits)),
        }
    }
}

impl Inflater {
    /// An inflater for the peer's direction: as [`Role::Server`] we inflate what the client
    /// compressed (`client_*` parameters apply), as [`Role::Client`] what the server compressed.
    /// A back-reference beyond the agreed window is [`InflateError::Corrupt`].
    pub fn new(params: Params, role: Role) -> Self {
        let (window_bits, no_context_takeover) = match role {
            Role::Server => (
                params.client_max_window_bits,
                params.client_no_context_takeover,
            ),
            Role::Client => (
                params.server_max_window_bits,
                params.server_no_context_takeover,
            ),
        };
        Self {
            state: None,
            window_bits,
            no_context_takeover,
            fed: false,
            ended: false,
            padded: false,
        }
    }

    /// Inflates one frame payload of a compressed message, in order, appending to `out`; `fin`
    /// marks the message's last frame. `out` (including what it held before) never grows past
    /// `max_total`: the call stops with [`InflateError::TooBig`] as soon as it would. After an
    /// error the connection must fail; the state is dropped.
    ///
    /// # Errors
    ///
    /// [`InflateError::TooBig`] past `max_total`, [`InflateError::Corrupt`] for data that is not a
    /// valid deflate stream.
    pub fn inflate(
        &mut self,
        input: &[u8],
        fin: bool,
        out: &mut Vec<u8>,
        max_total: usize,
    ) -> Result<(), InflateError> {
        self.fed |= !input.is_empty();
        let mut result = self.run(input, out, max_total);
        if fin {
            // A message with no compressed bytes at all is empty: appending the tail alone would
            // leave the stream inside a stored block. After the final block it is not needed.
            if result.is_ok() && self.fed && !self.ended {
                result = self.run(&TAIL, out, max_total);
            }
            if self.no_context_takeover || self.ended {
                if let Some(state) = self.state.as_deref_mut() {
                    state.zlib.reset(false);
                    state.window = state
                        .window
                        .take()
                        .map(|_| WindowCheck::new(self.window_bits));
                }
            }
            (self.fed, self.ended, self.padded) = (false, false, false);
        }
        if result.is_err() {
            (self.state, self.fed, self.ended, self.padded) = (None, false, false, false);
        }
        result
    }

    /// Bytes of the message after its final deflate block: only the `00` octet that RFC 7692
    /// 7.2.3.4 puts there (the header of the empty stored block that the tail completes), once.
    /// Anything else is not part of a deflate stream: [`InflateError::Corrupt`].
    fn after_end(&mut self, input: &[u8]) -> Result<(), InflateError> {
        match input {
            [] => Ok(()),
            [0] if !self.padded => {
                self.padded = true;
                Ok(())
            }
            _ => Err(InflateError::Corrupt),
        }
    }

    fn run(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        if self.ended {
            return self.after_end(input);
        }
        if input.is_empty() {
            return Ok(());
        }
        let bits = self.window_bits;
        let state = self
            .state
            .get_or_insert_with(|| Box::new(InflateState::new(bits)));
        if let Some(window) = &mut state.window {
            if !window.scan(input) {
                return Err(InflateError::Corrupt);
            }
        }
        let d = &mut state.zlib;
        let mut chunk = input.len().saturating_mul(4).clamp(256, MAX_CHUNK);
        loop {
            let start = out.len();
            let room = limit.checked_sub(start).ok_or(InflateError::TooBig)?;
            // One byte past the limit tells "exactly full" from "too big".
            let want = chunk.min(room.saturating_add(1));
            out.resize(start + want, 0);
            let (in0, out0) = (d.total_in(), d.total_out());
            let status = d.decompress(input, &mut out[start..], FlushDecompress::Sync);
            let consumed = (d.total_in() - in0) as usize;
            let produced = (d.total_out() - out0) as usize;
            out.truncate(start + produced);
            input = &input[consumed..];
            if out.len() > limit {
                out.truncate(limit);
                return Err(InflateError::TooBig);
            }
            match status {
                Err(_) => return Err(InflateError::Corrupt),
                Ok(Status::StreamEnd) => {
                    self.ended = true;
                    return self.after_end(input);
                }
                // zlib leaves output space unused only once it has used up its input.
                Ok(_) if produced < want && input.is_empty() => return Ok(()),
                Ok(_) if produced < want && consumed == 0 => return Err(InflateError::Corrupt),
                Ok(_) => chunk = (chunk * 2).min(MAX_CHUNK),
            }
        }
    }

    /// Frees the zlib state if it is not needed until the next message (the peer compresses each
    /// message on its own and none is in progress). Call when the connection goes idle.
    pub fn release_if_idle(&mut self) {
        if self.no_context_takeover && !self.fed {
            self.state = None;
        }
    }
}

/// Compresses the messages one connection sends. Holds no zlib state until the first message,
/// and none between messages after [`release_if_idle`](Self::release_if_idle) when we compress
/// each message on its own.
#[derive(Debug)]
pub struct Deflater {
    state: Option<Box<Compress>>,
    /// Window bits given to flate2, 9..=15.
    bits: u8,
    level: u32,
    no_context_takeover: bool,
}

impl Deflater {
    /// A deflater for our direction: as [`Role::Server`] the `server_*` parameters apply, as
    /// [`Role::Client`] the `client_*` ones. `level` is zlib's, 0..=9.
    pub fn new(p: Params, role: Role, level: u32) -> Self {
        let (bits, no_context_takeover) = match role {
            Role::Server => (p.server_max_window_bits, p.server_no_context_takeover),
            Role::Client => (p.client_max_window_bits, p.client_no_context_takeover),
        };
        // zlib cannot keep within an 8-bit window; stored blocks (level 0) refer to nothing.
        let level = if bits < 9 { 0 } else { level.min(9) };
        Self {
            state: None,
            bits: bits.clamp(9, 15),
            level,
            no_context_takeover,
        }
    }

    /// Appends the compressed payload of one whole message to `out` (sync flush, without the
    /// trailing `00 00 ff ff`). An empty message becomes `00`, an empty stored block.
    pub fn deflate(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.no_context_takeover && self.level == 1 && input.len() <= fixed::MAX_LEN {
            return fixed::deflate(input, self.bits, out);
        }
        let (bits, level) = (self.bits, self.level);
        let c = self.state.get_or_insert_with(|| {
            Box::new(Compress::new_with_window_bits(
                Compression::new(level),
                false,
                bits,
            ))
        });
        let start = out.len();
        let mut rest = input;
        loop {
            out.reserve(rest.len() / 2 + 64);
            let in0 = c.total_in();
            let status = c.compress_vec(rest, out, FlushCompress::Sync);
            rest = &rest[(c.total_in() - in0) as usize..];
            // zlib fails only on misuse; it has finished a flush once it leaves output space.
            debug_assert!(status.is_ok(), "deflate failed: {status:?}");
            if status.is_err() || (rest.is_empty() && out.len() < out.capacity()) {
                break;
            }
        }
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if out.len() == start {
            // Nothing new to flush (an empty message after another): zlib wrote nothing.
            out.push(0);
        }
        if self.no_context_takeover {
            c.reset();
        }
    }

    /// Starts a fresh window for the next message (without allocating): for a message that
    /// was compressed but then not sent, which the peer's window must never be assumed to hold.
    pub fn reset(&mut self) {
        if let Some(c) = self.state.as_deref_mut() {
            c.reset();
        }
    }

    /// Frees the zlib state if it is not needed until the next message (we compress each message
    /// on its own). Call when the connection goes idle.
    pub fn release_if_idle(&mut self) {
        if self.no_context_takeover {
            self.state = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(bits: u8, nct: bool) -> Params {
        let mut p = Params::default();
        (p.server_max_window_bits, p.client_max_window_bits) = (bits, bits);
        (p.server_no_context_takeover, p.client_no_context_takeover) = (nct, nct);
        p
    }

    fn inflate_frames(inf: &mut Inflater, frames: &[&[u8]]) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            inf.inflate(f, i + 1 == frames.len(), &mut out, usize::MAX)?;
        }
        Ok(out)
    }

    fn deflate(d: &mut Deflater, msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        d.deflate(msg, &mut out);
        out
    }

    fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        };
        (0..len).map(|_| next()).collect()
    }

    #[rustfmt::skip]
    #[test]
    fn rfc7692_examples() {
        const HELLO: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        const STORED: &[u8] = &[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
        const BFINAL: &[u8] = &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        let cases: &[&[&[u8]]] = &[
            &[HELLO],                                       // 7.2.3.1
            &[&[0xf2, 0x48, 0xcd], &[0xc9, 0xc9, 0x07, 0x00]], // 7.2.3.1, fragmented
            &[STORED],                                      // 7.2.3.3
            &[BFINAL],                                      // 7.2.3.4
            &[&[0xf2, 0x48, 0x05, 0, 0, 0, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00]], // 7.2.3.5
            &[&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00, 0xff, 0xff], &[0x00]], // 7.2.3.6
        ];
        for frames in cases {
            let mut inf = Inflater::new(Params::default(), Role::Client);
            assert_eq!(inflate_frames(&mut inf, frames).unwrap(), b"Hello", "{frames:x?}");
        }
        // 7.2.3.2 context takeover; BFINAL ends a stream and the next message starts another;
        // empty messages as a lone empty stored block or no bytes at all.
        let mut inf = Inflater::new(Params::default(), Role::Server);
        let messages: &[(&[u8], &[u8])] = &[(HELLO, b"Hello"), (&[0xf2, 0x00, 0x11, 0x00, 0x00], b"Hello"),
            (BFINAL, b"Hello"), (HELLO, b"Hello"), (&[0x00], b""), (&[], b""), (STORED, b"Hello")];
        for (wire, want) in messages {
            assert_eq!(inflate_frames(&mut inf, &[wire]).unwrap(), *want, "{wire:x?}");
        }
    }

    #[test]
    fn only_the_padding_octet_may_follow_the_final_block() {
        // "Hello" in a final fixed-Huffman block (RFC 7692 7.2.3.4 without its 00 octet).
        const FINAL: &[u8] = &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let cases: &[(&[&[u8]], bool)] = &[
            (&[FINAL], true),
            (&[FINAL, &[0]], true),
            (&[&[FINAL, &[0]].concat()], true),
            (&[FINAL, &[], &[0], &[]], true),
            (&[&[FINAL, &[0, 0]].concat()], false),
            (&[FINAL, &[0], &[0]], false),
            (&[&[FINAL, &[1]].concat()], false),
            (&[FINAL, &[0xff]], false),
            (&[&[FINAL, &TAIL].concat()], false),
            // A second stream after the first.
            (&[&[FINAL, FINAL].concat()], false),
            (&[FINAL, FINAL], false),
        ];
        for (frames, ok) in cases {
            for nct in [false, true] {
                let mut inf = Inflater::new(params(15, nct), Role::Server);
                let got = inflate_frames(&mut inf, frames);
                let want = if *ok {
                    Ok(b"Hello".to_vec())
                } else {
                    Err(InflateError::Corrupt)
                };
                assert_eq!(got, want, "{frames:x?} nct {nct}");
                // Either way the next message starts a fresh stream.
                assert_eq!(inflate_frames(&mut inf, &[FINAL]).unwrap(), b"Hello");
            }
        }
    }

    #[test]
    fn round_trips() {
        let mut messages = Vec::new();
        for len in [0, 1, 1000, 1 << 20] {
            messages.push(pseudo_random(len, len as u64 + 1));
            let mut text = b"wsloop repeats itself. ".repeat(1 + len / 23);
            text.truncate(len);
            messages.push(text);
        }
        // Each direction has its own window and takeover; the direction alternates with `bits`.
        for bits in 9..=15 {
            for nct in [false, true] {
                let p = Params {
                    client_max_window_bits: 24 - bits,
                    client_no_context_takeover: !nct,
                    ..params(bits, nct)
                };
                let (sender, receiver, reset) = match bits % 2 {
                    0 => (Role::Server, Role::Client, nct),
                    _ => (Role::Client, Role::Server, !nct),
                };
                let mut d = Deflater::new(p, sender, if bits == 12 { 9 } else { 1 });
                let mut inf = Inflater::new(p, receiver);
                // Small messages twice, to use the context if kept; of the 1 MiB ones (slow to
                // deflate with small windows in debug builds), one kind per `nct`.
                let sends = messages
                    .iter()
                    .enumerate()
                    .flat_map(|(i, m)| match m.len() {
                        0..=1000 => vec![m, m],
                        _ if i % 2 == nct as usize => vec![m],
                        _ => vec![],
                    });
                for msg in sends {
                    let wire = deflate(&mut d, msg);
                    assert!(!msg.is_empty() || wire == [0x00]); // 7.2.3.6
                    let frames: Vec<&[u8]> = wire.chunks(7000).collect();
                    let got = inflate_frames(&mut inf, &frames).unwrap();
                    assert!(got == *msg, "bits {bits} nct {nct} len {}", msg.len());
                    d.release_if_idle();
                    inf.release_if_idle();
                    assert_eq!((d.state.is_none(), inf.state.is_none()), (reset, reset));
                }
            }
        }
    }

    #[test]
    fn context_takeover_shrinks_repeats_and_idle_structs_are_small() {
        let msg = pseudo_random(300, 7);
        let sizes = |nct| {
            let mut d = Deflater::new(params(15, nct), Role::Server, 1);
            (deflate(&mut d, &msg).len(), deflate(&mut d, &msg).len())
        };
        let (first, second) = sizes(false);
        assert!(second < first / 10, "{first} {second}");
        let (first, second) = sizes(true);
        assert_eq!(first, second);
        assert!(std::mem::size_of::<Inflater>() <= 16);
        assert!(std::mem::size_of::<Deflater>() <= 16);
    }

    #[test]
    fn eight_bit_client_window_is_stored() {
        let p = Params {
            client_max_window_bits: 8,
            ..Params::default()
        };
        let mut d = Deflater::new(p, Role::Client, 6);
        let mut inf = Inflater::new(p, Role::Server);
        let msg = b"abcabcabcabc".repeat(100);
        for _ in 0..2 {
            let wire = deflate(&mut d, &msg);
            assert!(wire.len() > msg.len());
            assert_eq!(inflate_frames(&mut inf, &[&wire]).unwrap(), msg);
        }
    }

    #[test]
    fn inflater_refuses_a_wider_window_and_resets_in_place() {
        // Repeats 1000 bytes back: within 10 window bits, not 9 (nor 8: client_max_window_bits).
        let msg = pseudo_random(1000, 3).repeat(2);
        for level in [1, 6] {
            let wire = deflate(
                &mut Deflater::new(params(15, true), Role::Client, level),
                &msg,
            );
            let frames = [&wire[..wire.len() - 8], &wire[wire.len() - 8..]];
            for (bits, ok) in [(8, false), (9, false), (10, true), (15, true)] {
                let p = Params {
                    client_max_window_bits: bits,
                    ..params(15, true)
                };
                let mut inf = Inflater::new(p, Role::Server);
                let want = if ok {
                    Ok(msg.clone())
                } else {
                    Err(InflateError::Corrupt)
                };
                assert_eq!(inflate_frames(&mut inf, &frames), want, "{bits} {level}");
                // Either way the next message starts afresh.
                let small = deflate(&mut Deflater::new(p, Role::Client, level), &msg);
                assert!(inflate_frames(&mut inf, &[&small]).unwrap() == msg);
                // No context takeover: in the same allocation.
                let before = inf.state.as_deref().map(|s| s as *const InflateState);
                assert!(inflate_frames(&mut inf, &[&small]).unwrap() == msg);
                assert_eq!(
                    inf.state.as_deref().map(|s| s as *const InflateState),
                    before
                );
            }
        }
    }

    #[test]
    fn size_limit() {
        let mut best = Deflater::new(params(15, false), Role::Server, 9);
        let zeros = deflate(&mut best, &[0; 8 << 20]);
        assert!(zeros.len() < 16 << 10, "{}", zeros.len());
        let (limit, mut out) = (1 << 20, Vec::new());
        let mut inf = Inflater::new(params(15, false), Role::Client);
        let r = zeros
            .chunks(1000)
            .try_for_each(|f| inf.inflate(f, false, &mut out, limit));
        assert_eq!(r, Err(InflateError::TooBig));
        assert!(out.len() <= limit && out.capacity() <= 2 * limit + MAX_CHUNK);
        assert!(inf.state.is_none());

        // Exactly at the limit is fine, one byte under is not, counting what `out` held.
        let msg = pseudo_random(1000, 9);
        let wire = deflate(&mut Deflater::new(params(15, true), Role::Server, 1), &msg);
        let (a, b) = wire.split_at(wire.len() / 2);
        let mut inf = Inflater::new(params(15, true), Role::Client);
        for (prefix, limit) in [(0, 1000), (0, 999), (10, 1010), (10, 1009), (10, 5)] {
            let (mut out, ok) = (vec![1; prefix], limit >= prefix + 1000);
            let r = inf
                .inflate(a, false, &mut out, limit)
                .and_then(|()| inf.inflate(b, true, &mut out, limit));
            assert_eq!(r.is_ok(), ok, "{prefix} {limit}");
            assert!(out.len() <= limit.max(prefix));
        }
    }

    #[test]
    fn corrupt_input_never_panics() {
        let inflate = |frames: &[&[u8]], nct| {
            inflate_frames(&mut Inflater::new(params(15, nct), Role::Server), frames)
        };
        assert_eq!(inflate(&[&[0xff; 16]], false), Err(InflateError::Corrupt));
        assert_eq!(inflate(&[b"Hello"], true), Err(InflateError::Corrupt));
        for seed in 1..300 {
            let junk = pseudo_random(seed as usize, seed);
            let _ = inflate(&[&junk, &junk], seed % 2 == 0);
            // With a window under 15 bits the bytes also go through the window check.
            let mut inf = Inflater::new(params(9 + seed as u8 % 6, seed % 2 == 0), Role::Server);
            let _ = inflate_frames(&mut inf, &[&junk[..junk.len() / 3], &junk]);
        }
        assert_eq!(InflateError::Corrupt.to_string(), "invalid compressed data");
    }

    #[test]
    fn config_validation() {
        assert_eq!(DeflateConfig::default().validate(), Ok(()));
        let bad = |f: fn(&mut DeflateConfig)| {
            let mut c = DeflateConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        let msg = bad(|c| c.server_max_window_bits = 8);
        assert_eq!(msg, "server_max_window_bits must be 9..=15, got 8");
        let msg = bad(|c| c.client_max_window_bits = 16);
        assert_eq!(msg, "client_max_window_bits must be 9..=15, got 16");
        assert_eq!(bad(|c| c.level = 10), "level must be 0..=9, got 10");
    }

    /// Server and client settings other than the defaults.
    fn strict() -> DeflateConfig {
        DeflateConfig {
            server_max_window_bits: 10,
            client_max_window_bits: 9,
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        }
    }

    #[rustfmt::skip]
    /// The defaults, but with context takeover both ways (RFC 7692's own default).
    fn takeover() -> DeflateConfig {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            ..DeflateConfig::default()
        }
    }

    #[test]
    fn server_negotiation_table() {
        let (d, s) = (takeover(), strict());
        // One offer, "permessage-deflate" + params; the answer's params, or None for a decline.
        let cases: &[(&str, &DeflateConfig, Option<&str>)] = &[
            ("", &d, Some("")),
            ("; client_max_window_bits", &d, Some("")),
            (" ;\tClient_Max_Window_Bits ", &d, Some("")),
            ("; client_max_window_bits=10", &d, Some("; client_max_window_bits=10")),
            ("; client_max_window_bits=8", &d, Some("; client_max_window_bits=8")),
            ("; client_max_window_bits = \"1\\1\"", &d, Some("; client_max_window_bits=11")),
            ("; server_max_window_bits=\"12\"", &d, Some("; server_max_window_bits=12")),
            ("; server_max_window_bits=15", &d, Some("; server_max_window_bits=15")),
            ("; server_max_window_bits=9", &d, Some("; server_max_window_bits=9")),
            ("; server_no_context_takeover", &d, Some("; server_no_context_takeover")),
            ("; client_no_context_takeover", &d, Some("; client_no_context_takeover")),
            ("", &s, Some("; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")),
            ("; client_max_window_bits", &s, Some("; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9")),
            ("; server_max_window_bits=12; client_max_window_bits=12", &s, Some("; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9")),
            ("; server_max_window_bits=9; client_max_window_bits=8", &s, Some("; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=8")),
            ("; server_max_window_bits=8", &d, None),
            ("; server_max_window_bits", &d, None),
            ("; server_max_window_bits=\"abc\"", &d, None),
            ("; server_max_window_bits=\"10", &d, None),
            ("; server_max_window_bits=10 11", &d, None),
            ("; client_max_window_bits=0", &d, None),
            ("; client_max_window_bits=7", &d, None),
            ("; client_max_window_bits=16", &d, None),
            ("; client_max_window_bits=08", &d, None),
            ("; client_max_window_bits=abc", &d, None),
            ("; client_max_window_bits=", &d, None),
            ("; client_max_window_bits=+9", &d, None),
            ("; server_no_context_takeover=1", &d, None),
            ("; client_no_context_takeover=\"\"", &d, None),
            ("; client_no_context_takeover; client_no_context_takeover", &d, None),
            ("; server_max_window_bits=10; Server_Max_Window_Bits=10", &d, None),
            ("; mux", &d, None),
            (";", &d, None),
            (" x", &d, None),
        ];
        for (offer, cfg, want) in cases {
            let offer = format!("permessage-deflate{offer}");
            let got = negotiate([offer.as_bytes()], cfg).map(|p| p.response_header_value());
            assert_eq!(
                got,
                want.map(|w| format!("permessage-deflate{w}")),
                "{offer}"
            );
        }
        // Several offers and headers: the first acceptable offer wins; other extensions are ignored.
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits=9, permessage-deflate"], Some("permessage-deflate; client_max_window_bits=9")),
            (&["foo; a=\"x, permessage-deflate\", ,permessage-deflate; bogus", "@, permessage-deflate; server_no_context_takeover", "permessage-deflate"], Some("permessage-deflate; server_no_context_takeover")),
            (&["x-webkit-deflate-frame", "PerMessage-Deflate"], Some("permessage-deflate")),
            (&["x-webkit-deflate-frame"], None),
            (&[""], None),
            (&[], None),
        ];
        for (values, want) in cases {
            let got = negotiate(values.iter().map(|v| v.as_bytes()), &d);
            assert_eq!(
                got.map(|p| p.response_header_value()).as_deref(),
                *want,
                "{values:?}"
            );
        }
        // Without the offer's parameter the client's window stays 15 bits.
        let p = negotiate([&b"permessage-deflate"[..]], &s).unwrap();
        assert_eq!(
            (p.server_max_window_bits, p.client_max_window_bits),
            (10, 15)
        );
    }

    #[rustfmt::skip]
    #[test]
    fn client_side() {
        let (d, s) = (takeover(), strict());
        assert_eq!(client_offer(&d), "permessage-deflate; client_max_window_bits");
        assert_eq!(client_offer(&s), "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9");
        // Offer, negotiate with each server configuration, parse the answer: both ends agree.
        for (client, server) in [(&d, &d), (&d, &s), (&s, &d), (&s, &s)] {
            let offer = client_offer(client);
            let at_server = negotiate([offer.as_bytes()], server).unwrap();
            let response = at_server.response_header_value();
            assert_eq!(parse_server_response(response.as_bytes(), client), Ok(at_server), "{response}");
        }
        // "permessage-deflate" + params: (server bits, client bits, server nct, client nct) or None.
        type Agreed = Option<(u8, u8, bool, bool)>;
        let cases: &[(&str, &DeflateConfig, Agreed)] = &[
            ("", &d, Some((15, 15, false, false))),
            ("; client_max_window_bits=8;server_max_window_bits=8", &d, Some((8, 8, false, false))),
            ("; server_no_context_takeover; client_no_context_takeover", &d, Some((15, 15, true, true))),
            ("", &s, Some((15, 9, false, true))),
            ("; server_max_window_bits=10; client_max_window_bits=8", &s, Some((10, 8, false, true))),
            (", permessage-deflate", &d, None),
            (", foo", &d, None),
            ("; foo", &d, None),
            ("; client_max_window_bits", &d, None),
            ("; server_max_window_bits", &d, None),
            ("; server_max_window_bits=7", &d, None),
            ("; server_no_context_takeover; server_no_context_takeover", &d, None),
            ("; client_no_context_takeover=x", &d, None),
            ("; server_max_window_bits=11", &s, None),
            ("; client_max_window_bits=10", &s, None),
        ];
        for (suffix, cfg, want) in cases {
            let got = parse_server_response(format!("permessage-deflate{suffix}").as_bytes(), cfg);
            let got = got.ok().map(|p| (p.server_max_window_bits, p.client_max_window_bits, p.server_no_context_takeover, p.client_no_context_takeover));
            assert_eq!(got, *want, "{suffix}");
        }
        assert!(parse_server_response(b"", &d).is_err());
        assert!(parse_server_response(b"foo", &d).is_err());
    }
}
