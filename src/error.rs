//! The one error type for setting a server (or a client's TLS) up and running it, its typed causes, and the macro
//! that writes every error type's `Display` and `std::error::Error`.

use std::path::PathBuf;
use std::time::Duration;
use std::{fmt, io};

use crate::proto::deflate::InvalidDeflateConfig;

/// Implements `Display` (one message per pattern, `write!` arguments in parentheses) and
/// `std::error::Error` (with an optional `source`) for an error type.
///
/// ```text
/// error_messages!(ParseError {
///     ParseError::Malformed => ("malformed HTTP request head"),
///     ParseError::TooManyHeaders => ("too many headers"),
/// });
/// ```
macro_rules! error_messages {
    ($ty:ty $(, source($this:ident) $source:block)? {
        $($pat:pat => ($($msg:tt)+)),+ $(,)?
    }) => {
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                match self {
                    $($pat => write!(f, $($msg)+),)+
                }
            }
        }

        impl ::std::error::Error for $ty {
            $(fn source(&$this) -> Option<&(dyn ::std::error::Error + 'static)> $source)?
        }
    };
}
pub(crate) use error_messages;

/// What went wrong while configuring, binding or running a server, or loading TLS files.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A `Config` option has a value it cannot take.
    Config {
        /// The option's name, as in `Config`.
        option: &'static str,
        /// What is wrong with the value.
        cause: ConfigError,
    },
    /// The listening socket could not be bound.
    Bind {
        /// The address as given.
        addr: String,
        /// Why it failed.
        source: io::Error,
    },
    /// An I/O error of the reactor itself (the poll or the listener).
    Io(io::Error),
    /// A TLS certificate, key or CA file cannot be used (a server's [`TlsConfig`], a client's
    /// [`ClientTls`]).
    ///
    /// [`TlsConfig`]: crate::TlsConfig
    /// [`ClientTls`]: crate::client::ClientTls
    Tls {
        /// The file at fault, when one is.
        path: Option<PathBuf>,
        /// What is wrong and, where possible, how to fix it.
        cause: TlsError,
    },
}

error_messages!(Error, source(self) {
    match self {
        Error::Config { .. } | Error::Tls { .. } => None,
        Error::Bind { source, .. } => Some(source),
        Error::Io(e) => Some(e),
    }
} {
    Error::Config { option, cause } => ("invalid config: {option} {cause}"),
    Error::Bind { addr, source } => ("cannot listen on {addr}: {source}"),
    Error::Io(e) => ("I/O error: {e}"),
    Error::Tls { path: Some(path), cause } => ("TLS file {}: {cause}", path.display()),
    Error::Tls { path: None, cause } => ("TLS: {cause}"),
});

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// Why an option's value is refused: the cause in [`Error::Config`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// A size in bytes outside `min..=max`.
    SizeOutOfRange {
        /// The smallest size allowed.
        min: usize,
        /// The largest size allowed.
        max: usize,
        /// The size given.
        got: usize,
    },
    /// A size in bytes below `min`.
    SizeTooSmall {
        /// The smallest size allowed.
        min: usize,
        /// The size given.
        got: usize,
    },
    /// A count of zero where at least one is needed.
    Zero,
    /// A duration of zero.
    ZeroDuration,
    /// `ping_interval` is not shorter than `idle_timeout`, so an idle peer is dropped before
    /// it is pinged.
    PingNotBeforeIdle {
        /// The ping interval.
        ping: Duration,
        /// The idle timeout.
        idle: Duration,
    },
    /// `max_buffered` cannot hold one echo of a largest message: twice the larger of
    /// `max_message_size` and `max_write_buffer`.
    BelowOneEcho {
        /// Twice the larger of `max_message_size` and `max_write_buffer`.
        min: usize,
        /// The value given.
        got: usize,
    },
    /// A value below that of another option, which it may not be.
    BelowOption {
        /// The other option's name.
        other: &'static str,
    },
    /// The deflate settings are out of range.
    Deflate(InvalidDeflateConfig),
    /// A relay was given no handles to deliver to.
    NoHandles,
    /// The URL cannot be used.
    Url {
        /// The URL as given.
        url: String,
        /// Why it cannot be used.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The option needs a cargo feature this build lacks.
    NeedsFeature {
        /// The feature, e.g. `redis`.
        feature: &'static str,
    },
}

error_messages!(ConfigError, source(self) {
    match self {
        ConfigError::Deflate(e) => Some(e),
        ConfigError::Url { source, .. } => Some(&**source),
        _ => None,
    }
} {
    ConfigError::SizeOutOfRange { min, max, got } => (
        "must be {} to {}, got {got}", Bytes(*min), Bytes(*max)
    ),
    ConfigError::SizeTooSmall { min, got } => ("must be at least {}, got {got}", Bytes(*min)),
    ConfigError::Zero => ("must be at least 1, got 0"),
    ConfigError::ZeroDuration => ("must be more than zero"),
    ConfigError::PingNotBeforeIdle { ping, idle } => (
        "must be shorter than idle_timeout ({ping:?} >= {idle:?})"
    ),
    ConfigError::BelowOneEcho { min, got } => (
        "must be at least twice the larger of max_message_size and max_write_buffer \
         ({min}), got {got}"
    ),
    ConfigError::BelowOption { other } => ("must be at least {other}"),
    ConfigError::Deflate(e) => ("{e}"),
    ConfigError::NoHandles => ("need at least one handle to deliver to"),
    ConfigError::Url { url, source } => ("{url}: {source}"),
    ConfigError::NeedsFeature { feature } => (
        "needs the `{feature}` feature: build with `--features {feature}`"
    ),
});

/// A size in bytes, in the largest unit that divides it: `256 B`, `4 KiB`, `16 MiB`.
struct Bytes(usize);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n if n >= 1 << 20 && n % (1 << 20) == 0 => write!(f, "{} MiB", n >> 20),
            n if n >= 1 << 10 && n % (1 << 10) == 0 => write!(f, "{} KiB", n >> 10),
            n => write!(f, "{n} B"),
        }
    }
}

/// A library's error behind a [`TlsError`], kept as its source: its text is in the message.
type Source = Box<dyn std::error::Error + Send + Sync>;

/// Why a TLS certificate, key or CA file (or its PEM text) cannot be used: the cause in
/// [`Error::Tls`].
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// The file cannot be read.
    Read(io::Error),
    /// The text is not valid PEM; the PEM parser's error is the source.
    Pem(Source),
    /// No certificate in the file.
    NoCertificate,
    /// No private key in the file; `combined` when no key file was given, so the certificate
    /// file had to hold both.
    NoPrivateKey {
        /// No key file was given.
        combined: bool,
    },
    /// The private key is encrypted, which is not supported.
    EncryptedKey {
        /// The key file, for the command that decrypts it (`None` for PEM text).
        path: Option<PathBuf>,
    },
    /// The private key cannot be used (its algorithm, or its encoding); the TLS library's
    /// error is the source.
    UnusableKey(Source),
    /// The private key does not match the leaf certificate.
    KeyMismatch {
        /// The certificate file (`None` for PEM text).
        cert: Option<PathBuf>,
    },
    /// The leaf certificate cannot be parsed; the TLS library's error is the source.
    BadCertificate(Source),
    /// A CA certificate cannot be a trust anchor; the TLS library's error is the source.
    BadCaCertificate(Source),
    /// No system CA bundle was found for `wss://`.
    NoSystemRoots,
}

error_messages!(TlsError, source(self) {
    match self {
        TlsError::Read(e) => Some(e),
        TlsError::Pem(e)
        | TlsError::UnusableKey(e)
        | TlsError::BadCertificate(e)
        | TlsError::BadCaCertificate(e) => Some(&**e),
        _ => None,
    }
} {
    TlsError::Read(e) => ("cannot read it: {e}"),
    TlsError::Pem(e) => ("not valid PEM: {e}"),
    TlsError::NoCertificate => (
        "no certificate found: expected a `-----BEGIN CERTIFICATE-----` block (a DER file \
         converts with `openssl x509 -inform der -in cert.der -out cert.pem`)"
    ),
    TlsError::NoPrivateKey { combined } => (
        "no private key found: expected a `-----BEGIN PRIVATE KEY-----` (or `RSA PRIVATE KEY`, \
         `EC PRIVATE KEY`) block{}",
        if *combined {
            "; with no key file given, this file must hold both the certificate chain and the \
             private key"
        } else {
            ""
        }
    ),
    TlsError::EncryptedKey { path } => (
        "the private key is encrypted, which is not supported; decrypt it with \
         `openssl pkey -in {} -out key-decrypted.pem` and use that file",
        path.as_deref().unwrap_or("key.pem".as_ref()).display()
    ),
    TlsError::UnusableKey(e) => ("unusable private key: {e}"),
    TlsError::KeyMismatch { cert: Some(cert) } => (
        "the private key does not match the first certificate in {}",
        cert.display()
    ),
    TlsError::KeyMismatch { cert: None } => (
        "the private key does not match the first certificate"
    ),
    TlsError::BadCertificate(e) => ("the first certificate cannot be parsed: {e}"),
    TlsError::BadCaCertificate(e) => ("a CA certificate cannot be used: {e}"),
    TlsError::NoSystemRoots => (
        "no system CA bundle found: set SSL_CERT_FILE, or trust a CA file of your own \
         (`ClientTls::from_pem_file`)"
    ),
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_their_unit() {
        let got = [256, 1 << 20, 4096, 125, 1536].map(|n| Bytes(n).to_string());
        assert_eq!(got, ["256 B", "1 MiB", "4 KiB", "125 B", "1536 B"]);
    }
}
