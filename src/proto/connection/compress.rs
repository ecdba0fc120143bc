//! Outgoing compression: for a server, one shared compressor per window size for every
//! connection that negotiated server_no_context_takeover, and per-connection compressors for the
//! others; for a client, its own compressor.

use crate::proto::deflate::{DeflateConfig, Deflater, Params};
use crate::proto::frame::{write_frame, OpCode};
use crate::proto::Role;

/// How the messages a connection sends are compressed (permessage-deflate): `None` if it was
/// not negotiated. Boxed, so that a connection without it holds one pointer here.
#[derive(Debug, Default)]
pub(crate) struct Compress(Option<Box<Mode>>);

/// How a connection's messages are compressed, once negotiated.
#[derive(Debug)]
enum Mode {
    /// Each message on its own (server_no_context_takeover), with the endpoint's shared
    /// compressor for this many window bits.
    Shared(u8),
    /// With context takeover, or in the client role: the connection's own compressor.
    Own(Deflater),
}

impl Compress {
    /// Whether permessage-deflate is off for this connection.
    #[inline]
    pub(crate) fn is_off(&self) -> bool {
        self.0.is_none()
    }

    /// A compressed message was not sent after all: a compressor with context takeover must
    /// not refer to it later, so it starts a fresh window.
    pub(crate) fn forget(&mut self) {
        if let Some(Mode::Own(deflater)) = self.0.as_deref_mut() {
            deflater.reset();
        }
    }
}

/// Compressors and the buffers they write into.
#[derive(Debug)]
pub(crate) struct Compressors {
    /// Shared compressors, by window bits 9..=15.
    shared: [Option<Deflater>; 7],
    level: u32,
    /// Messages shorter than this go out uncompressed.
    threshold: usize,
    /// The last compressed payload.
    payload: Vec<u8>,
    /// A broadcast's compressed frames, one per window size, made once per broadcast.
    frames: Vec<(u8, Vec<u8>)>,
}

impl Compressors {
    /// Compressors for `config` (or none, if deflate is off).
    pub(crate) fn new(config: Option<&DeflateConfig>) -> Compressors {
        Compressors {
            shared: Default::default(),
            level: config.map_or(1, |c| c.level),
            threshold: config.map_or(usize::MAX, |c| c.threshold),
            payload: Vec::new(),
            frames: Vec::new(),
        }
    }

    /// How a connection in `role` that negotiated `params` is compressed.
    pub(crate) fn mode(&self, params: Params, role: Role) -> Compress {
        let mode = if role == Role::Server && params.server_no_context_takeover {
            Mode::Shared(params.server_max_window_bits.clamp(9, 15))
        } else {
            Mode::Own(Deflater::new(params, role, self.level))
        };
        Compress(Some(Box::new(mode)))
    }

    fn shared(&mut self, bits: u8) -> &mut Deflater {
        let level = self.level;
        self.shared[usize::from(bits.clamp(9, 15) - 9)].get_or_insert_with(|| {
            let params = Params {
                server_max_window_bits: bits,
                server_no_context_takeover: true,
                ..Params::default()
            };
            Deflater::new(params, Role::Server, level)
        })
    }

    /// The compressed payload of a data message for a connection compressed by `mode`, or
    /// `None` if it goes out as it is (deflate off, or the message under the threshold).
    pub(crate) fn compress(&mut self, mode: &mut Compress, payload: &[u8]) -> Option<&[u8]> {
        self.compress_payload(mode, payload)
            .then_some(&self.payload[..])
    }

    /// Compresses `payload` into `self.payload`, if it is to be compressed at all.
    fn compress_payload(&mut self, mode: &mut Compress, payload: &[u8]) -> bool {
        if payload.len() < self.threshold {
            return false;
        }
        self.payload.clear();
        match mode.0.as_deref_mut() {
            None => return false,
            Some(Mode::Shared(bits)) => {
                let bits = *bits;
                let mut out = std::mem::take(&mut self.payload);
                self.shared(bits).deflate(payload, &mut out);
                self.payload = out;
            }
            Some(Mode::Own(deflater)) => deflater.deflate(payload, &mut self.payload),
        }
        true
    }

    /// Starts a broadcast: forgets the previous one's frames.
    pub(crate) fn begin_broadcast(&mut self) {
        self.frames.clear();
    }

    /// The whole frame of the current broadcast for a connection compressed by `mode`, or
    /// `None` if it gets the uncompressed frame. Shared compression happens once per window
    /// size per broadcast; a connection with its own compressor compresses its own copy.
    pub(crate) fn broadcast_frame(
        &mut self,
        mode: &mut Compress,
        opcode: OpCode,
        payload: &[u8],
    ) -> Option<&[u8]> {
        let key = match mode.0.as_deref() {
            None => return None,
            _ if payload.len() < self.threshold => return None,
            Some(Mode::Shared(bits)) => *bits,
            // Window bits never reach 0: this entry is the connection's own frame.
            Some(Mode::Own(_)) => 0,
        };
        let cached = self.frames.iter().position(|(k, _)| *k == key);
        let index = match cached {
            Some(i) if key != 0 => i,
            _ => {
                self.compress_payload(mode, payload);
                let index = cached.unwrap_or_else(|| {
                    self.frames.push((key, Vec::new()));
                    self.frames.len() - 1
                });
                let frame = &mut self.frames[index].1;
                frame.clear();
                write_frame(frame, opcode, true, true, None, &self.payload);
                index
            }
        };
        Some(&self.frames[index].1)
    }
}
