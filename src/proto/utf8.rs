//! Incremental UTF-8 validation for text that arrives in pieces.
//!
//! A text message may be split anywhere, even inside a character, across frames and across
//! reads. [`Utf8Validator`] keeps at most three bytes of an unfinished character between calls
//! and fails on the first byte that can never begin or continue valid UTF-8.

/// Validates a byte stream as UTF-8, piece by piece.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Validator {
    /// Bytes of a character that the previous piece left unfinished (at most three: four
    /// would finish any character). Four bytes in all keep a decoder small.
    pending: [u8; 3],
    pending_len: u8,
}

/// The stream is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// Validates the next piece of the stream. Fails as soon as the bytes so far cannot be the
    /// start of valid UTF-8; an unfinished character at the end is remembered for the next call.
    ///
    /// # Errors
    ///
    /// [`InvalidUtf8`] as soon as the bytes so far cannot start valid UTF-8.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            piece = self.finish_pending(piece)?;
        }
        match std::str::from_utf8(piece) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &piece[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Ends the stream: an unfinished character is an error. Resets the validator.
    ///
    /// # Errors
    ///
    /// [`InvalidUtf8`] when a character is unfinished.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.pending_len == 0;
        *self = Utf8Validator::default();
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }

    /// Completes the remembered character with bytes from `piece`; returns the rest of `piece`.
    fn finish_pending<'a>(&mut self, piece: &'a [u8]) -> Result<&'a [u8], InvalidUtf8> {
        let have = usize::from(self.pending_len);
        let take = piece.len().min(4 - have);
        let mut char_bytes = [0u8; 4];
        char_bytes[..have].copy_from_slice(&self.pending[..have]);
        char_bytes[have..have + take].copy_from_slice(&piece[..take]);
        let joined = &char_bytes[..have + take];
        match std::str::from_utf8(joined) {
            // The character and everything taken after it are valid.
            Ok(_) => {
                self.pending_len = 0;
                Ok(&piece[take..])
            }
            Err(e) if e.valid_up_to() > 0 => {
                // The character is complete: it ended after `valid_up_to - have` bytes of `piece`.
                self.pending_len = 0;
                Ok(&piece[e.valid_up_to() - have..])
            }
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(_) => {
                // Still unfinished: `piece` was shorter than the character's remaining bytes
                // (so fewer than four bytes are held).
                self.pending[..have + take].copy_from_slice(joined);
                self.pending_len = (have + take) as u8;
                Ok(&[])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(bytes: &[u8], splits: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        let mut start = 0;
        for &s in splits.iter().chain(std::iter::once(&bytes.len())) {
            v.feed(&bytes[start..s])?;
            start = s;
        }
        v.finish()
    }

    #[test]
    fn accepts_valid_text_split_anywhere() {
        let text = "κόσμε héllo ✓ 🎉 done".as_bytes();
        for a in 0..=text.len() {
            for b in a..=text.len() {
                assert_eq!(feed_split(text, &[a, b]), Ok(()), "split at {a},{b}");
            }
        }
        // One byte at a time.
        let all: Vec<usize> = (1..text.len()).collect();
        assert_eq!(feed_split(text, &all), Ok(()));
    }

    #[test]
    fn rejects_invalid_text_split_anywhere() {
        let cases: &[&[u8]] = &[
            b"\xff",
            b"ab\xc0\xafcd",             // overlong
            b"\xed\xa0\x80",             // surrogate
            b"\xf4\x90\x80\x80",         // above U+10FFFF
            b"\xce\xba\xe1\xbd\xb9\xcf", // truncated at the end
            b"\xe2\x82",
        ];
        for bytes in cases {
            for a in 0..=bytes.len() {
                assert_eq!(
                    feed_split(bytes, &[a]),
                    Err(InvalidUtf8),
                    "{bytes:?} at {a}"
                );
            }
        }
    }

    #[test]
    fn fails_fast_on_an_impossible_prefix() {
        let mut v = Utf8Validator::default();
        // 0xF4 0x90 can never start a valid character: fail without waiting for more bytes.
        assert_eq!(v.feed(b"ok\xf4"), Ok(()));
        assert_eq!(v.feed(b"\x90"), Err(InvalidUtf8));
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(b"\xed\xa0"), Err(InvalidUtf8));
    }
}
